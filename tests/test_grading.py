"""Grading: exercises are generated from solutions, and every check fails on the exercise and
on a plausible wrong answer, passes on the solution; the instructor command writes a CSV, and
an infinite loop costs only its question."""
from __future__ import annotations

import ast
import csv
import importlib
import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from wrong_answers import graded_wrong

from course_lib.grading import assign, autograde
from course_lib.grading.borrow import _dotted, _matches
from course_lib.grading.notebook import graded_cells, is_answer, meta, strip_hidden, strip_solution, to_exercise

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))


def test_exercises_are_generated_from_solutions():
    assert SOLUTIONS, "no solution notebooks"
    assert assign.main(["--check"]) == 0, "exercises/ drifted: run python -m course_lib.grading.assign"


def test_markers_are_stripped():
    src = "def f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION\n"
    assert strip_solution(src) == "def f():\n    # YOUR CODE HERE\n    raise NotImplementedError()\n"
    assert strip_hidden("a()\n### BEGIN HIDDEN TESTS\nb()\n### END HIDDEN TESTS\n") == "a()\n"
    for sol in SOLUTIONS:
        ex = to_exercise(nbformat.read(sol, 4))
        text = nbformat.writes(ex)
        assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text and "END SOLUTION" not in text
        assert all(not c.get("outputs") for c in ex.cells if c.cell_type == "code")


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.stem)
def test_every_question_has_a_wrong_answer(solution):
    nb = nbformat.read(solution, 4)
    answers = {meta(c)["grade_id"] for c in nb.cells if is_answer(c)}
    assert answers and answers == set(graded_wrong(solution.stem)), \
        "each answer cell needs a plausible wrong answer in tests/wrong_answers/"


def _imports(source: str) -> list[tuple[str, str | None]]:
    """(module, name or None) for every ``import`` and ``from ... import`` in a cell."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found += [(node.module, a.name) for a in node.names]
    return found


@pytest.mark.parametrize("exercise", sorted((ROOT / "exercises").glob("*.ipynb")), ids=lambda p: p.stem)
def test_exercises_hand_out_nothing_a_question_asks_for(exercise):
    """What an exercise imports is the learner's toolbox: never what a question forbids (the
    course's implementation of the answer) unless the check lists it as handed out
    (``allow``, e.g. chapter 4's ``assign_buckets``)."""
    nb = nbformat.read(exercise, 4)
    chapter = importlib.import_module(f"course_lib.grading.ch{exercise.stem[:2]}")
    checks = [f for f in vars(chapter).values() if callable(f) and hasattr(f, "forbid")]
    assert checks, f"{chapter.__name__} has no @own_work check"
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for module, name in _imports(cell.source):
            if module.startswith("course_lib.grading"):
                continue
            obj = importlib.import_module(module) if name is None else \
                getattr(importlib.import_module(module), name, None)
            dotted = _dotted(obj) if obj is not None else f"{module}.{name}"
            for check in checks:
                hit = _matches(dotted, check.forbid)
                assert not hit or _matches(dotted, check.allow), \
                    f"{exercise.name} imports {dotted}, which {check.__name__} forbids ({hit})"


def _submission(nb, replace: dict[str, str]):
    nb = nbformat.from_dict(nb)
    for c in nb.cells:
        gid = meta(c).get("grade_id")
        if gid in replace:
            c.source = replace[gid]
    return nb


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.stem)
def test_grader_scores_solution_exercise_and_wrong_answers(solution, tmp_path):
    src = nbformat.read(solution, 4)
    exercise = nbformat.read(ROOT / "exercises" / solution.name, 4)
    wrong = graded_wrong(solution.stem)
    # One submission per wrong answer: the other answers are the solution's, so only that
    # question may lose points, and every other question must score in full. With two or more
    # questions that already shows every check passing on the solution's answers, so the
    # solution itself, the untouched exercise, and a learner's top-level infinite loop that even
    # ignores Ctrl-C with a deleted test cell, are graded in one chapter only: the grader's
    # handling of them does not depend on the chapter (each chapter's checks meet the untouched
    # stubs in tests/test_checks_chNN.py, hint "not answered yet"), and the loop burns a core
    # until its cell times out.
    # In the other chapters two submissions cover the same ground: one with the wrong answers of
    # questions 1, 3, ... and the solution's elsewhere, one the other way round.
    first_chapter = solution == SOLUTIONS[0] or len(wrong) < 2
    subs = {"untouched": exercise, "solution": src} if first_chapter else {}
    half = {gid: k % 2 for k, gid in enumerate(wrong)}  # which submission a wrong answer goes in
    for gid, (code, _) in wrong.items():
        name = f"wrong-{gid}" if first_chapter else f"wrong-half{half[gid]}"
        subs[name] = _submission(subs[name] if name in subs else src, {gid: code})
    first = next(meta(c)["grade_id"] for c in src.cells if is_answer(c))
    if first_chapter:
        looping = _submission(src, {first: "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass"})
        looping.cells = [c for c in looping.cells
                         if meta(c).get("grade_id") != graded_cells(src)[-1].metadata.nbgrader.grade_id]
        subs["loop"] = looping
    for name, nb in subs.items():
        (tmp_path / name).mkdir()
        nbformat.write(nb, tmp_path / name / solution.name)

    results = {r.student: r for r in autograde.grade_folder(tmp_path, solution.parent, cell_timeout=20,
                                                             log=lambda *_: None, jobs=2)}
    out = tmp_path / "scores.csv"
    autograde.write_csv(list(results.values()), out, solution.parent)
    rows = {r["student"]: r for r in csv.DictReader(open(out))}

    tests = graded_cells(src)
    full = sum(meta(c)["points"] for c in tests)
    if first_chapter:
        assert results["solution"].total == full and float(rows["solution"]["score"]) == full
        assert results["untouched"].total == 0, results["untouched"].feedback
        assert all("not answered yet" in m for m in results["untouched"].feedback.values())

    # the answer cell with grade_id X is checked by the test cell that follows it
    answer_to_test = {}
    for i, c in enumerate(src.cells):
        if is_answer(c):
            answer_to_test[meta(c)["grade_id"]] = next(meta(t)["grade_id"] for t in src.cells[i:] if t in tests)
    lost: dict[str, float] = {}
    for gid, (_, hint) in wrong.items():
        name = f"wrong-{gid}" if first_chapter else f"wrong-half{half[gid]}"
        r, q = results[name], answer_to_test[gid]
        assert q in r.scores, (name, r.status)  # a status "grading failed (...)" says why
        assert r.scores[q] == 0 and hint in r.feedback[q], (gid, r.feedback)
        lost[name] = lost.get(name, 0) + meta(next(c for c in tests if meta(c)["grade_id"] == q))["points"]
    for name, points in lost.items():  # every other question scored in full
        assert results[name].total == full - points, (name, results[name].feedback)

    if not first_chapter:
        return
    loop = results["loop"]
    q_first = answer_to_test[first]
    assert loop.scores[q_first] == 0 and "this cell timed out" in loop.feedback[q_first], loop.feedback
    # the loop cost only its question; the deleted test cell was restored and passes
    assert loop.total == full - meta(next(c for c in tests if meta(c)["grade_id"] == q_first))["points"]


