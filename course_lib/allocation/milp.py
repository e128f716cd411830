"""Exact mixed-integer linear program for the general (non-contiguous) assignment.

Variables: x_jd in {0, 1} (module j on device d); for every message (j, l) with T_jl > 0
and every ordered device pair (d, e), y_jlde in [0, 1] standing for the product x_jd x_le
(declared integer for the bottleneck, see `_formulation`).

    sum_d x_jd = 1                               every module placed once
    sum_j m_j x_jd <= M_d                        memory
    sum_e y_jlde = x_jd,  sum_d y_jlde = x_le    linearisation of y = x_jd x_le (below)

    c_jlde = alpha_de + T_jl / B_de for d != e, 0 for d = e      (cost of the message)
    L_d = sum_j (w_j / s_d) x_jd + sum_{(j,l)} sum_{e != d} c_jlde y_jlde

    latency:     min sum_d L_d
    bottleneck:  min tau  s.t.  L_d <= tau for all d, and the same for a floor of L_d that
                 prices each message leaving d at its cheapest link (`_message_floor`)

Why the linearisation is exact: for binary x, the y of one message form a "transportation
plan" whose row sums are the one-hot x_j. and column sums the one-hot x_l.; the only
non-negative matrix with a single 1 as its only non-zero row sum and column sum is the
outer product, so y_jlde = x_jd x_le exactly. It is the reformulation-linearisation of
Adams & Sherali 1986, "A tight linearization and an algorithm for zero-one quadratic
programming problems", Management Science 32(10). It needs no big-M, and its equalities
imply the textbook y >= x_jd + x_le - 1, y <= x_jd, y <= x_le (Glover & Woolsey 1974), so its
LP relaxation is never weaker (on random 12 x 4 chains it is 1-2 % tighter).
Placement by integer programming of this kind: Tarnawski et al., NeurIPS 2020.

The general problem is NP-hard: with equal speeds, no traffic and the bottleneck objective
it is makespan on identical machines (P||Cmax, NP-hard, Garey & Johnson 1979), a special
case, so any exact method for ours solves P||Cmax too. (One speed per device makes it
uniformly related machines, Q||Cmax, itself a special case of unrelated machines, R||Cmax,
Lenstra, Shmoys & Tardos 1990: that inclusion gives approximation results, not hardness.)
The solve time can therefore grow exponentially; HiGHS (Huangfu & Hall 2018) via
`scipy.optimize.milp` handles tens of modules. The bottleneck is the harder objective: its
LP relaxation spreads every module fractionally over all devices, which makes every message
"stay on the same device" and the max of the loads an average, so the bound ignores
communication. `milp_assign` below explains what keeps the answers exact on any scale.
"""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, linprog, milp
from scipy.sparse import coo_array

from .chain_dp import chain_dp
from .cost import Objective, check_objective, cost, fits, memory_use
from .greedy import greedy_seed
from .problem import Problem, check_number, check_problem
from .solution import InfeasibleError, Solution, no_fit_message

# A MILP optimum is accepted only if the cost model, re-evaluated on its assignment, agrees
# with the value HiGHS reports to this relative tolerance (else HiGHS's tolerances were hit).
# HiGHS lets a row be violated by 1e-6 (its MIP feasibility tolerance; tightening it makes
# HiGHS print debug lines), so tau may undercut a load by 1e-6 U, i.e. 2e-6 of an optimum >= U/2.
AGREE_RTOL = 1e-5
# HiGHS sees memory rows 1e-6 more lenient than `fits` (1e-9), far above its own tolerances,
# so it never refuses a group that fits; a group it accepts that `fits` refuses is cut off
# afterwards (_memory_cuts) and the solve repeated.
LENIENT = 1e-6
# The core problem of `_core_incumbent` keeps the variables whose Lagrangian bound lies within
# this fraction of the way from the LP bound to the incumbent's cost.
CORE = 0.15
CORE_SECONDS = 5.0
# Observations of a variable's branching effect before HiGHS trusts its pseudocost and stops
# strong-branching on it (HiGHS's default is 8): see `_highs`.
RELIABLE = 4


def _load_matrix(problem: Problem):
    """What `_loads` needs, built once per problem: compute w_j / s_d (k, n), message costs
    c_q(d, e) = alpha_de + T_q / B_de with 0 for d = e (E, n, n), the messages' ends (E,)."""
    ej = np.array([j for j, _, _ in problem.edges], dtype=int)
    el = np.array([l for _, l, _ in problem.edges], dtype=int)
    eb = np.array([b for _, _, b in problem.edges], dtype=float)
    msg = problem.alpha[None] + eb[:, None, None] / problem.B[None]
    msg[:, np.arange(problem.n), np.arange(problem.n)] = 0.0
    return problem.w[:, None] / problem.s[None, :], msg, ej, el


