"""Plausible wrong answers for solutions/05_tensor_parallel.ipynb (the format: tests/wrong_answers/__init__.py).

Most are edits of the solution's cell, so each shows only its mistake.
"""
_F_BACKWARD = "        grad = grad.contiguous().clone()\n        comm.all_reduce(grad)\n        return grad\n"
_G_FORWARD = "        y = x.contiguous().clone()\n        comm.all_reduce(y)\n        return y\n"

WRONG = {
    # f and g swapped: all-reduce forward in f, identity forward in g
    "q1-answer": ({"class CopyToTP(": "class Swapped(", "class ReduceFromTP(": "class CopyToTP(",
                   "class Swapped(": "class ReduceFromTP("},
                  "you all-reduced in forward where the column-parallel layer needs identity"),
    # the bias added to every rank's partial product, before the all-reduce
    "q2-answer": ({"self.reduce(F.linear(x_r, self.weight)) + self.bias": "self.reduce(F.linear(x_r, self.weight, self.bias))"},
                  "add the bias once, after the all-reduce"),
    # each rank subtracts its own max: the exponentials of different ranks are not comparable
    "q3-answer": ({"    comm.all_reduce(m, op=comm.ReduceOp.MAX)\n": ""}, "used its own max"),
}

MORE_WRONG = {
    "f_backward_identity": ("q1-answer", {_F_BACKWARD: "        return grad\n"},
                            "f's backward must all-reduce the gradient"),
    "g_overwrites_input": ("q1-answer", {_G_FORWARD: "        comm.all_reduce(x)\n        return x.view_as(x)\n"},
                           "g overwrote its input"),
    "g_backward_all_reduce": ("q1-answer", {"    def backward(ctx, grad):\n        return grad\n":
                                            "    def backward(ctx, grad):\n" + _F_BACKWARD},
                              "g's backward is the identity"),
    "f_uncounted_dist": ("q1-answer", {"class CopyToTP": "import torch.distributed as dist\n\n\nclass CopyToTP",
                                       _F_BACKWARD: _F_BACKWARD.replace("comm.all_reduce", "dist.all_reduce")},
                         "borrows torch.distributed"),  # what a learner's cell (__main__) gets
    "f_g_borrowed": ("q1-answer", "from course_lib.tensor_parallel import CopyToTP, ReduceFromTP",
                     "borrows course_lib.tensor_parallel.CopyToTP"),
    "row_holds_rows": ("q2-answer", {"k = linear.in_features // world_size": "k = linear.out_features // world_size",
                                     "linear.weight.detach()[:, rank * k:(rank + 1) * k]":
                                     "linear.weight.detach()[rank * k:(rank + 1) * k]"},
                       "holds rows of the weight"),
    "row_no_reduce": ("q2-answer", {"self.reduce(F.linear(x_r, self.weight))": "F.linear(x_r, self.weight)"},
                      "partial product"),
    "row_parallel_subclass": ("q2-answer", '''
from course_lib import tensor_parallel as tp
class RowParallelLinear(tp.RowParallelLinear):
    pass
''', "borrows course_lib.tensor_parallel"),
    "ce_no_max": ("q3-answer", {"    m = logits_shard.max(dim=1).values\n    comm.all_reduce(m, op=comm.ReduceOp.MAX)\n"
                                "    z = logits_shard - m[:, None]\n": "    z = logits_shard\n"},
                  "exp overflowed"),
    "ce_gathers_logits": ("q3-answer", '''
def vocab_parallel_cross_entropy(logits_shard, targets, start):
    t = comm.get_world_size()
    pieces = [torch.empty_like(logits_shard) for _ in range(t)]
    comm.all_gather(pieces, logits_shard.contiguous())
    return F.cross_entropy(torch.cat(pieces, dim=1), targets)
''', "never gather the logits"),
    "ce_target_from_every_rank": ("q3-answer", {
        "    mine = (targets >= start) & (targets < start + logits_shard.shape[1])\n"
        "    local = torch.where(mine, targets - start, 0)\n"
        "    target = torch.where(mine, z.gather(1, local[:, None]).squeeze(1), 0.0)\n":
        "    local = (targets - start).clamp(0, logits_shard.shape[1] - 1)\n"
        "    target = z.gather(1, local[:, None]).squeeze(1)\n"}, "only from the rank whose range"),
    "ce_borrowed": ("q3-answer", "from course_lib.tensor_parallel import vocab_parallel_cross_entropy",
                    "borrows course_lib.tensor_parallel.vocab_parallel_cross_entropy"),
}
