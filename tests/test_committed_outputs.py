"""Committed notebooks read well before anything runs (on GitHub, nbviewer, or JupyterLab).

No error outputs and no tracebacks; progress bars committed finished (``progress`` replaces
the live bar with its last frame); every widget output carries a picture for pages that cannot
run widgets (``viz.widgets.interact``). The browser test checks the same pages live.
"""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted([*ROOT.glob("*.ipynb"), *(ROOT / "notebooks").glob("*.ipynb"), *(ROOT / "solutions").glob("*.ipynb")])
WIDGET = "application/vnd.jupyter.widget-view+json"
UNFINISHED_BAR = re.compile(r"(?<!\d)(\d{1,2})%\||\b0/\d+ \[00:00<\?")


def _outputs(path: Path):
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            yield i, out


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_committed_outputs_read_well(path):
    problems = []
    for i, out in _outputs(path):
        data = out.get("data", {})
        text = "".join(out.get("text", "")) + "".join(data.get("text/plain", ""))
        if out.get("output_type") == "error" or "Traceback (most recent call last)" in text:
            problems.append(f"cell {i}: a committed error ({out.get('ename', 'traceback')}): catch it and print the message")
        if UNFINISHED_BAR.search(text):
            problems.append(f"cell {i}: a progress bar committed unfinished: {text.strip()[:80]!r} (use course_lib.progress)")
        elif WIDGET in data and "image/png" not in data:
            problems.append(f"cell {i}: a widget with no picture for pages that cannot run it "
                            f"({data.get('text/plain', '')[:60]!r}; use course_lib.viz.widgets.interact)")
    assert not problems, f"{path.relative_to(ROOT)}:\n  " + "\n  ".join(problems)
