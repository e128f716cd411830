"""Every answer the graded checks are tested on, each written once, as the source of a cell.

One file per graded notebook: ``tests/wrong_answers/NN_name.py`` for ``solutions/NN_name.ipynb``
(a new chapter, e.g. ``05_tensor_parallel``, adds ``05_tensor_parallel.py`` the same way).
It is plain data, keyed by the ``grade_id`` of an answer cell (``"q1-answer"``):

* ``WRONG = {grade_id: (cell, hint fragment)}``: one plausible wrong answer per answer cell
  (required). ``test_grading.py`` puts each into the solution notebook and runs the grader:
  that question alone must lose its points, and its feedback must contain the hint.
* ``MORE_WRONG = {name: (grade_id, cell, hint fragment)}``: further wrong answers (optional).
  A hint of ``None`` marks an answer that a test of its own uses by name, e.g. a deadlock the
  check would wait 15 s for and a harness test runs with a short timeout.
* ``RIGHT = {name: (grade_id, cell)}``: correct answers other than the solution's that the
  check must accept too (optional).

A cell is either the source a learner types into the answer cell, or, for a variant of the
solution, only the edit: ``{old: new}`` replaces each ``old`` text of the solution's cell
(each must occur once), so the file shows the mistake and copies nothing::

    "q1-answer": ({"            flat /= self.world_size\n": ""}, "divide by world_size"),

Sources run like the notebook: first the code cells above the first answer cell (the
imports), then the cell; the check gets what the cell defines under the solution's name
(``ring_shift``, ``BucketedAllReduce``). The correct answer is the solution notebook's own
cell, and the untouched exercise cell (``raise NotImplementedError()``) is a wrong answer of
every question, hint "not answered yet"; neither is written in the file.

``tests/test_checks_chNN.py`` says how to run each question's check (its arguments for correct
answers, and cheaper ones for wrong answers) and gets the two parametrized tests::

    CHECKS = {"q1-answer": Check(ch00.check_ring_shift, right={"world_sizes": (2, 3, 5)},
                                 wrong={"world_sizes": (3,)})}
    test_correct_answer_passes, test_wrong_answer_gets_its_hint = check_tests("00", CHECKS)

``answer(chapter, name).defined()`` gives one answer's function or class to a test of its own;
``graded_wrong(chapter)`` is ``WRONG`` with every cell as source, for the grader.
"""
from __future__ import annotations

import ast
import functools
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import nbformat
import pytest

from course_lib.grading import CheckFailed
from course_lib.grading.notebook import is_answer, meta, strip_solution, without_markers

HERE = Path(__file__).resolve().parent
SOLUTIONS = HERE.parents[1] / "solutions"
NOT_ANSWERED = "not answered yet"


@dataclass(frozen=True)
class Answer:
    """One answer cell's source: ``hint`` is None for a correct answer."""

    chapter: str  # the notebook's name, e.g. "00_collectives"
    name: str
    grade_id: str
    source: str
    hint: str | None = None

    def __str__(self) -> str:  # the test id
        return self.name

    def namespace(self) -> dict[str, Any]:
        """The globals of a notebook that ran its imports and then this cell."""
        ns: dict[str, Any] = {"__name__": "__main__"}  # like a kernel: the launcher pickles by value
        exec(compile(_notebook(self.chapter).imports, f"<{self.chapter} imports>", "exec"), ns)
        exec(compile(self.source, f"<{self.chapter} {self.name}>", "exec"), ns)
        return ns

    def defined(self) -> Any:
        """What the cell defines under the solution's name: the argument of the check."""
        return self.namespace()[_notebook(self.chapter).names[self.grade_id]]


@dataclass(frozen=True)
class _Notebook:
    imports: str  # the code cells above the first answer cell
    answers: dict[str, str] = field(default_factory=dict)  # grade_id -> solution source, no markers
    stubs: dict[str, str] = field(default_factory=dict)  # grade_id -> the exercise's cell
    names: dict[str, str] = field(default_factory=dict)  # grade_id -> what the cell defines


def _stem(chapter: str) -> str:
    """The notebook's name, from "00" or "00_collectives"."""
    found = sorted(SOLUTIONS.glob(f"{chapter.split('_')[0]}_*.ipynb"))
    if len(found) != 1:
        raise ValueError(f"chapter {chapter!r}: expected one solutions/{chapter}_*.ipynb, found {found}")
    return found[0].stem


