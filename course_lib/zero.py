"""ZeRO stages 1, 2 and 3: shard the optimizer state, then the gradients, then the parameters.

Rajbhandari, Rasley, Ruwase & He 2020, "ZeRO: Memory Optimizations Toward Training Trillion
Parameter Models" (SC20). Read the classes in order; each one adds a single idea to the one
before it:

    ZeRO0  plain data parallelism with a replicated AdamW   the baseline
    ZeRO1  + AdamW state sharded                            P_os
    ZeRO2  + gradients sharded, reduce-scattered in backward P_os+g
    ZeRO3  + parameters sharded, gathered around each use    P_os+g+p

``ZeRO(model, stage)`` builds the class of the given stage. Each class's docstring gives its
model-state bytes per rank (paper sec. 5) and its communication per step (sec. 7). Psi is the
number of parameters, p the number of ranks, K the bytes of optimizer state per parameter.
The paper trains in mixed precision (2 + 2 + K bytes, K = 12); this course trains in float32
with AdamW, where the parameters *are* the master copy: 4 + 4 + K bytes with K = 8 (exp_avg,
exp_avg_sq). Communication is counted in elements per rank, the paper's convention.

All stages share one data structure: the parameters are cut into *units* (for the GPT: one
per block, plus a root unit with the embeddings and the final LayerNorm); each unit is
flattened into one padded buffer of ``p * s`` elements whose parameters become views, and
rank r owns the slice ``[r s, (r+1) s)`` of every unit.

Note on gloo: its ``reduce_scatter_tensor`` runs a full all-reduce and keeps a slice, so on the
wire it moves twice what a ring reduce-scatter would. The counters in :mod:`course_lib.comm`
count payload (what the algorithm asks for), which is what the paper's 2Psi / 3Psi count.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from course_lib import comm
from course_lib.collectives import chunk_bounds
from course_lib.ddp import broadcast_parameters
from course_lib.model import GPT


STAGES = (0, 1, 2, 3)


# ----------------------------------------------------------------------------- the optimizer math
def adamw_update_(param: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
                  step: int, lr: float, betas: tuple[float, float] = (0.9, 0.99), eps: float = 1e-8,
                  weight_decay: float = 0.0) -> None:
    """One AdamW step on any slice of the parameters, in place (Loshchilov & Hutter 2019):

        theta <- theta (1 - lr wd);  m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2
        theta <- theta - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)

    Elementwise, so updating each shard on its own rank equals updating the whole vector. The
    operations are those of ``torch.optim.AdamW(foreach=False)``, hence bit-identical results.
    """
    if not (param.shape == grad.shape == exp_avg.shape == exp_avg_sq.shape):
        raise ValueError(f"adamw_update_: param {tuple(param.shape)}, grad {tuple(grad.shape)}, exp_avg "
                         f"{tuple(exp_avg.shape)} and exp_avg_sq {tuple(exp_avg_sq.shape)} must have one shape "
                         "(the same shard of the flat vector)")
    if not isinstance(step, int) or step < 1:
        raise ValueError(f"step counts the updates so far including this one: 1, 2, ...; got {step!r}")
    b1, b2 = betas
    with torch.no_grad():
        param.mul_(1 - lr * weight_decay)
        exp_avg.lerp_(grad, 1 - b1)
        exp_avg_sq.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        step_size = lr / (1 - b1 ** step)
        denom = (exp_avg_sq.sqrt() / math.sqrt(1 - b2 ** step)).add_(eps)
        param.addcdiv_(exp_avg, denom, value=-step_size)


def shard_range(padded: int, rank: int, world_size: int) -> tuple[int, int]:
    """``[start, end)`` of rank ``rank``'s shard of a flat buffer of ``padded`` elements: chapter 3's
    chunk ``rank`` (:func:`course_lib.collectives.chunk_bounds`), all chunks of one size."""
    if padded % world_size:
        raise ValueError(f"a flat buffer of {padded} elements does not split into {world_size} equal shards: "
                         f"pad it to a multiple of world_size ({math.ceil(padded / world_size) * world_size})")
    bounds = chunk_bounds(padded, world_size)
    return bounds[rank], bounds[rank + 1]


# ----------------------------------------------------------------------------- flat units
class FlatUnit:
    """Some parameters flattened into one buffer of ``padded = ceil(numel / p) * p`` floats.

    The parameters become views of ``flat``; ``shard`` is this rank's ``padded / p`` slice, a
    view of ``flat`` until :meth:`keep_shard_only` gives it its own storage (stage 3).
    """

    def __init__(self, name: str, params: list[nn.Parameter], rank: int, world_size: int) -> None:
        self.name, self.params = name, params
        self.numel = sum(p.numel() for p in params)
        self.padded = math.ceil(self.numel / world_size) * world_size
        self.start, self.end = shard_range(self.padded, rank, world_size)
        self.flat = torch.zeros(self.padded, dtype=params[0].dtype)
        self.offsets, off = [], 0
        with torch.no_grad():
            for p in params:
                self.offsets.append(off)
                self.flat[off:off + p.numel()].copy_(p.reshape(-1))
                p.data = self.flat[off:off + p.numel()].view_as(p)
                off += p.numel()
        self.shard = self.flat[self.start:self.end]
        self.shard_is_view = True
        self.grad_shard: torch.Tensor | None = None
        self.exp_avg: torch.Tensor | None = None
        self.exp_avg_sq: torch.Tensor | None = None
        self.ready = 0
        self.work = None

    @property
    def gathered(self) -> bool:
        return self.flat.untyped_storage().nbytes() > 0

    def keep_shard_only(self) -> None:
        """Copy my shard out of ``flat``, then free ``flat``: from now on this rank stores 1/p."""
        self.shard = self.shard.clone()
        self.shard_is_view = False
        self.free()

    def free(self) -> None:
        """Drop the full parameters: the storage shrinks to 0 bytes, the parameters' views stay valid."""
        self.flat.untyped_storage().resize_(0)

    def gather(self) -> None:
        """Rebuild the full parameters from every rank's shard (one all-gather of Psi_unit)."""
        if not self.gathered:
            self.flat.untyped_storage().resize_(self.padded * self.flat.element_size())
        # The all-gather writes into flat, so its input must not be a view of flat.
        comm.all_gather_into_tensor(self.flat, self.shard.clone() if self.shard_is_view else self.shard)

    def flat_grad(self) -> torch.Tensor:
        """This rank's local gradients of the unit, flattened and zero-padded (a temporary)."""
        g = torch.zeros(self.padded, dtype=self.flat.dtype)
        for p, off in zip(self.params, self.offsets):
            if p.grad is not None:
                g[off:off + p.numel()].copy_(p.grad.reshape(-1))
        return g


