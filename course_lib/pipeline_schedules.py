"""The pipeline schedules, built as data (:mod:`course_lib.pipeline_actions`), and their formulas.

The four schedules (bubble = idle fraction of the step, equal stages, t_B = 2 t_F, free links):

* GPipe (Huang et al. 2019): all m forwards, then all m backwards. Bubble (p-1)/(m+p-1);
  stage 0 holds the activations of all m micro-batches.
* 1F1B (PipeDream-Flush, Narayanan et al. 2021 "Memory-efficient pipeline-parallel DNN
  training"): rank r runs p-r-1 warm-up forwards, then alternates one forward and one backward.
  Same bubble (p-1)/(m+p-1), but at most p-r micro-batches in flight on rank r (p on stage 0).
* Interleaved 1F1B (Narayanan et al. SC21, "Efficient large-scale language model training on
  GPU clusters using Megatron-LM"): v chunks per rank, the bubble shrinks v-fold:
  bubble time / ideal time = (p-1)/(v m), i.e. a fraction (p-1)/(v m + p - 1) of the step.
* ZB-H1 (Qi et al. 2024, "Zero Bubble Pipeline Parallelism", ICLR): backward split into B
  (input gradient, on the critical path) and W (weight gradient, needed only by the optimizer);
  W fills the gaps. With t_F = t_B = t_W the bubble drops from (p-1)(t_F+t_B+t_W) to
  (p-1)(t_F+t_B-t_W) per rank, a third of 1F1B's.

Sends are non-blocking (``isend``) unless ``blocking_sends``: a blocking send returns only once
the receiver has posted its receive (gloo's rendezvous), which deadlocks 1F1B;
:func:`course_lib.pipeline_simulator.simulate` finds such deadlocks before anything runs.
"""
from __future__ import annotations

from typing import Callable

from course_lib.pipeline_actions import Schedule, with_communication


def _check_pm(p: int, m: int, v: int = 1) -> None:
    for name, val in (("p (pipeline ranks)", p), ("m (micro-batches)", m), ("v (chunks per rank)", v)):
        if not isinstance(val, int) or val < 1:
            raise ValueError(f"{name} must be a positive int, got {val!r}")


# ----------------------------------------------------------------------------- the schedules
def gpipe(p: int, m: int) -> Schedule:
    """GPipe: every rank runs F of micro-batches 0..m-1, then B of m-1..0 (Huang et al. 2019)."""
    _check_pm(p, m)
    compute = [[("F", i, r) for i in range(m)] + [("B", i, r) for i in reversed(range(m))]
               for r in range(p)]
    return with_communication("gpipe", p, m, 1, compute)


def one_f_one_b(p: int, m: int, blocking_sends: bool = False) -> Schedule:
    """1F1B: rank r runs w = min(p-r-1, m) warm-up forwards, then m-w pairs (F, B), then the
    w remaining backwards (Narayanan et al. 2021, PipeDream-Flush)."""
    _check_pm(p, m)
    compute = []
    for r in range(p):
        w = min(p - r - 1, m)
        ops = [("F", i, r) for i in range(w)]
        for i in range(m - w):
            ops += [("F", w + i, r), ("B", i, r)]
        ops += [("B", i, r) for i in range(m - w, m)]
        compute.append(ops)
    return with_communication("1f1b" + ("-blocking" if blocking_sends else ""), p, m, 1, compute,
                              blocking_sends=blocking_sends)


