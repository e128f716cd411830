"""Measuring the collectives on real ranks: every all-reduce algorithm by message size, and the
course's pipelined ring and Rabenseifner's all-reduce against gloo's built-in collectives in the
same launch.

:func:`measure_algorithms` gives chapter 3's measured curves (to set beside
:func:`course_lib.alpha_beta.predict`); :func:`compare_with_gloo` races the ring against gloo's
``all_reduce`` and ``reduce_scatter_tensor`` (which gloo in torch 2.13 implements as a full
all-reduce plus a local slice: twice the traffic). Each repetition runs course and gloo back to
back, alternating which goes first, so both see the same machine load; a repetition's time is
its slowest rank's.
"""
from __future__ import annotations

import statistics
import time
import warnings

import torch

from course_lib import comm
from course_lib.collectives import ALL_REDUCE
from course_lib.collectives.pipelined_ring import PIECE_BYTES, WINDOW, ring_all_reduce, ring_reduce_scatter
from course_lib.collectives.rabenseifner import rabenseifner_all_reduce, rabenseifner_bytes_sent
from course_lib.collectives.ring import ring_bytes_sent
from course_lib.launcher import launch


def _timed(fn) -> float:
    comm.barrier()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def ring_vs_gloo(rank: int, world_size: int, n: int, repeats: int, piece_bytes: int | None = PIECE_BYTES,
                      window: int = WINDOW) -> dict:
    """Worker: per-repetition times of course (ring, Rabenseifner) vs gloo all-reduce and reduce-scatter,
    and the bytes sent."""
    warnings.filterwarnings("ignore", category=FutureWarning)  # reduce_scatter_tensor's rename notice
    x = torch.randn(n, generator=torch.Generator().manual_seed(rank))
    chunk = n // world_size
    out = torch.empty(chunk)
    kw = dict(piece_bytes=piece_bytes, window=window)
    times: dict[str, list[float]] = {k: [] for k in ("ring_ar", "rab_ar", "gloo_ar", "ring_rs", "gloo_rs")}
    sent: dict[str, int] = {}
    for i in range(repeats + 1):  # repetition 0 warms up (first-touch pages, gloo buffers)
        a, b, c = x.clone(), x.clone(), x.clone()
        jobs = [("ring_ar", lambda: ring_all_reduce(a, **kw)), ("rab_ar", lambda: rabenseifner_all_reduce(c)),
                ("gloo_ar", lambda: comm.all_reduce(b))]
        for name, fn in (jobs if i % 2 else jobs[::-1]):
            comm.reset_stats()
            times[name].append(_timed(fn))
            if i == 0:
                sent[name] = comm.get_stats().sent_bytes
        if i == 0:
            for name, got in (("ring", a), ("Rabenseifner", c)):
                if not torch.allclose(got, b, rtol=1e-4, atol=1e-3 * world_size):
                    raise AssertionError(f"rank {rank}: {name} all-reduce differs from gloo's by "
                                         f"{(got - b).abs().max():.3g}")
        a = x.clone()
        comm.reset_stats()
        got: list[torch.Tensor] = []
        jobs = [("ring_rs", lambda: got.append(ring_reduce_scatter(a, **kw))),
                ("gloo_rs", lambda: comm.reduce_scatter_tensor(out, x))]
        for name, fn in (jobs if i % 2 else jobs[::-1]):
            times[name].append(_timed(fn))
        if i == 0:
            sent["ring_rs"] = comm.get_stats().sent_bytes
            if not torch.allclose(got[0], out, rtol=1e-4, atol=1e-3 * world_size):
                raise AssertionError(f"rank {rank}: ring reduce-scatter differs from gloo's")
    return {"times": {k: v[1:] for k, v in times.items()}, "sent": sent}


