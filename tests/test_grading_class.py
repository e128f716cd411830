"""Grading a class as an instructor would: a folder of real submissions of chapter 0 with a
patched checker, a borrowed built-in, a kernel-killing answer, a stripped, a renamed and a
blank notebook and a truncated file; every one gets a row, the students' CSV says how each
notebook was matched, nothing of the kernels reaches the terminal, scores are written as each
finishes, ``--resume`` grades only what is new, and the borrow search is fooled by no plain import."""
from __future__ import annotations

import csv
import os
import sys
import tempfile
from pathlib import Path

import nbformat
import pytest

from course_lib.grading import autograde, ch03
from course_lib.grading.borrow import borrowed
from course_lib.grading.feedback import CheckFailed
from course_lib.grading.notebook import for_grading, is_test, meta

ROOT = Path(__file__).resolve().parents[1]
SOL = ROOT / "solutions" / "00_collectives.ipynb"


def _with(replace: dict[str, str], strip: bool = False):
    nb = nbformat.read(SOL, 4)
    for c in nb.cells:
        if meta(c).get("grade_id") in replace:
            c.source = replace[meta(c)["grade_id"]]
        if strip:
            c.metadata = {}
    return nb


PATCH_CHECKER = """ch00.check_ring_shift = lambda *a, **k: print('✓ Q1 ring_shift passed')
import course_lib.grading.harness as h
h.only_point_to_point = lambda *a, **k: None
def ring_shift(rank, world_size, x):
    return x.clone()
"""
BUILTIN = """import torch.distributed as dist
def all_to_all_p2p(rank, world_size, x):
    out = [torch.empty_like(t) for t in x]
    dist.all_to_all(out, list(x))
    return out
"""
KILL = "import os\nos._exit(1)\ndef naive_all_reduce(rank, world_size, x):\n    return x\n"


@pytest.fixture(scope="module")
def graded_class(tmp_path_factory):
    d = tmp_path_factory.mktemp("class")
    subs = {"cheat/00_collectives.ipynb": _with({"q1-answer": PATCH_CHECKER, "q3-answer": BUILTIN}),
            "killer/00_collectives.ipynb": _with({"q2-answer": KILL}),
            "stripped/00_collectives.ipynb": _with({}, strip=True),
            "renamed/00_collectives-Copy1.ipynb": _with({})}
    for rel, nb in subs.items():
        (d / rel).parent.mkdir()
        nbformat.write(nb, d / rel)
    (d / "corrupt").mkdir()
    (d / "corrupt" / "00_collectives.ipynb").write_text(SOL.read_text()[:300])
    (d / "blank").mkdir()
    nbformat.write(nbformat.read(ROOT / "exercises" / SOL.name, 4), d / "blank" / SOL.name)
    out = d / "scores.csv"
    with _terminal() as terminal:
        assert autograde.main([str(d), "--out", str(out), "-j", "2", "--cell-timeout", "30"]) == 0
    return d, out, terminal.read_text()


class _terminal:
    """Everything written to this process's stdout and stderr (file descriptors 1 and 2, which
    the kernels, check processes and pool workers inherit) goes to a file."""

    def __enter__(self) -> Path:
        self.path = Path(tempfile.mkstemp(prefix="terminal-")[1])
        self.saved = [os.dup(1), os.dup(2)]
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        # Python's own print goes through sys.stdout, which pytest's capture replaces: point it
        # at the same file, so the grader's lines land there as a terminal would show them.
        self.streams = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = open(self.path, "a", buffering=1)
        return self.path

    def __exit__(self, *exc) -> None:
        sys.stdout.close()
        sys.stdout, sys.stderr = self.streams
        for fd, saved in zip((1, 2), self.saved):
            os.dup2(saved, fd)
            os.close(saved)


def _rows(path: Path) -> dict[str, dict]:
    return {r["student"]: r for r in csv.DictReader(open(path, newline=""))}


def test_patched_checker_and_borrowed_builtin_score_zero(graded_class):
    rows = _rows(graded_class[1])
    cheat = rows["cheat"]
    assert (cheat["00.q1"], cheat["00.q2"], cheat["00.q3"]) == ("0.0", "3.0", "0.0"), cheat
    assert "returned its own tensor" in cheat["feedback"]  # the patch did not reach the check
    assert "borrows torch.distributed" in cheat["feedback"]


def test_every_submission_gets_a_row(graded_class):
    rows = _rows(graded_class[1])
    assert set(rows) == {"cheat", "killer", "stripped", "renamed", "corrupt", "blank"}
    assert rows["corrupt"]["status"].startswith("unreadable notebook (NotJSONError")
    assert rows["renamed"]["assignment"] == "00_collectives.ipynb" and rows["renamed"]["score"] == "8.0"
    assert "by content" in rows["renamed"]["status"]
    assert rows["stripped"]["score"] == "8.0", rows["stripped"]["feedback"]
    killer = rows["killer"]
    assert killer["00.q2"] == "0.0" and "this cell killed the kernel" in killer["feedback"], killer
    assert (killer["00.q1"], killer["00.q3"]) == ("2.0", "3.0")


