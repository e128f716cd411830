"""What the launcher tells a learner when a run goes wrong, and how it reads the ranks' reports.

* :class:`WorkerError`: a rank raised (or crashed); its traceback, with short paths.
* :class:`CollectiveMismatchError`: ranks called different collectives; PyTorch's fingerprint
  message translated into each rank's call and the learner's line.
* :class:`DeadlockError`: ranks did not finish; where each one waited, read from its stack.
"""
from __future__ import annotations

import linecache
import os
import re

PEER_CLOSED = re.compile(
    r"Connection closed by peer|Connection reset by peer|Broken pipe|"
    r"ECONNRESET|EPIPE|recvBytes|Socket closed|read.*failed|Connection refused|"
    r"failed to pass monitoredBarrier",  # the collective check's barrier: a peer died, not this rank
    re.IGNORECASE,
)
_C10_LOG = re.compile(r"(\[rank\d+\]:)?\[[EW]\d{4} ")  # PyTorch's C++ log line: [rank0]:[E1201 22:37:32...


def echoes_peer_failure(line: str) -> bool:
    """True for a line a rank's C++ runtime logs only because a peer died.

    Whether it appears depends on timing (was this rank still connecting?), and the launcher
    reports the peer's real cause anyway; printing it would make outputs differ run to run.
    """
    return "failed to pass monitoredBarrier" in line or bool(
        _C10_LOG.match(line) and PEER_CLOSED.search(line))


class LaunchError(RuntimeError):
    """Base class of everything :func:`launch` raises about a run that went wrong."""

    def _render_traceback_(self) -> list[str]:
        # IPython shows this instead of the launcher's own frames, which never help a learner:
        # the message already carries the failing rank's traceback or the stuck ranks' calls.
        return [f"\x1b[31m{type(self).__name__}\x1b[0m: {self}"]


def short_paths(text: str) -> str:
    """Tracebacks without this machine's folders: ``torch/...``, ``course_lib/...``, ``multiprocessing/...``.

    A learner needs the file and the line, not where Python is installed; and notebooks are
    committed with their outputs, which must not carry the author's paths.
    """
    def short(m: re.Match) -> str:
        path = m.group(1)
        for marker in ("site-packages/", "/course_lib/", "/lib/python3."):
            i = path.rfind(marker)
            if i >= 0:
                rest = path[i + len(marker):]
                if marker == "/lib/python3.":
                    rest = rest.split("/", 1)[-1]
                return f'File "{"course_lib/" if marker == "/course_lib/" else ""}{rest}"'
        return f'File "{os.path.basename(path)}"' if os.path.isabs(path) else m.group(0)

    return re.sub(r'File "([^"]+)"', short, text)


class WorkerError(LaunchError):
    """A rank raised. ``rank``, ``exc_type`` and ``worker_traceback`` say where and what."""

    def __init__(self, rank: int, exc_type: str, message: str, worker_traceback: str):
        worker_traceback = short_paths(worker_traceback)
        self.rank, self.exc_type, self.worker_traceback = rank, exc_type, worker_traceback
        super().__init__(
            f"rank {rank} raised {exc_type}: {message}\n\n"
            f"--- traceback of rank {rank} ---\n{worker_traceback.rstrip()}"
        )


class CollectiveMismatchError(WorkerError):
    """Ranks called different collectives (op, shape or dtype). ``calls`` maps rank -> its call."""

    def __init__(self, rank: int, summary: str, calls: dict[int, str], worker_traceback: str):
        self.calls = calls
        lines = "\n".join(f"  rank {r}: {where}" for r, where in sorted(calls.items()))
        LaunchError.__init__(self, f"{summary}\n{lines}")
        self.rank, self.exc_type, self.worker_traceback = rank, "CollectiveMismatchError", worker_traceback


class DeadlockError(LaunchError):
    """Some ranks did not finish within the timeout. ``stuck`` maps rank -> where it waited."""

    def __init__(self, timeout: float, stuck: dict[int, str], finished: list[int], waited: float | None = None):
        self.timeout, self.stuck, self.finished = timeout, stuck, finished
        lines = [f"  rank {r}: {where}" for r, where in sorted(stuck.items())]
        done = f"ranks {finished} finished; " if finished else ""
        busy = (f" (stretched to {waited:.0f} s: the machine was busy and the ranks were still computing)"
                if waited is not None and waited > 1.5 * timeout else "")
        super().__init__(
            f"timeout after {timeout:g} s{busy}: {done}ranks {sorted(stuck)} did not finish.\n"
            + "\n".join(lines)
            + "\nA rank waiting for a message nobody sends, or ranks calling different"
            " collectives, deadlock. If the run is only slow, pass a larger timeout=."
        )


