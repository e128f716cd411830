"""Chapter 2 checks: pass on correct answers, fail with the right hint on plausible wrong ones
(the answers: solutions/02_ps_and_gossip.ipynb and tests/wrong_answers/02_ps_and_gossip.py)."""
from __future__ import annotations

import pytest
import torch
from wrong_answers import Check, answer, check_tests

from course_lib.grading import CheckFailed, ch02
from course_lib.grading.harness import run_learner

CHECKS = {
    "q1-answer": Check(ch02.check_sync_ps_step, right={"world_sizes": (2, 3, 5)}, wrong={"world_sizes": (3,)}),
    "q2-answer": Check(ch02.check_on_push, right={"real_runs": ((3, 1), (2, 0), (3, None))}, wrong={"real_runs": ()}),
    "q3-answer": Check(ch02.check_gossip_step, right={"world_sizes": (3, 4, 6)}, wrong={"world_sizes": (4,)}),
}
test_correct_answer_passes, test_wrong_answer_gets_its_hint = check_tests("02", CHECKS)


def test_on_push_deadlock_in_real_run_is_a_hint():
    """A rule that passes no script but is run for real: the server refuses to wait forever."""
    with pytest.raises(CheckFailed, match="no worker was released"):
        ch02._real_run(answer("02", "on_push_never_releases").defined(), 2, 0, 3)


def test_gossip_step_deadlock_is_reported():
    with pytest.raises(CheckFailed, match="did not finish.*comm.irecv"):
        run_learner(ch02.Q3, answer("02", "gossip_step_blocking").defined(), 3, [torch.zeros(2)] * 3, timeout=3,
                    deadlock_hint="post comm.irecv from both neighbours")
