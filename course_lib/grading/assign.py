"""Generate ``exercises/`` from ``solutions/`` (the single source of truth).

    python -m course_lib.grading.assign            # write exercises/*.ipynb
    python -m course_lib.grading.assign --check    # exit 1 if exercises/ is out of date

Never edit an exercise by hand: edit the solution and run this.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

from course_lib.grading.notebook import graded_cells, to_exercise

ROOT = Path(__file__).resolve().parents[2]


def render(solution: Path) -> str:
    nb = nbformat.read(solution, as_version=4)
    ids = [c.metadata.nbgrader["grade_id"] for c in nb.cells if "nbgrader" in c.metadata]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise ValueError(f"{solution.name}: grade_id used twice: {sorted(dup)}; each cell needs its own")
    if not graded_cells(nb):
        raise ValueError(f"{solution.name}: no graded test cell (metadata.nbgrader.grade = true)")
    return nbformat.writes(to_exercise(nb)) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--solutions", type=Path, default=ROOT / "solutions")
    ap.add_argument("--exercises", type=Path, default=ROOT / "exercises")
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 on drift")
    a = ap.parse_args(argv)
    stale = []
    sources = sorted(a.solutions.glob("*.ipynb"))
    for sol in sources:
        text, out = render(sol), a.exercises / sol.name
        if not out.exists() or out.read_text() != text:
            stale.append(out.name)
            if not a.check:
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(text)
    orphans = sorted({p.name for p in a.exercises.glob("*.ipynb")} - {s.name for s in sources})
    if a.check:
        if stale or orphans:
            print(f"exercises/ is out of date: {stale + orphans}. Run: python -m course_lib.grading.assign")
            return 1
        print(f"exercises/ matches solutions/ ({len(sources)} notebooks)")
        return 0
    for name in orphans:
        print(f"note: exercises/{name} has no solution; remove it")
    print(f"wrote {len(stale)} of {len(sources)} exercises" + (f": {stale}" if stale else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
