"""Chapter 5 checks: the solution's answers pass; every wrong answer of
tests/wrong_answers/05_tensor_parallel.py (WRONG and MORE) fails with its hint."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import nbformat
import pytest

from course_lib.grading import CheckFailed, ch05
from course_lib.grading.notebook import meta

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("wrong05", ROOT / "tests" / "wrong_answers" / "05_tensor_parallel.py")
_wrong = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_wrong)
CASES = [(gid, src, hint) for gid, (src, hint) in _wrong.WRONG.items()] + list(_wrong.MORE)

PRELUDE = "import torch\nimport torch.nn as nn\nimport torch.nn.functional as F\nfrom course_lib import comm\n"


def _solution_source(gid: str) -> str:
    nb = nbformat.read(ROOT / "solutions" / "05_tensor_parallel.ipynb", 4)
    src = next(c.source for c in nb.cells if meta(c).get("grade_id") == gid)
    return re.sub(r"^[ \t]*### (BEGIN|END) SOLUTION[ \t]*\n", "", src + "\n", flags=re.M)


def _run(gid: str, source: str, full: bool = False) -> None:
    ns: dict = {"__name__": "learner"}
    exec(PRELUDE + source, ns)  # noqa: S102 - the cell source, as the notebook would run it
    if gid == "q1-answer":
        ch05.check_conjugate_operators(ns["CopyToTP"], ns["ReduceFromTP"])
    elif gid == "q2-answer":
        ch05.check_row_parallel_linear(ns["RowParallelLinear"])
    else:
        sizes = dict(world_sizes=(2, 4), vocab=11) if full else {}  # 11 = uneven vocabulary shards
        ch05.check_vocab_parallel_cross_entropy(ns["vocab_parallel_cross_entropy"], **sizes)


@pytest.mark.parametrize("gid", ["q1-answer", "q2-answer", "q3-answer"])
def test_solution_passes(gid, capsys):
    _run(gid, _solution_source(gid), full=True)
    assert "passed" in capsys.readouterr().out


@pytest.mark.parametrize("gid,source,hint", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_wrong_answer_gets_its_hint(gid, source, hint):
    with pytest.raises(CheckFailed) as e:
        _run(gid, source)
    assert hint in e.value.hint, e.value.hint
