"""Chapter 1 checks: they pass on the course's own solvers and fail, with the right hint,
on typical mistakes (beyond the wrong answers the grader test runs)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from course_lib.allocation import chain_dp, cost, latency, milp_assign, time_per_microbatch
from course_lib.grading import ch01
from course_lib.grading.feedback import CheckFailed


def test_checks_pass_on_the_course_solvers():
    ch01.check_cost(cost)
    ch01.check_chain_dp(lambda p, o: chain_dp(p, o).assignment)
    ch01.check_milp_bottleneck(lambda p: milp_assign(p, "bottleneck").assignment)


def _fails(check, fn, fragment):
    with pytest.raises(CheckFailed) as e:
        check(fn)
    assert fragment in e.value.hint, e.value.hint


def test_cost_mistakes_get_specific_hints():
    _fails(ch01.check_cost, lambda p, x, o: latency(p, x) if o == "latency" else time_per_microbatch(p, x),
           "must cost float('inf')")
    from course_lib.allocation import compute_time

    def no_comm(p, x, o):
        c = cost(p, x, o)
        if math.isinf(c):
            return c
        load = compute_time(p, x)
        return float(load.sum() if o == "latency" else load.max())
    _fails(ch01.check_cost, no_comm, "left out communication")

    def nan_answer(p, x, o):
        raise ZeroDivisionError("oops")
    _fails(ch01.check_cost, nan_answer, "raised ZeroDivisionError")


def test_chain_dp_mistakes_get_specific_hints():
    # a non-contiguous (general) optimum is not a pipeline in device order
    _fails(ch01.check_chain_dp, lambda p, o: milp_assign(p, o).assignment, "never decrease")
    # everything on the last device: contiguous but not optimal (or infeasible)
    _fails(ch01.check_chain_dp, lambda p, o: (p.n - 1,) * p.k, "")


def test_milp_mistakes_get_specific_hints():
    _fails(ch01.check_milp_bottleneck, lambda p: (0,) * p.k, "")
    _fails(ch01.check_milp_bottleneck, lambda p: (0,) * (p.k - 1), "one device per module")


def test_time_limit_stops_enumeration():
    import time

    with pytest.raises(CheckFailed, match="did not finish within"):
        with ch01.time_limit(0.2, "Q", "use the recurrence"):
            time.sleep(2)
