"""``./course bench grading``: time to grade a class, every exercise notebook per student.

The class is made up: students cycle through a perfect submission (the solution), a blank
one (the exercise) and a half-done one (the solution with its first answer left blank), so
the time covers passing checks, failing ones and "not answered yet". Graded with ``-j``
parallel notebooks; with ``--students`` below 30 the time for 30 is extrapolated per notebook.
"""
from __future__ import annotations

import argparse
import csv
import shutil
import tempfile
import time
from pathlib import Path

import nbformat

from course_lib.grading import autograde
from course_lib.grading.notebook import is_answer, strip_solution
from course_lib.tables import format_table

ROOT = Path(__file__).resolve().parents[2]
KINDS = ("perfect", "blank", "half")


def make_class(folder: Path, students: int, notebooks: list[str] | None = None) -> int:
    """Write ``folder/<student>/<notebook>.ipynb``; the number of notebooks written."""
    n = 0
    for sol in sorted((ROOT / "solutions").glob("*.ipynb")):
        if notebooks and not any(sol.name.startswith(x) for x in notebooks):
            continue
        src = nbformat.read(sol, 4)
        blank = nbformat.read(ROOT / "exercises" / sol.name, 4)
        half = nbformat.from_dict(src)
        first = next(c for c in half.cells if is_answer(c))
        first.source = strip_solution(first.source)
        for s in range(students):
            kind = KINDS[s % len(KINDS)]
            d = folder / f"student{s:02d}-{kind}"
            d.mkdir(parents=True, exist_ok=True)
            nbformat.write({"perfect": src, "blank": blank, "half": half}[kind], d / sol.name)
            n += 1
    return n


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="./course bench grading", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--students", type=int, default=30)
    ap.add_argument("-j", "--jobs", type=int, default=2)
    ap.add_argument("--notebook", action="append", help="only notebooks starting with this (repeatable)")
    ap.add_argument("--cell-timeout", type=float, default=180)
    ap.add_argument("--keep", type=Path, help="copy the two CSVs into this folder")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-grading-") as tmp:
        folder = Path(tmp) / "submissions"
        n = make_class(folder, a.students, a.notebook)
        out = Path(tmp) / "scores.csv"
        t = time.perf_counter()
        args = [str(folder), "--out", str(out), "-j", str(a.jobs), "--cell-timeout", str(a.cell_timeout)]
        for nb in a.notebook or []:
            args += ["--notebook", nb]
        autograde.main(args)
        wall = time.perf_counter() - t
        rows = list(csv.DictReader(open(out, newline="")))
        if a.keep:
            a.keep.mkdir(parents=True, exist_ok=True)
            for f in (out, autograde.students_csv(out)):
                shutil.copy(f, a.keep / f.name)
    per_nb = wall / max(n, 1)
    per_student_nbs = n / max(a.students, 1)
    table = [{"students": a.students, "notebooks": n, "jobs": a.jobs, "wall s": wall, "s / notebook": per_nb,
              "graded rows": sum(r["status"].startswith("graded") for r in rows),
              "30 students, min": per_nb * 30 * per_student_nbs / 60}]
    print(format_table(table, {"wall s": "{:.0f}", "s / notebook": "{:.1f}", "30 students, min": "{:.1f}"}))
    if a.students != 30:
        print("(the last column is extrapolated from this run's time per notebook)")


if __name__ == "__main__":
    main()
