"""A pipeline schedule as data: per-rank lists of :class:`Action`, and the checks that make it
well formed.

A pipeline of ``S = p * v`` stages (p ranks, v model chunks per rank; stage s lives on rank
``s % p``) trains on m micro-batches. A schedule is, for every rank, the list of what it does
in order:

    F(i, s)   forward of micro-batch i through stage s
    B(i, s)   backward of micro-batch i through stage s (input and weight gradients together),
              or, in a zero-bubble schedule, only the input gradient dL/dx
    W(i, s)   zero-bubble only: the weight gradient dL/dW of micro-batch i, stage s
    SEND_F / RECV_F   the activation of micro-batch i, stage s -> s+1
    SEND_B / RECV_B   the activation gradient of micro-batch i, stage s -> s-1

:func:`with_communication` turns per-rank compute orders into a full schedule by adding the
messages; :func:`validate` checks that every micro-batch goes through every stage once and that
every send has its receive. The schedules themselves (GPipe, 1F1B, ...) are built in
:mod:`course_lib.pipeline_schedules`; :mod:`course_lib.pipeline_simulator` replays one.
"""
from __future__ import annotations

from dataclasses import dataclass

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
