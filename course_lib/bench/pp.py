"""``./course bench pp``: every pipeline schedule on real ranks: measured and theoretical bubble,
peak activation memory per stage, and the cost model's predicted step time against the measured one. The cost model: each stage's
forward and backward timed alone on one micro-batch (CPU time, :func:`profile_stages`), one gloo
message per hop (ping-pong), replayed by the simulator.

How the bubble is measured, two ways:

* wall: each rank timestamps every action; busy = wall time inside its F, B and W; bubble = mean over
  ranks of 1 - busy / step time. With more ranks (or other users' processes) than cores, ranks that
  compute at the same time share a core, so an op lasts longer when its neighbours are busy too,
  which the formulas (constant op times) do not model;
* cpu: the same run replayed by the simulator with each op lasting the CPU time its thread really
  spent in it (which does not stretch when a core is shared) and each message the measured gloo
  latency: the bubble this run's real op costs give with one core per rank.
"""
from __future__ import annotations

import argparse
import os

import torch

from course_lib.alpha_beta import measure_point_to_point
from course_lib.configs import pipeline_config
from course_lib.launcher import launch
from course_lib.pipeline_parallel import split_balanced, split_uniform, stage_times
from course_lib.pipeline_schedules import bubble_formula, in_flight_formula, make_schedule, simulate
from course_lib.runs.pipeline_parallel import (build_model, cost_model, make_batches, measured_timeline, module_seconds,
                                               profile_stages, replay_cpu_costs, stage_cost_model, train_pipeline)
from course_lib.tables import format_table

SCHEDULES = ("gpipe", "1f1b", "interleaved", "zb-h1")


def run(p: int = 4, m: int = 8, v: int = 2, batch_size: int = 32, steps: int = 3) -> tuple[list[dict], list[str]]:
    cfg = pipeline_config(n_layer=p * v)
    mb = batch_size // m
    torch.set_num_threads(1)
    x, y = make_batches(cfg, batch_size, 1)[0]
    seconds = module_seconds(build_model(cfg), x, y, m)
    act = mb * cfg.block_size * cfg.n_embd * 4
    _, (msg,) = measure_point_to_point([act], repeats=20)
    rows, notes = [], []
    for name in SCHEDULES:
        sched = make_schedule(name, p, m, v)
        bounds = split_uniform(cfg.n_layer, sched.num_stages)
        out = launch(train_pipeline, p, config=cfg, schedule=name, m=m, v=v, steps=steps, warmup=1,
                     batch_size=batch_size, bounds=bounds, timeout=300, check_collectives=False)
        tl = measured_timeline(sched, [o["record"] for o in out])
        pred = simulate(sched, stage_cost_model(profile_stages(build_model(cfg), bounds, x, y, m), msg))
        theory = bubble_formula(name, p, m, v)
        mem = [o["record"].peak_saved_bytes / 2 ** 20 for o in out]
        cpu = replay_cpu_costs(sched, [o["record"] for o in out], msg)
        rows.append(dict(schedule=name, bubble_wall=100 * tl.bubble(), bubble_cpu=100 * cpu.bubble(),
                         bubble_theory=100 * theory,
                         bubble_model=100 * pred.bubble(),
                         inflight_s0=out[0]["record"].peak_in_flight,
                         inflight_formula=in_flight_formula(name, p, m) if name != "interleaved" else "-",
                         peak_act_MiB=" ".join(f"{x:.1f}" for x in mem),
                         step_pred_ms=1e3 * pred.makespan, step_cpu_ms=1e3 * cpu.makespan,
                         step_wall_ms=1e3 * tl.makespan,
                         err_vs_cpu=100 * (pred.makespan - cpu.makespan) / cpu.makespan,
                         err_vs_wall=100 * (pred.makespan - tl.makespan) / tl.makespan))
    # uniform against chain-DP split, 1F1B, on a 4096-token vocabulary (a head as costly as 2 blocks)
    big = pipeline_config(vocab_size=4096, n_layer=p * v)
    xb, yb = make_batches(big, batch_size, 1)[0]
    big_seconds = module_seconds(build_model(big), xb, yb, m)
    for label, bounds in (("uniform", split_uniform(big.n_layer, p)), ("chain-DP", split_balanced(big_seconds, p))):
        out = launch(train_pipeline, p, config=big, schedule="1f1b", m=m, steps=steps, warmup=1,
                     batch_size=batch_size, bounds=bounds, timeout=300, check_collectives=False)
        sched = make_schedule("1f1b", p, m)
        recs = [o["record"] for o in out]
        pred = simulate(sched, cost_model(big_seconds, bounds, msg))  # t_F : t_B = 1 : 2 of each module's total
        notes.append(f"vocab 4096, 1F1B, {label} split {bounds}: slowest stage "
                     f"{1e3 * max(stage_times(big_seconds, bounds)):.2f} ms (fwd+bwd CPU, per module); step predicted "
                     f"{1e3 * pred.makespan:.1f} ms, cpu replay {1e3 * replay_cpu_costs(sched, recs, msg).makespan:.1f} ms, "
                     f"measured wall {1e3 * measured_timeline(sched, recs).makespan:.1f} ms")
    notes.append(f"calibration: module fwd+bwd CPU ms {[round(1e3 * s, 2) for s in seconds]}; one {act} B "
                 f"activation message {1e6 * msg:.0f} us (gloo ping-pong)")
    notes.append(f"{p} ranks on {os.cpu_count()} cores: with more ranks than cores, concurrent ops share a "
                 "core and stretch, which the formulas (equal, constant op times) do not model")
    return rows, notes


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="./course bench pp", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--p", type=int, default=4, help="pipeline ranks (default 4)")
    ap.add_argument("--m", type=int, default=8, help="micro-batches (default 8)")
    ap.add_argument("--v", type=int, default=2, help="chunks per rank for interleaving (default 2)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps, the last is reported (default 3)")
    args = ap.parse_args(argv)
    rows, notes = run(args.p, args.m, args.v, steps=args.steps)
    print(f"pipeline schedules, p={args.p}, m={args.m}, v={args.v} (interleaved); bubble in % of the step")
    print(format_table(rows, {"bubble_wall": "{:.1f}", "bubble_cpu": "{:.1f}", "bubble_theory": "{:.1f}",
                              "bubble_model": "{:.1f}",
                              "step_pred_ms": "{:.1f}", "step_cpu_ms": "{:.1f}", "step_wall_ms": "{:.1f}",
                              "err_vs_cpu": "{:+.0f}%", "err_vs_wall": "{:+.0f}%"}))
    print("\n" + "\n".join(notes))


if __name__ == "__main__":
    main()
