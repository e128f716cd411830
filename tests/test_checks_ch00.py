"""Chapter 0 checks: pass on correct answers, fail with the right hint on plausible wrong ones."""
from __future__ import annotations

import re

import pytest
import torch

from course_lib import comm
from course_lib.grading import CheckFailed
from course_lib.grading import ch00


def ring_shift(rank, world_size, x):
    got = torch.empty_like(x)
    reqs = [comm.isend(x, (rank + 1) % world_size), comm.irecv(got, (rank - 1) % world_size)]
    for q in reqs:
        q.wait()
    return got


def ring_shift_wrong_direction(rank, world_size, x):
    got = torch.empty_like(x)
    reqs = [comm.isend(x, (rank - 1) % world_size), comm.irecv(got, (rank + 1) % world_size)]
    for q in reqs:
        q.wait()
    return got


def ring_shift_with_collective(rank, world_size, x):
    parts = [torch.empty_like(x) for _ in range(world_size)]
    comm.all_gather(parts, x)
    return parts[(rank - 1) % world_size]


def naive_all_reduce(rank, world_size, x):
    if rank == 0:
        buf = torch.empty_like(x)
        for src in range(1, world_size):
            comm.recv(buf, src)
            x += buf
        for dst in range(1, world_size):
            comm.send(x, dst)
    else:
        comm.send(x, 0)
        comm.recv(x, 0)
    return x


def naive_all_reduce_no_return(rank, world_size, x):
    if rank == 0:
        buf = torch.empty_like(x)
        for src in range(1, world_size):
            comm.recv(buf, src)
            x += buf
    else:
        comm.send(x, 0)
    return x


def all_to_all_p2p(rank, world_size, chunks):
    out = [None] * world_size
    out[rank] = chunks[rank]
    reqs = []
    for peer in range(world_size):
        if peer != rank:
            out[peer] = torch.empty_like(chunks[peer])
            reqs.append(comm.irecv(out[peer], peer))
            reqs.append(comm.isend(chunks[peer], peer))
    for q in reqs:
        q.wait()
    return out


def all_to_all_off_by_one(rank, world_size, chunks):
    out = [None] * world_size
    out[rank] = chunks[rank]
    reqs = []
    for peer in range(world_size):
        if peer != rank:
            out[peer] = torch.empty_like(chunks[peer])
            reqs.append(comm.irecv(out[peer], peer))
            reqs.append(comm.isend(chunks[(peer + 1) % world_size], peer))  # wrong index
    for q in reqs:
        q.wait()
    return out


def all_to_all_blocking(rank, world_size, chunks):
    out = [None] * world_size
    out[rank] = chunks[rank]
    for peer in range(world_size):  # everyone sends first with a 1 MB message: deadlock
        if peer != rank:
            comm.send(torch.zeros(1 << 18).add_(chunks[peer].sum()), peer)
    return out


def not_answered(rank, world_size, x):
    raise NotImplementedError()


def test_correct_answers_pass(capsys):
    ch00.check_ring_shift(ring_shift, world_sizes=(2, 3, 5))
    ch00.check_naive_all_reduce(naive_all_reduce, world_sizes=(2, 3, 4))
    ch00.check_all_to_all(all_to_all_p2p, world_sizes=(2, 3, 4))
    assert capsys.readouterr().out.count("passed") == 3


@pytest.mark.parametrize("fn,hint", [
    (ring_shift_wrong_direction, "right neighbour"),
    (ring_shift_with_collective, "called the collective(s) all_gather"),
    (not_answered, "not answered yet"),
])
def test_ring_shift_wrong(fn, hint):
    with pytest.raises(CheckFailed, match=re.escape(hint)):
        ch00.check_ring_shift(fn, world_sizes=(3,))


def test_naive_all_reduce_wrong():
    with pytest.raises(CheckFailed, match="rank 1 returned its own input unchanged: receive the total back"):
        ch00.check_naive_all_reduce(naive_all_reduce_no_return, world_sizes=(2,))


def test_all_to_all_wrong_index_names_rank_and_chunk():
    with pytest.raises(CheckFailed, match=r"rank \d received chunk \d (from rank \d|of rank \d twice)"):
        ch00.check_all_to_all(all_to_all_off_by_one, world_sizes=(3,))


def test_all_to_all_deadlock_is_reported_with_hint():
    from course_lib.grading.harness import run_learner

    with pytest.raises(CheckFailed, match="did not finish.*comm.irecv.*rank 0 blocked in course_lib.comm.send"):
        run_learner("Q3", all_to_all_blocking, 2, [[torch.zeros(1)] * 2] * 2, timeout=3,
                    deadlock_hint="Post the receives and sends with comm.irecv / comm.isend")
