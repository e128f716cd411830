"""Graded exercises, in nbgrader's notebook conventions.

* ``solutions/*.ipynb`` is the single source. Code cells use nbgrader's markers and metadata:
  ``### BEGIN SOLUTION`` / ``### END SOLUTION`` in answer cells, ``### BEGIN HIDDEN TESTS`` /
  ``### END HIDDEN TESTS`` in test cells, and ``metadata.nbgrader`` with ``grade_id``,
  ``points``, ``grade``, ``solution`` and ``locked``.
* ``python -m course_lib.grading.assign`` writes ``exercises/`` from ``solutions/``
  (:mod:`.assign`); ``--check`` fails when they have drifted apart.
* Learners run each test cell; its visible checks raise :class:`CheckFailed` with a hint.
* ``python -m course_lib.grading.autograde SUBMISSIONS --out scores.csv`` grades a folder of
  submissions with the hidden checks restored (:mod:`.autograde`).
"""
from course_lib.grading.feedback import CheckFailed, expect, passed

__all__ = ["CheckFailed", "expect", "passed"]
