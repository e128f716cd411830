"""ZeRO stages 1, 2 and 3: shard the optimizer state, the gradients, then the parameters.

Rajbhandari, Rasley, Ruwase & He 2020, "ZeRO: Memory Optimizations Toward Training Trillion
Parameter Models" (SC20). Model-state memory per rank, with Psi parameters, p ranks and K
bytes of optimizer state per parameter (paper, mixed precision: 2 + 2 + K with K = 12):

    stage 0 (DDP)       2Psi + 2Psi + K Psi
    stage 1 (P_os)      2Psi + 2Psi + K Psi / p
    stage 2 (P_os+g)    2Psi + (2 + K) Psi / p
    stage 3 (P_os+g+p)  (2 + 2 + K) Psi / p

This course trains in float32 with AdamW, where the parameters *are* the master copy: 4 bytes
of parameter, 4 of gradient and K = 8 of state (exp_avg, exp_avg_sq), i.e. (4 + 4 + 8) Psi.
Communication per step, in units of Psi elements: 2 for stages 0-2 (all-reduce = reduce-scatter
+ all-gather), 3 for stage 3 (parameters all-gathered for forward *and* for backward).

How it works here: the parameters are cut into *units* (for the GPT: one per block, plus a
root unit with the embeddings and the final LayerNorm); each unit is flattened into one
padded buffer of ``p * s`` elements whose parameters become views, and rank r owns the slice
``[r s, (r+1) s)`` of every unit. Then

* stage 1: after backward, ``reduce_scatter`` the full gradients -> my gradient shard; AdamW on
  my parameter shard (state only for it); ``all_gather`` the parameter shards.
* stage 2: the same, but each unit is reduce-scattered from the backward hooks as soon as its
  gradients are ready, and the full gradients are freed at once: only the shard stays.
* stage 3: each rank stores only its parameter shard; a unit is all-gathered just before its
  forward, freed after it, gathered again for its backward, and freed after that (FSDP's
  scheme, Zhao et al. 2023, "PyTorch FSDP", VLDB).

Note on gloo: its ``reduce_scatter_tensor`` runs a full all-reduce and keeps a slice, so on the
wire it moves twice what a ring reduce-scatter would. The counters in :mod:`course_lib.comm`
count payload (what the algorithm asks for), which is what the paper's 2Psi / 3Psi count.
"""
from __future__ import annotations

import math
import time

import torch
import torch.nn as nn

from course_lib import comm
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
    """``[start, end)`` of rank ``rank``'s shard of a flat buffer of ``padded`` elements."""
    if padded % world_size:
        raise ValueError(f"a flat buffer of {padded} elements does not split into {world_size} equal shards: "
                         f"pad it to a multiple of world_size ({math.ceil(padded / world_size) * world_size})")
    s = padded // world_size
    return rank * s, (rank + 1) * s


# ----------------------------------------------------------------------------- flat units
class FlatUnit:
    """Some parameters flattened into one buffer of ``padded = ceil(numel / p) * p`` floats.

    The parameters become views of ``flat``; ``shard`` is this rank's ``padded / p`` slice
    (a view of ``flat`` for stages 0-2, its own storage for stage 3, where ``flat`` is freed
    between uses by resizing its storage to 0 bytes, which keeps the views valid).
    """

    def __init__(self, name: str, params: list[nn.Parameter], rank: int, world_size: int, stage: int) -> None:
        self.name, self.params, self.stage = name, params, stage
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
        if stage == 3:
            self.shard = self.shard.clone()
            self.free()
        self.grad_shard: torch.Tensor | None = None
        self.exp_avg: torch.Tensor | None = None
        self.exp_avg_sq: torch.Tensor | None = None
        self.ready = 0
        self.work = None

    @property
    def gathered(self) -> bool:
        return self.flat.untyped_storage().nbytes() > 0

    def free(self) -> None:
        """Drop the full parameters (stage 3): the storage shrinks to 0 bytes, views stay valid."""
        self.flat.untyped_storage().resize_(0)

    def gather(self) -> None:
        """Rebuild the full parameters from every rank's shard (one all-gather of Psi_unit)."""
        if self.stage == 3:
            if self.gathered:
                return
            self.flat.untyped_storage().resize_(self.padded * self.flat.element_size())
        comm.all_gather_into_tensor(self.flat, self.shard.clone() if self.stage < 3 else self.shard)

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


