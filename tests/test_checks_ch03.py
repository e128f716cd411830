"""Chapter 3 checks: pass on correct answers, fail with the right hint on plausible wrong ones."""
from __future__ import annotations

import re

import pytest
import torch

from course_lib import comm
from course_lib.grading import CheckFailed
from course_lib.grading import ch03


def ring_reduce_scatter(rank, world_size, x):
    chunks = x.chunk(world_size)
    buf = torch.empty_like(chunks[0])
    right, left = (rank + 1) % world_size, (rank - 1) % world_size
    for s in range(world_size - 1):
        reqs = [comm.isend(chunks[(rank - s - 1) % world_size], right), comm.irecv(buf, left)]
        for q in reqs:
            q.wait()
        chunks[(rank - s - 2) % world_size].add_(buf)
    return chunks[rank]


def rs_other_convention(rank, world_size, x):  # the textbook schedule: owns chunk rank + 1
    chunks = x.chunk(world_size)
    buf = torch.empty_like(chunks[0])
    right, left = (rank + 1) % world_size, (rank - 1) % world_size
    for s in range(world_size - 1):
        reqs = [comm.isend(chunks[(rank - s) % world_size], right), comm.irecv(buf, left)]
        for q in reqs:
            q.wait()
        chunks[(rank - s - 1) % world_size].add_(buf)
    return chunks[(rank + 1) % world_size]


def rs_one_step_short(rank, world_size, x):
    chunks = x.chunk(world_size)
    buf = torch.empty_like(chunks[0])
    right, left = (rank + 1) % world_size, (rank - 1) % world_size
    for s in range(world_size - 2):
        reqs = [comm.isend(chunks[(rank - s - 1) % world_size], right), comm.irecv(buf, left)]
        for q in reqs:
            q.wait()
        chunks[(rank - s - 2) % world_size].add_(buf)
    return chunks[(rank - world_size) % world_size] if world_size == 2 else chunks[rank]


def rs_with_collective(rank, world_size, x):
    out = torch.empty(x.numel() // world_size, dtype=x.dtype)
    comm.reduce_scatter_tensor(out, x)
    return out


def rs_whole_tensor(rank, world_size, x):
    ring_reduce_scatter(rank, world_size, x)
    return x


def ring_all_gather(rank, world_size, x):
    chunks = x.chunk(world_size)
    right, left = (rank + 1) % world_size, (rank - 1) % world_size
    for s in range(world_size - 1):
        reqs = [comm.isend(chunks[(rank - s) % world_size], right), comm.irecv(chunks[(rank - s - 1) % world_size], left)]
        for q in reqs:
            q.wait()
    return x


def ag_parity(rank, world_size, x):  # blocking calls ordered by parity: correct for even p
    chunks = x.chunk(world_size)
    right, left = (rank + 1) % world_size, (rank - 1) % world_size
    for s in range(world_size - 1):
        send, recv = chunks[(rank - s) % world_size], chunks[(rank - s - 1) % world_size]
        if rank % 2 == 0:
            comm.send(send, right)
            comm.recv(recv, left)
        else:
            comm.recv(recv, left)
            comm.send(send, right)
    return x


def ag_send_off_by_one(rank, world_size, x):
    chunks = x.chunk(world_size)
    right, left = (rank + 1) % world_size, (rank - 1) % world_size
    for s in range(world_size - 1):
        reqs = [comm.isend(chunks[(rank - s - 1) % world_size], right), comm.irecv(chunks[(rank - s - 1) % world_size], left)]
        for q in reqs:
            q.wait()
    return x


def ag_recv_off_by_one(rank, world_size, x):
    chunks = x.chunk(world_size)
    right, left = (rank + 1) % world_size, (rank - 1) % world_size
    for s in range(world_size - 1):
        reqs = [comm.isend(chunks[(rank - s) % world_size], right), comm.irecv(chunks[(rank - s - 2) % world_size], left)]
        for q in reqs:
            q.wait()
    return x


def ag_blocking(rank, world_size, x):
    chunks = x.chunk(world_size)
    for s in range(world_size - 1):
        comm.send(chunks[(rank - s) % world_size], (rank + 1) % world_size)
        comm.recv(chunks[(rank - s - 1) % world_size], (rank - 1) % world_size)
    return x


def not_answered(rank, world_size, x):
    raise NotImplementedError()


def test_correct_answers_pass(capsys):
    ch03.check_ring_reduce_scatter(ring_reduce_scatter, world_sizes=(2, 3, 5), m=2)
    ch03.check_ring_all_gather(ring_all_gather, world_sizes=(2, 3, 5), m=2)
    ch03.check_ring_all_gather(ag_parity, world_sizes=(2, 4))
    assert capsys.readouterr().out.count("passed") == 3


@pytest.mark.parametrize("fn,hint", [
    (rs_other_convention, "rank 0 ended with chunk 1 instead of chunk 0 (off by one)"),
    (rs_one_step_short, "contains the inputs of ranks"),
    (rs_with_collective, "called the collective(s) reduce_scatter_tensor"),
    (rs_whole_tensor, "return only its own reduced chunk"),
    (not_answered, "not answered yet"),
])
def test_reduce_scatter_wrong(fn, hint):
    with pytest.raises(CheckFailed, match=re.escape(hint)):
        ch03.check_ring_reduce_scatter(fn, world_sizes=(3,))


@pytest.mark.parametrize("fn,hint", [
    (ag_send_off_by_one, "is still empty"),
    (ag_recv_off_by_one, "(off by one)"),
])
def test_all_gather_wrong(fn, hint):
    with pytest.raises(CheckFailed, match=re.escape(hint)):
        ch03.check_ring_all_gather(fn, world_sizes=(3,))


def test_deadlock_hint_names_the_blocked_call():
    with pytest.raises(CheckFailed, match=r"did not finish.*The run deadlocks.*order by parity"
                       r".*blocked in course_lib\.comm\.send"):
        ch03.check_ring_all_gather(ag_blocking, world_sizes=(2,))
