"""The seed's greedy, implemented as written (section 3.1.1), shortcomings included.

    1. sort the devices by compute capability;
    2. from the strongest device on, give it the modules in order until its resources run out;
    3. repeat step 2 until every module is placed.

"Resources" is read as memory: it is the only capacity with units that can run out (the
seed's "compute constraint" sum w_j <= c_i compares FLOP with FLOP/s, see SEED_NOTES.md).
The rule never looks at the objective, the links, or back at a device it has left.
"""

from __future__ import annotations

import time

import numpy as np

from .cost import Objective, check_objective, cost, fits
from .problem import Problem, check_problem
from .solution import Solution


def greedy_seed(problem: Problem, objective: Objective) -> Solution:
    """Fill the fastest device with modules 0, 1, ... until the next one does not fit, then the
    next fastest device, and so on. O(k + n log n).

    Returns a Solution with assignment None and cost inf when it runs out of devices, which
    can happen even when a feasible assignment exists (a module it skipped past would have
    fit on an earlier device).
    """
    check_problem(problem, "greedy_seed")
    check_objective(objective)
    t0 = time.perf_counter()
    order = sorted(range(problem.n), key=lambda d: -problem.s[d])  # stable: ties by index
    used = np.zeros(problem.n)
    x: list[int] = []
    i = 0
    for j in range(problem.k):
        while i < problem.n and not fits(used[order[i]] + problem.m[j], problem.M[order[i]]):
            i += 1  # this device's "resources are exhausted": move on, never come back
        if i == problem.n:
            return Solution(None, float("inf"), objective, "greedy_seed", False,
                            time.perf_counter() - t0, {"stuck_at_module": j})
        used[order[i]] += problem.m[j]
        x.append(order[i])
    xt = tuple(x)
    return Solution(xt, cost(problem, xt, objective), objective, "greedy_seed", False,
                    time.perf_counter() - t0)
