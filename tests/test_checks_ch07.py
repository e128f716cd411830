"""Chapter 7 checks: pass on correct answers, fail with the right hint on plausible wrong ones
(the answers: solutions/07_compression.ipynb and tests/wrong_answers/07_compression.py)."""
from __future__ import annotations

from wrong_answers import Check, check_tests

from course_lib.grading import ch07

CHECKS = {
    "q1-answer": Check(ch07.check_majority_vote, right={"world_sizes": (2, 3), "sizes": (64, 37)}),
    "q2-answer": Check(ch07.check_topk_ef, right={"world_sizes": (2, 3)}),
    "q3-answer": Check(ch07.check_powersgd_step, right={"world_sizes": (2, 3)}),
}
test_correct_answer_passes, test_wrong_answer_gets_its_hint = check_tests("07", CHECKS)
