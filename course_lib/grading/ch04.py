"""Checks for chapter 4 (data parallelism: bucketed all-reduce from hooks; ZeRO-1 step).

Each ``check_*`` runs the learner's code on real gloo ranks, compares with a single-process
computation done here, inspects the counted communication (which collective, how many
calls, when they started) and raises :class:`CheckFailed` with a hint naming the rank and
the likely mistake. ``hidden=True`` cases use other world sizes, caps and sizes.
"""
from __future__ import annotations

import functools
import time
from typing import Callable

import torch

from course_lib import comm
from course_lib.configs import toy_config
from course_lib.ddp import assign_buckets
from course_lib.grading import isolation
from course_lib.grading.borrow import own_work
from course_lib.grading.feedback import CheckFailed, expect, passed
from course_lib.grading.harness import run_learner
from course_lib.model import GPT
from course_lib.zero import shard_range

Q1, Q2 = "Q1 bucketed all-reduce", "Q2 ZeRO-1 step"
# What the exercise hands out: an answer may use it.
HANDED_OUT = ("course_lib.ddp.assign_buckets", "course_lib.zero.adamw_update_")
_CFG = toy_config()
_BATCH = 12  # divisible by 2, 3 and 4


# ----------------------------------------------------------------------------- Q1
def _q1_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(4)
    x = torch.randint(_CFG.vocab_size, (_BATCH, _CFG.block_size), generator=g)
    return x, torch.roll(x, -1, dims=1)


def _q1_rank(cls: type, rank: int, world_size: int, cap: int) -> dict:
    """On one rank: same model everywhere, this rank's rows, backward, then ``finish``."""
    torch.manual_seed(0)
    model = GPT(_CFG)
    x, y = _q1_batch()
    rows = slice(rank * _BATCH // world_size, (rank + 1) * _BATCH // world_size)
    hooks = cls(model, cap)
    comm.reset_stats()
    comm.tracing = True
    _, loss = model(x[rows], y[rows])
    loss.backward()
    backward_end = time.perf_counter()
    local = torch.cat([p.grad.reshape(-1).clone() for p in model.parameters()])
    hooks.finish()
    grads = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in model.parameters()])
    return {"grads": grads, "local": local, "stats": comm.get_stats(), "backward_end": backward_end}


@own_work(Q1, forbid=("course_lib.ddp", "course_lib.zero", "torch.nn.parallel", "torch.distributed"), allow=HANDED_OUT)
def check_bucketed_all_reduce(cls: type, world_sizes: tuple[int, ...] = (2,), caps: tuple[int, ...] = (2048,)) -> None:
    """After ``loss.backward(); hooks.finish()`` every rank's gradients must be the mean over the
    ranks (= the full-batch gradient), with one async all_reduce per bucket, all launched
    from the hooks, i.e. before backward returns."""
    if not isolation.is_class(cls):
        raise CheckFailed(Q1, f"expected your class BucketedAllReduce, got {isolation.type_name(cls)}")
    torch.manual_seed(0)
    ref = GPT(_CFG)
    x, y = _q1_batch()
    ref(x, y)[1].backward()
    want = torch.cat([p.grad.reshape(-1) for p in ref.parameters()])
    for p in world_sizes:
        for cap in caps:
            n_buckets = len(assign_buckets(list(ref.parameters())[::-1], cap))
            res = run_learner(Q1, functools.partial(_q1_rank, cls), p, [cap] * p, deadlock_hint=(
                "Every rank must launch the same buckets in the same order, and finish() must wait() on "
                "each of them. Does a bucket get launched only when *all* its gradients are ready?"))
            for r, (out, _) in enumerate(res):
                got, local, stats = out["grads"], out["local"], out["stats"]
                calls = stats.collective_calls
                others = sorted(set(calls) - {"all_reduce"})
                expect(not others, Q1, f"rank {r} called {others}; averaging gradients needs comm.all_reduce only")
                expect(calls["all_reduce"] > 0, Q1, f"rank {r} never called comm.all_reduce: launch one per bucket "
                       "from on_grad_ready when the bucket's last gradient arrives")
                if torch.allclose(got, p * want, atol=1e-6):
                    raise CheckFailed(Q1, f"rank {r}: grads are {p}x too large: all_reduce sums over the ranks, "
                                      "divide by world_size to get the mean")
                if torch.allclose(got, local, atol=0, rtol=0) and not torch.allclose(local, want, atol=1e-6):
                    raise CheckFailed(Q1, f"rank {r}'s gradients are still its own local ones: in finish(), wait() "
                                      "for each bucket and copy the averaged buffer back into p.grad")
                if not torch.allclose(got, want, atol=1e-6):
                    bad = (got - want).abs().argmax().item()
                    raise CheckFailed(Q1, f"rank {r}: gradient element {bad} is {got[bad]:.6g}, the mean over ranks is "
                                      f"{want[bad]:.6g}; copy each bucket back to the parameters it came from, in the "
                                      "same order you flattened them")
                expect(calls["all_reduce"] == n_buckets, Q1,
                       f"rank {r} called all_reduce {calls['all_reduce']} times, expected one per bucket "
                       f"({n_buckets} buckets with bucket_cap_bytes={cap}): flatten each bucket into one tensor")
                starts = [t0 for op, _, t0, _, _ in stats.trace if op == "all_reduce"]
                late = [t0 for t0 in starts if t0 >= out["backward_end"]]
                expect(not late, Q1, f"rank {r}: {len(late)} of {len(starts)} all_reduce calls started after backward ended: "
                       "launch each bucket's all_reduce from the hook (on_grad_ready), not in finish(), so it "
                       "overlaps with the rest of backward")
                blocking = [e for e in stats.trace if e[0] == "all_reduce" and e[3] is not None]
                expect(not blocking, Q1, f"rank {r} ran {len(blocking)} all_reduce calls blocking: pass "
                       "async_op=True and wait() in finish(), so backward goes on while the bucket travels")
    passed(Q1, f"world sizes {list(world_sizes)}, bucket caps {list(caps)} B; every bucket launched during backward")


