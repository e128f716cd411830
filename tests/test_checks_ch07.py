"""Chapter 7 checks: the solution's answers pass, every wrong answer of
tests/wrong_answers/07_compression.py fails with its hint."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat
import pytest
import torch

from course_lib import comm
from course_lib.grading import CheckFailed, ch07
from course_lib.grading.notebook import meta

ROOT = Path(__file__).resolve().parents[1]
CHECKS = {"q1-answer": ("majority_vote", ch07.check_majority_vote),
          "q2-answer": ("topk_ef", ch07.check_topk_ef),
          "q3-answer": ("powersgd_step", ch07.check_powersgd_step)}


def _wrong() -> tuple[dict, dict]:
    spec = importlib.util.spec_from_file_location("wrong07", ROOT / "tests" / "wrong_answers" / "07_compression.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.WRONG, mod.MORE


def _define(source: str, name: str):
    scope = {"torch": torch, "comm": comm, "math": __import__("math")}
    exec(source, scope)
    return scope[name]


def _solution_sources() -> dict[str, str]:
    nb = nbformat.read(ROOT / "solutions" / "07_compression.ipynb", 4)
    return {meta(c)["grade_id"]: c.source for c in nb.cells if meta(c).get("grade_id") in CHECKS}


@pytest.mark.parametrize("gid", list(CHECKS))
def test_solution_passes(gid, capsys):
    name, check = CHECKS[gid]
    check(_define(_solution_sources()[gid], name))
    assert "passed" in capsys.readouterr().out


WRONG, MORE = _wrong()
CASES = [(gid, src, hint) for gid, (src, hint) in WRONG.items()] + \
        [(gid, src, hint) for gid, items in MORE.items() for src, hint in items]


@pytest.mark.parametrize("gid,source,hint", CASES, ids=[f"{g}-{i}" for i, (g, _, _) in enumerate(CASES)])
def test_wrong_answer_gets_its_hint(gid, source, hint):
    name, check = CHECKS[gid]
    with pytest.raises(CheckFailed, match=hint.replace("(", r"\(").replace(")", r"\)")):
        check(_define(source, name))
