"""Gradient-descent update rules as code: SGD, mini-batch SGD, data parallelism, accumulation.

    w_{t+1} = w_t - eta * g_t,     g_t = (1/B) sum_{i in B_t} grad l(w_t; x_i, y_i)

Data parallelism (Li et al. 2020, PyTorch DDP) computes the same ``g_t`` on P ranks: rank k
holds b_k rows of the global batch and its mean gradient g_k; the exact global gradient is

    g = sum_k (b_k / B) g_k        which is   (1/P) sum_k g_k   only when every b_k = B/P.

This module gives the pieces every later chapter and the chapter 2 notebook use: flat
parameter / gradient vectors (what a parameter server stores and what gossip mixes), the
mini-batch gradient of the reference GPT, the data-parallel gradient on real ranks, the
combination rules (right and wrong), gradient accumulation and the linear learning-rate
scaling rule of Goyal et al. 2017.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from course_lib import comm
from course_lib.data import get_batch, load_dataset, shard_batch
from course_lib.model import GPT, GPTConfig


# ----------------------------------------------------------------------------- flat vectors
def flat_params(model: nn.Module) -> torch.Tensor:
    """All parameters in ``model.parameters()`` order as one 1-D float32 vector ``w`` (a copy).

    Tied parameters appear once (``parameters()`` de-duplicates), so ``len(w) = num_params``.
    """
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()


def flat_grads(model: nn.Module) -> torch.Tensor:
    """The gradient ``dL/dw`` laid out like :func:`flat_params` (zeros where ``grad`` is None)."""
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                      for p in model.parameters()]).clone()


def set_flat_params(model: nn.Module, w: torch.Tensor) -> None:
    """Copy the flat vector ``w`` into the model's parameters (inverse of :func:`flat_params`)."""
    n = sum(p.numel() for p in model.parameters())
    if not isinstance(w, torch.Tensor) or w.dim() != 1 or w.numel() != n:
        shape = tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__
        raise ValueError(f"w must be a 1-D tensor of the model's {n} parameters, got {shape}; "
                         "build it with flat_params(model) on the same architecture")
    i = 0
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(w[i:i + p.numel()].view_as(p))
            i += p.numel()


# ----------------------------------------------------------------------------- SGD
def sgd_update(w: torch.Tensor, g: torch.Tensor, lr: float) -> torch.Tensor:
    """One (mini-batch) SGD step ``w_{t+1} = w_t - eta g_t`` (Robbins & Monro 1951), out of place.

    The whole vector moves at once with the gradient taken at the *old* ``w_t`` (the seed's
    ``w_i = w_i - eta dL/dw_i``, done coordinate by coordinate in place, would not be SGD).
    """
    if w.shape != g.shape:
        raise ValueError(f"w and g must have the same shape, got {tuple(w.shape)} and {tuple(g.shape)}")
    if not lr > 0:
        raise ValueError(f"the learning rate must be positive, got {lr!r}")
    return w - lr * g


def step_batch(data: torch.Tensor, batch_size: int, block_size: int, seed: int,
               step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch of step ``step``: ``get_batch`` with a generator seeded by (seed, step).

    Seeding per step (instead of one running stream) lets any process draw the batch of any
    step on its own, which asynchronous workers need: worker k's c-th gradient uses shard k
    of global batch c, whatever the others are doing.
    """
    g = torch.Generator().manual_seed(1_000_003 * seed + step)
    return get_batch(data, batch_size, block_size, g)


def batch_grad(model: GPT, x: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> tuple[float, torch.Tensor]:
    """``(loss, flat gradient)`` of the cross-entropy over the batch ``(x, y)``.

    ``reduction="mean"``: ``L = 1/(B T) sum l`` (what frameworks use); ``"sum"``: ``L = sum l``,
    the seed's ``L = sum_i loss`` (article 02 sec. 4.2), whose gradient grows with the batch.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    model.zero_grad(set_to_none=True)
    logits, _ = model(x)
    loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                       reduction=reduction)
    loss.backward()
    return loss.item(), flat_grads(model)


# ----------------------------------------------------------------------------- combining shards
def combine_shard_grads(grads: list[torch.Tensor], sizes: list[int], rule: str = "weighted") -> torch.Tensor:
    """Combine per-shard *mean* gradients ``g_k`` of shards with ``b_k`` rows into one gradient.

    ``"weighted"``: ``g = sum_k (b_k / B) g_k`` with ``B = sum_k b_k``: exactly the gradient of
    the mean loss over the whole batch, for any shard sizes (Goyal et al. 2017, sec. 2).
    ``"mean"``: ``(1/P) sum_k g_k``, what an all-reduce followed by ``/ P`` computes; equal to
    the weighted rule only when all ``b_k`` are equal.
    ``"sum"``: ``sum_k g_k``, an all-reduce SUM without ``/ P`` (article 05's code): P times
    too large, so it silently multiplies the learning rate by P.
    """
    if len(grads) != len(sizes) or not grads:
        raise ValueError(f"need one size per gradient, got {len(grads)} gradients and {len(sizes)} sizes")
    if any(b < 1 for b in sizes):
        raise ValueError(f"shard sizes must be >= 1 rows, got {sizes}")
    stacked = torch.stack(grads)
    if rule == "weighted":
        w = torch.tensor(sizes, dtype=stacked.dtype) / sum(sizes)
        return (w[:, None] * stacked).sum(0)
    if rule == "mean":
        return stacked.mean(0)
    if rule == "sum":
        return stacked.sum(0)
    raise ValueError(f"rule must be 'weighted', 'mean' or 'sum', got {rule!r}")


