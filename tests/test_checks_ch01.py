"""Chapter 1 checks: pass on correct answers and on the course's own solvers, fail with the
right hint on typical mistakes (the answers: solutions/01_allocation.ipynb and
tests/wrong_answers/01_allocation.py)."""
from __future__ import annotations

import time

import pytest
from wrong_answers import Check, check_tests

from course_lib.allocation import chain_dp, cost, milp_assign
from course_lib.grading import ch01
from course_lib.grading.feedback import CheckFailed

CHECKS = {
    "q1-answer": Check(ch01.check_cost),
    "q2-answer": Check(ch01.check_chain_dp),
    "q3-answer": Check(ch01.check_milp_bottleneck),
}
test_correct_answer_passes, test_wrong_answer_gets_its_hint = check_tests("01", CHECKS)


def test_checks_pass_on_the_course_solvers():
    # __wrapped__: the checks themselves, without own_work's refusal of the course's code
    ch01.check_cost.__wrapped__(cost)
    ch01.check_chain_dp.__wrapped__(lambda p, o: chain_dp(p, o).assignment)
    ch01.check_milp_bottleneck.__wrapped__(lambda p: milp_assign(p, "bottleneck").assignment)


def test_time_limit_stops_enumeration():
    with pytest.raises(CheckFailed, match="did not finish within"):
        with ch01.time_limit(0.2, "Q", "use the recurrence"):
            time.sleep(2)
