"""Chapter 3: the course's ring and Rabenseifner collectives against gloo's built-in ones, in the same run.

    ./course bench collectives              # 16M float32 (64 MB), p = 2, 4, 8
    ./course bench collectives --quick      # 1M float32, p = 2, 4: a few seconds

For each p, three fresh launches each measure course and gloo alternately, repetition by
repetition (:func:`course_lib.collectives.measure.compare_with_gloo`). The table gives the median
over all repetitions of the slowest rank's time, the ratio course / gloo (the median of the
per-repetition ratios, with its quartiles; below 1: the course is faster) and the bytes rank 0
sent, against the formula.
"""
from __future__ import annotations

import argparse
import os

from course_lib.collectives.measure import compare_with_gloo
from course_lib.collectives.pipelined_ring import PIECE_BYTES, WINDOW
from course_lib.tables import format_table

TABLE_FORMATS = {"mb": "{:.1f}", "course_ms": "{:.1f}", "gloo_ms": "{:.1f}", "ratio": "{:.2f}", "q1": "{:.2f}",
                 "q3": "{:.2f}"}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="./course bench collectives", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1M float32 at p = 2, 4, 3 repetitions")
    ap.add_argument("--elements", type=int, nargs="+", default=None, help="float32 elements (default 16M)")
    ap.add_argument("--ranks", type=int, nargs="+", default=None, help="world sizes (default 2 4 8)")
    ap.add_argument("--repeats", type=int, default=None, help="timed repetitions per launch (default 7)")
    ap.add_argument("--launches", type=int, default=None, help="fresh launches per p, pooled (default 3)")
    ap.add_argument("--piece-bytes", type=int, default=PIECE_BYTES,
                    help="ring piece size in bytes (default: chunk / 2, clamped to 1..4 MiB)")
    ap.add_argument("--window", type=int, default=WINDOW, help="receives posted ahead (default 2)")
    a = ap.parse_args(argv)
    sizes = a.elements or ([1 << 20] if a.quick else [1 << 24])
    ranks = a.ranks or ([2, 4] if a.quick else [2, 4, 8])
    repeats = a.repeats or (3 if a.quick else 7)
    launches = a.launches or (1 if a.quick else 3)
    rows = compare_with_gloo(sizes, ranks, repeats, piece_bytes=a.piece_bytes, window=a.window, launches=launches)
    load = os.getloadavg()
    print(format_table(rows, TABLE_FORMATS))
    print(f"ratio = course / gloo: median (quartiles) over {launches} launches x {repeats} paired, alternating "
          f"repetitions; one thread per rank; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")
    print("gloo's reduce_scatter_tensor is an all-reduce plus a slice: it moves 2(p-1)/p n per rank, "
          "the ring (p-1)/p n")


if __name__ == "__main__":
    main()
