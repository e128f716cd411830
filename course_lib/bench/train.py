"""The reference GPT's single-process training run: time to the target validation loss.

    ./course bench train
"""
from __future__ import annotations

from course_lib.train import bench_reference


def main(argv: list[str] | None = None) -> None:
    bench_reference()
