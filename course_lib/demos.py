"""Small worker functions used by chapter 0, the tests and the torchrun entry point.

Each has the launcher's signature ``fn(rank, world_size, *args)`` and uses
:func:`course_lib.comm.device`, so it runs unchanged on CPU gloo ranks and nccl GPU ranks.
"""
from __future__ import annotations

import time

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


COLLECTIVES = ("broadcast", "reduce", "all_reduce", "gather", "all_gather", "scatter",
               "reduce_scatter", "all_to_all", "barrier")


def initial_data(rank: int, world_size: int) -> torch.Tensor:
    """Rank r starts with [10r, 10r+1, ..., 10r+p-1]: the tens digit says where a value came from."""
    return torch.arange(world_size, dtype=torch.float32) + 10 * rank


def collective_before_after(rank: int, world_size: int, name: str) -> dict:
    """Run one collective on ``initial_data`` and return this rank's data before and after.

    ``after`` is None on ranks that receive nothing (the non-roots of reduce and gather).
    For ``barrier`` the data are arrival and departure times: ranks arrive at different
    moments (rank r sleeps 50r ms) and all leave together.
    """
    x = initial_data(rank, world_size)
    before = x.clone()
    p, root = world_size, 0
    if name == "broadcast":                     # x_r <- x_root
        comm.broadcast(x, src=root)
        after = x
    elif name == "reduce":                      # x_root <- sum_r x_r
        comm.reduce(x, dst=root)
        after = x if rank == root else None
    elif name == "all_reduce":                  # x_r <- sum_j x_j on every rank
        comm.all_reduce(x)
        after = x
    elif name == "gather":                      # root gets [x_0, ..., x_{p-1}]
        bufs = [torch.empty_like(x) for _ in range(p)] if rank == root else None
        comm.gather(x, bufs, dst=root)
        after = torch.cat(bufs) if rank == root else None
    elif name == "all_gather":                  # every rank gets [x_0, ..., x_{p-1}]
        bufs = [torch.empty_like(x) for _ in range(p)]
        comm.all_gather(bufs, x)
        after = torch.cat(bufs)
    elif name == "scatter":                     # rank r gets chunk r of the root's list
        # The root's list: chunk j = [10j, 10j+1, ...], so the colour shows the rank it goes to.
        before = torch.cat([initial_data(j, p) for j in range(p)]) if rank == root else None
        out = torch.empty(p)
        comm.scatter(out, list(before.chunk(p)) if rank == root else None, src=root)
        after = out
    elif name == "reduce_scatter":              # rank r gets chunk r of sum_j x_j
        out = torch.empty(1)
        comm.reduce_scatter(out, list(x.chunk(p)))
        after = out
    elif name == "all_to_all":                  # rank r gets chunk r of every rank: a transpose
        outs = [torch.empty(1) for _ in range(p)]
        comm.all_to_all(outs, list(x.chunk(p)))
        after = torch.cat(outs)
    elif name == "barrier":
        t0 = torch.tensor([time.time()], dtype=torch.float64)
        comm.all_reduce(t0, op=comm.ReduceOp.MIN)  # a common clock origin
        time.sleep(0.05 * rank)
        arrive = time.time() - t0.item()
        comm.barrier()
        leave = time.time() - t0.item()
        before, after = torch.tensor([arrive * 1000]), torch.tensor([leave * 1000])
    else:
        raise ValueError(f"unknown collective {name!r}; choose one of {COLLECTIVES}")
    return {"before": before, "after": after}
