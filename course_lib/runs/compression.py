"""Training driver for chapter 7: data-parallel GPT training whose gradients travel compressed.

    results = launch(train_compressed, 4, config=cfg, steps=200, batch_size=32, method="top-k 1%")

Every rank draws the same global batch and keeps its rows (as chapter 4 does), the course's
:class:`~course_lib.ddp.BucketedDDP` (or PyTorch's DDP with a comm hook) sends each bucket
through the method's compressor, and the counters of :mod:`course_lib.comm` record the bytes.
"""
from __future__ import annotations

import time
from typing import Callable

import torch
import torch.nn as nn
from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as torch_powersgd

from course_lib import comm
from course_lib.compression import (AllReduce, Compressor, EFSign, HalfPrecision, HookState, PowerSGD, QSGD,
                                    RandomK, SignMajority, StackedPowerSGD, TopK, compression_hook, gpt_stacks)
from course_lib.data import get_batch_shard, load_dataset
from course_lib.ddp import DEFAULT_BUCKET_CAP_BYTES, BucketedDDP
from course_lib.update_rules import flat_params
from course_lib.model import GPT, GPTConfig
from course_lib.train import estimate_loss, make_optimizer

# The chapter's methods, in teaching order: name -> a fresh compressor (state is per run).
METHODS: dict[str, Callable[[], Compressor]] = {
    "fp32": AllReduce,
    "fp16": lambda: HalfPrecision(torch.float16),
    "bf16": lambda: HalfPrecision(torch.bfloat16),
    "qsgd s=4": lambda: QSGD(levels=4),
    "sign (majority)": SignMajority,
    "EF-sign": EFSign,
    "random-k 1% +EF": lambda: RandomK(0.01),
    "top-k 1% no EF": lambda: TopK(0.01, error_feedback=False),
    "top-k 1% +EF": lambda: TopK(0.01),
    "powersgd r=4": lambda: PowerSGD(rank=4),
}
# Methods built from the model itself (the GPT's gradients stacked into a few matrices).
MODEL_METHODS: dict[str, Callable[[nn.Module], Compressor]] = {
    "powersgd r=4 stacked": lambda model: StackedPowerSGD(gpt_stacks(model), rank=4),
}


def make_compressor(method: str, model: nn.Module | None = None) -> Compressor:
    """A fresh compressor for one of :data:`METHODS`, or of :data:`MODEL_METHODS` (from ``model``)."""
    if method in MODEL_METHODS:
        if model is None:
            raise ValueError(f"{method!r} stacks a model's gradients: pass model=")
        return MODEL_METHODS[method](model)
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {list(METHODS) + list(MODEL_METHODS)}")
    return METHODS[method]()


