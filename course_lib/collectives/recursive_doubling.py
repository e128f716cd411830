"""Recursive doubling: log2 p rounds of pairwise exchange of the whole vector."""
from __future__ import annotations

import torch

from course_lib import comm
from course_lib.collectives.common import prepare


def recursive_doubling_all_reduce(x: torch.Tensor, op="sum", group=None) -> torch.Tensor:
    """Recursive doubling: in round k rank r exchanges its whole vector with r XOR 2^k and adds.

    ``T = log2 p (alpha + n beta)`` for p a power of two. Other p: the first 2(p - p') ranks
    (p' the largest power of two <= p) fold pairwise first (odd ranks take their even
    neighbour's data), p' ranks double, and the odd ranks hand the result back: two extra
    steps (Thakur, Rabenseifner & Gropp 2005, section 4).
    """
    flat, g, op = prepare("recursive_doubling_all_reduce", x, group, op)
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
