"""Plausible wrong answers for solutions/03_ring_collectives.ipynb, keyed by answer cell grade_id.

Each maps to (source of the answer cell, a fragment of the hint the check must give).
"""
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
''', "instead of chunk 0 (off by one)"),
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
