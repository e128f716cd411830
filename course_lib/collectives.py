"""All-reduce, reduce-scatter and all-gather built from point-to-point messages (chapter 3).

Every function here is called by *every* rank of a group, like ``torch.distributed``'s
collectives, works **in place** on a tensor of any shape and size (its element count need not
be divisible by the number of ranks) and talks only through :mod:`course_lib.comm`'s
``isend``/``irecv``/``send``/``recv``, so the byte counters measure exactly what each
algorithm puts on the wire.

=========================  =============================  ======================================
algorithm                  alpha-beta time                 bytes sent by one rank
=========================  =============================  ======================================
naive (gather+broadcast)   2(p-1)(alpha + n beta)         root (p-1)n, others n
binomial tree              2 ceil(log2 p)(alpha + n beta)  at most 2 ceil(log2 p) n
recursive doubling         log2 p (alpha + n beta)        log2 p * n (p a power of two)
ring all-reduce            2(p-1) alpha + 2(p-1)/p n beta  2(p-1)/p n
ring reduce-scatter        (p-1) alpha + (p-1)/p n beta    (p-1)/p n
ring all-gather            (p-1) alpha + (p-1)/p n beta    (p-1)/p n
=========================  =============================  ======================================

(Thakur, Rabenseifner & Gropp 2005, "Optimization of collective communication operations in
MPICH"; the ring's bandwidth term is optimal: Patarasuk & Yuan 2009.)

Chunk convention (the same as ``torch.distributed.reduce_scatter_tensor``): the flattened
tensor is cut into p contiguous chunks by :func:`chunk_bounds`; after a reduce-scatter rank r
owns the reduced chunk r. In ring step s (0-based), rank r sends to rank r+1 and receives
from rank r-1:

* reduce-scatter: send chunk (r - s - 1) % p, receive chunk (r - s - 2) % p and add it;
* all-gather:     send chunk (r - s) % p,     receive chunk (r - s - 1) % p into place.

What a rank receives in one step is exactly what it sends in the next, so the ring is
**pipelined**: each chunk is cut into pieces of ``piece_bytes`` and a piece is forwarded as
soon as it has been reduced, while the next pieces are still arriving (a plain ring would
alternate between idle links and an idle CPU).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.distributed as dist

from course_lib import comm

# Pieces of half a chunk, clamped to 1..4 MiB, with 2 receives posted ahead: gloo's own ring
# uses two segments per chunk, and on the 2-core reference machine (64 MB, 8 ranks sharing the
# cores) 4 MiB pieces ran at 0.92-1.09x gloo's time where 1 MiB pieces ran at 1.07-1.20x: each
# piece costs a notify-and-wake round trip between ranks that share a core. Windows of 4..16
# and pieces under 512 KiB were 10-50 % slower. PIECE_BYTES = None picks this rule; pass an
# int to override it.
PIECE_BYTES: int | None = None
WINDOW = 2


def auto_piece_bytes(chunk_bytes: int) -> int:
    """The default piece size: chunk / 2, clamped to [1 MiB, 4 MiB] (see the measurements above)."""
    return min(4 << 20, max(1 << 20, chunk_bytes // 2))


MIN_SPLIT_BYTES = 64 << 10  # below this, a piece's latency outweighs the overlap it buys

# Receive buffers are kept from call to call: a fresh 4 MiB buffer costs ~1.6 ms of page faults
# when first touched (8 ranks x 2 buffers: an estimated 5 % of a 64 MB all-reduce on 2 cores), a
# reused one nothing. NCCL keeps its buffers the same way. One caller at a time per process.
_workspace: dict[tuple[torch.dtype, int], list[torch.Tensor]] = {}


def _scratch(numel: int, dtype: torch.dtype, count: int) -> list[torch.Tensor]:
    """``count`` receive buffers of at least ``numel`` elements, reused between calls."""
    bufs = _workspace.get((dtype, count))
    if bufs is None or (count and bufs[0].numel() < numel):
        bufs = _workspace[(dtype, count)] = [torch.empty(numel, dtype=dtype) for _ in range(count)]
    return bufs


# ----------------------------------------------------------------------------- helpers
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


def ring_bytes_sent(n: int, p: int, rank: int, element_size: int = 4, kind: str = "all_reduce") -> int:
    """Exact bytes rank ``rank`` sends in a ring collective on ``n`` elements (any n, p).

    Reduce-scatter sends every chunk but its own, ``n - |c_r|``; all-gather sends every
    chunk but the one it receives last, ``n - |c_{r+1}|``; all-reduce sends both:
    ``2n - |c_r| - |c_{r+1}|``, which is ``2(p-1)/p * n`` when p divides n.
    """
    if kind not in ("all_reduce", "reduce_scatter", "all_gather"):
        raise ValueError(f"kind must be 'all_reduce', 'reduce_scatter' or 'all_gather', got {kind!r}")
    if not 0 <= rank < p:
        raise ValueError(f"rank must be in [0, {p}), got {rank}")
    if p == 1:
        return 0
    b = chunk_bounds(n, p)
    size = [b[i + 1] - b[i] for i in range(p)]
    rs = n - size[rank]
    ag = n - size[(rank + 1) % p]
    return element_size * {"all_reduce": rs + ag, "reduce_scatter": rs, "all_gather": ag}[kind]


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


def _check_tuning(piece_bytes: int | None, window: int) -> None:
    if piece_bytes is not None and (not isinstance(piece_bytes, int) or piece_bytes < 1):
        raise ValueError(f"piece_bytes must be a positive int (bytes per message), got {piece_bytes!r}")
    if not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be an int >= 1 (receives posted ahead), got {window!r}")


# ----------------------------------------------------------------------------- the ring engine
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
        # meanwhile, filled by gloo's thread while this one adds (posting earlier measured no faster).
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
    op = _op_name(op)
    flat = _flat(x, "ring_all_reduce", op)
    _check_tuning(piece_bytes, window)
    g = _Group(group, "ring_all_reduce")
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
    op = _op_name(op)
    flat = _flat(x, "ring_reduce_scatter", op)
    _check_tuning(piece_bytes, window)
    g = _Group(group, "ring_reduce_scatter")
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
    flat = _flat(x, "ring_all_gather", "sum")
    _check_tuning(piece_bytes, window)
    g = _Group(group, "ring_all_gather")
    if g.size > 1 and flat.numel():
        _ring(flat, g, ["ag"] * (g.size - 1), False, piece_bytes, window)
    return x


def ring_all_reduce_steps(x: torch.Tensor, group=None) -> list[torch.Tensor]:
    """The plain (unpipelined) ring all-reduce, one whole chunk per step, for pictures and study.

    Same schedule as :func:`ring_all_reduce`; returns a copy of ``x`` after each of the
    ``2(p-1)`` steps, so a notebook can show which chunk each rank holds when.
    """
    flat = _flat(x, "ring_all_reduce_steps", "sum")
    g = _Group(group, "ring_all_reduce_steps")
    p, r = g.size, g.rank
    b = chunk_bounds(flat.numel(), p)
    chunk = [flat[b[i]:b[i + 1]] for i in range(p)]
    buf = torch.empty(b[1] - b[0], dtype=flat.dtype)
    snapshots = []
    for t in range(2 * (p - 1)):
        reduce, s = t < p - 1, t % (p - 1)
        send, recv = ((r - s - 1) % p, (r - s - 2) % p) if reduce else ((r - s) % p, (r - s - 1) % p)
        into = buf[: chunk[recv].numel()] if reduce else chunk[recv]
        works = [comm.isend(chunk[send], g.peer(r + 1), group=g.group), comm.irecv(into, g.peer(r - 1), group=g.group)]
        for w in works:
            w.wait()
        if reduce:
            chunk[recv].add_(into)
        snapshots.append(flat.clone().view_as(x))
    return snapshots


# ----------------------------------------------------------------------------- latency-bound algorithms
def naive_all_reduce(x: torch.Tensor, op="sum", group=None, root: int = 0) -> torch.Tensor:
    """Gather to ``root``, add, send the total back: ``T = 2(p-1)(alpha + n beta)``.

    The root receives and sends (p-1)n bytes, so its link's load grows with p: the cost the
    seed article attributes to all synchronous training (it is this algorithm's, not the ring's).
    """
    op = _op_name(op)
    flat = _flat(x, "naive_all_reduce", op)
    g = _Group(group, "naive_all_reduce")
    if not 0 <= root < g.size:
        raise ValueError(f"naive_all_reduce: root must be a rank of the group, 0..{g.size - 1}, got {root}")
    if g.size == 1 or not flat.numel():
        return x
    if g.rank == root:
        buf = torch.empty_like(flat)
        for src in range(g.size):
            if src != root:
                comm.recv(buf, g.peer(src), group=g.group)
                flat.add_(buf)
        if op == "avg":
            flat.div_(g.size)
        works = [comm.isend(flat, g.peer(dst), group=g.group) for dst in range(g.size) if dst != root]
        for w in works:
            w.wait()
    else:
        comm.send(flat, g.peer(root), group=g.group)
        comm.recv(flat, g.peer(root), group=g.group)
    return x


def tree_all_reduce(x: torch.Tensor, op="sum", group=None) -> torch.Tensor:
    """Binomial-tree reduce to rank 0, then binomial-tree broadcast; any p.

    ``T = 2 ceil(log2 p) (alpha + n beta)``: few messages (good for small n), but the whole
    vector crosses every level, so for large n it loses to the ring (Thakur et al. 2005).
    """
    op = _op_name(op)
    flat = _flat(x, "tree_all_reduce", op)
    g = _Group(group, "tree_all_reduce")
    p, r = g.size, g.rank
    if p == 1 or not flat.numel():
        return x
    buf = torch.empty_like(flat)
    mask = 1
    while mask < p:  # reduce: at level `mask`, ranks with that bit set send to rank - mask and drop out
        if r & mask:
            comm.send(flat, g.peer(r - mask), group=g.group)
            break
        if r + mask < p:
            comm.recv(buf, g.peer(r + mask), group=g.group)
            flat.add_(buf)
        mask <<= 1
    if r == 0 and op == "avg":
        flat.div_(p)
    # broadcast: the same tree backwards; a rank receives from the parent it sent to.
    mask = 1 << max(0, (p - 1).bit_length() - 1) if r == 0 else (r & -r)
    if r != 0:
        comm.recv(flat, g.peer(r - mask), group=g.group)
        mask >>= 1
    while mask >= 1:
        if r + mask < p:
            comm.send(flat, g.peer(r + mask), group=g.group)
        mask >>= 1
    return x


def recursive_doubling_all_reduce(x: torch.Tensor, op="sum", group=None) -> torch.Tensor:
    """Recursive doubling: in round k rank r exchanges its whole vector with r XOR 2^k and adds.

    ``T = log2 p (alpha + n beta)`` for p a power of two. Other p: the first 2(p - p') ranks
    (p' the largest power of two <= p) fold pairwise first (odd ranks take their even
    neighbour's data), p' ranks double, and the odd ranks hand the result back: two extra
    steps (Thakur, Rabenseifner & Gropp 2005, section 4).
    """
    op = _op_name(op)
    flat = _flat(x, "recursive_doubling_all_reduce", op)
    g = _Group(group, "recursive_doubling_all_reduce")
    p, r = g.size, g.rank
    if p == 1 or not flat.numel():
        return x
    pow2 = 1 << (p.bit_length() - 1)
    extra = p - pow2
    buf = torch.empty_like(flat)
    if r < 2 * extra:  # fold: even ranks give their data to the odd neighbour and sit out
        if r % 2 == 0:
            comm.send(flat, g.peer(r + 1), group=g.group)
            comm.recv(flat, g.peer(r + 1), group=g.group)
            return x
        comm.recv(buf, g.peer(r - 1), group=g.group)
        flat.add_(buf)
        new_rank = r // 2
    else:
        new_rank = r - extra

    def real(nr: int) -> int:  # new rank -> group rank
        return nr * 2 + 1 if nr < extra else nr + extra

    mask = 1
    while mask < pow2:
        peer = real(new_rank ^ mask)
        works = [comm.isend(flat, g.peer(peer), group=g.group), comm.irecv(buf, g.peer(peer), group=g.group)]
        for w in works:
            w.wait()
        flat.add_(buf)  # a + b == b + a exactly in IEEE arithmetic: both partners agree bit for bit
        mask <<= 1
    if op == "avg":
        flat.div_(p)
    if r < 2 * extra:
        comm.send(flat, g.peer(r - 1), group=g.group)
    return x


ALL_REDUCE: dict[str, Callable[..., torch.Tensor]] = {
    "naive": naive_all_reduce,
    "tree": tree_all_reduce,
    "recursive_doubling": recursive_doubling_all_reduce,
    "ring": ring_all_reduce,
}