def gpt_units(model: nn.Module) -> list[tuple[str, list[nn.Parameter]]]:
    """Units for a :class:`GPT`: one per block, plus ``root`` (embeddings, tied head, ln_f).

    Any other module is a single unit (stage 3 then gathers all of it at once).
    """
    if isinstance(model, GPT):
        in_blocks = {id(p) for p in model.blocks.parameters()}
        root = [p for p in model.parameters() if id(p) not in in_blocks]
        return [("root", root)] + [(f"block{i}", list(b.parameters())) for i, b in enumerate(model.blocks)]
    return [("all", list(model.parameters()))]


def storage_bytes(tensors: list[torch.Tensor]) -> int:
    """Sum of the distinct storages' sizes behind ``tensors`` (views of one buffer count once)."""
    seen: dict[int, int] = {}
    for t in tensors:
        s = t.untyped_storage()
        if s.nbytes() > 0:
            seen[s.data_ptr()] = s.nbytes()
    return sum(seen.values())


# ----------------------------------------------------------------------------- stage 0: the baseline
class ZeRO0(nn.Module):
    """Stage 0: plain data parallelism on flat units, every rank running the whole AdamW.

        out = zero(idx, targets); out[1].backward(); zero.step(); zero.zero_grad()

    Memory per rank: (4 + 4 + 8) Psi = 16 Psi bytes (paper: (2 + 2 + K) Psi).
    Communication per step: one all-reduce of the gradients, 2 Psi.

    The result equals DDP + ``torch.optim.AdamW(foreach=False)`` with the same data: the
    gradients are the same sums (divided by p), and AdamW is elementwise. This class also holds
    what every stage shares: the flat units, AdamW on a unit or a shard of it, and the
    measurements :meth:`full_parameters` and :meth:`held_bytes`.
    """

    stage = 0

    def __init__(self, model: nn.Module, lr: float = 2e-3, betas: tuple[float, float] = (0.9, 0.99),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__()
        self.module = model
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.rank, self.world_size = comm.get_rank(), comm.get_world_size()
        self.t = 0
        broadcast_parameters(model)
        self.units = [FlatUnit(n, ps, self.rank, self.world_size) for n, ps in gpt_units(model)]
        self.psi = sum(u.numel for u in self.units)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        return self.module(idx, targets)

    @torch.no_grad()
    def step(self) -> None:
        """Average the gradients over the ranks, then AdamW on all the parameters."""
        self.t += 1
        for unit in self.units:
            g = unit.flat_grad()
            comm.all_reduce(g)
            g.div_(self.world_size)
            self._adamw(unit, unit.flat, g)

    def _adamw(self, unit: FlatUnit, param: torch.Tensor, grad: torch.Tensor) -> None:
        """AdamW on ``param`` (the unit's whole buffer or my shard of it); its state has the same size."""
        if unit.exp_avg is None:
            unit.exp_avg, unit.exp_avg_sq = torch.zeros_like(param), torch.zeros_like(param)
        adamw_update_(param, grad, unit.exp_avg, unit.exp_avg_sq, step=self.t, lr=self.lr, betas=self.betas,
                      eps=self.eps, weight_decay=self.weight_decay)

    def zero_grad(self) -> None:
        for unit in self.units:
            for p in unit.params:
                p.grad = None
            unit.grad_shard = None

    def full_parameters(self) -> torch.Tensor:
        """Every parameter as one flat vector in ``module.parameters()`` order, like
        :func:`course_lib.update_rules.flat_params`."""
        return torch.cat([p.detach().reshape(-1).clone() for p in self.module.parameters()])

    def held_bytes(self) -> dict[str, int]:
        """Bytes of model state this rank holds right now, measured from the tensors' storages
        (each storage counted once, so a shard that is a view of its unit adds nothing; a freed
        stage-3 buffer has 0 bytes)."""
        params = [u.flat for u in self.units] + [u.shard for u in self.units]
        grads = [p.grad for u in self.units for p in u.params if p.grad is not None]
        grads += [u.grad_shard for u in self.units if u.grad_shard is not None]
        states = [t for u in self.units for t in (u.exp_avg, u.exp_avg_sq) if t is not None]
        return {"params": storage_bytes(params), "grads": storage_bytes(grads), "optimizer": storage_bytes(states)}


# ----------------------------------------------------------------------------- stage 1: shard the optimizer
class ZeRO1(ZeRO0):
    """Stage 1 (P_os): each rank keeps AdamW state for its shard only and updates only that shard.

    Memory per rank: 4 Psi + 4 Psi + 8 Psi / p (paper: 2 Psi + 2 Psi + K Psi / p).
    Communication per step: reduce-scatter of the gradients (Psi) + all-gather of the updated
    parameters (Psi) = 2 Psi, the same as the all-reduce of stage 0, which is exactly these two
    halves.
    """

    stage = 1

    @torch.no_grad()
    def step(self) -> None:
        """My shard of the averaged gradient, AdamW on my shard, then all-gather the parameters."""
        self.t += 1
        for unit in self.units:
            self._shard_gradient(unit)
            self._adamw(unit, unit.shard, unit.grad_shard)
            self._share_parameters(unit)

    def _shard_gradient(self, unit: FlatUnit) -> None:
        """``grad_shard`` <- my slice of the gradients summed over the ranks, divided by p."""
        g = unit.flat_grad()
        unit.grad_shard = torch.empty(unit.end - unit.start, dtype=g.dtype)
        comm.reduce_scatter_tensor(unit.grad_shard, g)
        unit.grad_shard.div_(self.world_size)

    def _share_parameters(self, unit: FlatUnit) -> None:
        """All-gather the updated shards: the next forward needs every parameter on every rank."""
        unit.gather()


# ----------------------------------------------------------------------------- stage 2: shard the gradients
class ZeRO2(ZeRO1):
    """Stage 2 (P_os+g): each unit is reduce-scattered from the backward hooks as soon as its
    gradients are ready, and its full gradients are freed at once: only my shard stays.

    Memory per rank: 4 Psi + (4 + 8) Psi / p (paper: 2 Psi + (2 + K) Psi / p).
    Communication per step: 2 Psi, as stage 1; only the moment of the reduce-scatter moves.
    """

    stage = 2

    def __init__(self, model: nn.Module, **adamw) -> None:
        super().__init__(model, **adamw)
        # Launch order of the gradient collectives: the order backward finishes the units
        # (last block first, root last, as it holds the embedding used first in forward).
        self._order = self.units[1:][::-1] + self.units[:1]
        self._unit_of = {p: u for u in self.units for p in u.params}
        self._next = 0
        self._in_backward = False
        self._inflight: list[FlatUnit] = []
        for p in self._unit_of:
            p.register_post_accumulate_grad_hook(self._grad_ready)

    def _shard_gradient(self, unit: FlatUnit) -> None:
        pass  # backward has already left my shard of the averaged gradient in unit.grad_shard

    def _grad_ready(self, p: nn.Parameter) -> None:
        if not self._in_backward:
            self._in_backward = True
            torch.autograd.Variable._execution_engine.queue_callback(self._finish_backward)
        self._unit_of[p].ready += 1
        while self._next < len(self._order) and self._order[self._next].ready == len(self._order[self._next].params):
            self._launch_reduce_scatter(self._order[self._next])
            self._next += 1

    def _launch_reduce_scatter(self, unit: FlatUnit) -> None:
        g = unit.flat_grad()
        for p in unit.params:
            p.grad = None  # the full gradient is not kept, only my shard of the sum
        unit.grad_shard = torch.empty(unit.end - unit.start, dtype=g.dtype)
        # Keep at most two reduce-scatters in flight: each holds its unit's full flat gradient
        # until it completes, and letting them pile up would hold all of them, i.e. no saving.
        if len(self._inflight) == 2:
            done = self._inflight.pop(0)
            done.work.wait()
            done.work = None  # the Work holds the flat gradient: drop it
        unit.work = comm.reduce_scatter_tensor(unit.grad_shard, g, async_op=True)
        self._inflight.append(unit)
        unit.ready = 0

    def _finish_backward(self) -> None:
        for unit in self._order[self._next:]:  # units with unused parameters
            self._launch_reduce_scatter(unit)
        for unit in self._inflight:
            unit.work.wait()
        for unit in self.units:
            unit.work = None
            unit.grad_shard.div_(self.world_size)
        self._inflight, self._next, self._in_backward = [], 0, False


# ----------------------------------------------------------------------------- stage 3: shard the parameters
class ZeRO3(ZeRO2):
    """Stage 3 (P_os+g+p): each rank stores only its parameter shard; a unit is all-gathered
    just before its forward, freed after it, gathered again for its backward, and freed after
    that (FSDP's scheme, Zhao et al. 2023, "PyTorch FSDP", VLDB).

    Memory per rank: (4 + 4 + 8) Psi / p (paper: (2 + 2 + K) Psi / p), plus the units
    gathered at the moment.
    Communication per step: all-gather for forward (Psi) + all-gather for backward (Psi) +
    reduce-scatter of the gradients (Psi) = 3 Psi, 1.5 times stage 0.
    """

    stage = 3

    def __init__(self, model: nn.Module, **adamw) -> None:
        super().__init__(model, **adamw)
        for unit in self.units:
            unit.keep_shard_only()

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        if not isinstance(self.module, GPT):
            raise TypeError("ZeRO stage 3 here knows how to walk a course GPT only; use stages 0-2 for other modules")
        m, training = self.module, torch.is_grad_enabled()
        root = self.units[0]
        self._gather(root)
        h = m.embed(idx)
        for unit, block in zip(self.units[1:], m.blocks):
            self._gather(unit)
            h = block(h)
            unit.free()
            if training:  # gathered again for backward by the hook on the block's output
                h.register_hook(self._regather(unit))
        logits = m.head(h)
        root.free()
        if training:
            logits.register_hook(self._regather(root))
        loss = None if targets is None else m.loss_fn(logits, targets)
        return logits, loss

    def _gather(self, unit: FlatUnit) -> None:
        if not unit.gathered:
            unit.gather()

    def _regather(self, unit: FlatUnit):
        def hook(grad: torch.Tensor) -> None:
            self._gather(unit)  # the unit's backward runs right after its output's gradient is ready
        return hook

    def _launch_reduce_scatter(self, unit: FlatUnit) -> None:
        super()._launch_reduce_scatter(unit)
        unit.free()  # its backward is done

    def _share_parameters(self, unit: FlatUnit) -> None:
        pass  # nothing to send now: the next forward gathers each unit when it needs it

    def full_parameters(self) -> torch.Tensor:
        """As :meth:`ZeRO0.full_parameters`, gathering the freed units for the copy (a collective)."""
        freed = [u for u in self.units if not u.gathered]
        for unit in freed:
            unit.gather()
        out = super().full_parameters()
        for unit in freed:
            unit.free()
        return out


def ZeRO(model: nn.Module, stage: int, lr: float = 2e-3, betas: tuple[float, float] = (0.9, 0.99),
         eps: float = 1e-8, weight_decay: float = 0.0) -> ZeRO0:
    """Data parallelism with ZeRO ``stage`` in {0, 1, 2, 3} (0 = plain DDP) and a built-in AdamW:
    the instance of :class:`ZeRO0`, :class:`ZeRO1`, :class:`ZeRO2` or :class:`ZeRO3`."""
    if stage not in STAGES:
        raise ValueError(f"ZeRO stage must be one of {STAGES} (0 = plain DDP), got {stage!r}")
    return (ZeRO0, ZeRO1, ZeRO2, ZeRO3)[stage](model, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


# ----------------------------------------------------------------------------- the paper's formula
def formula_bytes(psi: int, world_size: int, stage: int, param_bytes: int = 4, grad_bytes: int = 4,
                  k: int = 8) -> dict[str, float]:
    """Model-state bytes per rank predicted by the ZeRO paper (sec. 5, Fig. 1):
    ``param_bytes Psi + grad_bytes Psi + k Psi``, with the optimizer term divided by p from
    stage 1, the gradient term from stage 2, the parameter term at stage 3. Defaults are this
    course's fp32 AdamW (4 + 4 + 8); the paper's mixed-precision Adam is (2, 2, 12)."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    p = world_size
    return {"params": param_bytes * psi / (p if stage >= 3 else 1),
            "grads": grad_bytes * psi / (p if stage >= 2 else 1),
            "optimizer": k * psi / (p if stage >= 1 else 1)}
