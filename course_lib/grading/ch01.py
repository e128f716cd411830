"""Checks for chapter 1 (allocating a model across heterogeneous devices).

Every check runs the learner's function on seeded random instances and compares it with
the ground truth, exhaustive search (`course_lib.allocation.exhaustive_*`), or with the
course's exact solvers where enumeration is too large. On failure it names the instance,
the assignment and the likely mistake. ``hidden=True`` cases are other seeds and sizes.
"""
from __future__ import annotations

import math
import signal
from contextlib import contextmanager
from dataclasses import replace
from typing import Callable

import numpy as np

from course_lib.allocation import (Problem, chain_dp, compute_time, cost, device_load, exhaustive_all,
                                   exhaustive_contiguous, is_feasible, memory_use, milp_assign,
                                   random_problem, send_time)
from course_lib.allocation.solution import InfeasibleError
from course_lib.grading.borrow import own_work
from course_lib.grading.feedback import CheckFailed, expect, passed

Q1, Q2, Q3 = "Q1 cost", "Q2 chain_dp", "Q3 milp_bottleneck"
# What the exercise hands out (instances to try answers on): an answer may use it.
HANDED_OUT = ("course_lib.allocation.generate",)
RTOL = 1e-9  # costs are sums of a few dozen doubles: agreement to 1e-9 relative is exact enough


@contextmanager
def time_limit(seconds: float, question: str, hint: str):
    """Raise CheckFailed if the block runs longer than `seconds` (SIGALRM; main thread only)."""
    def on_alarm(signum, frame):
        raise TimeoutError
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except TimeoutError:
        raise CheckFailed(question, f"did not finish within {seconds:g} s. {hint}") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _call(question: str, fn: Callable, *args):
    if not callable(fn):
        raise CheckFailed(question, f"expected your function, got {type(fn).__name__}; run its cell first")
    try:
        return fn(*args)
    except NotImplementedError:
        raise CheckFailed(question, "not answered yet: replace `raise NotImplementedError()` with your code") from None
    except CheckFailed:
        raise
    except Exception as e:  # the learner's bug: show what and where, briefly
        raise CheckFailed(question, f"your function raised {type(e).__name__}: {e}") from None


def _close(a: float, b: float) -> bool:
    if math.isinf(a) or math.isinf(b):
        return a == b
    return math.isclose(a, b, rel_tol=RTOL, abs_tol=0.0)


def _name(p: Problem, seed: int) -> str:
    return f"random_problem(k={p.k}, n={p.n}, seed={seed})"


# ----------------------------------------------------------------------------- Q1
def _diagnose_cost(p: Problem, x: tuple[int, ...], objective: str, got: float) -> str:
    """Match a wrong value against the usual mistakes."""
    feasible = is_feasible(p, x)
    if not feasible and math.isfinite(got):
        d = int(np.argmax(memory_use(p, x) - p.M))
        return (f"x={x} puts {memory_use(p, x)[d]:.4g} bytes on device {d}, which has {p.M[d]:.4g}: "
                "an assignment that breaks a memory limit must cost float('inf')")
    if feasible and math.isinf(got):
        return f"x={x} fits in memory (use <= M on every device) but you returned inf"
    load = device_load(p, x)
    comp = compute_time(p, x)
    no_alpha = comp.copy()
    for j, l, b in p.edges:
        if x[j] != x[l]:
            no_alpha[x[j]] += b / p.B[x[j], x[l]]
    combine = np.sum if objective == "latency" else np.max
    other = np.max if objective == "latency" else np.sum
    if _close(got, float(other(load))):
        return (f"for objective={objective!r} you combined the per-device loads with "
                f"{'max' if objective == 'latency' else 'sum'}: latency (one input) is the SUM "
                "of the loads, the pipeline's time per micro-batch is their MAX")
    if _close(got, float(combine(comp))) and send_time(p, x).any():
        return ("you left out communication: each message j -> l between different devices "
                "costs its sender alpha + T_jl / B")
    if _close(got, float(combine(no_alpha))):
        return "you left out the latency alpha of each message: t = alpha + bytes / bandwidth"
    return (f"x={x}, objective={objective!r}: expected {cost(p, x, objective):.6g}, got {got:.6g}; "
            "per device d: L_d = sum of w_j / s_d over its modules + the messages it sends")


