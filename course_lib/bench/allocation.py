"""Benchmark: solver time by instance size, and how far greedy / Q-learning / contiguous-only
placements are from the exact optimum.

    ./course bench allocation            # full table (several minutes on 2 cores)
    ./course bench allocation --goals    # only the rows with a speed goal
    ./course bench allocation --quick    # small sizes only, seconds

Times are the median over `--seeds` random instances (`random_problem`, memory slack 1.5),
wall clock ("median s", "max s") and this process's CPU time ("cpu s" median, "max cpu"): on
a loaded machine the wall time grows with the load, the CPU time much less, so the speed
goals (issue 16) are judged on CPU time: the median instance must be PROVEN optimal within
the goal's CPU seconds (HiGHS runs on one thread, so on an idle machine this is also its wall
time). HiGHS's own limit, `--milp-limit`, is wall-clock and generous. Gaps are over
`--gap-seeds` other instances.
A gap is (cost - optimum) / optimum over the instances; "fail" counts instances where the
heuristic found no memory-feasible assignment although one exists.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from typing import Callable, Sequence

from course_lib.allocation.chain_dp import chain_dp
from course_lib.allocation.cost import OBJECTIVES, Objective
from course_lib.allocation.exhaustive import exhaustive_all, exhaustive_contiguous
from course_lib.allocation.generate import random_problem
from course_lib.allocation.greedy import greedy_seed
from course_lib.allocation.milp import milp_assign
from course_lib.allocation.problem import Problem
from course_lib.allocation.qlearning import q_learning
from course_lib.allocation.solution import InfeasibleError, Solution
from course_lib.tables import format_table

Solver = Callable[[Problem, Objective], Solution]


def _instances(k: int, n: int, seeds: int, first_seed: int = 0) -> list[Problem]:
    return [random_problem(k, n, first_seed + i, memory_slack=1.5) for i in range(seeds)]


# Speed goals (issue 16): the median over the instances of a row must stay under these.
GOALS: dict[tuple[str, str, int, int], float] = {
    ("milp", "latency", 32, 8): 10.0,
    ("milp", "bottleneck", 24, 6): 10.0,
    ("chain_dp", "latency", 512, 64): 1.0,
    ("chain_dp", "bottleneck", 512, 64): 1.0,
}


def time_rows(sizes: dict[str, list[tuple[int, int]]], seeds: int, milp_limit: float,
              objectives: Sequence[Objective] = OBJECTIVES, only_goals: bool = False) -> list[dict]:
    """One row per (solver, objective, size): wall and CPU times over the instances, how many
    were proven optimal, and for a row with a goal whether it is met: the median over the
    instances of the CPU time to a PROVEN optimum (an instance stopped by the time limit
    counts as infinitely slow) must be under the goal."""
    solvers: dict[str, Solver] = {
        "exhaustive_all": exhaustive_all,
        "exhaustive_contig": exhaustive_contiguous,
        "chain_dp": chain_dp,
        "milp": lambda p, o: milp_assign(p, o, time_limit=milp_limit),
    }
    out = []
    for name, solver in solvers.items():
        for k, n in sizes.get(name, []):
            for obj in objectives:
                goal = GOALS.get((name, obj, k, n))
                if only_goals and goal is None:
                    continue
                secs, cpus, proven_cpu, worst = [], [], [], 0.0
                for p in _instances(k, n, seeds):
                    t0, c0 = time.perf_counter(), time.process_time()
                    try:
                        sol = solver(p, obj)
                    except InfeasibleError:
                        continue
                    secs.append(time.perf_counter() - t0)
                    cpus.append(time.process_time() - c0)
                    proven_cpu.append(cpus[-1] if sol.optimal else math.inf)
                    if not sol.optimal:  # stopped by the time limit: how far from proven?
                        worst = max(worst, 1.0 - sol.info["lower_bound"] / sol.cost)
                if not secs:
                    continue
                proven = sum(math.isfinite(c) for c in proven_cpu)
                mark = ""
                if goal is not None:
                    med = statistics.median(sorted(proven_cpu))
                    shown = f"{med:.2f} s" if math.isfinite(med) else "unproven"
                    mark = f"{shown} (goal < {goal:g} s): {'met' if med < goal else 'not met'}"
                stopped = (f"{len(secs) - proven} stopped at {milp_limit:g} s wall; cost - bound <= {worst:.1%} of cost"
                           if proven < len(secs) else "")
                out.append({"solver": name, "objective": obj, "k": k, "n": n,
                            "median s": statistics.median(secs), "max s": max(secs),
                            "cpu s": statistics.median(cpus), "max cpu": max(cpus), "proven": f"{proven}/{len(secs)}",
                            "goal (median cpu s to a proven optimum)": mark, "stopped by the limit": stopped})
    return out


TIME_FORMATS = {"median s": "{:.4f}", "max s": "{:.3f}", "cpu s": "{:.3f}", "max cpu": "{:.3f}"}
GAP_FORMATS = {"mean gap": "{:.1%}", "median": "{:.1%}", "max": "{:.1%}"}


def gap_rows(sizes: list[tuple[int, int]], seeds: int, episodes: int, milp_limit: float) -> list[dict]:
    out = []
    for k, n in sizes:
        for obj in OBJECTIVES:
            gaps: dict[str, list[float]] = {"greedy_seed": [], "q_learning": [], "chain_dp": []}
            fails = dict.fromkeys(gaps, 0)
            for i, p in enumerate(_instances(k, n, seeds, first_seed=1000)):
                try:
                    best = (exhaustive_all(p, obj) if p.n ** p.k <= 50_000
                            else milp_assign(p, obj, time_limit=milp_limit))
                except InfeasibleError:
                    continue
                if not best.optimal:  # no proven optimum to compare with: skip the instance
                    continue
                cands: dict[str, Solution | None] = {
                    "greedy_seed": greedy_seed(p, obj),
                    "q_learning": q_learning(p, obj, episodes=episodes, seed=i),
                }
                try:
                    cands["chain_dp"] = chain_dp(p, obj)
                except InfeasibleError:
                    cands["chain_dp"] = None
                for name, sol in cands.items():
                    if sol is None or not sol.feasible:
                        fails[name] += 1
                    else:
                        gaps[name].append(sol.gap(best))
            for name, g in gaps.items():
                if not g and not fails[name]:
                    continue
                mean = statistics.fmean(g) if g else math.nan
                med = statistics.median(g) if g else math.nan
                top = max(g) if g else math.nan
                hits = sum(x <= 1e-6 for x in g)
                out.append({"method": name, "objective": obj, "k": k, "n": n, "mean gap": mean, "median": med,
                            "max": top, "=opt": hits, "fail": fails[name]})
    return out


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="./course bench allocation", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes only (seconds)")
    ap.add_argument("--goals", action="store_true",
                    help="only the rows with a speed goal (chain DP 512 x 64, MILP 32 x 8 and 24 x 6)")
    ap.add_argument("--seeds", type=int, default=None, help="instances per size")
    ap.add_argument("--gap-seeds", type=int, default=None, help="instances per gap row")
    ap.add_argument("--milp-limit", type=float, default=60.0,
                    help="HiGHS's wall-clock time limit per solve [s]; generous because a loaded "
                         "machine gives less CPU per wall second, and the goals are judged on CPU time")
    ap.add_argument("--episodes", type=int, default=2000, help="Q-learning episodes")
    args = ap.parse_args(argv)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    print(f"machine: {os.cpu_count()} cores, load average (1 min) {load:.2f} at start")
    if args.quick:
        seeds = args.seeds or 2
        sizes = {"exhaustive_all": [(6, 3)], "exhaustive_contig": [(8, 4)],
                 "chain_dp": [(16, 4), (128, 16)], "milp": [(8, 3)]}
        gap_sizes, episodes, gap_seeds = [(6, 3)], min(args.episodes, 300), args.gap_seeds or 2
    else:
        seeds = args.seeds or 3
        sizes = {"exhaustive_all": [(8, 3), (10, 3)], "exhaustive_contig": [(12, 4), (16, 6)],
                 "chain_dp": [(32, 8), (128, 16), (256, 32), (512, 64)],
                 "milp": [(8, 3), (12, 4), (16, 4), (24, 6), (32, 8)]}
        gap_sizes, episodes, gap_seeds = [(8, 3), (12, 4)], args.episodes, args.gap_seeds or 10
    print(f"Solver time ({seeds} random instances per row; 'proven' = optimality proven/solved; "
          "goal: the median instance proven optimal within the CPU seconds given)")
    print(format_table(time_rows(sizes, seeds, args.milp_limit, only_goals=args.goals), TIME_FORMATS))
    if args.goals:
        return
    print()
    print(f"Optimality gap vs the exact global optimum ({gap_seeds} instances per row; q_learning "
          f"with {episodes} episodes; chain_dp = best contiguous pipeline in the given device order)")
    print(format_table(gap_rows(gap_sizes, gap_seeds, episodes, args.milp_limit), GAP_FORMATS))


if __name__ == "__main__":
    main()
