"""Grade a folder of submitted notebooks into CSVs of scores.

    python -m course_lib.grading.autograde submissions/ --out scores.csv [-j 2]
        [--student alice --student bob] [--notebook 03] [--resume] [--run-all]

Layout: ``submissions/<student>/<anything>.ipynb``. Each notebook is matched to its
assignment in ``solutions/`` by name, or, when renamed (``00_collectives-Copy1.ipynb``), by
its content (its test cells). For each submission the learner's cells run in a fresh kernel
with the test cells restored from the solution (:func:`course_lib.grading.notebook.for_grading`);
at each test cell the kernel only captures the learner's answer, and the checks run in a
separate process (:mod:`course_lib.grading.checker`), so an answer cell cannot patch them.
A check also fails an answer that uses the course's implementation of what it asks for
(:mod:`course_lib.grading.borrow`). The solution's "try it yourself" cells are not run
again unless ``--run-all``.

Two CSVs, both rewritten as each notebook finishes (an interrupted run keeps what it did;
``--resume`` skips what ``--out`` already has):

* ``scores.csv``: one row per submission, also for one that could not be graded (``status``
  says why). Columns: student, assignment, file, status, ``NN.qK`` per question of every
  assignment, score, max, seconds, feedback.
* ``scores-students.csv``: one row per student: ``NN.qK`` and ``NN.total`` per assignment,
  total and max over all assignments (a student's best submission of each assignment), and
  ``problems``: each of the student's notebooks that was not simply matched by name and graded,
  with how it was (``00_collectives-Copy1.ipynb: renamed, matched to 00_collectives.ipynb by
  content``; ``metadata stripped, restored by content``; ``blank: no question answered``;
  ``unreadable notebook (NotJSONError: ...)``).

An answer cell left exactly as handed out (``raise NotImplementedError()``) scores 0 with "not
answered yet" without running its check; a notebook with no answer at all starts no kernel.

A learner's infinite loop or deadlock costs only that question: the launcher ends deadlocked
ranks after its own timeout, a cell or check running longer than ``--cell-timeout`` is
interrupted (or its process killed), and grading continues in a fresh kernel or process.
"""
from __future__ import annotations

import argparse
import ast
import csv
import json
import math
import multiprocessing
import os
import pickle
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError

from course_lib.grading.checker import needed_names
from course_lib.grading.notebook import (for_grading, is_answer, is_test, key, meta, strip_solution, test_ids_by_content,
                                        to_exercise, without_markers)

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = "CellTimeout"
DEAD = "DeadKernel"
NOT_ANSWERED = "not answered yet: replace `raise NotImplementedError()` with your code"
CHECK_MIN_S = 90  # the shortest time a check process gets per question
# Extra time for importing torch on a busy machine: a check process's first question, and the
# cells before a notebook's first answer (the course's imports).
STARTUP_S = 120
# How long a grading kernel may take to start and answer. nbclient's default, 60 s, was once
# exceeded while a class was graded 2 at a time beside the test suite on 2 cores; a kernel that
# starts slowly is the machine's fault, not the submission's.
KERNEL_STARTUP_S = 300
# Kernel starts per graded run before grading fails: jupyter_client picks free ports, closes them
# and hands them to the kernel, and on a busy machine another process can bind one in between
# (ZMQError "Address already in use"; the kernel dies before it answers, jupyter_client#154).
KERNEL_START_TRIES = 3


@dataclass
class Result:
    student: str
    notebook: str  # the assignment, e.g. "03_ring_collectives.ipynb"; "" when unknown
    file: str = ""  # the submission, relative to the submissions folder
    status: str = "graded"  # or why it could not be graded
    scores: dict[str, float] = field(default_factory=dict)  # grade_id -> points earned
    max_scores: dict[str, float] = field(default_factory=dict)
    feedback: dict[str, str] = field(default_factory=dict)  # grade_id -> why it failed
    seconds: float = 0.0

    @property
    def total(self) -> float:
        return sum(self.scores.values())


def prefix(notebook: str) -> str:
    """Column prefix of an assignment: "03" for "03_ring_collectives.ipynb"."""
    return notebook.split("_")[0]