@own_work(Q1, forbid=("course_lib.allocation",), allow=HANDED_OUT)
def check_cost(fn: Callable, seeds: tuple[int, ...] = (0, 1, 2), k: int = 6, n: int = 3) -> None:
    """fn(problem, x, objective) must equal `cost(problem, x, objective)` (inf if infeasible)."""
    for seed in seeds:
        p = random_problem(k, n, seed, memory_slack=1.3, skip_prob=0.2)
        rng = np.random.default_rng(seed)
        xs = [tuple(int(d) for d in rng.integers(0, n, k)) for _ in range(12)]
        xs += [(0,) * k, tuple(j % n for j in range(k))]
        for x in xs:
            for objective in ("latency", "bottleneck"):
                got = _call(Q1, fn, p, x, objective)
                expect(isinstance(got, (int, float, np.floating)), Q1,
                       f"return a number (seconds), got {type(got).__name__}")
                want = cost(p, x, objective)
                if not _close(float(got), want):
                    raise CheckFailed(Q1, f"on {_name(p, seed)}: " + _diagnose_cost(p, x, objective, float(got)))
    passed(Q1, f"{len(seeds)} instances x 14 assignments x 2 objectives")


# ----------------------------------------------------------------------------- Q2
@own_work(Q2, forbid=("course_lib.allocation",), allow=HANDED_OUT)
def check_chain_dp(fn: Callable, seeds: tuple[int, ...] = tuple(range(8)), k: int = 7, n: int = 3,
                   big: tuple[int, int] = (64, 8)) -> None:
    """fn(problem, objective) -> assignment: a best contiguous partition (x non-decreasing),
    compared with exhaustive search over contiguous partitions; then a large chain in time."""
    tried = 0
    for seed in seeds:
        p = random_problem(k, n, seed, memory_slack=1.6)
        for objective in ("latency", "bottleneck"):
            try:
                best = exhaustive_contiguous(p, objective)
            except InfeasibleError:
                continue
            tried += 1
            x = _call(Q2, fn, p, objective)
            expect(x is not None and len(x) == p.k, Q2,
                   f"on {_name(p, seed)} return one device per module ({p.k} entries), got {x!r}")
            x = tuple(int(d) for d in x)
            expect(all(a <= b for a, b in zip(x, x[1:])), Q2,
                   f"on {_name(p, seed)} you returned {x}: a pipeline gives each device one contiguous "
                   "block in device order, so the device index must never decrease along the chain")
            expect(is_feasible(p, x), Q2,
                   f"on {_name(p, seed)} your partition {x} breaks device {int(np.argmax(memory_use(p, x) - p.M))}'s "
                   "memory: skip every block [i, j) whose memory sum exceeds M_d")
            c = cost(p, x, objective)
            if not _close(c, best.cost):
                hint = (f"on {_name(p, seed)}, objective={objective!r}: your partition {x} costs {c:.6g}, "
                        f"the best contiguous one {best.assignment} costs {best.cost:.6g}. ")
                hint += ("Combine a block's time with the rest using max for 'bottleneck' (the slowest stage "
                         "sets the pace), + for 'latency'; and include the send of T_{j-1,j} to the next device."
                         if objective == "bottleneck" else
                         "For 'latency' the stages add up: R(i, d) = min over j, e of stage(i, j, d, e) + R(j, e), "
                         "including the send of T_{j-1,j} to the next device.")
                raise CheckFailed(Q2, hint)
    kb, nb = big
    p = random_problem(kb, nb, 99, memory_slack=2.0)
    with time_limit(20, Q2, f"On {kb} layers x {nb} devices there are C({kb + nb - 1}, {nb - 1}) contiguous "
                    "partitions: enumerating them never ends. Use the recurrence, O(k^2 n^2)."):
        x = tuple(int(d) for d in _call(Q2, fn, p, "bottleneck"))
    want = chain_dp(p, "bottleneck").cost
    expect(_close(cost(p, x, "bottleneck"), want), Q2,
           f"on {_name(p, 99)} your partition costs {cost(p, x, 'bottleneck'):.6g}, the optimum is {want:.6g}")
    passed(Q2, f"{tried} small cases equal exhaustive search; {kb} x {nb} optimal")


