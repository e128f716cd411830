"""Training driver for chapter 2's decentralised SGD: one node of D-PSGD (:mod:`course_lib.gossip`)
or of all-reduce SGD, on a problem of :mod:`course_lib.parameter_server`."""
from __future__ import annotations

import torch

from course_lib import comm
from course_lib.gossip import (check_mixing_matrix, consensus_distance, gossip_mix, ring_all_reduce_mean,
                              ring_mixing_matrix)


def train_decentralized(rank: int, world_size: int, problem, steps: int, lr: float,
                        algorithm: str = "gossip", W: torch.Tensor | None = None,
                        measure_every: int = 1, init_noise: float = 0.0) -> dict:
    """Launchable: D-PSGD (``algorithm="gossip"``, ring W by default) or all-reduce SGD
    (``"allreduce"``, replicas stay identical) with plain SGD, node i using shard i of each
    global batch of ``problem`` (see :mod:`course_lib.parameter_server`); the mixing is
    :func:`course_lib.gossip.gossip_mix`.

    ``init_noise``: start each node from ``w_0 + noise * N(0, 1)`` (seeded by rank) so the
    consensus distance is visible from step 0. Every ``measure_every`` steps the replicas are
    all-gathered (counted as a collective, apart from the p2p bytes of the algorithm itself)
    to record the consensus distance and the loss of the average model.
    Returns ``{"losses", "consensus": [(step, d)], "avg_loss": [(step, loss)], "p2p_sent",
    "x": final local model}``.
    """
    if algorithm not in ("gossip", "allreduce"):
        raise ValueError(f"algorithm must be 'gossip' or 'allreduce', got {algorithm!r}")
    if algorithm == "allreduce" and init_noise:
        raise ValueError("all-reduce SGD keeps identical replicas and never averages models, so it "
                         "cannot start from different ones: use init_noise=0 with algorithm='allreduce'")
    if algorithm == "gossip":
        W = ring_mixing_matrix(world_size) if W is None else W
        check_mixing_matrix(W)
        if W.shape[0] != world_size:
            raise ValueError(f"W is {W.shape[0]}x{W.shape[0]} but there are {world_size} ranks")
    x = problem.init()
    if init_noise:
        x = x + init_noise * torch.randn(x.shape, generator=torch.Generator().manual_seed(100 + rank))
    losses, consensus, avg_loss = [], [], []

    def measure(t: int) -> None:
        xs = [torch.empty_like(x) for _ in range(world_size)]
        comm.all_gather(xs, x)
        consensus.append((t, consensus_distance(xs)))
        if rank == 0:
            avg_loss.append((t, problem.loss(torch.stack(xs).mean(0))))

    for t in range(steps):
        if measure_every and t % measure_every == 0:
            measure(t)
        loss, g = problem.grad(x, t, rank, world_size)  # gradient at the *old* local model
        if algorithm == "gossip":
            x = gossip_mix(x, W, rank) - lr * g
        else:
            x = x - lr * ring_all_reduce_mean(g)
        losses.append(loss)
    measure(steps)
    return dict(losses=losses, consensus=consensus, avg_loss=avg_loss, x=x,
                p2p_sent=comm.get_stats().sent_bytes, p2p_recv=comm.get_stats().recv_bytes)
