"""The learner's code runs in an answer process; the score is decided in a process that never runs it.

The checker (:mod:`course_lib.grading.checker`) never loads a captured answer. It holds each of
the learner's functions and classes as an :class:`Answer`, a handle: calling it runs the call in
the *answer process*, a child of the checker that loaded the answer and may be compromised by it
(a payload in the pickle, an answer that patches modules while it runs). What comes back, the
return value and the arguments' state after the call (a check may read what an answer changed
in place, e.g. chapter 2's ``on_push(book, k)``), is read with :func:`safe_pickle.loads
<course_lib.grading.safe_pickle.loads>`, which builds only data. An exception comes back as its
type name, message and attributes, and is raised again here as the same builtin type
(``NotImplementedError`` stays ``NotImplementedError``), or as a plain ``Exception`` subclass of
that name.

The course's code that must touch the learner's objects runs there too, through :func:`run`:
the borrow search (:func:`course_lib.grading.borrow.own_work`), reading bytecode for a hint, and
every :func:`launch`: the ranks run the learner's code, and the launcher unpickles what they
return, so it runs in the answer process and the ranks' results reach the checker through the
same restricted reader. Outside the checker (a notebook, a test) there is no answer process:
:func:`run` and :func:`launch` call directly.

    with isolation.hosted(Host()) as host:
        answers = host.answers("q1.answer")      # {"ring_shift": Answer} or an error text
        ch00.check_ring_shift(answers["ring_shift"])

A call that the checker interrupts (chapter 1's time limit) or that kills the answer process
(``os._exit``) ends that process; the next call starts a fresh one, forked from the checker.
"""
from __future__ import annotations

import builtins
import contextlib
import dataclasses
import inspect
import os
import pickle
import signal
import socket
import struct
import sys
import traceback
from typing import Any, Callable, Iterator

import cloudpickle
import numpy as np
import torch

from course_lib import launch_errors, launcher
from course_lib.grading import safe_pickle
from course_lib.grading.feedback import CheckFailed

MAX_REPLY = 1 << 30  # bytes: a reply claiming more is refused
_host: Host | None = None  # the answer process the checks use now (None: call directly)


class AnswerProcessDied(RuntimeError):
    """The answer process ended while running the learner's code."""


# ----------------------------------------------------------------------------- the checks' API
def run(f: Callable, *args: Any, **kwargs: Any) -> Any:
    """``f(*args, **kwargs)``, in the answer process when there is one.

    ``f`` is the course's code that needs the learner's real objects (its arguments may hold
    :class:`Answer` handles); its return value must be data (:mod:`.safe_pickle`)."""
    return f(*args, **kwargs) if _host is None else _host.request("run", f, args, kwargs)


def launch(fn: Callable, world_size: int, *args: Any, **kwargs: Any) -> launcher.RankResults:
    """:func:`course_lib.launcher.launch`, started from the answer process when there is one."""
    if _host is None:
        return launcher.launch(fn, world_size, *args, **kwargs)
    values, stats, seconds = _host.request("run", _launch_here, (fn, world_size, args, kwargs), {})
    res = launcher.RankResults(values)
    res.comm, res.seconds = list(stats), float(seconds)
    return res


def _launch_here(fn: Callable, world_size: int, args: tuple, kwargs: dict) -> tuple[list, list, float]:
    res = launcher.launch(fn, world_size, *args, **kwargs)
    return list(res), list(res.comm), res.seconds


def is_class(obj: Any) -> bool:
    """``isinstance(obj, type)``, for the learner's class seen through its handle too."""
    return obj.info["is_class"] if isinstance(obj, Answer) else isinstance(obj, type)


def type_name(obj: Any) -> str:
    """``type(obj).__name__``, for the learner's object seen through its handle too."""
    return obj.info["type"] if isinstance(obj, Answer) else type(obj).__name__


def subclass_of(obj: Any, base: type) -> bool:
    """``obj`` is a class deriving from ``base`` (read from its method resolution order)."""
    if isinstance(obj, Answer):
        return is_class(obj) and f"{base.__module__}.{base.__qualname__}" in obj.info["mro"]
    return isinstance(obj, type) and issubclass(obj, base)


@contextlib.contextmanager
def hosted(host: Host) -> Iterator[Host]:
    """Route :func:`run` and :func:`launch` through ``host`` inside the block."""
    global _host
    old, _host = _host, host
    try:
        yield host
    finally:
        _host = old


# ----------------------------------------------------------------------------- handles
class Answer:
    """The learner's object, as the checker sees it: its name and description, not its code.

    Pickled (to the answer process, or inside a function sent there), it becomes the real
    object again."""

    def __init__(self, host: Host, blob: str, name: str, info: dict):
        self._host, self._blob, self._name, self.info = host, blob, name, info
        self.__name__ = info["name"] or name
        self.__qualname__ = info["qualname"] or name
        self.__module__ = info["module"]
        if info["signature"] is not None:
            try:
                self.__signature__ = inspect.Signature([
                    inspect.Parameter(n, inspect._ParameterKind(k),
                                      default=None if has_default else inspect.Parameter.empty)
                    for n, k, has_default in info["signature"]])
            except (TypeError, ValueError):
                pass

    def __reduce__(self) -> tuple:
        return _resolve, (self._blob, self._name)

    def __repr__(self) -> str:
        return self.info["repr"]


