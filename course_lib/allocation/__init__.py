"""Placing a model's modules on heterogeneous devices: cost model, exact and heuristic solvers.

    problem.py     Device, Links, Module, Problem (validated; the notation lives there)
    cost.py        memory feasibility, per-device loads, latency vs time per micro-batch
    solution.py    Solution (what every solver returns), InfeasibleError
    exhaustive.py  ground truth: all assignments / all contiguous partitions
    greedy.py      the seed's greedy, as written
    chain_dp.py    exact DP for pipeline stages of a layer chain, O(k^2 n^2)
    milp.py        exact MILP for general assignments (scipy.optimize.milp / HiGHS)
    qlearning.py   tabular Q-learning, the seed's RL, measured against the optimum
    generate.py    seeded random instances, 13 stress kinds (stress_problem), the seed's example
    calibrate.py   this machine measured: GPT layer times and memory, gloo link alpha/beta
    plot.py        pictures: placement and the pipeline's flow-shop timeline
    bench.py       `python -m course_lib.allocation.bench`: timings and optimality gaps
"""

from .chain_dp import chain_dp
from .cost import (OBJECTIVES, Objective, comm_time, compute_time, cost, device_load, is_feasible,
                   latency, memory_use, pipeline_time, send_time, stages, time_per_microbatch)
from .exhaustive import exhaustive_all, exhaustive_contiguous
from .generate import KINDS, random_problem, seed_example, stress_problem
from .greedy import greedy_seed
from .milp import milp_assign
from .problem import Device, Links, Module, Problem
from .qlearning import q_learning
from .solution import InfeasibleError, Solution

__all__ = [
    "Device", "Links", "Module", "Problem", "Objective", "OBJECTIVES",
    "comm_time", "compute_time", "send_time", "device_load", "memory_use", "is_feasible",
    "latency", "time_per_microbatch", "cost", "stages", "pipeline_time",
    "Solution", "InfeasibleError",
    "exhaustive_all", "exhaustive_contiguous", "greedy_seed", "chain_dp", "milp_assign", "q_learning",
    "random_problem", "seed_example", "stress_problem", "KINDS",
]
