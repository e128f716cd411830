"""What the learner's side of grading may send back to the process that decides the score.

The answer process (:mod:`course_lib.grading.isolation`) runs the learner's code, so it may be
compromised; the grader reads its replies with :func:`loads`, an unpickler that builds only
what a check's comparison needs:

* ``None``, bools, numbers, strings, bytes and lists, tuples, dicts, sets of them;
* ``torch`` tensors (dense, on the CPU), ``nn.Parameter``, ``torch.Size``, ``torch.dtype``,
  NumPy arrays and scalars (not of ``object`` dtype), ``collections.Counter``;
* the course's data classes a check reads (:data:`DATA_CLASSES`: ``comm.CommStats``,
  ``ssp.SSPBook``), filled field by field.

Anything else, a learner's class or a ``__reduce__`` that names ``exec``, ``os.system`` or
``torch.load``, is refused with :class:`RefusedObject` before anything is built: no function
outside this list is ever called while reading. (Plain ``pickle`` of a tensor calls
``torch.load`` on embedded bytes, so tensors travel as dtype, shape and raw bytes instead.)

:func:`dumps` is the matching writer, used in the answer process.
"""
from __future__ import annotations

import collections
import dataclasses
import io
import math
import pickle
from typing import Any

import numpy as np
import torch

from course_lib.comm import CommStats
from course_lib.ssp import SSPBook

# The course's data classes that results may contain (rank statistics, chapter 2's bookkeeping).
DATA_CLASSES: tuple[type, ...] = (CommStats, SSPBook)
ACCEPTED = ("tensors, numbers, strings, and lists, tuples or dicts of them")


class RefusedObject(TypeError):
    """A reply held an object the grader does not build."""


# ----------------------------------------------------------------------------- rebuilding
_DTYPES = {name: v for name, v in vars(torch).items() if isinstance(v, torch.dtype)}


def _dtype(name: str) -> torch.dtype:
    if name not in _DTYPES:
        raise RefusedObject(f"not a torch dtype: {name!r}")
    return _DTYPES[name]


def _tensor(dtype: str, shape: tuple, data: bytes, requires_grad: bool) -> torch.Tensor:
    """A dense CPU tensor from its raw bytes (what :func:`dumps` wrote)."""
    dt = _dtype(dtype)
    if not (isinstance(shape, tuple) and all(isinstance(s, int) and s >= 0 for s in shape)) \
            or not isinstance(data, bytes):
        raise RefusedObject("a malformed tensor")
    itemsize = torch.empty((), dtype=dt).element_size()
    if len(data) != math.prod(shape) * itemsize:
        raise RefusedObject("a tensor whose bytes do not match its shape")
    if not data:
        t = torch.empty(shape, dtype=dt)
    else:
        t = torch.frombuffer(bytearray(data), dtype=torch.uint8).view(dt).reshape(shape)
    return t.requires_grad_() if requires_grad is True and (dt.is_floating_point or dt.is_complex) else t


def _parameter(t: torch.Tensor, requires_grad: bool) -> torch.nn.Parameter:
    if not isinstance(t, torch.Tensor):
        raise RefusedObject("a malformed parameter")
    return torch.nn.Parameter(t.detach(), requires_grad=requires_grad is True)


def _size(dims: tuple) -> torch.Size:
    if not (isinstance(dims, tuple) and all(isinstance(d, int) for d in dims)):
        raise RefusedObject("a malformed torch.Size")
    return torch.Size(dims)


def _array(dtype: str, shape: tuple, data: bytes) -> np.ndarray:
    dt = np.dtype(dtype) if isinstance(dtype, str) else None
    if dt is None or dt.hasobject or dt.kind == "V" or not isinstance(data, bytes) \
            or not (isinstance(shape, tuple) and all(isinstance(s, int) and s >= 0 for s in shape)) \
            or len(data) != math.prod(shape) * dt.itemsize:
        raise RefusedObject("a malformed NumPy array")
    return np.frombuffer(data, dtype=dt).reshape(shape).copy()


def _scalar(dtype: str, data: bytes) -> np.generic:
    return _array(dtype, (), data)[()]


