"""Chapter 4 checks: pass on correct answers, fail with the right hint on plausible wrong ones
(the answers: solutions/04_ddp_zero.ipynb and tests/wrong_answers/04_ddp_zero.py)."""
from __future__ import annotations

from wrong_answers import Check, check_tests

from course_lib.grading import ch04

CHECKS = {
    "q1-answer": Check(ch04.check_bucketed_all_reduce, right={"world_sizes": (2, 3), "caps": (2048, 10**9)}),
    "q2-answer": Check(ch04.check_zero1_step, right={"world_sizes": (2, 3, 4), "n": 12}),
}
test_correct_answer_passes, test_wrong_answer_gets_its_hint = check_tests("04", CHECKS)
