"""Chapter 5 benchmark: the tensor-parallel GPT's step time, measured and predicted, per degree
(:mod:`course_lib.tp_step_time` holds the prediction, its calibration and the measured split).

    ./course bench tp [--degrees 1 2 4] [--steps 10] [--batch 16] [--launches 3] [--no-sp] [--no-pin]

Also one wide MLP, where splitting pays.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from course_lib.configs import mlp_config, reference_config
from course_lib.data import load_dataset
from course_lib.launcher import launch
from course_lib.model import MLP
from course_lib.runs.tensor_parallel import time_parallel_mlp
from course_lib.tables import format_table
from course_lib.tp_step_time import (BYTES_COLUMNS, MLP_BATCH, MLP_WIDTH, TIME_COLUMNS, Calibration, core_share,
                                     describe, run, table)


def mlp_rows(degrees: list[int], cal: Calibration, steps: int = 10, pin: bool = True) -> list[dict]:
    """A wider layer, where splitting pays: one MLP (width -> 4 width -> width), forward +
    backward, measured at each degree against ``T_1 / t * max(1, t / cores) + 2 A_t(4 B T C)``
    (T_1 measured here, single process, 1 thread, the fastest of ``steps``; ``A_t`` the
    all-reduce fit of ``cal``). The measured time is the median step of the slowest rank."""
    width, batch = MLP_WIDTH, MLP_BATCH
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        mlp = MLP(mlp_config(width))
        x = torch.randn(*batch, width)
        times = []
        for _ in range(steps + 2):
            xi = x.clone().requires_grad_()
            t0 = time.perf_counter()
            mlp(xi).square().mean().backward()
            times.append(time.perf_counter() - t0)
        t1 = min(times[2:])
    finally:
        torch.set_num_threads(before)
    nbytes = 4 * batch[0] * batch[1] * width
    rows = []
    for t in degrees:
        res = launch(time_parallel_mlp, t, width=width, batch=batch, steps=steps, pin=pin, timeout=600, threads=1,
                     check_collectives=False)
        measured = statistics.median(max(r["times"][i] for r in res) for i in range(steps))
        comm = 2 * cal.all_reduce[t].time(nbytes) if t > 1 else 0.0
        pred = t1 / t * core_share(t, cal.cores) + comm
        rows.append({"t": t, "load": os.getloadavg()[0], "fwd+bwd ms": 1e3 * measured, "predicted ms": 1e3 * pred,
                     "error %": 100 * (pred - measured) / measured, "comm ms (pred)": 1e3 * comm,
                     "kB all-reduced": 2 * nbytes / 1e3 if t > 1 else 0})
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="./course bench tp", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--degrees", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--launches", type=int, default=3, help="launches per measured row (median of their medians)")
    ap.add_argument("--no-sp", action="store_true", help="skip the sequence-parallel rows")
    ap.add_argument("--no-pin", action="store_true", help="leave the ranks' threads free to move between cores")
    a = ap.parse_args(argv)
    config = reference_config(load_dataset().vocab_size)
    rows, cal = run(config, a.degrees, a.batch, a.steps, (False,) if a.no_sp else (False, True), a.launches,
                    pin=not a.no_pin)
    print(f"reference GPT ({config.n_layer} layers, width {config.n_embd}, {config.n_head} heads), batch "
          f"{a.batch} x {config.block_size}, 1 thread per rank, {cal.cores} cores, ranks "
          f"{'free to move between cores' if a.no_pin else 'bound to core rank mod cores'}, load average "
          f"{os.getloadavg()[0]:.1f}")
    print(f"chapter 1: single-process fwd+bwd T_c = {1e3 * cal.total_compute_s:.1f} ms; "
          f"chapter 3 ping-pong: alpha = {cal.link.alpha * 1e6:.0f} us, 1/beta = {cal.link.bandwidth_gbs:.2f} GB/s")
    for t in a.degrees:
        s = cal.shard[t]
        line = f"t={t}: rank 0's shard alone C_t = {1e3 * s['compute_s']:.1f} ms, O_t = {1e3 * s['optimizer_s']:.1f} ms"
        if t in cal.all_reduce:
            sizes, secs = cal.all_reduce_points[t]
            pts = ", ".join(f"{n / 1e3:.0f} kB {1e3 * x:.2f} ms" for n, x in zip(sizes, secs))
            line += f"; gloo all-reduce on {t} ranks: {pts} -> A_t: {describe(cal.all_reduce[t])}"
        print(line)
    print("\nstep time (ms): measured and predicted, then each term measured | predicted")
    print(table(rows, TIME_COLUMNS))
    print("\nbytes and memory per rank:")
    print(table(rows, BYTES_COLUMNS))
    print(f"\none MLP {MLP_WIDTH} -> {4 * MLP_WIDTH} -> {MLP_WIDTH} on ({MLP_BATCH[0]}, {MLP_BATCH[1]}, {MLP_WIDTH}), "
          "forward + backward (where splitting pays):")
    print(format_table(mlp_rows(a.degrees, cal, steps=a.steps, pin=not a.no_pin),
                       {"load": "{:.1f}", "fwd+bwd ms": "{:.1f}", "predicted ms": "{:.1f}", "error %": "{:+.0f}",
                        "comm ms (pred)": "{:.1f}", "kB all-reduced": "{:.0f}"}))


if __name__ == "__main__":
    main()