def _refused(what: str) -> None:
    """Written by :func:`dumps` in place of an object it does not send: refused on reading."""
    raise RefusedObject(f"your answer returned an object of type {what}, which the grader does not "
                        f"accept: return {ACCEPTED}")


_HERE = __name__
ALLOWED: dict[tuple[str, str], Any] = {
    **{(_HERE, f.__name__): f for f in (_tensor, _parameter, _size, _array, _scalar, _dtype, _refused)},
    **{("builtins", c.__name__): c for c in (complex, set, frozenset, bytearray, int, float, str, list, tuple,
                                              dict, bool, slice, range)},
    ("collections", "Counter"): collections.Counter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    **{(c.__module__, c.__qualname__): c for c in DATA_CLASSES},
}


class _Unpickler(pickle._Unpickler):  # the pure-Python one: its opcodes can be overridden
    """``find_class`` admits only :data:`ALLOWED`; BUILD fills only the data classes' fields."""

    def find_class(self, module: str, name: str) -> Any:
        obj = ALLOWED.get((module, name))
        if obj is None:
            _refused(f"{module}.{name}")
        return obj

    def load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        fields = {f.name for f in dataclasses.fields(inst)} if type(inst) in DATA_CLASSES else set()
        if not isinstance(state, dict) or not set(state) <= fields:
            _refused(f"{type(inst).__module__}.{type(inst).__qualname__} (with a state it cannot have)")
        inst.__dict__.update(state)

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        if cls not in DATA_CLASSES or args != ():
            _refused(getattr(cls, "__qualname__", repr(cls)))
        self.append(cls.__new__(cls))

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        if kwargs:
            _refused("an object built with keyword arguments")
        self.load_newobj()

    def persistent_load(self, pid: Any) -> Any:
        _refused("a persistent reference")

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.BUILD[0]] = load_build
    dispatch[pickle.NEWOBJ[0]] = load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex


def loads(data: bytes) -> Any:
    """Read a reply from the answer process: only what the module's docstring lists is built."""
    return _Unpickler(io.BytesIO(data)).load()


# ----------------------------------------------------------------------------- writing
_ALLOWED_IDS = {id(v) for v in ALLOWED.values()}


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        t = type(obj)
        if id(obj) in _ALLOWED_IDS:  # the rebuilders and classes, written by name
            return NotImplemented
        if isinstance(obj, torch.Tensor):
            if obj.layout != torch.strided or obj.device.type != "cpu" or obj.is_quantized:
                return _refused, (f"torch.Tensor ({obj.layout}, {obj.device})",)
            data = obj.detach().contiguous().reshape(-1)
            raw = data.view(torch.uint8).numpy().tobytes() if data.numel() else b""
            rebuilt = (_tensor, (str(obj.dtype).removeprefix("torch."), tuple(obj.shape), raw,
                                 obj.requires_grad and obj.is_leaf))
            if isinstance(obj, torch.nn.Parameter):
                return _parameter, (obj.detach(), obj.requires_grad)
            return rebuilt
        if t is torch.Size:
            return _size, (tuple(obj),)
        if t is torch.dtype:
            return _dtype, (str(obj).removeprefix("torch."),)
        if isinstance(obj, np.ndarray) and not obj.dtype.hasobject:
            return _array, (obj.dtype.str, obj.shape, np.ascontiguousarray(obj).tobytes())
        if isinstance(obj, np.generic) and not obj.dtype.hasobject:
            return _scalar, (obj.dtype.str, obj.tobytes())
        if t in (int, float, complex, bool, str, bytes, bytearray, list, tuple, dict, set, frozenset, slice,
                 range, type(None), collections.Counter, collections.OrderedDict) or t in DATA_CLASSES:
            return NotImplemented
        return _refused, (f"{t.__module__}.{t.__qualname__}",)


def dumps(obj: Any) -> bytes:
    """Write ``obj`` for :func:`loads`; what it would refuse is written as a refusal."""
    buf = io.BytesIO()
    _Pickler(buf, protocol=4).dump(obj)
    return buf.getvalue()
