"""Exhaustive search: the ground truth on small instances.

Deliberately naive (enumerate, evaluate with `cost.cost`, keep the best) so that it shares
no logic with the clever solvers it is used to check.
"""

from __future__ import annotations

import itertools
import math
import time
from typing import Iterable

from .cost import Objective, check_objective, cost
from .problem import Problem, check_problem
from .solution import InfeasibleError, Solution, no_fit_message

MAX_CANDIDATES = 2_000_000


def _best(problem: Problem, candidates: Iterable[tuple[int, ...]], objective: Objective,
          solver: str, where: str) -> Solution:
    t0 = time.perf_counter()
    best_x, best_c, seen = None, math.inf, 0
    for x in candidates:
        seen += 1
        c = cost(problem, x, objective)
        if c < best_c:
            best_x, best_c = x, c
    if best_x is None:
        raise InfeasibleError(no_fit_message(problem, where))
    return Solution(best_x, best_c, objective, solver, True, time.perf_counter() - t0,
                    {"candidates": seen})


def exhaustive_all(problem: Problem, objective: Objective) -> Solution:
    """min over all n^k assignments x in {0..n-1}^k of cost(x)."""
    check_problem(problem, "exhaustive_all")
    check_objective(objective)
    if problem.n ** problem.k > MAX_CANDIDATES:
        raise ValueError(f"{problem.n}^{problem.k} assignments is too many to enumerate; "
                         "use milp_assign for the exact optimum")
    return _best(problem, itertools.product(range(problem.n), repeat=problem.k), objective,
                 "exhaustive_all", "")


def exhaustive_contiguous(problem: Problem, objective: Objective) -> Solution:
    """min over contiguous partitions onto the ordered devices: x_0 <= x_1 <= ... <= x_{k-1}.

    Non-decreasing x are exactly the pipelines whose stages follow the device order, each
    device taking one (possibly empty) contiguous block of layers; there are C(k+n-1, n-1)
    of them, which `combinations_with_replacement` yields in sorted order.
    """
    check_problem(problem, "exhaustive_contiguous")
    check_objective(objective)
    if math.comb(problem.k + problem.n - 1, problem.n - 1) > MAX_CANDIDATES:
        raise ValueError("too many contiguous partitions to enumerate; use chain_dp")
    return _best(problem, itertools.combinations_with_replacement(range(problem.n), problem.k),
                 objective, "exhaustive_contiguous", "contiguous")
