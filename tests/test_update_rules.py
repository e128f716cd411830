"""Update rules: data-parallel equivalence on the GPT with 1, 2 and 4 real ranks, where it breaks,
gradient accumulation, learning-rate scaling, and bad input."""
from __future__ import annotations

import pytest
import torch

from course_lib.data import load_dataset
from course_lib.launcher import launch
from course_lib.model import GPT
from course_lib.configs import reference_config, small_config
from course_lib.update_rules import (accumulated_grad, batch_grad, bn_grads_full_vs_shards, combine_shard_grads,
                                     dp_gradient_worker, flat_params, linear_scaled_lr, rel_err, set_flat_params,
                                     sgd_update, step_batch, warmup_lr)

# fp32 sums in a different order (per-shard means, then an all-reduce) differ from the
# full-batch sum in the last bits: ||diff|| / ||g|| ~ 1e-7 measured; 1e-5 leaves margin and is
# still 4 orders below the errors the wrong rules make (>= 1e-2 below).
TOL = 1e-5


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


@pytest.fixture(scope="module")
def setup():
    data = load_dataset()
    cfg = small_config(data.vocab_size)
    torch.manual_seed(0)
    model = GPT(cfg)
    x, y = step_batch(data.train, 16, cfg.block_size, 0, 0)
    return data, cfg, model, x, y


def test_flat_roundtrip(setup):
    _, _, model, _, _ = setup
    w = flat_params(model)
    assert w.numel() == model.num_params()
    set_flat_params(model, w * 2)
    assert torch.equal(flat_params(model), w * 2)
    set_flat_params(model, w)
    with pytest.raises(ValueError, match="1-D tensor of the model's"):
        set_flat_params(model, w[:-1])


@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_data_parallel_grad_equals_full_batch_on_gpt(world_size):
    """The reference GPT (207k parameters), one global batch of 16 split over 1, 2, 4 real ranks."""
    data = load_dataset()
    cfg = reference_config(data.vocab_size)
    torch.manual_seed(0)
    x, y = step_batch(data.train, 16, cfg.block_size, 0, 0)
    _, full = batch_grad(GPT(cfg), x, y)
    grads = launch(dp_gradient_worker, world_size, config=cfg, batch_size=16)
    for r, g in enumerate(grads):
        assert rel_err(g, full) < TOL, (world_size, r, rel_err(g, full))
    assert all(torch.equal(g, grads[0]) for g in grads)  # every replica gets the same bits


def test_where_equivalence_breaks(setup):
    _, _, model, x, y = setup
    _, full = batch_grad(model, x, y)
    # unequal shards: 12 + 4 rows. The plain mean of means is wrong, the b_k/B weighting is exact.
    parts = [(x[:12], y[:12]), (x[12:], y[12:])]
    g = [batch_grad(model, a, b)[1] for a, b in parts]
    assert rel_err(combine_shard_grads(g, [12, 4], "weighted"), full) < TOL
    assert rel_err(combine_shard_grads(g, [12, 4], "mean"), full) > 1e-2
    # all-reduce SUM without / P: exactly P times the gradient
    g4 = [batch_grad(model, x[4 * k:4 * k + 4], y[4 * k:4 * k + 4])[1] for k in range(4)]
    assert rel_err(combine_shard_grads(g4, [4] * 4, "sum"), 4 * full) < TOL
    # a summed loss: the gradient is B*T times the mean loss's
    _, gsum = batch_grad(model, x, y, reduction="sum")
    assert rel_err(gsum, x.numel() * full) < TOL
    # batch statistics: per-shard BatchNorm is not the full-batch computation
    full_bn, shards_bn = bn_grads_full_vs_shards(4)
    assert rel_err(shards_bn, full_bn) > 1e-2
    full_bn1, shards_bn1 = bn_grads_full_vs_shards(1)
    assert rel_err(shards_bn1, full_bn1) < TOL


def test_gradient_accumulation_equals_full_batch(setup):
    _, _, model, x, y = setup
    _, full = batch_grad(model, x, y)
    for m in (1, 2, 4, 8):
        assert rel_err(accumulated_grad(model, x, y, m), full) < TOL
    with pytest.raises(ValueError, match="must divide the batch size 16"):
        accumulated_grad(model, x, y, 3)


def test_lr_rules_and_sgd():
    assert linear_scaled_lr(0.1, 256, 1024) == pytest.approx(0.4)
    assert [warmup_lr(t, 1.0, 4) for t in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert torch.equal(sgd_update(torch.ones(3), torch.ones(3), 0.5), torch.full((3,), 0.5))
    with pytest.raises(ValueError, match="learning rate must be positive"):
        sgd_update(torch.ones(3), torch.ones(3), 0.0)
    with pytest.raises(ValueError, match="same shape"):
        sgd_update(torch.ones(3), torch.ones(2), 0.1)
    with pytest.raises(ValueError, match="rule must be"):
        combine_shard_grads([torch.ones(2)], [1], "median")
    with pytest.raises(ValueError, match="one size per gradient"):
        combine_shard_grads([torch.ones(2)], [1, 2])
