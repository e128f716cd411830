"""Pipeline schedules as data: per-rank event lists, a simulator that replays them, deadlock detection.

A pipeline of ``S = p * v`` stages (p ranks, v model chunks per rank; stage s lives on rank
``s % p``) trains on m micro-batches. A schedule is, for every rank, the list of what it does
in order:

    F(i, s)   forward of micro-batch i through stage s
    B(i, s)   backward of micro-batch i through stage s (input and weight gradients together),
              or, in a zero-bubble schedule, only the input gradient dL/dx
    W(i, s)   zero-bubble only: the weight gradient dL/dW of micro-batch i, stage s
    SEND_F / RECV_F   the activation of micro-batch i, stage s -> s+1
    SEND_B / RECV_B   the activation gradient of micro-batch i, stage s -> s-1

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

Sends are non-blocking (``isend``) unless ``Schedule.blocking_sends``: a blocking send returns only
once the receiver has posted its receive (gloo's rendezvous), which deadlocks 1F1B.
:func:`simulate` finds such deadlocks before anything runs and names the ranks and events.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

COMPUTE = ("F", "B", "W")
COMM = ("SEND_F", "RECV_F", "SEND_B", "RECV_B")


@dataclass(frozen=True)
class Action:
    """One event of one rank: ``kind`` in F, B, W, SEND_F, RECV_F, SEND_B, RECV_B; micro-batch
    ``mb``; the (global) ``stage`` this rank runs it for; ``peer`` the other rank of a message."""

    kind: str
    mb: int
    stage: int
    peer: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in COMPUTE + COMM:
            raise ValueError(f"unknown action kind {self.kind!r}; use one of {COMPUTE + COMM}")
        if self.kind in COMM and self.peer is None:
            raise ValueError(f"{self.kind} needs the peer rank (the other end of the message)")

    @property
    def is_compute(self) -> bool:
        return self.kind in COMPUTE

    def message(self) -> tuple[str, int, int]:
        """The message a SEND/RECV moves: (direction, micro-batch, sending stage)."""
        if self.kind == "SEND_F":
            return ("F", self.mb, self.stage)
        if self.kind == "RECV_F":
            return ("F", self.mb, self.stage - 1)
        if self.kind == "SEND_B":
            return ("B", self.mb, self.stage)
        if self.kind == "RECV_B":
            return ("B", self.mb, self.stage + 1)
        raise ValueError(f"{self.kind} is a compute action, it moves no message")

    def __str__(self) -> str:
        if self.is_compute:
            return f"{self.kind}{self.mb}@s{self.stage}"
        arrow = "->" if self.kind.startswith("SEND") else "<-"
        return f"{self.kind}{self.mb}@s{self.stage}{arrow}r{self.peer}"


@dataclass
class Schedule:
    """Per-rank action lists of one training step (``ranks[r]`` is rank r's list)."""

    name: str
    p: int
    m: int
    v: int
    ranks: list[list[Action]]
    split_backward: bool = False   # True: B is the input gradient only, W the weight gradient
    blocking_sends: bool = False   # True: SEND waits for the matching RECV (rendezvous)

    @property
    def num_stages(self) -> int:
        return self.p * self.v

    def rank_of(self, stage: int) -> int:
        return stage % self.p

    def compute_order(self, rank: int) -> list[str]:
        """Rank ``rank``'s compute actions, e.g. ``['F0@s0', 'F1@s0', 'B0@s0', ...]``."""
        return [str(a) for a in self.ranks[rank] if a.is_compute]


def _check_pm(p: int, m: int, v: int = 1) -> None:
    for name, val in (("p (pipeline ranks)", p), ("m (micro-batches)", m), ("v (chunks per rank)", v)):
        if not isinstance(val, int) or val < 1:
            raise ValueError(f"{name} must be a positive int, got {val!r}")


def with_communication(name: str, p: int, m: int, v: int, compute: list[list[tuple[str, int, int]]],
                       split_backward: bool = False, blocking_sends: bool = False) -> Schedule:
    """Turn per-rank compute orders [(kind, mb, stage)] into a full schedule: each forward of a
    stage s > 0 is preceded by RECV_F and each forward of s < S-1 followed by SEND_F; each backward
    (B) of s < S-1 is preceded by RECV_B and each of s > 0 followed by SEND_B."""
    S = p * v
    ranks: list[list[Action]] = []
    for r, ops in enumerate(compute):
        acts: list[Action] = []
        for kind, mb, s in ops:
            if s % p != r:
                raise ValueError(f"rank {r} was given stage {s}, which lives on rank {s % p}")
            if kind == "F" and s > 0:
                acts.append(Action("RECV_F", mb, s, (s - 1) % p))
            if kind == "B" and s < S - 1:
                acts.append(Action("RECV_B", mb, s, (s + 1) % p))
            acts.append(Action(kind, mb, s))
            if kind == "F" and s < S - 1:
                acts.append(Action("SEND_F", mb, s, (s + 1) % p))
            if kind == "B" and s > 0:
                acts.append(Action("SEND_B", mb, s, (s - 1) % p))
        ranks.append(acts)
    return Schedule(name, p, m, v, ranks, split_backward, blocking_sends)


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


# ----------------------------------------------------------------------------- validation
def validate(schedule: Schedule) -> None:
    """Each rank runs F, then B (then W) of every (micro-batch, stage) it owns exactly once, in
    that order, and every SEND has exactly one matching RECV. Raises ValueError naming the rank."""
    sch = schedule
    if len(sch.ranks) != sch.p:
        raise ValueError(f"a schedule for p={sch.p} ranks needs {sch.p} action lists, got {len(sch.ranks)}")
    kinds = ("F", "B", "W") if sch.split_backward else ("F", "B")
    sends: dict = {}
    recvs: dict = {}
    for r, acts in enumerate(sch.ranks):
        seen: dict[tuple[str, int, int], int] = {}
        for pos, a in enumerate(acts):
            if a.stage % sch.p != r:
                raise ValueError(f"rank {r}: {a} is for stage {a.stage}, which lives on rank {a.stage % sch.p}")
            if not 0 <= a.mb < sch.m:
                raise ValueError(f"rank {r}: {a} has micro-batch {a.mb}, outside 0..{sch.m - 1}")
            if a.is_compute:
                if a.kind == "W" and not sch.split_backward:
                    raise ValueError(f"rank {r}: {a} is a W, but this schedule does not split the backward")
                key = (a.kind, a.mb, a.stage)
                if key in seen:
                    raise ValueError(f"rank {r} runs {a} twice (positions {seen[key]} and {pos})")
                before = kinds[:kinds.index(a.kind)]
                for k in before:
                    if (k, a.mb, a.stage) not in seen:
                        raise ValueError(f"rank {r} runs {a} before {k}{a.mb}@s{a.stage}: a micro-batch "
                                         f"must go through {' then '.join(kinds)} on each stage")
                seen[key] = pos
            else:
                book = sends if a.kind.startswith("SEND") else recvs
                msg = a.message()
                if msg in book:
                    raise ValueError(f"rank {r}: message {msg} is {'sent' if book is sends else 'received'} twice")
                book[msg] = (r, a)
        for s in range(r, sch.num_stages, sch.p):
            for i in range(sch.m):
                for k in kinds:
                    if (k, i, s) not in seen:
                        raise ValueError(f"rank {r} never runs {k}{i}@s{s}: every micro-batch needs "
                                         f"{' and '.join(kinds)} on every stage")
    for msg, (r, a) in sends.items():
        if msg not in recvs:
            raise ValueError(f"rank {r} sends {a} but rank {a.peer} never receives it")
    for msg, (r, a) in recvs.items():
        if msg not in sends:
            raise ValueError(f"rank {r} waits for {a} but rank {a.peer} never sends it")


# ----------------------------------------------------------------------------- simulator
class ScheduleDeadlock(RuntimeError):
    """The schedule cannot finish: ``stuck`` maps each blocked rank to the action it waits in."""

    def __init__(self, message: str, stuck: dict[int, Action], cycle: list[int]):
        super().__init__(message)
        self.stuck, self.cycle = stuck, cycle


@dataclass
class Timeline:
    """What a schedule did: per rank, (action, start, end) in execution order (simulated or measured)."""

    schedule: Schedule
    events: list[list[tuple[Action, float, float]]]
    in_flight: list[int] = field(default_factory=list)  # peak micro-batches awaiting backward, per rank

    @property
    def makespan(self) -> float:
        t0 = min(e[1] for ev in self.events for e in ev)
        return max(e[2] for ev in self.events for e in ev) - t0

    def busy(self, rank: int) -> float:
        """Seconds rank ``rank`` spent inside compute actions (F, B, W)."""
        return sum(t1 - t0 for a, t0, t1 in self.events[rank] if a.is_compute)

    def bubble(self) -> float:
        """Mean over ranks of 1 - busy / makespan: the idle fraction of the step."""
        T = self.makespan
        return sum(1 - self.busy(r) / T for r in range(len(self.events))) / len(self.events)

    def order(self, rank: int) -> list[str]:
        return [str(a) for a, _, _ in self.events[rank]]


Cost = Callable[[Action, Schedule], float]


def unit_cost(t_f: float = 1.0, t_b: float = 2.0, t_w: float | None = None, t_comm: float = 0.0) -> Cost:
    """Cost function for :func:`simulate`: F takes t_f, B t_b; when the schedule splits the
    backward, B (input gradient) and W (weight gradient) take t_b - t_w and t_w (default t_b / 2);
    a message takes t_comm."""
    w = t_b / 2 if t_w is None else t_w

    def cost(a: Action, schedule: Schedule) -> float:
        if a.kind == "F":
            return t_f
        if a.kind == "B":
            return t_b - w if schedule.split_backward else t_b
        if a.kind == "W":
            return w
        return t_comm
    return cost


def simulate(schedule: Schedule, cost: Cost | None = None) -> Timeline:
    """Replay ``schedule`` with ``cost(action, schedule)`` seconds per action (default
    :func:`unit_cost`) and return its :class:`Timeline`.

    Each rank runs its list in order. A compute action starts when the rank is free. A RECV ends
    at max(rank free, the matching SEND's start + message cost). A non-blocking SEND costs the
    sender nothing; a blocking SEND (``schedule.blocking_sends``) waits until the receiver has
    posted the matching RECV. If no rank can move and some are unfinished, raises
    :class:`ScheduleDeadlock` naming each blocked rank, its action and whom it waits for.
    """
    validate(schedule)
    cost = cost or unit_cost()
    p = schedule.p
    pc = [0] * p
    clock = [0.0] * p
    events: list[list[tuple[Action, float, float]]] = [[] for _ in range(p)]
    posted: dict[tuple, float] = {}      # message -> time its SEND was posted (non-blocking)
    live, peak = [0] * p, [0] * p
    free_kind = "W" if schedule.split_backward else "B"

    def current(r: int) -> Action | None:
        return schedule.ranks[r][pc[r]] if pc[r] < len(schedule.ranks[r]) else None

    def finish(r: int, a: Action, t0: float, t1: float) -> None:
        events[r].append((a, t0, t1))
        clock[r] = t1
        pc[r] += 1
        if a.kind == "F":
            live[r] += 1
            peak[r] = max(peak[r], live[r])
        elif a.kind == free_kind:
            live[r] -= 1

    progress = True
    while progress:
        progress = False
        for r in range(p):
            while (a := current(r)) is not None:
                if a.is_compute:
                    finish(r, a, clock[r], clock[r] + cost(a, schedule))
                elif a.kind.startswith("SEND") and not schedule.blocking_sends:
                    posted[a.message()] = clock[r]
                    finish(r, a, clock[r], clock[r])
                elif a.kind.startswith("RECV") and a.message() in posted:
                    t1 = max(clock[r], posted[a.message()] + cost(a, schedule))
                    finish(r, a, clock[r], t1)
                elif a.kind.startswith("SEND"):
                    # Rendezvous: both ends must be at this message.
                    b = current(a.peer)
                    if b is None or b.is_compute or b.kind.startswith("SEND") or b.message() != a.message():
                        break
                    t0 = max(clock[r], clock[a.peer])
                    t1 = t0 + cost(b, schedule)
                    finish(r, a, clock[r], t1)
                    finish(a.peer, b, clock[a.peer], t1)
                else:
                    break  # a RECV whose SEND has not been posted yet
                progress = True
    stuck = {r: current(r) for r in range(p) if current(r) is not None}
    if stuck:
        raise _deadlock(schedule, stuck)
    return Timeline(schedule, events, peak)


def _deadlock(schedule: Schedule, stuck: dict[int, Action]) -> ScheduleDeadlock:
    lines = []
    for r, a in sorted(stuck.items()):
        what = ("a blocking send: it returns only when rank {0} posts the matching receive"
                if a.kind.startswith("SEND") else "waiting for rank {0} to send")
        b = stuck.get(a.peer)
        peer_state = f"rank {a.peer} is itself blocked in {b}" if b else f"rank {a.peer} has finished"
        lines.append(f"rank {r} is blocked in {a} ({what.format(a.peer)}); {peer_state}")
    # Follow "waits for" edges from the lowest stuck rank to find the cycle.
    cycle, r = [], min(stuck)
    while r in stuck and r not in cycle:
        cycle.append(r)
        r = stuck[r].peer
    if r in cycle:
        cycle = cycle[cycle.index(r):]
        ring = " -> ".join(f"rank {c}" for c in cycle + [cycle[0]])
        lines.append(f"cycle of waits: {ring}.")
    advice = ("Fix: make sends non-blocking (isend, wait later), or order each pair so that one "
              "side receives before it sends.")
    return ScheduleDeadlock(f"schedule {schedule.name!r} (p={schedule.p}, m={schedule.m}) deadlocks:\n  "
                            + "\n  ".join(lines) + "\n" + advice, stuck, cycle)
