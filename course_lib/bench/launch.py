"""Launcher latency from a real notebook kernel: the first launch (starts the forkserver) and later ones.

    ./course bench launch [--kernels 3] [--repeats 10]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
from jupyter_client.manager import start_new_kernel

from course_lib import comm
from course_lib.launcher import launch
from course_lib.tables import format_table

KERNEL_CODE = """
import time, json, torch  # a course notebook has imported torch before its first launch
from course_lib.launcher import launch
def trivial(rank, world_size):
    return rank
out = []
for n in %(sizes)r:
    for i in range(%(repeats)d):
        t = time.perf_counter(); launch(trivial, n); out.append((n, time.perf_counter() - t))
print("BENCH" + json.dumps(out))
"""


def _in_kernel(code: str, timeout: float = 300) -> str:
    """Run ``code`` in a fresh IPython kernel (as a notebook would) and return its stdout."""
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
    """Wall time of ``launch(trivial, n)`` from fresh notebook kernels, by position in the kernel.

    The 1st launch in a kernel starts the forkserver (one import of torch); the 2nd is the one
    that would wait if the 1st had left slow work behind (the fully preloaded forkserver warms
    up in the background meanwhile); later launches fork from a warm server. Each position is
    reported on its own, with its slowest sample, so that one stalled launch cannot hide in a
    median. Each kernel runs ``repeats`` launches per size, rotating which size goes first.
    """
    by_position: dict[str, list[tuple[int, float]]] = {"1st": [], "2nd": [], "3rd": []}
    later: dict[int, list[float]] = {n: [] for n in sizes}
    for k in range(kernels):
        order = sizes[k % len(sizes):] + sizes[:k % len(sizes)]
        text = _in_kernel(KERNEL_CODE % dict(sizes=list(order), repeats=repeats))
        line = next((ln for ln in text.splitlines() if ln.startswith("BENCH")), None)
        if line is None:
            raise RuntimeError(f"benchmark kernel failed:\n{text}")
        for i, (n, t) in enumerate(json.loads(line[5:])):
            if i < 3:
                by_position[("1st", "2nd", "3rd")[i]].append((n, t))
            else:
                later[n].append(t)
    rows = []
    for position, samples in by_position.items():
        times = [t for _, t in samples]
        rows.append(dict(launch=position, ranks="/".join(str(n) for n in sorted({n for n, _ in samples})),
                         samples=len(times), median_s=statistics.median(times), max_s=max(times)))
    for n in sizes:
        rows.append(dict(launch="later", ranks=str(n), samples=len(later[n]), median_s=statistics.median(later[n]),
                         max_s=max(later[n])))
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="./course bench launch", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernels", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--skip-launch", action="store_true", help="only measure what the checks cost")
    a = ap.parse_args(argv)
    t = time.time()
    print(f"machine load (1, 5, 15 min): {', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    if not a.skip_launch:
        rows = bench_launch(a.kernels, a.repeats)
        print(f"launch(trivial, n) from a notebook kernel; {a.kernels} fresh kernels x {a.repeats} launches per size")
        print(format_table(rows, {"median_s": "{:.3f}", "max_s": "{:.3f}"}))
        print("goals on 2 quiet cores: 1st launch < 3 s, 2nd < 1 s, later 4-rank launches < 0.3 s")
    print("\nWhat check_collectives costs (launch(check_collectives=...)), median time of one call:")
    print(format_table(check_overhead(), {"unchecked_ms": "{:.2f}", "checked_ms": "{:.2f}", "ratio": "{:.2f}"}))
    print(f"(benchmark took {time.time() - t:.0f} s)")


def _all_reduce_once(rank: int, x: torch.Tensor) -> None:
    comm.all_reduce(x)


def _ping_pong_halved(rank: int, x: torch.Tensor) -> None:
    """Rank 0 sends to rank 1, which sends back; the caller halves the time."""
    if rank == 0:
        comm.send(x, 1)
        comm.recv(x, 1)
    elif rank == 1:
        comm.recv(x, 0)
        comm.send(x, 0)


def _timed(rank: int, world_size: int, numel: int, repeats: int, op: str) -> float:
    """Median seconds of one ``op`` on ``numel`` float32 on this rank (after a warm-up call):
    ``"all_reduce"``, or ``"send/recv"`` (a blocking round trip between ranks 0 and 1, halved)."""
    x = torch.ones(numel)
    call, share = {"all_reduce": (_all_reduce_once, 1), "send/recv": (_ping_pong_halved, 2)}[op]
    times = []
    for _ in range(repeats + 1):
        comm.barrier()
        t = time.perf_counter()
        call(rank, x)
        times.append((time.perf_counter() - t) / share)
    return statistics.median(times[1:])


def check_overhead(sizes: tuple[int, ...] = (2, 4), numels: tuple[int, ...] = (1, 1 << 24),
                   repeats: int = 20) -> list[dict]:
    """What ``check_collectives`` costs: one all_reduce, and one message (send/recv with its header),
    with and without the check, per number of ranks and size."""
    rows = []
    cases = [("all_reduce", p, n) for p in sizes for n in numels] + [("send/recv", 2, 1)]
    for op, p, n in cases:
        reps = repeats if n < (1 << 20) else max(3, repeats // 4)
        t = {check: statistics.median(launch(_timed, p, numel=n, repeats=reps, op=op, check_collectives=check,
                                             timeout=300)[:2])
             for check in (False, True)}
        rows.append(dict(op=op, ranks=p, elements=n, unchecked_ms=1e3 * t[False], checked_ms=1e3 * t[True],
                         ratio=t[True] / t[False]))
    return rows
