"""Checks for chapter 7 (compressed all-reduce): majority vote with packed signs, Top-K with
error feedback, one PowerSGD step.

Each check runs the learner's function on real gloo ranks, compares every rank's result with a
single-process computation done here, and reads ``comm``'s counters: a compressor that sends as
many bytes as the dense gradient saves nothing, whatever its result. Hints name the rank and
the likely mistake. The learner's code must do the work itself: using the course's compressors
(``course_lib.compression``) fails.
"""
from __future__ import annotations

import functools
import math
from typing import Callable

import torch

from course_lib import comm
from course_lib.grading.borrow import own_work
from course_lib.grading.feedback import CheckFailed, expect, passed
from course_lib.grading.harness import run_learner

Q1, Q2, Q3 = "Q1 majority vote", "Q2 Top-K with error feedback", "Q3 PowerSGD step"
# What the questions ask the learner to write, so an answer may not use it (course_lib.grading.borrow).
FORBID = ("course_lib.compression", "torch.distributed.algorithms.ddp_comm_hooks", "torch.distributed")


def _stats_bytes(stats) -> tuple[int, dict]:
    return sum(stats.collective_bytes.values()), dict(stats.collective_calls)


# ----------------------------------------------------------------------------- Q1
def _signs(g: torch.Tensor) -> torch.Tensor:
    return torch.where(g >= 0, 1.0, -1.0)