class CallableAnswer(Answer):
    """A handle to a function or class: calling it calls the real one in the answer process."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        result, after, kw_after = self._host.request("call", self, args, kwargs)
        for a, new in zip(args, after):
            _update(a, new)
        for k, new in kw_after.items():
            _update(kwargs[k], new)
        return result


def _update(orig: Any, new: Any) -> None:
    """Give ``orig`` (the checker's argument) the state the call left in its copy ``new``."""
    if new is None or type(new) is not type(orig):
        return
    if isinstance(orig, (list, bytearray)):
        orig[:] = new
    elif isinstance(orig, (dict, set)):
        orig.clear()
        orig.update(new)
    elif isinstance(orig, torch.Tensor):
        if orig.shape == new.shape and orig.dtype == new.dtype:
            with torch.no_grad():
                orig.copy_(new)
    elif isinstance(orig, np.ndarray):
        if orig.shape == new.shape:
            orig[...] = new
    elif type(orig) in safe_pickle.DATA_CLASSES:
        orig.__dict__.clear()
        orig.__dict__.update(new.__dict__)


# ----------------------------------------------------------------------------- the checker's side
class Host:
    """The answer process of one checker: forked on first use, forked again after it ends.

    ``close_fds``: the checker's private descriptors (its results channel), closed in the child."""

    def __init__(self, close_fds: tuple[int, ...] = ()):
        self.close_fds = tuple(close_fds)
        self.pid: int | None = None
        self.sock: socket.socket | None = None

    def answers(self, blob: str) -> dict[str, Any] | str:
        """The answers captured in ``blob`` as handles (plain values for data), or why not."""
        got = self.request("load", blob)
        if isinstance(got, str):
            return got
        out = {}
        for name, (kind, value) in got.items():
            if kind == "value":
                out[name] = value
            else:
                out[name] = (CallableAnswer if value["callable"] else Answer)(self, blob, name, value)
        return out

    def request(self, kind: str, *payload: Any) -> Any:
        data = cloudpickle.dumps((kind, payload))
        if self.sock is None:
            self._start()
        try:
            _send(self.sock, data)
            reply = _recv(self.sock)
        except BaseException:  # interrupted (a time limit): the process is mid-call, end it
            self.stop()
            raise
        if reply is None:
            self.stop()
            raise AnswerProcessDied("your code ended the process that ran it (os._exit, a crash in C code, "
                                    "or out of memory)")
        status, value = safe_pickle.loads(reply)
        if status == "error":
            raise _rebuild_error(*value)
        return value

    def _start(self) -> None:
        mine, theirs = socket.socketpair()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the answer process
            code = 1
            try:
                mine.close()
                for fd in self.close_fds:
                    with contextlib.suppress(OSError):
                        os.close(fd)
                os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
                _serve(theirs)
                code = 0
            except BaseException:  # noqa: BLE001 - into the grading log; the checker sees the end
                traceback.print_exc()
            finally:
                with contextlib.suppress(BaseException):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        theirs.close()
        self.pid, self.sock = pid, mine

    def stop(self) -> None:
        """End the answer process (and, through the launcher's forkserver, its ranks)."""
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
        if self.sock is not None:
            self.sock.close()
        self.pid = self.sock = None


def _send(sock: socket.socket, data: bytes) -> None:
    sock.sendall(struct.pack("!Q", len(data)) + data)


def _recv(sock: socket.socket) -> bytes | None:
    """One message, or None if the other side closed the connection."""
    head = _recv_exactly(sock, 8)
    if head is None:
        return None
    (n,) = struct.unpack("!Q", head)
    if n > MAX_REPLY:
        raise safe_pickle.RefusedObject(f"a reply of {n} bytes")
    return _recv_exactly(sock, n)


def _recv_exactly(sock: socket.socket, n: int) -> bytes | None:
    chunks, left = [], n
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


# Exceptions the checks catch by class, rebuilt as themselves: their attributes are data.
_KNOWN_ERRORS = {f"{c.__module__}.{c.__qualname__}": c for c in (
    launch_errors.LaunchError, launch_errors.WorkerError, launch_errors.CollectiveMismatchError,
    launch_errors.DeadlockError, CheckFailed)}
_ERROR_ATTRS = ("rank", "exc_type", "worker_traceback", "calls", "timeout", "stuck", "finished", "question", "hint")


def _rebuild_error(module: str, qualname: str, base: str, message: str, args: tuple, attrs: dict,
                   answer_traceback: str) -> BaseException:
    """The exception the answer process reported, as the checks expect to catch it."""
    known = _KNOWN_ERRORS.get(f"{module}.{qualname}")
    if known is not None:
        e = known.__new__(known)
        Exception.__init__(e, str(message))
        e.__dict__.update(attrs if isinstance(attrs, dict) else {})
    else:
        cls = getattr(builtins, str(base), None)
        if not (isinstance(cls, type) and issubclass(cls, Exception)):
            cls = Exception  # SystemExit, KeyboardInterrupt: a failed call here, nothing more
        if module != "builtins" or cls.__name__ != qualname:
            cls = type(str(qualname).rsplit(".", 1)[-1], (cls,), {"__module__": str(module)})
        try:
            e = cls(*args) if isinstance(args, tuple) else cls(str(message))
        except Exception:  # noqa: BLE001 - e.g. a constructor taking other arguments
            e = cls.__new__(cls)
            Exception.__init__(e, str(message))
    e.answer_traceback = str(answer_traceback)
    return e


# ----------------------------------------------------------------------------- the answer process
_loaded: dict[str, Any] = {}  # blob path -> {name: object} or the capture's error text


def _answers(blob: str) -> dict[str, Any] | str:
    if blob not in _loaded:
        with open(blob, "rb") as f:
            payload = pickle.load(f)
        _loaded[blob] = payload if isinstance(payload, str) else cloudpickle.loads(payload)
    return _loaded[blob]


def _resolve(blob: str, name: str) -> Any:
    """What a handle becomes when unpickled in the answer process: the learner's object."""
    answers = _answers(blob)
    if isinstance(answers, str):
        raise NameError(answers)
    return answers[name]


def _describe(obj: Any) -> dict:
    """What the checker may know of a learner's object without holding it."""
    def safely(f: Callable[[], Any], default: Any) -> Any:
        try:
            return f()
        except Exception:  # noqa: BLE001 - a learner's class can make any attribute raise
            return default

    def dotted(c: type) -> str:
        return f"{c.__module__}.{c.__qualname__}"

    def signature() -> list | None:
        return [(p.name, int(p.kind), p.default is not p.empty) for p in inspect.signature(obj).parameters.values()]

    return {"type": type(obj).__name__, "callable": callable(obj), "is_class": isinstance(obj, type),
            "name": safely(lambda: str(obj.__name__), ""), "qualname": safely(lambda: str(obj.__qualname__), ""),
            "module": safely(lambda: str(obj.__module__), ""),
            "mro": safely(lambda: [dotted(c) for c in obj.__mro__], []) if isinstance(obj, type) else [],
            "signature": safely(signature, None) if callable(obj) else None,
            "repr": safely(lambda: repr(obj)[:300], f"<{type(obj).__name__}>")}


def _load(blob: str) -> dict | str:
    answers = _answers(blob)
    if isinstance(answers, str):
        return answers
    plain = (int, float, str, bool, type(None), torch.Tensor, np.ndarray)
    return {name: ("value", obj) if type(obj) in plain else ("handle", _describe(obj))
            for name, obj in answers.items()}


def _mutable(a: Any) -> bool:
    if isinstance(a, (list, dict, set, bytearray, torch.Tensor, np.ndarray)):
        return True
    return dataclasses.is_dataclass(a) and not isinstance(a, type) and not a.__dataclass_params__.frozen


def _call(target: Callable, args: tuple, kwargs: dict) -> tuple[Any, list, dict]:
    result = target(*args, **kwargs)
    return (result, [a if _mutable(a) else None for a in args],
            {k: v for k, v in kwargs.items() if _mutable(v)})


_HANDLERS: dict[str, Callable] = {"load": _load, "call": _call, "run": lambda f, args, kwargs: f(*args, **kwargs)}


def _error_reply(e: BaseException) -> tuple:
    t = type(e)

    def data(x: Any) -> Any:  # only what the checker's reader accepts, else nothing
        try:
            blob = safe_pickle.dumps(x)
            safe_pickle.loads(blob)
            return x
        except Exception:  # noqa: BLE001
            return None

    try:
        message = str(e)
    except Exception:  # noqa: BLE001
        message = f"<{t.__name__}>"
    base = next(c for c in t.__mro__ if c.__module__ == "builtins")
    attrs = data({k: v for k, v in vars(e).items() if k in _ERROR_ATTRS}) if hasattr(e, "__dict__") else None
    return ("error", (t.__module__, t.__qualname__, base.__name__, message, data(tuple(e.args)), attrs or {},
                      "".join(traceback.format_exception(e))[-5000:]))


def _serve(sock: socket.socket) -> None:
    """The answer process: run each request, send back data (:func:`safe_pickle.dumps`)."""
    global _host
    _host = None  # here everything runs directly
    torch.set_num_threads(1)  # as in a rank; also keeps OpenMP's pool, started in the checker, unused
    while True:
        data = _recv(sock)
        if data is None:
            return
        try:
            kind, payload = cloudpickle.loads(data)
            reply: tuple = ("ok", _HANDLERS[kind](*payload))
        except BaseException as e:  # noqa: BLE001 - the learner's errors go back to the check
            reply = _error_reply(e)
        try:
            out = safe_pickle.dumps(reply)
        except BaseException as e:  # noqa: BLE001 - e.g. a result that cannot be pickled at all
            out = safe_pickle.dumps(_error_reply(TypeError(
                f"your answer's result could not be sent to the grader ({type(e).__name__}: {e}); "
                f"return {safe_pickle.ACCEPTED}")))
        _send(sock, out)
