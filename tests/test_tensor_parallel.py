"""Tensor parallelism (chapter 5): the TP GPT equals the single-process GPT at degrees 1, 2, 4,
sends exactly the bytes of the formula per stage, holds the parameters and activations of the
formula, and equals PyTorch's own tensor parallelism on the same weights.

Tolerances (float32): logits and loss 1e-5, every gradient 1e-6 at step 0; after 20 AdamW
steps every parameter 5e-5 (Adam divides by sqrt(v), which magnifies rounding-level gradient
differences of small-gradient coordinates up to ~lr per step).
"""
from __future__ import annotations

import dataclasses

import pytest
import torch

from course_lib import comm
from course_lib.configs import tp_config
from course_lib.data import load_dataset
from course_lib.launcher import launch
from course_lib.model import GPT
from course_lib.runs.tensor_parallel import compare_torch_tp, compare_tp
from course_lib.sequence_parallel import ring_wire_bytes
from course_lib.tensor_parallel import (comm_bytes_per_layer, copy_to_tp, param_count_per_rank, reduce_from_tp,
                                        shard, vocab_parallel_cross_entropy, vocab_range)
from course_lib.tp_gpt import TensorParallelGPT, activation_bytes_per_block

VOCAB = load_dataset().vocab_size  # 46: not divisible by 4, so the vocabulary splits unevenly
CFG = tp_config(VOCAB)
B = 8


def _check_against_reference(res, t: int, sp: bool) -> None:
    for r, out in enumerate(res):
        d = out["max_diff"]
        assert d["logits"] < 1e-5 and d["loss"] < 1e-5, (r, d)
        assert d["grads"] < 1e-6, (r, {k: v for k, v in d["grad_by_param"].items() if v >= 1e-6})
        assert d["params_after"] < 5e-5 and d["loss_curve"] < 1e-5, (r, d)
        assert len(out["losses_tp"]) == 20
        assert out["params"] == out["params_formula"] == param_count_per_rank(CFG, t, r)["total"]
        assert out["act_bytes_per_block"] == activation_bytes_per_block(CFG, B, CFG.block_size, t, sp)
    # every rank computed the same loss curve
    assert all(out["losses_tp"] == res[0]["losses_tp"] for out in res)


@pytest.mark.parametrize("t", [1, 2, 4])
def test_tp_gpt_matches_reference_and_formula_bytes(t):
    res = launch(compare_tp, t, config=CFG, batch_size=B, steps=20, lr=1e-3, timeout=180, threads=1)
    _check_against_reference(res, t, sp=False)
    want = comm_bytes_per_layer(CFG, B, t)
    for out in res:
        c = out["comm"]
        for i in range(CFG.n_layer):
            assert c[f"block{i}_fwd"]["bytes"] == want["block_fwd"]
            assert c[f"block{i}_bwd"]["bytes"] == want["block_bwd"]
            assert set(c[f"block{i}_fwd"]["calls"]) <= {"all_reduce"}
            assert c[f"block{i}_fwd"]["calls"].get("all_reduce", 0) == (2 if t > 1 else 0)
        for stage in ("embed_fwd", "embed_bwd", "head_fwd", "head_bwd"):
            assert c[stage]["bytes"] == want[stage], stage
        assert c["finish_grads"]["bytes"] == 0  # no weight gradient ever crosses ranks


