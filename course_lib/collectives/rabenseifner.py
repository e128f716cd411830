"""Rabenseifner's all-reduce: recursive-halving reduce-scatter, then recursive-doubling all-gather.

The ring's bytes in the tree's number of steps. With p a power of two, in reduce-scatter round
k (k = 1..log2 p) rank r swaps half of the part of the vector it still works on with partner
``r XOR p/2^k``: it keeps the half its own bit picks and adds the partner's copy of it. After
log2 p rounds rank r holds the full sum of chunk r (chunks as in :func:`chunk_bounds`). The
all-gather retraces the rounds in reverse order, doubling the part each rank holds.

Time ``T = 2 log2 p alpha + 2 (p-1)/p n beta``, bytes sent per rank ``2 (p-1)/p n``
(Rabenseifner 2004; Thakur, Rabenseifner & Gropp 2005, section 4.4).

Other p: the first ``2(p - p')`` ranks (p' the largest power of two <= p) fold pairwise
first, even ranks handing their whole vector to their odd neighbour and sitting out; the p'
remaining ranks run the algorithm, and the odd ranks hand the result back. The fix costs two
extra steps of a whole vector, ``2 (alpha + n beta)``, on the folded pairs' critical path, and
the folded ranks each send n more bytes.

Each exchange is cut into pieces so a rank adds one piece while the next ones arrive (as in
:mod:`course_lib.collectives.pipelined_ring`); receive buffers are reused from call to call.
"""
from __future__ import annotations

import numbers

import torch

from course_lib import comm
from course_lib.collectives.common import chunk_bounds, fold, group_rank_of, power_of_two_below, prepare, unfold
from course_lib.collectives.pipelined_ring import _scratch

PIECE_BYTES = 4 << 20  # pieces of an exchanged half; both partners cut the same range the same way


def _rounds(p2: int, new_rank: int) -> list[tuple[int, tuple[int, int], tuple[int, int]]]:
    """Reduce-scatter rounds of ``new_rank`` among ``p2`` ranks: ``(partner, kept, given)`` chunk ranges.

    A range ``(lo, hi)`` names chunks ``lo..hi-1``. The all-gather runs the same rounds in
    reverse, sending ``kept`` and receiving ``given``.
    """
    out, lo, hi, mask = [], 0, p2, p2 >> 1
    while mask:
        mid = (lo + hi) // 2
        low_half, high_half = (lo, mid), (mid, hi)
        kept, given = (low_half, high_half) if not new_rank & mask else (high_half, low_half)
        out.append((new_rank ^ mask, kept, given))
        lo, hi = kept
        mask >>= 1
    return out


def _pieces(a: int, b: int, element_size: int, piece_bytes: int) -> list[tuple[int, int]]:
    """Cut elements ``[a, b)`` into pieces of at most ``piece_bytes``."""
    step = max(1, piece_bytes // element_size)
    return [(i, min(i + step, b)) for i in range(a, b, step)]


def rabenseifner_all_reduce(x: torch.Tensor, op="sum", group=None, *,
                            piece_bytes: int = PIECE_BYTES) -> torch.Tensor:
    """In place: ``x <- sum_j x_j`` (or the mean) on every rank; any p, any shape.

    Recursive halving (reduce-scatter, log2 p rounds), then recursive doubling (all-gather,
    log2 p rounds): ``T = 2 log2 p alpha + 2 (p-1)/p n beta`` for p a power of two, plus
    ``2 (alpha + n beta)`` otherwise (Thakur, Rabenseifner & Gropp 2005). Returns ``x``.
    """
    flat, g, op = prepare("rabenseifner_all_reduce", x, group, op)
    if not isinstance(piece_bytes, int) or piece_bytes < 1:
        raise ValueError(f"piece_bytes must be a positive int (bytes per message), got {piece_bytes!r}")
    p = g.size
    if p == 1 or not flat.numel():
        if op == "avg":
            flat.div_(p)
        return x
    buf = _scratch(flat.numel(), flat.dtype, 1)[0][: flat.numel()]
    new_rank = fold(flat, g, buf)
    if new_rank is None:
        return x
    p2 = power_of_two_below(p)

    def real(index: int) -> int:  # index among the p2 ranks -> global rank
        return g.peer(group_rank_of(index, p))

    b = chunk_bounds(flat.numel(), p2)
    size = flat.element_size()
    rounds = _rounds(p2, new_rank)
    scratch = _scratch((flat.numel() + 1) // 2 + p2, flat.dtype, 1)[0]  # a half is at most this long
    for partner, (klo, khi), (glo, ghi) in rounds:  # reduce-scatter: recursive halving
        peer = real(partner)
        keep = _pieces(b[klo], b[khi], size, piece_bytes)
        sends = [comm.isend(flat[i:j], peer, group=g.group) for i, j in _pieces(b[glo], b[ghi], size, piece_bytes)]
        recvs = [comm.irecv(scratch[i - b[klo]: j - b[klo]], peer, group=g.group) for i, j in keep]
        for (i, j), w in zip(keep, recvs):
            w.wait()
            flat[i:j].add_(scratch[i - b[klo]: j - b[klo]])
        for w in sends:
            w.wait()
    if op == "avg":
        flat[b[new_rank]: b[new_rank + 1]].div_(p)
    for partner, (klo, khi), (glo, ghi) in reversed(rounds):  # all-gather: recursive doubling
        peer = real(partner)
        works = [comm.isend(flat[b[klo]: b[khi]], peer, group=g.group),
                 comm.irecv(flat[b[glo]: b[ghi]], peer, group=g.group)]
        for w in works:
            w.wait()
    unfold(flat, g)
    return x


def rabenseifner_bytes_sent(n: int, p: int, rank: int, element_size: int = 4) -> int:
    """Exact bytes rank ``rank`` sends in :func:`rabenseifner_all_reduce` on ``n`` elements (any n, p).

    Among the p' = 2^floor(log2 p) ranks that run the halving and doubling, each sends in the
    reduce-scatter the half it gives away in every round, ``n - |c_r|`` elements in all, and in
    the all-gather the part it holds in every round; both are ``(p'-1)/p' n`` when p' divides n,
    ``2 (p'-1)/p' n`` together. With p not a power of two, a folded even rank sends its n
    elements once, and its odd partner sends n more to hand the result back.
    """
    for name, value, low in (("n", n, 0), ("p", p, 1), ("element_size", element_size, 1)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise ValueError(f"rabenseifner_bytes_sent: {name} must be an int >= {low}, got {value!r}")
    if isinstance(rank, bool) or not isinstance(rank, numbers.Integral) or not 0 <= rank < p:
        raise ValueError(f"rabenseifner_bytes_sent: rank must be in [0, {p}) (an int), got {rank!r}")
    if p == 1 or n == 0:
        return 0
    p2 = power_of_two_below(p)
    extra = p - p2
    if rank < 2 * extra and rank % 2 == 0:
        return element_size * n
    new_rank = rank // 2 if rank < 2 * extra else rank - extra
    b = chunk_bounds(n, p2)
    rounds = _rounds(p2, new_rank)
    given = sum(b[ghi] - b[glo] for _, _, (glo, ghi) in rounds)
    held = sum(b[khi] - b[klo] for _, (klo, khi), _ in rounds)
    return element_size * (given + held + (n if rank < 2 * extra else 0))
