"""Tensor parallelism (chapter 5): the TP GPT equals the single-process GPT at degrees 1, 2, 4,
sends exactly the bytes of the formula per stage and per collective (plain TP and sequence
parallelism, forward and backward, every block), holds the parameters and activations of the
formula, and equals PyTorch's own tensor parallelism on the same weights.

Tolerances (float32): logits and loss 1e-5, every gradient 1e-6 at step 0; after 20 AdamW
steps every parameter 5e-5 (Adam divides by sqrt(v), which magnifies rounding-level gradient
differences of small-gradient coordinates up to ~lr per step). Against PyTorch: the same.

Every multi-rank check at one degree runs in ONE launch (:func:`_all_checks`), cached for the
module: a launch costs seconds, the checks themselves milliseconds.
"""
from __future__ import annotations

import dataclasses
import functools

import pytest
import torch

from course_lib import comm
from course_lib.alpha_beta import AlphaBeta
from course_lib.configs import tp_config
from course_lib.data import load_dataset
from course_lib.launcher import launch
from course_lib.model import GPT, MLP, CausalSelfAttention
from course_lib.runs.tensor_parallel import compare_torch_tp, compare_tp, measure_comm_per_stage, tp_with_dropout
from course_lib.sequence_parallel import ring_wire_bytes, seq_range
from course_lib.tensor_parallel import (AG, AR, RS, ColumnParallelLinear, KeyedDropout, ParallelAttention, ParallelMLP,
                                        RowParallelLinear, VocabParallelEmbedding, comm_bytes_by_op,
                                        comm_bytes_per_layer, copy_to_tp, param_count_per_rank, reduce_from_tp, shard,
                                        vocab_parallel_cross_entropy, vocab_range)
from course_lib.tp_gpt import TensorParallelGPT, activation_bytes_per_block
from course_lib.tp_step_time import core_share, fit_all_reduce, predict_step

VOCAB = load_dataset().vocab_size  # 46: not divisible by 4, so the vocabulary splits unevenly
CFG = tp_config(VOCAB)
DROPPED = dataclasses.replace(CFG, dropout=0.1)
B = 8


def _all_checks(rank, world_size):
    """Every multi-rank check of this file at degree ``world_size``, one after the other."""
    t = world_size
    out = dict(tp=compare_tp(rank, t, config=CFG, batch_size=B, steps=20, lr=1e-3),
               torch=compare_torch_tp(rank, t, config=CFG, batch_size=B),
               dropout_tp=tp_with_dropout(rank, t, config=DROPPED, batch_size=B))
    if t > 1:
        out["sp"] = compare_tp(rank, t, config=CFG, batch_size=B, steps=20, lr=1e-3, sequence_parallel=True)
        out["dropout_sp"] = tp_with_dropout(rank, t, config=DROPPED, batch_size=B, sequence_parallel=True)
    if t == 2:
        out["operators"] = _operators(rank, t)
        out["measured_sp"] = measure_comm_per_stage(rank, t, config=CFG, batch_size=B, sequence_parallel=True)
    return out


@functools.lru_cache(maxsize=None)
def _runs(t: int) -> list[dict]:
    # check_collectives=False: the launcher's cross-rank fingerprint check is tested with the
    # launcher; here it would only add an exchange to each of the hundreds of small collectives.
    return launch(_all_checks, t, timeout=300, threads=1, check_collectives=False)


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
    res = [out["tp"] for out in _runs(t)]
    _check_against_reference(res, t, sp=False)
    _check_counted_bytes(res, t, sp=False)
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


