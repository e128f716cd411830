"""Plausible wrong answers for solutions/05_tensor_parallel.ipynb, keyed by answer cell grade_id.

``WRONG`` maps each answer cell to (source, a fragment of the hint its check must give);
test_grading.py grades a notebook with each. ``MORE`` lists further wrong answers as
(grade_id, source, hint fragment); tests/test_checks_ch05.py runs every one of both.
"""
_G = '''
class ReduceFromTP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y = x.clone()
        comm.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        return grad
'''
_F = '''
class CopyToTP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        comm.all_reduce(grad)
        return grad
'''

WRONG = {
    # f and g swapped: all-reduce forward in f, identity forward in g
    "q1-answer": ('''
class CopyToTP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y = x.clone()
        comm.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        return grad


class ReduceFromTP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        comm.all_reduce(grad)
        return grad
''', "you all-reduced in forward where the column-parallel layer needs identity"),
    # the bias added to every rank's partial product, before the all-reduce
    "q2-answer": ('''
class RowParallelLinear(nn.Module):
    def __init__(self, linear, rank, world_size, reduce):
        super().__init__()
        k = linear.in_features // world_size
        self.weight = nn.Parameter(linear.weight.detach()[:, rank * k:(rank + 1) * k].clone())
        self.bias = nn.Parameter(linear.bias.detach().clone())
        self.reduce = reduce

    def forward(self, x_r):
        return self.reduce(F.linear(x_r, self.weight, self.bias))
''', "add the bias once, after the all-reduce"),
    # each rank subtracts its own max: the exponentials of different ranks are not comparable
    "q3-answer": ('''
def vocab_parallel_cross_entropy(logits_shard, targets, start):
    m = logits_shard.max(dim=1).values
    z = logits_shard - m[:, None]
    sum_exp = z.exp().sum(dim=1)
    comm.all_reduce(sum_exp)
    mine = (targets >= start) & (targets < start + logits_shard.shape[1])
    local = torch.where(mine, targets - start, 0)
    target = torch.where(mine, z.gather(1, local[:, None]).squeeze(1), 0.0)
    comm.all_reduce(target)
    return (sum_exp.log() - target).mean()
''', "used its own max"),
}

MORE = [
    ("q1-answer", '''
class CopyToTP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad
''' + _G, "f's backward must all-reduce the gradient"),
    ("q1-answer", _F + '''
class ReduceFromTP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        comm.all_reduce(x)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad
''', "g overwrote its input"),
    ("q1-answer", _F + '''
class ReduceFromTP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y = x.clone()
        comm.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        comm.all_reduce(grad)
        return grad
''', "g's backward is the identity"),
    ("q1-answer", '''
import torch.distributed as dist

class CopyToTP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad
''' + _G, "torch.distributed's own calls are not counted"),
    ("q1-answer", "from course_lib.tensor_parallel import CopyToTP, ReduceFromTP", "borrows course_lib.tensor_parallel.CopyToTP"),
    ("q2-answer", '''
class RowParallelLinear(nn.Module):
    def __init__(self, linear, rank, world_size, reduce):
        super().__init__()
        k = linear.out_features // world_size
        self.weight = nn.Parameter(linear.weight.detach()[rank * k:(rank + 1) * k].clone())
        self.bias = nn.Parameter(linear.bias.detach().clone())
        self.reduce = reduce

    def forward(self, x_r):
        return self.reduce(F.linear(x_r, self.weight)) + self.bias
''', "holds rows of the weight"),
    ("q2-answer", '''
class RowParallelLinear(nn.Module):
    def __init__(self, linear, rank, world_size, reduce):
        super().__init__()
        k = linear.in_features // world_size
        self.weight = nn.Parameter(linear.weight.detach()[:, rank * k:(rank + 1) * k].clone())
        self.bias = nn.Parameter(linear.bias.detach().clone())

    def forward(self, x_r):
        return F.linear(x_r, self.weight) + self.bias
''', "partial product"),
    ("q3-answer", '''
def vocab_parallel_cross_entropy(logits_shard, targets, start):
    sum_exp = logits_shard.exp().sum(dim=1)
    comm.all_reduce(sum_exp)
    mine = (targets >= start) & (targets < start + logits_shard.shape[1])
    local = torch.where(mine, targets - start, 0)
    target = torch.where(mine, logits_shard.gather(1, local[:, None]).squeeze(1), 0.0)
    comm.all_reduce(target)
    return (sum_exp.log() - target).mean()
''', "exp overflowed"),
    ("q3-answer", '''
def vocab_parallel_cross_entropy(logits_shard, targets, start):
    t = comm.get_world_size()
    pieces = [torch.empty_like(logits_shard) for _ in range(t)]
    comm.all_gather(pieces, logits_shard.contiguous())
    return F.cross_entropy(torch.cat(pieces, dim=1), targets)
''', "never gather the logits"),
    ("q3-answer", '''
def vocab_parallel_cross_entropy(logits_shard, targets, start):
    m = logits_shard.max(dim=1).values
    comm.all_reduce(m, op=comm.ReduceOp.MAX)
    z = logits_shard - m[:, None]
    sum_exp = z.exp().sum(dim=1)
    comm.all_reduce(sum_exp)
    local = (targets - start).clamp(0, logits_shard.shape[1] - 1)
    target = z.gather(1, local[:, None]).squeeze(1)
    comm.all_reduce(target)
    return (sum_exp.log() - target).mean()
''', "only from the rank whose range"),
    ("q3-answer", "from course_lib.tensor_parallel import vocab_parallel_cross_entropy", "borrows course_lib.tensor_parallel.vocab_parallel_cross_entropy"),
]

# Borrowed answer: the course's own row-parallel layer as the base class.
MORE_WRONG = {}
MORE_WRONG["row_parallel_subclass"] = ("q2-answer", '''
from course_lib import tensor_parallel as tp
class RowParallelLinear(tp.RowParallelLinear):
    pass
''', "borrows course_lib.tensor_parallel")