def test_students_csv_says_how_each_notebook_was_matched(graded_class):
    text = autograde.students_csv(graded_class[1]).read_text()
    print(text)  # the real output, for the record (pytest -s)
    header = text.splitlines()[0].split(",")
    assert header[:5] == ["student", "00.q1", "00.q2", "00.q3", "00.total"]
    assert header[-3:] == ["total", "max", "problems"] and "07.total" in header
    rows = _rows(autograde.students_csv(graded_class[1]))
    assert rows["renamed"]["problems"] == "00_collectives-Copy1.ipynb: renamed, matched to 00_collectives.ipynb by content"
    assert rows["stripped"]["problems"] == "00_collectives.ipynb: metadata stripped, restored by content"
    assert rows["corrupt"]["problems"] == ("00_collectives.ipynb: unreadable notebook (NotJSONError: Notebook does "
                                           "not appear to be JSON)")
    assert rows["blank"]["problems"] == "00_collectives.ipynb: blank: no question answered"
    assert rows["cheat"]["problems"] == "" and rows["killer"]["problems"] == ""
    assert (rows["blank"]["00.total"], rows["blank"]["total"]) == ("0.0", "0.0")
    assert (rows["stripped"]["00.total"], rows["stripped"]["total"]) == ("8.0", "8.0")
    assert rows["corrupt"]["00.total"] == "0.0" and rows["corrupt"]["00.q1"] == ""
    every = sum(meta(c)["points"] for sol in (ROOT / "solutions").glob("*.ipynb")
                for c in nbformat.read(sol, 4).cells if is_test(c))
    assert float(rows["blank"]["max"]) == every  # out of every assignment, not only those handed in
    blank = _rows(graded_class[1])["blank"]
    assert blank["feedback"].count("not answered yet") == 3 and float(blank["seconds"]) < 5


def test_kernel_noise_stays_out_of_the_terminal(graded_class):
    terminal = graded_class[2]
    assert "wrote " in terminal and "blank" in terminal  # the grader's own lines are there
    for noise in ("Kernel is running over TCP", "Traceback", "forkserver", "Warning"):
        assert noise not in terminal, terminal


def test_student_totals_and_resume(graded_class):
    d, out, _ = graded_class
    per_student = _rows(autograde.students_csv(out))
    assert per_student["renamed"]["00.total"] == "8.0" and per_student["renamed"]["total"] == "8.0"
    assert per_student["cheat"]["00.total"] == "3.0"
    assert "unreadable" in per_student["corrupt"]["problems"]
    before = _rows(out)
    (d / "late").mkdir()
    nbformat.write(nbformat.read(ROOT / "exercises" / SOL.name, 4), d / "late" / SOL.name)
    assert autograde.main([str(d), "--out", str(out), "--resume", "--student", "late", "--student", "cheat"]) == 0
    after = _rows(out)
    assert set(after) == set(before) | {"late"} and after["late"]["score"] == "0.0"
    assert {k: after[k]["seconds"] for k in before} == {k: r["seconds"] for k, r in before.items()}


def test_stripped_notebook_keeps_tests_in_place():
    src = nbformat.read(SOL, 4)
    nb = for_grading(_with({}, strip=True), src)
    ids = [meta(c).get("grade_id") for c in nb.cells if is_test(c)]
    assert ids == ["q1", "q2", "q3"]
    first_test = next(i for i, c in enumerate(nb.cells) if is_test(c))
    assert "def ring_shift" in nb.cells[first_test - 1].source


def test_borrow_search_follows_helpers_and_local_imports():
    ns = {"__name__": "__main__"}
    exec("import torch\nfrom course_lib import comm\n"
         "def helper(x):\n    from course_lib.collectives import ring_reduce_scatter\n    return ring_reduce_scatter(x)\n"
         "def answer(rank, world_size, x):\n    return helper(x)\n"
         "def honest(rank, world_size, x):\n    comm.send(x, 0)\n    return x\n", ns)
    forbid = ("course_lib.collectives", "torch.distributed")
    assert borrowed(ns["answer"], forbid)[0].startswith("course_lib.collectives")
    assert borrowed(ns["honest"], forbid) is None
    with pytest.raises(CheckFailed, match="borrows course_lib.collectives"):
        ch03.check_ring_reduce_scatter(ns["answer"])


def test_release_has_no_solutions_or_hidden_tests(tmp_path):
    from course_lib.grading import release
    copied, skipped = release.release(tmp_path / "learners")
    out = tmp_path / "learners"
    assert not (out / "solutions").exists() and not (out / "tests" / "wrong_answers").exists()
    assert (out / "exercises" / SOL.name).exists() and (out / "course").exists()
    assert "tests/test_grading.py" in skipped and "solutions/00_collectives.ipynb" in skipped
    for p in out.rglob("*.ipynb"):
        text = p.read_text()
        assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text, p