# ----------------------------------------------------------------------------- the kernel
def _error_text(cell: Any, reply: dict | None) -> str | None:
    """None if the cell ran cleanly, else a one-line reason."""
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            return f"{out['ename']}: {out['evalue']}".splitlines()[0][:500]
    if reply is not None and reply.get("content", {}).get("status") == "error":
        c = reply["content"]
        return f"{c.get('ename', 'Error')}: {c.get('evalue', '')}".splitlines()[0][:500]
    return None


def run_graded(nb: Any, cell_timeout: float, cwd: Path, log: Any = None) -> dict[int, str | None]:
    """Execute ``nb`` in place; return {cell index: error text or None} for every code cell.

    A cell that times out or kills the kernel is recorded as failed, and grading resumes in a
    fresh kernel (a code that ignores the interrupt would otherwise block every later cell):
    the earlier cells, except tests and the failed ones, are run again first. The kernel's
    own output (its warnings, worker tracebacks) goes to ``log``, not to the terminal.

    The kernel does not warm up the launcher's forkserver (``COURSE_NO_WARM_UP``): a learner
    reading the notebook gains from it, a graded run only pays for it, since its test cells
    launch nothing (the checks run elsewhere). A cell that does launch starts one then.
    """
    replies: dict[int, dict] = {}
    status: dict[int, str | None] = {}
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    broken: set[int] = set()
    start = 0
    out = log or subprocess.DEVNULL
    env = dict(os.environ, COURSE_NO_WARM_UP="1")
    # The cells before the first answer are the course's own (its imports): a busy machine, not the
    # learner, makes them slow, and a timeout there would leave every answer without its imports.
    first = next((i for i, c in enumerate(nb.cells) if is_answer(c) or is_test(c)), len(nb.cells))
    setup = {c.source for c in nb.cells[:first] if c.cell_type == "code"}

    def limit(cell: Any) -> int:
        return max(1, round(max(cell_timeout, STARTUP_S) if cell.source in setup else cell_timeout))

    def timed_out(cell: Any) -> str:
        return f"this cell timed out: it ran longer than {limit(cell)} s (an infinite loop or a deadlock?)"

    def make_client() -> NotebookClient:
        return NotebookClient(
            nb, timeout=max(1, round(cell_timeout)), startup_timeout=KERNEL_STARTUP_S, timeout_func=limit,
            interrupt_on_timeout=True, allow_errors=True,
            # for a cell that ignores the interrupt; one that stops ends with KeyboardInterrupt (below)
            error_on_timeout={"ename": TIMEOUT, "evalue": "this cell timed out"},
            kernel_name="python3", resources={"metadata": {"path": str(cwd)}},
            on_cell_executed=lambda cell, cell_index, execute_reply: replies.__setitem__(cell_index, execute_reply),
        )

    while start < len(code):
        with _kernel(make_client, stdout=out, stderr=out, env=env) as client:
            for i in code[:start]:  # a fresh kernel after a failure: restore the state so far
                if i not in broken and not is_test(nb.cells[i]):
                    client.execute_cell(nbformat.from_dict(nb.cells[i]), i)
            for k in range(start, len(code)):
                i = code[k]
                try:
                    client.execute_cell(nb.cells[i], i)
                    status[i] = _error_text(nb.cells[i], replies.get(i))
                    if status[i] and status[i].split(":")[0] in ("KeyboardInterrupt", TIMEOUT):
                        # Nobody presses Ctrl-C in a graded run: that was the interrupt at the time limit.
                        status[i] = f"{TIMEOUT}: {timed_out(nb.cells[i])}"
                except DeadKernelError:
                    status[i] = f"{DEAD}: this cell killed the kernel (os._exit, a crash in C code, or out of memory)"
                except Exception as e:  # noqa: BLE001 - a kernel that stopped answering
                    status[i] = f"{DEAD}: the kernel stopped answering while running this cell ({type(e).__name__})"
                if status[i] and status[i].split(":")[0] in (TIMEOUT, DEAD):
                    broken.add(i)
                    start = k + 1
                    break
            else:
                start = len(code)
    return status


