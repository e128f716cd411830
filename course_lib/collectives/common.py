"""What every collective in this package shares: the chunk convention, the group, argument checks.

Chunk convention (the same as ``torch.distributed.reduce_scatter_tensor``): a flattened tensor
of n elements is cut into p contiguous chunks by :func:`chunk_bounds`, sizes differing by at
most one; after a reduce-scatter rank r owns the reduced chunk r.
"""
from __future__ import annotations

import torch
import torch.distributed as dist


def chunk_bounds(n: int, parts: int) -> list[int]:
    """Boundaries ``b`` with chunk i = ``[b[i], b[i+1])``: sizes differ by at most one.

    The first ``n % parts`` chunks get ``ceil(n / parts)`` elements, the others
    ``floor(n / parts)`` (the split ``torch.tensor_split`` makes); some are empty if n < parts.
    """
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"chunk_bounds: n must be an int >= 0, got {n!r}")
    if not isinstance(parts, int) or parts < 1:
        raise ValueError(f"chunk_bounds: parts must be an int >= 1, got {parts!r}")
    q, extra = divmod(n, parts)
    bounds = [0]
    for i in range(parts):
        bounds.append(bounds[-1] + q + (1 if i < extra else 0))
    return bounds


def _op_name(op) -> str:
    """'sum' or 'avg' from a string or a ``torch.distributed.ReduceOp``."""
    if op in ("sum", dist.ReduceOp.SUM):
        return "sum"
    if op in ("avg", dist.ReduceOp.AVG):
        return "avg"
    raise ValueError(f"op={op!r} is not supported: use 'sum' or 'avg' (or ReduceOp.SUM / ReduceOp.AVG)")


class _Group:
    """This rank's position in ``group`` and the global rank of any group rank (send/recv want global ranks)."""

    def __init__(self, group, fn: str):
        if not dist.is_initialized():
            raise RuntimeError(f"{fn}: torch.distributed is not initialised; call it inside a function run by "
                               "course_lib.launch (or torchrun), on every rank")
        self.group = group
        self.rank = dist.get_rank(group)
        if self.rank < 0:
            raise ValueError(f"{fn}: this process (global rank {dist.get_rank()}) is not in the group; only the "
                             "group's members may call it")
        self.size = dist.get_world_size(group)
        self._global = list(range(self.size)) if group is None else [dist.get_global_rank(group, i) for i in range(self.size)]

    def peer(self, group_rank: int) -> int:
        return self._global[group_rank % self.size]


def _flat(x: torch.Tensor, fn: str, op: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{fn}: expected a torch.Tensor, got {type(x).__name__}")
    if op == "avg" and not (x.is_floating_point() or x.is_complex()):
        raise TypeError(f"{fn}: op='avg' needs a floating-point tensor, got {x.dtype}; use op='sum' and divide yourself")
    if not x.is_contiguous():
        raise ValueError(f"{fn}: the tensor is not contiguous (a transposed or strided view); pass x.contiguous() "
                         "and copy the result back")
    return x.view(-1)


def prepare(fn: str, x: torch.Tensor, group, op="sum") -> tuple[torch.Tensor, _Group, str]:
    """The checks every collective starts with: ``(x as a flat view, the group, 'sum' or 'avg')``."""
    op = _op_name(op)
    return _flat(x, fn, op), _Group(group, fn), op
