"""Chapter 5 benchmark: the tensor-parallel GPT's step time, measured and predicted, per degree.

    ./course bench tp [--degrees 1 2 4] [--steps 10] [--batch 16]

Prediction (no fitting to the TP runs themselves):

* compute: chapter 1's calibration (:func:`course_lib.allocation.calibrate.profile_gpt`)
  gives the single-process forward + backward time ``T_c`` of every module; at degree t each
  rank does ``1/t`` of it, but t processes share the machine's cores, so
  ``T_c / t * max(1, t / cores)``; plus the AdamW step on one rank's shards, timed here;
* communication: per step ``4 L + 2`` all-reduces of the (B, T, C) activation and 3 of B T
  floats (:func:`course_lib.tensor_parallel.comm_bytes_per_layer`), each priced by chapter
  3's ring formula with the alpha and beta fitted by ping-pong on this machine
  (:func:`course_lib.alpha_beta.predict`, ``cores`` given).

Also printed: bytes per block (forward + backward) from the counters against the formula,
parameters and one block's activations per rank, measured against the formulas, for plain
TP and with sequence parallelism (SP's counted bytes are inputs of all-gathers and
reduce-scatters: same ring traffic, different count; see chapter 5 section 7). ``load`` is
the machine's 1-minute load average after each run: the prediction assumes idle cores.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from course_lib import alpha_beta
from course_lib.allocation.calibrate import profile_gpt
from course_lib.configs import reference_config
from course_lib.data import load_dataset
from course_lib.launcher import launch
from course_lib.model import GPT, MLP, GPTConfig
from course_lib.runs.tensor_parallel import time_parallel_mlp, time_tp_step
from course_lib.tables import format_table
from course_lib.tensor_parallel import comm_bytes_per_layer, param_count_per_rank
from course_lib.tp_gpt import TensorParallelGPT, activation_bytes_per_block
from course_lib.train import make_optimizer

LINK_SIZES = [4 * 4 ** k for k in range(10)]  # 4 B .. 1 MiB: the activations here are 32 kB - 1 MB


def optimizer_seconds(config: GPTConfig, t: int, repeats: int = 20) -> float:
    """Median seconds of one AdamW step over rank 0's shards at degree t (in this process)."""
    tp = TensorParallelGPT(GPT(config), 0, t)
    for p in tp.parameters():
        p.grad = torch.randn_like(p)
    opt = make_optimizer(tp)
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def predict_step(config: GPTConfig, batch_size: int, t: int, compute_s: float, optimizer_s: float,
                 link: alpha_beta.AlphaBeta, cores: int) -> dict[str, float]:
    """Predicted seconds of one TP training step: compute share + AdamW + priced all-reduces."""
    L = config.n_layer
    act = 4 * batch_size * config.block_size * config.n_embd
    tok = 4 * batch_size * config.block_size
    comm_s = ((4 * L + 2) * alpha_beta.predict("ring", act, t, link, cores)
              + 3 * alpha_beta.predict("ring", tok, t, link, cores))
    compute = compute_s / t * max(1.0, t / cores)
    return dict(compute_s=compute, optimizer_s=optimizer_s, comm_s=comm_s, total_s=compute + optimizer_s + comm_s)