def data_parallel_grad(model: GPT, x_shard: torch.Tensor, y_shard: torch.Tensor,
                       world_size: int) -> tuple[float, torch.Tensor]:
    """On each rank: local mean gradient ``g_k``, then ``g = (1/P) sum_k g_k`` by all-reduce.

    Equal to the full-batch gradient when every rank holds ``B/P`` rows (the shards of
    :func:`course_lib.data.shard_batch`). Returns ``(local loss, averaged flat gradient)``.
    """
    loss, g = batch_grad(model, x_shard, y_shard)
    comm.all_reduce(g)  # SUM over ranks ...
    return loss, g / world_size  # ... and the division DDP does: a mean of equal-size means


def dp_gradient_worker(rank: int, world_size: int, config: GPTConfig, batch_size: int,
                       model_seed: int = 0, batch_seed: int = 0) -> torch.Tensor:
    """Launchable: build the GPT (same seed on every rank), take this rank's shard of the global
    batch of step 0 and return the data-parallel gradient. Compare with :func:`batch_grad`."""
    data = load_dataset()
    torch.manual_seed(model_seed)
    model = GPT(config)
    x, y = step_batch(data.train, batch_size, config.block_size, batch_seed, 0)
    _, g = data_parallel_grad(model, shard_batch(x, rank, world_size), shard_batch(y, rank, world_size),
                              world_size)
    return g


# ----------------------------------------------------------------------------- accumulation
def accumulated_grad(model: GPT, x: torch.Tensor, y: torch.Tensor, micro_batches: int) -> torch.Tensor:
    """Gradient accumulation: ``g = sum_j (1/M) grad L_j`` over M equal micro-batches.

    ``backward`` *adds* into ``p.grad``, so each micro-batch loss is divided by M first; the
    sum then equals the full-batch mean gradient while only one micro-batch's activations
    are alive at a time (memory for activations drops by M; parameters, gradients and
    optimizer state do not).
    """
    B = x.shape[0]
    if micro_batches < 1 or B % micro_batches:
        raise ValueError(f"micro_batches must divide the batch size {B}, got {micro_batches}")
    model.zero_grad(set_to_none=True)
    m = B // micro_batches
    for j in range(micro_batches):
        _, loss = model(x[j * m:(j + 1) * m], y[j * m:(j + 1) * m])
        (loss / micro_batches).backward()
    return flat_grads(model)


# ----------------------------------------------------------------------------- LR scaling
def linear_scaled_lr(base_lr: float, base_batch: int, batch: int) -> float:
    """Linear scaling rule (Goyal et al. 2017): ``eta = eta_0 * B / B_0``.

    k SGD steps of batch B_0 with ``eta_0`` move about as far as one step of batch k B_0 with
    ``k eta_0``, as long as the gradient changes little over those k steps (it fails early in
    training, hence warm-up, and beyond a critical batch size).
    """
    if base_lr <= 0 or base_batch < 1 or batch < 1:
        raise ValueError(f"need base_lr > 0 and batch sizes >= 1, got {base_lr}, {base_batch}, {batch}")
    return base_lr * batch / base_batch


def warmup_lr(step: int, peak_lr: float, warmup_steps: int) -> float:
    """Gradual warm-up (Goyal et al. 2017, sec. 2.2): ``eta_t = eta_peak * min(1, (t+1)/warmup)``."""
    if warmup_steps < 0 or step < 0:
        raise ValueError(f"step and warmup_steps must be >= 0, got {step}, {warmup_steps}")
    return peak_lr * min(1.0, (step + 1) / max(1, warmup_steps))


# ----------------------------------------------------------------------------- batch statistics
class TinyBNNet(nn.Module):
    """``Linear -> BatchNorm1d -> ReLU -> Linear``: a model whose loss on one row depends on the
    other rows of the batch (through the batch mean and variance), so data parallelism with
    per-rank statistics is *not* the full-batch computation (Ioffe & Szegedy 2015)."""

    def __init__(self, d_in: int = 8, d_hidden: int = 16, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(d_in, d_hidden), nn.BatchNorm1d(d_hidden), nn.ReLU(),
                                 nn.Linear(d_hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


def bn_grads_full_vs_shards(world_size: int, batch: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient of the MSE of :class:`TinyBNNet` on the full batch, and the mean of the
    per-shard gradients (each shard normalised with its own batch statistics)."""
    if batch % world_size:
        raise ValueError(f"batch={batch} must be divisible by world_size={world_size}")
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 8, generator=gen) * 2 + 1
    y = x[:, :2].sum(1) + 0.1 * torch.randn(batch, generator=gen)
    net = TinyBNNet(seed=seed)

    def grad(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        net.zero_grad(set_to_none=True)
        nn.functional.mse_loss(net(xs), ys).backward()
        return flat_grads(net)

    full = grad(x, y)
    m = batch // world_size
    shards = [grad(x[k * m:(k + 1) * m], y[k * m:(k + 1) * m]) for k in range(world_size)]
    return full, torch.stack(shards).mean(0)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """``||a - b|| / ||b||``: the error measure used for every equivalence in chapter 2."""
    nb = b.norm().item()
    return (a - b).norm().item() / (nb if nb > 0 else 1.0) if math.isfinite(nb) else math.inf