def train_compressed(rank: int, world_size: int, config: GPTConfig, steps: int, batch_size: int = 32,
                     method: str = "fp32", impl: str = "course", lr: float = 2e-3, optimizer: str = "adamw",
                     seed: int = 0, bucket_cap_bytes: int = DEFAULT_BUCKET_CAP_BYTES, per_tensor: bool = False,
                     powersgd_rank: int = 4, momentum: float = 0.0, eval_iters: int = 4, warmup_steps: int = 0,
                     momentum_correction: bool = False) -> dict:
    """One rank of compressed data-parallel training; returns losses, bytes and the final model.

    ``impl``: ``"course"`` (:class:`BucketedDDP` with ``compressor=``), ``"torch"`` (PyTorch's
    DDP with :func:`~course_lib.compression.compression_hook`) or ``"torch-powersgd"``
    (PyTorch's own ``powerSGD_hook`` at rank ``powersgd_rank``, error feedback and warm start,
    compressing from the 2nd step: torch requires ``start_powerSGD_iter >= 2``; ``method`` is
    then ignored). ``per_tensor``: compress each parameter's gradient on its own instead of
    whole flat buckets (ignored by torch's own powerSGD_hook, which always does).

    ``warmup_steps``: the first steps all-reduce dense fp32 gradients, then the compressor takes
    over (the warm-up of Lin et al. 2018, DGC, sec. 3.3, and torch's ``start_powerSGD_iter``):
    the first steps change the weights the most, and compressing them fills the error-feedback
    residual with gradients that are soon stale. Their bytes are counted like any others.
    ``momentum_correction`` (Top-K or stacked PowerSGD, with ``optimizer="sgd"``): the momentum
    moves into the compressor (``momentum`` of :class:`~course_lib.compression.TopK` or
    :class:`~course_lib.compression.StackedPowerSGD`, DGC's momentum correction) and the
    optimizer steps with plain SGD.

    Returns this rank's per-step ``losses``
    (their mean over ranks is the global-batch loss), ``bytes_per_step`` (its collectives'
    input bytes, from ``comm``), the comm counters, the final parameters and ``val_loss``.
    """
    if impl not in ("course", "torch", "torch-powersgd"):
        raise ValueError(f"impl must be 'course', 'torch' or 'torch-powersgd', got {impl!r}")
    if batch_size % world_size:
        raise ValueError(f"batch_size={batch_size} must split into world_size={world_size} equal shards")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0 (dense steps before compressing), got {warmup_steps}")
    data = load_dataset()
    torch.manual_seed(seed)
    model = GPT(config)
    compressor = make_compressor(method, model) if impl != "torch-powersgd" else None
    dense = AllReduce()
    if isinstance(compressor, StackedPowerSGD) and (impl != "course" or per_tensor):
        raise ValueError(f"{method!r} needs impl='course' and per_tensor=False (the whole model in one bucket)")
    if momentum_correction:
        if not isinstance(compressor, (TopK, StackedPowerSGD)) or optimizer != "sgd":
            raise ValueError("momentum_correction needs a Top-K or stacked PowerSGD method and optimizer='sgd'")
        compressor.momentum, momentum = momentum, 0.0  # the compressor keeps the velocity
    # The course's BucketedDDP compresses whole buckets: a bucket per parameter gives per-tensor
    # compression. torch's DDP hooks see each bucket's gradients (HookState.per_tensor), and
    # torch's powerSGD_hook compresses per tensor anyway (it hangs with one bucket per parameter).
    cap = 1 if per_tensor and impl == "course" else bucket_cap_bytes
    if impl == "course":
        ddp: nn.Module = BucketedDDP(model, cap, compressor=compressor)
    else:
        # torch's DDP puts the first bucket's cap at 1 MiB unless told; a huge cap makes one bucket.
        ddp = nn.parallel.DistributedDataParallel(model, bucket_cap_mb=cap / 2**20)
        if impl == "torch":
            hook_state = HookState(compressor, per_tensor=per_tensor)
            ddp.register_comm_hook(hook_state, compression_hook)
        else:
            state = torch_powersgd.PowerSGDState(process_group=None, matrix_approximation_rank=powersgd_rank,
                                                 start_powerSGD_iter=max(2, warmup_steps), use_error_feedback=True,
                                                 warm_start=True, random_seed=seed)
            ddp.register_comm_hook(state, torch_powersgd.powerSGD_hook)
    opt = make_optimizer(model, optimizer, lr=lr, **({"momentum": momentum} if optimizer == "sgd" else {}))
    gen = torch.Generator().manual_seed(seed)
    comm.reset_stats()
    losses, t0 = [], time.perf_counter()
    for step in range(steps):
        x, y = get_batch_shard(data.train, batch_size, config.block_size, gen, rank, world_size)
        if impl == "course":  # dense fp32 all-reduce during the warm-up steps
            ddp.compressor = compressor if step >= warmup_steps else None
        elif impl == "torch":
            hook_state.compressor = compressor if step >= warmup_steps else dense
        opt.zero_grad(set_to_none=True)
        _, loss = ddp(x, y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    seconds = time.perf_counter() - t0
    stats = comm.get_stats()
    return {"losses": losses, "bytes_per_step": sum(stats.collective_bytes.values()) / max(steps, 1),
            "comm": stats, "seconds": seconds, "params": flat_params(model),
            "val_loss": estimate_loss(model, data.val, iters=eval_iters) if eval_iters else float("nan"),
            "method": method if compressor is not None else f"torch powerSGD r={powersgd_rank}"}


def mean_losses(results: list[dict]) -> list[float]:
    """The global-batch loss of each step: the mean of the ranks' losses (equal shards)."""
    return [sum(step) / len(step) for step in zip(*(r["losses"] for r in results))]


def compare_methods(rank: int, world_size: int, config: GPTConfig, steps: int, methods: list[str],
                    batch_size: int = 32, **kwargs) -> dict[str, dict]:
    """:func:`train_compressed` for each of ``methods`` in turn, inside one launch (one start-up
    for all): ``{method: result}``. Every method starts from the same model and batches."""
    return {m: train_compressed(rank, world_size, config, steps, batch_size, method=m, **kwargs) for m in methods}
