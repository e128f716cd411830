"""The nbgrader markup the course uses, and the two transformations built on it."""
from __future__ import annotations

import re
from typing import Any

import nbformat

SOLUTION = re.compile(r"^([ \t]*)### BEGIN SOLUTION[^\n]*\n.*?^[ \t]*### END SOLUTION[^\n]*(\n|$)", re.S | re.M)
HIDDEN = re.compile(r"^[ \t]*### BEGIN HIDDEN TESTS[^\n]*\n.*?^[ \t]*### END HIDDEN TESTS[^\n]*(\n|$)", re.S | re.M)
MARKER = re.compile(r"^[ \t]*### (BEGIN|END) (SOLUTION|HIDDEN TESTS)[^\n]*\n?", re.M)
STUB = "{indent}# YOUR CODE HERE\n{indent}raise NotImplementedError()\n"


def meta(cell: Any) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def is_answer(cell: Any) -> bool:
    return bool(meta(cell).get("solution"))


def is_test(cell: Any) -> bool:
    return bool(meta(cell).get("grade")) and not is_answer(cell)


def graded_cells(nb: Any) -> list[Any]:
    return [c for c in nb.cells if is_test(c)]


def strip_solution(source: str) -> str:
    """Replace each solution block by a ``raise NotImplementedError()`` stub at its indentation."""
    return SOLUTION.sub(lambda m: STUB.format(indent=m.group(1)), source)


def strip_hidden(source: str) -> str:
    return HIDDEN.sub("", source).rstrip() + "\n" if HIDDEN.search(source) else source


def without_markers(source: str) -> str:
    """The solution as a learner would write it: markers removed, hidden tests kept."""
    return MARKER.sub("", source)


HOW_IT_WORKS = """**How this notebook works.** Write each answer where it says `YOUR CODE HERE` (and delete the
`raise NotImplementedError()`), then run the check cell below it: ✓ means it passed; otherwise the
check says what differs, on which rank, and gives a hint. *Run All* stops at the first check that
fails: that is expected, not a crash. Fix that answer and run again from there. Your saved
notebook is graded with the same checks and a few hidden ones."""


def to_exercise(nb: Any) -> Any:
    """The student version of a solution notebook: stubs, no hidden tests, no outputs."""
    ex = nbformat.from_dict(nb)
    for cell in ex.cells:
        if cell.cell_type == "code":
            cell.source = strip_hidden(strip_solution(cell.source)).rstrip("\n")
            cell.outputs, cell.execution_count = [], None
        elif is_answer(cell):  # a written answer
            cell.source = SOLUTION.sub("YOUR ANSWER HERE\n", cell.source)
    ex.metadata.pop("widgets", None)
    ex.cells.insert(1, nbformat.v4.new_markdown_cell(HOW_IT_WORKS, id="how-it-works"))  # a fixed id: same file each time
    return ex


def key(source: str) -> str:
    """A cell source compared by content: trailing spaces and blank edges ignored."""
    return "\n".join(line.rstrip() for line in source.strip().splitlines())


def test_ids_by_content(source: Any) -> dict[str, str]:
    """{visible source of a test cell, as the exercise shows it: grade_id}: recognises test
    cells whose metadata an editor stripped."""
    out = {key(without_markers(c.source)): meta(c)["grade_id"] for c in source.cells if is_test(c)}
    out.update({key(c.source): meta(c)["grade_id"] for c in source.cells if is_test(c)})
    return out | {key(strip_hidden(c.source)): meta(c)["grade_id"] for c in source.cells if is_test(c)}


def try_it_cells(source: Any) -> set[str]:
    """Sources of the solution's ungraded code cells after its first answer ("try it yourself")."""
    code = [c for c in source.cells if c.cell_type == "code"]
    first = next((i for i, c in enumerate(code) if is_answer(c) or is_test(c)), len(code))
    return {key(c.source) for c in code[first:] if not meta(c)}


def for_grading(submission: Any, source: Any, run_all: bool = False) -> Any:
    """The notebook the autograder runs: the learner's cells, with every test cell taken
    from the source (hidden tests restored, learner edits to tests undone).

    Test cells are found by their ``grade_id`` or, when an editor stripped the metadata, by
    their source. A test cell the learner deleted is put back after the learner's cell that
    precedes it in the source (matched the same two ways), else at the end. The source's
    ungraded "try it yourself" cells are left out (they only call the learner's code again)
    unless ``run_all``; cells the learner wrote are always kept.
    """
    nb = nbformat.from_dict(submission)
    src_tests = {meta(c)["grade_id"]: c for c in source.cells if is_test(c)}
    by_content = test_ids_by_content(source)
    src_answers = {key(strip_solution(c.source)): meta(c)["grade_id"] for c in source.cells if is_answer(c)}
    skip = set() if run_all else try_it_cells(source)
    seen, cells, ids = set(), [], []
    for cell in nb.cells:
        gid = meta(cell).get("grade_id") or (by_content.get(key(cell.source)) if cell.cell_type == "code" else None)
        if gid in src_tests and gid not in seen:
            cells.append(nbformat.from_dict(src_tests[gid]))
            seen.add(gid)
        elif gid in src_tests or (cell.cell_type == "code" and not meta(cell) and key(cell.source) in skip):
            continue  # a duplicate test cell, or a try-it-yourself cell
        else:
            cells.append(cell)
            gid = gid or src_answers.get(key(cell.source))
        ids.append(gid)
    for i, scell in enumerate(source.cells):
        gid = meta(scell).get("grade_id")
        if gid in src_tests and gid not in seen:
            before = [g for c in source.cells[:i] if (g := meta(c).get("grade_id")) and g in ids]
            pos = ids.index(before[-1]) + 1 if before else len(cells)
            cells.insert(pos, nbformat.from_dict(scell))
            ids.insert(pos, gid)
    for c in cells:
        if c.cell_type == "code":
            c.source = without_markers(c.source)
            c.outputs, c.execution_count = [], None
    nb.cells = cells
    return nb
