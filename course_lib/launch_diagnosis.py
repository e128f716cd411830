"""What went wrong in a launch: read what the ranks left in the run directory (error reports,
stack dumps, notes of the collective each is in) and build the one error the learner sees.

The launcher (:mod:`course_lib.launcher`) decides *when* a run has failed; this module says *why*,
at the cause: the first rank that raised (not its peers' "connection closed"), the rank that
crashed and its line, both ends of a message that does not fit its buffer, the ranks blocked
in collectives on different groups, or each stuck rank's call after a timeout. The error
classes themselves are in :mod:`course_lib.launch_errors`.
"""
from __future__ import annotations

import os
import pickle
import re
import signal
import time

from course_lib.launch_errors import (MISMATCH, PEER_CLOSED, CollectiveMismatchError, DeadlockError, LaunchError,
                                      WorkerError, mismatch_error, user_line, where_stuck)

GRACE = 2.0  # seconds a rank's peers get to report after it failed, before being killed


def read(path: str) -> str:
    """A file of the run directory, or "" if the rank has not written it (yet)."""
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def _errors(run_dir: str, ranks: list[int]) -> dict[int, dict]:
    out = {}
    for r in ranks:
        path = os.path.join(run_dir, f"rank{r}.error")
        if os.path.exists(path):
            with open(path, "rb") as f:
                out[r] = pickle.load(f)
    return out


def has_root_cause(run_dir: str, failed: list[int]) -> bool:
    return any(not PEER_CLOSED.search(e["message"]) for e in _errors(run_dir, failed).values())


def worker_error(procs, run_dir, failed) -> LaunchError:
    """The error to show: a real cause beats a rank that died silently beats "peer closed"."""
    errors = _errors(run_dir, failed)
    causes = {r: e for r, e in errors.items() if not PEER_CLOSED.search(e["message"])}
    silent = [r for r in failed if r not in errors]
    if not causes and silent:  # died without a report: killed by a signal or os._exit
        r = silent[0]
        code = procs[r].exitcode
        why = f"signal {-code} ({signal.Signals(-code).name})" if code < 0 else f"exit code {code}"
        crash = read(os.path.join(run_dir, f"rank{r}.crash")).split("\nExtension modules:")[0].strip()
        if "Fatal Python error" in crash:
            return WorkerError(r, "WorkerCrashed", _crash_message(why, crash, read(os.path.join(run_dir, f"rank{r}.out"))),
                               crash)
        return WorkerError(r, "WorkerDied", f"the process ended abruptly with {why} "
                           "(out of memory? os._exit? a crash in C code?)", "(no Python traceback)")
    causes = causes or errors
    r = min(causes, key=lambda k: causes[k]["time"])
    e = causes[r]
    if MISMATCH.search(e["message"]):
        return mismatch_error(r, e, _errors_of_every_rank(procs, run_dir))
    message = e["message"]
    sender = _P2P_MISMATCH.search(message)
    if sender:  # a message that does not fit its receive buffer: both ends of it
        line = user_line(e["traceback"])
        message += f"\n  rank {r}: received" + (f", called from {line}" if line else "")
        s = int(sender[1])
        if 0 <= s < len(procs):
            where = _stacks(procs, run_dir, [s])[s]
            message += f"\n  rank {s}: sent" + (f", called from {where.split(', called from ', 1)[1]}"
                                                if ", called from " in where else " it (and has moved on)")
    else:
        line = user_line(e["traceback"])
        last = re.findall(r'File "([^"]+)", line (\d+), in (\S+)', e["traceback"])
        if line and last and not line.startswith(f"{last[-1][2]}() line {last[-1][1]}"):
            message += f"\n  rank {r}: called from {line}"  # raised inside the course or torch: the learner's line
    return WorkerError(r, e["exc_type"], message, e["traceback"])


_P2P_MISMATCH = re.compile(r"receives into .* but rank (\d+) sent")
_GLOO_SIZE = re.compile(r"(\d+) vs (\d+)\. Received data size doesn't match expected size")


