"""Exact mixed-integer linear program for the general (non-contiguous) assignment.

Variables: x_jd in {0, 1} (module j on device d); for every message (j, l) with T_jl > 0
and every ordered device pair (d, e), y_jlde in [0, 1] standing for the product x_jd x_le.

    sum_d x_jd = 1                               every module placed once
    sum_j m_j x_jd <= M_d                        memory
    sum_e y_jlde = x_jd,  sum_d y_jlde = x_le    linearisation of y = x_jd x_le (below)

    c_jlde = alpha_de + T_jl / B_de for d != e, 0 for d = e      (cost of the message)
    L_d = sum_j (w_j / s_d) x_jd + sum_{(j,l)} sum_{e != d} c_jlde y_jlde

    latency:     min sum_d L_d
    bottleneck:  min tau  s.t.  L_d <= tau for all d

Why the linearisation is exact: for binary x, the y of one message form a "transportation
plan" whose row sums are the one-hot x_j. and column sums the one-hot x_l.; the only
non-negative matrix with a single 1 as its only non-zero row sum and column sum is the
outer product, so y_jlde = x_jd x_le exactly. It is the reformulation-linearisation of
Adams & Sherali 1986, "A tight linearization and an algorithm for zero-one quadratic
programming problems", Management Science 32(10). It needs no big-M, and its equalities
imply the textbook y >= x_jd + x_le - 1, y <= x_jd, y <= x_le (Glover & Woolsey 1974), so its
LP relaxation is never weaker (on random 12 x 4 chains it is 1-2 % tighter).
Placement by integer programming of this kind: Tarnawski et al., NeurIPS 2020.

The general problem is NP-hard (with no traffic and the bottleneck objective it is makespan
on unrelated machines, Lenstra, Shmoys & Tardos 1990), so the solve time can grow
exponentially; HiGHS (Huangfu & Hall 2018) via `scipy.optimize.milp` handles tens of modules.
Measured on 2 cores (`./course bench allocation`): 24 modules x 6 devices take 1.5 s (median)
for the latency, but the bottleneck is far harder: no instance proved optimal within 10 s
(the incumbent within 9 % of HiGHS's bound), 30-120 s without a limit. Its LP relaxation
spreads every module fractionally over all devices, which makes every message "stay on the
same device" and the max of the loads an average: the bound ignores communication entirely.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_array

from .chain_dp import chain_dp
from .cost import Objective, check_objective, cost, is_feasible
from .greedy import greedy_seed
from .problem import Problem
from .solution import InfeasibleError, Solution, no_fit_message


def _quick_incumbent(problem: Problem, objective: Objective) -> tuple[int, ...] | None:
    """Best of the cheap placements (seed greedy; contiguous DP in the given and in the
    fastest-first device order), or None if none of them fits."""
    found: list[Solution] = [greedy_seed(problem, objective)]
    if problem.is_chain:
        for order in (None, [int(d) for d in np.argsort(-problem.s, kind="stable")]):
            try:
                found.append(chain_dp(problem, objective, order=order))
            except InfeasibleError:
                pass
    best = min(found, key=lambda sol: sol.cost)
    return best.assignment if best.feasible else None


def milp_assign(problem: Problem, objective: Objective, *, time_limit: float | None = None,
                mip_rel_gap: float = 1e-7, incumbent: Sequence[int] | None | str = "auto") -> Solution:
    """Exact optimum over all assignments (see the module docstring for the formulation).

    For the bottleneck objective a known feasible assignment with cost U (`incumbent`; "auto"
    takes the best of greedy and the contiguous DPs, None uses none) adds the rows L_d <= U.
    They remove no optimal solution (the optimum is <= U), but unlike L_d <= tau their
    right-hand side is a constant, so HiGHS can derive knapsack cover cuts from them (on our
    24 x 6 bottleneck instances this cut the time to prove optimality by 15-45 %).
    `optimal` is False only if `time_limit` stopped HiGHS before it proved optimality (the
    best known assignment is then returned). Raises InfeasibleError when nothing fits.
    """
    check_objective(objective)
    t0 = time.perf_counter()
    k, n = problem.k, problem.n
    edges = problem.edges
    E = len(edges)
    nx, ny = k * n, E * n * n
    bottleneck = objective == "bottleneck"
    nv = nx + ny + (1 if bottleneck else 0)
    X = lambda j, d: j * n + d                                  # noqa: E731
    Y = lambda q, d, e: nx + (q * n + d) * n + e               # noqa: E731
    tau = nx + ny

    # Times are divided by a scale (all work on the fastest device) so the solver sees O(1)
    # numbers; its absolute tolerances (1e-6 and so) would otherwise swamp millisecond costs.
    scale = float(problem.w.sum() / problem.s.max()) or 1.0
    comp = (problem.w[:, None] / problem.s[None, :]) / scale   # (k, n): w_j / s_d
    msg = np.zeros((E, n, n))                                  # c_jlde / scale
    off = ~np.eye(n, dtype=bool)
    for q, (_, _, b) in enumerate(edges):
        msg[q][off] = ((problem.alpha + b / problem.B) / scale)[off]

    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    lo: list[float] = []
    hi: list[float] = []

    def row(entries: list[tuple[int, float]], lower: float, upper: float) -> None:
        r = len(lo)
        for c, v in entries:
            rows.append(r); cols.append(c); vals.append(v)
        lo.append(lower); hi.append(upper)

    for j in range(k):
        row([(X(j, d), 1.0) for d in range(n)], 1.0, 1.0)
    for d in range(n):  # memory, divided by M_d so every row reads "<= 1"
        row([(X(j, d), problem.m[j] / problem.M[d]) for j in range(k)], -np.inf, 1.0)
    for q, (j, l, _) in enumerate(edges):
        for d in range(n):
            row([(Y(q, d, e), 1.0) for e in range(n)] + [(X(j, d), -1.0)], 0.0, 0.0)
        for e in range(n):
            row([(Y(q, d, e), 1.0) for d in range(n)] + [(X(l, e), -1.0)], 0.0, 0.0)

    c = np.zeros(nv)
    if bottleneck:
        c[tau] = 1.0
        for d in range(n):
            load = [(X(j, d), comp[j, d]) for j in range(k)]
            load += [(Y(q, d, e), msg[q, d, e]) for q in range(E) for e in range(n) if e != d]
            row(load + [(tau, -1.0)], -np.inf, 0.0)
    else:
        c[:nx] = comp.ravel()
        c[nx:nx + ny] = msg.ravel()

    ub = np.ones(nv)
    ub[:nx] = (problem.m[:, None] <= problem.M[None, :]).ravel()  # fix x_jd = 0 where j cannot fit
    if bottleneck:
        ub[tau] = np.inf
    known: tuple[int, ...] | None = None
    if bottleneck:
        known = (_quick_incumbent(problem, objective) if isinstance(incumbent, str)
                 else None if incumbent is None else problem.check_assignment(incumbent))
        if known is not None and is_feasible(problem, known):
            U = cost(problem, known, objective) / scale * (1 + 1e-9)
            ub[tau] = U
            for d in range(n):
                load = [(X(j, d), comp[j, d]) for j in range(k)]
                load += [(Y(q, d, e), msg[q, d, e]) for q in range(E) for e in range(n) if e != d]
                row(load, -np.inf, U)
    A = coo_array((vals, (rows, cols)), shape=(len(lo), nv)).tocsr()
    integrality = np.zeros(nv)
    integrality[:nx] = 1
    options: dict[str, float] = {"mip_rel_gap": mip_rel_gap}
    if time_limit is not None:
        options["time_limit"] = time_limit
    res = milp(c, integrality=integrality, bounds=Bounds(np.zeros(nv), ub),
               constraints=LinearConstraint(A, lo, hi), options=options)
    if res.status == 2:
        raise InfeasibleError(no_fit_message(problem, ""))
    if res.x is None and known is None:
        raise RuntimeError(f"HiGHS returned no solution: {res.message}")
    x = (known if res.x is None
         else tuple(int(d) for d in np.round(res.x[:nx]).reshape(k, n).argmax(axis=1)))
    if not is_feasible(problem, x):  # only if HiGHS's 1e-6 feasibility slack was used
        raise RuntimeError(f"MILP solution {x} breaks a memory limit by more than the tolerance")
    return Solution(x, cost(problem, x, objective), objective, "milp", res.status == 0,
                    time.perf_counter() - t0,
                    {"milp_value": float(res.fun) * scale if res.x is not None else np.nan, "variables": nv, "constraints": len(lo),
                     # HiGHS's proven lower bound: when time_limit stops it, the optimum lies in
                     # [lower_bound, cost], so a non-optimal result still says how far off it can be.
                     "lower_bound": float(getattr(res, "mip_dual_bound", np.nan)) * scale,
                     "message": res.message})
