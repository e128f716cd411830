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
``2 (t-1)/t n`` per all-reduce against ``(t-1)/t n + (t-1)/t n``.

What falls is activation memory. The LayerNorm and dropout regions hold (B, T/t, C). But
:func:`gather_from_sp` followed by a column-parallel layer (the plain version) would keep the
all-gathered (B, T, C) input for the layer's backward, on every rank. The tuned version,
:func:`gather_linears` (what :class:`~course_lib.tp_gpt.TensorParallelGPT` uses), keeps this rank's (B, T/t, C) shard and all-gathers it again in
backward, where the weight gradient needs it (Korthikanti et al. sec. 4.2.2: one extra
all-gather in backward, which Megatron overlaps with the input-gradient GEMM). With that,
everything a block keeps for backward is split t ways: 1/t of the single-process block's.

Parameters used inside the split regions (LayerNorm gains and biases, the row-parallel
biases, the position embedding) are replicated but now see only T/t of the tokens on each
rank: their gradients are partial sums, all-reduced once per step by
:func:`all_reduce_sequence_parallel_grads`.
"""
from __future__ import annotations

import torch

from course_lib import comm
from course_lib.collectives import chunk_bounds, ring_bytes_sent


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
    """(B, T/t, C) -> (B, T, C) forward; backward reduce-scatters the gradient."""
    return GatherFromSP.apply(x)


def reduce_scatter_to_sp(x: torch.Tensor) -> torch.Tensor:
    """(B, T, C) partial sums -> (B, T/t, C) of the sum forward; backward all-gathers the gradient."""
    return ReduceScatterToSP.apply(x)


class _GatherLinears(torch.autograd.Function):
    """``y_k = all_gather_T(x_shard) W_k^T + b_k`` for k linear layers sharing one input,
    keeping only ``x_shard`` for backward.

    backward: ``x = all_gather_T(x_shard)`` again (the re-gather), ``dW_k = dy_k^T x``,
    ``db_k = sum dy_k``, and ``dx_shard = reduce_scatter_T(sum_k dy_k W_k)``.
    """

    @staticmethod
    def forward(ctx, x_shard: torch.Tensor, *params: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        ctx.save_for_backward(x_shard, *params)
        x = all_gather_seq(x_shard)
        return tuple(torch.nn.functional.linear(x, w, b) for w, b in zip(params[::2], params[1::2]))

    @staticmethod
    def backward(ctx, *grads: torch.Tensor):
        x_shard, *params = ctx.saved_tensors
        x = all_gather_seq(x_shard)  # the full input again: it was not kept
        x2 = x.reshape(-1, x.shape[-1])
        dx = None
        out = []
        for w, b, dy in zip(params[::2], params[1::2], grads):
            dy2 = dy.reshape(-1, dy.shape[-1])
            dx = dy @ w if dx is None else dx + dy @ w
            out += [dy2.t() @ x2, dy2.sum(0) if b is not None else None]
        return (reduce_scatter_seq(dx), *out)


def gather_linears(x_shard: torch.Tensor, *linears: torch.nn.Module) -> tuple[torch.Tensor, ...]:
    """The column-parallel layers ``linears`` (each with ``weight`` and ``bias``) applied to the
    all-gathered ``x_shard`` (B, T/t, C), one all-gather for all of them (SP's ``f``), with only
    the shard saved for backward (Megatron-SP)."""
    params = [p for lin in linears for p in (lin.weight, lin.bias)]
    return _GatherLinears.apply(x_shard, *params)


def seq_range(T: int, rank: int, t: int) -> tuple[int, int]:
    """``[start, end)`` of the time steps rank ``rank`` holds under sequence parallelism:
    chunk ``rank`` of :func:`course_lib.collectives.chunk_bounds`, all of length T/t."""
    if not isinstance(t, int) or t < 1:
        raise ValueError(f"seq_range: the tensor-parallel degree t must be an int >= 1, got {t!r}")
    if not isinstance(rank, int) or not 0 <= rank < t:
        raise ValueError(f"seq_range: rank must be an int in [0, t) = [0, {t}), got {rank!r}")
    if not isinstance(T, int) or T < 1 or T % t:
        raise ValueError(f"sequence length T={T!r} is not divisible by t={t}; sequence parallelism splits T "
                         "evenly: use a batch whose T is a multiple of t")
    bounds = chunk_bounds(T, t)
    return bounds[rank], bounds[rank + 1]


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


def ring_wire_bytes(op: str, nbytes: int, t: int) -> int:
    """Bytes a ring puts on each rank's link (Thakur et al. 2005; Patarasuk & Yuan 2009):
    all-reduce of n: ``2 (t-1)/t n``; reduce-scatter of an n-byte input, or all-gather to an
    n-byte output: ``(t-1)/t n`` (:func:`course_lib.collectives.ring_bytes_sent`, rank 0)."""
    factor = {"all_reduce": 2, "reduce_scatter": 1, "all_gather": 1}
    if op not in factor:
        raise ValueError(f"op must be one of {list(factor)}, got {op!r}")
    if not isinstance(t, int) or t < 1:
        raise ValueError(f"ring_wire_bytes: t must be an int >= 1, got {t!r}")
    if not isinstance(nbytes, int) or nbytes < 0:
        raise ValueError(f"ring_wire_bytes: nbytes must be an int >= 0, got {nbytes!r}")
    return ring_bytes_sent(nbytes, t, 0, element_size=1, kind=op)
