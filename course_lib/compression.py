"""Compressed all-reduce: send fewer bytes than the gradient, and still train (chapter 7).

Every compressor answers one question, on every rank, for one tensor ``g_r`` per rank:

    reduce(g_r)  ~=  (1/p) sum_r g_r          (sign methods: a direction, not a mean)

and does its communication through :mod:`course_lib.comm`, so the bytes are counted. Each
also states its :meth:`Compressor.plan`: the collectives it calls and their input sizes. The
tests assert that the counters equal the plan, byte for byte; the plan also feeds the
alpha-beta time model (:mod:`course_lib.compression_time`); torch's DDP takes any of them
through :func:`course_lib.comm_hooks.compression_hook`.

In teaching order (``n`` elements, ``p`` ranks, bytes this rank hands to its collectives):

=====================  ==========================================  ========================
compressor             what crosses the wire                        bytes per rank
=====================  ==========================================  ========================
:class:`AllReduce`     fp32 all-reduce (the baseline)               4n
:class:`HalfPrecision` fp16 / bf16 all-reduce                       2n
:class:`QSGD`          int8 levels + fp32 norm, all-gathered        n + 4
:class:`SignMajority`  1 bit per element, packed, all-gathered      ceil(n/8)
:class:`EFSign`        packed signs + fp32 scale, all-gathered      ceil(n/8) + 4
:class:`RandomK`       k shared coordinates, all-reduced            4k
:class:`TopK`          k values + k int32 indices, all-gathered     8k
:class:`PowerSGD`      P (m x r) and Q (n x r), all-reduced         4r(m + n)
=====================  ==========================================  ========================

:class:`StackedPowerSGD` runs PowerSGD on a few matrices stacked from many tensors (a narrow
model's own matrices are too thin for rank r to save much), with momentum correction.

An all-gather's result grows with p: every rank *receives* (p-1) times its input, whereas a
ring all-reduce receives about 2x its input whatever p (``collectives="ring"`` runs both on
chapter 3's ring so the point-to-point counters show it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import Hashable

import torch

from course_lib import comm
from course_lib.collectives import ring_all_gather, ring_all_reduce, ring_bytes_sent


# =============================================================================== argument checks
def int_arg(name: str, value, low: int, fix: str) -> int:
    """``value`` if it is an int >= ``low`` (not a bool), else a ValueError that says ``fix``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}; {fix}")
    return value


def real_arg(name: str, value, low: float, high: float, fix: str, low_open: bool = False,
             high_open: bool = False) -> float:
    """``value`` if it is a finite real number in the interval, else a ValueError that says ``fix``."""
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be a finite number in {interval}, got {value!r}; {fix}")
    return float(value)


