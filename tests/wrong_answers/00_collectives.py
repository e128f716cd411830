"""Plausible wrong answers for solutions/00_collectives.ipynb, keyed by answer cell grade_id.

Each maps to (source of the answer cell, a fragment of the hint the check must give).
"""
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
''', "receive the total back from rank 0"),
    "q3-answer": ('''
def all_to_all_p2p(rank, world_size, x):
    out = [None] * world_size
    out[rank] = x[rank]
    reqs = []
    for peer in range(world_size):
        if peer != rank:
            out[peer] = torch.empty_like(x[peer])
            reqs.append(comm.irecv(out[peer], peer))
            reqs.append(comm.isend(x[rank], peer))
    for req in reqs:
        req.wait()
    return out
''', "send chunk `dst` to rank dst"),
}