def _loads(problem: Problem, tables, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Device loads L_d (C, n) and memory feasibility (C,) of C assignments Y (C, k) at once:
    one `bincount` over (candidate, device) pairs instead of a Python loop per candidate.
    No argument checks: the candidates are valid by construction."""
    comp, msg, ej, el = tables
    C, (k, n) = len(Y), comp.shape
    slot = Y + (np.arange(C) * n)[:, None]                      # (candidate, device) -> one index
    mem = np.bincount(slot.ravel(), np.tile(problem.m, C), C * n).reshape(C, n)
    L = np.bincount(slot.ravel(), comp[np.arange(k), Y].ravel(), C * n).reshape(C, n)
    if len(ej):
        d, e = Y[:, ej], Y[:, el]
        L += np.bincount(slot[:, ej].ravel(), msg[np.arange(len(ej)), d, e].ravel(), C * n).reshape(C, n)
    return L, np.all(fits(mem, problem.M), axis=1)


def _neighbours(x: np.ndarray, n: int, longest: int = 8) -> np.ndarray:
    """Every assignment one step from x:
    - a run x[a:b] of up to `longest` modules moved to one device (b = a + 1 is a single
      move; moving a whole block saves the messages that single moves would create);
    - two modules on different devices swapped;
    - two maximal blocks (runs of one device) swapped, or all the modules of two devices
      swapped: the exchanges a pipeline needs to change its device order, which no
      sequence of improving single moves reaches."""
    k = len(x)
    ab = [(a, b) for a in range(k) for b in range(a + 1, min(k, a + longest) + 1)]
    moves = np.repeat(x[None], len(ab) * n, axis=0)
    for i, (a, b) in enumerate(ab):
        moves[i * n:(i + 1) * n, a:b] = np.arange(n)[:, None]
    j, l = np.triu_indices(k, 1)
    apart = x[j] != x[l]
    j, l = j[apart], l[apart]
    swaps = np.repeat(x[None], len(j), axis=0)
    swaps[np.arange(len(j)), j], swaps[np.arange(len(j)), l] = x[l], x[j]
    starts = np.flatnonzero(np.diff(x, prepend=-1))
    runs = list(zip(starts, np.append(starts[1:], k)))
    blocks = []
    for r, (a, b) in enumerate(runs):
        for c, d in runs[r + 1:]:
            if x[a] != x[c]:
                y = x.copy(); y[a:b], y[c:d] = x[c], x[a]; blocks.append(y)
    for d in range(n):
        for e in range(d + 1, n):
            y = x.copy(); y[x == d], y[x == e] = e, d; blocks.append(y)
    return np.concatenate([moves, swaps] + ([np.array(blocks)] if blocks else []))


def _improve(problem: Problem, x: tuple[int, ...], objective: Objective, kicks: int | None = None,
             seed: int = 0, deadline: float | None = None) -> tuple[int, ...]:
    """Iterated local search (Lourenco, Martin & Stuetzle 2003, "Iterated local search"):
    descend to a local optimum by the best neighbour (`_neighbours`), then `kicks` times
    move a few short runs to random devices and descend again, keeping the best. By
    default k kicks for the latency and 3k for the bottleneck, whose landscape is flatter
    (only the busiest device counts) and whose MILP bound is weaker, so that a better
    starting placement saves more of HiGHS's search.

    For the bottleneck a neighbour is better when its loads sorted in decreasing order are
    lexicographically smaller: a move that lowers the second-busiest device counts, which
    opens the way for the next move to lower the busiest one. The search is seeded, so
    the same problem always gives the same placement (unless `deadline`, a
    `time.perf_counter()` value, stops the kicks early).
    """
    k, n = problem.k, problem.n
    tables = _load_matrix(problem)
    if kicks is None:
        kicks = k if objective == "latency" else 3 * k

    def keys(Y: np.ndarray) -> np.ndarray:
        """(C, n) keys, compared lexicographically; inf for a placement that does not fit."""
        L, ok = _loads(problem, tables, Y)
        K = L.sum(axis=1, keepdims=True) if objective == "latency" else -np.sort(-L, axis=1)
        K[~ok] = np.inf
        return K

    def descend(y: np.ndarray, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        while n > 1:
            Y = _neighbours(y, n)
            K = keys(Y)
            i = np.lexsort(K.T[::-1])[0]
            if not tuple(K[i] * (1 + 1e-12)) < tuple(key):  # no strict improvement left
                break
            y, key = Y[i], K[i]
        return y, key

    best, best_key = descend(np.array(x), keys(np.array(x)[None])[0])
    rng = np.random.default_rng(seed)
    for _ in range(kicks if n > 1 else 0):
        if deadline is not None and time.perf_counter() > deadline:
            break
        y = best.copy()
        for _ in range(2):
            a = int(rng.integers(k))
            y[a:a + int(rng.integers(1, 4))] = rng.integers(n)
        y, key = descend(y, keys(y[None])[0])
        if tuple(key * (1 + 1e-12)) < tuple(best_key):
            best, best_key = y, key
    return tuple(int(d) for d in best)


def _quick_incumbent(problem: Problem, objective: Objective,
                     deadline: float | None = None) -> tuple[int, ...] | None:
    """Best of the cheap placements (seed greedy; contiguous DP in the given and in the
    fastest-first device order), improved by iterated local search; None if none fits."""
    found: list[Solution] = [greedy_seed(problem, objective)]
    if problem.is_chain:
        for order in (None, [int(d) for d in np.argsort(-problem.s, kind="stable")]):
            try:
                found.append(chain_dp(problem, objective, order=order))
            except InfeasibleError:
                pass
    best = min(found, key=lambda sol: sol.cost)
    return _improve(problem, best.assignment, objective, deadline=deadline) if best.feasible else None


def _highs(c, integrality, lb, ub, A, lo, hi, rel_gap: float, seconds: float | None,
           cutoff: float | None = None, prove: bool = False):
    """scipy's milp with HiGHS's absolute gap switched off, so that optimality is judged only
    relative to the objective (`mip_rel_gap`), never by an absolute 1e-6 that would swamp
    small costs, and its LP feasibility tolerance at 1e-9. scipy passes options it does not
    list to HiGHS verbatim, with a warning we silence.

    With a `cutoff` (the scaled cost of a known placement, plus a hair), HiGHS prunes every
    node whose bound is above it from the start, and spends less effort on its own primal
    heuristics (sub-MIPs), since a good placement is already known: scipy's milp cannot
    hand HiGHS that placement itself, only its value.

    `prove` is for a solve whose starting placement is optimal or close, so that what is left
    is mostly the proof, a short search (hundreds to thousands of nodes). Two of HiGHS's
    defaults suit long searches instead:
    - its primal heuristics (RINS, RENS, feasibility jump, root reduced cost) look for a
      better placement near the LP solution: off;
    - its reliability branching (Achterberg, Koch & Martin 2005, "Branching rules
      revisited", Operations Research Letters 33) solves both children's LPs of a candidate
      variable ("strong branching") until it has seen 8 outcomes of branching on it, and only
      then trusts its pseudocost; in a short search most of the LP work goes to those trial
      solves, so RELIABLE outcomes suffice."""
    options: dict[str, float] = {"mip_rel_gap": rel_gap, "mip_abs_gap": 0.0,
                                 "primal_feasibility_tolerance": 1e-9}
    if cutoff is not None:
        options.update(objective_bound=cutoff, mip_heuristic_effort=0.01)
    if prove:
        options.update(mip_pscost_minreliable=RELIABLE, mip_heuristic_run_rins=False,
                       mip_heuristic_run_rens=False, mip_heuristic_run_feasibility_jump=False,
                       mip_heuristic_run_root_reduced_cost=False)
    if seconds is not None:
        options["time_limit"] = max(seconds, 1e-3)
    with warnings.catch_warnings(), _quiet_c_stdout():
        warnings.filterwarnings("ignore", message="Unrecognized options", category=RuntimeWarning)
        return milp(c, integrality=integrality, bounds=Bounds(lb, ub),
                    constraints=LinearConstraint(A, lo, hi), options=options)


@contextmanager
def _quiet_c_stdout() -> Iterator[None]:
    """Send the C-level stdout (file descriptor 1) to /dev/null for the duration: HiGHS 1.12
    prints a debug line ("transformNewIntegerFeasibleSolution tmpSolver.run()") there with a
    bare printf, past its own output switch, when it re-solves a new solution with tight
    tolerances; Jupyter would show it in the middle of a lecture's output."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError, AttributeError):  # no stdout or no descriptor 1: nothing to hide
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def _seconds_left(deadline: float | None) -> float | None:
    """Seconds until `deadline` (a `time.perf_counter()` value), None for no deadline."""
    return None if deadline is None else deadline - time.perf_counter()


def _placement(problem: Problem, v: np.ndarray) -> tuple[int, ...]:
    """The assignment in a MILP solution: each module's device is its largest x_jd (the first
    k n entries of v; rounding noise of HiGHS never changes which one is largest)."""
    return tuple(int(d) for d in v[:problem.k * problem.n].reshape(problem.k, problem.n).argmax(axis=1))


class _Rows:
    """A sparse constraint matrix built row by row: lo <= sum_c A[r, c] v_c <= hi."""

    def __init__(self) -> None:
        self.r: list[int] = []
        self.c: list[int] = []
        self.v: list[float] = []
        self.lo: list[float] = []
        self.hi: list[float] = []

    def add(self, entries: list[tuple[int, float]], lower: float, upper: float) -> None:
        for col, val in entries:
            self.r.append(len(self.lo)); self.c.append(col); self.v.append(val)
        self.lo.append(lower); self.hi.append(upper)

    def matrix(self, nv: int):
        return coo_array((self.v, (self.r, self.c)), shape=(len(self.lo), nv)).tocsr()


def _placement_rows(problem: Problem, rows: _Rows, cuts: list[tuple[int, tuple[int, ...]]]) -> None:
    """x_jd = variable j * n + d. One device per module, memory, and the memory cuts."""
    k, n = problem.k, problem.n
    for j in range(k):
        rows.add([(j * n + d, 1.0) for d in range(n)], 1.0, 1.0)
    for d in range(n):  # memory / M_d <= 1 + LENIENT: a group that fits is never refused
        rows.add([(j * n + d, problem.m[j] / problem.M[d]) for j in range(k)], -np.inf, 1.0 + LENIENT)
    for d, group in cuts:  # "these modules do not all fit on d together" (see _memory_cuts)
        rows.add([(j * n + d, 1.0) for j in group], -np.inf, len(group) - 1.0)


def _memory_cuts(problem: Problem, x: tuple[int, ...]) -> list[tuple[int, tuple[int, ...]]]:
    """For each device x overfills, the group of modules on it. The memory rows are lenient
    (LENIENT), so HiGHS can return a group summing to 1 + 1e-7 of M_d that `fits` (1e-9)
    refuses; the cut sum_{j in group} x_jd <= |group| - 1 removes that group (and only
    placements that also break the limit), and the solve is repeated."""
    used = memory_use(problem, x)
    return [(d, tuple(j for j in range(problem.k) if x[j] == d))
            for d in range(problem.n) if not fits(used[d], problem.M[d])]


def _any_fit(problem: Problem, deadline: float | None) -> tuple[int, ...] | None:
    """Any assignment that fits in memory (a MILP with no objective), None if the time ran out.

    Raises InfeasibleError if none exists. HiGHS's "infeasible" is trustworthy here: the
    rows are O(1) and its tolerances only make it more lenient than `fits`.
    """
    k, n = problem.k, problem.n
    cuts: list[tuple[int, tuple[int, ...]]] = []
    while True:
        rows = _Rows()
        _placement_rows(problem, rows, cuts)
        ub = fits(problem.m[:, None], problem.M[None, :]).ravel().astype(float)
        left = _seconds_left(deadline)
        res = _highs(np.zeros(k * n), np.ones(k * n), np.zeros(k * n), ub, rows.matrix(k * n),
                     rows.lo, rows.hi, 1e-7, left)
        if res.status == 2:
            raise InfeasibleError(no_fit_message(problem, ""))
        if res.x is None:
            if res.status == 1:
                return None
            raise RuntimeError(f"HiGHS failed to find a placement that fits: {res.message}")
        x = _placement(problem, res.x)
        new = _memory_cuts(problem, x)
        if not new:
            return x
        cuts += new


def milp_assign(problem: Problem, objective: Objective, *, time_limit: float | None = None,
                mip_rel_gap: float = 1e-7, incumbent: Sequence[int] | None | str = "auto") -> Solution:
    """Exact optimum over all assignments (see the module docstring for the formulation).

    How it stays exact on any instance the cost model accepts:
    1. Start from a placement that fits, with cost U: `incumbent` ("auto": the best of greedy
       and the contiguous DPs, improved by iterated local search; a sequence: yours; None: any
       placement that fits, found by a MILP without objective, which also proves
       infeasibility: InfeasibleError). If U = 0 it is optimal: no cost is negative.
    2. Divide every time by U, so HiGHS's absolute tolerances (1e-6 and so) are relative
       to the instance, and drop every placement of a module, or of a message, that alone
       costs more than U: it cannot be in a solution better than U, and dropping it removes
       the huge coefficients (a link 1e13 times slower than compute) that break the LP.
    For the latency of a chain, two more steps use the Lagrangian bound of `_lagrangian_fixing`
    (memory rows priced, the rest an exact chain DP): a better U from a small "core" MILP
    (`_core_incumbent`), then every placement or message whose bound already exceeds U is
    fixed to 0 before the exact solve; HiGHS then proves the optimum on a smaller problem,
    with its search set up for a proof (`_highs(prove=True)`).
    3. Solve. If the optimum found is below U / 2, solve again with it as U (the scale was too
       coarse); if it overfills a memory by HiGHS's tolerance, cut that group and solve again.
    4. `optimal` is True only if HiGHS proved optimality AND the cost model re-evaluated on
       the answer agrees with HiGHS's value to 1e-5. For the bottleneck, the rows L_d <= U
       (a constant right-hand side, unlike L_d <= tau) and the message floors
       (`_message_floor`) let HiGHS derive knapsack cover cuts.

    `time_limit` [s] bounds the whole call (the search for a start takes half of it at most);
    when it stops HiGHS, the best known assignment comes back with `optimal=False` and
    `info["lower_bound"]`: the optimum lies in
    [lower_bound, cost] (0 when HiGHS has no bound yet, except for the latency of a chain,
    which has the LP bound of the Lagrangian step). A solver failure (HiGHS reporting
    "infeasible" although a placement fits, or an error) also gives `optimal=False`, with
    HiGHS's message in `info["message"]`; only a real lack of memory raises InfeasibleError.
    """
    check_problem(problem, "milp_assign")
    check_objective(objective)
    if time_limit is not None:
        time_limit = check_number(time_limit, "milp_assign: time_limit [s]",
                                  "give a positive number of seconds, or None for no limit")
        if time_limit <= 0:
            raise ValueError(f"milp_assign: time_limit must be > 0 seconds, got {time_limit!r}; "
                             "give a positive number of seconds, or None for no limit")
    mip_rel_gap = check_number(mip_rel_gap, "milp_assign: mip_rel_gap")
    if not 0 <= mip_rel_gap < 1:
        raise ValueError(f"milp_assign: mip_rel_gap must lie in [0, 1), got {mip_rel_gap!r}; "
                         "1e-7 proves the optimum to 7 digits")
    t0 = time.perf_counter()
    deadline = None if time_limit is None else t0 + time_limit

    if isinstance(incumbent, str):
        if incumbent != "auto":
            raise ValueError(f"incumbent must be 'auto', None or an assignment, got {incumbent!r}")
        # The search for a start gets half the time limit at most, so that a short limit still
        # leaves time for a bound (the LP relaxation's, for the latency of a chain).
        known = _quick_incumbent(problem, objective, None if time_limit is None else t0 + time_limit / 2)
    elif incumbent is None:
        known = None
    else:
        known = problem.check_assignment(incumbent)
        if not math.isfinite(cost(problem, known, objective)):
            raise ValueError(f"incumbent {known} breaks a memory limit; pass a placement that "
                             "fits, or None / 'auto'")
    if known is None:
        known = _any_fit(problem, deadline)
        if known is None:
            return Solution(None, math.inf, objective, "milp", False, time.perf_counter() - t0,
                            {"lower_bound": 0.0, "message": "time limit reached before any "
                             "placement that fits was found", "solves": 1})

    def result(x: tuple[int, ...], optimal: bool, bound: float, **info) -> Solution:
        c = cost(problem, x, objective)
        return Solution(x, c, objective, "milp", optimal, time.perf_counter() - t0,
                        {"lower_bound": min(bound, c), **info})

    lagrangian = objective == "latency" and problem.is_chain and problem.n > 1
    proven = 0.0  # a lower bound [s] known before the exact solve: the core step's LP relaxation
    if lagrangian:
        known, proven = _core_incumbent(problem, known, deadline)
    cuts: list[tuple[int, tuple[int, ...]]] = []
    solves = 0
    retry_without_cutoff = False
    while True:
        U = cost(problem, known, objective)
        if U == 0.0:
            return result(known, True, 0.0, solves=solves, message="a placement with cost 0")
        c, integrality, lb, ub, A, lo, hi, nx = _formulation(problem, objective, U, cuts)
        fixed, lp_bound = 0, 0.0  # lp_bound: the LP relaxation's value, a lower bound (1 = U)
        if lagrangian:
            left = _seconds_left(deadline)
            ub, fixed, lp_bound = _lagrangian_fixing(problem, c, ub, A, lo, hi, nx, seconds=left)
        left = _seconds_left(deadline)
        if left is not None and left <= 0:
            return result(known, False, max(lp_bound * U, proven), solves=solves, message="time limit reached")
        # The cutoff sits 1e-4 above U: HiGHS prunes nodes within its gap of the cutoff, and
        # the known placement must stay inside. Should HiGHS still call the model infeasible
        # (a tolerance artefact: `known` satisfies every row), solve once more without it.
        # After the core solve (latency) the starting placement is often optimal already, and
        # otherwise close: the search is mostly a proof (`prove`). The bottleneck's local search
        # leaves it further above, and HiGHS's heuristics are what finds the rest of the way
        # (without them its solves grew longer).
        res = _highs(c, integrality, lb, ub, A, lo, hi, mip_rel_gap, left,
                     cutoff=None if retry_without_cutoff else 1 + 1e-4, prove=lagrangian)
        solves += 1
        if res.status == 2 and not retry_without_cutoff:
            retry_without_cutoff = True
            continue
        retry_without_cutoff = False
        bound = (float(res.mip_dual_bound) * U if getattr(res, "mip_dual_bound", None) is not None
                 and math.isfinite(res.mip_dual_bound) else 0.0)
        bound = max(bound, lp_bound * U, proven)
        info = {"variables": len(c), "constraints": len(lo), "solves": solves, "scale": U,
                "fixed_by_lagrangian": fixed,
                "message": res.message, "memory_cuts": len(cuts)}
        if res.x is None:  # HiGHS found nothing better than `known`, or failed
            if res.status == 2:
                info["message"] = (f"solver failure: HiGHS reported infeasible, but {known} fits "
                                   f"(cost {U:.6g}); {res.message}")
            return result(known, False, bound, **info)
        x = _placement(problem, res.x)
        new = _memory_cuts(problem, x)
        if new:  # x overfills a device by HiGHS's tolerance: cut it off, solve again
            cuts += new
            continue
        cx = cost(problem, x, objective)
        value = float(res.fun) * U
        info["milp_value"] = value
        if cx < U:
            known = x
        if res.status == 0 and 0 < cx < U / 2:  # the scale U was too coarse for this optimum
            continue
        agree = abs(cx - value) <= AGREE_RTOL * max(cx, value) + 1e-12 * U
        if res.status == 0 and not agree:
            info["message"] = (f"solver failure: HiGHS's value {value:.9g} and the cost model's "
                               f"{cx:.9g} disagree; {res.message}")
        return result(known, res.status == 0 and agree and cx <= U * (1 + AGREE_RTOL), bound, **info)


def _core_incumbent(problem: Problem, known: tuple[int, ...],
                    deadline: float | None) -> tuple[tuple[int, ...], float]:
    """A better starting placement from the "core" of the problem (latency, chain): keep only
    the placements and messages whose Lagrangian bound (`_lagrangian_fixing`) lies within
    CORE of the way from the LP bound to the cost U of `known`, and solve that small MILP
    (a fraction of the variables) for at most CORE_SECONDS and half the time left. Its
    answer is a real placement, so it replaces `known` if it costs less; the exact solve
    that follows still searches every placement. Why it pays: the better the starting
    cost, the more variables the exact solve can fix and the more of its tree its cutoff
    prunes (core problems: Balas & Zemel 1980, "An algorithm for large zero-one knapsack
    problems", Operations Research 28). Also returns the LP bound [s] (0 if the time ran out
    before it), which stays valid whatever happens next."""
    U = cost(problem, known, "latency")
    if U == 0.0:
        return known, 0.0
    left = _seconds_left(deadline)
    if left is not None and left <= 0:
        return known, 0.0
    c, integrality, lb, ub, A, lo, hi, nx = _formulation(problem, "latency", U, [])
    ub, _, lp_bound = _lagrangian_fixing(problem, c, ub, A, lo, hi, nx, keep_below=CORE, seconds=left)
    left = _seconds_left(deadline)
    if left is not None and left <= 0:
        return known, lp_bound * U
    seconds = CORE_SECONDS if left is None else min(CORE_SECONDS, left / 2)
    res = _highs(c, integrality, lb, ub, A, lo, hi, 1e-7, seconds, cutoff=1 + 1e-4)
    if res.x is None:
        return known, lp_bound * U
    x = _placement(problem, res.x)
    # inf (overfilled by a tolerance) never wins
    return (x if cost(problem, x, "latency") < U else known), lp_bound * U


def _formulation(problem: Problem, objective: Objective, U: float,
                 cuts: list[tuple[int, tuple[int, ...]]]):
    """The MILP of the module docstring with times divided by U, and the placements that
    alone cost more than U removed (their variables fixed to 0 and their costs zeroed)."""
    k, n = problem.k, problem.n
    edges = problem.edges
    E = len(edges)
    nx, ny = k * n, E * n * n
    bottleneck = objective == "bottleneck"
    nv = nx + ny + (1 if bottleneck else 0)
    X = lambda j, d: j * n + d                                  # noqa: E731
    Y = lambda q, d, e: nx + (q * n + d) * n + e               # noqa: E731
    tau = nx + ny
    cap = U * (1 + 1e-9)  # keep the incumbent itself, whatever its rounding

    comp = problem.w[:, None] / problem.s[None, :]              # (k, n): w_j / s_d [s]
    msg = np.zeros((E, n, n))                                   # c_jlde [s], 0 for d = e
    off = ~np.eye(n, dtype=bool)
    for q, (_, _, b) in enumerate(edges):
        msg[q][off] = (problem.alpha + b / problem.B)[off]
    allow_x = fits(problem.m[:, None], problem.M[None, :]) & (comp <= cap)
    allow_y = np.ones((E, n, n), dtype=bool)
    for q, (j, l, _) in enumerate(edges):
        # On d, module j's compute and its message both count in L_d (and in the latency).
        alone = comp[j][:, None] + msg[q] + (comp[l][None, :] if not bottleneck else 0.0)
        allow_y[q] = allow_x[j][:, None] & allow_x[l][None, :] & (alone <= cap)
    comp = np.where(allow_x, comp / U, 0.0)
    msg = np.where(allow_y, msg / U, 0.0)

    rows = _Rows()
    _placement_rows(problem, rows, cuts)
    for q, (j, l, _) in enumerate(edges):
        for d in range(n):
            rows.add([(Y(q, d, e), 1.0) for e in range(n)] + [(X(j, d), -1.0)], 0.0, 0.0)
        for e in range(n):
            rows.add([(Y(q, d, e), 1.0) for d in range(n)] + [(X(l, e), -1.0)], 0.0, 0.0)

    c = np.zeros(nv)
    ub = np.concatenate([allow_x.ravel(), allow_y.ravel()]).astype(float)
    if bottleneck:
        c[tau] = 1.0
        ub = np.append(ub, cap / U)
        for d in range(n):
            load = [(X(j, d), comp[j, d]) for j in range(k) if comp[j, d] > 0]
            load += [(Y(q, d, e), msg[q, d, e]) for q in range(E) for e in range(n) if msg[q, d, e] > 0]
            rows.add(load + [(tau, -1.0)], -np.inf, 0.0)
            rows.add(load, -np.inf, cap / U)
            floor = _message_floor(problem, d, comp, msg, allow_y, X, Y)
            rows.add(floor + [(tau, -1.0)], -np.inf, 0.0)
            rows.add(floor, -np.inf, cap / U)
    else:
        c[:nx] = comp.ravel()
        c[nx:nx + ny] = msg.ravel()
    # y is 0 or 1 in every placement anyway. Declared integer, the load rows become knapsacks
    # on binaries only, so HiGHS derives cover cuts from them and branches on a message when
    # that is what splits the load: the bottleneck's proof gets much shorter. For the latency
    # (y only in the objective) it adds branching without pruning, so there y stays continuous.
    integrality = np.zeros(nv)
    integrality[:nx + (ny if bottleneck else 0)] = 1
    return c, integrality, np.zeros(nv), ub, rows.matrix(nv), rows.lo, rows.hi, nx


def _message_floor(problem: Problem, d: int, comp: np.ndarray, msg: np.ndarray, allow_y: np.ndarray,
                   X, Y) -> list[tuple[int, float]]:
    """A weaker copy of device d's load row that HiGHS can cut better (bottleneck):

        L_d >= sum_j (w_j / s_d) x_jd + sum_q f_qd (x_jd - y_qdd),   f_qd = min_{e != d} c_qde,

    where q is a message j -> l: if j is on d and l is not (x_jd - y_qdd = 1), d pays for
    the message at least its cheapest link. It is implied by the load row in the LP (the
    y_qde, e != d, sum to x_jd - y_qdd), so it never changes the LP bound. It helps the
    search: its coefficients do not depend on where a message goes, so a cover of it
    ("these modules cannot all be on d, whatever their messages' destinations") is a cut on
    x_jd and y_qdd alone, which the load row, with n - 1 destinations per message, does not
    give HiGHS (knapsack covers: Balas 1975, "Facets of the knapsack polytope", Mathematical
    Programming 8). Costs are scaled (1 = U).
    """
    n = problem.n
    coef: dict[int, float] = {X(j, d): comp[j, d] for j in range(problem.k) if comp[j, d] > 0}
    away = np.arange(n) != d
    for q, (j, _, _) in enumerate(problem.edges):
        allowed = allow_y[q, d] & away
        if not allowed.any():  # no message can leave d: the linking rows force y_qdd = x_jd
            continue
        f = float(msg[q, d][allowed].min())
        if f > 0:
            coef[X(j, d)] = coef.get(X(j, d), 0.0) + f
            coef[Y(q, d, d)] = -f
    return list(coef.items())


def _lagrangian_fixing(problem: Problem, c: np.ndarray, ub: np.ndarray, A, lo: np.ndarray,
                       hi: np.ndarray, nx: int, keep_below: float = 1.0,
                       seconds: float | None = None) -> tuple[np.ndarray, int, float]:
    """Fix to 0 every x_jd and y_jde that no placement cheaper than U can use (latency, chain).

    Lagrangian relaxation of the memory rows (Fisher 1981, "The Lagrangian relaxation method
    for solving integer programming problems", Management Science 27(1)): for prices
    lambda_d >= 0 per unit of the row sum_j (m_j / M_d) x_jd <= 1 + LENIENT,

        Lag(x) = cost(x) + sum_d lambda_d (sum_j m_j x_jd / M_d - 1 - LENIENT)  <=  cost(x)

    for every x that fits, and min over ALL chains of Lag is a chain DP (Viterbi): each
    module's cost w_j / s_d + lambda_d m_j / M_d, each message's cost c_jlde. With the forward
    values F_j(d) (best priced prefix ending with module j on d) and the backward ones
    H_j(d) (best priced suffix after it), F_j(d) + H_j(d) - sum_d lambda_d (1 + LENIENT)
    is a lower bound on every placement with x_jd = 1; if it exceeds U (1 in the scaled
    costs), x_jd = 0 in every placement better than U. The same for a message: F_j(d) +
    c_j,j+1,de + (module j+1 on e) + H_j+1(e). The best prices are the memory rows' duals
    in the LP relaxation (for a chain without memory rows the LP is already integral, so
    the LP value and the best Lagrangian bound coincide); lambda = 0, the bound without
    memory, is tried too. HiGHS then searches a smaller tree: it fixes variables by its own
    LP reduced costs, but those are first-order, while F + H is the exact priced chain.
    `keep_below` < 1 keeps only what lies that fraction of the way from the LP bound to U (the
    core of `_core_incumbent`); `seconds` bounds the LP. Returns the new upper bounds, how
    many variables were fixed, and the LP bound (scaled: 1 = U)."""
    k, n = problem.k, problem.n
    starts = [j for j, _, _ in problem.edges]        # message q goes from module starts[q] to the next
    ny = len(starts) * n * n
    lo, hi = np.asarray(lo), np.asarray(hi)
    eq = lo == hi  # rows: k assignments, n memory rows, memory cuts (<=), then the y-x links (=)
    lp = linprog(c, A_ub=A[~eq], b_ub=hi[~eq], A_eq=A[eq], b_eq=hi[eq],
                 bounds=np.stack([np.zeros_like(ub), ub], axis=1), method="highs",
                 options={} if seconds is None else {"time_limit": max(seconds, 1e-3)})
    if lp.status != 0:  # no prices (out of time, or a failure HiGHS's own solve will report): fix nothing
        return ub, 0, 0.0
    if keep_below < 1.0:  # a fraction of the way from the LP bound to U
        keep_below = lp.fun + keep_below * (1.0 - lp.fun)
    comp = np.where(ub[:nx] > 0, c[:nx], np.inf).reshape(k, n)                 # w_j / s_d / U
    msg = np.zeros((k - 1, n, n))                                             # no message: free
    msg[starts] = np.where(ub[nx:nx + ny] > 0, c[nx:nx + ny], np.inf).reshape(-1, n, n)
    share = problem.m[:, None] / problem.M[None, :]                           # m_j / M_d
    keep_x, keep_y = np.ones((k, n), bool), np.ones((k - 1, n, n), bool)
    for price in (np.maximum(-lp.ineqlin.marginals[:n], 0.0), np.zeros(n)):
        node = comp + share * price                 # priced cost of module j on device d
        F, H = np.empty((k, n)), np.zeros((k, n))
        F[0] = node[0]
        for j in range(1, k):
            F[j] = np.min(F[j - 1][:, None] + msg[j - 1], axis=0) + node[j]
        for j in range(k - 2, -1, -1):
            H[j] = np.min(msg[j] + (node[j + 1] + H[j + 1])[None, :], axis=1)
        # A hair above U (= 1): rounding can never fix a variable of the incumbent itself.
        limit = keep_below + 1e-6 + price.sum() * (1.0 + LENIENT)
        keep_x &= F + H <= limit
        keep_y &= F[:-1, :, None] + msg + (node[1:] + H[1:])[:, None, :] <= limit
    new = ub.copy()
    new[:nx] *= keep_x.ravel()
    new[nx:nx + ny] *= keep_y[starts].ravel()
    return new, int((ub > 0).sum() - (new > 0).sum()), float(lp.fun)
