"""The ring, tuned: the plain ring's schedule (:mod:`course_lib.collectives.ring`), pipelined.

What a rank receives in one step is exactly what it sends in the next. So each chunk is cut
into pieces of ``piece_bytes`` and a piece is forwarded as soon as it has been reduced, while
the next pieces are still arriving; the plain ring would alternate between an idle link and an
idle CPU. Two more things make it fast, as in gloo and NCCL:

* ``window`` receives are posted ahead, each into its own buffer, so gloo's thread fills one
  while this rank adds another;
* the receive buffers are kept from call to call (:func:`_scratch`): a fresh buffer costs page
  faults on first touch, a reused one nothing.

Time ``T = 2(p-1) alpha + 2 (p-1)/p n beta`` for the all-reduce (Patarasuk & Yuan 2009;
Thakur, Rabenseifner & Gropp 2005); ``./course bench collectives`` compares it with gloo.
"""
from __future__ import annotations

import math

import torch

from course_lib import comm
from course_lib.collectives.common import _Group, chunk_bounds, prepare

# Pieces of half a chunk, clamped to 1..4 MiB, with 2 receives posted ahead, as gloo's own ring
# cuts each chunk in two segments. Each piece costs a notify-and-wake round trip between ranks,
# which is dear when ranks share a core, so smaller pieces lose more to latency than they gain
# in overlap (``./course bench collectives --piece-bytes`` shows it). PIECE_BYTES = None picks
# this rule; pass an int to override it.
PIECE_BYTES: int | None = None
WINDOW = 2
MIN_SPLIT_BYTES = 64 << 10  # below this, a piece's latency outweighs the overlap it buys