def where_stuck(stack_dump: str) -> str:
    """Summarise a faulthandler dump: the torch.distributed call and the user line above it."""
    frames = re.findall(r'File "([^"]+)", line (\d+) in (\S+)', stack_dump)
    if not frames:
        return "no stack available (the rank may be stuck in C code outside Python)"
    # faulthandler lists the main thread last and each thread most recent call first.
    blocks = [b for b in stack_dump.strip().split("\n\n") if 'File "' in b]
    main = blocks[-1] if blocks else stack_dump
    frames = re.findall(r'File "([^"]+)", line (\d+) in (\S+)', main) or frames
    dist_op = next((fn for f, _, fn in frames if "torch/distributed" in f
                    and fn not in ("wrapper", "_time_logger", "_exception_logger")), None)
    user = next(((f, int(n), fn) for f, n, fn in frames
                 if "/lib/python3" not in f and "course_lib/launcher" not in f and "course_lib/comm" not in f
                 and "multiprocessing" not in f and f != "<string>"), None)
    # The outermost course_lib.comm function is the one the learner called; comm's guard around
    # torch.distributed's own send/recv ("checked_send", ...) stands for that torch call.
    course = next((fn for f, _, fn in reversed(frames) if "course_lib/comm" in f and fn != "noted"), None)
    parts = []
    if course and course.startswith("checked_"):
        parts.append(f"blocked in torch.distributed.{course[len('checked_'):]}")
    elif course:
        parts.append(f"blocked in course_lib.comm.{course}")
    elif dist_op:
        parts.append(f"blocked in torch.distributed.{dist_op}")
    elif user and "Fatal Python error" not in stack_dump:
        parts.append("blocked (e.g. in Work.wait() or a loop)")
    if user:
        f, n, fn = user
        src = linecache.getline(f, n).strip()
        parts.append(f"called from {fn}() line {n}" + (f": `{src}`" if src else f" of {f}"))
    return ", ".join(parts) or "stack: " + main[-300:]


MISMATCH = re.compile(r"Detected mismatch between collectives")
_FINGERPRINT = re.compile(r"Rank (\d+) is running collective: CollectiveFingerPrint\(SequenceNumber=(\d+),? ?"
                          r"OpType=(\w+)(?:, TensorShape=\[([^\]]*)\], TensorDtypes=(\w+))?")


# PyTorch's names in a collective's fingerprint -> the torch.distributed call a learner wrote
_OP_NAMES = {"ALLREDUCE": "all_reduce", "BROADCAST": "broadcast", "REDUCE": "reduce", "ALLGATHER": "all_gather",
             "_ALLGATHER_BASE": "all_gather_into_tensor", "ALLGATHER_COALESCED": "all_gather_coalesced",
             "GATHER": "gather", "SCATTER": "scatter", "REDUCE_SCATTER": "reduce_scatter",
             "_REDUCE_SCATTER_BASE": "reduce_scatter_tensor", "ALLTOALL_BASE": "all_to_all_single",
             "ALLTOALL": "all_to_all", "BARRIER": "barrier"}
_DTYPE_NAMES = {"Float": "float32", "Double": "float64", "Half": "float16", "BFloat16": "bfloat16",
                "Long": "int64", "Int": "int32", "Short": "int16", "Char": "int8", "Byte": "uint8", "Bool": "bool"}


def mismatch_error(r: int, e: dict, errors: dict[int, dict]) -> CollectiveMismatchError:
    """Translate PyTorch's fingerprint mismatch into each rank's call and the learner's line."""
    found = _FINGERPRINT.findall(e["message"])
    calls = {int(rank): _OP_NAMES.get(op, op.lower()) + (f"(shape [{shape}], {_DTYPE_NAMES.get(dtype, dtype)})"
                                                        if dtype else "()")
             for rank, _, op, shape, dtype in found}
    sequence = {int(rank): int(seq) for rank, seq, *_ in found}
    a, b = sorted(calls)[:2] if len(calls) >= 2 else (r, r)
    aspects = e["message"].split("differ in the following aspects:")[-1]
    what = [word for key, word in (("Op type", "collective"), ("shape", "shape"), ("dtype", "dtype"))
            if key in aspects] or ["arguments"]
    rule = "the same collective, in the same order" + (
        f", with tensors of the same {' and '.join(w for w in what if w != 'collective')}"
        if set(what) - {"collective", "arguments"} else "")
    if "Sequence number" in aspects and len(sequence) >= 2:
        rule += (f"; rank {a} had made {sequence[a]} calls on this group before, rank {b} {sequence[b]}: "
                 "a rank skipped or added a collective")
    summary = (f"rank {a} called {calls.get(a, '?')} while rank {b} called {calls.get(b, '?')}: "
               f"every rank must call {rule}")
    where = {}
    for rank in calls:
        line = user_line(errors.get(rank, {}).get("traceback", ""))
        where[rank] = f"{calls[rank]}" + (f", called from {line}" if line else "")
    return CollectiveMismatchError(r, summary, where, e["traceback"])


def user_line(tb: str) -> str:
    """The learner's innermost line in a formatted traceback: ``fn() line n: `source```."""
    frames = re.findall(r'File "([^"]+)", line (\d+), in (\S+)', tb)
    user = [(f, n, fn) for f, n, fn in frames
            if "/lib/python3" not in f and "torch/" not in f
            and "course_lib/launcher" not in f and "course_lib/comm" not in f]
    if not user:
        return ""
    f, n, fn = user[-1]
    src = linecache.getline(f, int(n)).strip()  # a notebook cell's source is in this kernel's linecache
    return f"{fn}() line {n}" + (f": `{src}`" if src else "")
