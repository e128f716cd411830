"""Chapter 0 checks: pass on correct answers, fail with the right hint on plausible wrong ones
(the answers: solutions/00_collectives.ipynb and tests/wrong_answers/00_collectives.py)."""
from __future__ import annotations

import pytest
import torch
from wrong_answers import Check, answer, check_tests

from course_lib.grading import CheckFailed, ch00
from course_lib.grading.harness import run_learner

CHECKS = {
    "q1-answer": Check(ch00.check_ring_shift, right={"world_sizes": (2, 3, 5)}, wrong={"world_sizes": (3,)}),
    "q2-answer": Check(ch00.check_naive_all_reduce, right={"world_sizes": (2, 3, 4)}, wrong={"world_sizes": (2,)}),
    "q3-answer": Check(ch00.check_all_to_all, right={"world_sizes": (2, 3, 4)}, wrong={"world_sizes": (3,)}),
}
test_correct_answer_passes, test_wrong_answer_gets_its_hint = check_tests("00", CHECKS)


def test_all_to_all_deadlock_is_reported_with_hint():
    with pytest.raises(CheckFailed, match="did not finish.*comm.irecv.*rank 0 blocked in course_lib.comm.send"):
        run_learner("Q3", answer("00", "all_to_all_blocking").defined(), 2, [[torch.zeros(1)] * 2] * 2, timeout=3,
                    deadlock_hint="Post the receives and sends with comm.irecv / comm.isend")
