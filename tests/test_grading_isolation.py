"""The process that decides a score never runs the learner's code: answers that attack the
checker while they are checked score 0. Real submissions, graded as an instructor would: a
``my_cost`` that patches ``ch01._close`` when called, a pickle whose loading replaces
``builtins.exec``, and a rank that returns an object whose ``__reduce__`` takes over the
process that reads it. Also the pieces: the restricted reader, and the answer process's
calls, errors and deaths."""
from __future__ import annotations

import csv
import os
import pickle
from pathlib import Path

import nbformat
import pytest
import torch

from course_lib.grading import autograde, isolation
from course_lib.grading.checker import capture, run_one
from course_lib.grading.notebook import meta
from course_lib.grading.safe_pickle import RefusedObject, dumps, loads
from course_lib.ssp import SSPBook

ROOT = Path(__file__).resolve().parents[1]

# Chapter 0, question 1: wrong (returns its own tensor), and carries an object whose unpickling
# makes every test cell a no-op in the process that loads the answer.
EXEC_PAYLOAD = '''class _Helper:
    def __reduce__(self):
        code = ("import builtins\\n_e = builtins.exec\\n"
                "def _exec(c, *a, _e=_e, **k):\\n"
                "    if getattr(c, 'co_filename', '').startswith('<test cell'):\\n"
                "        return None\\n"
                "    return _e(c, *a, **k)\\n"
                "builtins.exec = _exec\\n")
        return (exec, (code,))
helper = _Helper()
def ring_shift(rank, world_size, x):
    helper          # referenced, so the answer's pickle carries it
    return x        # wrong: sends nothing
'''
# Chapter 0, question 3: each rank returns an object whose __reduce__ runs, where the ranks'
# results are read, code that makes that process send the grader a pickle of ``os.system``.
EVIL_RESULT = '''import os
class _Boom:
    def __reduce__(self):
        return (os.system, ("echo this should never run in the grader",))
def _take_over():
    import pickle, sys
    sys.modules["course_lib.grading.safe_pickle"].dumps = lambda obj: pickle.dumps(_Boom())
    return [torch.zeros(1)]
class _Evil:
    def __reduce__(self):
        return (_take_over, ())
def all_to_all_p2p(rank, world_size, x):
    return _Evil()
'''
# Chapter 1, question 1: wrong (always 0.0), and replaces the check's comparison when called.
PATCH_AT_CALL = '''import sys
def my_cost(problem, x, objective):
    sys.modules["course_lib.grading.ch01"]._close = lambda *a, **k: True
    return 0.0
'''


def test_answers_that_attack_the_checker_score_zero(tmp_path):
    sol = nbformat.read(ROOT / "solutions" / "00_collectives.ipynb", 4)
    for c in sol.cells:
        c.source = {"q1-answer": EXEC_PAYLOAD, "q3-answer": EVIL_RESULT}.get(meta(c).get("grade_id"), c.source)
    (tmp_path / "mallory").mkdir()
    nbformat.write(sol, tmp_path / "mallory" / "00_collectives.ipynb")
    out = tmp_path / "scores.csv"
    assert autograde.main([str(tmp_path), "--out", str(out), "--cell-timeout", "60"]) == 0
    row = next(csv.DictReader(open(out, newline="")))
    assert (row["00.q1"], row["00.q2"], row["00.q3"]) == ("0.0", "3.0", "0.0"), row
    assert "returned its own tensor" in row["feedback"]  # the hidden test cell did run
    assert "your answer returned an object of type posix.system, which the grader does not accept" \
        in row["feedback"], row["feedback"]


def test_patching_the_check_while_it_runs_does_not_reach_it(tmp_path):
    ns = {"__name__": "__main__"}  # as in a kernel: the function is pickled by value
    exec(PATCH_AT_CALL, ns)
    blob = str(tmp_path / "q1.answer")
    capture(ns, ["my_cost"], blob)
    err = run_one("from course_lib.grading import ch01", "q1", "ch01.check_cost(my_cost)", blob)
    assert err is not None and err.startswith("CheckFailed: Q1 cost: on random_problem"), err


def test_the_reader_builds_data_only():
    from course_lib.comm import CommStats
    stats = CommStats(sent_bytes=8)
    stats.collective_calls["all_reduce"] += 1
    value = {"out": torch.arange(6.0).reshape(2, 3)[:, 1], "w": torch.nn.Parameter(torch.ones(2)),
             "stats": stats, "book": SSPBook(2, 1), "x": (1, 2.5, None, "s", {3}), "size": torch.Size([2])}
    back = loads(dumps(value))
    assert torch.equal(back["out"], value["out"]) and isinstance(back["w"], torch.nn.Parameter)
    assert back["stats"] == stats and back["book"] == value["book"] and back["x"] == value["x"]
    for hostile in (pickle.dumps(os.system), pickle.dumps(torch.ones(2)),  # torch's own pickle calls torch.load
                    pickle.dumps(torch.load), dumps(_Local())):
        with pytest.raises(RefusedObject, match="does not accept"):
            loads(hostile)


class _Local:
    pass


ANSWERS = '''import os
def on_push(book, k):
    book.clock[k] += 1
    return [k]
def stub(*a):
    raise NotImplementedError()
def dies():
    os._exit(3)
def slow():
    while True:
        pass
'''


def test_answer_process_calls_errors_and_deaths(tmp_path):
    ns = {"__name__": "__main__"}
    exec(ANSWERS, ns)
    blob = str(tmp_path / "a.answer")
    capture(ns, ["on_push", "stub", "dies", "slow"], blob)
    host = isolation.Host()
    try:
        got = host.answers(blob)
        book = SSPBook(2)
        assert got["on_push"](book, 1) == [1] and book.clock == [0, 1]  # the change in place came back
        with pytest.raises(NotImplementedError):
            got["stub"]()
        with pytest.raises(isolation.AnswerProcessDied, match="os._exit"):
            got["dies"]()
        from course_lib.grading.ch01 import CheckFailed, time_limit
        with pytest.raises(CheckFailed, match="did not finish"):
            with time_limit(0.5, "Q", "hint"):
                got["slow"]()
        assert host.pid is None  # the interrupted process was ended; the next call starts another
        assert got["on_push"](book, 0) == [0] and book.clock == [1, 1]
    finally:
        host.stop()
