"""Evaluating an assignment x: memory feasibility, per-device loads, and the two objectives.

Both objectives are built from the same per-device load

    L_d(x) = C_d(x) + S_d(x)
    C_d(x) = sum_{j: x_j = d} w_j / s_d                                  (compute)
    S_d(x) = sum_{(j,l): T_jl > 0, x_j = d != x_l} (alpha_{d,x_l} + T_jl / B_{d,x_l})   (sends)

and differ only in how the loads combine:

    (a) latency of ONE input           = sum_d L_d   (modules run one after another)
    (b) steady-state time per micro-batch of a pipeline = max_d L_d   (bottleneck stage)

(a) is the time one input takes through a layer chain: module j+1 cannot start before
module j has finished and its activations have arrived, so nothing overlaps. (b) is the
period of a pipeline with many micro-batches in flight: every device works on a different
micro-batch at once, so the slowest device sets the pace. The seed's "total execution time"
T = max_i {...} is formula (b) (without alpha) labelled as if it were (a); see SEED_NOTES.md.

Model assumptions, stated once: a device computes and sends one after the other (no
compute/communication overlap; the sender is busy for the whole transfer), a device's
memory must hold all of its modules' m_j at once, and a message of T_jl bytes is sent once
per input whenever j and l sit on different devices.
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np

from .problem import MEMORY_RTOL, Problem, check_int, check_number, check_problem, fits  # noqa: F401 (re-exported)

Objective = Literal["latency", "bottleneck"]
OBJECTIVES: tuple[Objective, ...] = ("latency", "bottleneck")

def check_objective(objective: str) -> Objective:
    if not isinstance(objective, str) or objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}: 'latency' is "
                         "the time of one input, 'bottleneck' the pipeline time per micro-batch")
    return objective  # type: ignore[return-value]


def comm_time(problem: Problem, nbytes: float, d: int, e: int) -> float:
    """t = alpha_de + b / B_de for b > 0 bytes from device d to e != d; 0 if d == e or b == 0.

    The alpha-beta (latency-bandwidth) model of Hockney 1994, "The communication challenge
    for MPP", Parallel Computing 20(3). A zero-byte message is no message at all.
    """
    check_problem(problem, "comm_time")
    nbytes = check_number(nbytes, "comm_time: nbytes", "give the message size in bytes")
    if nbytes < 0:
        raise ValueError(f"comm_time: nbytes must be >= 0, got {nbytes!r}; a message cannot have "
                         "negative size")
    d = check_int(d, "comm_time: sender device d", 0)
    e = check_int(e, "comm_time: receiver device e", 0)
    if d >= problem.n or e >= problem.n:
        raise ValueError(f"comm_time: devices ({d}, {e}) are not both in 0..{problem.n - 1}")
    if d == e or nbytes == 0:
        return 0.0
    return float(problem.alpha[d, e] + nbytes / problem.B[d, e])


def memory_use(problem: Problem, x: Sequence[int]) -> np.ndarray:
    """U_d = sum_{j: x_j = d} m_j [bytes], one entry per device."""
    check_problem(problem, "memory_use")
    x = problem.check_assignment(x)
    return np.bincount(x, weights=problem.m, minlength=problem.n)


def is_feasible(problem: Problem, x: Sequence[int]) -> bool:
    """Memory feasibility: U_d <= M_d for every device d."""
    check_problem(problem, "is_feasible")
    return bool(np.all(fits(memory_use(problem, x), problem.M)))


def compute_time(problem: Problem, x: Sequence[int]) -> np.ndarray:
    """C_d = sum_{j: x_j = d} w_j / s_d [s per input], one entry per device."""
    check_problem(problem, "compute_time")
    x = problem.check_assignment(x)
    return np.bincount(x, weights=problem.w, minlength=problem.n) / problem.s


def send_time(problem: Problem, x: Sequence[int]) -> np.ndarray:
    """S_d = sum over messages (j,l) leaving d of alpha_{d,x_l} + T_jl / B_{d,x_l} [s per input]."""
    check_problem(problem, "send_time")
    x = problem.check_assignment(x)
    S = np.zeros(problem.n)
    for j, l, b in problem.edges:
        S[x[j]] += comm_time(problem, b, x[j], x[l])
    return S


def device_load(problem: Problem, x: Sequence[int]) -> np.ndarray:
    """L_d = C_d + S_d [s per input]: how long device d is busy for one input."""
    check_problem(problem, "device_load")
    return compute_time(problem, x) + send_time(problem, x)


def latency(problem: Problem, x: Sequence[int]) -> float:
    """(a) LATENCY of one input: sum_j w_j / s_{x_j} + sum_{(j,l): x_j != x_l} (alpha + T_jl / B).

    Equal to sum_d L_d. Exact for a layer chain, where every module waits for its
    predecessor; for a DAG with parallel branches it is the time of the serial schedule
    (an upper bound on the critical path). Ignores memory; see `cost` for that.
    """
    check_problem(problem, "latency")
    return float(device_load(problem, x).sum())


def time_per_microbatch(problem: Problem, x: Sequence[int]) -> float:
    """(b) STEADY-STATE time per micro-batch of a pipeline: max_d L_d = max_d (C_d + S_d).

    With many micro-batches in flight every device is busy with a different one, so the
    busiest device (the bottleneck stage) sets the period (GPipe, Huang et al. NeurIPS 2019;
    PipeDream, Narayanan et al. SOSP 2019 use the same bottleneck criterion). Ignores memory.
    """
    check_problem(problem, "time_per_microbatch")
    return float(device_load(problem, x).max())


def cost(problem: Problem, x: Sequence[int], objective: Objective) -> float:
    """The objective value of x, or +inf if x breaks a memory limit (U_d > M_d)."""
    check_problem(problem, "cost")
    check_objective(objective)
    if not is_feasible(problem, x):
        return float("inf")
    return latency(problem, x) if objective == "latency" else time_per_microbatch(problem, x)


def stages(x: Sequence[int]) -> list[tuple[int, int, int]]:
    """Maximal runs of equal device: [(start, stop, device)], modules start..stop-1 on device."""
    if isinstance(x, (str, bytes)) or not hasattr(x, "__iter__"):
        raise ValueError(f"stages: x must be a sequence of device indices (one per module), got {x!r}")
    x = [check_int(d, f"stages: x[{j}] (the device of module {j})", 0) for j, d in enumerate(x)]
    runs: list[tuple[int, int, int]] = []
    for j, d in enumerate(x):
        if runs and runs[-1][2] == d:
            runs[-1] = (runs[-1][0], j + 1, d)
        else:
            runs.append((j, j + 1, int(d)))
    return runs


def pipeline_time(problem: Problem, x: Sequence[int], n_microbatches: int) -> float:
    """Forward time of N micro-batches through the pipeline x: sum_s t_s + (N - 1) max_s t_s.

    t_s = L_d of stage s. This is the makespan of N identical jobs in a flow shop with
    stage times t_s (the first job takes sum_s t_s = latency, each further one leaves one
    bottleneck period later), so it ties (a) and (b) together: N = 1 gives the latency and
    the time per micro-batch tends to max_s t_s as N grows. Needs a chain where each device
    holds one contiguous block of modules (a real pipeline); raises ValueError otherwise.
    """
    check_problem(problem, "pipeline_time")
    x = problem.check_assignment(x)
    n_microbatches = check_int(n_microbatches, "pipeline_time: n_microbatches", 1,
                               "give how many micro-batches go through, e.g. 8")
    if not problem.is_chain:
        raise ValueError("pipeline_time needs chain traffic (no extra_traffic)")
    runs = stages(x)
    if len({d for _, _, d in runs}) != len(runs):
        raise ValueError(f"assignment {x} revisits a device, so it is not a pipeline of stages; "
                         "use latency() / time_per_microbatch() for general assignments")
    t = device_load(problem, x)[[d for _, _, d in runs]]
    return float(t.sum() + (n_microbatches - 1) * t.max())


def flow_shop(stage_times: Sequence[float], n_microbatches: int) -> np.ndarray:
    """start[i, s] of micro-batch i on stage s in the flow-shop schedule behind :func:`pipeline_time`.

    Stage s (a device with its contiguous block of modules) takes t_s per micro-batch; micro-batch
    i starts stage s when stage s-1 has finished i and stage s has finished i-1:
    ``start(i, s) = max(end(i, s-1), end(i-1, s))``, ``end(i, s) = start(i, s) + t_s``.
    """
    n_microbatches = check_int(n_microbatches, "flow_shop: n_microbatches", 1, "e.g. 8")
    t = np.array([check_number(v, f"flow_shop: stage_times[{s}]", "seconds >= 0")
                  for s, v in enumerate(stage_times)])
    if np.any(t < 0):
        raise ValueError(f"flow_shop: stage times must be >= 0 seconds, got {t.tolist()}")
    start = np.zeros((n_microbatches, len(t)))
    end = np.zeros_like(start)
    for i in range(n_microbatches):
        for s in range(len(t)):
            start[i, s] = max(end[i, s - 1] if s else 0.0, end[i - 1, s] if i else 0.0)
            end[i, s] = start[i, s] + t[s]
    return start