def _crash_message(why: str, crash: str, output: str) -> str:
    """What a rank that crashed in C code was doing, and the likely cause when gloo said it."""
    where = where_stuck(crash).replace("blocked in", "in")
    size = _GLOO_SIZE.search(output)
    if size:
        return (f"the process crashed with {why} inside gloo: a message of {size[1]} bytes arrived for a receive "
                f"buffer of {size[2]} bytes ({where}). The receive buffer must have the sender's shape and dtype")
    hint = (". A crash inside torch.distributed usually means the ranks disagree about a call: its peer, "
            "the tensor's shape or dtype" if "torch/distributed" in crash or "course_lib/comm" in crash else "")
    return f"the process crashed with {why} inside C code, {where}{hint}"


def _errors_of_every_rank(procs, run_dir: str) -> dict[int, dict]:
    """Every rank's error report, waiting up to the grace period for ranks still writing theirs."""
    deadline = time.time() + GRACE
    while True:
        errors = _errors(run_dir, list(range(len(procs))))
        pending = [r for r, p in enumerate(procs) if r not in errors and p.exitcode is None]
        if not pending or time.time() > deadline:
            return errors
        time.sleep(0.02)


def blocked_on_different_groups(procs, run_dir, finished) -> dict[int, list[str]] | None:
    """Each unfinished rank's collective, when every one of them is inside a collective that cannot finish.

    A collective finishes only once every rank of its group has called it on that group. If each
    unfinished rank waits in a collective (its note says ``in``) and no group has all its ranks
    waiting on it, no rank can ever move on: a certain deadlock, found without the timeout.
    """
    waiting = [r for r, p in enumerate(procs) if p.exitcode is None and r not in finished]
    notes = {}
    for r in waiting:
        parts = read(os.path.join(run_dir, f"rank{r}.call")).strip().split("|")
        if len(parts) < 6 or parts[1] != "in":
            return None
        notes[r] = parts
    for r, (_, _, op, ranks, group, _) in notes.items():
        members = [int(m) for m in ranks.strip("[]").split(",") if m.strip()]
        if all(m in notes and notes[m][4] == group for m in members):
            return None  # this group's collective has all its ranks: it can finish
    if len({parts[4] for parts in notes.values()}) < 2:
        return None  # one group: a mismatch torch's check reports itself, or ranks that finished early
    return notes


def group_mismatch_error(procs, run_dir, notes) -> CollectiveMismatchError:
    stuck = _stacks(procs, run_dir, list(notes))
    calls = {}
    for r, (_, _, op, _, group, what) in sorted(notes.items()):
        line = stuck[r].split(", called from ", 1)[1] if ", called from " in stuck[r] else ""
        calls[r] = f"{op}({what}) on {group}" + (f", called from {line}" if line else "")
    a, b = sorted(notes)[:2]
    summary = (f"rank {a} called {notes[a][2]} on {notes[a][4]} while rank {b} called {notes[b][2]} on "
               f"{notes[b][4]}: every rank must call each collective on the same group, so these wait for "
               "each other forever")
    return CollectiveMismatchError(a, summary, calls, "")


def _stacks(procs, run_dir, ranks) -> dict[int, str]:
    """Where each of ``ranks`` is now: its torch.distributed call and the learner's line, from its stack."""
    for r in ranks:
        try:
            os.kill(procs[r].pid, signal.SIGUSR1)
        except ProcessLookupError:
            pass
    # faulthandler writes each stack from a signal handler; on a busy machine that takes a while.
    # A main thread's dump ends with the worker's entry point, so wait for that line (at most 3 s).
    stacks: dict[int, str] = {}
    deadline = time.time() + 3.0
    while True:
        stacks = {r: read(os.path.join(run_dir, f"rank{r}.stack")) for r in ranks}
        exited = {r for r in ranks if procs[r].exitcode is not None}
        if all("in _worker_main" in stacks[r] or r in exited for r in ranks) or time.time() > deadline:
            break
        time.sleep(0.05)
    where = {r: where_stuck(text) for r, text in stacks.items()}
    for r, e in _errors(run_dir, [r for r in ranks if "in _worker_main" not in stacks[r]]).items():
        line = user_line(e["traceback"])  # a rank that ended meanwhile (e.g. its peer went): its last call
        where[r] = f"ended with {e['exc_type']}" + (f", called from {line}" if line else "")
    return where


def deadlock_error(procs, run_dir, timeout, finished, waited) -> DeadlockError:
    stuck_ranks = [r for r, p in enumerate(procs) if p.exitcode is None and r not in finished]
    return DeadlockError(timeout, _stacks(procs, run_dir, stuck_ranks), sorted(finished), waited=waited)
