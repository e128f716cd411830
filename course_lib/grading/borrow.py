"""A graded answer must be the learner's own code: :func:`own_work` declares, next to a check,
what the question asks the learner to write, and fails the check if the answer uses it.

    @own_work(Q1, forbid=("course_lib.collectives", "torch.distributed"))
    def check_ring_reduce_scatter(fn, ...): ...

``forbid`` lists dotted names of modules (everything defined in them) or of single functions
and classes; ``allow`` lists exceptions (what the exercise itself hands out, e.g.
``course_lib.ddp.assign_buckets``). Before the check runs, every function or class passed to
it is searched, by its compiled code rather than its text: the globals and closure it uses,
attributes it reads from modules (``torch.distributed.all_reduce``, ``ch01.cost``), modules it
imports inside a function, its base classes and methods, and the learner's own helpers it
calls, recursively. A hit fails the question with a message that names what was used.

The search reads the learner's real code, so in the autograder it runs in the answer process
(:func:`course_lib.grading.isolation.run`), and only its finding, two strings, comes back to
the checker. An answer whose pickle takes over that process could fake this one finding
("nothing borrowed") and so pass with the course's implementation hidden in it; it cannot make
a wrong answer pass, since the comparison of results runs in the checker
(:mod:`course_lib.grading.checker`), which never runs the learner's code.

What it cannot see: code that builds a name at run time (``getattr(m, "ring_" + "x")``) or
code run through ``exec``. Those are for a human reader of the CSV.
"""
from __future__ import annotations

import functools
import importlib
import inspect
import sys
import types
from typing import Any, Callable, Iterable

from course_lib.grading import isolation
from course_lib.grading.feedback import CheckFailed

BORROWED = "borrows"  # a fragment of every message, for tests and for the CSV reader
# Names every answer may use whatever a check forbids: the reduction ops course_lib.comm re-exports.
ALWAYS_ALLOWED = ("torch.distributed.distributed_c10d.ReduceOp", "torch._C._distributed_c10d.ReduceOp")


def _dotted(obj: Any) -> str | None:
    """``module.qualname`` of a function, class or module; None for anything else."""
    if isinstance(obj, types.ModuleType):
        return obj.__name__
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    mod, qual = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if isinstance(mod, str) and isinstance(qual, str) and (inspect.isroutine(obj) or inspect.isclass(obj)):
        return f"{mod}.{qual}"
    return None


def _matches(name: str, specs: Iterable[str]) -> str | None:
    return next((s for s in specs if name == s or name.startswith(s + ".")), None)


def _is_learners(obj: Any) -> bool:
    """Defined in the notebook (or a test's stand-in for it): searched further."""
    return getattr(obj, "__module__", None) in ("__main__", None) or \
        str(getattr(obj, "__module__", "")).startswith("__main__")


def _code_names(code: types.CodeType) -> tuple[set[str], set[str]]:
    """(names, string constants) of a code object and every code object nested in it."""
    names, strings = set(code.co_names), set()
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            n, s = _code_names(c)
            names |= n
            strings |= s
        elif isinstance(c, str):
            strings.add(c)
        elif isinstance(c, tuple):
            strings |= {x for x in c if isinstance(x, str)}
    return names, strings


def references(obj: Any) -> list[tuple[str, Any]]:
    """Every (how it is reached, object) that ``obj`` uses, following the learner's own code."""
    found: list[tuple[str, Any]] = []
    seen: set[int] = set()

    def visit(o: Any, via: str) -> None:
        if id(o) in seen:
            return
        seen.add(id(o))
        found.append((via, o))
        if isinstance(o, functools.partial):
            visit(o.func, via)
            for a in list(o.args) + list(o.keywords.values()):
                visit(a, via)
            return
        if isinstance(o, (staticmethod, classmethod, types.MethodType)):
            visit(o.__func__, via)
            return
        if isinstance(o, property):
            for f in (o.fget, o.fset, o.fdel):
                if f is not None:
                    visit(f, via)
            return
        if not _is_learners(o):
            return
        if inspect.isclass(o):
            for base in o.__mro__[1:]:
                visit(base, f"{via} (base class)")
            for k, v in vars(o).items():
                if callable(v) or isinstance(v, (staticmethod, classmethod, property)):
                    visit(v, f"{via}.{k}")
            return
        code = getattr(o, "__code__", None)
        if not isinstance(code, types.CodeType):
            return
        names, strings = _code_names(code)
        g = getattr(o, "__globals__", {})
        modules = []
        for n in names:
            if n in g:
                visit(g[n], n)
                if isinstance(g[n], types.ModuleType):
                    modules.append(g[n])
        for cell in o.__closure__ or ():
            try:
                v = cell.cell_contents
            except ValueError:
                continue
            visit(v, "a closure variable")
            if isinstance(v, types.ModuleType):
                modules.append(v)
        for d in (o.__defaults__ or ()) + tuple((o.__kwdefaults__ or {}).values()):
            visit(d, "a default argument")
        # `import a.b` / `from a.b import c` inside the function: the module name is a string
        for s in names | strings:
            if "." in s or s in ("torch", "course_lib"):
                mod = sys.modules.get(s)
                if mod is None and s.split(".")[0] in ("course_lib", "torch"):
                    try:  # imported inside a function that has not run yet in this process
                        mod = importlib.import_module(s)
                    except Exception:  # noqa: BLE001 - not a module name after all
                        mod = None
                if isinstance(mod, types.ModuleType):
                    modules.append(mod)
                    found.append((f"import {s}", mod))
        # attributes read from a module: torch.distributed, ch01.cost, cc.ring_reduce_scatter
        for _ in range(3):  # torch -> torch.distributed -> torch.distributed.all_reduce
            more = []
            for m in modules:
                for n in names:
                    a = getattr(m, n, None) if n in getattr(m, "__dict__", {}) else None
                    if a is not None and id(a) not in seen:
                        seen.add(id(a))
                        found.append((f"{m.__name__}.{n}", a))
                        if isinstance(a, types.ModuleType):
                            more.append(a)
            modules = more

    visit(obj, getattr(obj, "__name__", "your answer"))
    return found


def borrowed(obj: Any, forbid: Iterable[str], allow: Iterable[str] = ()) -> tuple[str, str] | None:
    """(what was used, how it was reached) for the first forbidden thing ``obj`` uses, else None."""
    forbid, allow = tuple(forbid), tuple(allow) + ALWAYS_ALLOWED
    for via, o in references(obj):
        name = _dotted(o)
        if name is None or name.startswith("__main__"):
            continue
        if _matches(name, forbid) and not _matches(name, allow):
            return name, via
    return None


def own_work(question: str, forbid: tuple[str, ...], allow: tuple[str, ...] = ()) -> Callable:
    """Decorate a check: every function or class passed to it must not use ``forbid``."""
    def wrap(check: Callable) -> Callable:
        @functools.wraps(check)
        def checked(*args: Any, **kwargs: Any) -> Any:
            for a in list(args) + list(kwargs.values()):
                if callable(a):
                    # the search reads the real code: in the answer process (see the docstring)
                    hit = isolation.run(borrowed, a, forbid, allow)
                    if hit:
                        name, via = hit
                        raise CheckFailed(question, (
                            f"your answer {BORROWED} {name} (reached through `{via}`): the course's own "
                            "implementation of what this question asks you to write, or torch's built-in for "
                            "it. Graded answers must be your own code; this question scores 0 until it is. "
                            f"Not allowed here: {', '.join(forbid)}."))
            return check(*args, **kwargs)
        checked.forbid, checked.allow = forbid, allow  # type: ignore[attr-defined]
        return checked
    return wrap
