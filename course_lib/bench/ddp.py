"""Chapter 4 benchmark: course DDP against torch DDP, the gain from overlap, and ZeRO memory/traffic.

    ./course bench ddp                 # both tables, p = 2 and 4
    ./course bench ddp --only ddp --sizes 2 --steps 10

Table 1: step time (forward + backward + gradient sync + AdamW) of the reference GPT (207k
parameters, global batch 32, 1 intra-op thread per rank), for course DDP and
``torch.nn.parallel.DistributedDataParallel`` with the same bucket cap, and for course DDP
without overlap. Configurations run interleaved, ``--rounds`` times, so a burst of load hits
all rows alike; a run's time is its median step (slowest rank); each row gives the best and
the median run.
Table 2: ZeRO stages 0-3: model-state bytes per rank measured from the tensors held after
backward, against the paper's formula scaled to fp32 AdamW, (4 + 4 + 8) Psi, and the
communication per step in units of Psi. The load average is printed: on a shared 2-core
machine the times are pessimistic and noisy, the ratios less so.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

from course_lib.configs import reference_config
from course_lib.data import load_dataset
from course_lib.launcher import launch
from course_lib.runs.data_parallel import train_data_parallel
from course_lib.runs.zero import train_zero
from course_lib.tables import format_table
from course_lib.train import DEFAULT_BATCH_SIZE
from course_lib.zero import formula_bytes

SMALL_CAP = 128 * 1024  # bytes: 7 buckets for the 207k-parameter model, so overlap has something to do
BIG_CAP = 25 * 2**20    # torch DDP's default: the whole model in one bucket


def step_times(p: int, impl: str, cap: int, overlap: bool, steps: int, warmup: int = 3) -> float:
    """Median step time in seconds over ``steps`` steps on ``p`` ranks (rank 0's clock)."""
    out = launch(train_data_parallel, p, config=reference_config(load_dataset().vocab_size), steps=steps,
                 batch_size=DEFAULT_BATCH_SIZE, impl=impl, bucket_cap_bytes=cap, overlap=overlap, warmup=warmup, threads=1, timeout=300,
                 check_collectives=False)
    return statistics.median(max(ts) for ts in zip(*(o["step_seconds"] for o in out)))


def bench_ddp(sizes=(2, 4), steps: int = 15, rounds: int = 5) -> list[dict]:
    """Rows of table 1. Each configuration runs ``rounds`` times, interleaved with the others;
    a run's time is its median step. ``best_ms`` is the fastest run (the least disturbed by
    other processes: on a shared machine load only ever adds time), ``median_ms`` the median
    run. Ratios: course / torch DDP with the same cap (goal <= 1.2), and overlap on / off."""
    variants = [("torch", BIG_CAP, True), ("course", BIG_CAP, True), ("torch", SMALL_CAP, True),
                ("course", SMALL_CAP, True), ("course", SMALL_CAP, False)]
    rows = []
    for p in sizes:
        samples: dict[tuple, list[float]] = {v: [] for v in variants}
        for _ in range(rounds):
            for v in variants:
                samples[v].append(step_times(p, *v, steps))
        best = {v: min(s) for v, s in samples.items()}
        med = {v: statistics.median(s) for v, s in samples.items()}
        for v in variants:
            impl, cap, overlap = v
            small = cap == SMALL_CAP
            rows.append(dict(p=p, impl=impl, bucket_cap=f"{cap / 2**20:g} MiB" if cap >= 2**20 else f"{cap // 1024} KiB",
                             overlap=overlap, best_ms=1e3 * best[v], median_ms=1e3 * med[v],
                             vs_torch_best=best[v] / best[("torch", cap, True)],
                             vs_torch_median=med[v] / med[("torch", cap, True)],
                             vs_no_overlap_best=best[v] / best[("course", SMALL_CAP, False)] if small else float("nan"),
                             vs_no_overlap_median=med[v] / med[("course", SMALL_CAP, False)] if small else float("nan")))
    return rows


def bench_zero(sizes=(2, 4), steps: int = 4) -> list[dict]:
    """Rows of table 2: measured bytes per rank vs the fp32 formula, and Psi per step."""
    rows = []
    cfg = reference_config(load_dataset().vocab_size)
    for p in sizes:
        for stage in range(4):
            out = launch(train_zero, p, config=cfg, stage=stage, steps=steps, batch_size=DEFAULT_BATCH_SIZE,
                         threads=1, timeout=300, check_collectives=False)
            r0 = out[0]
            want = formula_bytes(r0["psi"], p, stage)
            held = r0["held"]
            rows.append(dict(p=p, stage=stage, params_kB=held["params"] / 1e3, grads_kB=held["grads"] / 1e3,
                             optim_kB=held["optimizer"] / 1e3, total_kB=sum(held.values()) / 1e3,
                             formula_kB=sum(want.values()) / 1e3,
                             measured_over_formula=sum(held.values()) / sum(want.values()),
                             comm_psi=r0["volume_psi"], step_ms=1e3 * statistics.median(r0["step_seconds"][1:])))
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="./course bench ddp", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[2, 4], help="world sizes")
    ap.add_argument("--steps", type=int, default=15, help="timed steps per run (after 3 warm-up steps)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved repetitions of every configuration")
    ap.add_argument("--only", choices=["ddp", "zero"], help="run one table only")
    a = ap.parse_args(argv)
    if any(p < 1 for p in a.sizes) or a.steps < 1 or a.rounds < 1:
        ap.error("--sizes, --steps and --rounds must be positive")
    t0 = time.time()
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}  "
          f"({len(os.sched_getaffinity(0))} cores, 1 thread per rank)")
    if a.only in (None, "ddp"):
        print(f"\nTable 1: DDP step time, reference GPT, global batch {DEFAULT_BATCH_SIZE}, AdamW; "
              f"{a.rounds} interleaved runs x {a.steps} steps each")
        print(format_table(bench_ddp(tuple(a.sizes), a.steps, a.rounds)))
        print("goal: course / torch <= 1.2 at equal bucket cap; vs_no_overlap < 1 means overlap helped")
    if a.only in (None, "zero"):
        print("\nTable 2: ZeRO model-state memory per rank (rank 0, after backward of step 2) and traffic")
        print(format_table(bench_zero(tuple(a.sizes))))
        print("formula (fp32 AdamW): stage 0 16Psi, 1 8Psi+8Psi/p, 2 4Psi+12Psi/p, 3 16Psi/p bytes; "
              "traffic 2Psi (stages 0-2), 3Psi (stage 3)")
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; took {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
