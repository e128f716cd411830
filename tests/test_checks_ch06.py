"""Chapter 6 checks: pass on correct answers, fail with the right hint on plausible wrong ones."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from course_lib import comm
from course_lib.grading import CheckFailed, ch06

WRONG_PATH = Path(__file__).parent / "wrong_answers" / "06_pipeline_parallel.py"


def wrong(gid: str):
    spec = importlib.util.spec_from_file_location("wrong06", WRONG_PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    src, hint = mod.WRONG[gid]
    ns = {"torch": torch, "comm": comm}
    exec(src, ns)
    return ns, hint


def one_f_one_b_rank(rank, p, m):
    w = min(p - rank - 1, m)
    ops = [("F", i) for i in range(w)]
    for i in range(m - w):
        ops += [("F", w + i), ("B", i)]
    return ops + [("B", i) for i in range(m - w, m)]


def test_q1_correct_passes():
    ch06.check_one_f_one_b(one_f_one_b_rank, sizes=((2, 4), (4, 8), (4, 2), (3, 5)))


def test_q1_gpipe_order_fails_on_memory():
    ns, hint = wrong("q1-answer")
    with pytest.raises(CheckFailed, match=hint):
        ch06.check_one_f_one_b(ns["one_f_one_b_rank"])


def test_q1_deadlocking_order_names_ranks_and_events():
    def reversed_on_rank_1(rank, p, m):  # rank 1 takes the micro-batches in another order
        ops = one_f_one_b_rank(rank, p, m)
        return [(k, m - 1 - i) for k, i in ops] if rank == 1 else ops
    with pytest.raises(CheckFailed, match=r"deadlocks: .*rank 0 is blocked in RECV_B0@s0<-r1.*rank 1 is blocked in RECV_F3@s1<-r0"):
        ch06.check_one_f_one_b(reversed_on_rank_1, sizes=((2, 4),))


def test_q1_too_few_warmup_forwards_is_slow():
    def no_warmup(rank, p, m):
        return [op for i in range(m) for op in (("F", i), ("B", i))]
    with pytest.raises(CheckFailed, match="warm-up forwards, not fewer"):
        ch06.check_one_f_one_b(no_warmup, sizes=((4, 8),))


def test_q1_missing_backward_is_named():
    with pytest.raises(CheckFailed, match="rank 0 never runs B3@s0"):
        ch06.check_one_f_one_b(lambda r, p, m: one_f_one_b_rank(r, p, m)[:-1] if r == 0 else one_f_one_b_rank(r, p, m),
                               sizes=((2, 4),))


def two_stage(rank, world_size, job, divide=True, gpipe=False):
    m = len(job.micro_batches)
    if rank == 0:
        acts, works = {}, []
        def fwd(i):
            acts[i] = job.stage(job.micro_batches[i][0])
            works.append(comm.isend(acts[i].detach(), 1))
        if gpipe:
            for i in range(m):
                fwd(i)
        else:
            fwd(0)
        for i in range(m):
            if not gpipe and i + 1 < m:
                fwd(i + 1)
            g = torch.empty(job.act_shape)
            comm.recv(g, 1)
            acts.pop(i).backward(g)
        for w in works:
            w.wait()
        return None
    total, works = 0.0, []
    for i in range(m):
        h = torch.empty(job.act_shape)
        comm.recv(h, 0)
        h.requires_grad_()
        loss = job.stage(h, job.micro_batches[i][1]) / (m if divide else 1)
        loss.backward()
        total += loss.item() / (1 if divide else m)
        works.append(comm.isend(h.grad, 0))
    for w in works:
        w.wait()
    return total


def test_q2_correct_passes():
    ch06.check_two_stage(two_stage, ms=(1, 4))


def test_q2_blocking_sends_deadlock():
    ns, hint = wrong("q2-answer")
    with pytest.raises(CheckFailed, match=hint) as e:
        ch06.check_two_stage(ns["two_stage_1f1b"])
    assert "rank 0" in str(e.value) and "rank 1" in str(e.value)


def test_q2_gpipe_order_and_missing_division_fail():
    with pytest.raises(CheckFailed, match="that is GPipe's order"):
        ch06.check_two_stage(lambda r, w, j: two_stage(r, w, j, gpipe=True))
    with pytest.raises(CheckFailed, match="m = 4 times too large"):
        ch06.check_two_stage(lambda r, w, j: two_stage(r, w, j, divide=False))


def test_calling_the_course_implementation_is_refused():
    answer = {"__name__": "__main__"}  # defined as in a notebook cell, where the borrow search looks
    exec("from course_lib.pipeline_schedules import one_f_one_b\n"
         "def borrowed(rank, p, m):\n"
         "    return [(a.kind, a.mb) for a in one_f_one_b(p, m).ranks[rank] if a.is_compute]\n", answer)
    with pytest.raises(CheckFailed, match="borrows course_lib.pipeline_schedules.one_f_one_b"):
        ch06.check_one_f_one_b(answer["borrowed"])
