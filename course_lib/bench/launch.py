"""Launcher latency from a real notebook kernel: the first launch (starts the forkserver) and later ones.

    ./course bench launch [--kernels 3] [--repeats 10]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from course_lib import comm
from course_lib.launcher import launch
from course_lib.tables import format_table

KERNEL_CODE = """
import time, json, torch  # a course notebook has imported torch before its first launch
from course_lib.launcher import launch
def trivial(rank, world_size):
    return rank
out = {}
for n in %(sizes)r:
    times = []
    for i in range(%(repeats)d):
        t = time.perf_counter(); launch(trivial, n); times.append(time.perf_counter() - t)
    out[n] = times
print("BENCH" + json.dumps(out))
"""


def _in_kernel(code: str, timeout: float = 300) -> str:
    """Run ``code`` in a fresh IPython kernel (as a notebook would) and return its stdout."""
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3")
    try:
        chunks: list[str] = []

        def on_msg(msg: dict) -> None:
            if msg["msg_type"] == "stream":
                chunks.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                chunks.append("\n".join(msg["content"]["traceback"]))

        kc.execute_interactive(code, timeout=timeout, output_hook=on_msg)
        return "".join(chunks)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def bench_launch(kernels: int = 3, repeats: int = 10, sizes: tuple[int, ...] = (1, 2, 4)) -> list[dict]:
    """Median wall time of ``launch(trivial, n)`` from a notebook kernel: first launch, later ones.

    The first launch in a kernel starts the forkserver (one import of torch); later launches
    fork from it. Each of ``kernels`` fresh kernels gives one first-launch sample per size
    (the first size's includes the forkserver start, as a learner's first cell does).
    """
    firsts: dict[int, list[float]] = {n: [] for n in sizes}
    later: dict[int, list[float]] = {n: [] for n in sizes}
    for k in range(kernels):
        # Rotate which size goes first, so each size is measured as the kernel's first launch.
        order = sizes[k % len(sizes):] + sizes[:k % len(sizes)]
        text = _in_kernel(KERNEL_CODE % dict(sizes=list(order), repeats=repeats))
        line = next((ln for ln in text.splitlines() if ln.startswith("BENCH")), None)
        if line is None:
            raise RuntimeError(f"benchmark kernel failed:\n{text}")
        data = {int(n): v for n, v in json.loads(line[5:]).items()}
        firsts[order[0]].append(data[order[0]][0])
        for n in sizes:
            later[n].extend(data[n][1:])
    rows = []
    for n in sizes:
        rows.append(dict(ranks=n, first_s=statistics.median(firsts[n]) if firsts[n] else float("nan"),
                         first_samples=len(firsts[n]), later_median_s=statistics.median(later[n]),
                         later_p90_s=sorted(later[n])[int(0.9 * (len(later[n]) - 1))]))
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="./course bench launch", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernels", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=10)
    a = ap.parse_args(argv)
    t = time.time()
    rows = bench_launch(a.kernels, a.repeats)
    print(f"launch(trivial, n) from a notebook kernel; {a.kernels} fresh kernels x {a.repeats} launches")
    print(format_table(rows, {"first_s": "{:.3f}", "later_median_s": "{:.3f}", "later_p90_s": "{:.3f}"}))
    print("goals on 2 cores: later 4-rank launch < 0.3 s, first launch < 3 s")
    print("\nWhat checking collectives across ranks costs (launch(check_collectives=...)), median all_reduce:")
    print(format_table(check_overhead(), {"unchecked_ms": "{:.2f}", "checked_ms": "{:.2f}", "ratio": "{:.2f}"}))
    print(f"(benchmark took {time.time() - t:.0f} s)")


def _time_all_reduce(rank: int, world_size: int, numel: int, repeats: int) -> float:
    """Median seconds of one all_reduce of ``numel`` float32 on this rank (after a warm-up call)."""
    x = torch.ones(numel)
    times = []
    for _ in range(repeats + 1):
        comm.barrier()
        t = time.perf_counter()
        comm.all_reduce(x)
        times.append(time.perf_counter() - t)
    return statistics.median(times[1:])


def check_overhead(sizes: tuple[int, ...] = (2, 4), numels: tuple[int, ...] = (1, 1 << 24),
                   repeats: int = 20) -> list[dict]:
    """What ``check_collectives`` costs: one all_reduce with and without the check, per p and size."""
    rows = []
    for p in sizes:
        for n in numels:
            reps = repeats if n < (1 << 20) else max(3, repeats // 4)
            t = {check: statistics.median(launch(_time_all_reduce, p, numel=n, repeats=reps,
                                                 check_collectives=check, timeout=300))
                 for check in (False, True)}
            rows.append(dict(ranks=p, elements=n, unchecked_ms=1e3 * t[False], checked_ms=1e3 * t[True],
                             ratio=t[True] / t[False]))
    return rows
