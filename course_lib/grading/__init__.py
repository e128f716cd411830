"""Graded exercises, in nbgrader's notebook conventions.

* ``solutions/*.ipynb`` is the single source. Code cells use nbgrader's markers and metadata:
  ``### BEGIN SOLUTION`` / ``### END SOLUTION`` in answer cells, ``### BEGIN HIDDEN TESTS`` /
  ``### END HIDDEN TESTS`` in test cells, and ``metadata.nbgrader`` with ``grade_id``,
  ``points``, ``grade``, ``solution`` and ``locked``.
* ``python -m course_lib.grading.assign`` writes ``exercises/`` from ``solutions/``
  (:mod:`.assign`); ``--check`` fails when they have drifted apart.
* Learners run each test cell; its visible checks raise :class:`CheckFailed` with a hint.
* ``python -m course_lib.grading.autograde SUBMISSIONS --out scores.csv`` grades a folder of
  submissions with the hidden checks restored (:mod:`.autograde`): the learner's cells run in
  a kernel, the test cells there only capture the answers, and the checks run in a separate
  process (:mod:`.checker`) that never runs the learner's code: the answers live in an answer
  process (:mod:`.isolation`) and come back as data only (:mod:`.safe_pickle`).
* ``python -m course_lib.grading.release DIR`` writes the learners' copy (:mod:`.release`).

Conventions a chapter follows (chapters 0-7 do; a new chapter NN adopts them as it is):

1. ``solutions/NN_name.ipynb``: the code cells before the first answer cell are the imports,
   and they import only what the learner may use (never the module function the question asks
   for). The autograder runs the *solution's* import cells before the checks, and the check
   process gets every name a test cell reads that those imports do not define (the answers).
2. ``course_lib/grading/chNN.py``: each ``check_*`` is decorated with
   ``@own_work(QUESTION, forbid=(...), allow=(...))`` (:mod:`.borrow`): dotted names of the
   course modules, functions or classes that implement what the question asks, plus
   ``"torch.distributed"`` when the answer must build a collective itself. An answer using one
   of them fails with "your answer borrows ...". ``allow`` lists what the exercise hands out.
3. A check that runs the learner's code on ranks goes through
   :func:`.harness.run_learner`, which turns deadlocks, infinite loops (read from the bytecode
   of the line each rank was stuck on) and worker errors into hints.
4. In the checker, what a check receives is a handle to the learner's function or class
   (:class:`.isolation.Answer`): call it (arguments and results travel as data), but ask about
   its type with :func:`.isolation.is_class`, :func:`.isolation.subclass_of` and
   :func:`.isolation.type_name`, launch ranks with :func:`.isolation.launch` (or
   :func:`.harness.run_learner`), and run course code that must instantiate or inspect it
   with :func:`.isolation.run`; ranks return only data (tensors, numbers, containers,
   ``CommStats``).
5. ``tests/wrong_answers/NN_name.py`` holds one ``WRONG`` answer per answer cell and, in
   ``MORE_WRONG``, at least one borrowed answer per question with the hint ``"borrows ..."``.
"""
from course_lib.grading.feedback import CheckFailed, expect, passed

__all__ = ["CheckFailed", "expect", "passed"]