@contextmanager
def _kernel(make_client: Callable[[], NotebookClient], **kwargs: Any) -> Iterator[NotebookClient]:
    """A client with its kernel started (``setup_kernel(**kwargs)``), started again with fresh
    ports, up to KERNEL_START_TRIES times, if the kernel dies before it answers."""
    for attempt in range(1, KERNEL_START_TRIES + 1):
        client = make_client()
        setup = client.setup_kernel(**kwargs)
        try:
            setup.__enter__()
        except RuntimeError as e:  # nbclient has shut that kernel down already
            if "Kernel died before replying" in str(e) and attempt < KERNEL_START_TRIES:
                continue
            raise
        try:
            yield client
        except BaseException:
            if not setup.__exit__(*sys.exc_info()):
                raise
        else:
            setup.__exit__(None, None, None)
        return


# ----------------------------------------------------------------------------- the checks
def _reader(stream: Any, q: queue.Queue) -> None:
    for line in stream:
        q.put(line.decode())
    q.put(None)


def start_checker(cwd: Path, log: Any = None) -> subprocess.Popen:
    """A check process, started early: it imports torch while the kernel runs, then waits for
    its job on stdin (:func:`run_checks`)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return subprocess.Popen([sys.executable, "-m", "course_lib.grading.checker"], cwd=cwd, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log or subprocess.DEVNULL,
                            start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    """End a check process and the ranks it launched (they share its session)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def run_checks(imports: str, tests: list[tuple[str, str, str]], cell_timeout: float, cwd: Path,
               log: Any = None, first: subprocess.Popen | None = None) -> dict[str, str | None]:
    """Run each (grade_id, test source, captured answer) in a check process; {grade_id: error}.

    A check running past its deadline (or whose process dies) fails its question; the rest
    continue in a new process. ``first``: a process :func:`start_checker` started earlier.
    """
    results: dict[str, str | None] = {}
    remaining = list(tests)
    # The checks end a deadlock themselves (the launcher's timeout) and bound the learner's
    # in-process code (chapter 1's time limit); this deadline is the backstop, so it allows for
    # a busy machine: a check launches several runs, each starting its ranks.
    check_timeout = max(cell_timeout, CHECK_MIN_S)
    while remaining:
        proc, first = first or start_checker(cwd, log), None
        q: queue.Queue = queue.Queue()
        threading.Thread(target=_reader, args=(proc.stdout, q), daemon=True).start()
        try:
            try:
                proc.stdin.write(pickle.dumps({"imports": imports, "tests": remaining}))
                proc.stdin.close()
            except BrokenPipeError:
                pass  # it died already: reported below as for the first question
            for k, (gid, _, _) in enumerate(remaining):
                try:
                    line = q.get(timeout=check_timeout + (STARTUP_S if k == 0 else 0))
                except queue.Empty:
                    results[gid] = (f"{TIMEOUT}: the check timed out: it ran longer than {check_timeout:g} s "
                                    "(an infinite loop or a deadlock in your code?)")
                    remaining = remaining[k + 1:]
                    break
                if line is None:
                    results[gid] = (f"{DEAD}: your code ended the process that checked it (os._exit, "
                                    "a crash in C code, or out of memory)")
                    remaining = remaining[k + 1:]
                    break
                rec = json.loads(line)
                results[rec["grade_id"]] = rec["error"]
            else:
                remaining = []
        finally:
            stop(proc)
    return results


# ----------------------------------------------------------------------------- one notebook
def question_label(source: Any, gid: str) -> str:
    """How a check names its question ("Q1 ring_shift"), read from the solution's saved output."""
    text = "".join(o.get("text", "") for c in source.cells if is_test(c) and meta(c)["grade_id"] == gid
                   for o in c.get("outputs", []))
    m = re.search(r"✓ (.+?) passed", text)
    return m.group(1) if m else gid.upper()


def _defines(source: str) -> set[str]:
    """Top-level names a cell defines (functions, classes, assignments, imports)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    out = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            out |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            out |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return out


def unanswered(nb: Any, source: Any, imports: str) -> set[str]:
    """grade_ids of the test cells of ``nb`` (the notebook :func:`for_grading` made) whose answer
    is still the exercise's stub: a name the test reads was last defined by an answer cell left
    exactly as handed out (``raise NotImplementedError()``), and no cell the learner wrote or
    changed ran in between (it could define the name again). Their checks would only say "not
    answered yet"; the grader says it without running them."""
    stubs = {key(strip_solution(c.source)): _defines(without_markers(c.source)) for c in source.cells if is_answer(c)}
    handed_out = {key(c.source) for c in to_exercise(source).cells if c.cell_type == "code"}
    from_stub: set[str] = set()  # names whose last definition is an unchanged stub
    out = set()
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        k = key(cell.source)
        if is_test(cell):
            if set(needed_names(cell.source, imports)) & from_stub:
                out.add(meta(cell)["grade_id"])
        elif k in stubs:
            from_stub |= stubs[k]
        elif k not in handed_out:
            from_stub = set()  # the learner's own code: anything may be defined again
    return out