# ----------------------------------------------------------------------------- Q3
def no_traffic(p: Problem) -> Problem:
    """The same devices and modules with every message removed (out_bytes = 0)."""
    return Problem(p.devices, tuple(replace(m, out_bytes=0.0) for m in p.modules), p.links)


@own_work(Q3, forbid=("course_lib.allocation",), allow=HANDED_OUT)
def check_milp_bottleneck(fn: Callable, seeds: tuple[int, ...] = (0, 1, 2, 3), k: int = 6, n: int = 3,
                          big: tuple[int, int] = (14, 4)) -> None:
    """fn(problem) -> assignment minimising max_d sum_{x_j = d} w_j / s_d under memory
    limits, on problems without traffic; compared with exhaustive search over all n^k."""
    tried = 0
    for seed in seeds:
        p = no_traffic(random_problem(k, n, seed, memory_slack=1.2))
        try:
            best = exhaustive_all(p, "bottleneck")
        except InfeasibleError:
            continue
        tried += 1
        x = _call(Q3, fn, p)
        expect(x is not None and len(x) == p.k, Q3,
               f"on {_name(p, seed)} return one device per module ({p.k} entries), got {x!r}: read the "
               "device of module j from the x_jd that is 1 (argmax over d of the (k, n) block)")
        x = tuple(int(d) for d in x)
        expect(all(0 <= d < p.n for d in x), Q3, f"device indices must be in 0..{p.n - 1}, got {x}")
        if not is_feasible(p, x):
            d = int(np.argmax(memory_use(p, x) - p.M))
            raise CheckFailed(Q3, f"on {_name(p, seed)} your assignment {x} puts {memory_use(p, x)[d]:.4g} bytes "
                              f"on device {d} (memory {p.M[d]:.4g}): add one row per device, "
                              "sum_j m_j x_jd <= M_d")
        c = cost(p, x, "bottleneck")
        if not _close(c, best.cost) and c <= best.cost * (1 + 1e-3):
            raise CheckFailed(Q3, f"on {_name(p, seed)} your assignment {x} has bottleneck {c:.6g}, within "
                              f"0.1% of the optimum {best.cost:.6g} but not equal: HiGHS stops at a 0.01% "
                              "gap by default; pass options={'mip_rel_gap': 1e-9} to milp")
        if not _close(c, best.cost):
            raise CheckFailed(Q3, f"on {_name(p, seed)} your assignment {x} has bottleneck {c:.6g}, the optimum "
                              f"{best.assignment} has {best.cost:.6g}: every device's load must be bounded, "
                              "sum_j (w_j / s_d) x_jd - tau <= 0 for each d, and the objective is tau alone "
                              "(c = 0 for the x variables, 1 for tau)")
    kb, nb = big
    p = no_traffic(random_problem(kb, nb, 7, memory_slack=1.3))
    with time_limit(60, Q3, f"{nb}^{kb} assignments cannot be enumerated: hand the model to "
                    "scipy.optimize.milp"):
        x = tuple(int(d) for d in _call(Q3, fn, p))
    want = milp_assign(p, "bottleneck").cost
    expect(is_feasible(p, x) and _close(cost(p, x, "bottleneck"), want), Q3,
           f"on {_name(p, 7)} with no traffic your assignment costs {cost(p, x, 'bottleneck'):.6g}, "
           f"the optimum is {want:.6g}")
    passed(Q3, f"{tried} instances equal exhaustive search; {kb} x {nb} optimal")