def test_a_kernel_that_dies_before_it_answers_is_started_again(tmp_path, monkeypatch):
    """Two kernels starting at once can be handed the same port (jupyter_client picks free ports
    and closes them before the kernel binds): the kernel dies at once, and grading must not
    blame the submission. Here the first kernel always dies; the next one is a real kernel."""
    spec = tmp_path / "kernels" / "dies-at-start"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps(
        {"argv": [sys.executable, "-c", "raise SystemExit(1)"], "display_name": "dies", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(6 * 7)")])
    names = iter(["dies-at-start", "python3"])
    made = []

    def make_client():
        made.append(NotebookClient(nb, kernel_name=next(names), startup_timeout=120))
        return made[-1]

    with autograde._kernel(make_client) as client:
        client.execute_cell(nb.cells[0], 0)
    assert len(made) == 2 and client is made[1] and nb.cells[0].outputs[0]["text"] == "42\n"
    # a kernel that never starts: the grader's error, after every try
    with pytest.raises(RuntimeError, match="Kernel died before replying"):
        with autograde._kernel(lambda: NotebookClient(nb, kernel_name="dies-at-start", startup_timeout=120)):
            pass


def test_the_course_s_own_cells_before_the_first_answer_get_the_startup_time(tmp_path):
    """Imports on a busy machine can outlast a short cell timeout; a timeout there would leave
    every answer without its imports, so those cells get STARTUP_S. Answers keep the limit."""
    answer = {"nbgrader": {"grade_id": "q1-answer", "solution": True, "grade": False, "locked": False}}
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import time\ntime.sleep(3)\nx = 1"),  # "imports" slower than the limit
        nbformat.v4.new_code_cell("y = x + 1\ntime.sleep(3)", metadata=answer),
    ])
    status = autograde.run_graded(nb, cell_timeout=1, cwd=tmp_path)
    assert status[0] is None
    assert status[1].startswith(autograde.TIMEOUT), status
