"""Naive all-reduce: everyone sends to a root, the root adds and sends the total back."""
from __future__ import annotations

import torch

from course_lib import comm
from course_lib.collectives.common import prepare


def naive_all_reduce(x: torch.Tensor, op="sum", group=None, root: int = 0) -> torch.Tensor:
    """Gather to ``root``, add, send the total back: ``T = 2(p-1)(alpha + n beta)``.

    The root receives and sends (p-1)n bytes, so its link's load grows with p: the cost the
    seed article attributes to all synchronous training (it is this algorithm's, not the ring's).
    """
    flat, g, op = prepare("naive_all_reduce", x, group, op)
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
