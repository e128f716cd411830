"""Chapter 1's calibration on this machine: the reference GPT's per-module time and memory, and
gloo's point-to-point link (alpha, beta).

    ./course bench calibrate
"""
from __future__ import annotations

import argparse

import torch

from course_lib.allocation.calibrate import fit_alpha_beta, measure_link, profile_gpt
from course_lib.tables import format_table
from course_lib.train import build_reference


def main(argv: list[str] | None = None) -> None:
    """`./course bench calibrate`: print the reference GPT's per-module profile and the link."""
    argparse.ArgumentParser(prog="./course bench calibrate", description=main.__doc__).parse_args(argv)
    torch.set_num_threads(1)
    model, _ = build_reference(seed=0)
    prof = profile_gpt(model, batch_size=8, repeats=10)
    speed = sum(p.flop for p in prof) / sum(p.seconds for p in prof)
    print(f"reference GPT, batch 8 x {model.config.block_size} tokens, 1 thread; "
          f"effective speed {speed / 1e9:.2f} GFLOP/s")
    print(format_table([{"module": p.name, "fwd+bwd ms": 1e3 * p.seconds, "w/s ms": 1e3 * p.flop / speed,
                         "MFLOP": p.flop / 1e6, "param KiB": p.param_bytes / 1024, "activ KiB": p.act_bytes / 1024}
                        for p in prof],
                       {"fwd+bwd ms": "{:.3f}", "w/s ms": "{:.3f}", "MFLOP": "{:.1f}", "param KiB": "{:.1f}",
                        "activ KiB": "{:.1f}"}))
    sizes, seconds = measure_link(repeats=20)
    alpha, beta = fit_alpha_beta(sizes, seconds)
    print(f"\ngloo point-to-point between 2 ranks: alpha = {alpha * 1e6:.1f} us, "
          f"B = 1/beta = {1 / beta / 1e9:.2f} GB/s")
    print(format_table([{"bytes": int(b), "measured us": t * 1e6, "model us": (alpha + b * beta) * 1e6}
                        for b, t in zip(sizes, seconds)], {"measured us": "{:.1f}", "model us": "{:.1f}"}))