def _q1_inputs(p: int, n: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(7 + p + n)
    shared = torch.randn(n, generator=gen)
    return [shared + 1.5 * torch.randn(n, generator=gen) for _ in range(p)]


def _q1_rank(fn: Callable, rank: int, world_size: int, grad: torch.Tensor):
    return fn(grad)


@own_work(Q1, forbid=FORBID)
def check_majority_vote(fn: Callable, world_sizes: tuple[int, ...] = (3,), sizes: tuple[int, ...] = (64, 37)) -> None:
    """``fn(grad)`` on every rank must return ``sign(sum_r sign(g_r))`` (+1 for g >= 0) while
    its collectives take ``ceil(n/8)`` bytes per rank: the signs packed 8 to a byte."""
    for p in world_sizes:
        for n in sizes:
            grads = _q1_inputs(p, n)
            want = torch.sign(sum(_signs(g) for g in grads))
            seed = torch.sign(sum(grads))
            res = run_learner(Q1, functools.partial(_q1_rank, fn), p, grads, deadlock_hint=(
                "Every rank must call the same collective once: comm.all_gather_into_tensor of its packed signs."))
            for r, (out, stats) in enumerate(res):
                nbytes, calls = _stats_bytes(stats)
                expect(isinstance(out, torch.Tensor) and out.shape == (n,), Q1,
                       f"rank {r} returned {type(out).__name__} {getattr(out, 'shape', '')}; return a tensor of "
                       f"the gradient's shape ({n},)")
                expect(nbytes > 0, Q1, f"rank {r} sent nothing through course_lib.comm: use comm.all_gather_into_tensor")
                if "all_reduce" in calls and nbytes >= 4 * n:
                    raise CheckFailed(Q1, f"rank {r}: you all-reduced the dense gradient: the counters show "
                                      f"{nbytes} bytes = 4n per rank, no saving. Pack the signs first and all-gather them")
                expect(nbytes < n, Q1, f"rank {r} sent {nbytes} bytes for {n} signs: that is a byte or more per sign. "
                       f"Pack 8 signs into each uint8 (ceil(n/8) = {math.ceil(n / 8)} bytes)")
                expect(nbytes == math.ceil(n / 8), Q1, f"rank {r} sent {nbytes} bytes; packed signs of {n} "
                       f"elements take ceil(n/8) = {math.ceil(n / 8)} bytes (pad the last byte, do not send extra)")
                out = out.float()
                if not torch.equal(out, want) and torch.equal(torch.sign(out), seed):
                    raise CheckFailed(Q1, f"rank {r} returned sign(sum of gradients), the seed's update; majority "
                                      "vote is sign(sum of the ranks' signs)")
                if not torch.equal(out, want):
                    bad = (out != want).nonzero()[0].item()
                    raise CheckFailed(Q1, f"rank {r}: element {bad} is {out[bad]:g}, the vote gives {want[bad]:g}. "
                                      "Check the bit order of pack and unpack (and that unpacking drops the padding), "
                                      "and count a set bit as +1, a clear bit as -1")
    passed(Q1, f"world sizes {list(world_sizes)}, sizes {list(sizes)}; ceil(n/8) bytes per rank")


# ----------------------------------------------------------------------------- Q2
def _q2_inputs(p: int, shape: tuple[int, ...], steps: int) -> list[list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(11 + p)
    return [[torch.randn(shape, generator=gen) for _ in range(steps)] for _ in range(p)]


def _q2_rank(fn: Callable, k: int, rank: int, world_size: int, grads: list[torch.Tensor]):
    residual = torch.zeros(grads[0].numel())
    outs, residuals, stats = [], [], []
    for g in grads:
        comm.reset_stats()
        out, residual = fn(g.clone(), residual, k)
        outs.append(out.clone())
        residuals.append(residual.clone())
        stats.append(_stats_bytes(comm.get_stats()))
    return outs, residuals, stats


def _q2_reference(grads: list[list[torch.Tensor]], k: int, error_feedback: bool = True):
    p = len(grads)
    n = grads[0][0].numel()
    e = [torch.zeros(n) for _ in range(p)]
    outs, res = [], []
    for t in range(len(grads[0])):
        kept = []
        for r in range(p):
            v = grads[r][t].reshape(-1) + (e[r] if error_feedback else 0)
            idx = v.abs().topk(k).indices
            c = torch.zeros(n).index_copy_(0, idx, v[idx])
            e[r] = v - c
            kept.append(c)
        outs.append(sum(kept) / p)
        res.append([x.clone() for x in e])
    return outs, res


@own_work(Q2, forbid=FORBID)
def check_topk_ef(fn: Callable, world_sizes: tuple[int, ...] = (2,), shape: tuple[int, ...] = (8, 25), k: int = 6,
                  steps: int = 3) -> None:
    """``out, residual = fn(grad, residual, k)``, called ``steps`` times per rank: ``out`` must be
    ``(1/p) sum_r c_r`` with ``c_r`` the k largest-magnitude entries of ``p_r = grad_r + residual_r``
    over the *whole* tensor, the new residual ``p_r - c_r``, and the collectives must carry only
    k values and k indices per rank (all-gathered)."""
    for p in world_sizes:
        grads = _q2_inputs(p, shape, steps)
        want, want_res = _q2_reference(grads, k)
        no_ef, _ = _q2_reference(grads, k, error_feedback=False)
        n = math.prod(shape)
        res = run_learner(Q2, functools.partial(_q2_rank, fn, k), p, grads, deadlock_hint=(
            "Every rank must call the same collectives: all-gather the k values and the k indices (both "
            "of the same size on every rank)."))
        for r, ((outs, residuals, stats), _) in enumerate(res):
            for t in range(steps):
                nbytes, calls = stats[t]
                expect(nbytes > 0, Q2, f"rank {r} sent nothing through course_lib.comm at step {t}")
                if nbytes >= 4 * n:
                    raise CheckFailed(Q2, f"rank {r}: you all-reduced the dense masked tensor: the counters show "
                                      f"{nbytes} bytes (4n = {4 * n}) per rank, no saving. Send the k values and "
                                      "their indices with comm.all_gather_into_tensor")
                expect(nbytes in (8 * k, 12 * k), Q2, f"rank {r} handed {nbytes} bytes to collectives at step {t}; "
                       f"k={k} float32 values and k int32 (or int64) indices are {8 * k} (or {12 * k}) bytes")
                got = outs[t].reshape(-1).float()
                if torch.allclose(got, p * want[t], atol=1e-5) and p > 1:
                    raise CheckFailed(Q2, f"rank {r}: the result is {p}x too large: divide the sum of the ranks' "
                                      "values by world_size")
                if t > 0 and torch.allclose(got, no_ef[t], atol=1e-5) and not torch.allclose(got, want[t], atol=1e-5):
                    raise CheckFailed(Q2, f"rank {r}, step {t}: no error feedback: add the residual to the gradient "
                                      "before choosing the top k, and return residual = p - (what you sent)")
                if not torch.allclose(got, want[t], atol=1e-5):
                    raise CheckFailed(Q2, f"rank {r}, step {t}: the mean of the ranks' top-{k} vectors is wrong "
                                      f"(max error {(got - want[t]).abs().max():.3g}). Choose the k largest |p| of the "
                                      "whole flattened tensor (torch.topk on a matrix picks k per row), and add "
                                      "every rank's values at its own indices (index_add_)")
                expect(residuals[t].numel() == n and torch.allclose(residuals[t].reshape(-1), want_res[t][r], atol=1e-5),
                       Q2, f"rank {r}, step {t}: the returned residual is not p - c, so there is no error feedback "
                       "next step: return p = grad + residual with the k sent entries set to zero")
    passed(Q2, f"world sizes {list(world_sizes)}, shape {shape}, k={k}, {steps} steps; 8k bytes per rank per step")


# ----------------------------------------------------------------------------- Q3
def _q3_inputs(p: int, m: int, n: int, r: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    gen = torch.Generator().manual_seed(5 + p + m)
    return [torch.randn(m, n, generator=gen) for _ in range(p)], torch.randn(n, r, generator=gen)


def _q3_rank(fn: Callable, rank: int, world_size: int, case: tuple):
    M, Q = case
    return fn(M.clone(), Q.clone())


@own_work(Q3, forbid=FORBID)
def check_powersgd_step(fn: Callable, world_sizes: tuple[int, ...] = (2,), m: int = 12, n: int = 9, r: int = 2) -> None:
    """``approx, Q_new = fn(M, Q)`` (M: this rank's m x n matrix, Q: n x r, equal on all ranks):
    ``P = mean_r(M_r Q)``, orthonormalised; ``Q_new = mean_r(M_r^T P)``; ``approx = P Q_new^T``,
    with two all-reduces of ``4 r (m + n)`` bytes in all."""
    for p in world_sizes:
        Ms, Q = _q3_inputs(p, m, n, r)
        P_raw = sum(M @ Q for M in Ms) / p
        P = torch.linalg.qr(P_raw).Q
        Q_new = sum(M.T @ P for M in Ms) / p
        want = P @ Q_new.T
        no_orth = P_raw @ (sum(M.T @ P_raw for M in Ms) / p).T
        res = run_learner(Q3, functools.partial(_q3_rank, fn), p, [(M, Q) for M in Ms], deadlock_hint=(
            "Every rank must call comm.all_reduce twice, on P (m x r) and then on Q (n x r)."))
        for rk, (out, stats) in enumerate(res):
            nbytes, calls = _stats_bytes(stats)
            expect(isinstance(out, tuple) and len(out) == 2, Q3, f"rank {rk} returned {type(out).__name__}; "
                   "return the pair (approximation, new Q)")
            approx, q_new = out
            if nbytes >= 4 * m * n:
                raise CheckFailed(Q3, f"rank {rk}: the counters show {nbytes} bytes (4mn = {4 * m * n}): you "
                                  "all-reduced M itself. All-reduce only P = M Q (m x r) and Q = M^T P (n x r)")
            expect(calls.get("all_reduce", 0) == 2 and nbytes == 4 * r * (m + n), Q3,
                   f"rank {rk}: {calls} with {nbytes} bytes; PowerSGD all-reduces P ({4 * m * r} bytes) and then Q "
                   f"({4 * n * r} bytes): two all_reduce calls, {4 * r * (m + n)} bytes")
            if torch.allclose(approx, p * want, atol=1e-4):
                raise CheckFailed(Q3, f"rank {rk}: the approximation is {p}x too large: all_reduce sums, divide "
                                  "Q (and P) by world_size")
            if torch.allclose(approx, no_orth, atol=1e-4) or torch.allclose(approx, no_orth / p, atol=1e-4):
                raise CheckFailed(Q3, f"rank {rk}: P was not orthonormalised: after the all-reduce of P, take "
                                  "P = torch.linalg.qr(P).Q before computing Q = M^T P")
            expect(torch.allclose(approx, want, atol=1e-4), Q3, f"rank {rk}: the approximation differs from "
                   f"P Q^T by up to {(approx - want).abs().max():.3g}: compute Q_new = M^T P with the orthonormal P, "
                   "average it over the ranks, and return P @ Q_new.T")
            expect(torch.allclose(q_new.abs(), Q_new.abs(), atol=1e-4), Q3, f"rank {rk}: the returned Q is not the averaged "
                   "M^T P: it is what the next step starts from (warm start)")
    passed(Q3, f"world sizes {list(world_sizes)}, M {m}x{n}, rank {r}; 4r(m+n) = {4 * r * (m + n)} bytes")