def calibrate(config: GPTConfig, batch_size: int) -> tuple[float, alpha_beta.AlphaBeta]:
    """``T_c`` (single-process fwd+bwd of all modules, 1 thread) and the fitted link."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        compute_s = sum(p.seconds for p in profile_gpt(GPT(config), batch_size=batch_size, repeats=5))
    finally:
        torch.set_num_threads(before)
    sizes, seconds = alpha_beta.measure_point_to_point(LINK_SIZES, repeats=10)
    return compute_s, alpha_beta.fit_alpha_beta(sizes, seconds)


def run(config: GPTConfig, degrees: list[int], batch_size: int, steps: int,
        sequence_parallel: tuple[bool, ...] = (False,)) -> tuple[list[dict], float, alpha_beta.AlphaBeta]:
    """One row per degree (and per mode in ``sequence_parallel``): measured and predicted step
    time, bytes counted against the formula, parameters and activations per rank."""
    cores = os.cpu_count() or 1
    compute_s, link = calibrate(config, batch_size)
    rows = []
    for t in degrees:
        for sp in sequence_parallel if t > 1 else (False,):
            res = launch(time_tp_step, t, config=config, batch_size=batch_size, steps=steps,
                         sequence_parallel=sp, timeout=600, threads=1, check_collectives=False)
            load = os.getloadavg()[0]
            measured = max(r["step_s"] for r in res)
            before = torch.get_num_threads()
            torch.set_num_threads(1)
            opt_s = optimizer_seconds(config, t)
            torch.set_num_threads(before)
            pred = predict_step(config, batch_size, t, compute_s, opt_s, link, cores)
            b = comm_bytes_per_layer(config, batch_size, t)
            step_formula = (b["embed_fwd"] + b["head_fwd"] + b["head_bwd"]
                            + config.n_layer * (b["block_fwd"] + b["block_bwd"]))
            rows.append({
                "t": t,
                "mode": "TP+SP" if sp else "TP",
                "load": load,
                "step ms": 1e3 * measured,
                "predicted ms": 1e3 * pred["total_s"],
                "error %": 100 * (pred["total_s"] - measured) / measured,
                "comm ms (pred)": 1e3 * pred["comm_s"],
                "kB/block fwd+bwd": (b["block_fwd"] + b["block_bwd"]) / 1e3,
                "kB/step counted": res[0]["step_bytes"] / 1e3,
                "kB/step formula": step_formula / 1e3 if not sp else "",
                "params/rank": res[0]["params"],
                "params formula": param_count_per_rank(config, t, 0)["total"],
                "act kB/block": res[0]["act_bytes_per_block"] / 1e3,
                "act formula": activation_bytes_per_block(config, batch_size, config.block_size, t, sp) / 1e3,
            })
    return rows, compute_s, link


def mlp_rows(degrees: list[int], width: int = 256, batch: tuple[int, int] = (8, 64), steps: int = 10) -> list[dict]:
    """A wider layer, where splitting pays: one MLP (width -> 4 width -> width), forward +
    backward, measured at each degree against ``T_1 / t * max(1, t / cores)`` plus its two
    all-reduces priced by the alpha-beta fit (T_1 measured here, single process, 1 thread)."""
    cores = os.cpu_count() or 1
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        mlp = MLP(GPTConfig(vocab_size=2, n_head=1, n_embd=width))
        x = torch.randn(*batch, width)
        times = []
        for _ in range(steps + 2):
            xi = x.clone().requires_grad_()
            t0 = time.perf_counter()
            mlp(xi).square().mean().backward()
            times.append(time.perf_counter() - t0)
        t1 = statistics.median(times[2:])
    finally:
        torch.set_num_threads(before)
    sizes, seconds = alpha_beta.measure_point_to_point(LINK_SIZES, repeats=10)
    link = alpha_beta.fit_alpha_beta(sizes, seconds)
    nbytes = 4 * batch[0] * batch[1] * width
    rows = []
    for t in degrees:
        measured = max(r["step_s"] for r in launch(time_parallel_mlp, t, width=width, batch=batch, steps=steps,
                                                    timeout=600, threads=1, check_collectives=False))
        pred = t1 / t * max(1.0, t / cores) + 2 * alpha_beta.predict("ring", nbytes, t, link, cores)
        rows.append({"t": t, "load": os.getloadavg()[0], "fwd+bwd ms": 1e3 * measured, "predicted ms": 1e3 * pred,
                     "error %": 100 * (pred - measured) / measured, "kB all-reduced": 2 * nbytes / 1e3 if t > 1 else 0})
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="./course bench tp", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--degrees", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--no-sp", action="store_true", help="skip the sequence-parallel rows")
    a = ap.parse_args(argv)
    config = reference_config(load_dataset().vocab_size)
    rows, compute_s, link = run(config, a.degrees, a.batch, a.steps, (False,) if a.no_sp else (False, True))
    print(f"reference GPT ({config.n_layer} layers, width {config.n_embd}, {config.n_head} heads), batch "
          f"{a.batch} x {config.block_size}, 1 thread per rank, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}")
    print(f"calibration: single-process fwd+bwd {1e3 * compute_s:.1f} ms; link {link}")
    table = format_table(rows, {"load": "{:.1f}", "step ms": "{:.1f}", "predicted ms": "{:.1f}", "error %": "{:+.0f}",
                              "comm ms (pred)": "{:.1f}", "kB/block fwd+bwd": "{:.0f}", "kB/step counted": "{:.0f}",
                              "kB/step formula": "{:.0f}", "act kB/block": "{:.0f}", "act formula": "{:.0f}"})
    print(table)
    print("\none MLP 256 -> 1024 -> 256 on (8, 64, 256), forward + backward (where splitting pays):")
    print(format_table(mlp_rows(a.degrees, steps=a.steps),
                       {"load": "{:.1f}", "fwd+bwd ms": "{:.1f}", "predicted ms": "{:.1f}", "error %": "{:+.0f}",
                        "kB all-reduced": "{:.0f}"}))


if __name__ == "__main__":
    main()
