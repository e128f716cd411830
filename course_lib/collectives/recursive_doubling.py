"""Recursive doubling: log2 p rounds of pairwise exchange of the whole vector."""
from __future__ import annotations

import torch

from course_lib import comm
from course_lib.collectives.common import fold, group_rank_of, power_of_two_below, prepare, unfold


def recursive_doubling_all_reduce(x: torch.Tensor, op="sum", group=None) -> torch.Tensor:
    """Recursive doubling: in round k rank r exchanges its whole vector with r XOR 2^k and adds.

    ``T = log2 p (alpha + n beta)`` for p a power of two. Other p: the first 2(p - p') ranks
    (p' the largest power of two <= p) fold pairwise first (odd ranks take their even
    neighbour's data), p' ranks double, and the odd ranks hand the result back: two extra
    steps (Thakur, Rabenseifner & Gropp 2005, section 4).
    """
    flat, g, op = prepare("recursive_doubling_all_reduce", x, group, op)
    p = g.size
    if p == 1 or not flat.numel():
        return x
    buf = torch.empty_like(flat)
    new_rank = fold(flat, g, buf)
    if new_rank is None:
        return x
    pow2 = power_of_two_below(p)
    mask = 1
    while mask < pow2:
        peer = group_rank_of(new_rank ^ mask, p)
        works = [comm.isend(flat, g.peer(peer), group=g.group), comm.irecv(buf, g.peer(peer), group=g.group)]
        for w in works:
            w.wait()
        flat.add_(buf)  # a + b == b + a exactly in IEEE arithmetic: both partners agree bit for bit
        mask <<= 1
    if op == "avg":
        flat.div_(p)
    unfold(flat, g)
    return x
