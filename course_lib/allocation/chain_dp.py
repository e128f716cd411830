"""Exact dynamic programming for pipeline stages: a layer chain cut into contiguous blocks,
the blocks placed on an ordered list of heterogeneous devices.

A contiguous partition onto devices in order is a non-decreasing assignment
x_0 <= x_1 <= ... <= x_{k-1}: device d takes layers [i, j) (possibly none). Let

    R(i, d) = best cost of layers [i, k) given that the block starting at layer i runs on d.

The block [i, j) on d costs stage(i, j, d, e) = (W_j - W_i) / s_d + comm_{j}(d, e), its
compute plus sending T_{j-1, j} bytes to the device e > d holding the next block
(comm = alpha_de + T/B_de, 0 if j = k). Then

    R(i, d) = min_{j > i, mem(i, j) <= M_d} { (W_k - W_i) / s_d                       if j = k
                                            { min_{e > d} stage(i,j,d,e) (+) R(j, e)   if j < k

with (+) = "+" for the latency of one input and (+) = "max" for the pipeline's time per
micro-batch (bottleneck), answer min_d R(0, d). Both are exact because + and max are
monotone: the best suffix stays best whatever came before (optimal substructure). Memory
is checked per block with prefix sums. O(k^2 n^2) time, O(k n^2) memory.

Chain-on-chain partitioning goes back to Bokhari 1988, "Partitioning problems in parallel,
pipelined, and distributed computing", IEEE Trans. Computers 37(1); PipeDream (Narayanan
et al., SOSP 2019) and Tarnawski et al., "Efficient algorithms for device placement of DNN
graph operators", NeurIPS 2020, use DPs of this shape for pipeline partitioning.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from .cost import MEMORY_RTOL, Objective, check_objective, cost, fits
from .problem import Problem, check_int, check_problem
from .solution import InfeasibleError, Solution, no_fit_message


def chain_dp(problem: Problem, objective: Objective, order: Sequence[int] | None = None) -> Solution:
    """Optimal contiguous partition of the layer chain onto the devices `order` (default
    0..n-1, in that order; a device may receive no layers). See the module docstring for the
    recurrence. Raises InfeasibleError if no contiguous partition fits in memory.
    """
    check_problem(problem, "chain_dp")
    check_objective(objective)
    if not problem.is_chain:
        raise ValueError("chain_dp needs a layer chain, but the problem has extra_traffic between "
                         "non-consecutive modules; use milp_assign for general traffic")
    if order is not None and (isinstance(order, (str, bytes)) or not hasattr(order, "__iter__")):
        raise ValueError(f"order must be a sequence of device indices, got {order!r}")
    order = (list(range(problem.n)) if order is None
             else [check_int(d, f"order[{i}]", 0, "list device indices") for i, d in enumerate(order)])
    if not order or len(set(order)) != len(order) or not all(0 <= d < problem.n for d in order):
        raise ValueError(f"order must list distinct device indices in 0..{problem.n - 1}, got {order}")
    t0 = time.perf_counter()
    k, n = problem.k, len(order)
    s, M = problem.s[order], problem.M[order]
    B, alpha = problem.B[np.ix_(order, order)], problem.alpha[np.ix_(order, order)]
    W = np.concatenate([[0.0], np.cumsum(problem.w)])  # W_j = w_0 + ... + w_{j-1}
    U = np.concatenate([[0.0], np.cumsum(problem.m)])  # memory prefix sums
    later = np.triu(np.ones((n, n), dtype=bool), 1)   # e > d: the next block is further on

    # comm[j, d, e]: sending the activations that cross the cut before layer j from d to e.
    comm = np.full((k + 1, n, n), np.inf)
    for j in range(1, k):
        b = problem.T[j - 1, j]
        comm[j][later] = (alpha + b / B)[later] if b > 0 else 0.0

    # Blocks that fit on the largest device end before j_hi[i]: U is non-decreasing, so a
    # binary search finds it (+1 absorbs rounding; `fits` below is the exact test). With
    # memory binding, blocks hold a few dozen layers, and the O(k^2) pairs (i, j) shrink to
    # O(k * longest block).
    reach = M.max() * (1 + MEMORY_RTOL)
    j_hi = np.minimum(np.searchsorted(U, U + reach, side="right") + 1, k)
    latency = objective == "latency"
    # Latency: min_e [C + comm_j(d, e) + R(j, e)] = C + G(j, d) with G(j, d) = min_e [comm_j(d, e)
    # + R(j, e)], which does not depend on where the block starts: one O(n^2) min per cut j
    # instead of one per (i, j). (For the max of the bottleneck this does not factor out.)
    G = np.full((k + 1, n), np.inf)
    G_e = np.full((k + 1, n), -1)
    R = np.full((k + 1, n), np.inf)
    next_j = np.zeros((k, n), dtype=int)
    next_e = np.full((k, n), -1)
    rows = np.arange(n)
    for i in range(k - 1, -1, -1):
        if latency and i + 1 < k:                           # R(i+1, .) is final now
            via = comm[i + 1] + R[i + 1][None, :]           # (d, e)
            G_e[i + 1] = via.argmin(axis=1)
            G[i + 1] = via[rows, G_e[i + 1]]
        js = np.arange(i + 1, j_hi[i] + 1)                  # block ends j = i+1..j_hi
        C = (W[js] - W[i])[None, :] / s[:, None]            # (n, J) compute of [i, j) on d
        ok = fits((U[js] - U[i])[None, :], M[:, None])      # (n, J) block fits on d
        jc = js[js < k]                                     # ends followed by another block
        value = np.empty_like(C)
        if latency:
            e_best = G_e[jc]                                                      # (Jc, d)
            value[:, :len(jc)] = C[:, :len(jc)] + G[jc].T
        else:
            tot = C[:, :len(jc)].T[:, :, None] + comm[jc]                                # (Jc, d, e)
            np.maximum(tot, R[jc][:, None, :], out=tot)
            value[:, :len(jc)] = tot.min(axis=2).T
        if len(jc) < len(js):
            value[:, -1] = C[:, -1]                         # j = k: last block, sends nothing
        value[~ok] = np.inf
        jb = value.argmin(axis=1)
        R[i] = value[rows, jb]
        next_j[i] = js[jb]
        if len(jc):
            jj = np.minimum(jb, len(jc) - 1)
            # The best next device only for the chosen block ends (an argmin over e per d).
            e_at = e_best[jj, rows] if latency else tot[jj, rows, :].argmin(axis=1)
            next_e[i] = np.where(js[jb] < k, e_at, -1)

    d = int(R[0].argmin())
    if not np.isfinite(R[0, d]):
        raise InfeasibleError(no_fit_message(problem, "contiguous"))
    x: list[int] = []
    i = 0
    while i < k:
        j = int(next_j[i, d])
        x.extend([order[d]] * (j - i))
        i, d = j, int(next_e[i, d])
    xt = tuple(x)
    return Solution(xt, cost(problem, xt, objective), objective, "chain_dp", True,
                    time.perf_counter() - t0, {"dp_value": float(R[0].min())})