def grade_notebook(path: Path, solution: Path, student: str, cell_timeout: float = 180,
                   run_all: bool = False, log: Any = None) -> Result:
    t = time.time()
    source = nbformat.read(solution, as_version=4)
    submitted = nbformat.read(path, as_version=4)
    nb = for_grading(submitted, source, run_all=run_all)
    res = Result(student, solution.name, status=_graded(how_tests_were_found(submitted, source)))
    code = [c for c in source.cells if c.cell_type == "code"]
    first = next(i for i, c in enumerate(code) if is_answer(c) or is_test(c))
    imports = "\n".join(without_markers(c.source) for c in code[:first])
    blank = unanswered(nb, source, imports)
    tests, test_cell = [], {}
    status: dict[int, str | None] = {}
    errors: dict[str, str | None] = {gid: f"CheckFailed: {question_label(source, gid)}: {NOT_ANSWERED}" for gid in blank}
    with tempfile.TemporaryDirectory(prefix="grade-") as tmp:
        work = Path(tmp)
        for i, cell in enumerate(nb.cells):
            if is_test(cell):
                gid = meta(cell)["grade_id"]
                res.max_scores[gid] = float(meta(cell).get("points", 0))
                test_cell[gid] = i
                if gid in blank:
                    cell.source = "pass  # not answered yet: the check is not run"
                    continue
                blob = work / f"{gid}.answer"
                names = needed_names(cell.source, imports)
                cell.source = (f"__import__('course_lib.grading.checker', fromlist=['capture'])"
                               f".capture(globals(), {names!r}, {str(blob)!r})")
                tests.append((gid, without_markers(source_test(source, gid)), str(blob)))
        if tests:  # else nothing is answered: no kernel, no check process
            checker = start_checker(path.parent, log)
            try:
                status = run_graded(nb, cell_timeout, path.parent, log)
            except BaseException:
                stop(checker)
                raise
            errors.update(run_checks(imports, tests, cell_timeout, path.parent, log, first=checker))
        else:
            res.status = _graded(["blank: no question answered"] + how_tests_were_found(submitted, source))
    for gid, i in test_cell.items():
        err = status.get(i) or errors.get(gid, "not run")
        if err and err.startswith("NameError"):
            # The answer was never defined: say why, if a cell before this test broke.
            broke = [status[j] for j in range(i) if status.get(j) and status[j].split(":")[0] in (TIMEOUT, DEAD)
                     and not is_test(nb.cells[j])]
            if broke:
                m = re.search(r"name '(\w+)'", err)
                err = broke[-1] + f"; so `{m.group(1) if m else 'your answer'}` was never defined"
        res.scores[gid] = 0.0 if err else res.max_scores[gid]
        if err:
            res.feedback[gid] = err
    res.seconds = time.time() - t
    return res


def how_tests_were_found(submission: Any, source: Any) -> list[str]:
    """Notes for the instructor on test cells :func:`for_grading` had to restore."""
    tests = [meta(c)["grade_id"] for c in source.cells if is_test(c)]
    by_meta = {meta(c).get("grade_id") for c in submission.cells}
    by_content = test_ids_by_content(source)
    found = {by_content.get(key(c.source)) for c in submission.cells if c.cell_type == "code"}
    notes = []
    stripped = [g for g in tests if g not in by_meta and g in found]
    if stripped and not any(meta(c) for c in submission.cells):  # an editor dropped all nbgrader metadata
        notes.append("metadata stripped, restored by content")
    elif stripped:
        notes.append(f"metadata of test cell(s) {', '.join(stripped)} stripped, restored by content")
    deleted = [g for g in tests if g not in by_meta and g not in found]
    if deleted:
        notes.append(f"test cell(s) {', '.join(deleted)} deleted or edited, restored from the solution")
    return notes


