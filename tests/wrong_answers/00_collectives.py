"""Plausible wrong answers for solutions/00_collectives.ipynb (the format: wrong_answers/__init__.py)."""

WRONG = {
    "q1-answer": ('''
def ring_shift(rank, world_size, x):
    got = torch.empty_like(x)
    reqs = [comm.isend(x, (rank - 1) % world_size), comm.irecv(got, (rank + 1) % world_size)]
    for req in reqs:
        req.wait()
    return got
''', "right neighbour"),
    "q2-answer": ('''
def naive_all_reduce(rank, world_size, x):
    if rank == 0:
        buf = torch.empty_like(x)
        for src in range(1, world_size):
            comm.recv(buf, src)
            x += buf
    else:
        comm.send(x, 0)
    return x
''', "rank 1 returned its own input unchanged: receive the total back from rank 0"),
    # every peer gets this rank's own chunk
    "q3-answer": ({"comm.isend(x[peer], peer)": "comm.isend(x[rank], peer)"}, "send chunk `dst` to rank dst"),
}

MORE_WRONG = {
    "ring_shift_with_collective": ("q1-answer", '''
def ring_shift(rank, world_size, x):
    parts = [torch.empty_like(x) for _ in range(world_size)]
    comm.all_gather(parts, x)
    return parts[(rank - 1) % world_size]
''', "called the collective(s) all_gather"),
    "all_to_all_off_by_one": ("q3-answer", {
        "comm.isend(x[peer], peer)": "comm.isend(x[(peer + 1) % world_size], peer)"},
        "rank 0 received chunk 1 from rank 1"),
    # everyone sends first with a 1 MB message: deadlock (test_checks_ch00 runs it with a short timeout)
    "all_to_all_blocking": ("q3-answer", '''
def all_to_all_p2p(rank, world_size, x):
    out = [None] * world_size
    out[rank] = x[rank]
    for peer in range(world_size):
        if peer != rank:
            comm.send(torch.zeros(1 << 18).add_(x[peer].sum()), peer)
    return out
''', None),
}

# Borrowed answers: torch's built-in collective, with dummy point-to-point traffic of the
# expected size so that the byte counters look right.
MORE_WRONG["all_to_all_torch_builtin"] = ("q3-answer", '''
import torch.distributed as dist
def all_to_all_p2p(rank, world_size, x):
    out = [torch.empty_like(t) for t in x]
    dist.all_to_all(out, list(x))
    return out
''', "borrows torch.distributed")
MORE_WRONG["ring_shift_builtin_plus_dummy_p2p"] = ("q1-answer", '''
def ring_shift(rank, world_size, x):
    parts = [torch.empty_like(x) for _ in range(world_size)]
    torch.distributed.all_gather(parts, x)
    reqs = [comm.isend(x, (rank + 1) % world_size), comm.irecv(torch.empty_like(x), (rank - 1) % world_size)]
    for req in reqs:
        req.wait()
    return parts[(rank - 1) % world_size]
''', "borrows torch.distributed")
