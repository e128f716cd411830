"""Run a learner's worker function on real ranks and turn every way it can go wrong into a hint."""
from __future__ import annotations

import dis
import functools
import re
import types
from typing import Any, Callable

import torch

from course_lib import comm
from course_lib.grading import isolation
from course_lib.grading.feedback import CheckFailed
from course_lib.launcher import DeadlockError, WorkerError


def _call(rank: int, world_size: int, fn: Callable, inputs: list[Any]) -> tuple[Any, comm.CommStats]:
    comm.reset_stats()
    x = inputs[rank]
    out = fn(rank, world_size, x.clone() if isinstance(x, torch.Tensor) else x)
    return out, comm.get_stats()


COMM_CALLS = {"wait", "send", "recv", "isend", "irecv", "barrier", "all_reduce", "broadcast", "all_gather",
              "reduce_scatter", "all_to_all", "reduce", "gather", "scatter", "all_gather_into_tensor",
              "reduce_scatter_tensor", "backward", "apply"}


def _codes(obj: Any, depth: int = 0) -> list[types.CodeType]:
    """The code objects of the learner's function or class (and of functions nested in them)."""
    if depth > 3:
        return []
    if isinstance(obj, functools.partial):
        return [c for o in (obj.func, *obj.args) for c in _codes(o, depth + 1)]
    if isinstance(obj, type):
        return [c for v in vars(obj).values() for c in _codes(getattr(v, "__func__", v), depth + 1)]
    code = getattr(obj, "__code__", None)
    out = []
    todo = [code] if isinstance(code, types.CodeType) else []
    while todo:
        c = todo.pop()
        out.append(c)
        todo += [k for k in c.co_consts if isinstance(k, types.CodeType)]
    return out


def _is_loop(fn: Any, stuck: dict[int, str]) -> bool:
    """True if no stuck rank waits for a message: each is on a line of the learner's code that
    makes no communication call (read from the bytecode, as a kernel's source may be gone)."""
    codes = _codes(fn)
    for where in stuck.values():
        if "blocked in" in where:
            return False
        m = re.search(r"called from (\S+)\(\) line (\d+)", where)
        if not m:
            return False
        name, line = m.group(1), int(m.group(2))
        names = {i.argval for c in codes if c.co_name == name for i in dis.get_instructions(c)
                 if i.positions and i.positions.lineno == line and isinstance(i.argval, str)}
        if not names or names & COMM_CALLS:
            return False
    return True


def _never_started(stuck: dict[int, str]) -> bool:
    """No stuck rank had reached a function of the learner's (each still in start-up: joining
    the group, or importing what the function needs while it is unpickled)."""
    return bool(stuck) and all("called from" not in w or "called from <module>()" in w
                               or "of <frozen importlib" in w for w in stuck.values())


def run_learner(question: str, fn: Callable, world_size: int, inputs: list[Any], *,
                deadlock_hint: str, timeout: float = 15) -> list[tuple[Any, comm.CommStats]]:
    """``fn(rank, world_size, inputs[rank])`` on ``world_size`` ranks -> [(output, stats)] per rank.

    In the checker the ranks are launched from the answer process, and their results read back
    as data only (:mod:`course_lib.grading.isolation`)."""
    if not callable(fn):
        raise CheckFailed(question, f"expected your function, got {type(fn).__name__}; run the cell "
                          "that defines it first")
    try:
        try:
            return list(isolation.launch(_call, world_size, fn, inputs, timeout=timeout))
        except DeadlockError as e:
            if not _never_started(e.stuck):
                raise
            # The ranks were still starting (joining the process group) when the time ran out:
            # a machine too busy, not the learner's code. Once more, with twice the time.
            timeout *= 2
            return list(isolation.launch(_call, world_size, fn, inputs, timeout=timeout))
    except DeadlockError as e:
        stuck = "; ".join(f"rank {r} {w}" for r, w in sorted(e.stuck.items()))
        if e.stuck and isolation.run(_is_loop, fn, e.stuck):
            # no rank waits for a message: the code is still computing, e.g. a loop that never ends
            raise CheckFailed(question, f"with {world_size} ranks the run did not finish in {timeout:g} s, and no "
                              "rank was waiting for a message: your code was still running, an infinite loop? "
                              f"Check that every loop ends. (Where each rank was: {stuck}.)") from None
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
