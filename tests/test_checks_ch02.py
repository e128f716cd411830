"""Chapter 2 checks: pass on correct answers, fail with the right hint on plausible wrong ones."""
from __future__ import annotations

import re

import pytest
import torch

from course_lib import comm
from course_lib.grading import CheckFailed, ch02


# ----------------------------------------------------------------------------- Q1
def sync_ps_step(rank, world_size, x):
    w = x["w"]
    if rank == 0:
        grads = [torch.empty_like(w) for _ in range(world_size - 1)]
        for q in [comm.irecv(g, src) for src, g in enumerate(grads, start=1)]:
            q.wait()
        w = w - x["lr"] * torch.stack(grads).mean(0)
        for q in [comm.isend(w, dst) for dst in range(1, world_size)]:
            q.wait()
    else:
        comm.send(x["g"], 0)
        comm.recv(w, 0)
    return w


def sync_ps_step_divides_by_world_size(rank, world_size, x):
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


def sync_ps_step_no_pull(rank, world_size, x):
    w = x["w"]
    if rank == 0:
        buf = torch.empty_like(w)
        total = torch.zeros_like(w)
        for src in range(1, world_size):
            comm.recv(buf, src)
            total += buf
        w = w - x["lr"] * total / (world_size - 1)
    else:
        comm.send(x["g"], 0)
    return w


def sync_ps_step_all_reduce(rank, world_size, x):
    g = x.get("g", torch.zeros_like(x["w"]))
    lr = torch.tensor([x.get("lr", 0.0)], dtype=g.dtype)
    comm.all_reduce(g)
    comm.all_reduce(lr)
    return x["w"] - lr * g / (world_size - 1)


def test_sync_ps_step_passes(capsys):
    ch02.check_sync_ps_step(sync_ps_step, world_sizes=(2, 3, 5))
    assert "passed" in capsys.readouterr().out


@pytest.mark.parametrize("fn,hint", [
    (sync_ps_step_divides_by_world_size, "divided the sum by world_size = 4"),
    (sync_ps_step_no_pull, "worker rank 1 returned the old parameters"),
    (sync_ps_step_all_reduce, "called the collective(s) all_reduce"),
])
def test_sync_ps_step_wrong(fn, hint):
    with pytest.raises(CheckFailed, match=re.escape(hint)):
        ch02.check_sync_ps_step(fn, world_sizes=(4,))


# ----------------------------------------------------------------------------- Q2
def on_push(book, k):
    tau = book.version - book.pulled[k]
    book.staleness.append(tau)
    book.version += 1
    book.clock[k] += 1
    book.waiting.add(k)
    slowest = min(book.clock)
    released = [j for j in sorted(book.waiting) if book.s is None or book.clock[j] - slowest <= book.s]
    for j in released:
        book.pulled[j] = book.version
        book.max_gap = max(book.max_gap, book.clock[j] - slowest)
    book.waiting -= set(released)
    return released


def on_push_late_tau(book, k):
    book.version += 1
    tau = book.version - book.pulled[k]
    book.staleness.append(tau)
    book.clock[k] += 1
    book.waiting.add(k)
    slowest = min(book.clock)
    released = [j for j in sorted(book.waiting) if book.s is None or book.clock[j] - slowest <= book.s]
    for j in released:
        book.pulled[j] = book.version
    book.waiting -= set(released)
    return released


def on_push_strict(book, k):
    tau = book.version - book.pulled[k]
    book.staleness.append(tau)
    book.version += 1
    book.clock[k] += 1
    book.waiting.add(k)
    released = [j for j in sorted(book.waiting) if book.s is None or book.clock[j] - min(book.clock) < book.s]
    for j in released:
        book.pulled[j] = book.version
    book.waiting -= set(released)
    return released


def on_push_never_pulls(book, k):
    book.staleness.append(book.version - book.pulled[k])
    book.version += 1
    book.clock[k] += 1
    book.waiting.add(k)
    released = [j for j in sorted(book.waiting) if book.s is None or book.clock[j] - min(book.clock) <= book.s]
    book.waiting -= set(released)
    return released


def on_push_release_all(book, k):
    """Bookkeeping right on the scripts' ASP case, but ignores the bound."""
    book.staleness.append(book.version - book.pulled[k])
    book.version += 1
    book.clock[k] += 1
    book.pulled[k] = book.version
    return [k]


def test_on_push_passes(capsys):
    ch02.check_on_push(on_push, real_runs=((3, 1), (2, 0), (3, None)))
    assert "passed" in capsys.readouterr().out


@pytest.mark.parametrize("fn,hint", [
    (on_push_late_tau, "*before* adding 1 to version"),
    (on_push_strict, "use <=, not <"),
    (on_push_never_pulls, "book.pulled never changes"),
    (on_push_release_all, "expected []"),
])
def test_on_push_wrong(fn, hint):
    with pytest.raises(CheckFailed, match=re.escape(hint)):
        ch02.check_on_push(fn, real_runs=())


def test_on_push_deadlock_in_real_run_is_a_hint():
    """A rule that passes no script but is run for real: the server refuses to wait forever."""
    def never_release(book, k):
        book.staleness.append(book.version - book.pulled[k])
        book.version += 1
        book.clock[k] += 1
        return []

    with pytest.raises(CheckFailed, match="no worker was released"):
        ch02._real_run(never_release, 2, 0, 3)


# ----------------------------------------------------------------------------- Q3
def gossip_step(rank, world_size, x):
    left, right = (rank - 1) % world_size, (rank + 1) % world_size
    a, b = torch.empty_like(x), torch.empty_like(x)
    reqs = [comm.irecv(a, left), comm.irecv(b, right), comm.isend(x, left), comm.isend(x, right)]
    for q in reqs:
        q.wait()
    return (a + x + b) / 3


def gossip_step_half_self(rank, world_size, x):
    left, right = (rank - 1) % world_size, (rank + 1) % world_size
    a, b = torch.empty_like(x), torch.empty_like(x)
    reqs = [comm.irecv(a, left), comm.irecv(b, right), comm.isend(x, left), comm.isend(x, right)]
    for q in reqs:
        q.wait()
    return x / 2 + (a + b) / 4


def gossip_step_left_only(rank, world_size, x):
    a = torch.empty_like(x)
    reqs = [comm.irecv(a, (rank - 1) % world_size), comm.isend(x, (rank + 1) % world_size)]
    for q in reqs:
        q.wait()
    return (x + a) / 2


def gossip_step_blocking(rank, world_size, x):
    big = torch.zeros(1 << 18, dtype=x.dtype)
    comm.send(big, (rank + 1) % world_size)  # every rank sends first: nobody receives
    comm.recv(big, (rank - 1) % world_size)
    return x


def test_gossip_step_passes(capsys):
    ch02.check_gossip_step(gossip_step, world_sizes=(3, 4, 6))
    assert "passed" in capsys.readouterr().out


@pytest.mark.parametrize("fn,hint", [
    (gossip_step_half_self, "used weight 1/2 for itself"),
    (gossip_step_left_only, "mixed with only one neighbour"),
])
def test_gossip_step_wrong(fn, hint):
    with pytest.raises(CheckFailed, match=re.escape(hint)):
        ch02.check_gossip_step(fn, world_sizes=(4,))


def test_gossip_step_deadlock_is_reported():
    from course_lib.grading.harness import run_learner

    with pytest.raises(CheckFailed, match="did not finish.*comm.irecv"):
        run_learner(ch02.Q3, gossip_step_blocking, 3, [torch.zeros(2)] * 3, timeout=3,
                    deadlock_hint="post comm.irecv from both neighbours")
