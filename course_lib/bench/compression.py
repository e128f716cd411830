"""``./course bench compression``: every chapter-7 method on the reference GPT with 4 ranks.

Prints, per method: bytes handed to collectives per rank and step (from ``comm``'s counters),
the compression ratio measured and by formula, the final training loss (mean of the last 10
steps' global-batch loss) and its gap to fp32 at equal steps, and the modelled time to reach
fp32's final loss + 5% on each cluster of ``course_lib.compression.CLUSTERS``. Then the goals:
Top-K 1% with error feedback and PowerSGD rank 4 within 5% of fp32's loss with at most 1/25 of
its bytes.
"""
from __future__ import annotations

import argparse
import time

import torch

from course_lib import compression as C
from course_lib.allocation.calibrate import profile_gpt
from course_lib.configs import reference_config
from course_lib.data import load_dataset
from course_lib.launcher import launch
from course_lib.model import GPT
from course_lib.runs.compression import METHODS, make_compressor, mean_losses, train_compressed
from course_lib.tables import format_table

# (label, method, extra arguments of train_compressed)
RUNS = [(m, m, {}) for m in METHODS] + [("powersgd r=4 per tensor", "powersgd r=4", {"per_tensor": True})]


def _all_runs(rank: int, world_size: int, config, steps: int, batch_size: int, runs: list, **common) -> dict:
    return {label: train_compressed(rank, world_size, config, steps, batch_size, method=m, eval_iters=0, **kw, **common)
            for label, m, kw in runs}


def _smooth(loss: list[float], w: int = 10) -> list[float]:
    return [sum(loss[max(0, i - w + 1):i + 1]) / len(loss[max(0, i - w + 1):i + 1]) for i in range(len(loss))]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="./course bench compression", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--ranks", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--methods", default="", help="comma-separated labels (default: all)")
    ap.add_argument("--optimizer", default="adamw", choices=["adamw", "sgd"])
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--momentum", type=float, default=0.0, help="heavy-ball momentum of sgd")
    args = ap.parse_args(argv)
    runs = [r for r in RUNS if not args.methods or r[0] in args.methods.split(",")]
    if not runs:
        raise SystemExit(f"no such method; choose from {[r[0] for r in RUNS]}")
    if runs[0][0] != "fp32":
        runs = [RUNS[0]] + runs  # the baseline every row is compared with
    torch.set_num_threads(1)
    cfg = reference_config(load_dataset().vocab_size)
    torch.manual_seed(0)
    model = GPT(cfg)
    n = sum(p.numel() for p in model.parameters())
    per_rank = args.batch_size // args.ranks
    flop = per_rank * sum(m.flop for m in profile_gpt(model, batch_size=1, repeats=1))  # chapter 1's count
    print(f"reference GPT ({n:,} parameters), {args.ranks} ranks, global batch {args.batch_size}, "
          f"{args.steps} steps, {args.optimizer} lr {args.lr:g}"
          + (f" momentum {args.momentum:g}" if args.optimizer == "sgd" else "")
          + f"; {flop / 1e6:.0f} MFLOP per rank and step")
    t0 = time.perf_counter()
    out = launch(_all_runs, args.ranks, config=cfg, steps=args.steps, batch_size=args.batch_size, runs=runs,
                 timeout=3600, optimizer=args.optimizer, lr=args.lr, momentum=args.momentum, check_collectives=False)
    print(f"trained {len(runs)} methods in {time.perf_counter() - t0:.0f} s")
    base = _smooth(mean_losses([r["fp32"] for r in out]))[-1]
    target = 1.05 * base
    rows, goals = [], []
    for label, method, kw in runs:
        res = [r[label] for r in out]
        loss = _smooth(mean_losses(res))
        comp = make_compressor(method)
        shapes = [tuple(p.shape) for p in model.parameters()] if kw.get("per_tensor") else [(n,)]
        formula = sum(comp.payload_bytes(s) for s in shapes)
        measured = res[0]["bytes_per_step"]
        step_hit = next((i + 1 for i, v in enumerate(loss) if v <= target), None)
        row = [label, measured, measured / (4 * n), formula / (4 * n), loss[-1], 100 * (loss[-1] / base - 1)]
        for cl in C.CLUSTERS:
            t = C.predict_step_seconds(comp, shapes, cl, flop)
            row.append(f"{1e3 * t * step_hit:.1f}" if step_hit else "never")
        rows.append(row)
        if label in ("top-k 1% +EF", "powersgd r=4", "powersgd r=4 per tensor"):
            ok = loss[-1] <= target and measured <= 4 * n / 25
            goals.append(f"{label}: loss {loss[-1]:.3f} vs fp32 {base:.3f} ({100 * (loss[-1] / base - 1):+.1f}%), "
                         f"bytes 1/{4 * n / measured:.0f} of fp32: goal (<= +5%, <= 1/25) {'met' if ok else 'NOT met'}")
    heads = ["method", "bytes/step", "ratio", "formula", "final loss", "vs fp32 %"] + \
            [f"ms to {target:.3f}: {cl.name.split(',')[0]}" for cl in C.CLUSTERS]
    print(format_table([dict(zip(heads, r)) for r in rows],
                       {"bytes/step": "{:.0f}", "ratio": "{:.4f}", "formula": "{:.4f}", "final loss": "{:.3f}",
                        "vs fp32 %": "{:+.1f}"}))
    print("clusters (stated, not measured): " + "; ".join(cl.name for cl in C.CLUSTERS))
    print("\n".join(goals))


if __name__ == "__main__":
    main()
