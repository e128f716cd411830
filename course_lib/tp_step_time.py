"""Chapter 5: the tensor-parallel GPT's step time, predicted from earlier chapters' measurements,
and measured (the table of ``./course bench tp``; lecture 05, section 9).

Prediction (:func:`predict_step`), from measurements that never run the TP model as a group:

    step(t) = (C_t + O_t) max(1, t / cores) + (4 L + 2) A_t(4 B T C) + 3 A_t(4 B T)

* ``C_t``, ``O_t``: forward + backward, and the AdamW step, of rank 0's share of the degree-t
  model timed alone on one process (:func:`course_lib.runs.tensor_parallel.time_tp_shard`):
  chapter 1's calibration applied to the shard. Not ``T_c / t`` (printed beside it): a rank
  keeps the LayerNorms, residual adds, embeddings and loss whole, and every operator has a
  fixed cost that does not shrink with its matrix. When the t ranks outnumber the cores, each
  core runs ``t / cores`` of them in turn (:func:`core_share`).
* ``A_t(n) = a_t + n b_t``: one gloo all-reduce of n bytes on t ranks of this machine
  (chapter 3's :func:`course_lib.collectives.measure.time_algorithms`: each started by a
  barrier, the slowest rank's time), fitted with chapter 3's relative least squares
  (:func:`course_lib.alpha_beta.fit_alpha_beta`). Not chapter 3's ring formula with the
  ping-pong alpha (printed as ``ping-pong ring``): a ping-pong is one message between two
  idle processes, while each gloo all-reduce also hands the tensor from the caller to gloo's
  worker thread and its TCP thread and back, on every rank, and when t exceeds the cores
  those threads wait for a core another rank holds.
* The counts: per step ``4 L + 2`` collectives of the (B, T, C) activation (1 embedding,
  2 + 2 per block, 1 before the head) and 3 of B T floats in the loss
  (:func:`course_lib.tensor_parallel.comm_bytes_per_layer`). Under sequence parallelism the
  ``4 L + 2`` are all-gathers and reduce-scatters (gloo runs a reduce-scatter as a whole
  all-reduce, so each is priced as an all-reduce of the full activation) plus one all-reduce
  of the replicated parameters' gradients; the shard's compute is priced as plain TP's.

The prediction is for idle cores, so the calibration keeps out what other processes add: the
shard's times are CPU seconds of its thread, the all-reduce's the minimum over repetitions
(other processes can only add time; chapter 3's ping-pong does the same). Ranks are
bound to core ``rank mod cores`` (:func:`course_lib.runs.tensor_parallel.pin_to_core`) in every
measurement; ``--no-pin`` leaves their threads free, to see what binding saves.

Measured: a step is the slowest rank's time from a common barrier to the end of its AdamW step;
``step ms`` is the median over steps (median over ``--launches`` launches), ``best ms`` the
fastest step, which compares with the prediction on a busy machine. The split is the slowest
rank's time inside collectives (``comm``'s timeline; it includes waiting for the slowest peer),
in AdamW, and the rest (compute), medians; ``compute CPU`` is that rank's CPU seconds in forward
+ backward, to set beside ``C_t`` (the same computation alone): unlike wall times, CPU times
do not grow when other processes take the cores. ``load`` is the 1-minute load average: other
processes slow a group of ranks more than one process, since every collective waits for
whichever rank was descheduled.

Also printed: bytes per block (forward + backward, the mean over blocks) and per step counted by
``comm`` against :func:`course_lib.tensor_parallel.comm_bytes_by_op`, parameters and one
block's activations per rank, measured against the formulas, for plain TP and with sequence
parallelism (SP's counted bytes are inputs of all-gathers and reduce-scatters; see chapter 5
section 7).
"""
from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, field

import numpy as np
import torch

from course_lib import alpha_beta
from course_lib.allocation.calibrate import profile_gpt
from course_lib.collectives.measure import time_algorithms
from course_lib.launcher import launch
from course_lib.model import GPT, GPTConfig
from course_lib.runs.tensor_parallel import measure_comm_per_stage, pinned, time_tp_shard, time_tp_step
from course_lib.tables import format_table
from course_lib.tensor_parallel import comm_bytes_by_op, param_count_per_rank
from course_lib.tp_gpt import activation_bytes_per_block

