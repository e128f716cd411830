"""Bounded staleness (SSP): the bookkeeping a parameter server does after every push.

Stale Synchronous Parallel (Ho et al. 2013, NIPS, "More Effective Distributed ML via a Stale
Synchronous Parallel Parameter Server"): worker k may start its step c only when every worker
has finished ``c - s`` steps (clock gap ``<= s``); ``s = None`` is fully asynchronous (ASP).
The staleness of an applied gradient is ``tau = version - (version k pulled)``, and under SSP
``tau <= (W - 1)(2 s + 1)``. :func:`course_lib.parameter_server.run_ps` calls :func:`on_push`
after applying each gradient (exercise 2 of chapter 2 asks for it, and plugs the learner's in).
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SSPBook:
    """The server's bookkeeping for asynchronous and bounded-staleness updates.

    ``version``: updates applied so far. ``clock[k]``: gradients worker k has pushed.
    ``pulled[k]``: the version worker k's current parameters came from. ``waiting``: workers
    that pushed and wait for parameters. ``s``: the SSP bound (None = ASP, no bound).
    ``staleness``: tau of every applied gradient, in order; ``worker_of``: who pushed it.
    """

    n_workers: int
    s: int | None = None
    version: int = 0
    clock: list[int] = field(default_factory=list)
    pulled: list[int] = field(default_factory=list)
    waiting: set[int] = field(default_factory=set)
    staleness: list[int] = field(default_factory=list)
    worker_of: list[int] = field(default_factory=list)
    max_gap: int = 0  # largest clock[k] - min(clock) seen when a worker was released

    def __post_init__(self) -> None:
        if self.n_workers < 1:
            raise ValueError(f"need at least one worker, got n_workers={self.n_workers}")
        if self.s is not None and (not isinstance(self.s, int) or self.s < 0):
            raise ValueError(f"the staleness bound s must be an int >= 0 or None (ASP), got {self.s!r}")
        self.clock = self.clock or [0] * self.n_workers
        self.pulled = self.pulled or [0] * self.n_workers


def on_push(book: SSPBook, k: int) -> list[int]:
    """Worker k's gradient has just been applied: do the bookkeeping, return who may go on.

    ``tau = version - pulled[k]`` (updates applied since k pulled), then ``version += 1``,
    ``clock[k] += 1``; k waits. A waiting worker j is released when
    ``clock[j] - min_i clock[i] <= s`` (its next step is at most s ahead of the slowest
    worker, Ho et al. 2013); released workers pull the current version now.
    """
    tau = book.version - book.pulled[k]
    book.staleness.append(tau)
    book.worker_of.append(k)
    book.version += 1
    book.clock[k] += 1
    book.waiting.add(k)
    slowest = min(book.clock)
    released = sorted(j for j in book.waiting if book.s is None or book.clock[j] - slowest <= book.s)
    for j in released:
        book.pulled[j] = book.version
        book.max_gap = max(book.max_gap, book.clock[j] - slowest)
    book.waiting -= set(released)
    return released


def staleness_bound(n_workers: int, s: int) -> int:
    """Largest possible staleness under SSP with bound s: ``(W - 1)(2 s + 1)``."""
    return (n_workers - 1) * (2 * s + 1)