def interleaved_1f1b(p: int, m: int, v: int) -> Schedule:
    """Interleaved 1F1B with v chunks per rank (Megatron-LM, Narayanan et al. SC21): rank r holds
    stages r, r+p, ..., r+(v-1)p. Its k-th forward is micro-batch (k // pv) p + k % p through its
    chunk (k // p) % v (backwards walk the chunks in reverse); w = min(2(p-r-1) + (v-1)p, vm)
    warm-up forwards, then one forward and one backward alternate."""
    _check_pm(p, m, v)
    if v < 2:
        raise ValueError("interleaving needs v >= 2 chunks per rank; for v = 1 use one_f_one_b")
    if m % p:
        raise ValueError(f"interleaved 1F1B sends micro-batches in groups of p: m={m} must be a "
                         f"multiple of p={p} (e.g. m={(m // p + 1) * p})")
    total = m * v

    def mb(k: int) -> int:
        return (k // (p * v)) * p + k % p

    def stage(r: int, k: int, forward: bool) -> int:
        c = (k // p) % v
        return (c if forward else v - 1 - c) * p + r

    compute = []
    for r in range(p):
        w = min(2 * (p - r - 1) + (v - 1) * p, total)
        ops = [("F", mb(k), stage(r, k, True)) for k in range(w)]
        for i in range(total - w):
            ops += [("F", mb(w + i), stage(r, w + i, True)), ("B", mb(i), stage(r, i, False))]
        ops += [("B", mb(k), stage(r, k, False)) for k in range(total - w, total)]
        compute.append(ops)
    return with_communication(f"interleaved-v{v}", p, m, v, compute)


def zero_bubble_h1(p: int, m: int) -> Schedule:
    """ZB-H1 (Qi et al. 2024): 1F1B's order of F and B, with the backward split into B (input
    gradient, on the critical path) and W (weight gradient, needed only by the optimizer step).

    Rank r runs each W right after a B, except that it keeps r of them pending: the last ranks,
    which in 1F1B sit idle at the end of the step while the backwards travel to rank 0, run their
    deferred Ws there instead. At most p micro-batches await their W on any rank, 1F1B's peak."""
    _check_pm(p, m)
    compute = []
    for r in range(p):
        w = min(p - r - 1, m)
        ops: list[tuple[str, int, int]] = [("F", i, r) for i in range(w)]
        pending: list[int] = []

        def backward(i: int) -> None:
            ops.append(("B", i, r))
            pending.append(i)
            if len(pending) > r:
                ops.append(("W", pending.pop(0), r))

        for i in range(m - w):
            ops.append(("F", w + i, r))
            backward(i)
        for i in range(m - w, m):
            backward(i)
        ops += [("W", i, r) for i in pending]
        compute.append(ops)
    return with_communication("zb-h1", p, m, 1, compute, split_backward=True)


SCHEDULES: dict[str, Callable[..., Schedule]] = {
    "gpipe": gpipe, "1f1b": one_f_one_b, "interleaved": interleaved_1f1b, "zb-h1": zero_bubble_h1}


def make_schedule(name: str, p: int, m: int, v: int = 2) -> Schedule:
    """``make_schedule('1f1b', p=4, m=8)``; ``v`` is used by 'interleaved' only."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {list(SCHEDULES)}")
    return interleaved_1f1b(p, m, v) if name == "interleaved" else SCHEDULES[name](p, m)


# ----------------------------------------------------------------------------- theory
def bubble_formula(name: str, p: int, m: int, v: int = 1) -> float:
    """Idle fraction of the step for equal stages, t_B = 2 t_F, free links:
    GPipe and 1F1B (p-1)/(m+p-1); interleaved (p-1)/(vm+p-1) (that is bubble/ideal = (p-1)/(vm));
    ZB-H1 with t_F = t_B = t_W and m >= p: (p-1)/(3m+p-1)."""
    if name in ("gpipe", "1f1b", "1f1b-blocking"):
        return (p - 1) / (m + p - 1)
    if name.startswith("interleaved"):
        return (p - 1) / (v * m + p - 1)
    if name == "zb-h1":
        return (p - 1) / (3 * m + p - 1)
    raise ValueError(f"no formula for schedule {name!r}")


def in_flight_formula(name: str, p: int, m: int, rank: int = 0) -> int:
    """Most micro-batches whose activations rank ``rank`` holds at once: GPipe m; 1F1B
    min(p - rank, m) (held until B); ZB-H1 min(p, m) on every rank (held until W)."""
    if name == "gpipe":
        return m
    if name in ("1f1b", "1f1b-blocking"):
        return min(p - rank, m)
    if name == "zb-h1":
        return min(p, m)
    raise ValueError(f"no formula for schedule {name!r}")