@functools.lru_cache(maxsize=None)
def _notebook(chapter: str) -> _Notebook:
    nb = nbformat.read(SOLUTIONS / f"{_stem(chapter)}.ipynb", 4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    first = next(i for i, c in enumerate(code) if is_answer(c))
    out = _Notebook("\n".join(without_markers(c.source) for c in code[:first]))
    for c in code[first:]:
        if is_answer(c):
            gid = meta(c)["grade_id"]
            out.answers[gid] = without_markers(c.source)
            out.stubs[gid] = strip_solution(c.source)
            tree = ast.parse(out.answers[gid])
            out.names[gid] = next(s.name for s in tree.body if isinstance(s, (ast.FunctionDef, ast.ClassDef)))
    return out


@functools.lru_cache(maxsize=None)
def module(chapter: str) -> ModuleType:
    """The file of wrong answers for ``solutions/<chapter>*.ipynb``."""
    stem = _stem(chapter)
    spec = importlib.util.spec_from_file_location(f"wrong_answers.ch{stem}", HERE / f"{stem}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _source(chapter: str, grade_id: str, cell: str | dict[str, str]) -> str:
    """A cell's source: ``cell`` itself, or the solution's cell with each ``old`` text of the
    edit replaced by ``new``; each ``old`` must occur exactly once, so that a change to the
    solution cannot silently void the mistake."""
    if isinstance(cell, str):
        return cell
    source = _notebook(chapter).answers[grade_id]
    for old, new in cell.items():
        if source.count(old) != 1:
            raise ValueError(f"{chapter} {grade_id}: {old!r} occurs {source.count(old)} times in the "
                             "solution's answer cell, expected once; update the edit")
        source = source.replace(old, new)
    return source


def graded_wrong(chapter: str) -> dict[str, tuple[str, str]]:
    """``WRONG`` as ``{grade_id: (source, hint fragment)}``: what the grader test substitutes."""
    return {gid: (_source(chapter, gid, cell), hint) for gid, (cell, hint) in module(chapter).WRONG.items()}


def right(chapter: str) -> list[Answer]:
    """The solution's answer cells (named ``solution-<grade_id>``), then ``RIGHT``."""
    stem, nb = _stem(chapter), _notebook(chapter)
    out = [Answer(stem, f"solution-{gid}", gid, src) for gid, src in nb.answers.items()]
    more = getattr(module(chapter), "RIGHT", {})
    return out + [Answer(stem, name, gid, _source(chapter, gid, cell)) for name, (gid, cell) in more.items()]


def wrong(chapter: str) -> list[Answer]:
    """``WRONG`` (named ``wrong-<grade_id>``), the untouched exercise cells (``untouched-<grade_id>``),
    then ``MORE_WRONG``."""
    stem, nb = _stem(chapter), _notebook(chapter)
    out = [Answer(stem, f"wrong-{gid}", gid, src, hint) for gid, (src, hint) in graded_wrong(chapter).items()]
    out += [Answer(stem, f"untouched-{gid}", gid, src, NOT_ANSWERED) for gid, src in nb.stubs.items()]
    more = getattr(module(chapter), "MORE_WRONG", {})
    return out + [Answer(stem, name, gid, _source(chapter, gid, cell), hint) for name, (gid, cell, hint) in more.items()]


def answer(chapter: str, name: str) -> Answer:
    """One answer by its name (``wrong-q2-answer``, ``solution-q1-answer`` or a name in the file)."""
    answers = {a.name: a for a in right(chapter) + wrong(chapter)}
    if name not in answers:
        raise KeyError(f"chapter {chapter}: no answer named {name!r}; there are {sorted(answers)}")
    return answers[name]


@dataclass(frozen=True)
class Check:
    """How a checks test runs one question's check: with ``right`` for correct answers, with
    ``wrong`` (usually one small world size, to stay fast) for wrong ones."""

    run: Callable[..., None]
    right: dict[str, Any] = field(default_factory=dict)
    wrong: dict[str, Any] = field(default_factory=dict)


def check_tests(chapter: str, checks: dict[str, Check], *, own_tests: tuple[str, ...] = ()):
    """The two parametrized tests of a checks test file: every correct answer passes its check,
    every wrong answer fails it with its hint. ``checks`` maps a grade_id, or an answer's name
    to override its question's row, to a :class:`Check`; ``own_tests`` names wrong answers that
    a test of their own checks in more detail (their hint must still hold there)."""
    def row(a: Answer) -> Check:
        return checks.get(a.name) or checks[a.grade_id]

    @pytest.mark.parametrize("answer", right(chapter), ids=str)
    def test_correct_answer_passes(answer: Answer, capsys) -> None:
        row(answer).run(answer.defined(), **row(answer).right)
        assert "passed" in capsys.readouterr().out

    @pytest.mark.parametrize("answer", [a for a in wrong(chapter) if a.hint is not None and a.name not in own_tests],
                             ids=str)
    def test_wrong_answer_gets_its_hint(answer: Answer) -> None:
        with pytest.raises(CheckFailed) as e:
            row(answer).run(answer.defined(), **row(answer).wrong)
        assert answer.hint in str(e.value), (answer.hint, str(e.value))

    return test_correct_answer_passes, test_wrong_answer_gets_its_hint
