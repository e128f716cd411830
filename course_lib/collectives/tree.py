"""Binomial-tree all-reduce: reduce up a tree to rank 0, broadcast back down the same tree."""
from __future__ import annotations

import torch

from course_lib import comm
from course_lib.collectives.common import prepare


def tree_all_reduce(x: torch.Tensor, op="sum", group=None) -> torch.Tensor:
    """Binomial-tree reduce to rank 0, then binomial-tree broadcast; any p.

    ``T = 2 ceil(log2 p) (alpha + n beta)``: few messages (good for small n), but the whole
    vector crosses every level, so for large n it loses to the ring (Thakur et al. 2005).
    """
    flat, g, op = prepare("tree_all_reduce", x, group, op)
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
