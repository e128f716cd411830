"""The ring, plainly: 2(p-1) steps, one whole chunk per message, every rank sending to its right.

In ring step s (0-based), rank r sends to rank r+1 and receives from rank r-1:

* reduce-scatter (steps 0..p-2): send chunk (r - s - 1) % p, receive chunk (r - s - 2) % p and add it;
* all-gather (steps p-1..2p-3):  send chunk (r - s) % p,     receive chunk (r - s - 1) % p into place.

After the reduce-scatter rank r holds the sum of chunk r; the all-gather hands every sum
round the ring. :mod:`course_lib.collectives.pipelined_ring` runs the same schedule, tuned.
"""
from __future__ import annotations

import torch

from course_lib import comm
from course_lib.collectives.common import chunk_bounds, prepare


def ring_all_reduce_steps(x: torch.Tensor, group=None) -> list[torch.Tensor]:
    """The plain (unpipelined) ring all-reduce, one whole chunk per step, for pictures and study.

    Same schedule as :func:`ring_all_reduce`; returns a copy of ``x`` after each of the
    ``2(p-1)`` steps, so a notebook can show which chunk each rank holds when.
    """
    flat, g, _ = prepare("ring_all_reduce_steps", x, group)
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
