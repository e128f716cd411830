"""The grading command an instructor types: bad arguments get one clear line and exit code 2;
``--notebook`` grades only the notebooks asked for; the solution's "try it yourself" cells are
not run again unless ``--run-all``; an interrupted run keeps the rows it wrote and ``--resume``
grades only the rest."""
from __future__ import annotations

import csv
from pathlib import Path

import nbformat
import pytest

from course_lib.grading import autograde
from course_lib.grading.notebook import meta

ROOT = Path(__file__).resolve().parents[1]
BLANK = ROOT / "exercises" / "00_collectives.ipynb"


def _rows(path: Path) -> dict[str, dict]:
    return {r["file"]: r for r in csv.DictReader(open(path, newline=""))}


@pytest.fixture
def two_blank(tmp_path):
    """alice and bob each hand in the blank exercise 00 (graded in a moment: nothing to run)."""
    for student in ("alice", "bob"):
        (tmp_path / student).mkdir()
        nbformat.write(nbformat.read(BLANK, 4), tmp_path / student / BLANK.name)
    return tmp_path


def test_missing_folder_is_one_line_and_exit_code_2(tmp_path, capsys):
    assert autograde.main([str(tmp_path / "nope"), "--out", str(tmp_path / "s.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no folder" in err and "nope" in err, err
    (tmp_path / "empty").mkdir()
    assert autograde.main([str(tmp_path / "empty"), "--out", str(tmp_path / "s.csv")]) == 2
    assert "no submissions found" in capsys.readouterr().err


def test_filters_that_match_nothing_name_what_there_is(two_blank, capsys):
    out = two_blank / "s.csv"
    assert autograde.main([str(two_blank), "--out", str(out), "--student", "alice", "--student", "bobb"]) == 2
    err = capsys.readouterr().err
    assert "--student bobb" in err and "there are: alice, bob" in err, err
    assert autograde.main([str(two_blank), "--out", str(out), "--notebook", "09"]) == 2
    err = capsys.readouterr().err
    assert "--notebook 09" in err and "00_collectives.ipynb" in err and "07_compression.ipynb" in err, err
    assert not out.exists()


@pytest.mark.parametrize("value", ["nan", "inf", "-5", "0.5"])
def test_cell_timeout_must_be_a_finite_number_of_seconds(two_blank, value, capsys):
    with pytest.raises(SystemExit) as e:
        autograde.main([str(two_blank), "--cell-timeout", value])
    assert e.value.code == 2 and "give a number of seconds, at least 1" in capsys.readouterr().err


def test_interrupted_run_keeps_its_rows_and_resume_grades_the_rest(two_blank, monkeypatch):
    out = two_blank / "s.csv"
    real, graded = autograde._grade_one, []

    def interrupted_at_the_second(path, rel, *args):
        if graded:
            raise KeyboardInterrupt  # Ctrl-C while the second notebook is graded
        graded.append(rel)
        return real(path, rel, *args)

    monkeypatch.setattr(autograde, "_grade_one", interrupted_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        autograde.main([str(two_blank), "--out", str(out), "-j", "1"])
    assert set(_rows(out)) == {"alice/00_collectives.ipynb"}  # written as soon as it was graded
    monkeypatch.setattr(autograde, "_grade_one", real)
    first = _rows(out)["alice/00_collectives.ipynb"]
    assert autograde.main([str(two_blank), "--out", str(out), "--resume"]) == 0
    rows = _rows(out)
    assert set(rows) == {"alice/00_collectives.ipynb", "bob/00_collectives.ipynb"}
    assert rows["alice/00_collectives.ipynb"] == first  # kept, not graded again


def test_notebook_filter_and_try_it_cells_run_only_with_run_all(two_blank):
    """alice also hands in exercise 06 with Q1 answered by a function that leaves a mark when
    the notebook's kernel calls it (the solution's "try it" cell below Q1 does; the check
    does not, it runs in another process) and Q2 left blank."""
    sol = nbformat.read(ROOT / "solutions" / "06_pipeline_parallel.ipynb", 4)
    nb = nbformat.read(ROOT / "exercises" / "06_pipeline_parallel.ipynb", 4)
    q1 = next(c for c in sol.cells if meta(c).get("grade_id") == "q1-answer").source
    marked = q1.replace("    ### BEGIN SOLUTION\n", "    import sys\n    if 'ipykernel' in sys.modules:\n"
                        "        open('tried.txt', 'a').write('x')\n")
    assert marked != q1
    next(c for c in nb.cells if meta(c).get("grade_id") == "q1-answer").source = marked
    nbformat.write(nb, two_blank / "alice" / "06_pipeline_parallel.ipynb")
    out = two_blank / "s.csv"

    assert autograde.main([str(two_blank), "--out", str(out), "--notebook", "06", "-j", "1"]) == 0
    rows = _rows(out)
    assert set(rows) == {"alice/06_pipeline_parallel.ipynb"}  # 00 was not asked for
    row = rows["alice/06_pipeline_parallel.ipynb"]
    assert (row["06.q1"], row["06.q2"]) == ("4.0", "0.0") and "not answered yet" in row["feedback"], row
    assert not (two_blank / "alice" / "tried.txt").exists()  # the try-it cell was left out

    assert autograde.main([str(two_blank), "--out", str(out), "--notebook", "06", "--run-all", "-j", "1"]) == 0
    assert (two_blank / "alice" / "tried.txt").exists()  # now it ran, in the kernel
    assert _rows(out)["alice/06_pipeline_parallel.ipynb"]["06.q1"] == "4.0"
