"""Training driver for chapter 4's ZeRO: one rank of a GPT trained with :func:`course_lib.zero.ZeRO`."""
from __future__ import annotations

import time

import torch

from course_lib import comm
from course_lib.data import get_batch_shard, load_dataset
from course_lib.model import GPT
from course_lib.zero import ZeRO


def train_zero(rank: int, world_size: int, config, stage: int, steps: int, batch_size: int, lr: float = 2e-3,
               seed: int = 0, measure_at: int = 2) -> dict:
    """One rank of ZeRO training on its shard of each global batch (as :func:`course_lib.runs.data_parallel.train_single`).

    Returns the final parameters, the local losses, the model-state bytes held after the
    backward of step ``measure_at`` (params, grads and optimizer state all alive), the
    communication volume per step in Psi (setup broadcast excluded), and ``psi``.
    """
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


def volume_in_psi(stats: comm.CommStats, psi: int, world_size: int, steps: int = 1, elem_bytes: int = 4) -> float:
    """Per-step communication volume in units of Psi, the paper's convention (sec. 7): an
    all-reduce of N elements counts 2N (its reduce-scatter + all-gather halves), a
    reduce-scatter N (its input), an all-gather N (its output = p x its input)."""
    b = stats.collective_bytes
    total = (2 * b["all_reduce"] + b["reduce_scatter_tensor"] + world_size * b["all_gather_into_tensor"])
    return total / elem_bytes / psi / steps
