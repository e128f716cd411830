"""The data model: devices, the links between them, the model's modules, and a `Problem`.

Notation used throughout `course_lib.allocation` (units in brackets):

    n devices d = 0..n-1     s_d  speed [FLOP/s]          M_d  memory [bytes]
    links d -> e             B_de bandwidth [bytes/s]      alpha_de latency [s]
    k modules j = 0..k-1     w_j  work per input [FLOP]    m_j = p_j + a_j memory [bytes]
    traffic j -> l           T_jl bytes per input; the chain T_{j,j+1} = modules[j].out_bytes

An assignment is a sequence x of length k with x_j in {0..n-1}: module j runs on device x_j.

Every invalid input raises ValueError with what is wrong and how to fix it, because a
silently accepted zero bandwidth or an impossible module would otherwise show up much
later as an `inf`, a `nan` or a solver saying "infeasible" with no reason.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from functools import cached_property
from typing import Mapping

import numpy as np


# Memory comparisons tolerate a relative 1e-9 so that prefix-sum differences (chain DP),
# direct sums (exhaustive) and rounded MILP solutions agree on what "fits" means. Every
# solver, the cost function and the Problem check below use this one `fits`.
MEMORY_RTOL = 1e-9


def fits(used: float | np.ndarray, capacity: float | np.ndarray) -> bool | np.ndarray:
    """used <= M (1 + 1e-9): memory feasibility with a tolerance for floating-point sums."""
    return used <= capacity * (1.0 + MEMORY_RTOL)


def check_number(value: object, what: str, fix: str = "", positive: bool = False) -> float:
    """`value` as a finite float; ValueError naming `what` for a string, None, bool, nan or inf
    (and for a value <= 0 when `positive`)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise ValueError(f"{what} must be a number, got {value!r} ({type(value).__name__})"
                         + (f"; {fix}" if fix else "; pass a float such as 1.0"))
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{what} must be finite, got {value!r}" + (f"; {fix}" if fix else ""))
    if positive and value <= 0:
        raise ValueError(f"{what} must be > 0, got {value!r}" + (f"; {fix}" if fix else ""))
    return value


def check_int(value: object, what: str, minimum: int | None = None, fix: str = "") -> int:
    """`value` as an int: ints, numpy ints and integral floats (3.0) pass; 2.5, nan, '3', True do not."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise ValueError(f"{what} must be an integer, got {value!r} ({type(value).__name__})"
                         + (f"; {fix}" if fix else "; pass an int such as 3"))
    if not (math.isfinite(float(value)) and float(value).is_integer()):
        raise ValueError(f"{what} must be a whole number, got {value!r}; a count or an index cannot "
                         "be fractional, nan or infinite" + (f"; {fix}" if fix else ""))
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {value}" + (f"; {fix}" if fix else ""))
    return value


def check_fraction(value: object, what: str, lo_open: bool = False) -> float:
    """A probability or rate: a finite number in [0, 1] (in (0, 1] with `lo_open`)."""
    value = check_number(value, what)
    if not (0.0 < value <= 1.0 if lo_open else 0.0 <= value <= 1.0):
        raise ValueError(f"{what} must lie in {'(0, 1]' if lo_open else '[0, 1]'}, got {value!r}")
    return value


def _positive(value: object, what: str, fix: str) -> float:
    value = check_number(value, what, fix)
    if not value > 0:
        raise ValueError(f"{what} must be > 0, got {value!r}; {fix}")
    return value


def _non_negative(value: object, what: str, fix: str) -> float:
    value = check_number(value, what, fix)
    if not value >= 0:
        raise ValueError(f"{what} must be >= 0, got {value!r}; {fix}")
    return value


@dataclass(frozen=True)
class Device:
    """One accelerator: s_d = `speed` [FLOP/s] it sustains, M_d = `memory` [bytes] usable."""

    name: str
    speed: float
    memory: float

    def __post_init__(self) -> None:
        # A zero speed makes w/s infinite; a zero memory device can hold nothing. Values are
        # stored as floats, so a speed given as the string '1e14' is refused, not kept as text.
        object.__setattr__(self, "speed", _positive(
            self.speed, f"device {self.name!r}: speed [FLOP/s]",
            "give the sustained FLOP/s as a finite number (e.g. 4e14), or leave the device out"))
        object.__setattr__(self, "memory", _positive(
            self.memory, f"device {self.name!r}: memory [bytes]",
            "give the usable bytes as a finite number (e.g. 80e9), or leave the device out"))


@dataclass(frozen=True)
class Module:
    """One piece of the model (a layer, a block, an embedding...).

    w_j = `work` [FLOP per input], memory m_j = p_j + a_j with p_j = `param_bytes` (weights,
    plus gradients and optimizer state when training: ~16 bytes/parameter for mixed-precision
    Adam, Rajbhandari et al. 2020, "ZeRO", SC'20) and a_j = `act_bytes` (activations kept
    resident under the schedule being modelled), and `out_bytes` = T_{j,j+1}, the bytes it
    sends to the next module per input. The last module's `out_bytes` is the model output,
    which this model does not ship anywhere, so it is ignored.
    """

    name: str
    work: float
    param_bytes: float
    act_bytes: float = 0.0
    out_bytes: float = 0.0

    def __post_init__(self) -> None:
        for attr in ("work", "param_bytes", "act_bytes", "out_bytes"):
            object.__setattr__(self, attr, _non_negative(
                getattr(self, attr), f"module {self.name!r}: {attr}",
                "use a measured or estimated finite, non-negative amount"))

    @property
    def memory(self) -> float:
        """m_j = p_j + a_j [bytes]."""
        return float(self.param_bytes) + float(self.act_bytes)


def _float_matrix(value: object, what: str) -> np.ndarray:
    """A float copy of `value`; strings, None and other non-numbers are refused, not converted."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"{what} must be numbers [{'bytes/s' if what == 'bandwidth' else 's'}], "
                         f"got {value!r} (dtype {arr.dtype}); build it with np.full((n, n), value)")
    return np.array(arr, dtype=float)


