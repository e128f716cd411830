"""course_lib.allocation: exact solvers against exhaustive search, heuristics never better than
the optimum, bad input rejected with a reason, and the seed's worked example (corrected)."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
from scipy.optimize import OptimizeResult

from course_lib.allocation import (
    OBJECTIVES, Device, InfeasibleError, Links, Module, Problem, chain_dp, comm_time, cost,
    device_load, exhaustive_all, exhaustive_contiguous, greedy_seed, is_feasible, latency,
    milp_assign, pipeline_time, q_learning, random_problem, seed_example, stages, time_per_microbatch,
)
from course_lib.allocation.generate import KINDS, stress_problem
from course_lib.allocation import milp as milp_module
from course_lib.allocation.cost import flow_shop
from course_lib.allocation.milp import _improve
from course_lib.bench.allocation import main as bench_main


def _close(a: float, b: float, rtol: float) -> bool:
    return abs(a - b) <= rtol * max(abs(a), abs(b))


def _random_small(seed: int, kmax: int, nmax: int, skip_prob: float = 0.0) -> Problem:
    rng = np.random.default_rng(10_000 + seed)
    k, n = int(rng.integers(1, kmax + 1)), int(rng.integers(1, nmax + 1))
    # Slack from 1.0 (memory binds hard, often infeasible) to 2.5 (memory rarely binds).
    return random_problem(k, n, seed, memory_slack=float(rng.uniform(1.0, 2.5)), skip_prob=skip_prob)


def _solve_or_none(solver, problem, objective):
    try:
        return solver(problem, objective)
    except InfeasibleError:
        return None


# --- exact solvers == exhaustive search -----------------------------------------------------

def test_chain_dp_equals_exhaustive_contiguous():
    infeasible = 0
    for seed in range(1000):
        p = _random_small(seed, kmax=8, nmax=4)
        for obj in OBJECTIVES:
            truth = _solve_or_none(exhaustive_contiguous, p, obj)
            dp = _solve_or_none(chain_dp, p, obj)
            assert (truth is None) == (dp is None), (seed, obj)
            if truth is None:
                infeasible += 1
                continue
            assert dp.optimal and dp.assignment == tuple(sorted(dp.assignment))  # contiguous
            assert _close(dp.cost, truth.cost, 1e-9), (seed, obj, dp, truth)
            assert _close(dp.cost, dp.info["dp_value"], 1e-9)  # recurrence == cost model
    assert 0 < infeasible < 1000  # both branches exercised


# Instance kinds that broke the first MILP (wrong answers marked optimal, false "infeasible",
# crashes at memory limits); see stress_problem. Sizes 2..6 x 2..3 keep exhaustive search quick.
@pytest.mark.parametrize("kind", KINDS)
def test_every_solver_against_exhaustive_search_on_stress_instances(kind):
    for seed in range(16):
        rng = np.random.default_rng(seed)
        k, n = int(rng.integers(2, 7)), int(rng.integers(2, 4))
        p = stress_problem(kind, k, n, seed)
        for obj in OBJECTIVES:
            where = (kind, seed, k, n, obj)
            truth = _solve_or_none(exhaustive_all, p, obj)
            # Even seeds start from the heuristics' placement, odd ones from a MILP without
            # objective (so the scale and the pruning start far from the optimum).
            mip = _solve_or_none(lambda q, o: milp_assign(q, o, incumbent="auto" if seed % 2 == 0 else None),
                                 p, obj)
            assert (truth is None) == (mip is None), where
            contiguous = _solve_or_none(exhaustive_contiguous, p, obj)
            if p.is_chain:
                dp = _solve_or_none(chain_dp, p, obj)
                assert (contiguous is None) == (dp is None), where
                if dp is not None:
                    assert _close(dp.cost, contiguous.cost, 1e-9), (where, dp, contiguous)
            heuristics = (greedy_seed(p, obj), q_learning(p, obj, episodes=30, seed=seed))
            if truth is None:
                assert not any(h.feasible for h in heuristics), where
                continue
            assert truth.cost == cost(p, truth.assignment, obj)
            assert mip.optimal, (where, mip.info["message"])
            assert truth.cost <= mip.cost * (1 + 1e-12), where
            assert _close(mip.cost, truth.cost, 1e-5), (where, mip, truth)
            assert mip.info["lower_bound"] <= truth.cost * (1 + 1e-7), (where, mip.info)
            if contiguous is not None:
                assert truth.cost <= contiguous.cost * (1 + 1e-12), where
            for h in heuristics:
                assert not h.feasible or h.cost >= truth.cost * (1 - 1e-12), (where, h)


def test_milp_without_a_bound_yet_reports_zero_not_a_crash():
    p = random_problem(24, 6, seed=1)
    for obj in OBJECTIVES:
        sol = milp_assign(p, obj, time_limit=1e-3, incumbent=None)
        lb = sol.info["lower_bound"]
        assert math.isfinite(lb) and 0 <= lb <= sol.cost


@pytest.mark.parametrize("status, message", [
    (1, "Time limit reached"),           # stopped before any bound: mip_dual_bound is None
    (2, "The problem is infeasible"),    # "infeasible" although a placement fits
    (4, "HiGHS Solve error"),            # the solver gave up
])
def test_milp_solver_failure_is_not_infeasibility(monkeypatch, status, message):
    # What HiGHS answers on extreme scales, replayed: the known placement comes back with
    # optimal=False and HiGHS's message, never InfeasibleError, a crash or a bound of None.
    answer = OptimizeResult(status=status, message=message, x=None, fun=None, mip_dual_bound=None)
    monkeypatch.setattr(milp_module, "_highs", lambda *args, **kwargs: answer)
    p = random_problem(6, 3, seed=2)
    for obj in OBJECTIVES:
        sol = milp_assign(p, obj)
        assert sol.feasible and not sol.optimal
        # No bound from HiGHS; the latency of a chain still has the LP bound of the Lagrangian step.
        assert (0.0 < sol.info["lower_bound"] <= sol.cost) if obj == "latency" else sol.info["lower_bound"] == 0.0
        assert message in sol.info["message"]
        if status == 2:
            assert sol.info["message"].startswith("solver failure")


def test_memory_tolerance_is_the_same_in_every_solver():
    # Two modules of 1 byte each and a fast device of 2 / (1 + eps) bytes: with eps within
    # the 1e-9 tolerance they fit together (and should go there); beyond it they do not.
    for eps, together in ((0.0, True), (9e-10, True), (2e-9, False), (1e-8, False), (1e-7, False)):
        devs = (Device("fast", 1e3, 2.0 / (1 + eps)), Device("slow", 1.0, 2.0))
        p = Problem(devs, (Module("a", 1.0, 1.0), Module("b", 1.0, 1.0)), Links.uniform(2, np.inf))
        assert is_feasible(p, (0, 0)) == together
        for solver in (exhaustive_all, exhaustive_contiguous, chain_dp, greedy_seed, milp_assign,
                       lambda q, o: milp_assign(q, o, incumbent=None)):
            for obj in OBJECTIVES:
                assert (solver(p, obj).assignment == (0, 0)) == together, (eps, solver, obj)
    # A single module at the limit fits; the Problem check uses the same tolerance.
    p = Problem((Device("d", 1.0, 1.0 / (1 + 5e-10)),), (Module("m", 1.0, 1.0),), Links.uniform(1, 1.0))
    assert milp_assign(p, "latency").assignment == (0,)
    with pytest.raises(ValueError, match="largest device"):
        Problem((Device("d", 1.0, 1.0 / (1 + 2e-9)),), (Module("m", 1.0, 1.0),), Links.uniform(1, 1.0))


def test_chain_dp_respects_device_order():
    p = random_problem(6, 3, seed=7)
    order = [2, 0, 1]
    perm = Problem(tuple(p.devices[d] for d in order), p.modules,
                   Links(p.B[np.ix_(order, order)], p.alpha[np.ix_(order, order)]))
    for obj in OBJECTIVES:
        a, b = chain_dp(p, obj, order=order), exhaustive_contiguous(perm, obj)
        assert _close(a.cost, b.cost, 1e-9)
        assert [order.index(d) for d in a.assignment] == sorted(order.index(d) for d in a.assignment)


def test_milp_equals_exhaustive_all():
    infeasible = 0
    for seed in range(150):  # (the stress test above adds 13 harder kinds)
        p = _random_small(seed, kmax=5, nmax=3, skip_prob=0.3)  # general traffic, not just a chain
        for obj in OBJECTIVES:
            truth = _solve_or_none(exhaustive_all, p, obj)
            # Odd seeds: the bare formulation; even: with the cutoff rows from a known placement.
            mip = _solve_or_none(lambda q, o: milp_assign(q, o, incumbent=None if seed % 2 else "auto"),
                                 p, obj)
            assert (truth is None) == (mip is None), (seed, obj)
            if truth is None:
                infeasible += 1
                continue
            assert mip.optimal
            # mip.cost is re-evaluated from its assignment, so it can never undercut the truth;
            # it matches up to HiGHS's tolerances.
            assert truth.cost <= mip.cost * (1 + 1e-12)
            assert _close(mip.cost, truth.cost, 1e-5), (seed, obj, mip, truth)
            assert _close(mip.cost, mip.info.get("milp_value", mip.cost), 1e-5)  # linearisation == cost model
    assert infeasible < 150


def test_milp_beats_or_ties_contiguous_dp_on_larger_chain():
    p = random_problem(10, 3, seed=3)
    for obj in OBJECTIVES:
        mip, dp = milp_assign(p, obj), chain_dp(p, obj)
        assert mip.optimal and mip.cost <= dp.cost * (1 + 1e-6)


def test_milp_time_limit_returns_a_feasible_placement_and_a_bound():
    p = random_problem(24, 6, seed=1)
    sol = milp_assign(p, "bottleneck", time_limit=0.5)
    assert not sol.optimal and sol.feasible
    assert sol.info["lower_bound"] <= sol.cost * (1 + 1e-9)


def test_milp_latency_stopped_early_still_reports_the_lp_bound():
    # 32 x 8 takes about 10 s to prove; stopped after 3 s the answer carries a real bound.
    sol = milp_assign(random_problem(32, 8, seed=1), "latency", time_limit=3.0)
    assert sol.feasible and 0.0 < sol.info["lower_bound"] <= sol.cost


def test_milp_starting_placement_search_is_seeded_fits_and_never_worsens():
    p = random_problem(12, 4, seed=5)
    for obj in OBJECTIVES:
        start = chain_dp(p, obj).assignment
        x = _improve(p, start, obj)
        assert x == _improve(p, start, obj)
        assert is_feasible(p, x) and cost(p, x, obj) <= cost(p, start, obj)


def test_lagrangian_fixing_keeps_every_optimal_placement_and_fixes_some():
    """Each variable it fixes must be unusable by any placement at most U: check it against
    every placement exhaustive search proves optimal, with U the optimum itself."""
    fixed_any = 0
    for seed in range(12):
        p = random_problem(7, 3, seed, memory_slack=1.3)
        try:
            best = exhaustive_all(p, "latency")
        except InfeasibleError:
            continue
        U = best.cost
        c, _, _, ub, A, lo, hi, nx = milp_module._formulation(p, "latency", U, [])
        kept, fixed, lp_bound = milp_module._lagrangian_fixing(p, c, ub, A, lo, hi, nx)
        assert lp_bound <= 1 + 1e-9 and fixed == (ub > 0).sum() - (kept > 0).sum()
        fixed_any += fixed
        n = p.n
        for x in itertools.product(range(p.n), repeat=p.k):
            if cost(p, x, "latency") <= U * (1 + 1e-9):
                assert all(kept[j * n + x[j]] > 0 for j in range(p.k)), (seed, x)
                assert all(kept[nx + (q * n + x[j]) * n + x[l]] > 0
                           for q, (j, l, _) in enumerate(p.edges)), (seed, x)
    assert fixed_any > 0


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_every_placement_within_u_is_a_point_of_the_milp_with_its_cost(objective):
    """The formulation (with the bottleneck's message-floor rows) must keep every placement
    that fits and costs at most U, at exactly its cost: write each one as x, y = x_jd x_le
    and tau, and check every row and bound. Skip connections give messages that are not
    j -> j + 1."""
    checked = 0
    for seed in range(8):
        p = random_problem(6, 3, seed, memory_slack=1.4, skip_prob=0.4)
        fitting = [x for x in itertools.product(range(p.n), repeat=p.k) if is_feasible(p, x)]
        if not fitting:
            continue
        costs = sorted(cost(p, x, objective) for x in fitting)
        U = costs[len(costs) // 2]  # the median: some placements lie above U, and are dropped
        c, _, lb, ub, A, lo, hi, nx = milp_module._formulation(p, objective, U, [])
        n = p.n
        for x in fitting:
            value = cost(p, x, objective)
            if value > U:
                continue
            v = np.zeros(len(c))
            v[[j * n + x[j] for j in range(p.k)]] = 1.0
            v[[nx + (q * n + x[j]) * n + x[l] for q, (j, l, _) in enumerate(p.edges)]] = 1.0
            if objective == "bottleneck":
                v[-1] = value / U
            row = A @ v
            assert np.all(v <= ub + 1e-12) and np.all(v >= lb), (seed, x)
            assert np.all(row <= np.asarray(hi) + 1e-9) and np.all(row >= np.asarray(lo) - 1e-9), (seed, x)
            assert _close(float(c @ v) * U, value, 1e-9), (seed, x)
            checked += 1
    assert checked > 100

def test_milp_keeps_highs_debug_prints_out_of_the_output(capfd):
    # HiGHS 1.12 printf()s a debug line while solving this instance (memory exactly at a limit).
    sol = milp_assign(stress_problem("memory_at_limit", 5, 3, 5), "latency")
    assert sol.optimal and "Highs" not in capfd.readouterr().out


# --- heuristics never beat the optimum ------------------------------------------------------

def test_greedy_and_q_learning_never_beat_optimum():
    for seed in range(60):
        p = _random_small(seed, kmax=5, nmax=3)
        for obj in OBJECTIVES:
            best = _solve_or_none(exhaustive_all, p, obj)
            for sol in (greedy_seed(p, obj), q_learning(p, obj, episodes=150, seed=seed)):
                if best is None:  # nothing fits: a heuristic cannot find anything either
                    assert not sol.feasible
                    continue
                if not sol.feasible:  # a heuristic may fail; that is a gap of inf, not a win
                    continue
                assert sol.cost >= best.cost * (1 - 1e-12)
                assert sol.cost == cost(p, sol.assignment, obj)


def test_q_learning_is_deterministic_and_learns_the_exact_mdp_case():
    # Ample memory + latency: the MDP on (module, previous device) is exact (a shortest path)
    # and its optimum is "everything on the fastest device"; Q-learning must learn that.
    p = random_problem(5, 3, seed=4, memory_slack=50.0)
    a = q_learning(p, "latency", episodes=1500, seed=1)
    b = q_learning(p, "latency", episodes=1500, seed=1)
    assert a.assignment == b.assignment and a.cost == b.cost
    assert a.assignment == (int(p.s.argmax()),) * p.k
    assert _close(a.cost, exhaustive_all(p, "latency").cost, 1e-9)


def test_greedy_can_fail_where_a_feasible_assignment_exists():
    # Fastest device fits module 0 only if module 1 goes elsewhere; greedy fills it with
    # module 0, moves on to the slow small device, which cannot take the big module 1, and
    # never comes back. Swapping works: module 0 on the slow one, module 1 on the fast one.
    devs = (Device("fast", 10.0, 10.0), Device("slow", 1.0, 5.0))
    mods = (Module("a", 1.0, 4.0), Module("b", 1.0, 7.0), Module("c", 1.0, 1.0))
    p = Problem(devs, mods, Links.uniform(2, 1.0))
    assert not greedy_seed(p, "latency").feasible
    assert milp_assign(p, "latency").feasible


# --- the cost model -------------------------------------------------------------------------

def test_latency_is_sum_and_bottleneck_is_max_of_device_loads():
    p = random_problem(6, 3, seed=11, skip_prob=0.5)
    x = (0, 1, 1, 2, 0, 2)
    L = device_load(p, x)
    hand = sum(p.w[j] / p.s[x[j]] for j in range(p.k)) + sum(
        p.alpha[x[j], x[l]] + b / p.B[x[j], x[l]] for j, l, b in p.edges if x[j] != x[l])
    assert math.isclose(latency(p, x), hand, rel_tol=1e-12)
    assert math.isclose(latency(p, x), L.sum(), rel_tol=1e-12)
    assert time_per_microbatch(p, x) == L.max()
    assert comm_time(p, 5.0, 1, 1) == 0.0 and comm_time(p, 0.0, 0, 1) == 0.0


def test_memory_violation_costs_inf():
    p = random_problem(4, 2, seed=0, memory_slack=1.1)
    everything_on_0 = (0, 0, 0, 0)
    if not is_feasible(p, everything_on_0):
        assert math.isinf(cost(p, everything_on_0, "latency"))


def test_pipeline_time_matches_flow_shop_simulation():
    p = random_problem(7, 4, seed=5)
    x = (0, 0, 1, 1, 1, 3, 3)  # device 2 skipped
    L = device_load(p, x)
    t = [L[d] for d in (0, 1, 3)]
    for N in (1, 2, 9):
        done = [0.0] * len(t)  # finish time of the previous micro-batch on each stage
        for _ in range(N):
            ready = 0.0
            for s_, ts in enumerate(t):
                done[s_] = max(done[s_], ready) + ts
                ready = done[s_]
        assert math.isclose(pipeline_time(p, x, N), done[-1], rel_tol=1e-12)
    assert math.isclose(pipeline_time(p, x, 1), latency(p, x), rel_tol=1e-12)
    with pytest.raises(ValueError, match="revisits a device"):
        pipeline_time(p, (0, 1, 0, 1, 1, 1, 1), 4)


# --- the seed's worked example (section 4.4) ------------------------------------------------

def test_seed_worked_example_bottleneck_reproduces_seed_numbers():
    p = seed_example()
    # The seed's T = max_i{...} is the per-micro-batch time of a pipeline: 0.8 vs 1.2.
    assert math.isclose(time_per_microbatch(p, (0, 1)), 0.8)
    assert math.isclose(time_per_microbatch(p, (0, 0)), 1.2)
    for solver in (exhaustive_all, chain_dp, milp_assign):
        sol = solver(p, "bottleneck")
        assert sol.assignment == (0, 1) and math.isclose(sol.cost, 0.8)
    # The seed's own greedy does not find the seed's preferred split.
    assert greedy_seed(p, "bottleneck").assignment == (0, 0)


def test_seed_worked_example_latency_reverses_the_conclusion():
    p = seed_example()
    # One input through the chain: module 2 waits for module 1, so the times add up.
    assert math.isclose(latency(p, (0, 1)), 8 / 10 + 4 / 5)  # 1.6, not 0.8
    assert math.isclose(latency(p, (0, 0)), 1.2)
    for solver in (exhaustive_all, chain_dp, milp_assign):
        assert solver(p, "latency").assignment == (0, 0)


def test_seed_constraint_sum_w_le_c_is_dimensionally_wrong():
    p = seed_example()
    # The seed's "compute constraint" sum_j w_j <= c_i (FLOP <= FLOP/s) rules out putting
    # both modules on device 1 (8 + 4 = 12 > 10), yet the seed evaluates that very option.
    assert p.w.sum() > p.s[0]
    assert math.isfinite(cost(p, (0, 0), "bottleneck"))  # a time (1.2 s), not a violation


def test_seed_worked_example_with_communication():
    # With a message of t bytes over bandwidth b, the split's bottleneck is 0.8 + t/b
    # (device 1 computes, then sends), so splitting wins only while t/b < 0.4 s.
    for t_over_b, split_wins in ((0.3, True), (0.5, False)):
        p = seed_example(t12=t_over_b * 100.0, bandwidth=100.0)
        assert math.isclose(time_per_microbatch(p, (0, 1)), 0.8 + t_over_b)
        assert (exhaustive_all(p, "bottleneck").assignment == (0, 1)) == split_wins


# --- bad input ------------------------------------------------------------------------------

def _ok_parts():
    devs = (Device("a", 1e14, 10e9), Device("b", 5e13, 20e9))
    mods = (Module("l0", 1e12, 4e9, 1e9, 1e8), Module("l1", 1e12, 4e9, 1e9, 0.0))
    return devs, mods, Links.uniform(2, 1e10, 1e-5)


@pytest.mark.parametrize("make, match", [
    (lambda d, m, l: Problem((), m, l), "device list is empty"),
    (lambda d, m, l: Problem(d, (), l), "module list is empty"),
    (lambda d, m, l: Problem(d, m + (Module("huge", 1.0, 30e9),), l), "largest device"),
    (lambda d, m, l: Problem(d, m, Links.uniform(3, 1e10)), "3 x 3 but there are 2 devices"),
    (lambda d, m, l: Problem(d, m, l, {(0, 5): 1.0}), "out of range"),
    (lambda d, m, l: Device("z", 0.0, 1e9), "speed"),
    (lambda d, m, l: Device("z", -1e12, 1e9), "speed"),
    (lambda d, m, l: Device("z", 1e12, 0.0), "memory"),
    (lambda d, m, l: Module("z", -1.0, 1.0), "work"),
    (lambda d, m, l: Links(np.array([[1.0, 0.0], [1.0, 1.0]]), np.zeros((2, 2))), r"bandwidth\[0, 1\]"),
    (lambda d, m, l: Links(np.array([[1.0, -5.0], [1.0, 1.0]]), np.zeros((2, 2))), r"bandwidth\[0, 1\]"),
    (lambda d, m, l: Links(np.ones((2, 2)), -np.ones((2, 2))), "latency"),
    (lambda d, m, l: Links(np.ones((2, 3)), np.zeros((2, 3))), "square"),
    (lambda d, m, l: cost(Problem(d, m, l), (0,), "latency"), "one device index per module"),
    (lambda d, m, l: cost(Problem(d, m, l), (0, 2), "latency"), "not a device index"),
    (lambda d, m, l: cost(Problem(d, m, l), (0, 1), "throughput"), "objective"),
    (lambda d, m, l: chain_dp(Problem(d, m, l, {(1, 0): 1.0}), "latency"), "milp_assign"),
])
def test_bad_input_raises_value_error(make, match):
    d, m, l = _ok_parts()
    with pytest.raises(ValueError, match=match):
        make(d, m, l)


def _p():
    return Problem(*_ok_parts())


# Each was accepted (or crashed without naming the argument) before: the error must name it.
@pytest.mark.parametrize("call, match", [
    (lambda: pipeline_time(_p(), (0, 1), 2.5), "n_microbatches must be a whole number"),
    (lambda: pipeline_time(_p(), (0, 1), float("nan")), "n_microbatches must be a whole number"),
    (lambda: pipeline_time(_p(), (0, 1), float("inf")), "n_microbatches must be a whole number"),
    (lambda: pipeline_time(_p(), (0, 1), 0), "n_microbatches must be >= 1"),
    (lambda: pipeline_time(_p(), (0, 1), "4"), "n_microbatches must be an integer"),
    (lambda: cost(_p(), (0.7, 1.9), "latency"), r"assignment\[0\] must be a whole number"),
    (lambda: cost(_p(), (0, float("nan")), "latency"), r"assignment\[1\] must be a whole number"),
    (lambda: cost(_p(), "01", "latency"), "sequence of device indices"),
    (lambda: cost(_p(), (0, 1), None), "objective must be one of"),
    (lambda: chain_dp(_p(), "latency", order=[0.5, 1]), r"order\[0\] must be a whole number"),
    (lambda: chain_dp(_p(), "latency", order=[1, 1]), "distinct device indices"),
    (lambda: milp_assign(_p(), "latency", time_limit=-1), "time_limit must be > 0"),
    (lambda: milp_assign(_p(), "latency", time_limit=float("nan")), "time_limit .* must be finite"),
    (lambda: milp_assign(_p(), "latency", time_limit="10"), "time_limit .* must be a number"),
    (lambda: milp_assign(_p(), "latency", mip_rel_gap=2.0), "mip_rel_gap must lie in"),
    (lambda: milp_assign(_p(), "latency", incumbent="best"), "incumbent must be"),
    (lambda: milp_assign(_p(), "latency", incumbent=(0, 0.5)), r"assignment\[1\]"),
    (lambda: random_problem(2.5, 2, 0), r"random_problem: k \(modules\) must be a whole number"),
    (lambda: random_problem(3, 0, 0), r"random_problem: n \(devices\) must be >= 1"),
    (lambda: random_problem(3, 2, 0.5), "random_problem: seed"),
    (lambda: random_problem(3, 2, 0, skip_prob=2.0), r"skip_prob \(a probability\) must lie in \[0, 1\]"),
    (lambda: random_problem(3, 2, 0, memory_slack=float("inf")), "memory_slack must be finite"),
    (lambda: q_learning(_p(), "latency", lr=float("nan")), r"lr \(learning rate\) must be finite"),
    (lambda: q_learning(_p(), "latency", lr=0.0), r"lr \(learning rate\) must lie in \(0, 1\]"),
    (lambda: q_learning(_p(), "latency", episodes=2.5), "q_learning: episodes must be a whole number"),
    (lambda: q_learning(_p(), "latency", epsilon_start=1.5), "epsilon_start"),
    (lambda: q_learning(_p(), "latency", seed=-1), "q_learning: seed must be >= 0"),
    (lambda: comm_time(_p(), -5.0, 0, 1), "nbytes must be >= 0"),
    (lambda: comm_time(_p(), float("nan"), 0, 1), "nbytes must be finite"),
    (lambda: comm_time(_p(), 5.0, 0, 2), "not both in 0..1"),
    (lambda: Device("z", "1e14", 1e9), r"speed \[FLOP/s\] must be a number"),
    (lambda: Device("z", None, 1e9), r"speed \[FLOP/s\] must be a number"),
    (lambda: Device("z", float("inf"), 1e9), "speed .* must be finite"),
    (lambda: Device("z", 1e14, True), "memory .* must be a number"),
    (lambda: Module("z", float("nan"), 1.0), "work must be finite"),
    (lambda: Module("z", 1.0, "4e9"), "param_bytes must be a number"),
    (lambda: Links(np.full((2, 2), "1e10"), np.zeros((2, 2))), "bandwidth must be numbers"),
    (lambda: Links.uniform(2.5, 1e10), r"n \(devices\) must be a whole number"),
    (lambda: Problem(*_ok_parts(), {(0.5, 1): 1.0}), r"extra_traffic key \(0.5, 1\): sender j"),
    (lambda: Problem(*_ok_parts(), {(0, 1, 2): 1.0}), "must be a pair"),
    (lambda: Problem(*_ok_parts(), {(1, 0): -1.0}), r"extra_traffic\[1, 0\] must be >= 0"),
    (lambda: Problem(_ok_parts()[0], ("layer",), _ok_parts()[2]), r"modules\[0\] is a str, not a Module"),
    (lambda: Problem(_ok_parts()[0], _ok_parts()[1], np.ones((2, 2))), "not a Links"),
    (lambda: flow_shop([1.0, 2.0], 2.5), "flow_shop: n_microbatches must be a whole number"),
    (lambda: flow_shop([1.0, float("nan")], 2), r"stage_times\[1\] must be finite"),
    (lambda: stress_problem("huge", 3, 2, 0), "kind must be one of"),
    (lambda: stages((0, 0.5, 1)), r"stages: x\[1\] \(the device of module 1\) must be a whole number"),
    (lambda: seed_example(t12=-1), "seed_example: t12 must be >= 0"),
    (lambda: seed_example(bandwidth=0.0), "seed_example: bandwidth must be a number > 0"),
])
def test_bad_arguments_are_named_in_the_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("fn", [latency, exhaustive_all, greedy_seed, chain_dp, milp_assign, q_learning])
def test_a_non_problem_is_named(fn):
    args = ((0, 1),) if fn is latency else ("latency",)
    with pytest.raises(TypeError, match=f"{fn.__name__}: expected a course_lib.allocation.Problem, got str"):
        fn("p", *args)


def test_values_are_stored_as_floats_and_messages_read_well():
    d = Device("a", np.int64(10), 5)
    assert type(d.speed) is float and type(d.memory) is float
    assert cost(_p(), (1.0, 0), "latency") == cost(_p(), (1, 0), "latency")  # 1.0 is an index
    devs = (Device("a", 1.0, 5.0), Device("b", 1.0, 5.0))
    p = Problem(devs, tuple(Module(f"m{j}", 1.0, 4.0) for j in range(3)), Links.uniform(2, 1.0))
    with pytest.raises(InfeasibleError) as err:
        milp_assign(p, "latency")
    assert "  " not in str(err.value) and str(err.value).startswith("no assignment")


def test_infeasible_memory_raises_for_exact_solvers_only():
    devs = (Device("a", 1.0, 5.0), Device("b", 1.0, 5.0))
    mods = tuple(Module(f"m{j}", 1.0, 4.0) for j in range(3))  # 12 bytes, 10 available
    p = Problem(devs, mods, Links.uniform(2, 1.0))
    for solver in (exhaustive_all, exhaustive_contiguous, chain_dp, milp_assign):
        with pytest.raises(InfeasibleError, match="add devices or memory"):
            solver(p, "latency")
    assert not greedy_seed(p, "latency").feasible
    assert not q_learning(p, "latency", episodes=20).feasible


def test_problem_is_immutable():
    p = random_problem(3, 2, seed=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.devices = ()  # type: ignore[misc]
    with pytest.raises(ValueError):
        p.B[0, 1] = 1.0


def test_bench_quick_runs(capsys):
    bench_main(["--quick"])
    out = capsys.readouterr().out
    assert "chain_dp" in out and "milp" in out and "q_learning" in out
