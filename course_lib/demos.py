"""Small worker functions used by chapter 0, the tests and the torchrun entry point.

Each has the launcher's signature ``fn(rank, world_size, *args)`` and uses
:func:`course_lib.comm.device`, so it runs unchanged on CPU gloo ranks and nccl GPU ranks.
"""
from __future__ import annotations

import torch

from course_lib import comm


def hello_all_reduce(rank: int, world_size: int) -> float:
    """Each rank contributes ``rank + 1``; all_reduce(SUM) gives ``p(p+1)/2`` on every rank."""
    x = torch.tensor([rank + 1.0], device=comm.device())
    comm.all_reduce(x)
    expected = world_size * (world_size + 1) / 2
    assert x.item() == expected, f"rank {rank}: all_reduce gave {x.item()}, expected {expected}"
    print(f"rank {rank}/{world_size}: all_reduce(rank+1) = {x.item():g}")
    return x.item()


def ring_pass(rank: int, world_size: int) -> int:
    """Send our rank to the right neighbour, receive the left one's, with non-blocking p2p."""
    out = torch.tensor([rank], device=comm.device())
    got = torch.empty_like(out)
    reqs = [comm.isend(out, (rank + 1) % world_size), comm.irecv(got, (rank - 1) % world_size)]
    for r in reqs:
        r.wait()
    return int(got.item())
