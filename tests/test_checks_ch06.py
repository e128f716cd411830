"""Chapter 6 checks: pass on correct answers, fail with the right hint on plausible wrong ones
(the answers: solutions/06_pipeline_parallel.ipynb and tests/wrong_answers/06_pipeline_parallel.py)."""
from __future__ import annotations

import pytest
from wrong_answers import Check, answer, check_tests

from course_lib.grading import CheckFailed, ch06

CHECKS = {
    "q1-answer": Check(ch06.check_one_f_one_b, right={"sizes": ((2, 4), (4, 8), (4, 2), (3, 5))},
                       wrong={"sizes": ((2, 4),)}),
    "q1_no_warmup": Check(ch06.check_one_f_one_b, wrong={"sizes": ((4, 8),)}),
    "q2-answer": Check(ch06.check_two_stage, right={"ms": (1, 4)}),
}
test_correct_answer_passes, test_wrong_answer_gets_its_hint = check_tests("06", CHECKS, own_tests=("wrong-q2-answer",))


def test_q2_blocking_sends_deadlock_names_both_ranks():
    a = answer("06", "wrong-q2-answer")
    with pytest.raises(CheckFailed, match=a.hint) as e:
        ch06.check_two_stage(a.defined())
    assert "rank 0" in str(e.value) and "rank 1" in str(e.value)