def _graded(notes: list[str]) -> str:
    """A graded row's status: "graded", or "graded (note; note)"."""
    return "graded" + (f" ({'; '.join(notes)})" if notes else "")


def notes_of(status: str) -> str:
    """What a status says beyond "graded" (for the problems column): the notes in its
    parentheses, or the whole status of a notebook that could not be graded."""
    if status == "graded":
        return ""
    return status[len("graded ("):-1] if status.startswith("graded (") else status


def source_test(source: Any, gid: str) -> str:
    return next(c.source for c in source.cells if is_test(c) and meta(c)["grade_id"] == gid)


# ----------------------------------------------------------------------------- a folder
def match_assignment(path: Path, solutions: dict[str, Any]) -> tuple[str | None, str]:
    """(the assignment's file name or None, why): by name, else by the test cells it contains."""
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as e:  # noqa: BLE001 - truncated JSON, not a notebook, unreadable bytes
        # the reason, without the excerpt of the file some errors quote after it
        reason = re.split(r": ['\"{]", str(e).splitlines()[0])[0][:200] if str(e) else ""
        return None, f"unreadable notebook ({type(e).__name__}: {reason})"
    if path.name in solutions:
        return path.name, ""
    best, hits = None, 0
    for name, src in solutions.items():
        ids = {meta(c).get("grade_id") for c in nb.cells} & {meta(c)["grade_id"] for c in src.cells if is_test(c)}
        content = test_ids_by_content(src)
        n = sum(1 for c in nb.cells if key(c.source) in content)
        score = n + len(ids)
        if score > hits:
            best, hits = name, score
    if best is None:
        return None, "no matching assignment (none of the solutions' test cells is in this notebook)"
    return best, f"renamed, matched to {best} by content"


