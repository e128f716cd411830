"""Run a notebook's graded checks in a process of their own, apart from the learner's code.

The autograder runs the learner's cells in a Jupyter kernel, but each graded test cell there
only *captures* what the check needs (``ring_shift``, ``CopyToTP``...) with cloudpickle
(:func:`capture`). The checks then run here, in a fresh Python process that imports the
course's checkers itself, execs the solution's own import cells and the hidden test cell, and
reports one JSON line per question on a channel of its own.

This process decides the scores, and it never runs the learner's code nor unpickles what the
learner made: the captured answers are loaded in an *answer process* it forks
(:mod:`course_lib.grading.isolation`), the checks hold them as handles, and every call of the
learner's code, every launch of its ranks and the borrow search run there. What comes back is
read as data only (:mod:`course_lib.grading.safe_pickle`), and the comparisons that decide a
score run here. So nothing an answer does, in the kernel (``ch00.check_ring_shift = ...``) or
while it is checked (patching ``ch01._close`` when called, a pickle whose loading replaces
``builtins.exec``), reaches the checks. What remains is in the README ("What an answer may
use"): the answer process and the ranks run as the same user as this one.

    python -m course_lib.grading.checker [JOB.pkl]    # else the job comes pickled on stdin
"""
from __future__ import annotations

import ast
import builtins
import json
import os
import pickle
import sys
from typing import Any

import cloudpickle

MISSING = "__course_missing__"


def needed_names(test_source: str, imports_source: str) -> list[str]:
    """The names a test cell reads that the notebook's import cells do not define: the answers."""
    bound = set(dir(builtins))
    for node in ast.walk(ast.parse(imports_source)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            bound |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            bound.add(node.id)
    out: list[str] = []
    for node in ast.walk(ast.parse(test_source)):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id not in bound \
                and node.id not in out:
            out.append(node.id)
    return out


def capture(ns: dict, names: list[str], path: str) -> None:
    """In the learner's kernel, at a test cell: save ``names`` from the notebook's globals."""
    missing = [n for n in names if n not in ns]
    if missing:
        payload: Any = f"NameError: name {missing[0]!r} is not defined (run the cell that defines it)"
    else:
        try:
            payload = cloudpickle.dumps({n: ns[n] for n in names})
        except Exception as e:  # noqa: BLE001 - any pickling failure is the learner's to fix
            payload = (f"PicklingError: your answer could not be sent to the grader "
                       f"({type(e).__name__}: {e}); define it at the top level of its cell")
    with open(path, "wb") as f:
        pickle.dump(payload, f)


def run_one(imports: str, grade_id: str, source: str, blob: str, host: Any = None) -> str | None:
    """Run one test cell on the captured answer; None if it passed, else ``"Kind: message"``.

    ``host``: the :class:`~course_lib.grading.isolation.Host` to use (one per notebook); by
    default one for this question."""
    # Imported here, not at the top: the learner's kernel imports this module for capture().
    from course_lib.grading import isolation
    own = host is None
    host = host or isolation.Host()
    ns: dict[str, Any] = {"__name__": "__main__"}
    try:
        with isolation.hosted(host):
            # The imports first: an answer process forked after them starts with them loaded.
            exec(compile(imports, "<the notebook's imports>", "exec"), ns)
            answers = host.answers(blob)
            if isinstance(answers, str):
                return answers
            ns.update(answers)
            exec(compile(source, f"<test cell {grade_id}>", "exec"), ns)
        return None
    except KeyboardInterrupt:
        return "KeyboardInterrupt: the check was interrupted"
    except BaseException as e:  # noqa: BLE001 - SystemExit from the learner's code counts too
        text = str(e) if type(e).__name__ == "CheckFailed" else f"{type(e).__name__}: {e}"
        if type(e).__name__ == "CheckFailed":
            text = f"CheckFailed: {text}"
        return text[:2000]
    finally:
        if own:
            host.stop()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Started while the learner's cells still run in the kernel: import what the checks need
    # now, then wait for the job (on stdin, or in the file named).
    import torch  # noqa: F401
    import course_lib.launcher  # noqa: F401
    from course_lib.grading import isolation
    if argv:
        with open(argv[0], "rb") as f:
            job = pickle.load(f)
    else:
        job = pickle.load(sys.stdin.buffer)
    # The results go to our own copy of stdout; everything else printed (checks' ✓ lines, the
    # learner's prints, worker output) goes to stderr, which the autograder keeps in a log.
    results = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    host = isolation.Host(close_fds=(results.fileno(),))
    for grade_id, source, blob in job["tests"]:
        err = run_one(job["imports"], grade_id, source, blob, host)
        results.write(json.dumps({"grade_id": grade_id, "error": err}) + "\n")
        results.flush()
    host.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