@dataclass(frozen=True, eq=False)
class Links:
    """Point-to-point links: B[d, e] bandwidth [bytes/s] and alpha[d, e] latency [s].

    Sending b > 0 bytes from d to e != d costs alpha_de + b / B_de seconds (the alpha-beta
    model, Hockney 1994, Parallel Computing 20(3)). The diagonal is ignored: data that stays
    on a device costs nothing. `np.inf` bandwidth is allowed (a free link); zero is not.
    """

    bandwidth: np.ndarray
    latency: np.ndarray

    def __post_init__(self) -> None:
        B, A = _float_matrix(self.bandwidth, "bandwidth"), _float_matrix(self.latency, "latency")
        if B.ndim != 2 or B.shape[0] != B.shape[1]:
            raise ValueError(f"bandwidth must be a square n x n matrix, got shape {B.shape}; "
                             "build it with one row and one column per device")
        if A.shape != B.shape:
            raise ValueError(f"latency has shape {A.shape} but bandwidth has shape {B.shape}; "
                             "both must be n x n for the same n devices")
        off = ~np.eye(B.shape[0], dtype=bool)
        bad = off & ~(B > 0)  # catches 0, negatives and nan
        if bad.any():
            d, e = map(int, np.argwhere(bad)[0])
            raise ValueError(f"bandwidth[{d}, {e}] = {B[d, e]!r} must be > 0 bytes/s; "
                             "use np.inf for a free link, a small positive number for a slow one")
        bad = off & ~((A >= 0) & np.isfinite(A))
        if bad.any():
            d, e = map(int, np.argwhere(bad)[0])
            raise ValueError(f"latency[{d}, {e}] = {A[d, e]!r} must be finite and >= 0 seconds")
        # Normalise the ignored diagonal so that no later formula can pick up junk from it.
        np.fill_diagonal(B, np.inf)
        np.fill_diagonal(A, 0.0)
        B.setflags(write=False)
        A.setflags(write=False)
        object.__setattr__(self, "bandwidth", B)
        object.__setattr__(self, "latency", A)

    @property
    def n(self) -> int:
        return int(self.bandwidth.shape[0])

    @classmethod
    def uniform(cls, n: int, bandwidth: float, latency: float = 0.0) -> "Links":
        """All n(n-1) directed links with the same B and alpha."""
        n = check_int(n, "Links.uniform: n (devices)", 1)
        # Values are checked by __init__ (bandwidth > 0, np.inf allowed; latency finite >= 0).
        return cls(_float_matrix(np.full((n, n), bandwidth), "bandwidth"),
                   _float_matrix(np.full((n, n), latency), "latency"))


def _column(items, name: str) -> np.ndarray:
    """One field of every device (or module) as a float vector."""
    return np.array([getattr(item, name) for item in items], dtype=float)


