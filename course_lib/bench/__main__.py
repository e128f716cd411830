"""``./course bench NAME [options]``: run one benchmark module's ``main(argv)``."""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module with main(argv), what it measures). Listed in chapter order.
BENCHMARKS = {
    "launch": ("course_lib.bench.launch", "chapter 0: launcher latency from a notebook kernel"),
    "train": ("course_lib.bench.train", "chapter 0b: the reference GPT's training run, time to target loss"),
    "allocation": ("course_lib.bench.allocation", "chapter 1: solver time by size, greedy/RL gaps"),
    "calibrate": ("course_lib.bench.calibrate", "chapter 1: GPT layer profile, gloo alpha/beta"),
    "ps": ("course_lib.bench.ps", "chapter 2: bytes and time per step: PS, ring all-reduce, gossip"),
    "collectives": ("course_lib.bench.collectives", "chapter 3: course ring vs gloo, 16M float32, 2/4/8 ranks"),
    "ddp": ("course_lib.bench.ddp", "chapter 4: course DDP vs torch DDP step time, overlap gain, ZeRO memory"),
    "grading": ("course_lib.bench.grading", "instructors: minutes to grade a class of 30, every exercise notebook"),
    "tp": ("course_lib.bench.tp", "chapter 5: tensor-parallel GPT step time vs prediction, bytes, memory per rank"),
    "pp": ("course_lib.bench.pp", "chapter 6: pipeline schedules: measured vs theoretical bubble, memory, step time"),
    "compression": ("course_lib.bench.compression", "chapter 7: compressed all-reduce: bytes, ratio, loss, modelled time-to-loss"),
}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in BENCHMARKS:
        ap = argparse.ArgumentParser(prog="./course bench", description=__doc__)
        ap.add_argument("name", choices=list(BENCHMARKS),
                        help="; ".join(f"{k}: {v[1]}" for k, v in BENCHMARKS.items()))
        ap.parse_args(argv[:1])
        return
    importlib.import_module(BENCHMARKS[argv[0]][0]).main(argv[1:])


if __name__ == "__main__":
    main()
