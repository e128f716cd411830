"""Chapter 4 checks: pass on correct answers, fail with the right hint on plausible wrong ones."""
from __future__ import annotations

import pytest
import torch

from course_lib import comm
from course_lib.ddp import assign_buckets
from course_lib.grading import CheckFailed, ch04
from course_lib.zero import adamw_update_


class Bucketed:
    """The reference answer to Q1."""

    def __init__(self, model, bucket_cap_bytes, divide=True, launch_in_hook=True, async_op=True, per_param=False):
        self.world_size = comm.get_world_size()
        params = list(model.parameters())
        self.buckets = assign_buckets(params[::-1], 1 if per_param else bucket_cap_bytes)
        self.bucket_of = {p: b for b, bucket in enumerate(self.buckets) for p in bucket}
        self.ready = [0] * len(self.buckets)
        self.works = []
        self.divide, self.launch_in_hook, self.async_op = divide, launch_in_hook, async_op
        for p in params:
            p.register_post_accumulate_grad_hook(self.on_grad_ready)

    def launch(self, b):
        flat = torch.cat([q.grad.reshape(-1) for q in self.buckets[b]])
        self.works.append((comm.all_reduce(flat, async_op=self.async_op), flat, b))

    def on_grad_ready(self, p):
        b = self.bucket_of[p]
        self.ready[b] += 1
        if self.ready[b] == len(self.buckets[b]) and self.launch_in_hook:
            self.launch(b)

    def finish(self):
        if not self.launch_in_hook:
            for b in range(len(self.buckets)):
                self.launch(b)
        for work, flat, b in self.works:
            if work is not None:
                work.wait()
            if self.divide:
                flat /= self.world_size
            off = 0
            for q in self.buckets[b]:
                q.grad.copy_(flat[off:off + q.numel()].view_as(q.grad))
                off += q.numel()
        self.works, self.ready = [], [0] * len(self.buckets)


def variant(**kw):
    return type("Variant", (Bucketed,), {"__init__": lambda self, m, c: Bucketed.__init__(self, m, c, **kw)})


class NoCopyBack(Bucketed):
    def finish(self):
        for work, _, _ in self.works:
            work.wait()


class NotAnswered:
    def __init__(self, model, cap):
        for p in model.parameters():
            p.register_post_accumulate_grad_hook(self.on_grad_ready)

    def on_grad_ready(self, p):
        raise NotImplementedError()


def test_q1_correct_answer_passes(capsys):
    ch04.check_bucketed_all_reduce(Bucketed, world_sizes=(2, 3), caps=(2048, 10**9))
    assert "passed" in capsys.readouterr().out


@pytest.mark.parametrize("cls,hint", [
    (variant(divide=False), "grads are 2x too large: all_reduce sums over the ranks, divide by world_size"),
    (variant(launch_in_hook=False), "started after backward ended: launch each bucket's all_reduce from the hook"),
    (variant(async_op=False), "pass async_op=True"),
    (variant(per_param=True), "expected one per bucket"),
    (NoCopyBack, "copy the averaged buffer back into p.grad"),
    (NotAnswered, "not answered yet"),
])
def test_q1_wrong_answers_get_their_hint(cls, hint):
    with pytest.raises(CheckFailed, match=hint.replace("(", r"\(")):
        ch04.check_bucketed_all_reduce(cls)


# ----------------------------------------------------------------------------- Q2
def zero1_step(rank, world_size, params, grad, state, lr, *, whole=False, divide=True, gather=True, use_all_reduce=False):
    n = params.numel()
    s = n // world_size
    lo, hi = (0, n) if whole else (rank * s, (rank + 1) * s)
    if use_all_reduce:
        comm.all_reduce(grad)
        g = grad[lo:hi].clone()
    elif whole:
        comm.all_reduce(grad)
        g = grad
    else:
        g = torch.empty(s)
        comm.reduce_scatter_tensor(g, grad)
    if divide:
        g /= world_size
    if not state:
        state.update(exp_avg=torch.zeros(hi - lo), exp_avg_sq=torch.zeros(hi - lo), step=0)
    state["step"] += 1
    shard = params[lo:hi].clone()
    adamw_update_(shard, g, state["exp_avg"], state["exp_avg_sq"], state["step"], lr)
    if whole:
        params.copy_(shard)
    elif gather:
        comm.all_gather_into_tensor(params, shard)
    else:
        params[lo:hi] = shard


def z(**kw):
    return lambda *a: zero1_step(*a, **kw)


def test_q2_correct_answer_passes(capsys):
    ch04.check_zero1_step(zero1_step, world_sizes=(2, 3, 4), n=12)
    assert "passed" in capsys.readouterr().out


@pytest.mark.parametrize("fn,hint", [
    (z(whole=True), "rank 0 updated the whole parameter vector"),
    (z(divide=False), "exp_avg is 2x too large"),
    (z(gather=False), "different parameters: after updating your shard, all-gather"),
    (z(use_all_reduce=True), "needs exactly comm.reduce_scatter_tensor"),
    (lambda *a: (_ for _ in ()).throw(NotImplementedError()), "not answered yet"),
])
def test_q2_wrong_answers_get_their_hint(fn, hint):
    with pytest.raises(CheckFailed, match=hint):
        ch04.check_zero1_step(fn)