# ----------------------------------------------------------------------------- the wrapper
class ZeRO(nn.Module):
    """Data parallelism with ZeRO ``stage`` in {0, 1, 2, 3} and a built-in sharded AdamW.

        out = zero(idx, targets); out[1].backward(); zero.step(); zero.zero_grad()

    Stage 0 is plain DDP with a replicated optimizer (the baseline of the memory table).
    The result equals DDP + ``torch.optim.AdamW(foreach=False)`` with the same data: the
    gradients are the same sums (divided by p), and AdamW is elementwise.
    Rajbhandari et al. 2020 (ZeRO, SC20), sec. 5 (stages 1, 2) and 6 (stage 3).
    """

    def __init__(self, model: nn.Module, stage: int, lr: float = 2e-3, betas: tuple[float, float] = (0.9, 0.99),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__()
        if stage not in STAGES:
            raise ValueError(f"ZeRO stage must be one of {STAGES} (0 = plain DDP), got {stage!r}")
        self.module, self.stage = model, stage
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.rank, self.world_size = comm.get_rank(), comm.get_world_size()
        self.t = 0
        broadcast_parameters(model)
        self.units = [FlatUnit(n, ps, self.rank, self.world_size, stage) for n, ps in gpt_units(model)]
        self.psi = sum(u.numel for u in self.units)
        # Launch order of the gradient collectives: the order backward finishes the units
        # (last block first, root last, as it holds the embedding used first in forward).
        self._order = self.units[1:][::-1] + self.units[:1]
        self._unit_of = {p: u for u in self.units for p in u.params}
        self._next = 0
        self._in_backward = False
        self._inflight: list[FlatUnit] = []
        if stage >= 2:
            for p in self._unit_of:
                p.register_post_accumulate_grad_hook(self._grad_ready)

    # ------------------------------------------------------------------ forward (stage 3 gathers)
    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        if self.stage < 3:
            return self.module(idx, targets)
        if not isinstance(self.module, GPT):
            raise TypeError("ZeRO stage 3 here knows how to walk a course GPT only; use stages 0-2 for other modules")
        m, training = self.module, torch.is_grad_enabled()
        root = self.units[0]
        root.gather()
        h = m.embed(idx)
        for unit, block in zip(self.units[1:], m.blocks):
            unit.gather()
            h = block(h)
            if training:
                unit.free()  # gathered again for backward by the hook on the block's output
                h.register_hook(self._regather(unit))
            else:
                unit.free()
        logits = m.head(h)
        root.free()
        if training:
            logits.register_hook(self._regather(root))
        loss = None if targets is None else m.loss_fn(logits, targets)
        return logits, loss

    def _regather(self, unit: FlatUnit):
        def hook(grad: torch.Tensor) -> None:
            unit.gather()  # the unit's backward runs right after its output's gradient is ready
        return hook

    # ------------------------------------------------------------------ backward (stages 2, 3)
    def _grad_ready(self, p: nn.Parameter) -> None:
        if not self._in_backward:
            self._in_backward = True
            torch.autograd.Variable._execution_engine.queue_callback(self._finish_backward)
        self._unit_of[p].ready += 1
        while self._next < len(self._order) and self._order[self._next].ready == len(self._order[self._next].params):
            self._reduce_scatter(self._order[self._next])
            self._next += 1

    def _reduce_scatter(self, unit: FlatUnit) -> None:
        g = unit.flat_grad()
        for p in unit.params:
            p.grad = None  # stage 2/3: the full gradient is not kept, only my shard of the sum
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
        if self.stage == 3:
            unit.free()

    def _finish_backward(self) -> None:
        for unit in self._order[self._next:]:  # units with unused parameters
            self._reduce_scatter(unit)
        for unit in self._inflight:
            unit.work.wait()
        for unit in self.units:
            unit.work = None
            unit.grad_shard.div_(self.world_size)
        self._inflight, self._next, self._in_backward = [], 0, False

    # ------------------------------------------------------------------ the step
    @torch.no_grad()
    def step(self) -> None:
        """Average the gradients (stages 0, 1), AdamW on my shard, all-gather the parameters."""
        self.t += 1
        for unit in self.units:
            if self.stage == 0:  # DDP: everybody updates everything
                g = unit.flat_grad()
                comm.all_reduce(g)
                g.div_(self.world_size)
                param, grad = unit.flat, g
            else:
                if self.stage == 1:
                    g = unit.flat_grad()
                    unit.grad_shard = torch.empty(unit.end - unit.start, dtype=g.dtype)
                    comm.reduce_scatter_tensor(unit.grad_shard, g)
                    unit.grad_shard.div_(self.world_size)
                param, grad = unit.shard, unit.grad_shard
            if unit.exp_avg is None:
                unit.exp_avg, unit.exp_avg_sq = torch.zeros_like(param), torch.zeros_like(param)
            adamw_update_(param, grad, unit.exp_avg, unit.exp_avg_sq, self.t, self.lr, self.betas, self.eps,
                          self.weight_decay)
            if self.stage in (1, 2):
                unit.gather()  # stage 3 gathers lazily, at the next forward

    def zero_grad(self) -> None:
        for unit in self.units:
            for p in unit.params:
                p.grad = None
            if self.stage >= 1:
                unit.grad_shard = None

    # ------------------------------------------------------------------ measurements
    def full_parameters(self) -> torch.Tensor:
        """Every parameter as one flat vector in ``module.parameters()`` order, like
        :func:`course_lib.update_rules.flat_params` (gathers stage 3 units: a collective)."""
        was = [u.gathered for u in self.units]
        for unit in self.units:
            unit.gather()
        out = torch.cat([p.detach().reshape(-1).clone() for p in self.module.parameters()])
        for unit, w in zip(self.units, was):
            if self.stage == 3 and not w:
                unit.free()
        return out

    def held_bytes(self) -> dict[str, int]:
        """Bytes of model state this rank holds right now, measured from the tensors' storages
        (each storage counted once; a freed stage-3 buffer has 0 bytes)."""
        params = [u.flat for u in self.units] + ([u.shard for u in self.units] if self.stage == 3 else [])
        grads = [p.grad for u in self.units for p in u.params if p.grad is not None]
        grads += [u.grad_shard for u in self.units if u.grad_shard is not None and self.stage >= 1]
        states = [t for u in self.units for t in (u.exp_avg, u.exp_avg_sq) if t is not None]
        return {"params": storage_bytes(params), "grads": storage_bytes(grads), "optimizer": storage_bytes(states)}


def storage_bytes(tensors: list[torch.Tensor]) -> int:
    """Sum of the distinct storages' sizes behind ``tensors`` (views of one buffer count once)."""
    seen: dict[int, int] = {}
    for t in tensors:
        s = t.untyped_storage()
        if s.nbytes() > 0:
            seen[s.data_ptr()] = s.nbytes()
    return sum(seen.values())


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


def volume_in_psi(stats: comm.CommStats, psi: int, world_size: int, steps: int = 1, elem_bytes: int = 4) -> float:
    """Per-step communication volume in units of Psi, the paper's convention (sec. 7): an
    all-reduce of N elements counts 2N (its reduce-scatter + all-gather halves), a
    reduce-scatter N (its input), an all-gather N (its output = p x its input)."""
    b = stats.collective_bytes
    total = (2 * b["all_reduce"] + b["reduce_scatter_tensor"] + world_size * b["all_gather_into_tensor"])
    return total / elem_bytes / psi / steps


# ----------------------------------------------------------------------------- a training run
def train_zero(rank: int, world_size: int, config, stage: int, steps: int, batch_size: int, lr: float = 2e-3,
               seed: int = 0, measure_at: int = 2) -> dict:
    """One rank of ZeRO training on its shard of each global batch (as :func:`course_lib.runs.data_parallel.train_single`).

    Returns the final parameters, the local losses, the model-state bytes held after the
    backward of step ``measure_at`` (params, grads and optimizer state all alive), the
    communication volume per step in Psi (setup broadcast excluded), and ``psi``.
    """
    from course_lib.data import get_batch_shard, load_dataset

    data = load_dataset()
    torch.manual_seed(seed + rank)
    zero = ZeRO(GPT(config), stage, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    comm.reset_stats()
    losses, held, times = [], None, []
    for step in range(1, steps + 1):
        x, y = get_batch_shard(data.train, batch_size, config.block_size, gen, rank, world_size)
        t0 = time.perf_counter()
        zero.zero_grad()
        _, loss = zero(x, y)
        loss.backward()
        if step == measure_at:
            held = zero.held_bytes()
        zero.step()
        times.append(time.perf_counter() - t0)
        losses.append(loss.item())
    stats = comm.get_stats()
    volume = volume_in_psi(stats, zero.psi, world_size, steps)  # before the gather below
    calls = dict(stats.collective_calls)
    return {"params": zero.full_parameters(), "losses": losses, "held": held, "psi": zero.psi,
            "padded": sum(u.padded for u in zero.units), "volume_psi": volume,
            "collective_calls": calls, "step_seconds": times}


def plot_memory(ax, held: dict[int, dict[str, int]], psi: int, world_size: int) -> None:
    """Stacked bars of measured bytes per rank for each stage, with the formula as a black tick."""
    parts = [("params", "#4C72B0"), ("grads", "#55A868"), ("optimizer", "#DD8452")]
    stages = sorted(held)
    for s in stages:
        bottom = 0.0
        for name, colour in parts:
            v = held[s][name] / 1e3
            ax.bar(s, v, bottom=bottom, color=colour, label=name if s == stages[0] else None)
            bottom += v
        ax.plot([s - 0.4, s + 0.4], [sum(formula_bytes(psi, world_size, s).values()) / 1e3] * 2, "k-", lw=2,
                label="formula (4+4+8)Psi, /p per stage" if s == stages[0] else None)
    ax.set_xticks(stages, [f"stage {s}" if s else "DDP" for s in stages])
    ax.set_ylabel("kB per rank")
    ax.set_title(f"model state per rank, p = {world_size}, Psi = {psi:,}", fontsize=10)
    ax.legend(fontsize=8)
