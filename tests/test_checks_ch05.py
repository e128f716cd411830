"""Chapter 5 checks: the solution's answers pass; every wrong answer of
tests/wrong_answers/05_tensor_parallel.py (WRONG and MORE_WRONG) fails with its hint.

The first question defines two classes, so these tests read the answer's whole namespace
(``Answer.namespace``) instead of ``check_tests``'s single definition."""
from __future__ import annotations

import pytest

from course_lib.grading import CheckFailed, ch05
from wrong_answers import NOT_ANSWERED, right, wrong

WRONG = [a for a in wrong("05") if a.hint not in (None, NOT_ANSWERED)]


def _run(answer, full: bool = False) -> None:
    ns = answer.namespace()
    if answer.grade_id == "q1-answer":
        ch05.check_conjugate_operators(ns["CopyToTP"], ns["ReduceFromTP"])
    elif answer.grade_id == "q2-answer":
        ch05.check_row_parallel_linear(ns["RowParallelLinear"])
    else:
        sizes = dict(world_sizes=(2, 4), vocab=11) if full else {}  # 11 = uneven vocabulary shards
        ch05.check_vocab_parallel_cross_entropy(ns["vocab_parallel_cross_entropy"], **sizes)


@pytest.mark.parametrize("answer", right("05"), ids=str)
def test_solution_passes(answer, capsys):
    _run(answer, full=True)
    assert "passed" in capsys.readouterr().out


@pytest.mark.parametrize("answer", WRONG, ids=str)
def test_wrong_answer_gets_its_hint(answer):
    with pytest.raises(CheckFailed) as e:
        _run(answer)
    assert answer.hint in e.value.hint, e.value.hint
