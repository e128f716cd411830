"""Parameter server on real gloo ranks: BSP equals single-process SGD, bytes match the formulas,
SSP respects its staleness bound, sharded servers, bad input."""
from __future__ import annotations

import pytest
import torch

from course_lib.data import load_dataset
from course_lib.launcher import WorkerError, launch
from course_lib.model import GPT
from course_lib.parameter_server import (GPTProblem, LeastSquares, expected_bytes, gather_params, run_ps,
                                         sgd_reference, shard_bounds)
from course_lib.ssp import SSPBook, on_push, staleness_bound
from course_lib.train import make_optimizer
from course_lib.configs import small_config
from course_lib.update_rules import flat_params, step_batch

# Several fp32 steps: per-step gradient rounding differences (~1e-7 relative) compound a little.
ATOL, RTOL = 1e-5, 1e-4


def test_sync_ps_equals_single_process_sgd_on_gpt():
    """3 workers + 1 server, 4 SGD steps on the GPT vs. a plain single-process torch.optim loop."""
    steps, lr, B = 4, 0.5, 12
    prob = GPTProblem(batch_size=B)
    res = launch(run_ps, 4, problem=prob, steps=steps, lr=lr, mode="sync")
    data = load_dataset()
    torch.manual_seed(0)
    model = GPT(small_config(data.vocab_size))
    opt = make_optimizer(model, "sgd", lr=lr)
    for t in range(steps):
        x, y = step_batch(data.train, B, model.config.block_size, 0, t)
        model.zero_grad()
        model(x, y)[1].backward()
        opt.step()
    w_ps, w_ref = gather_params(res), flat_params(model)
    assert not torch.allclose(w_ps, prob.init())  # it did train
    torch.testing.assert_close(w_ps, w_ref, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("n_servers,n_workers,optimizer", [(1, 4, "sgd"), (2, 3, "adamw")])
def test_sync_ps_matches_reference_and_byte_formula(n_servers, n_workers, optimizer):
    prob, steps = LeastSquares(dim=20), 5
    res = launch(run_ps, n_servers + n_workers, problem=prob, steps=steps, lr=0.05, mode="sync", n_servers=n_servers,
                 optimizer=optimizer)
    torch.testing.assert_close(gather_params(res, n_servers), sgd_reference(prob, steps, 0.05, optimizer),
                               atol=ATOL, rtol=RTOL)
    want = expected_bytes(n_workers, 20, n_servers, steps)
    for j in range(n_servers):
        assert res[j]["stats"]["sent"] == res[j]["stats"]["recv"] == want["server"]
    for k in range(n_workers):
        st = res[n_servers + k]["stats"]
        assert st["sent"] == st["recv"] == want["worker"] and st["collective"] == 0


def test_server_bytes_grow_linearly_with_workers():
    per_step = []
    for W in (1, 2, 4):
        res = launch(run_ps, 1 + W, problem=LeastSquares(dim=32), steps=2, lr=0.05, mode="sync")
        per_step.append(res[0]["stats"]["recv"] / 2)
    assert per_step == [W * 4 * 32 for W in (1, 2, 4)]


@pytest.mark.parametrize("s", [0, 1, 3])
def test_ssp_respects_staleness_bound(s):
    W, steps = 3, 10
    res = launch(run_ps, 1 + W, problem=LeastSquares(), steps=steps, lr=0.05, mode="ssp", s=s,
                 delays=[0.0, 0.0, 0.004])
    book = res[0]["book"]
    assert len(book.staleness) == W * steps and book.clock == [steps] * W
    assert max(book.staleness) <= staleness_bound(W, s)
    assert book.max_gap <= s
    for k in range(W):
        assert res[1 + k]["stats"]["sent"] == steps * 4 * 16  # one gradient per step, like sync


def test_async_records_staleness_and_converges():
    W, steps = 3, 15
    res = launch(run_ps, 1 + W, problem=LeastSquares(), steps=steps, lr=0.05, mode="async",
                 delays=[0.0, 0.0, 0.005])
    book = res[0]["book"]
    assert len(book.staleness) == W * steps and min(book.staleness) >= 0
    assert max(book.staleness) >= 2  # the slow worker's gradients are computed on old versions
    hist = res[0]["history"]
    assert hist[-1][2] < 0.25 * hist[0][2]


def test_on_push_by_hand():
    book = SSPBook(2, s=0)
    assert on_push(book, 0) == []          # worker 0 is one clock ahead of worker 1: waits
    assert on_push(book, 1) == [0, 1]      # both at clock 1: both go on, pulling version 2
    assert book.staleness == [0, 1] and book.pulled == [2, 2]


def test_bad_input():
    with pytest.raises(ValueError, match="staleness bound s must be"):
        SSPBook(2, s=-1)
    with pytest.raises(ValueError, match="at least one worker"):
        run_ps(0, 1, problem=LeastSquares(), steps=1, lr=0.1)
    with pytest.raises(ValueError, match="needs the staleness bound"):
        run_ps(0, 3, problem=LeastSquares(), steps=1, lr=0.1, mode="ssp")
    with pytest.raises(ValueError, match="one server"):
        run_ps(0, 4, problem=LeastSquares(), steps=1, lr=0.1, mode="async", n_servers=2)
    with pytest.raises(ValueError, match="mode must be"):
        run_ps(0, 3, problem=LeastSquares(), steps=1, lr=0.1, mode="hogwild")
    with pytest.raises(ValueError, match="n_servers"):
        shard_bounds(3, 5)
    with pytest.raises(WorkerError, match="divisible by the 5 workers"):
        launch(run_ps, 6, problem=LeastSquares(batch=24), steps=1, lr=0.1)