def _check_counted_bytes(res, t: int, sp: bool) -> None:
    """Every stage (embedding, EVERY block, head, finish_grads; forward and backward) sent, per
    kind of collective, exactly the bytes of comm_bytes_by_op, as counted by comm on each rank."""
    want = comm_bytes_by_op(CFG, B, t, sequence_parallel=sp)
    for r, out in enumerate(res):
        c = out["comm"]
        stages = ["embed_fwd", "embed_bwd", "head_fwd", "head_bwd", "finish_grads"]
        stages += [f"block{i}_{d}" for i in range(CFG.n_layer) for d in ("fwd", "bwd")]
        assert sorted(c) == sorted(stages)
        for stage in stages:
            key = stage if not stage.startswith("block") else "block_" + stage.split("_")[1]
            assert c[stage]["by_op"] == want[key], (r, stage, c[stage]["by_op"], want[key])


def _wire(by_op: dict, t: int) -> int:
    """Bytes a ring puts on each link for the counted calls (comm counts an all-gather's input, n/t)."""
    return (ring_wire_bytes("all_reduce", by_op.get(AR, 0), t) + ring_wire_bytes("reduce_scatter", by_op.get(RS, 0), t)
            + ring_wire_bytes("all_gather", t * by_op.get(AG, 0), t))


