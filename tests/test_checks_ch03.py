"""Chapter 3 checks: pass on correct answers, fail with the right hint on plausible wrong ones
(the answers: solutions/03_ring_collectives.ipynb and tests/wrong_answers/03_ring_collectives.py)."""
from __future__ import annotations

import pytest
from wrong_answers import Check, answer, check_tests

from course_lib.grading import CheckFailed, ch03

CHECKS = {
    "q1-answer": Check(ch03.check_ring_reduce_scatter, right={"world_sizes": (2, 3, 5), "m": 2},
                       wrong={"world_sizes": (3,)}),
    "q2-answer": Check(ch03.check_ring_all_gather, right={"world_sizes": (2, 3, 5), "m": 2},
                       wrong={"world_sizes": (3,)}),
    "ag_parity": Check(ch03.check_ring_all_gather, right={"world_sizes": (2, 4)}),  # even world sizes only
}
# the deadlocking wrong answer to q2 waits 8 s; the test below asks more of its hint
test_correct_answer_passes, test_wrong_answer_gets_its_hint = check_tests("03", CHECKS, own_tests=("wrong-q2-answer",))


def test_deadlock_hint_names_the_blocked_call():
    deadlock = answer("03", "wrong-q2-answer")
    with pytest.raises(CheckFailed, match=r"did not finish.*The run deadlocks.*order by parity"
                       r".*blocked in course_lib\.comm\.send") as e:
        ch03.check_ring_all_gather(deadlock.defined(), world_sizes=(2,))
    assert deadlock.hint in str(e.value)
