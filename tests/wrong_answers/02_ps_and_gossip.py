"""Plausible wrong answers for solutions/02_ps_and_gossip.ipynb (the format: wrong_answers/__init__.py)."""

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
''', "divided the sum by world_size = 3, but rank 0 is the server and computes no gradient"),
    "q2-answer": ({"<= book.s": "< book.s"}, "use <=, not <"),
    "q3-answer": ('''
def gossip_step(rank, world_size, x):
    left, right = (rank - 1) % world_size, (rank + 1) % world_size
    a, b = torch.empty_like(x), torch.empty_like(x)
    reqs = [comm.irecv(a, left), comm.irecv(b, right), comm.isend(x, left), comm.isend(x, right)]
    for req in reqs:
        req.wait()
    return x / 2 + (a + b) / 4
''', "that row does sum to 1, but the question's W gives 1/3 each"),
}

MORE_WRONG = {
    # the server never sends w back, the workers never receive it
    "sync_ps_step_no_pull": ("q1-answer", {
        "        reqs = [comm.isend(w, dst) for dst in range(1, world_size)]\n        for req in reqs:\n"
        "            req.wait()\n": "",
        "        comm.recv(w, 0)\n": ""}, "worker rank 1 returned the old parameters"),
    "sync_ps_step_all_reduce": ("q1-answer", '''
def sync_ps_step(rank, world_size, x):
    g = x.get("g", torch.zeros_like(x["w"]))
    lr = torch.tensor([x.get("lr", 0.0)], dtype=g.dtype)
    comm.all_reduce(g)
    comm.all_reduce(lr)
    return x["w"] - lr * g / (world_size - 1)
''', "called the collective(s) all_reduce"),
    "on_push_late_tau": ("q2-answer", {
        "    book.staleness.append(book.version - book.pulled[k])\n    book.version += 1\n":
        "    book.version += 1\n    book.staleness.append(book.version - book.pulled[k])\n"},
        "*before* adding 1 to version"),
    "on_push_never_pulls": ("q2-answer", {"        book.pulled[j] = book.version\n": ""},
                            "book.pulled never changes"),
    # right bookkeeping on the scripts' ASP case, but ignores the bound
    "on_push_release_all": ("q2-answer", '''
def on_push(book, k):
    book.staleness.append(book.version - book.pulled[k])
    book.version += 1
    book.clock[k] += 1
    book.pulled[k] = book.version
    return [k]
''', "expected []"),
    # releases nobody: passes no script; test_checks_ch02 runs it for real
    "on_push_never_releases": ("q2-answer", '''
def on_push(book, k):
    book.staleness.append(book.version - book.pulled[k])
    book.version += 1
    book.clock[k] += 1
    return []
''', None),
    "gossip_step_left_only": ("q3-answer", '''
def gossip_step(rank, world_size, x):
    a = torch.empty_like(x)
    reqs = [comm.irecv(a, (rank - 1) % world_size), comm.isend(x, (rank + 1) % world_size)]
    for req in reqs:
        req.wait()
    return (x + a) / 2
''', "mixed with only one neighbour"),
    # every rank sends first: nobody receives (test_checks_ch02 runs it with a short timeout)
    "gossip_step_blocking": ("q3-answer", '''
def gossip_step(rank, world_size, x):
    big = torch.zeros(1 << 18, dtype=x.dtype)
    comm.send(big, (rank + 1) % world_size)
    comm.recv(big, (rank - 1) % world_size)
    return x
''', None),
}

# Borrowed answers: the course's own implementations.
MORE_WRONG["on_push_borrowed"] = ("q2-answer", '''
import course_lib.ssp as ssp
def on_push(book, k):
    return ssp.on_push(book, k)
''', "borrows course_lib.ssp.on_push")
MORE_WRONG["on_push_borrowed_through_ps"] = ("q2-answer", '''
import course_lib.parameter_server as ps
def on_push(book, k):
    return ps.ssp.on_push(book, k)
''', "borrows course_lib.ssp.on_push")
MORE_WRONG["gossip_mix_borrowed"] = ("q3-answer", '''
from course_lib.gossip import gossip_mix, ring_mixing_matrix
def gossip_step(rank, world_size, x):
    return gossip_mix(x, ring_mixing_matrix(world_size), rank)
''', "borrows course_lib.gossip")
