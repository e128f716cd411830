"""Plausible wrong answers for solutions/02_ps_and_gossip.ipynb, keyed by answer cell grade_id.

Each maps to (source of the answer cell, a fragment of the hint the check must give).
"""
WRONG = {
    "q1-answer": ('''
def sync_ps_step(rank, world_size, x):
    w = x["w"]
    if rank == 0:
        total = torch.zeros_like(w)
        buf = torch.empty_like(w)
        for src in range(1, world_size):
            comm.recv(buf, src)
            total += buf
        w = w - x["lr"] * total / world_size
        for dst in range(1, world_size):
            comm.send(w, dst)
    else:
        comm.send(x["g"], 0)
        comm.recv(w, 0)
    return w
''', "rank 0 is the server and computes no gradient"),
    "q2-answer": ('''
def on_push(book, k):
    book.staleness.append(book.version - book.pulled[k])
    book.version += 1
    book.clock[k] += 1
    book.waiting.add(k)
    released = sorted(j for j in book.waiting if book.s is None or book.clock[j] - min(book.clock) < book.s)
    for j in released:
        book.pulled[j] = book.version
    book.waiting -= set(released)
    return released
''', "use <=, not <"),
    "q3-answer": ('''
def gossip_step(rank, world_size, x):
    left, right = (rank - 1) % world_size, (rank + 1) % world_size
    a, b = torch.empty_like(x), torch.empty_like(x)
    reqs = [comm.irecv(a, left), comm.irecv(b, right), comm.isend(x, left), comm.isend(x, right)]
    for req in reqs:
        req.wait()
    return x / 2 + (a + b) / 4
''', "used weight 1/2 for itself"),
}
