"""Tabular Q-learning, the seed's section 3.3 made concrete, to be compared with the optimum.

The MDP (the seed names only "an MDP" and "Q-learning or SARSA"; these are our choices):

    state   (j, x_{j-1})   the next module and where the previous one went (start: x_{-1} = n)
    action  d              a device with room left for module j (full devices are masked out)
    reward  latency:    -(w_j / s_d + cost of messages between j and modules already placed)
                        so that the return of an episode is exactly -latency(x)
            bottleneck: 0 until the last module, then -max_d L_d(x)
            stuck (no device has room): episode ends with -penalty, worse than any assignment
    update  Q(s, a) += lr (r + max_a' Q(s', a') - Q(s, a))          (Watkins & Dayan 1992,
            "Q-learning", Machine Learning 8; undiscounted, episodes have k steps)

Why it is only a heuristic here: the state forgets the memory already used and (for the
bottleneck) the loads so far, so the process is not Markov in (j, x_{j-1}) and the
convergence theorem does not apply. Only for the latency of a chain with memory to spare
is the MDP exact (a shortest path on states (j, x_{j-1})), and there the optimum is trivial
anyway: every module on the fastest device, since speed does not depend on the module. For device placement with RL at scale see Mirhoseini et al., "Device
placement optimization with reinforcement learning", ICML 2017.
Deterministic for a given `seed`.
"""

from __future__ import annotations

import time

import numpy as np

from .cost import Objective, check_objective, comm_time, cost, fits, time_per_microbatch
from .problem import Problem, check_fraction, check_int, check_problem
from .solution import Solution


def q_learning(problem: Problem, objective: Objective, *, episodes: int = 2000, lr: float = 0.1,
               epsilon_start: float = 1.0, epsilon_end: float = 0.02, seed: int = 0) -> Solution:
    """Learn Q with epsilon-greedy episodes (epsilon decays linearly), then place the modules by
    following argmax Q. Returns that greedy rollout, which may be infeasible (cost inf);
    `info["best_seen"]` is the best cost met while exploring, for comparison only.
    """
    check_problem(problem, "q_learning")
    check_objective(objective)
    episodes = check_int(episodes, "q_learning: episodes", 1, "give a whole number of episodes, e.g. 2000")
    lr = check_fraction(lr, "q_learning: lr (learning rate)", lo_open=True)
    epsilon_start = check_fraction(epsilon_start, "q_learning: epsilon_start (exploration probability)")
    epsilon_end = check_fraction(epsilon_end, "q_learning: epsilon_end (exploration probability)")
    seed = check_int(seed, "q_learning: seed", 0)
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    k, n = problem.k, problem.n
    w, s, m, M = problem.w, problem.s, problem.m, problem.M
    # Rewards in units of "all work on the fastest device" keep Q values O(1) for any instance.
    scale = float(w.sum() / s.max()) or 1.0
    links = [[(l, b, True) for j2, l, b in problem.edges if j2 == j and l < j]
             + [(j2, b, False) for j2, l, b in problem.edges if l == j and j2 < j] for j in range(k)]
    # Upper bound on any latency (all compute on the slowest device, every message on the
    # worst link): an episode that gets stuck must score worse than every real assignment.
    off = ~np.eye(n, dtype=bool)
    worst = w.sum() / s.min() + sum(float(np.max(problem.alpha[off] + b / problem.B[off]))
                                    if n > 1 else 0.0 for _, _, b in problem.edges)
    penalty = 2.0 * worst / scale + 1.0

    Q = np.zeros((k, n + 1, n))

    def step_cost(j: int, d: int, x: list[int]) -> float:
        """Latency added by putting module j on d, given modules < j already placed in x."""
        t = w[j] / s[d]
        for other, b, j_sends in links[j]:
            t += comm_time(problem, b, d, x[other]) if j_sends else comm_time(problem, b, x[other], d)
        return t / scale

    def room(used: np.ndarray, j: int) -> np.ndarray:
        return np.flatnonzero(fits(used + m[j], M))

    def episode(eps: float) -> tuple[list[int], bool]:
        x: list[int] = []
        used = np.zeros(n)
        prev = n
        for j in range(k):
            allowed = room(used, j)
            if allowed.size == 0:  # stuck; the previous update already bootstrapped -penalty
                return x, False
            if rng.random() < eps:
                d = int(rng.choice(allowed))
            else:
                d = int(allowed[Q[j, prev, allowed].argmax()])
            r = -step_cost(j, d, x) if objective == "latency" else 0.0
            x.append(d)
            used[d] += m[j]
            if j + 1 < k:
                nxt = room(used, j + 1)
                future = Q[j + 1, d, nxt].max() if nxt.size else -penalty
            else:  # terminal: the bottleneck objective is only known once x is complete
                future = 0.0 if objective == "latency" else -time_per_microbatch(problem, x) / scale
            Q[j, prev, d] += lr * (r + future - Q[j, prev, d])
            prev = d
        return x, True

    best_seen = np.inf
    for ep in range(episodes):
        frac = ep / max(episodes - 1, 1)
        x, ok = episode(epsilon_start + (epsilon_end - epsilon_start) * frac)
        if ok:
            best_seen = min(best_seen, cost(problem, x, objective))

    # Exploit: follow argmax Q (restricted to devices with room), no exploration.
    x: list[int] = []
    used = np.zeros(n)
    prev = n
    for j in range(k):
        allowed = room(used, j)
        if allowed.size == 0:
            return Solution(None, float("inf"), objective, "q_learning", False,
                            time.perf_counter() - t0, {"episodes": episodes, "best_seen": best_seen})
        d = int(allowed[Q[j, prev, allowed].argmax()])
        x.append(d)
        used[d] += m[j]
        prev = d
    xt = tuple(x)
    return Solution(xt, cost(problem, xt, objective), objective, "q_learning", False,
                    time.perf_counter() - t0, {"episodes": episodes, "best_seen": best_seen})
