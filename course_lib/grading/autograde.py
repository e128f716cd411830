"""Grade a folder of submitted notebooks into a CSV of scores.

    python -m course_lib.grading.autograde submissions/ --out scores.csv

Layout: ``submissions/<student>/<notebook>.ipynb``, where ``<notebook>`` is the name of a
notebook in ``solutions/``. For each submission the hidden tests are restored from the
solution (:func:`course_lib.grading.notebook.for_grading`), the notebook runs in a fresh
kernel, and every test cell that runs without error earns its points.

A learner's infinite loop or deadlock costs only that question: the launcher ends deadlocked
ranks after its own timeout, a cell running longer than ``--cell-timeout`` is interrupted
(KeyboardInterrupt, which also ends its workers), and after such a timeout, or a kernel that
dies, grading continues in a fresh kernel with the earlier cells run again.
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError

from course_lib.grading.notebook import for_grading, is_test, meta

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Result:
    student: str
    notebook: str
    scores: dict[str, float] = field(default_factory=dict)  # grade_id -> points earned
    max_scores: dict[str, float] = field(default_factory=dict)
    feedback: dict[str, str] = field(default_factory=dict)  # grade_id -> why it failed
    seconds: float = 0.0

    @property
    def total(self) -> float:
        return sum(self.scores.values())


def _error_text(cell: Any, reply: dict | None) -> str | None:
    """None if the cell ran cleanly, else a one-line reason."""
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            return f"{out['ename']}: {out['evalue']}".splitlines()[0][:500]
    if reply is not None and reply.get("content", {}).get("status") == "error":
        c = reply["content"]
        return f"{c.get('ename', 'Error')}: {c.get('evalue', '')}".splitlines()[0][:500]
    return None


def run_graded(nb: Any, cell_timeout: float, cwd: Path) -> dict[int, str | None]:
    """Execute ``nb`` in place; return {cell index: error text or None} for every code cell.

    A cell that times out or kills the kernel is recorded as failed, and grading resumes in a
    fresh kernel (a code that ignores the interrupt would otherwise block every later cell):
    the earlier cells, except tests and the failed ones, are run again first.
    """
    replies: dict[int, dict] = {}
    status: dict[int, str | None] = {}
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    broken: set[int] = set()
    start = 0
    while start < len(code):
        client = NotebookClient(
            nb, timeout=int(cell_timeout), interrupt_on_timeout=True, allow_errors=True,
            error_on_timeout={"ename": "CellTimeout",
                              "evalue": f"the cell ran longer than {cell_timeout:g} s and was "
                                        "interrupted (an infinite loop or a deadlock?)"},
            kernel_name="python3", resources={"metadata": {"path": str(cwd)}},
            on_cell_executed=lambda cell, cell_index, execute_reply: replies.__setitem__(cell_index, execute_reply),
        )
        with client.setup_kernel():
            for i in code[:start]:  # a fresh kernel after a failure: restore the state so far
                if i not in broken and not is_test(nb.cells[i]):
                    client.execute_cell(nbformat.from_dict(nb.cells[i]), i)
            for k in range(start, len(code)):
                i = code[k]
                try:
                    client.execute_cell(nb.cells[i], i)
                    status[i] = _error_text(nb.cells[i], replies.get(i))
                except DeadKernelError:
                    status[i] = "DeadKernel: the kernel died while running this cell"
                if status[i] and status[i].split(":")[0] in ("CellTimeout", "DeadKernel"):
                    broken.add(i)
                    start = k + 1
                    break
            else:
                start = len(code)
    return status


def grade_notebook(path: Path, solution: Path, student: str, cell_timeout: float = 180) -> Result:
    t = time.time()
    source = nbformat.read(solution, as_version=4)
    nb = for_grading(nbformat.read(path, as_version=4), source)
    res = Result(student, solution.name)
    status = run_graded(nb, cell_timeout, path.parent)
    for i, cell in enumerate(nb.cells):
        if is_test(cell):
            gid, pts = meta(cell)["grade_id"], float(meta(cell).get("points", 0))
            err = status.get(i, "not run")
            res.max_scores[gid] = pts
            res.scores[gid] = 0.0 if err else pts
            if err:
                res.feedback[gid] = err
    res.seconds = time.time() - t
    return res


def grade_folder(folder: Path, solutions: Path, cell_timeout: float = 180, log=print) -> list[Result]:
    subs = sorted(folder.glob("*/*.ipynb"))
    if not subs:
        raise FileNotFoundError(f"no submissions found as {folder}/<student>/<notebook>.ipynb")
    results = []
    for p in subs:
        if ".ipynb_checkpoints" in p.parts:
            continue
        sol = solutions / p.name
        if not sol.exists():
            log(f"skip {p}: no solutions/{p.name} to grade it against")
            continue
        r = grade_notebook(p, sol, p.parent.name, cell_timeout)
        log(f"{r.student:>20} {r.notebook}: {r.total:g}/{sum(r.max_scores.values()):g} in {r.seconds:.1f} s")
        results.append(r)
    return results


def write_csv(results: list[Result], out: Path) -> None:
    ids: list[str] = []
    for r in results:
        ids += [g for g in r.max_scores if g not in ids]
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["student", "notebook", *ids, "total", "max", "feedback"])
        for r in results:
            w.writerow([r.student, r.notebook, *(r.scores.get(g, "") for g in ids), r.total,
                        sum(r.max_scores.values()), " | ".join(f"{g}: {m}" for g, m in r.feedback.items())])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("submissions", type=Path)
    ap.add_argument("--out", type=Path, default=Path("scores.csv"))
    ap.add_argument("--solutions", type=Path, default=ROOT / "solutions")
    ap.add_argument("--cell-timeout", type=float, default=180)
    a = ap.parse_args(argv)
    results = grade_folder(a.submissions, a.solutions, a.cell_timeout)
    write_csv(results, a.out)
    print(f"wrote {a.out} ({len(results)} submissions)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
