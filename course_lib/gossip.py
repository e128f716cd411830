"""Decentralized parallel SGD (D-PSGD, Lian et al. 2017, NeurIPS) on real ranks.

No server: node i keeps its own model ``x_i`` and, every step, averages it with its graph
neighbours through a mixing matrix W while taking a local gradient step:

    x_i^{t+1} = sum_j W_ij x_j^t  -  gamma grad F_i(x_i^t; xi_i^t)

W must be non-negative, ``W_ij > 0`` only between neighbours, and **doubly stochastic**
(``W 1 = 1``: each node takes a weighted average; ``1^T W = 1^T``: the average of all models is
preserved by mixing). Mixing shrinks the disagreement by ``rho = max(|lambda_2|, |lambda_n|)``
per step (Boyd et al. 2006, "Randomized gossip algorithms"); on a ring with weights 1/3,
``1 - rho = (2/3)(1 - cos(2 pi / n))``, i.e. Theta(1/n^2): big rings mix slowly.

Bytes per step per node: the ring sends its model to 2 neighbours, ``2 * 4 Psi``, independent
of n; ring all-reduce sends ``2 (n-1)/n * 4 Psi``; a single parameter server's link carries
``n * 4 Psi`` each way. The consensus distance ``(1/n) sum_i ||x_i - xbar||^2`` measures how far
the replicas drift apart (0 for all-reduce SGD, whose replicas stay identical).
"""
from __future__ import annotations

import math

import torch

from course_lib import comm
from course_lib.collectives import ring_all_reduce


# ----------------------------------------------------------------------------- mixing matrices
def ring_mixing_matrix(n: int) -> torch.Tensor:
    """``W_ii = W_{i,i-1} = W_{i,i+1} = 1/3`` (n >= 3): symmetric and doubly stochastic."""
    if n < 3:
        raise ValueError(f"a ring with distinct left and right neighbours needs n >= 3 nodes, got {n}; "
                         "for 2 nodes use complete_mixing_matrix(2)")
    W = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        for j in (i - 1, i, i + 1):
            W[i, j % n] = 1 / 3
    return W


def complete_mixing_matrix(n: int) -> torch.Tensor:
    """``W = 1 1^T / n``: every node averages all models; one gossip step = the exact average."""
    if n < 1:
        raise ValueError(f"need n >= 1 nodes, got {n}")
    return torch.full((n, n), 1 / n, dtype=torch.float64)


def check_mixing_matrix(W: torch.Tensor, atol: float = 1e-9) -> None:
    """Raise ``ValueError`` unless W is square, non-negative and doubly stochastic."""
    if not isinstance(W, torch.Tensor) or W.dim() != 2 or W.shape[0] != W.shape[1]:
        shape = tuple(W.shape) if isinstance(W, torch.Tensor) else type(W).__name__
        raise ValueError(f"W must be a square (n, n) tensor, got {shape}")
    if (W < -atol).any():
        raise ValueError("W has negative entries; mixing weights must be >= 0")
    rows, cols = W.sum(1), W.sum(0)
    if not torch.allclose(rows, torch.ones_like(rows), atol=atol):
        raise ValueError(f"rows of W sum to {rows.tolist()}, not 1: each node must take a weighted "
                         "*average* of its neighbours' models")
    if not torch.allclose(cols, torch.ones_like(cols), atol=atol):
        raise ValueError(f"columns of W sum to {cols.tolist()}, not 1: W is not doubly stochastic, so "
                         "mixing does not preserve the average model and D-PSGD converges to a biased point")


def spectral_gap(W: torch.Tensor) -> float:
    """``1 - rho`` with ``rho = max(|lambda_2|, |lambda_n|)``: how much one mixing step shrinks
    the disagreement between nodes (1 for the complete graph, Theta(1/n^2) for a ring)."""
    check_mixing_matrix(W)
    lam = torch.linalg.eigvals(W).abs().sort(descending=True).values
    return 1.0 - (lam[1].item() if len(lam) > 1 else 0.0)


def ring_spectral_gap(n: int) -> float:
    """Closed form of ``1 - rho`` for the 1/3-ring: ``(2/3)(1 - cos(2 pi / n))`` (n >= 3)."""
    return (2 / 3) * (1 - math.cos(2 * math.pi / n))


# ----------------------------------------------------------------------------- communication
def gossip_mix(x: torch.Tensor, W: torch.Tensor, rank: int) -> torch.Tensor:
    """``sum_j W[rank, j] x_j``: receive from every j with ``W[rank, j] > 0``, send ``x`` to every
    j with ``W[j, rank] > 0`` (comm.isend / comm.irecv, all at once, so nobody waits in a cycle)."""
    n = W.shape[0]
    if not 0 <= rank < n:
        raise ValueError(f"rank {rank} is not a node of the {n}x{n} mixing matrix")
    got = {j: torch.empty_like(x) for j in range(n) if j != rank and W[rank, j] > 0}
    reqs = [comm.irecv(buf, j) for j, buf in got.items()]
    reqs += [comm.isend(x, j) for j in range(n) if j != rank and W[j, rank] > 0]
    for r in reqs:
        r.wait()
    out = float(W[rank, rank]) * x
    for j, buf in got.items():
        out += float(W[rank, j]) * buf
    return out


def ring_all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """The mean of ``x`` over ranks by chapter 3's bandwidth-optimal ring
    (:func:`course_lib.collectives.ring_all_reduce`, Patarasuk & Yuan 2009), on a copy.

    Each rank sends ``2 (p-1)/p`` of the vector, counted exactly by comm's point-to-point counters.
    """
    return ring_all_reduce(x.clone(), op="avg")


def consensus_distance(xs: torch.Tensor | list[torch.Tensor]) -> float:
    """``(1/n) sum_i ||x_i - xbar||^2`` over the n replicas (rows of ``xs``)."""
    X = torch.stack(list(xs)) if isinstance(xs, (list, tuple)) else xs
    return (X - X.mean(0)).pow(2).sum(1).mean().item()


def expected_bytes_per_step(n: int, n_params: int, algorithm: str) -> float:
    """Bytes one node sends per step for float32: ``"gossip_ring"`` ``2 * 4 Psi``;
    ``"ring_all_reduce"`` ``2 (n-1)/n * 4 Psi``; ``"ps_server"`` ``n * 4 Psi``; ``"ps_worker"`` ``4 Psi``."""
    b = 4 * n_params
    table = {"gossip_ring": 2 * b, "ring_all_reduce": 2 * (n - 1) / n * b, "ps_server": n * b, "ps_worker": b}
    if algorithm not in table:
        raise ValueError(f"algorithm must be one of {sorted(table)}, got {algorithm!r}")
    return table[algorithm]