def compare_with_gloo(sizes: list[int], ranks: list[int], repeats: int, piece_bytes: int | None = PIECE_BYTES,
        window: int = WINDOW, timeout: float = 600, launches: int = 1) -> list[dict]:
    """One row per (op, algorithm, n, p): median of the slowest rank's time, course and gloo, and bytes.

    ``op`` is ``all_reduce`` (``algo`` ``ring`` and ``rabenseifner``) or ``reduce_scatter`` (``ring``).

    ``ratio`` is the median over all repetitions of all ``launches`` of the per-repetition ratio
    course / gloo (the two ran back to back, so load drift cancels); ``q1``/``q3`` are its
    quartiles. Separate launches matter on a shared machine: gloo's time moves from one launch to
    the next (where the ranks' threads land) more than the course's does.
    """
    if not isinstance(launches, int) or launches < 1:
        raise ValueError(f"launches must be an int >= 1, got {launches!r}")
    rows = []
    for n in sizes:
        for p in ranks:
            if n % p:
                raise ValueError(f"n={n} is not divisible by p={p}: gloo's reduce_scatter_tensor needs equal chunks")
            slowest: dict[str, list[float]] = {}
            for _ in range(launches):
                res = launch(ring_vs_gloo, p, n=n, repeats=repeats, piece_bytes=piece_bytes, window=window,
                             timeout=timeout, check_collectives=False)
                for k in res[0]["times"]:
                    slowest.setdefault(k, []).extend(max(r["times"][k][i] for r in res) for i in range(repeats))
            for op, algo, key, gkey in (("all_reduce", "ring", "ring_ar", "gloo_ar"),
                                        ("all_reduce", "rabenseifner", "rab_ar", "gloo_ar"),
                                        ("reduce_scatter", "ring", "ring_rs", "gloo_rs")):
                course, gloo = slowest[key], slowest[gkey]
                q1, ratio, q3 = _quartiles([c / g for c, g in zip(course, gloo)])
                formula = (rabenseifner_bytes_sent(n, p, 0, 4) if algo == "rabenseifner"
                           else ring_bytes_sent(n, p, 0, 4, op))
                rows.append(dict(op=op, algo=algo, n=n, p=p, mb=n * 4 / 1e6,
                                 course_ms=1e3 * statistics.median(course), gloo_ms=1e3 * statistics.median(gloo),
                                 ratio=ratio, q1=q1, q3=q3, sent=res[0]["sent"][key], formula=formula))
    return rows


def _quartiles(xs: list[float]) -> tuple[float, float, float]:
    if len(xs) < 2:
        return xs[0], xs[0], xs[0]
    q = statistics.quantiles(xs, n=4)
    return q[0], statistics.median(xs), q[2]


def time_algorithms(rank: int, world_size: int, sizes: list[int], repeats: int,
                    algorithms: list[str] | None = None) -> dict[str, list[list[float]]]:
    """Worker: seconds of each all-reduce (course algorithms and gloo's) per size and repetition."""
    algos = dict(ALL_REDUCE, gloo=lambda t: comm.all_reduce(t))
    if algorithms is not None:
        unknown = set(algorithms) - set(algos)
        if unknown:
            raise ValueError(f"unknown algorithms {sorted(unknown)}; choose from {sorted(algos)}")
        algos = {name: algos[name] for name in algorithms}
    out: dict[str, list[list[float]]] = {name: [] for name in algos}
    for n in sizes:
        x = torch.randn(max(1, n // 4), generator=torch.Generator().manual_seed(rank))
        for name, fn in algos.items():
            runs = []
            for i in range(repeats + 1):  # the first run warms up
                y = x.clone()
                t = _timed(lambda: fn(y))
                if i:
                    runs.append(t)
            out[name].append(runs)
    return out


def measure_algorithms(p: int, sizes: list[int], repeats: int = 3, timeout: float = 120,
                       algorithms: list[str] | None = None) -> dict[str, list[float]]:
    """Median over repetitions of the slowest rank's time, per algorithm and message size (bytes).

    ``algorithms``: names from :data:`course_lib.collectives.ALL_REDUCE` and ``"gloo"`` (default: all).
    """
    res = launch(time_algorithms, p, sizes=sizes, repeats=repeats, timeout=timeout, algorithms=algorithms,
                 check_collectives=False)
    return {name: [statistics.median(max(r[name][k][i] for r in res) for i in range(repeats))
                   for k in range(len(sizes))] for name in res[0]}