def bool_arg(name: str, value) -> bool:
    """``value`` if it is True or False, else a ValueError naming ``name``."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def check_shape(shape) -> tuple[int, ...]:
    """``shape`` as a tuple of ints >= 1 (a tensor's ``.shape``, or a tuple such as ``(1000,)``);
    ``()``, a scalar, is one element. Anything else raises a ValueError that says what to pass."""
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__iter__"):
        raise ValueError(f"shape must be a tuple of ints such as (1000,) or g.shape, got {shape!r}")
    shape = tuple(shape)
    for d in shape:
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise ValueError(f"shape must hold ints >= 1 (a tensor's sizes, e.g. g.shape), got {shape!r}")
    return shape


@dataclass(frozen=True)
class Message:
    """One collective a compressor calls: ``op`` ("all_reduce" or "all_gather") on this
    rank's input of ``numel`` elements of ``element_size`` bytes."""

    op: str
    numel: int
    element_size: int

    def __post_init__(self) -> None:
        if self.op not in ("all_reduce", "all_gather"):
            raise ValueError(f"op must be 'all_reduce' or 'all_gather', got {self.op!r}")
        int_arg("numel", self.numel, 0, "the number of elements this rank sends")
        int_arg("element_size", self.element_size, 1, "bytes per element: 4 for fp32, 2 for fp16, 1 for int8")

    @property
    def nbytes(self) -> int:
        return self.numel * self.element_size


class Compressor:
    """Base class: ``reduce(g, key)`` returns every rank's approximation of the mean of ``g``.

    ``key`` names the tensor (a bucket index, a parameter name) so that compressors with
    memory (error feedback, PowerSGD's warm start) keep one state per tensor. Every rank
    must call ``reduce`` on the same keys, in the same order, with tensors of the same shape.
    ``collectives``: ``"gloo"`` (torch.distributed's own, fast; ``comm`` counts each call's
    input bytes) or ``"ring"`` (chapter 3's ring from send/recv; ``comm`` counts the exact
    bytes each rank sends and receives).
    """

    name = "compressor"

    def __init__(self, collectives: str = "gloo") -> None:
        if collectives not in ("gloo", "ring"):
            raise ValueError(f"collectives must be 'gloo' or 'ring', got {collectives!r}")
        self.collectives = collectives

    def reduce(self, g: torch.Tensor, key: Hashable = 0) -> torch.Tensor:
        raise NotImplementedError

    def plan(self, shape: tuple[int, ...]) -> list[Message]:
        """The collectives :meth:`reduce` calls for a tensor of ``shape`` (sizes per rank)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ accounting
    def payload_bytes(self, shape: tuple[int, ...]) -> int:
        """Bytes this rank hands to collectives for one tensor: what ``comm`` counts in
        ``collective_bytes`` with ``collectives="gloo"``."""
        return sum(m.nbytes for m in self.plan(check_shape(shape)))

    def ratio(self, shape: tuple[int, ...]) -> float:
        """``payload / 4n``: the fraction of an fp32 all-reduce's input this sends."""
        return self.payload_bytes(shape) / (4 * math.prod(check_shape(shape)))

    def ring_bytes_sent(self, shape: tuple[int, ...], p: int, rank: int) -> int:
        """Bytes rank ``rank`` sends when the collectives run on chapter 3's ring: an
        all-reduce of b bytes sends about ``2(p-1)/p b``, an all-gather of b bytes ``(p-1) b``."""
        int_arg("p", p, 1, "the number of ranks")
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < p:
            raise ValueError(f"rank must be an int in [0, p) = [0, {p}), got {rank!r}")
        total = 0
        for m in self.plan(check_shape(shape)):
            if m.op == "all_reduce":
                total += ring_bytes_sent(m.numel, p, rank, m.element_size, "all_reduce")
            else:
                total += (p - 1) * m.nbytes
        return total

    # ------------------------------------------------------------------ communication
    def _check(self, g: torch.Tensor) -> None:
        if not isinstance(g, torch.Tensor) or not g.is_floating_point():
            raise TypeError(f"{self.name}: reduce takes a floating-point tensor (a gradient), got "
                            f"{type(g).__name__ if not isinstance(g, torch.Tensor) else g.dtype}")
        if g.numel() == 0:
            raise ValueError(f"{self.name}: the tensor is empty; pass a gradient with at least one element")

    def _all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        t = t.contiguous()
        if self.collectives == "ring":
            ring_all_reduce(t)
        else:
            comm.all_reduce(t)
        return t

    def _all_gather(self, t: torch.Tensor) -> torch.Tensor:
        """``(p, *t.shape)``: row r is rank r's ``t``."""
        p = comm.get_world_size()
        t = t.contiguous().reshape(-1)
        out = torch.zeros(p * t.numel(), dtype=t.dtype)
        if self.collectives == "ring":
            r = comm.get_rank()
            out[r * t.numel():(r + 1) * t.numel()] = t
            ring_all_gather(out)
        else:
            comm.all_gather_into_tensor(out, t)
        return out.view(p, -1)

    def __repr__(self) -> str:
        return self.name


# =============================================================================== baseline
class AllReduce(Compressor):
    """No compression: ``(1/p) sum_r g_r`` by one fp32 all-reduce of ``4n`` bytes."""

    name = "fp32"

    def reduce(self, g: torch.Tensor, key: Hashable = 0) -> torch.Tensor:
        self._check(g)
        return self._all_reduce_sum(g.detach().clone()) / comm.get_world_size()

    def plan(self, shape):
        return [Message("all_reduce", math.prod(check_shape(shape)), 4)]


# =============================================================================== 1. fp16 / bf16
class HalfPrecision(Compressor):
    """Cast to 16 bits, all-reduce, cast back: ``2n`` bytes, ratio 1/2.

    Divide by p *before* the all-reduce, as torch's ``fp16_compress_hook`` does: a sum of p
    fp16 gradients can overflow fp16's largest value, 65504; bf16 has fp32's range but only 8
    bits of mantissa (Micikevicius et al. 2018, "Mixed Precision Training"). torch casts first
    and divides in fp16; dividing in fp32 first rounds once, and the two agree exactly when p is
    a power of two and no value falls below fp16's normal range (the tests compare them).
    """

    def __init__(self, dtype: torch.dtype = torch.float16, collectives: str = "gloo") -> None:
        super().__init__(collectives)
        if dtype not in (torch.float16, torch.bfloat16):
            raise ValueError(f"dtype must be torch.float16 or torch.bfloat16, got {dtype}")
        self.dtype = dtype
        self.name = "fp16" if dtype == torch.float16 else "bf16"

    def reduce(self, g: torch.Tensor, key: Hashable = 0) -> torch.Tensor:
        self._check(g)
        h = (g.detach() / comm.get_world_size()).to(self.dtype)
        return self._all_reduce_sum(h).to(g.dtype)

    def plan(self, shape):
        return [Message("all_reduce", math.prod(check_shape(shape)), 2)]


# =============================================================================== 2. QSGD
def _check_levels(levels) -> None:
    if isinstance(levels, bool) or not isinstance(levels, int) or not 1 <= levels <= 127:
        raise ValueError(f"levels must be an int in [1, 127] (int8 on the wire), got {levels!r}")


def qsgd_quantize(v: torch.Tensor, levels: int, generator: torch.Generator | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """QSGD's stochastic quantiser (Alistarh et al. 2017, NeurIPS, sec. 3.1): ``(norm, q)``.

    ``Q_s(v_i) = ||v||_2 sgn(v_i) xi_i / s`` with ``l = floor(s |v_i| / ||v||)`` and
    ``xi_i = l + 1`` with probability ``s |v_i| / ||v|| - l``, else ``l``: so ``E[Q_s(v)] = v``
    (unbiased) and ``E||Q_s(v) - v||^2 <= min(d/s^2, sqrt(d)/s) ||v||^2``. ``q = sgn(v) xi``
    is an int8 in ``[-s, s]`` (hence ``levels <= 127``).
    """
    _check_levels(levels)
    if not isinstance(v, torch.Tensor) or not v.is_floating_point():
        raise TypeError(f"v must be a floating-point tensor (a gradient), got "
                        f"{v.dtype if isinstance(v, torch.Tensor) else type(v).__name__}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    v = v.detach().reshape(-1).float()
    norm = v.norm()
    if norm == 0:
        return norm, torch.zeros(v.numel(), dtype=torch.int8)
    scaled = v.abs() / norm * levels
    low = scaled.floor()
    up = torch.rand(v.numel(), generator=generator) < (scaled - low)
    return norm, (torch.sign(v) * (low + up)).to(torch.int8)


def qsgd_dequantize(norm: torch.Tensor, q: torch.Tensor, levels: int) -> torch.Tensor:
    """``||v|| q / s``: the value :func:`qsgd_quantize` encoded."""
    _check_levels(levels)
    if not isinstance(q, torch.Tensor) or q.is_floating_point() or q.dtype == torch.bool:
        raise TypeError(f"q must be the integer levels qsgd_quantize returned (int8), got "
                        f"{q.dtype if isinstance(q, torch.Tensor) else type(q).__name__}")
    return norm * q.float() / levels


class QSGD(Compressor):
    """Unbiased stochastic quantisation to ``s`` levels; each rank's (int8 levels, fp32 norm)
    is all-gathered (the norms differ, so the levels cannot be summed on the way) and every
    rank averages the p decoded vectors. ``n + 4`` bytes per rank."""

    def __init__(self, levels: int = 4, seed: int = 0, collectives: str = "gloo") -> None:
        super().__init__(collectives)
        _check_levels(levels)
        self.levels = levels
        self.seed = int_arg("seed", seed, 0, "each rank draws its rounding from 1000 seed + rank")
        self.name = f"qsgd s={levels}"
        self._gen: torch.Generator | None = None

    def reduce(self, g: torch.Tensor, key: Hashable = 0) -> torch.Tensor:
        self._check(g)
        if self._gen is None:  # independent rounding on each rank
            self._gen = torch.Generator().manual_seed(1000 * self.seed + comm.get_rank())
        norm, q = qsgd_quantize(g, self.levels, self._gen)
        n = q.numel()
        # One message: the n levels, then the norm's 4 bytes reinterpreted as int8.
        payload = torch.cat([q, norm.reshape(1).float().view(torch.int8)])
        rows = self._all_gather(payload)
        norms = rows[:, n:].contiguous().view(torch.float32)  # (p, 1)
        mean = (norms * rows[:, :n].float()).sum(0) / (self.levels * rows.shape[0])
        return mean.view_as(g).to(g.dtype)

    def plan(self, shape):
        return [Message("all_gather", math.prod(check_shape(shape)) + 4, 1)]


# =============================================================================== 3. sign + majority vote
_BIT = 2 ** torch.arange(8, dtype=torch.uint8)  # bit i of a byte has the value 2^i


def pack_signs(g: torch.Tensor) -> torch.Tensor:
    """1 bit per element: bit = 1 where ``g >= 0``; 8 elements per uint8, ``ceil(n/8)`` bytes."""
    if not isinstance(g, torch.Tensor) or not g.is_floating_point():
        raise TypeError(f"pack_signs takes a floating-point tensor (a gradient), got "
                        f"{g.dtype if isinstance(g, torch.Tensor) else type(g).__name__}; "
                        f"convert with g.float()")
    bits = (g.detach().reshape(-1) >= 0).to(torch.uint8)
    bits = torch.cat([bits, bits.new_zeros(-bits.numel() % 8)])
    return (bits.view(-1, 8) * _BIT).sum(1, dtype=torch.uint8)


def unpack_signs(packed: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of :func:`pack_signs`: ``n`` floats, +1 where the bit is set, -1 elsewhere."""
    if not isinstance(packed, torch.Tensor) or packed.dtype != torch.uint8:
        raise TypeError(f"packed must be the uint8 tensor pack_signs returned, got "
                        f"{packed.dtype if isinstance(packed, torch.Tensor) else type(packed).__name__}")
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 8 * packed.numel():
        raise ValueError(f"n must be an int in [0, 8 * packed.numel()] = [0, {8 * packed.numel()}] "
                         f"(the number of elements that were packed), got {n!r}")
    bits = (packed.reshape(-1, 1) & _BIT) > 0
    return bits.reshape(-1)[:n].float() * 2 - 1


class SignMajority(Compressor):
    """signSGD with majority vote (Bernstein et al. 2019, ICLR): ``sign(sum_r sign(g_r))``.

    Each rank all-gathers its packed signs (``ceil(n/8)`` bytes, 1/32 of fp32) and counts
    the votes itself. Not an all-reduce of signs: partial sums of p signs need
    ``ceil(log2(2p+1))`` bits. A tie (even p) gives 0. Returns a *direction* (+-1), whose
    step size the learning rate sets. Biased: see :class:`EFSign`.
    """

    name = "sign (majority vote)"

    def reduce(self, g: torch.Tensor, key: Hashable = 0) -> torch.Tensor:
        self._check(g)
        n = g.numel()
        rows = self._all_gather(pack_signs(g))
        votes = sum(unpack_signs(row, n) for row in rows)
        return torch.sign(votes).view_as(g).to(g.dtype)

    def plan(self, shape):
        return [Message("all_gather", math.ceil(math.prod(check_shape(shape)) / 8), 1)]


# =============================================================================== 4. EF-signSGD
def _memory(state: dict, key: Hashable, g: torch.Tensor) -> torch.Tensor | int:
    """What a compressor remembers for ``key`` (a residual, a velocity), or 0 the first time;
    refuses a tensor whose size differs from the one that filled it."""
    if key in state and state[key].numel() != g.numel():
        raise ValueError(f"key {key!r} was first used for a tensor of {state[key].numel()} elements, now "
                         f"{g.numel()}: give each tensor its own key (a bucket index or a parameter name)")
    return state.get(key, 0)


class EFSign(Compressor):
    """Scaled sign with error feedback (Karimireddy et al. 2019, ICML, "Error Feedback Fixes
    SignSGD"), per rank:  ``p = g + e;  C(p) = (||p||_1 / n) sign(p);  e <- p - C(p)``,
    then the mean of the p ranks' ``C(p_r)``. The residual ``e`` carries what the sign lost
    into the next step, which removes sign's bias. Wire: packed signs + the fp32 scale,
    all-gathered, ``ceil(n/8) + 4`` bytes. (Error feedback on the gradient rather than on
    ``lr * g``: with a constant learning rate the two differ only by that factor.)
    """

    name = "EF-sign"

    def __init__(self, collectives: str = "gloo") -> None:
        super().__init__(collectives)
        self.residual: dict[Hashable, torch.Tensor] = {}

    def reduce(self, g: torch.Tensor, key: Hashable = 0) -> torch.Tensor:
        self._check(g)
        n = g.numel()
        p = g.detach().reshape(-1).float() + _memory(self.residual, key, g)
        scale = p.abs().mean()
        self.residual[key] = p - scale * torch.where(p >= 0, 1.0, -1.0)
        payload = torch.cat([pack_signs(p), scale.reshape(1).view(torch.uint8)])
        rows = self._all_gather(payload)
        m = payload.numel() - 4
        scales = rows[:, m:].contiguous().view(torch.float32)  # (p, 1)
        signs = torch.stack([unpack_signs(row[:m], n) for row in rows])
        return (scales * signs).mean(0).view_as(g).to(g.dtype)

    def plan(self, shape):
        return [Message("all_gather", math.ceil(math.prod(check_shape(shape)) / 8) + 4, 1)]


def _k_of(ratio: float, n: int) -> int:
    return max(1, int(ratio * n))


class _Sparsifier(Compressor):
    """What random-K and Top-K share: the fraction of elements kept (the argument ``ratio``,
    stored as ``fraction``: :meth:`Compressor.ratio` is the bytes' ratio), and the residual
    ``e`` that error feedback carries to the next step (one per bucket ``key``)."""

    def __init__(self, label: str, ratio: float, error_feedback: bool, collectives: str) -> None:
        super().__init__(collectives)
        self.fraction = real_arg("ratio", ratio, 0, 1, "the fraction of elements sent, e.g. 0.01 for 1%",
                                  low_open=True)
        self.error_feedback = bool_arg("error_feedback", error_feedback)
        self.residual: dict[Hashable, torch.Tensor] = {}
        self.name = f"{label} {ratio:g}" + (" +EF" if error_feedback else "")


# =============================================================================== 5. random-K
class RandomK(_Sparsifier):
    """k = ``max(1, int(ratio n))`` coordinates drawn from a generator with the *same* seed
    on every rank, so no index travels: one all-reduce of ``4k`` bytes (Stich et al. 2018).
    With ``error_feedback`` the unsent coordinates wait in a residual; without it the kept
    ones are scaled by ``n/k`` so that the estimate is unbiased (at a large variance)."""

    def __init__(self, ratio: float = 0.01, error_feedback: bool = True, seed: int = 0,
                 collectives: str = "gloo") -> None:
        super().__init__("random-k", ratio, error_feedback, collectives)
        int_arg("seed", seed, 0, "every rank must pass the same seed")
        self.gen = torch.Generator().manual_seed(seed)  # identical stream on every rank

    def reduce(self, g: torch.Tensor, key: Hashable = 0) -> torch.Tensor:
        self._check(g)
        n = g.numel()
        k = _k_of(self.fraction, n)
        idx = torch.randperm(n, generator=self.gen)[:k]
        p = g.detach().reshape(-1).float() + _memory(self.residual, key, g)
        values = p[idx].clone()
        if self.error_feedback:
            self.residual[key] = p.index_fill(0, idx, 0.0)
        else:
            values *= n / k
        values = self._all_reduce_sum(values) / comm.get_world_size()
        return torch.zeros(n).index_copy_(0, idx, values).view_as(g).to(g.dtype)

    def plan(self, shape):
        return [Message("all_reduce", _k_of(self.fraction, math.prod(check_shape(shape))), 4)]


# =============================================================================== 6. Top-K + EF
class TopK(_Sparsifier):
    """Top-K with memory (Stich, Cordonnier & Jaggi 2018, NeurIPS; Lin et al. 2018, DGC):
    ``p = g + e;  c = top_k(|p|);  e <- p - c``; rank r's ``c_r`` travels as k fp32 values
    and k int32 indices (``8k`` bytes, ratio ``2k/n``). The ranks' indices differ, so the
    sum has up to p k non-zeros and no ring all-reduce applies: an all-gather, whose
    received volume grows as (p-1) 8k. Every rank then forms ``(1/p) sum_r c_r``.

    ``momentum`` > 0: Deep Gradient Compression's *momentum correction* and *momentum factor
    masking* (Lin et al. 2018, ICLR, sec. 3.2). Momentum SGD applied after a sparse exchange
    would only see the coordinates sent; instead each rank keeps its own velocity and
    accumulates it: ``u <- m u + g;  p = e + u;  c = top_k(|p|);  e <- p - c``, and clears
    ``u`` where ``c`` was sent (the masking: a sent coordinate's old momentum would otherwise
    push it again, stale). The optimizer is then plain SGD (momentum 0) on the averaged ``c``.
    """

    def __init__(self, ratio: float = 0.01, error_feedback: bool = True, collectives: str = "gloo",
                 momentum: float = 0.0) -> None:
        super().__init__("top-k", ratio, error_feedback, collectives)
        self.momentum = real_arg("momentum", momentum, 0, 1, "0: no momentum correction", high_open=True)
        self.velocity: dict[Hashable, torch.Tensor] = {}

    def reduce(self, g: torch.Tensor, key: Hashable = 0) -> torch.Tensor:
        self._check(g)
        n = g.numel()
        k = _k_of(self.fraction, n)
        shape, dtype = g.shape, g.dtype
        g = g.detach().reshape(-1).float()
        if self.momentum:
            u = self.momentum * _memory(self.velocity, key, g) + g
            p = u + _memory(self.residual, key, g)
        else:
            p = g + _memory(self.residual, key, g)
        idx = p.abs().topk(k, sorted=False).indices  # on the flat vector: k of n, not k per row
        values = p[idx]
        if self.error_feedback:
            self.residual[key] = p.index_fill(0, idx, 0.0)
        if self.momentum:
            self.velocity[key] = u.index_fill(0, idx, 0.0)
        # One message: the values' bits reinterpreted as int32, then the indices.
        rows = self._all_gather(torch.cat([values.view(torch.int32), idx.to(torch.int32)]))
        out = torch.zeros(n)
        out.index_add_(0, rows[:, k:].reshape(-1).long(), rows[:, :k].contiguous().view(torch.float32).reshape(-1))
        return (out / rows.shape[0]).view(shape).to(dtype)

    def plan(self, shape):
        return [Message("all_gather", 2 * _k_of(self.fraction, math.prod(check_shape(shape))), 4)]


# =============================================================================== 7. PowerSGD
def matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """How PowerSGD sees a tensor: ``(shape[0], rest)`` for 2-D and up; a vector of n
    elements as a near-square ``ceil(sqrt n) x ceil(n / rows)`` matrix, zero-padded (a
    whole flat bucket is one vector, as in torch's ``batched_powerSGD_hook``); ``()`` is 1 x 1."""
    shape = check_shape(shape)
    n = math.prod(shape)
    if len(shape) >= 2:
        return shape[0], n // shape[0]
    rows = math.isqrt(n - 1) + 1 if n > 1 else 1
    return rows, math.ceil(n / rows)


class PowerSGD(Compressor):
    """Rank-r PowerSGD (Vogels, Karimireddy & Jaggi 2019, NeurIPS, Algorithm 1), per tensor
    ``M`` (m x n, see :func:`matrix_shape`), with error feedback and a warm start:

        M <- g + e;   P = M Q;   P <- orthonormalise(mean_r P);
        Q = M^T P;    Q <- mean_r Q;   approximation  P Q^T;   e <- M - P Q^T

    Two all-reduces of ``4 r (m + n)`` bytes in all. ``Q`` starts from a normal draw with the
    same seed on every rank and is then reused (warm start: one power-iteration step per
    training step). A tensor is sent dense when ``r (m + n) >= m n`` (no saving).
    """

    def __init__(self, rank: int = 4, error_feedback: bool = True, warm_start: bool = True, seed: int = 0,
                 collectives: str = "gloo") -> None:
        super().__init__(collectives)
        if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
            raise ValueError(f"rank must be an int >= 1 (the rank of the approximation), got {rank!r}")
        for name, flag in (("error_feedback", error_feedback), ("warm_start", warm_start)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be True or False, got {flag!r}")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise TypeError(f"seed must be an int (the same on every rank), got {seed!r}")
        self.rank, self.error_feedback, self.warm_start = rank, error_feedback, warm_start
        self.gen = torch.Generator().manual_seed(seed)  # identical stream on every rank
        self.residual: dict[Hashable, torch.Tensor] = {}
        self.q: dict[Hashable, torch.Tensor] = {}
        self.name = f"powersgd r={rank}" + ("" if error_feedback else " no EF")

    def compresses(self, shape: tuple[int, ...]) -> bool:
        m, n = matrix_shape(tuple(shape))
        return self.rank * (m + n) < m * n

    def reduce(self, g: torch.Tensor, key: Hashable = 0) -> torch.Tensor:
        self._check(g)
        world = comm.get_world_size()
        if not self.compresses(tuple(g.shape)):
            return self._all_reduce_sum(g.detach().float().clone()).div(world).to(g.dtype)
        m, n = matrix_shape(tuple(g.shape))
        flat = g.detach().reshape(-1).float()
        M = torch.cat([flat, flat.new_zeros(m * n - flat.numel())]).view(m, n)
        if self.error_feedback and key in self.residual:
            M = M + self.residual[key]
        P, Q = self._power_step(M, key)
        approx = P @ Q.T
        if self.error_feedback:
            self.residual[key] = M - approx
        return approx.reshape(-1)[:g.numel()].view_as(g).to(g.dtype)

    def _power_step(self, M: torch.Tensor, key: Hashable) -> tuple[torch.Tensor, torch.Tensor]:
        """One power-iteration step on the ranks' mean of ``M``: ``P`` (orthonormal) and ``Q``,
        identical on every rank; two all-reduces, ``Q`` kept for the warm start."""
        world = comm.get_world_size()
        Q = self.q.get(key) if self.warm_start else None
        if Q is None:
            Q = torch.randn(M.shape[1], self.rank, generator=self.gen)
        P = self._all_reduce_sum(M @ Q) / world
        P = torch.linalg.qr(P).Q  # orthonormal columns, identical on every rank
        Q = self._all_reduce_sum(M.T @ P) / world
        self.q[key] = Q
        return P, Q

    def plan(self, shape):
        shape = tuple(shape)
        if not self.compresses(shape):
            return [Message("all_reduce", math.prod(shape), 4)]
        m, n = matrix_shape(shape)
        return [Message("all_reduce", m * self.rank, 4), Message("all_reduce", n * self.rank, 4)]


class StackedPowerSGD(PowerSGD):
    """PowerSGD on a few large matrices *stacked* from a whole bucket of gradients, with Deep
    Gradient Compression's momentum correction (Vogels et al. 2019; Lin et al. 2018, sec. 3.2).

    Rank r costs ``4 r (m + n)`` bytes for an ``m x n`` matrix, so a narrow model's own
    matrices (a side of 64) can never send less than ``r / 64`` of their bytes. ``stacks``
    lists index matrices into the flat bucket ``g`` (-1: a zero pad; every element once); each
    gathers ``M_i = g[I_i]``, and tensors that share a factor share rows: a GPT's
    :func:`gpt_stacks` puts every layer's matrices side by side on the rows of the residual
    stream. Per step, with the velocity ``u`` and residual ``e`` of this rank:

        u <- m u + g;   x = e + u;   M_i = x[I_i]  ->  P_i, Q_i (PowerSGD, warm start)
        sent = scatter(P_i Q_i^T);   e <- x - sent;   u[I_i] <- (1 - P_i P_i^T) u[I_i]

    The last line is the low-rank form of DGC's momentum factor masking (the course's
    adaptation: DGC clears ``u`` where a coordinate was sent, here along the subspace sent).
    ``momentum`` 0: plain error-feedback PowerSGD on the stacks. With ``momentum`` > 0 the
    optimizer steps with plain SGD. Bytes per rank: ``sum_i 4 r (m_i + n_i)``.
    """

    def __init__(self, stacks: list[torch.Tensor] | None = None, rank: int = 4, momentum: float = 0.0,
                 seed: int = 0, collectives: str = "gloo") -> None:
        super().__init__(rank, error_feedback=True, warm_start=True, seed=seed, collectives=collectives)
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1) (0: no momentum correction), got {momentum!r}")
        self.momentum = momentum
        self.stacks = stacks
        self.velocity: dict[Hashable, torch.Tensor] = {}
        self.name = f"powersgd r={rank} stacked"

    def _numel(self) -> int:
        if self.stacks is None:
            raise ValueError(f"{self.name}: no stacks; pass stacks= (e.g. gpt_stacks(model))")
        return sum(int((I >= 0).sum()) for I in self.stacks)

    def reduce(self, g: torch.Tensor, key: Hashable = 0) -> torch.Tensor:
        self._check(g)
        n = self._numel()
        if g.numel() != n:
            raise ValueError(f"{self.name}: the stacks cover {n} elements but the bucket has {g.numel()}; "
                             "send the whole model in one bucket (BucketedDDP's default cap)")
        g = g.detach().reshape(-1).float()
        if self.momentum:
            u = self.momentum * self.velocity.get(key, 0) + g
            x = self.residual.get(key, 0) + u
        else:
            x = self.residual.get(key, 0) + g
        padded = torch.cat([x, x.new_zeros(1)])  # index -1 reads this zero
        sent = torch.zeros(n)
        for i, I in enumerate(self.stacks):
            real = I >= 0
            P, Q = self._power_step(padded[I], (key, i))
            sent[I[real]] = (P @ Q.T)[real]
            if self.momentum:
                U = torch.cat([u, u.new_zeros(1)])[I]
                u[I[real]] = (U - P @ (P.T @ U))[real]
        self.residual[key] = x - sent
        if self.momentum:
            self.velocity[key] = u
        return sent

    def plan(self, shape):
        if math.prod(shape) != self._numel():
            raise ValueError(f"{self.name}: the stacks cover {self._numel()} elements, not {math.prod(shape)}")
        return [Message("all_reduce", size * self.rank, 4) for I in self.stacks for size in I.shape]


def gpt_stacks(model: torch.nn.Module) -> list[torch.Tensor]:
    """The two matrices :class:`StackedPowerSGD` forms from a :class:`~course_lib.model.GPT`'s
    flat gradient bucket (:class:`~course_lib.ddp.BucketedDDP`'s order: reversed parameters).

    1. One row block per layer, ``(n_embd + 1)`` rows: row ``i`` < n_embd is residual feature
       ``i``: the columns of q, k, v, up (their ``W^T``: they *read* the residual stream), the
       rows of out and down (they *write* it), out's and down's bias and the two LayerNorms'
       weight and bias; the last row holds q, k, v and up's biases (the bias is the weight of a
       constant input). Layers are stacked on the rows: ``L (C + 1) x (3C + 4C + C + 4C + 6)``.
    2. ``tok_emb``, ``pos_emb`` and ``ln_f`` as rows of width ``n_embd``.
    """
    named = list(model.named_parameters())[::-1]
    where, offset = {}, 0
    for name, p in named:
        where[name] = torch.arange(offset, offset + p.numel()).view(p.shape)
        offset += p.numel()
    blocks = []
    for layer in range(model.config.n_layer):
        b = f"blocks.{layer}."
        readers = [b + f"attn.{x}_proj" for x in "qkv"] + [b + "mlp.up_proj"]
        writers = [b + "attn.out_proj", b + "mlp.down_proj"]
        rows = torch.cat([where[r + ".weight"].T for r in readers] + [where[w + ".weight"] for w in writers]
                         + [where[w + ".bias"][:, None] for w in writers]
                         + [where[b + f"ln_{j}.{t}"][:, None] for j in (1, 2) for t in ("weight", "bias")], 1)
        biases = torch.cat([where[r + ".bias"] for r in readers])
        biases = torch.cat([biases, biases.new_full((rows.shape[1] - biases.numel(),), -1)])
        blocks.append(torch.cat([rows, biases[None]]))
    head = torch.cat([where["tok_emb.weight"], where["pos_emb.weight"],
                      where["ln_f.weight"][None], where["ln_f.bias"][None]])
    stacks = [torch.cat(blocks), head]
    covered = torch.cat([I[I >= 0] for I in stacks]).sort().values
    if not torch.equal(covered, torch.arange(offset)):
        raise ValueError("gpt_stacks expects the course GPT with bias=True and tied embeddings "
                         "(every parameter placed once)")
    return stacks


def check_compressor(compressor) -> None:
    """Raise, saying what to pass, unless ``compressor`` is one of this module's compressors."""
    if not isinstance(compressor, Compressor):
        raise TypeError(f"compressor must be a course_lib.compression.Compressor, e.g. TopK(0.01), "
                        f"got {type(compressor).__name__}")
