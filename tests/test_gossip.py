"""Gossip / D-PSGD: mixing matrices, complete-graph gossip = all-reduce average, exact bytes,
consensus, bad input."""
from __future__ import annotations

import math

import pytest
import torch

from course_lib import comm
from course_lib.gossip import (check_mixing_matrix, complete_mixing_matrix, consensus_distance,
                               expected_bytes_per_step, gossip_mix, ring_all_reduce_mean, ring_mixing_matrix,
                               ring_spectral_gap, spectral_gap)
from course_lib.launcher import launch
from course_lib.parameter_server import LeastSquares
from course_lib.runs.gossip import train_decentralized


def _mix_worker(rank, world_size, how):
    x = torch.arange(12.0) * (rank + 1) + rank
    if how == "complete":
        y = gossip_mix(x, complete_mixing_matrix(world_size), rank)
    elif how == "ring":
        y = gossip_mix(x, ring_mixing_matrix(world_size), rank)
    elif how == "ring_all_reduce":
        y = ring_all_reduce_mean(x)
    else:
        y = x.clone()
        comm.all_reduce(y)
        y /= world_size
    st = comm.get_stats()
    return y, st.sent_bytes, st.recv_bytes


@pytest.mark.parametrize("p", [2, 4])
def test_complete_graph_gossip_equals_all_reduce_average(p):
    ref = launch(_mix_worker, p, how="all_reduce")
    runs = {how: launch(_mix_worker, p, how=how) for how in ("complete", "ring_all_reduce")}
    for out in runs.values():
        for r in range(p):
            torch.testing.assert_close(out[r][0], ref[r][0])
    nbytes = 12 * 4
    out = runs["complete"]
    assert all(o[1] == o[2] == (p - 1) * nbytes for o in out)
    out = runs["ring_all_reduce"]
    assert all(o[1] == o[2] == expected_bytes_per_step(p, 12, "ring_all_reduce") for o in out)


def test_ring_gossip_values_and_bytes():
    p = 5
    out = launch(_mix_worker, p, how="ring")
    xs = [torch.arange(12.0) * (r + 1) + r for r in range(p)]
    for r in range(p):
        torch.testing.assert_close(out[r][0], (xs[r - 1] + xs[r] + xs[(r + 1) % p]) / 3)
        assert out[r][1] == out[r][2] == expected_bytes_per_step(p, 12, "gossip_ring")


def test_mixing_matrices():
    for n in (3, 4, 8, 32):
        W = ring_mixing_matrix(n)
        check_mixing_matrix(W)
        assert math.isclose(spectral_gap(W), ring_spectral_gap(n), rel_tol=1e-9)
    assert math.isclose(spectral_gap(complete_mixing_matrix(6)), 1.0)
    assert spectral_gap(ring_mixing_matrix(32)) < 0.02  # Theta(1/n^2): big rings mix slowly


def test_bad_mixing_matrix():
    W = ring_mixing_matrix(4)
    W[0] = torch.tensor([0.7, 0.1, 0.1, 0.1], dtype=W.dtype)  # rows still sum to 1, columns do not
    with pytest.raises(ValueError, match="not doubly stochastic"):
        check_mixing_matrix(W)
    with pytest.raises(ValueError, match="rows of W sum to"):
        check_mixing_matrix(ring_mixing_matrix(4) * 2)
    with pytest.raises(ValueError, match="square"):
        check_mixing_matrix(torch.ones(2, 3) / 3)
    with pytest.raises(ValueError, match="n >= 3"):
        ring_mixing_matrix(2)
    with pytest.raises(ValueError, match="cannot start from different ones"):
        train_decentralized(0, 2, LeastSquares(), 1, 0.1, "allreduce", init_noise=1.0)


def test_dpsgd_consensus_and_convergence():
    p, steps = 4, 30
    prob = LeastSquares()
    g = launch(train_decentralized, p, problem=prob, steps=steps, lr=0.05, algorithm="gossip", measure_every=5,
               init_noise=1.0)
    a = launch(train_decentralized, p, problem=prob, steps=steps, lr=0.05, algorithm="allreduce", measure_every=5)
    cons = [d for _, d in g[0]["consensus"]]
    assert cons[-1] < 0.01 * cons[0]                    # mixing contracts the disagreement
    assert all(d < 1e-10 for _, d in a[0]["consensus"])  # all-reduce replicas stay identical
    assert g[0]["avg_loss"][-1][1] < 0.2 * g[0]["avg_loss"][0][1]
    assert g[0]["avg_loss"][-1][1] < 2 * a[0]["avg_loss"][-1][1] + 0.05
    for r in range(p):
        assert g[r]["p2p_sent"] == steps * expected_bytes_per_step(p, 16, "gossip_ring")
        assert a[r]["p2p_sent"] == steps * expected_bytes_per_step(p, 16, "ring_all_reduce")
    assert consensus_distance([torch.ones(3), torch.ones(3)]) == 0.0
