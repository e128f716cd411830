"""Benchmarks that back the course's speed claims with a printed table.

    python -m course_lib.bench launch        # launcher latency from a real notebook kernel
    python -m course_lib.bench train         # the reference GPT's single-process training run
    python -m course_lib.bench allocation    # chapter 1 solvers: time by size, optimality gaps
    python -m course_lib.bench calibrate     # chapter 1 calibration: GPT layer times, gloo alpha/beta
    python -m course_lib.bench ps            # chapter 2: parameter server vs ring all-reduce vs gossip
    python -m course_lib.bench collectives   # chapter 3: ring all-reduce / reduce-scatter vs gloo
    python -m course_lib.bench ddp           # chapter 4: course DDP vs torch DDP, overlap, ZeRO memory

Each prints a table; the tests check correctness, these check speed.
"""
from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import time

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


def _table(rows: list[dict], fmt: dict[str, str]) -> str:
    heads = list(rows[0])
    cells = [[fmt.get(h, "{}").format(r[h]) for h in heads] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(heads)]
    line = lambda xs: "  ".join(x.rjust(w) for x, w in zip(xs, widths))  # noqa: E731
    return "\n".join([line(heads), line(["-" * w for w in widths])] + [line(c) for c in cells])


# Benchmarks that live next to the code they measure: `./course bench NAME [args]` runs
# NAME's module `main(argv)`. Each prints its own table; `--help` lists its options.
FORWARDED = {
    "allocation": ("course_lib.allocation.bench", "chapter 1: solver time by size, greedy/RL gaps"),
    "calibrate": ("course_lib.allocation.calibrate", "chapter 1: GPT layer profile, gloo alpha/beta"),
    "collectives": ("course_lib.collectives_bench", "chapter 3: course ring vs gloo, 16M float32, 2/4/8 ranks"),
    "ps": ("course_lib.parameter_server", "chapter 2: bytes and time per step: PS, ring all-reduce, gossip"),
    "ddp": ("course_lib.ddp_bench", "chapter 4: course DDP vs torch DDP step time, overlap gain, ZeRO memory"),
}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m course_lib.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    p = sub.add_parser("launch", help="launcher latency from a notebook kernel")
    p.add_argument("--kernels", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10)
    sub.add_parser("train", help="reference GPT training: time to the target loss")
    for name, (_, help_text) in FORWARDED.items():
        p = sub.add_parser(name, help=help_text, add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
    a = ap.parse_args(argv)
    if a.what == "launch":
        t = time.time()
        rows = bench_launch(a.kernels, a.repeats)
        print(f"launch(trivial, n) from a notebook kernel; {a.kernels} fresh kernels x {a.repeats} launches")
        print(_table(rows, {"first_s": "{:.3f}", "later_median_s": "{:.3f}", "later_p90_s": "{:.3f}"}))
        print("goals on 2 cores: later 4-rank launch < 0.3 s, first launch < 3 s"
              f"   (benchmark took {time.time() - t:.0f} s)")
    elif a.what == "train":
        from course_lib.train import bench_reference

        bench_reference()
    else:
        module = importlib.import_module(FORWARDED[a.what][0])
        module.main(a.rest)


if __name__ == "__main__":
    main(sys.argv[1:])