def submissions(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"no folder {folder}: give the folder that holds <student>/<notebook>.ipynb")
    subs = sorted(p for p in folder.glob("*/*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    if not subs:
        raise FileNotFoundError(f"no submissions found as {folder}/<student>/<notebook>.ipynb")
    return subs


def _grade_one(path: Path, rel: str, student: str, solution: Path, matched: str, cell_timeout: float,
               run_all: bool, log_path: Path | None) -> Result:
    """One submission, in a pool worker; never raises: a failure is the row's status.
    ``matched``: how the submission was matched to ``solution``, if not by its name."""
    t = time.time()
    with open(log_path or os.devnull, "a") as log:
        try:
            r = grade_notebook(path, solution, student, cell_timeout, run_all, log)
            if matched:
                r.status = _graded([matched] + ([notes_of(r.status)] if notes_of(r.status) else []))
        except Exception as e:  # noqa: BLE001 - one bad notebook must not lose the class
            r = Result(student, solution.name, status=f"grading failed ({type(e).__name__}: {str(e)[:200]})")
    r.file, r.seconds = rel, time.time() - t
    return r


def grade_folder(folder: Path, solutions: Path, cell_timeout: float = 180, log: Callable = print, *,
                 jobs: int = 1, students: list[str] | None = None, notebooks: list[str] | None = None,
                 done: set[str] = frozenset(), run_all: bool = False, on_result: Callable | None = None,
                 log_path: Path | None = None) -> list[Result]:
    """Grade every submission (filtered by student name and notebook prefix); each Result is
    passed to ``on_result`` as soon as it is known. ``done``: files (relative) to skip."""
    if not timeout_ok(cell_timeout):
        raise ValueError(f"cell_timeout={cell_timeout!r}: give a number of seconds, at least 1")
    sols = {p.name: nbformat.read(p, as_version=4) for p in sorted(solutions.glob("*.ipynb"))}
    results: list[Result] = []
    pending = []
    for p in submissions(folder):
        rel, student = str(p.relative_to(folder)), p.parent.name
        if rel in done or (students and student not in students):
            continue
        name, why = match_assignment(p, sols)
        guess = name or next((s for s in sols if prefix(s) == prefix(p.name)), "")
        if notebooks and not any(guess.startswith(n) or p.name.startswith(n) for n in notebooks):
            continue
        if name is None:
            r = Result(student, guess, rel, status=why)
            log(f"{student:>20} {p.name}: not graded: {why}")
            results.append(r)
            if on_result:
                on_result(r)
            continue
        pending.append((p, rel, student, solutions / name, why))

    def finish(r: Result) -> None:
        log(f"{r.student:>20} {r.file}: {r.total:g}/{sum(r.max_scores.values()):g} in {r.seconds:.1f} s"
            + ("" if r.status == "graded" else f" [{r.status}]"))
        results.append(r)
        if on_result:
            on_result(r)

    args = [(p, rel, st, sol, why, cell_timeout, run_all, log_path) for p, rel, st, sol, why in pending]
    if jobs <= 1:
        for a in args:
            finish(_grade_one(*a))
    else:
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            for f in as_completed([pool.submit(_grade_one, *a) for a in args]):
                finish(f.result())
    return results


# ----------------------------------------------------------------------------- the CSVs
def question_columns(solutions: Path) -> dict[str, list[tuple[str, str]]]:
    """{assignment: [(grade_id, column)]}: column "03.q1" for grade_id "q1" of 03_*.ipynb."""
    out = {}
    for p in sorted(solutions.glob("*.ipynb")):
        nb = nbformat.read(p, as_version=4)
        out[p.name] = [(meta(c)["grade_id"], f"{prefix(p.name)}.{meta(c)['grade_id']}") for c in nb.cells if is_test(c)]
    return out


def write_csv(results: list[Result], out: Path, solutions: Path = ROOT / "solutions") -> None:
    """Both CSVs (see the module's docstring), written to a temporary file and then renamed."""
    cols = question_columns(solutions)
    for r in results:  # assignments graded against another solutions folder
        if r.notebook and r.notebook not in cols:
            cols[r.notebook] = [(g, f"{prefix(r.notebook)}.{g}") for g in r.max_scores]
    qcols = [c for assignment in cols.values() for _, c in assignment]
    rows = []
    for r in results:
        q = {c: r.scores.get(g, "") for g, c in cols.get(r.notebook, [])} if r.status.startswith("graded") else {}
        rows.append({"student": r.student, "assignment": r.notebook, "file": r.file, "status": r.status, **q,
                     "score": r.total, "max": sum(r.max_scores.values()) or "", "seconds": f"{r.seconds:.1f}",
                     "feedback": " | ".join(f"{prefix(r.notebook)}.{g}: {m}" for g, m in r.feedback.items())})
    _atomic_csv(out, ["student", "assignment", "file", "status", *qcols, "score", "max", "seconds", "feedback"], rows)

    best: dict[tuple[str, str], Result] = {}
    for r in results:
        if r.notebook and r.status.startswith("graded"):
            k = (r.student, r.notebook)
            if k not in best or r.total > best[k].total:
                best[k] = r
    students = sorted({r.student for r in results})
    header = ["student"]
    for a, qs in cols.items():
        header += [c for _, c in qs] + [f"{prefix(a)}.total"]
    header += ["total", "max", "problems"]
    srows = []
    for s in students:
        row: dict[str, Any] = {"student": s}
        total = mx = 0.0
        for a, qs in cols.items():
            full = sum(_points(solutions, a, results).values())
            mx += full
            if (s, a) in best:
                r = best[(s, a)]
                row.update({c: r.scores.get(g, 0.0) for g, c in qs})
                row[f"{prefix(a)}.total"] = r.total
                total += r.total
            else:
                row[f"{prefix(a)}.total"] = 0.0
        row["total"], row["max"] = total, mx
        row["problems"] = " | ".join(f"{Path(r.file).name}: {notes_of(r.status)}" for r in results
                                     if r.student == s and notes_of(r.status))
        srows.append(row)
    _atomic_csv(students_csv(out), header, srows)


def _points(solutions: Path, assignment: str, results: list[Result]) -> dict[str, float]:
    for r in results:
        if r.notebook == assignment and r.max_scores:
            return r.max_scores
    p = solutions / assignment
    if p.exists():
        nb = nbformat.read(p, as_version=4)
        return {meta(c)["grade_id"]: float(meta(c).get("points", 0)) for c in nb.cells if is_test(c)}
    return {}


def students_csv(out: Path) -> Path:
    return out.with_name(out.stem + "-students" + out.suffix)


def _atomic_csv(path: Path, header: list[str], rows: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, header, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def read_results(out: Path) -> list[Result]:
    """The rows of an earlier run's ``scores.csv`` (for ``--resume``)."""
    if not out.exists():
        return []
    results = []
    for row in csv.DictReader(open(out, newline="")):
        nb, pre = row["assignment"], prefix(row["assignment"])
        r = Result(row["student"], nb, row["file"], row["status"], seconds=float(row["seconds"] or 0))
        fb = dict(re.findall(rf"{re.escape(pre)}\.([^:|]+): ((?:(?! \| {re.escape(pre)}\.).)*)", row["feedback"]))
        for k, v in row.items():
            if k.startswith(pre + ".") and v not in ("", None):
                gid = k[len(pre) + 1:]
                r.scores[gid] = float(v)
        r.feedback = fb
        if r.scores:
            full = float(row["max"] or 0)
            r.max_scores = {g: 0.0 for g in r.scores}
            if r.max_scores:
                r.max_scores[next(iter(r.max_scores))] = full
        results.append(r)
    return results


def timeout_ok(seconds: float) -> bool:
    """A cell timeout must be a finite number of seconds, at least 1 (nbclient rounds it, and
    below 1 would mean no timeout at all)."""
    return math.isfinite(seconds) and seconds >= 1


def unmatched_filters(folder: Path, solutions: Path, students: list[str] | None,
                      notebooks: list[str] | None) -> str | None:
    """An error message if a ``--student`` or ``--notebook`` filter matches no submission."""
    subs = submissions(folder)
    names = sorted({p.parent.name for p in subs})
    bad = [s for s in students or [] if s not in names]
    if bad:
        return f"--student {', '.join(bad)}: no such student in {folder}; there are: {', '.join(names)}"
    files = sorted({p.name for p in subs} | {p.name for p in solutions.glob("*.ipynb")})
    bad = [n for n in notebooks or [] if not any(f.startswith(n) for f in files)]
    if bad:
        return (f"--notebook {', '.join(bad)}: matches no notebook (a prefix such as 03); there are: "
                f"{', '.join(files)}")
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("submissions", type=Path)
    ap.add_argument("--out", type=Path, default=Path("scores.csv"))
    ap.add_argument("--solutions", type=Path, default=ROOT / "solutions")
    ap.add_argument("--cell-timeout", type=float, default=180, help="seconds per cell and per check (>= 1)")
    ap.add_argument("-j", "--jobs", type=int, default=1, help="notebooks graded in parallel")
    ap.add_argument("--student", action="append", help="grade only this student (repeatable)")
    ap.add_argument("--notebook", action="append", help="grade only notebooks starting with this, e.g. 03")
    ap.add_argument("--resume", action="store_true", help="keep the rows --out already has; grade the rest")
    ap.add_argument("--run-all", action="store_true", help="also run the ungraded 'try it yourself' cells")
    ap.add_argument("--log", type=Path, help="kernel and check output (default: OUT with .log)")
    a = ap.parse_args(argv)
    if not timeout_ok(a.cell_timeout):
        ap.error(f"--cell-timeout {a.cell_timeout:g}: give a number of seconds, at least 1 (e.g. 180)")
    if a.jobs < 1:
        ap.error("-j must be at least 1")
    try:
        problem = unmatched_filters(a.submissions, a.solutions, a.student, a.notebook)
    except FileNotFoundError as e:
        problem = str(e)
    if problem:
        print(f"{ap.prog}: error: {problem}", file=sys.stderr)
        return 2
    earlier = read_results(a.out) if a.resume else []
    results = list(earlier)
    log_path = a.log or a.out.with_suffix(".log")

    def on_result(r: Result) -> None:
        results.append(r)
        write_csv(results, a.out, a.solutions)

    t = time.time()
    grade_folder(a.submissions, a.solutions, a.cell_timeout, jobs=a.jobs, students=a.student,
                 notebooks=a.notebook, done={r.file for r in earlier}, run_all=a.run_all,
                 on_result=on_result, log_path=log_path.resolve())
    write_csv(results, a.out, a.solutions)
    print(f"wrote {a.out} ({len(results)} submissions) and {students_csv(a.out)} in {time.time() - t:.0f} s; "
          f"kernel output in {log_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