def auto_piece_bytes(chunk_bytes: int) -> int:
    """The default piece size: chunk / 2, clamped to [1 MiB, 4 MiB]."""
    return min(4 << 20, max(1 << 20, chunk_bytes // 2))


# Receive buffers are kept from call to call: a fresh buffer pays a page fault per 4 KiB page
# when first touched, a reused one nothing. NCCL keeps its buffers the same way. One caller at a
# time per process.
_workspace: dict[tuple[torch.dtype, int], list[torch.Tensor]] = {}


def _scratch(numel: int, dtype: torch.dtype, count: int) -> list[torch.Tensor]:
    """``count`` receive buffers of at least ``numel`` elements, reused between calls."""
    bufs = _workspace.get((dtype, count))
    if bufs is None or (count and bufs[0].numel() < numel):
        bufs = _workspace[(dtype, count)] = [torch.empty(numel, dtype=dtype) for _ in range(count)]
    return bufs

def _check_tuning(piece_bytes: int | None, window: int) -> None:
    if piece_bytes is not None and (not isinstance(piece_bytes, int) or piece_bytes < 1):
        raise ValueError(f"piece_bytes must be a positive int (bytes per message), got {piece_bytes!r}")
    if not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be an int >= 1 (receives posted ahead), got {window!r}")


def _ring(flat: torch.Tensor, g: _Group, steps: list[str], average: bool, piece_bytes: int | None,
          window: int) -> None:
    """Run ring steps (each 'rs' or 'ag') on ``flat``, pipelined piece by piece.

    Message (t, k) is piece k of the chunk sent in step t. The piece a rank receives in step t
    is the one it sends in step t+1, so it is forwarded the moment it is ready; sender and
    receiver enumerate messages in the same order, and gloo matches messages between a pair of
    ranks in the order they were posted.
    """
    p, r = g.size, g.rank
    right, left = g.peer(r + 1), g.peer(r - 1)
    b = chunk_bounds(flat.numel(), p)
    # The same number of pieces m for every chunk, so both ends of a link agree on every size.
    chunk_bytes = (b[1] - b[0]) * flat.element_size()
    piece_bytes = piece_bytes or auto_piece_bytes(chunk_bytes)
    # At least 2 pieces per chunk (as gloo does) once a chunk is worth splitting: with one piece
    # per chunk nothing overlaps.
    m = max(2 if chunk_bytes >= 2 * MIN_SPLIT_BYTES else 1, math.ceil(chunk_bytes / piece_bytes))
    piece_b = [chunk_bounds(b[c + 1] - b[c], m) for c in range(p)]

    def piece(c: int, k: int) -> torch.Tensor:
        return flat[b[c] + piece_b[c][k]: b[c] + piece_b[c][k + 1]]

    def sent_chunk(t: int, rank: int) -> int:  # the chunk ``rank`` sends in step t
        s = sum(1 for u in steps[:t] if u == steps[t])  # step index within its phase
        return (rank - s - 1) % p if steps[t] == "rs" else (rank - s) % p

    recv_chunk = [sent_chunk(t, r - 1) for t in range(len(steps))]
    msgs = [(t, k) for t in range(len(steps)) for k in range(m) if piece(recv_chunk[t], k).numel()]
    ahead = min(window, len(msgs))  # receives posted ahead; each has its own scratch buffer
    scratch = _scratch(piece(0, 0).numel(), flat.dtype, ahead)  # piece (0, 0) is the largest
    last_rs = max((t for t, u in enumerate(steps) if u == "rs"), default=-1)

    def post(i: int):
        t, k = msgs[i]
        dst = piece(recv_chunk[t], k)
        # Reduce-scatter receives into scratch (it must add); all-gather straight into place.
        buf = scratch[i % ahead][: dst.numel()] if steps[t] == "rs" else dst
        return comm.irecv(buf, left, group=g.group), buf, dst, t

    sends = [comm.isend(piece(sent_chunk(0, r), k), right, group=g.group)
             for k in range(m) if piece(sent_chunk(0, r), k).numel()]
    pending = [post(i) for i in range(ahead)]
    for i in range(len(msgs)):
        work, buf, dst, t = pending[i]
        work.wait()
        pending[i] = None
        if steps[t] == "rs":
            dst.add_(buf)
            if average and t == last_rs:
                dst.div_(p)
        # Re-post this buffer after the add; the other ``window - 1`` receives stay in flight
        # meanwhile, filled by gloo's thread while this one adds (posting earlier was no faster).
        if i + ahead < len(msgs):
            pending.append(post(i + ahead))
        if t + 1 < len(steps):
            sends.append(comm.isend(dst, right, group=g.group))
    for work in sends:
        work.wait()


def ring_all_reduce(x: torch.Tensor, op="sum", group=None, *, piece_bytes: int | None = PIECE_BYTES,
                    window: int = WINDOW) -> torch.Tensor:
    """In place: ``x <- sum_j x_j`` (or the mean) on every rank, by a pipelined ring.

    Reduce-scatter (p-1 steps) then all-gather (p-1 steps); time
    ``T = 2(p-1) alpha + 2 (p-1)/p n beta`` and ``2(p-1)/p * n`` bytes sent per rank, which
    tends to 2n, independent of p (Patarasuk & Yuan 2009; Thakur et al. 2005).
    Returns ``x``.
    """
    flat, g, op = prepare("ring_all_reduce", x, group, op)
    _check_tuning(piece_bytes, window)
    if g.size > 1 and flat.numel():
        _ring(flat, g, ["rs"] * (g.size - 1) + ["ag"] * (g.size - 1), op == "avg", piece_bytes, window)
    return x


def ring_reduce_scatter(x: torch.Tensor, op="sum", group=None, *, piece_bytes: int | None = PIECE_BYTES,
                        window: int = WINDOW) -> torch.Tensor:
    """Ring reduce-scatter; returns the view of chunk ``rank`` of ``x``, now ``sum_j`` (chunk ``rank`` of x_j).

    ``x`` is the workspace: its other chunks hold partial sums afterwards. p-1 steps, time
    ``(p-1) alpha + (p-1)/p n beta``, ``(p-1)/p * n`` bytes sent per rank: half of an
    all-reduce (Thakur et al. 2005). Chunks as in :func:`chunk_bounds`.
    """
    flat, g, op = prepare("ring_reduce_scatter", x, group, op)
    _check_tuning(piece_bytes, window)
    b = chunk_bounds(flat.numel(), g.size)
    if g.size > 1 and flat.numel():
        _ring(flat, g, ["rs"] * (g.size - 1), op == "avg", piece_bytes, window)
    return flat[b[g.rank]: b[g.rank + 1]]


def ring_all_gather(x: torch.Tensor, group=None, *, piece_bytes: int | None = PIECE_BYTES,
                    window: int = WINDOW) -> torch.Tensor:
    """Ring all-gather in place: chunk ``rank`` of ``x`` is this rank's input; fills in every other chunk.

    p-1 steps, time ``(p-1) alpha + (p-1)/p n beta``, ``(p-1)/p * n`` bytes sent per rank
    (Thakur et al. 2005). Chunks as in :func:`chunk_bounds`. Returns ``x``.
    """
    flat, g, _ = prepare("ring_all_gather", x, group)
    _check_tuning(piece_bytes, window)
    if g.size > 1 and flat.numel():
        _ring(flat, g, ["ag"] * (g.size - 1), False, piece_bytes, window)
    return x
