"""Replay a pipeline schedule in simulated time: its timeline, its bubble, its deadlocks.

:func:`simulate` runs each rank's list of :class:`~course_lib.pipeline_actions.Action` in order
with a cost per action (:func:`unit_cost`, or a measured one) and returns a :class:`Timeline`.
A blocking send (``Schedule.blocking_sends``) returns only once the receiver has posted its
receive (gloo's rendezvous); when no rank can move, :class:`ScheduleDeadlock` names the ranks,
the events they wait in and the cycle of waits, before anything runs on real processes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from course_lib.pipeline_actions import Action, Schedule, validate


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
