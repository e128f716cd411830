"""Sequence parallelism (Megatron-SP): the regions outside tensor parallelism split along time.

Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models",
sec. 4.2.2. Under tensor parallelism alone, LayerNorm, the residual additions and dropout
run on the full (B, T, C) activation on every rank: t identical copies. Sequence
parallelism keeps those regions split along T, (B, T/t, C) per rank, and swaps the
operators at the region borders:

* ``g`` (all-reduce after a row-parallel layer) becomes a **reduce-scatter** along T:
  :func:`reduce_scatter_to_sp` (forward reduce-scatter, backward all-gather);
* ``f`` (identity before a column-parallel layer) becomes an **all-gather** along T:
  :func:`gather_from_sp` (forward all-gather, backward reduce-scatter).

An all-reduce is a reduce-scatter followed by an all-gather, so a ring moves the same bytes:
``2 (t-1)/t n`` per all-reduce against ``(t-1)/t n + (t-1)/t n``. What falls is the
activation memory of the LayerNorm/residual regions, by a factor t.

Parameters used inside the split regions (LayerNorm gains and biases, the row-parallel
biases, the position embedding) are replicated but now see only T/t of the tokens on each
rank: their gradients are partial sums, all-reduced once per step by
:func:`all_reduce_sequence_parallel_grads`.
"""
from __future__ import annotations

import torch

from course_lib import comm


def _to_front(x: torch.Tensor) -> torch.Tensor:
    """(B, T, ...) -> contiguous (T, B, ...): gloo gathers and scatters along dim 0."""
    return x.transpose(0, 1).contiguous()


def _along_seq(x: torch.Tensor, length: int, collective) -> torch.Tensor:
    """Run ``collective(out, x)`` along T, with ``out`` of ``length`` time steps: (B, T, ...) in and out."""
    front = _to_front(x)
    out = torch.empty((length, *front.shape[1:]), dtype=x.dtype)
    collective(out, front)
    return out.transpose(0, 1).contiguous()


def all_gather_seq(x: torch.Tensor) -> torch.Tensor:
    """(B, T/t, C) on each rank -> (B, T, C), rank r's part at times [r T/t, (r+1) T/t)."""
    t = comm.get_world_size()
    return x if t == 1 else _along_seq(x, t * x.shape[1], comm.all_gather_into_tensor)


def reduce_scatter_seq(x: torch.Tensor) -> torch.Tensor:
    """(B, T, C) partial sums on each rank -> (B, T/t, C): rank r's times of the sum."""
    t = comm.get_world_size()
    if t == 1:
        return x
    if x.shape[1] % t:
        raise ValueError(f"sequence length {x.shape[1]} is not divisible by t={t}: sequence parallelism "
                         "needs T = a multiple of the tensor-parallel degree")
    return _along_seq(x, x.shape[1] // t, comm.reduce_scatter_tensor)


# The two operators are each other's mirror image: what one does forward, the other does backward.
class GatherFromSP(torch.autograd.Function):
    """SP's ``f``: all-gather along T forward, reduce-scatter backward."""
    forward = staticmethod(lambda ctx, x: all_gather_seq(x))
    backward = staticmethod(lambda ctx, grad: reduce_scatter_seq(grad))


class ReduceScatterToSP(torch.autograd.Function):
    """SP's ``g``: reduce-scatter along T forward, all-gather backward."""
    forward = staticmethod(lambda ctx, x: reduce_scatter_seq(x))
    backward = staticmethod(lambda ctx, grad: all_gather_seq(grad))


def gather_from_sp(x: torch.Tensor) -> torch.Tensor:
    return GatherFromSP.apply(x)


def reduce_scatter_to_sp(x: torch.Tensor) -> torch.Tensor:
    return ReduceScatterToSP.apply(x)


def seq_range(T: int, rank: int, t: int) -> tuple[int, int]:
    """``[start, end)`` of the time steps rank ``rank`` holds under sequence parallelism."""
    if T % t:
        raise ValueError(f"sequence length T={T} is not divisible by t={t}; sequence parallelism splits T "
                         "evenly: use a batch whose T is a multiple of t")
    return rank * T // t, (rank + 1) * T // t


def all_reduce_sequence_parallel_grads(model: torch.nn.Module) -> None:
    """Sum the partial gradients of the replicated parameters used in split regions
    (marked ``p.sequence_parallel = True``) over the ranks, once after backward."""
    if comm.get_world_size() == 1:
        return
    grads = [p.grad for p in model.parameters() if getattr(p, "sequence_parallel", False) and p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    comm.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def ring_wire_bytes(op: str, nbytes: int, t: int) -> float:
    """Bytes a ring puts on each rank's link (Thakur et al. 2005; Patarasuk & Yuan 2009):
    all-reduce of n: ``2 (t-1)/t n``; reduce-scatter of an n-byte input, or all-gather to an
    n-byte output: ``(t-1)/t n``."""
    factor = {"all_reduce": 2, "reduce_scatter": 1, "all_gather": 1}
    if op not in factor:
        raise ValueError(f"op must be one of {list(factor)}, got {op!r}")
    return factor[op] * (t - 1) / t * nbytes