MLP_WIDTH, MLP_BATCH = 256, (8, 64)  # the bench's wide MLP (its all-reduce size is calibrated too)
LINK_SIZES = [4 * 4 ** k for k in range(10)]  # 4 B .. 1 MiB: the activations here are 32 kB - 1 MB


@dataclass
class Calibration:
    """Everything the prediction uses, measured without running the TP model as a group."""

    cores: int
    total_compute_s: float  # chapter 1: profile_gpt's single-process fwd + bwd of all modules
    link: alpha_beta.AlphaBeta  # chapter 3: ping-pong fit (shown for contrast, not used)
    shard: dict[int, dict] = field(default_factory=dict)  # t -> time_tp_shard's result: compute_s, optimizer_s
    all_reduce: dict[int, alpha_beta.AlphaBeta] = field(default_factory=dict)  # t -> A_t fit
    all_reduce_points: dict[int, tuple[list[int], list[float]]] = field(default_factory=dict)
    step_at_1: dict | None = None  # time_tp_step at t = 1, run in the shards' process after them (one launch less)


def machine_cores() -> int:
    """The cores this process may run on (what the ranks share)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# ----------------------------------------------------------------------------- the formula
def collective_counts(config: GPTConfig, batch_size: int, sequence_parallel: bool = False) -> list[tuple[int, int]]:
    """``[(how many, bytes each), ...]``: the collectives one TP step calls (t > 1).

    ``4 L + 2`` of the activation ``4 B T C`` bytes, 3 of ``4 B T`` (max, sum of exponentials,
    target logit); with sequence parallelism one more all-reduce of the replicated parameters'
    gradients (:func:`course_lib.tensor_parallel.param_count_per_rank`'s ``replicated``)."""
    act = 4 * batch_size * config.block_size * config.n_embd
    out = [(4 * config.n_layer + 2, act), (3, 4 * batch_size * config.block_size)]
    if sequence_parallel:
        out.append((1, 4 * param_count_per_rank(config, 2, 0)["replicated"]))
    return out


def core_share(t: int, cores: int) -> float:
    """``max(1, t / cores)``: how many ranks each core runs in turn when t ranks share the cores."""
    if not isinstance(t, int) or t < 1:
        raise ValueError(f"t must be an int >= 1, got {t!r}")
    if not isinstance(cores, int) or cores < 1:
        raise ValueError(f"cores must be an int >= 1, got {cores!r}")
    return max(1.0, t / cores)


def predict_step(config: GPTConfig, batch_size: int, t: int, compute_s: float, optimizer_s: float,
                 all_reduce: alpha_beta.AlphaBeta | None, cores: int,
                 sequence_parallel: bool = False) -> dict[str, float]:
    """Predicted seconds of one TP training step at degree t, term by term:

        compute   = C_t max(1, t / cores)    (C_t: rank 0's shard, fwd + bwd, timed alone)
        optimizer = O_t max(1, t / cores)    (O_t: AdamW over rank 0's shards, timed alone)
        comm      = sum over the step's collectives of A_t(n) = a_t + n b_t
                  = (4 L + 2) A_t(4 B T C) + 3 A_t(4 B T)   (+ A_t(SP gradients) under SP)
        total     = compute + optimizer + comm

    ``all_reduce`` is ``A_t``, fitted to gloo all-reduces on t ranks (None at t = 1: no
    communication); ``cores``: the CPU cores the t ranks share.
    """
    share = core_share(t, cores)
    if compute_s < 0 or optimizer_s < 0:
        raise ValueError(f"compute_s and optimizer_s are measured seconds >= 0, got {compute_s}, {optimizer_s}")
    if t > 1 and all_reduce is None:
        raise ValueError(f"t={t} communicates: pass all_reduce, the AlphaBeta fitted to gloo all-reduces "
                         f"on {t} ranks (fit_all_reduce)")
    comm_s = 0.0
    if t > 1:
        comm_s = sum(k * all_reduce.time(n) for k, n in collective_counts(config, batch_size, sequence_parallel))
    compute, optimizer = compute_s * share, optimizer_s * share
    return dict(compute_s=compute, optimizer_s=optimizer, comm_s=comm_s, total_s=compute + optimizer + comm_s)


def fit_all_reduce(nbytes: list[int], seconds: list[float]) -> alpha_beta.AlphaBeta:
    """``A(n) = a + n b`` through measured all-reduce times: chapter 3's relative least squares
    (:func:`course_lib.alpha_beta.fit_alpha_beta`). Where the times do not grow with n (the
    collective is latency-bound at every measured size: b would come out negative) the best
    constant, ``b = 0`` and ``a = sum(1/T_i) / sum(1/T_i^2)``, the same relative error minimised."""
    try:
        return alpha_beta.fit_alpha_beta(nbytes, seconds)
    except ValueError:
        t = np.asarray(seconds, dtype=float)
        if t.shape != np.asarray(nbytes).shape or np.any(t <= 0):
            raise
        return alpha_beta.AlphaBeta(float(np.sum(1 / t) / np.sum(1 / t ** 2)), 0.0)


def describe(model: alpha_beta.AlphaBeta) -> str:
    """``a = .. us, 1/b = .. GB/s`` (``b = 0`` printed as latency-bound)."""
    bw = f"{model.bandwidth_gbs:.2f} GB/s" if model.beta > 0 else "inf (latency-bound)"
    return f"a = {model.alpha * 1e6:.0f} us, 1/b = {bw}"


# ----------------------------------------------------------------------------- measuring
def all_reduce_sizes(config: GPTConfig, batch_size: int) -> list[int]:
    """The sizes the step uses (token and activation bytes), with a spread around them."""
    act = 4 * batch_size * config.block_size * config.n_embd
    tok = 4 * batch_size * config.block_size
    mlp = 4 * MLP_BATCH[0] * MLP_BATCH[1] * MLP_WIDTH
    return sorted({tok, act // 4, act, mlp, 4 * act})


def _sweep(rank: int, world_size: int, sizes: list[int], repeats: int, link_sizes: list[int] | None,
           pin: bool) -> dict:
    """Worker: gloo all-reduces per size (chapter 3's ``time_algorithms``), then, if
    ``link_sizes``, chapter 3's ping-pong between ranks 0 and 1 (one launch for both)."""
    out = pinned(rank, world_size, time_algorithms, pin=pin, sizes=sizes, repeats=repeats, algorithms=["gloo"])
    ping = alpha_beta.ping_pong(rank, world_size, sizes=link_sizes, repeats=repeats) if link_sizes else None
    return dict(gloo=out["gloo"], ping_pong=ping)


def _shards(rank: int, world_size: int, config: GPTConfig, degrees: list[int], batch_size: int, steps: int,
            pin: bool, step_at_1: dict | None = None) -> dict:
    """Worker (one process): :func:`time_tp_shard` for every degree, in one launch; then, if
    ``step_at_1`` (time_tp_step's keyword arguments), the t = 1 step, which needs no other rank."""
    shards = {t: time_tp_shard(rank, world_size, config=config, t=t, batch_size=batch_size, steps=steps, pin=pin)
              for t in degrees}
    step = None
    if step_at_1:
        step = time_tp_step(rank, world_size, config=config, batch_size=batch_size, pin=pin, **step_at_1)
    return dict(shards=shards, step=step)


def measure_gloo_all_reduce(p: int, sizes: list[int], repeats: int = 10, pin: bool = True,
                            link_sizes: list[int] | None = None) -> tuple[list[float], list[float] | None]:
    """Seconds of one gloo all-reduce per size on p ranks: chapter 3's
    :func:`~course_lib.collectives.measure.time_algorithms` (each started by a barrier), the
    slowest rank's time, minimum over ``repeats``; ranks bound to cores as in the step (``pin``).
    With ``link_sizes``, also the ping-pong's one-way seconds per size (chapter 3's
    :func:`~course_lib.alpha_beta.ping_pong`) from the same launch."""
    res = launch(_sweep, p, sizes=sizes, repeats=repeats, link_sizes=link_sizes, pin=pin,
                 timeout=600, threads=1, check_collectives=False)
    secs = [min(max(r["gloo"][k][i] for r in res) for i in range(repeats)) for k in range(len(sizes))]
    return secs, res[0]["ping_pong"]


def calibrate(config: GPTConfig, batch_size: int, degrees: list[int], repeats: int = 10,
              pin: bool = True, step_at_1: dict | None = None) -> Calibration:
    """Chapter 1's ``T_c`` (profile_gpt), chapter 3's ping-pong link, and per degree t: rank 0's
    shard timed alone (``C_t``, ``O_t``) and gloo all-reduces on t ranks fitted to ``A_t``.
    ``step_at_1``: :func:`time_tp_step`'s keyword arguments for the t = 1 step, measured in the
    same process after the shards (``Calibration.step_at_1``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        total = sum(p.seconds for p in profile_gpt(GPT(config), batch_size=batch_size, repeats=5))
    finally:
        torch.set_num_threads(before)
    one = launch(_shards, 1, config=config, degrees=list(degrees), batch_size=batch_size, steps=repeats, pin=pin,
                 step_at_1=step_at_1, timeout=600, threads=1, check_collectives=False)[0]
    ar_sizes = all_reduce_sizes(config, batch_size)
    points, ping = {}, None
    for t in degrees:
        if t > 1:
            points[t], got = measure_gloo_all_reduce(t, ar_sizes, repeats, pin, LINK_SIZES if ping is None else None)
            ping = ping or got
    if ping is None:  # no degree above 1: the ping-pong alone
        ping = alpha_beta.measure_point_to_point(LINK_SIZES, repeats=repeats)[1]
    cal = Calibration(cores=machine_cores(), total_compute_s=total, link=alpha_beta.fit_alpha_beta(LINK_SIZES, ping),
                      shard=one["shards"], step_at_1=one["step"])
    for t, secs in points.items():
        cal.all_reduce_points[t] = (ar_sizes, secs)
        cal.all_reduce[t] = fit_all_reduce(ar_sizes, secs)
    return cal


def measure_step(config: GPTConfig, batch_size: int, t: int, steps: int, sequence_parallel: bool,
                 launches: int = 1, pin: bool = True, done: list | None = None) -> dict:
    """The step of :func:`time_tp_step`, each step being its slowest rank's time: median and
    minimum over steps, and its split into collectives, AdamW and the rest (that rank's,
    medians over steps); medians over ``launches`` launches (``done``: results of runs
    already made, counted among them)."""
    if not isinstance(launches, int) or launches < 1:
        raise ValueError(f"launches must be an int >= 1, got {launches!r}")
    done = list(done or [])
    per_launch = []
    for j in range(launches):
        res = done[j] if j < len(done) else launch(
            time_tp_step, t, config=config, batch_size=batch_size, steps=steps, sequence_parallel=sequence_parallel,
            pin=pin, timeout=600, threads=1, check_collectives=False)
        step, comm_s, opt_s, cpu_s = [], [], [], []
        for i in range(len(res[0]["times"])):
            r = max(res, key=lambda x: x["times"][i])
            step.append(r["times"][i])
            comm_s.append(r["comm_times"][i])
            opt_s.append(r["opt_times"][i])
            cpu_s.append(r["cpu_times"][i])
        per_launch.append(dict(step_s=statistics.median(step), best_s=min(step), comm_s=statistics.median(comm_s),
                               cpu_s=statistics.median(cpu_s),
                               optimizer_s=statistics.median(opt_s),
                               compute_s=statistics.median(s - c - o for s, c, o in zip(step, comm_s, opt_s))))
    out = {k: statistics.median(m[k] for m in per_launch) for k in per_launch[0]}
    out["res"] = res
    return out


def run(config: GPTConfig, degrees: list[int], batch_size: int, steps: int,
        sequence_parallel: tuple[bool, ...] = (False,), launches: int = 1,
        pin: bool = True) -> tuple[list[dict], Calibration]:
    """One row per degree (and per mode in ``sequence_parallel``): measured and predicted step
    time with their split, bytes counted against the formula, parameters and activations per
    rank; and the calibration the prediction came from. ``pin``: every rank, in the
    measurements and the step, bound to core ``rank mod cores``
    (:func:`course_lib.runs.tensor_parallel.pin_to_core`)."""
    cal = calibrate(config, batch_size, degrees, repeats=max(steps, 5), pin=pin,
                    step_at_1=dict(steps=steps) if 1 in degrees else None)
    rows = []
    for t in degrees:
        for sp in sequence_parallel if t > 1 else (False,):
            done = [[cal.step_at_1]] if t == 1 else None
            rows.append(_row(config, batch_size, t, sp, measure_step(config, batch_size, t, steps, sp, launches, pin,
                                                                     done), cal))
    return rows, cal


def _row(config: GPTConfig, batch_size: int, t: int, sp: bool, m: dict, cal: Calibration) -> dict:
    res = m["res"]
    shard = cal.shard[t]
    pred = predict_step(config, batch_size, t, shard["compute_s"], shard["optimizer_s"], cal.all_reduce.get(t),
                        cal.cores, sp)
    pingpong = sum(k * alpha_beta.predict("ring", n, t, cal.link, cal.cores)
                   for k, n in collective_counts(config, batch_size, sp)) if t > 1 else 0.0
    by_op = comm_bytes_by_op(config, batch_size, t, sequence_parallel=sp)
    stage = {k: sum(v.values()) for k, v in by_op.items()}
    step_formula = sum(v for k, v in stage.items() if not k.startswith("block")) + config.n_layer * (
        stage["block_fwd"] + stage["block_bwd"])
    counted = launch(measure_comm_per_stage, t, config=config, batch_size=batch_size, sequence_parallel=sp,
                     check_collectives=False)[0]["counted"] if t > 1 else {}
    block_counted = sum(sum(counted.get(f"block{i}_{d}", {}).values())
                        for i in range(config.n_layer) for d in ("fwd", "bwd")) / config.n_layer
    return {
        "t": t,
        "mode": "TP+SP" if sp else "TP",
        "load": os.getloadavg()[0],
        "step ms": 1e3 * m["step_s"],
        "best ms": 1e3 * m["best_s"],
        "predicted ms": 1e3 * pred["total_s"],
        "error %": 100 * (pred["total_s"] - m["step_s"]) / m["step_s"],
        "error best %": 100 * (pred["total_s"] - m["best_s"]) / m["best_s"],
        "compute ms": 1e3 * m["compute_s"],
        "compute pred": 1e3 * pred["compute_s"],
        "compute CPU ms": 1e3 * m["cpu_s"],
        "C_t ms": 1e3 * shard["compute_s"],
        "T_c/t ms": 1e3 * cal.total_compute_s / t,
        "AdamW ms": 1e3 * m["optimizer_s"],
        "AdamW pred": 1e3 * pred["optimizer_s"],
        "comm ms": 1e3 * m["comm_s"],
        "comm ms (pred)": 1e3 * pred["comm_s"],
        "ping-pong ring ms": 1e3 * pingpong,
        "kB/block counted": block_counted / 1e3,
        "kB/block formula": (stage["block_fwd"] + stage["block_bwd"]) / 1e3,
        "kB/step counted": res[0]["step_bytes"] / 1e3,
        "kB/step formula": step_formula / 1e3,
        "params/rank": res[0]["params"],
        "params formula": param_count_per_rank(config, t, 0)["total"],
        "act kB/block": res[0]["act_bytes_per_block"] / 1e3,
        "act formula": activation_bytes_per_block(config, batch_size, config.block_size, t, sp) / 1e3,
    }


TIME_COLUMNS = ("t", "mode", "load", "step ms", "best ms", "predicted ms", "error %", "error best %", "compute ms",
                "compute pred", "compute CPU ms", "C_t ms", "T_c/t ms", "AdamW ms", "AdamW pred", "comm ms",
                "comm ms (pred)", "ping-pong ring ms")
BYTES_COLUMNS = ("t", "mode", "kB/block counted", "kB/block formula", "kB/step counted", "kB/step formula", "params/rank",
                 "params formula", "act kB/block", "act formula")
FORMATS = {"load": "{:.1f}", "step ms": "{:.1f}", "best ms": "{:.1f}", "predicted ms": "{:.1f}", "error %": "{:+.0f}",
           "error best %": "{:+.0f}", "compute ms": "{:.1f}", "compute pred": "{:.1f}",
           "compute CPU ms": "{:.1f}", "C_t ms": "{:.1f}", "T_c/t ms": "{:.1f}",
           "AdamW ms": "{:.1f}", "AdamW pred": "{:.1f}", "comm ms": "{:.1f}", "comm ms (pred)": "{:.1f}",
           "ping-pong ring ms": "{:.1f}", "kB/block counted": "{:.0f}", "kB/block formula": "{:.0f}", "kB/step counted": "{:.0f}",
           "kB/step formula": "{:.0f}", "act kB/block": "{:.0f}", "act formula": "{:.0f}"}


def table(rows: list[dict], columns: tuple[str, ...]) -> str:
    """``rows`` printed with the chosen columns."""
    return format_table([{k: r[k] for k in columns} for r in rows], FORMATS)
