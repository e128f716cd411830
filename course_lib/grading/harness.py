"""Run a learner's worker function on real ranks and turn every way it can go wrong into a hint."""
from __future__ import annotations

from typing import Any, Callable

import torch

from course_lib import comm
from course_lib.grading.feedback import CheckFailed
from course_lib.launcher import DeadlockError, WorkerError, launch


def _call(rank: int, world_size: int, fn: Callable, inputs: list[Any]) -> tuple[Any, comm.CommStats]:
    comm.reset_stats()
    x = inputs[rank]
    out = fn(rank, world_size, x.clone() if isinstance(x, torch.Tensor) else x)
    return out, comm.get_stats()


def run_learner(question: str, fn: Callable, world_size: int, inputs: list[Any], *,
                deadlock_hint: str, timeout: float = 15) -> list[tuple[Any, comm.CommStats]]:
    """``fn(rank, world_size, inputs[rank])`` on ``world_size`` ranks -> [(output, stats)] per rank."""
    if not callable(fn):
        raise CheckFailed(question, f"expected your function, got {type(fn).__name__}; run the cell "
                          "that defines it first")
    try:
        return list(launch(_call, world_size, fn, inputs, timeout=timeout))
    except DeadlockError as e:
        stuck = "; ".join(f"rank {r} {w}" for r, w in sorted(e.stuck.items()))
        # The advice first: graders' CSVs keep the first few hundred characters.
        raise CheckFailed(question, f"with {world_size} ranks the run did not finish in {timeout:g} s. "
                          f"{deadlock_hint} (Where each rank was stuck: {stuck}.)") from None
    except WorkerError as e:
        if e.exc_type == "NotImplementedError":
            raise CheckFailed(question, "not answered yet: replace `raise NotImplementedError()` "
                              "with your code") from None
        raise CheckFailed(question, f"with {world_size} ranks, rank {e.rank} raised {e.exc_type}: "
                          f"{str(e).splitlines()[0].split(': ', 1)[-1]}\n{e.worker_traceback}") from None


def only_point_to_point(question: str, rank: int, stats: comm.CommStats) -> None:
    if stats.collective_calls:
        used = ", ".join(sorted(stats.collective_calls))
        raise CheckFailed(question, f"rank {rank} called the collective(s) {used}; build this one "
                          "from comm.send / comm.recv / comm.isend / comm.irecv only")
    if stats.sent_messages == 0 and stats.recv_messages == 0:
        raise CheckFailed(question, f"rank {rank} sent and received nothing through course_lib.comm; "
                          "use comm.send / comm.recv (torch.distributed's own calls are not counted)")