@pytest.mark.parametrize("t", [2, 4])
def test_sequence_parallel_matches_reference_same_traffic_less_memory(t):
    runs = _runs(t)
    res = [out["sp"] for out in runs]
    _check_against_reference(res, t, sp=True)
    _check_counted_bytes(res, t, sp=True)
    N = 4 * B * CFG.block_size * CFG.n_embd  # bytes of one (B, T, C) activation
    for out, tp in zip(res, (o["tp"] for o in runs)):
        c = out["comm"]["block0_fwd"]
        # 2 all-gathers (input: this rank's N/t) and 2 reduce-scatters (input: N) per block
        assert c["calls"] == {"all_gather_into_tensor": 2, "reduce_scatter_tensor": 2}
        assert c["by_op"] == {"all_gather_into_tensor": 2 * N // t, "reduce_scatter_tensor": 2 * N}
        for i in range(CFG.n_layer):
            sp_fwd, tp_fwd = out["comm"][f"block{i}_fwd"]["by_op"], tp["comm"][f"block{i}_fwd"]["by_op"]
            sp_bwd, tp_bwd = out["comm"][f"block{i}_bwd"]["by_op"], tp["comm"][f"block{i}_bwd"]["by_op"]
            # forward: the same ring traffic as TP's 2 all-reduces; backward: that plus the 2 re-gathers
            assert _wire(sp_fwd, t) == _wire(tp_fwd, t) == 2 * 2 * (t - 1) * N // t
            assert _wire(sp_bwd, t) == _wire(tp_bwd, t) + 2 * (t - 1) * N // t
        # measured activations: Megatron-SP keeps 1/t of the single-process block, plain TP more
        assert out["act_bytes_per_block"] * t == activation_bytes_per_block(CFG, B, CFG.block_size, 1)
        assert out["act_bytes_per_block"] < tp["act_bytes_per_block"]


def test_measure_comm_per_stage_gives_counted_bytes_for_the_bench():
    for out in _runs(2):
        m = out["measured_sp"]
        assert m["formula"] == comm_bytes_by_op(CFG, B, 2, sequence_parallel=True)
        for d in ("fwd", "bwd"):
            assert m["counted"][f"block0_{d}"] == m["counted"][f"block1_{d}"] == m["formula"][f"block_{d}"]
        assert m["counted"]["finish_grads"] == m["formula"]["finish_grads"]


@pytest.mark.parametrize("t", [1, 2, 4])
def test_same_as_pytorch_tensor_parallel(t):
    """torch.distributed.tensor.parallel on a CPU gloo mesh (t = 1: a one-rank mesh): blocks,
    vocab-parallel embedding (RowwiseParallel on nn.Embedding), head with loss_parallel, and
    SequenceParallel LayerNorms all run; cross-entropy on Shard(-1) logits without
    loss_parallel is refused, and the test asserts PyTorch's error."""
    for out in _runs(t):
        out = out["torch"]
        b = out["blocks"]
        assert b["logits_vs_ref"] < 1e-5 and b["loss_vs_ref"] < 1e-5 and b["grads_vs_ref"] < 1e-6
        assert b["logits_vs_course"] < 1e-5 and b["grads_vs_course"] < 1e-6
        assert "blocks.0.mlp.down_proj.weight" in b["sharded"]
        assert out["loss_parallel"]["loss_vs_ref"] < 1e-5 and out["loss_parallel"]["grads_vs_ref"] < 1e-6
        assert "mixed torch.Tensor and DTensor" in out["without_loss_parallel"]
        for mode in ("tp_full", "sp_full"):
            m = out[mode]
            assert m["logits_vs_ref"] < 1e-5 and m["loss_vs_ref"] < 1e-5 and m["grads_vs_ref"] < 1e-6, (mode, m)
            assert m["logits_vs_course"] < 1e-5 and m["grads_vs_course"] < 1e-6, (mode, m)
            assert {"tok_emb.weight", "lm_head.weight", "blocks.1.attn.q_proj.weight"} <= set(m["sharded"]), mode


def test_dropout_masks_do_not_depend_on_t_or_sequence_parallelism():
    """With dropout 0.1, TP and TP+SP at t = 1, 2, 4 compute the same loss, logits and gradients
    (KeyedDropout: the mask of the whole tensor, each rank keeping its block), and dropout acts."""
    base = _runs(1)[0]["dropout_tp"]
    assert abs(base["loss"] - _runs(1)[0]["tp"]["losses_tp"][0]) > 1e-3  # the masks changed the loss
    for t in (1, 2, 4):
        for r, out in enumerate(_runs(t)):
            for mode in ("dropout_tp", "dropout_sp") if t > 1 else ("dropout_tp",):
                o = out[mode]
                assert abs(o["loss"] - base["loss"]) < 1e-5, (t, r, mode)
                assert (o["logits"] - base["logits"]).abs().max() < 1e-5, (t, r, mode)
                assert max((o["grads"][n] - g).abs().max().item() for n, g in base["grads"].items()) < 1e-6, (t, r, mode)


def test_keyed_dropout_keeps_the_block_of_one_global_mask():
    drop = KeyedDropout(0.5, seed=3)
    whole = drop(torch.ones(2, 8, 4))
    drop.calls = 0
    part = drop(torch.ones(2, 4, 4), (2, 8, 4), (slice(None), slice(4, 8)))
    assert torch.equal(part, whole[:, 4:8])
    assert set(whole.unique().tolist()) == {0.0, 2.0}
    drop.eval()
    assert torch.equal(drop(torch.ones(3)), torch.ones(3))


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
    for r, out in enumerate(o["operators"] for o in _runs(2)):
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
    assert TensorParallelGPT(GPT(DROPPED), 0, 2).dropout.p == 0.1  # dropout is supported (KeyedDropout)
    with pytest.raises(TypeError, match="expected a course_lib.model.GPT"):
        TensorParallelGPT(torch.nn.Linear(2, 2), 0, 2)
    with pytest.raises(ValueError, match="must be targets"):
        vocab_parallel_cross_entropy(torch.zeros(2, 3, 4), torch.zeros(2, 4, dtype=torch.long), 0)


def test_param_formula_sums_to_the_model():
    """Sharded parameters summed over ranks + replicated ones once = the GPT's parameters."""
    for t in (1, 2, 4):
        counts = [param_count_per_rank(CFG, t, r) for r in range(t)]
        assert sum(c["sharded"] for c in counts) + counts[0]["replicated"] == GPT(CFG).num_params()


_W = torch.zeros(4, 6)


@pytest.mark.parametrize("call, error, words", [
    (lambda: param_count_per_rank(CFG, 3), ValueError, "n_head=4 is not divisible by t=3"),
    (lambda: param_count_per_rank(CFG, 0), ValueError, "degree t must be an int >= 1"),
    (lambda: param_count_per_rank(CFG, 2, rank=2), ValueError, "rank must be an int in [0, t)"),
    (lambda: comm_bytes_per_layer(CFG, B, 0), ValueError, "degree t must be an int >= 1"),
    (lambda: comm_bytes_per_layer(CFG, 0, 2), ValueError, "batch_size must be an int >= 1"),
    (lambda: comm_bytes_per_layer(CFG, -1, 2), ValueError, "batch_size must be an int >= 1"),
    (lambda: comm_bytes_by_op(CFG, B, 2, seq_len=99), ValueError, "seq_len must be an int in [1, block_size=32]"),
    (lambda: comm_bytes_by_op(CFG, B, 4, seq_len=6, sequence_parallel=True), ValueError, "use a T that t divides"),
    (lambda: vocab_range(46, 5, 4), ValueError, "rank must be an int in [0, t) = [0, 4)"),
    (lambda: vocab_range(3, 0, 4), ValueError, "vocab_size=3 must be an int >= t=4"),
    (lambda: seq_range(32, 5, 4), ValueError, "rank must be an int in [0, t) = [0, 4)"),
    (lambda: seq_range(30, 0, 4), ValueError, "T=30 is not divisible by t=4"),
    (lambda: shard(_W, 5, 0, 2), ValueError, "dim=5 does not exist"),
    (lambda: shard(_W, 0, 2, 2), ValueError, "rank must be an int in [0, t)"),
    (lambda: shard(_W, 0, 0, 0), ValueError, "degree t must be an int >= 1"),
    (lambda: ParallelMLP(torch.nn.Linear(4, 4), 0, 2), TypeError, "ParallelMLP shards a course_lib.model.MLP"),
    (lambda: ParallelAttention(MLP(CFG), 0, 2, 4), TypeError, "lacks q_proj, k_proj, v_proj, out_proj"),
    (lambda: ParallelAttention(CausalSelfAttention(CFG), 0, 3, 4), ValueError, "not divisible"),
    (lambda: ColumnParallelLinear(torch.nn.Embedding(4, 4), 0, 2), TypeError, "shards an nn.Linear"),
    (lambda: RowParallelLinear(torch.nn.Linear(4, 4), 3, 2), ValueError, "rank must be an int in [0, t)"),
    (lambda: VocabParallelEmbedding(torch.nn.Linear(4, 4), 0, 2), TypeError, "shards an nn.Embedding"),
    (lambda: activation_bytes_per_block(CFG, B, 32, 0), ValueError, "degree t must be an int >= 1"),
    (lambda: activation_bytes_per_block(CFG, 0, 32, 2), ValueError, "batch_size must be an int >= 1"),
    (lambda: TensorParallelGPT(GPT(CFG), 2, 2), ValueError, "rank must be an int in [0, t)"),
    (lambda: KeyedDropout(1.5), ValueError, "p must be a probability in [0, 1)"),
    (lambda: ring_wire_bytes("all_reduce", 10, 0), ValueError, "t must be an int >= 1"),
])
def test_bad_input_names_the_argument_and_the_fix(call, error, words):
    with pytest.raises(error) as info:
        call()
    assert words in str(info.value)


def test_ring_wire_bytes_is_the_ring_formula():
    N = 4 * B * CFG.block_size * CFG.n_embd
    for t in (1, 2, 4):
        assert ring_wire_bytes("all_reduce", N, t) == 2 * (t - 1) * N // t
        assert ring_wire_bytes("reduce_scatter", N, t) == ring_wire_bytes("all_gather", N, t) == (t - 1) * N // t


def test_step_prediction_is_its_formula():
    """``tp_step_time.predict_step``: (C_t + O_t) max(1, t/cores) + (4L+2) A_t(4BTC) + 3 A_t(4BT), from
    given measurements (no timing here); a flat all-reduce curve fits as pure latency, a
    straight one gives back its alpha and beta."""
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