@dataclass(frozen=True, eq=False)
class Problem:
    """Devices + links + modules + traffic: everything the cost model needs.

    Traffic T_jl [bytes per input] is the chain T_{j,j+1} = modules[j].out_bytes plus any
    `extra_traffic` {(j, l): bytes} (skip connections, a shared embedding, a general DAG).
    Only module pairs with T_jl > 0 exchange a message.
    """

    devices: tuple[Device, ...]
    modules: tuple[Module, ...]
    links: Links
    extra_traffic: Mapping[tuple[int, int], float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "devices", tuple(self.devices))
        object.__setattr__(self, "modules", tuple(self.modules))
        object.__setattr__(self, "extra_traffic", dict(self.extra_traffic))
        n, k = len(self.devices), len(self.modules)
        if n == 0:
            raise ValueError("the device list is empty; give at least one Device")
        if k == 0:
            raise ValueError("the module list is empty; give at least one Module")
        for what, items, cls in (("devices", self.devices, Device), ("modules", self.modules, Module)):
            for i, item in enumerate(items):
                if not isinstance(item, cls):
                    raise ValueError(f"{what}[{i}] is a {type(item).__name__}, not a {cls.__name__}; "
                                     f"build it with {cls.__name__}(...)")
        if not isinstance(self.links, Links):
            raise ValueError(f"links is a {type(self.links).__name__}, not a Links; "
                             "build it with Links(bandwidth, latency) or Links.uniform(n, B, alpha)")
        if self.links.n != n:
            raise ValueError(f"links are {self.links.n} x {self.links.n} but there are {n} devices; "
                             "the bandwidth/latency matrices need one row and column per device")
        biggest = max(self.devices, key=lambda dev: dev.memory)
        for j, mod in enumerate(self.modules):
            if not fits(mod.memory, biggest.memory):
                raise ValueError(
                    f"module {j} ({mod.name!r}) needs {mod.memory:.4g} bytes but the largest device "
                    f"({biggest.name!r}) has {biggest.memory:.4g}; split the module (e.g. tensor "
                    "parallelism), shrink it (activation checkpointing, lower precision) or add a "
                    "device with more memory")
        traffic = {}
        for key, b in self.extra_traffic.items():
            if not (isinstance(key, tuple) and len(key) == 2):
                raise ValueError(f"extra_traffic key {key!r} must be a pair (j, l) of module indices")
            j = check_int(key[0], f"extra_traffic key {key!r}: sender j", 0)
            l = check_int(key[1], f"extra_traffic key {key!r}: receiver l", 0)
            if not (j < k and l < k):
                raise ValueError(f"extra_traffic key ({j}, {l}) is out of range for {k} modules "
                                 f"(indices 0..{k - 1})")
            if j == l:
                raise ValueError(f"extra_traffic ({j}, {l}) is a self-loop; a module does not send to itself")
            traffic[j, l] = _non_negative(b, f"extra_traffic[{j}, {l}]", "give bytes per input")
        object.__setattr__(self, "extra_traffic", traffic)

    # Arrays named as in the math. cached_property writes to __dict__ directly, so it works
    # on a frozen dataclass, and the arrays are built once per problem.
    @property
    def n(self) -> int:
        return len(self.devices)

    @property
    def k(self) -> int:
        return len(self.modules)

    s = cached_property(lambda self: _column(self.devices, "speed"))    # s_d [FLOP/s]
    M = cached_property(lambda self: _column(self.devices, "memory"))   # M_d [bytes]
    w = cached_property(lambda self: _column(self.modules, "work"))     # w_j [FLOP per input]
    m = cached_property(lambda self: _column(self.modules, "memory"))   # m_j [bytes]

    @property
    def B(self) -> np.ndarray:
        return self.links.bandwidth

    @property
    def alpha(self) -> np.ndarray:
        return self.links.latency

    @cached_property
    def T(self) -> np.ndarray:
        """Traffic matrix T[j, l] [bytes per input], chain plus extra."""
        T = np.zeros((self.k, self.k))
        for j in range(self.k - 1):
            T[j, j + 1] = self.modules[j].out_bytes
        for (j, l), b in self.extra_traffic.items():
            T[j, l] += float(b)
        T.setflags(write=False)
        return T

    @cached_property
    def edges(self) -> tuple[tuple[int, int, float], ...]:
        """The messages (j, l, T_jl) with T_jl > 0, the only pairs that can cost time."""
        js, ls = np.nonzero(self.T)
        return tuple((int(j), int(l), float(self.T[j, l])) for j, l in zip(js, ls))

    @cached_property
    def is_chain(self) -> bool:
        """True when every message goes from module j to module j+1 (a layer chain)."""
        return all(l == j + 1 for j, l, _ in self.edges)

    def check_assignment(self, x: "np.ndarray | list[int] | tuple[int, ...]") -> tuple[int, ...]:
        """Validate an assignment x (one device index per module) and return it as a tuple.

        Entries must be whole numbers (1 and 1.0 pass; 0.7, nan and '1' do not): a fractional
        device index is a mistake to report, not a number to truncate.
        """
        if isinstance(x, (str, bytes)) or not hasattr(x, "__len__"):
            raise ValueError(f"assignment must be a sequence of device indices, got {x!r}; "
                             "give one device index per module, e.g. (0, 0, 1)")
        x = tuple(check_int(d, f"assignment[{j}]", fix=f"use a device index in 0..{self.n - 1}")
                  for j, d in enumerate(x))
        if len(x) != self.k:
            raise ValueError(f"assignment has {len(x)} entries but there are {self.k} modules; "
                             "give one device index per module")
        for j, d in enumerate(x):
            if not 0 <= d < self.n:
                raise ValueError(f"assignment[{j}] = {d} is not a device index in 0..{self.n - 1}")
        return x


def check_problem(problem: object, fn: str) -> Problem:
    """`problem` itself if it is a Problem; TypeError naming `fn` and what came instead otherwise."""
    if not isinstance(problem, Problem):
        raise TypeError(f"{fn}: expected a course_lib.allocation.Problem, got {type(problem).__name__} "
                        f"{problem!r:.60}; build one with Problem(devices, modules, links), "
                        "random_problem(k, n, seed) or seed_example()")
    return problem