@pytest.mark.parametrize("t", [2, 4])
def test_sequence_parallel_matches_reference_same_traffic_less_memory(t):
    res = launch(compare_tp, t, config=CFG, batch_size=B, steps=20, lr=1e-3, sequence_parallel=True,
                 timeout=180, threads=1)
    _check_against_reference(res, t, sp=True)
    N = 4 * B * CFG.block_size * CFG.n_embd  # bytes of one (B, T, C) activation
    for out in res:
        c = out["comm"]["block0_fwd"]
        # 2 all-gathers (input: this rank's N/t) and 2 reduce-scatters (input: N) per block
        assert c["calls"] == {"all_gather_into_tensor": 2, "reduce_scatter_tensor": 2}
        assert c["by_op"] == {"all_gather_into_tensor": 2 * N // t, "reduce_scatter_tensor": 2 * N}
        sp_wire = 2 * ring_wire_bytes("all_gather", N, t) + 2 * ring_wire_bytes("reduce_scatter", N, t)
        assert sp_wire == 2 * ring_wire_bytes("all_reduce", N, t)  # the same traffic as TP's 2 all-reduces
    assert activation_bytes_per_block(CFG, B, CFG.block_size, t, True) < \
        activation_bytes_per_block(CFG, B, CFG.block_size, t, False)


def test_same_as_pytorch_tensor_parallel():
    for t in (2, 4):
        res = launch(compare_torch_tp, t, config=CFG, batch_size=B, timeout=180, threads=1)
        for out in res:
            b = out["blocks"]
            assert b["logits_vs_ref"] < 1e-5 and b["loss_vs_ref"] < 1e-5 and b["grads_vs_ref"] < 1e-6
            assert b["logits_vs_course"] < 1e-5 and b["grads_vs_course"] < 1e-6
            assert "blocks.0.mlp.down_proj.weight" in b["sharded"]
            assert out["loss_parallel"]["loss_vs_ref"] < 1e-5 and out["loss_parallel"]["grads_vs_ref"] < 1e-6
            assert "mixed torch.Tensor and DTensor" in out["without_loss_parallel"]


def _operators(rank, world_size):
    """f and g on their own: values, gradients and the collectives of each pass."""
    x = torch.arange(4.0, requires_grad=True)
    comm.reset_stats()
    y = copy_to_tp(x)
    f_fwd = dict(comm.get_stats().collective_calls)
    (y * (rank + 1)).sum().backward()
    f_bwd = dict(comm.get_stats().collective_calls)
    z = torch.full((4,), float(rank + 1), requires_grad=True)
    comm.reset_stats()
    s = reduce_from_tp(z)
    g_fwd = dict(comm.get_stats().collective_calls)
    (s * 2).sum().backward()
    return dict(y=y.detach(), dx=x.grad, f_fwd=f_fwd, f_bwd=f_bwd, s=s.detach(), dz=z.grad,
                g_fwd=g_fwd, g_total=dict(comm.get_stats().collective_calls), z_after=z.detach())


def test_f_and_g_are_conjugate():
    t = 2
    for r, out in enumerate(launch(_operators, t, threads=1)):
        assert torch.equal(out["y"], torch.arange(4.0)) and out["f_fwd"] == {}
        assert torch.equal(out["dx"], torch.full((4,), 3.0)) and out["f_bwd"] == {"all_reduce": 1}
        assert torch.equal(out["s"], torch.full((4,), 3.0)) and out["g_fwd"] == {"all_reduce": 1}
        assert torch.equal(out["dz"], torch.full((4,), 2.0)) and out["g_total"] == {"all_reduce": 1}
        assert torch.equal(out["z_after"], torch.full((4,), float(r + 1)))  # g did not overwrite its input


def test_shards_cover_the_weight_and_uneven_vocab():
    w = torch.arange(24.0).view(4, 6)
    assert torch.equal(torch.cat([shard(w, 0, r, 2) for r in range(2)]), w)
    assert torch.equal(torch.cat([shard(w, 1, r, 3) for r in range(3)], dim=1), w)
    assert [vocab_range(46, r, 4) for r in range(4)] == [(0, 12), (12, 24), (24, 35), (35, 46)]
    with pytest.raises(ValueError, match="does not split into 4 equal shards"):
        shard(w, 1, 0, 4)


def test_bad_degree_and_dropout_say_what_to_do():
    model = GPT(CFG)
    with pytest.raises(ValueError, match="n_head=4 is not divisible by t=3"):
        TensorParallelGPT(model, 0, 3)
    with pytest.raises(ValueError, match="dropout"):
        TensorParallelGPT(GPT(dataclasses.replace(CFG, dropout=0.1)), 0, 2)
    with pytest.raises(TypeError, match="expected a course_lib.model.GPT"):
        TensorParallelGPT(torch.nn.Linear(2, 2), 0, 2)
    with pytest.raises(ValueError, match="must be targets"):
        vocab_parallel_cross_entropy(torch.zeros(2, 3, 4), torch.zeros(2, 4, dtype=torch.long), 0)


def test_param_formula_sums_to_the_model():
    """Sharded parameters summed over ranks + replicated ones once = the GPT's parameters."""
    for t in (1, 2, 4):
        counts = [param_count_per_rank(CFG, t, r) for r in range(t)]
        assert sum(c["sharded"] for c in counts) + counts[0]["replicated"] == GPT(CFG).num_params()


def test_step_prediction_is_its_formula():
    """``bench.tp.predict_step``: (C_t + O_t) max(1, t/cores) + (4L+2) A_t(4BTC) + 3 A_t(4BT), from
    given measurements (no timing here); a flat all-reduce curve fits as pure latency, a
    straight one gives back its alpha and beta."""
    from course_lib.alpha_beta import AlphaBeta
    from course_lib.bench.tp import core_share, fit_all_reduce, predict_step

    a = AlphaBeta(alpha=1e-4, beta=1e-9)
    act, tok = 4 * B * CFG.block_size * CFG.n_embd, 4 * B * CFG.block_size
    comm_s = (4 * CFG.n_layer + 2) * (1e-4 + act * 1e-9) + 3 * (1e-4 + tok * 1e-9)
    p = predict_step(CFG, B, 4, compute_s=0.01, optimizer_s=0.002, all_reduce=a, cores=2)
    assert p["compute_s"] == pytest.approx(0.02) and p["optimizer_s"] == pytest.approx(0.004)  # 2 ranks per core
    assert p["comm_s"] == pytest.approx(comm_s) and p["total_s"] == pytest.approx(0.024 + comm_s)
    p2 = predict_step(CFG, B, 2, compute_s=0.01, optimizer_s=0.002, all_reduce=a, cores=2)
    assert p2["compute_s"] == pytest.approx(0.01) and p2["comm_s"] == pytest.approx(comm_s)  # a core each
    sp = predict_step(CFG, B, 2, 0.01, 0.002, a, 2, sequence_parallel=True)
    assert sp["comm_s"] == pytest.approx(comm_s + 1e-4 + 4 * param_count_per_rank(CFG, 2)["replicated"] * 1e-9)
    assert predict_step(CFG, B, 1, 0.01, 0.002, None, 2)["total_s"] == pytest.approx(0.012)
    with pytest.raises(ValueError, match="pass all_reduce"):
        predict_step(CFG, B, 2, 0.01, 0.002, None, 2)
    assert (core_share(1, 2), core_share(2, 2), core_share(4, 2), core_share(3, 1)) == (1.0, 1.0, 2.0, 3.0)
    ts = [2e-3, 1.5e-3, 1e-3]  # slower for the smaller messages: latency-bound, beta would be < 0
    flat = fit_all_reduce([4096, 65536, 262144], ts)
    assert flat.beta == 0 and flat.alpha == pytest.approx(sum(1 / x for x in ts) / sum(1 / x ** 2 for x in ts))
    line = fit_all_reduce([4096, 65536, 1 << 20], [1e-4 + n * 1e-9 for n in (4096, 65536, 1 << 20)])
    assert line.alpha == pytest.approx(1e-4) and line.beta == pytest.approx(1e-9)
