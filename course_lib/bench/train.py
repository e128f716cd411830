"""Chapter 0b: the reference GPT's single-process training run, time to the target validation loss.

    ./course bench train
"""
from __future__ import annotations

import torch

from course_lib.train import (DEFAULT_STEPS, REFERENCE_TARGET_LOSS, REFERENCE_TIME_BUDGET_S, History,
                              build_reference, sample, train)


def bench_reference(progress: bool = True) -> History:
    """Train the reference model on 2 threads and report time to ``REFERENCE_TARGET_LOSS``,
    final val loss, and a sample . Returns the History."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the course's laptop budget, whatever this machine has
    try:
        model, data = build_reference(seed=0)
        print(f"model: {model.num_params():,} parameters, vocab {data.vocab_size}, "
              f"{len(data.train):,} train / {len(data.val):,} val characters, 2 threads")
        hist = train(model, data, progress=progress)
    finally:
        torch.set_num_threads(threads)
    t = hist.seconds_to(REFERENCE_TARGET_LOSS)
    ok = t is not None and t <= REFERENCE_TIME_BUDGET_S
    print(f"{DEFAULT_STEPS} steps in {hist.seconds:.1f} s, "
          f"final val loss {hist.final_val_loss:.3f}")
    print(f"val loss <= {REFERENCE_TARGET_LOSS} reached "
          + (f"after {t:.1f} s" if t is not None else "never")
          + f" (goal: within {REFERENCE_TIME_BUDGET_S:.0f} s: {'met' if ok else 'NOT met'})")
    print(sample(model, data.tokenizer))
    return hist


def main(argv: list[str] | None = None) -> None:
    bench_reference()
