"""Plausible wrong answers for solutions/04_ddp_zero.ipynb (the format: wrong_answers/__init__.py)."""

LAUNCH = "            self.works.append((comm.all_reduce(flat, async_op=True), flat, b))\n"

WRONG = {
    "q1-answer": ({"            flat /= self.world_size\n": ""},
                  "grads are 2x too large: all_reduce sums over the ranks, divide by world_size"),
    "q2-answer": ('''
def zero1_step(rank, world_size, params, grad, state, lr):
    comm.all_reduce(grad)
    grad /= world_size
    if not state:
        state.update(exp_avg=torch.zeros_like(params), exp_avg_sq=torch.zeros_like(params), step=0)
    state["step"] += 1
    adamw_update_(params, grad, state["exp_avg"], state["exp_avg_sq"], state["step"], lr)
''', "rank 0 updated the whole parameter vector (its optimizer state has 24 floats): only update your shard"),
}

MORE_WRONG = {
    # every bucket launched in finish(), after backward: no overlap
    "q1_launch_in_finish": ("q1-answer", {
        "        if self.ready[b] == len(self.buckets[b]):\n"
        "            flat = torch.cat([q.grad.reshape(-1) for q in self.buckets[b]])\n" + LAUNCH: "",
        "        for work, flat, b in self.works:\n":
        "        for b, bucket in enumerate(self.buckets):\n"
        "            flat = torch.cat([q.grad.reshape(-1) for q in bucket])\n" + LAUNCH +
        "        for work, flat, b in self.works:\n"},
        "started after backward ended: launch each bucket's all_reduce from the hook"),
    "q1_blocking": ("q1-answer", {
        LAUNCH: "            comm.all_reduce(flat)\n            self.works.append((None, flat, b))\n",
        "            work.wait()\n": "            if work is not None:\n                work.wait()\n"},
        "pass async_op=True"),
    "q1_bucket_per_parameter": ("q1-answer", {
        "assign_buckets(params[::-1], bucket_cap_bytes)": "[[p] for p in params[::-1]]"},
        "expected one per bucket"),
    "q1_no_copy_back": ("q1-answer", {
        "            flat /= self.world_size\n            offset = 0\n            for q in self.buckets[b]:\n"
        "                q.grad.copy_(flat[offset:offset + q.numel()].view_as(q.grad))\n"
        "                offset += q.numel()\n": ""},
        "copy the averaged buffer back into p.grad"),
    "q2_no_divide": ("q2-answer", {"    g /= world_size\n": ""},
                     "exp_avg is 2x too large"),
    "q2_no_gather": ("q2-answer", {
        "    comm.all_gather_into_tensor(params, shard)\n": "    params[rank * s:(rank + 1) * s] = shard\n"},
        "different parameters: after updating your shard, all-gather"),
    "q2_all_reduce": ("q2-answer", {
        "    g = torch.empty(s)\n    comm.reduce_scatter_tensor(g, grad)\n":
        "    comm.all_reduce(grad)\n    g = grad[rank * s:(rank + 1) * s].clone()\n"},
        "needs exactly comm.reduce_scatter_tensor"),
}

# Borrowed answer: torch's ZeRO-1 optimizer.
MORE_WRONG["zero1_torch_builtin"] = ("q2-answer", '''
from torch.distributed.optim import ZeroRedundancyOptimizer
def zero1_step(rank, world_size, params, grad, state, lr):
    ZeroRedundancyOptimizer
    comm.all_reduce(grad)
    params -= lr * grad / world_size
''', "borrows torch.distributed")
