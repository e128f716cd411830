"""The alpha-beta model of communication time, fitted on this machine.

Sending one message of n bytes takes ``T(n) = alpha + n * beta``: alpha is the per-message
latency (software overhead, wake-ups), beta the time per byte (1 / bandwidth). This is
Hockney's model (Hockney 1994), the one Thakur, Rabenseifner & Gropp (2005) use to cost
MPI's collective algorithms. We measure ``T(n)`` by ping-pong between two real ranks, fit
alpha and beta by least squares, and predict each all-reduce algorithm's time with
:func:`predict`.
"""
from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass

import numpy as np
import torch

from course_lib import comm
from course_lib.launcher import launch

DEFAULT_SIZES = [4 ** k for k in range(1, 13)]  # 4 B .. 16 MiB


@dataclass(frozen=True)
class AlphaBeta:
    """``T(n) = alpha + n * beta``, with alpha in seconds and beta in seconds per byte."""

    alpha: float
    beta: float

    def __post_init__(self) -> None:
        for name in ("alpha", "beta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
                raise ValueError(f"AlphaBeta: {name} must be a finite number >= 0 (seconds"
                                 f"{'' if name == 'alpha' else ' per byte'}), got {value!r}; "
                                 "fit one with fit_alpha_beta(nbytes, seconds)")

    def time(self, nbytes: float) -> float:
        """Predicted seconds for one message of ``nbytes``: ``alpha + nbytes * beta``."""
        return self.alpha + nbytes * self.beta

    @property
    def bandwidth_gbs(self) -> float:
        """``1 / beta`` in GB/s (10^9 bytes per second)."""
        return 1.0 / self.beta / 1e9

    @property
    def half_bandwidth_bytes(self) -> float:
        """``n_1/2 = alpha / beta``: below it a message costs mostly latency, above mostly bandwidth."""
        return self.alpha / self.beta

    def __iter__(self):
        """``alpha, beta = model``: the two plain numbers, e.g. for chapter 1's ``Links``."""
        return iter((self.alpha, self.beta))

    def __str__(self) -> str:
        return (f"alpha = {self.alpha * 1e6:.1f} us, 1/beta = {self.bandwidth_gbs:.2f} GB/s "
                f"(n_1/2 = {self.half_bandwidth_bytes / 1e3:.0f} kB)")


# ----------------------------------------------------------------------------- measuring
def ping_pong(rank: int, world_size: int, sizes: list[int], repeats: int = 20) -> list[float] | None:
    """Worker: rank 0 and rank 1 bounce float32 messages of each size (bytes); other ranks idle.

    Returns on rank 0 the one-way time per size, ``min(round trip) / 2``; ``None`` elsewhere.
    The minimum, not the median: other processes on the machine can only ever add time, and
    the model wants the cost of the transfer itself. Messages over 1 MiB get fewer repetitions (at
    least 5) so the whole sweep stays short.
    """
    if world_size < 2:
        raise ValueError("ping_pong needs at least 2 ranks: launch(ping_pong, 2, sizes=sizes)")
    if rank > 1:
        return None
    peer = 1 - rank
    out = []
    for nbytes in sizes:
        buf = torch.zeros(max(1, nbytes // 4))
        reps = max(5, min(repeats, int(repeats * (1 << 20) / nbytes)))
        rtts = []
        for i in range(reps + 1):  # the first round trip sets up buffers: not timed
            t0 = time.perf_counter()
            if rank == 0:
                comm.send(buf, peer)
                comm.recv(buf, peer)
            else:
                comm.recv(buf, peer)
                comm.send(buf, peer)
            if i:
                rtts.append(time.perf_counter() - t0)
        out.append(min(rtts) / 2)
    return out if rank == 0 else None


def measure_point_to_point(sizes: list[int] | None = None, repeats: int = 20,
                           timeout: float = 120) -> tuple[list[int], list[float]]:
    """Ping-pong on 2 real ranks: ``(message bytes, one-way seconds)`` for each size."""
    sizes = list(sizes or DEFAULT_SIZES)
    if any((not isinstance(s, int)) or s < 4 or s % 4 for s in sizes):
        raise ValueError(f"sizes must be byte counts that are multiples of 4 (float32 messages), got {sizes}")
    times = launch(ping_pong, 2, sizes=sizes, repeats=repeats, timeout=timeout, check_collectives=False)[0]
    return sizes, times


def fit_alpha_beta(nbytes, seconds) -> AlphaBeta:
    """Least-squares fit of ``T(n) = alpha + n beta`` minimising the *relative* error.

    Minimises ``sum_i ((alpha + n_i beta - T_i) / T_i)^2``: a plain fit would be decided by the
    largest messages alone (their times are 1000x larger) and leave alpha to noise.
    """
    n = np.asarray(nbytes, dtype=float)
    t = np.asarray(seconds, dtype=float)
    if n.shape != t.shape or n.ndim != 1:
        raise ValueError(f"nbytes and seconds must be two lists of the same length, got shapes {n.shape} and {t.shape}")
    if len(np.unique(n)) < 2:
        raise ValueError("need at least two different message sizes to separate alpha from beta")
    if np.any(t <= 0) or np.any(n < 0) or not np.all(np.isfinite(t)):
        raise ValueError("times must be positive (every measured time > 0 seconds) and finite, sizes non-negative")
    w = 1.0 / t
    a = np.stack([w, n * w], axis=1)
    (alpha, beta), *_ = np.linalg.lstsq(a, np.ones_like(t), rcond=None)
    if beta <= 0:
        raise ValueError(f"the fitted beta is {beta:.3g} <= 0: include larger messages (at least ~1 MB) "
                         "so the bandwidth term shows")
    return AlphaBeta(float(max(alpha, 0.0)), float(beta))


# ----------------------------------------------------------------------------- predicting
ALGORITHMS = ("naive", "tree", "recursive_doubling", "ring", "rabenseifner", "reduce_scatter", "all_gather")


def _concurrent(algorithm: str, p: int) -> float:
    """How many messages are in flight at once: they share the cores when ranks share a machine."""
    return {"naive": 1, "tree": p / 2, "recursive_doubling": p}.get(algorithm, p)


def predict(algorithm: str, nbytes: float, p: int, model: AlphaBeta, cores: int | None = None) -> float:
    """Alpha-beta time of an all-reduce (or ring reduce-scatter / all-gather) of ``nbytes`` on p ranks.

    * naive (gather to a root, broadcast back): ``2(p-1)(alpha + n beta)``
    * binomial tree (reduce, then broadcast):   ``2 ceil(log2 p)(alpha + n beta)``
    * recursive doubling:                      ``log2 p (alpha + n beta)``, two more steps if p is
      not a power of two
    * ring:                                    ``2(p-1) alpha + 2 (p-1)/p n beta``
    * Rabenseifner (halving, then doubling):   ``2 log2 p alpha + 2 (p-1)/p n beta`` for p a power
      of two; otherwise p' = 2^floor(log2 p) ranks run it after a pairwise fold, which costs two
      more whole-vector steps: ``2 log2 p' alpha + 2 (p'-1)/p' n beta + 2 (alpha + n beta)``
    * ring reduce-scatter or all-gather:       ``(p-1) alpha + (p-1)/p n beta``

    (Thakur, Rabenseifner & Gropp 2005; the ring's bandwidth term ``2(p-1)/p n beta`` is the
    lower bound for all-reduce, Patarasuk & Yuan 2009.) The model assumes every rank has its
    own link. With ``cores`` given, the ranks share that many CPU cores, which do all the
    copying on one machine: beta is multiplied by ``max(1, k / cores)``, k being the number of
    messages in flight at once (p for the ring and recursive doubling, p/2 for the tree's first
    level, 1 for the naive root).
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; choose one of {ALGORITHMS}")
    if not isinstance(p, int) or p < 1:
        raise ValueError(f"p must be an int >= 1, got {p!r}")
    if isinstance(nbytes, bool) or not isinstance(nbytes, numbers.Real) or not math.isfinite(nbytes) or nbytes < 0:
        raise ValueError(f"predict: nbytes must be a finite number >= 0 (the message size in bytes), got {nbytes!r}")
    if not isinstance(model, AlphaBeta):
        raise TypeError(f"predict: model must be an AlphaBeta(alpha, beta), got {type(model).__name__}; "
                        "fit one with fit_alpha_beta(nbytes, seconds)")
    if cores is not None and (isinstance(cores, bool) or not isinstance(cores, numbers.Real) or not cores >= 1):
        raise ValueError(f"predict: cores must be a number >= 1 (or None: one core per rank), got {cores!r}")
    if p == 1:
        return 0.0
    a = model.alpha
    b = model.beta * (max(1.0, _concurrent(algorithm, p) / cores) if cores else 1.0)
    n = nbytes
    log_p = math.ceil(math.log2(p))
    if algorithm == "naive":
        return 2 * (p - 1) * (a + n * b)
    if algorithm == "tree":
        return 2 * log_p * (a + n * b)
    if algorithm == "recursive_doubling":
        folds = 0 if p & (p - 1) == 0 else 2
        return (int(math.log2(p)) + folds) * (a + n * b)
    if algorithm == "ring":
        return 2 * (p - 1) * a + 2 * (p - 1) / p * n * b
    if algorithm == "rabenseifner":
        p2 = 1 << (p.bit_length() - 1)
        fold = 0.0 if p2 == p else 2 * (a + n * b)
        return 2 * math.log2(p2) * a + 2 * (p2 - 1) / p2 * n * b + fold
    return (p - 1) * a + (p - 1) / p * n * b  # reduce_scatter, all_gather
