"""Training drivers of chapter 4: the single-process reference and its data-parallel twin.

    train_single(config=cfg, steps=8, batch_size=32)                         # one process
    launch(train_data_parallel, 2, config=cfg, steps=8, batch_size=32)      # p ranks, same batches

Both draw the same global batches from the same seed, so their parameters can be compared
after any number of steps.
"""
from __future__ import annotations

import contextlib
import time

import torch
import torch.nn as nn

from course_lib import comm
from course_lib.comm_hooks import ring_allreduce_hook
from course_lib.data import get_batch, get_batch_shard, load_dataset
from course_lib.ddp import DEFAULT_BUCKET_CAP_BYTES, BucketedDDP
from course_lib.model import GPT, GPTConfig
from course_lib.train import make_optimizer, train_step
from course_lib.update_rules import flat_params


def train_single(config: GPTConfig, steps: int, batch_size: int, optimizer: str = "adamw",
                 lr: float = 2e-3, seed: int = 0, threads: int = 1) -> dict:
    """The reference: one process, the full global batch each step (:func:`course_lib.train.train_step`).
    Returns the final parameters as one vector and the per-step losses.

    ``threads`` intra-op threads (restored afterwards): 1 by default, like each rank, because a
    notebook kernel shares the cores with the ranks, and spinning threads on a busy machine slow
    everyone down.
    """
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        data = load_dataset()
        torch.manual_seed(seed)
        model = GPT(config)
        opt = make_optimizer(model, optimizer, lr=lr)
        gen = torch.Generator().manual_seed(seed)
        losses = []
        for _ in range(steps):
            x, y = get_batch(data.train, batch_size, config.block_size, gen)
            losses.append(train_step(model, opt, x, y))
        return {"params": flat_params(model), "losses": losses}
    finally:
        torch.set_num_threads(old)


def train_data_parallel(rank: int, world_size: int, config: GPTConfig, steps: int, batch_size: int,
                        impl: str = "course", bucket_cap_bytes: int = DEFAULT_BUCKET_CAP_BYTES,
                        overlap: bool = True, micro_batches: int = 1, optimizer: str = "adamw",
                        lr: float = 2e-3, seed: int = 0, warmup: int = 0) -> dict:
    """One rank of data-parallel training on its ``batch_size / world_size`` rows of each
    global batch (drawn exactly as :func:`train_single` draws them).

    ``impl``: ``"course"`` (:class:`BucketedDDP`), ``"torch"``
    (``torch.nn.parallel.DistributedDataParallel`` with the same bucket cap) or
    ``"torch+ring"`` (torch's DDP with :func:`ring_allreduce_hook`). The model is
    built with seed ``seed + rank`` on purpose: the initial broadcast must make the replicas equal.
    ``micro_batches`` > 1 accumulates gradients, communicating only on the last micro-batch.
    Returns final params, this rank's per-step losses (their mean over ranks is the
    full-batch loss), step times (after ``warmup`` untimed steps), the last step's
    :class:`StepTimeline`, this rank's comm counters of the timed steps and, for
    ``"torch+ring"``, the element count of each bucket the hook averaged in those steps.
    """
    if impl not in ("course", "torch", "torch+ring"):
        raise ValueError(f"impl must be 'course', 'torch' or 'torch+ring', got {impl!r}")
    local = batch_size // world_size
    if batch_size % world_size or local % micro_batches:
        raise ValueError(f"batch_size={batch_size} must split into world_size={world_size} ranks x "
                         f"micro_batches={micro_batches} equal parts; pick a multiple of {world_size * micro_batches}")
    data = load_dataset()
    torch.manual_seed(seed + rank)
    model = GPT(config)
    if impl == "course":
        ddp: nn.Module = BucketedDDP(model, bucket_cap_bytes, overlap=overlap)
    else:
        ddp = nn.parallel.DistributedDataParallel(model, bucket_cap_mb=bucket_cap_bytes / 2**20)
    hook_buckets: list[int] = []  # element count of each bucket the ring hook averaged
    if impl == "torch+ring":
        ddp.register_comm_hook(hook_buckets, ring_allreduce_hook)
    opt = make_optimizer(model, optimizer, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    losses, times = [], []
    for step in range(warmup + steps):
        if step == warmup:
            comm.reset_stats()
            hook_buckets.clear()
        x, y = get_batch_shard(data.train, batch_size, config.block_size, gen, rank, world_size)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for m in range(micro_batches):
            rows = slice(m * local // micro_batches, (m + 1) * local // micro_batches)
            # The last micro-batch communicates; the others only accumulate locally.
            ctx = ddp.no_sync() if m < micro_batches - 1 else contextlib.nullcontext()
            with ctx:
                _, loss = ddp(x[rows], y[rows])
                (loss / micro_batches).backward()
            total += loss.item() / micro_batches
        opt.step()
        if step >= warmup:
            times.append(time.perf_counter() - t0)
            losses.append(total)
    return {"params": flat_params(model), "losses": losses, "step_seconds": times,
            "timeline": getattr(ddp, "timeline", None), "comm": comm.get_stats(), "hook_buckets": hook_buckets}
