"""Plausible wrong answers for solutions/03_ring_collectives.ipynb (the format: wrong_answers/__init__.py)."""

WRONG = {
    # The textbook schedule shifted by one: the rank ends up owning chunk rank + 1.
    "q1-answer": ('''
def ring_reduce_scatter(rank, world_size, x):
    chunks = x.chunk(world_size)
    buf = torch.empty_like(chunks[0])
    right, left = (rank + 1) % world_size, (rank - 1) % world_size
    for s in range(world_size - 1):
        reqs = [comm.isend(chunks[(rank - s) % world_size], right), comm.irecv(buf, left)]
        for req in reqs:
            req.wait()
        chunks[(rank - s - 1) % world_size].add_(buf)
    return chunks[(rank + 1) % world_size]
''', "rank 0 ended with chunk 1 instead of chunk 0 (off by one)"),
    # Every rank sends with a blocking send before receiving: deadlock.
    "q2-answer": ('''
def ring_all_gather(rank, world_size, x):
    chunks = x.chunk(world_size)
    for s in range(world_size - 1):
        comm.send(chunks[(rank - s) % world_size], (rank + 1) % world_size)
        comm.recv(chunks[(rank - s - 1) % world_size], (rank - 1) % world_size)
    return x
''', "if every rank sends first, nobody receives"),
}

MORE_WRONG = {
    "rs_one_step_short": ("q1-answer", {"range(world_size - 1)": "range(world_size - 2)"},
                          "contains the inputs of ranks"),
    "rs_with_collective": ("q1-answer", '''
def ring_reduce_scatter(rank, world_size, x):
    out = torch.empty(x.numel() // world_size, dtype=x.dtype)
    comm.reduce_scatter_tensor(out, x)
    return out
''', "called the collective(s) reduce_scatter_tensor"),
    "rs_whole_tensor": ("q1-answer", {"return chunks[rank]": "return x"},
                        "return only its own reduced chunk"),
    "ag_send_off_by_one": ("q2-answer", {
        "comm.isend(chunks[(rank - s) % world_size], right)": "comm.isend(chunks[(rank - s - 1) % world_size], right)"},
        "is still empty"),
    "ag_recv_off_by_one": ("q2-answer", {
        "comm.irecv(chunks[(rank - s - 1) % world_size], left)": "comm.irecv(chunks[(rank - s - 2) % world_size], left)"},
        "(off by one)"),
}

RIGHT = {
    # blocking calls ordered by parity: correct for an even number of ranks
    "ag_parity": ("q2-answer", {
        "        reqs = [comm.isend(chunks[(rank - s) % world_size], right),\n"
        "                comm.irecv(chunks[(rank - s - 1) % world_size], left)]\n"
        "        for req in reqs:\n            req.wait()\n": '''\
        send, recv = chunks[(rank - s) % world_size], chunks[(rank - s - 1) % world_size]
        if rank % 2 == 0:
            comm.send(send, right)
            comm.recv(recv, left)
        else:
            comm.recv(recv, left)
            comm.send(send, right)
'''}),
}

# Borrowed answers: the course's ring, and gloo's reduce-scatter behind dummy p2p traffic.
MORE_WRONG["reduce_scatter_borrowed"] = ("q1-answer", '''
from course_lib.collectives import ring_reduce_scatter as course_rs
def ring_reduce_scatter(rank, world_size, x):
    return course_rs(x)
''', "borrows course_lib.collectives")
MORE_WRONG["reduce_scatter_builtin_plus_dummy_p2p"] = ("q1-answer", '''
def ring_reduce_scatter(rank, world_size, x):
    torch.distributed.all_reduce(x)
    chunks = x.chunk(world_size)
    buf = torch.empty_like(chunks[0])
    for s in range(world_size - 1):
        reqs = [comm.isend(chunks[0], (rank + 1) % world_size), comm.irecv(buf, (rank - 1) % world_size)]
        for req in reqs:
            req.wait()
    return chunks[rank]
''', "borrows torch.distributed")

# An index off by one in both the send and the add: the complete chunk ends at rank + 1.
MORE_WRONG["rs_indices_off_by_one"] = ("q1-answer", {
    "comm.isend(chunks[(rank - s - 1) % world_size], right)": "comm.isend(chunks[(rank - s) % world_size], right)",
    "chunks[(rank - s - 2) % world_size].add_(buf)": "chunks[(rank - s - 1) % world_size].add_(buf)"},
    "(off by one)")
# A loop that never ends inside a worker: not a deadlock, and not told so.
MORE_WRONG["ag_infinite_loop"] = ("q2-answer", '''
def ring_all_gather(rank, world_size, x):
    s = 0
    while s < world_size - 1:
        x = x + 0
    return x
''', "an infinite loop?")