# ----------------------------------------------------------------------------- Q2
_LR = 0.05


def _q2_grads(p: int, n: int, steps: int) -> list[list[torch.Tensor]]:
    g = torch.Generator().manual_seed(100 + p)
    return [[torch.randn(n, generator=g) for _ in range(p)] for _ in range(steps)]


def _q2_rank(fn: Callable, rank: int, world_size: int, case: tuple) -> dict:
    n, steps = case
    params = torch.linspace(-1, 1, n)
    grads = _q2_grads(world_size, n, steps)
    state: dict = {}
    comm.reset_stats()
    for t in range(steps):
        fn(rank, world_size, params, grads[t][rank].clone(), state, _LR)
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}  # what the check reads
    return {"params": params, "state_numel": sum(v.numel() for v in tensors.values()), "state": tensors,
            "stats": comm.get_stats()}


def _q2_reference(p: int, n: int, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    theta = torch.nn.Parameter(torch.linspace(-1, 1, n))
    opt = torch.optim.AdamW([theta], lr=_LR, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.0, foreach=False)
    for per_rank in _q2_grads(p, n, steps):
        theta.grad = torch.stack(per_rank).sum(0) / p
        opt.step()
    return theta.detach(), opt.state[theta]["exp_avg"]


@own_work(Q2, forbid=("course_lib.zero", "course_lib.ddp", "torch.distributed"), allow=HANDED_OUT)
def check_zero1_step(fn: Callable, world_sizes: tuple[int, ...] = (2,), n: int = 12, steps: int = 3) -> None:
    """``fn(rank, world_size, params, grad, state, lr)``, called ``steps`` times, must leave
    ``params`` equal to AdamW on the whole vector with the mean gradient, on every rank, while
    ``state`` holds exp_avg and exp_avg_sq for this rank's shard only (2 n / p floats)."""
    for p in world_sizes:
        want, want_m = _q2_reference(p, n, steps)
        res = run_learner(Q2, functools.partial(_q2_rank, fn), p, [(n, steps)] * p, deadlock_hint=(
            "Every rank must call the same collectives: one reduce_scatter_tensor and one "
            "all_gather_into_tensor per step, on all ranks."))
        s = n // p
        for r, (out, _) in enumerate(res):
            lo, hi = shard_range(n, r, p)
            k = out["state_numel"]
            if k >= 2 * n:
                raise CheckFailed(Q2, f"rank {r} updated the whole parameter vector (its optimizer state has {k} "
                                  f"floats): only update your shard [start, end) = [{lo}, {hi}) and keep exp_avg and "
                                  f"exp_avg_sq for those {s} elements")
            expect(k == 2 * s, Q2, f"rank {r} keeps {k} floats of optimizer state; ZeRO-1 keeps exp_avg and "
                   f"exp_avg_sq for its shard only: 2 x n/p = {2 * s}")
        for r, (out, _) in enumerate(res):
            if not torch.equal(out["params"], res[0][0]["params"]):
                raise CheckFailed(Q2, f"rank {r} and rank 0 ended with different parameters: after updating your "
                                  "shard, all-gather every rank's shard into params "
                                  "(comm.all_gather_into_tensor(params, my_shard))")
        for r, (out, _) in enumerate(res):
            lo, hi = shard_range(n, r, p)
            m = out["state"].get("exp_avg")
            if isinstance(m, torch.Tensor) and m.shape == (s,) and torch.allclose(m, p * want_m[lo:hi], atol=1e-6):
                raise CheckFailed(Q2, f"rank {r}: exp_avg is {p}x too large: reduce_scatter sums the gradients, "
                                  "divide by world_size to get the mean")
            got = out["params"]
            if not torch.allclose(got, want, atol=1e-6):
                bad = (got - want).abs().argmax().item()
                owner = bad // s
                raise CheckFailed(Q2, f"parameter {bad} (in rank {owner}'s shard) is {got[bad]:.6g}, AdamW on the whole "
                                  f"vector gives {want[bad]:.6g}: rank {owner} must update params[{owner * s}:"
                                  f"{(owner + 1) * s}] with its shard of the mean gradient, and the step count "
                                  "t must start at 1")
            calls, nbytes = out["stats"].collective_calls, out["stats"].collective_bytes
            expect(set(calls) == {"reduce_scatter_tensor", "all_gather_into_tensor"}, Q2,
                   f"rank {r} called {sorted(calls)}; ZeRO-1 needs exactly comm.reduce_scatter_tensor (my shard of the "
                   "summed gradient) and comm.all_gather_into_tensor (everyone's updated shard)")
            expect(calls["reduce_scatter_tensor"] == steps and calls["all_gather_into_tensor"] == steps, Q2,
                   f"rank {r} called reduce_scatter_tensor {calls['reduce_scatter_tensor']} and all_gather_into_tensor "
                   f"{calls['all_gather_into_tensor']} times in {steps} steps: once each per step")
            expect(nbytes["all_gather_into_tensor"] == steps * 4 * s, Q2,
                   f"rank {r} all-gathered {nbytes['all_gather_into_tensor'] // steps} B per step; its shard is "
                   f"{4 * s} B (n/p floats)")
    passed(Q2, f"world sizes {list(world_sizes)}, n={n}: equal to AdamW on the whole vector with 1/p of the state")
