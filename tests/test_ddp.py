"""Chapter 4, DDP: equal to single-process training and to torch DDP, with counted bytes.

Tolerances. Data parallelism computes the same mean gradient as one process on the whole
batch, but sums it in a different order (per-rank means, then an all-reduce), so float32
results differ in the last bits: with SGD we allow atol 1e-6; with AdamW, whose update
m / sqrt(v) magnifies relative gradient differences of parameters with tiny gradients, atol
2e-5 after 4 steps (measured: 4.3e-6 at p = 2). Against torch DDP on the same data the
arithmetic is the same up to the order in which gloo sums 4 ranks within differently sized
buckets (torch caps its first bucket at 1 MiB): bit-equal at p = 2, 6e-7 apart at p = 4 after
4 AdamW steps (1.5e-6 for the 207k-parameter reference model); same tolerances as above.
"""
from __future__ import annotations

import pytest
import torch

from course_lib.collectives import ring_bytes_sent
from course_lib.configs import small_config
from course_lib.data import load_dataset
from course_lib.ddp import BucketedDDP, assign_buckets
from course_lib.runs.data_parallel import train_data_parallel, train_single
from course_lib.launcher import WorkerError, launch
from course_lib.model import GPT

CFG = small_config(load_dataset().vocab_size)
PSI = sum(p.numel() for p in __import__("course_lib.model", fromlist=["GPT"]).GPT(CFG).parameters())
CAP = 16 * 1024  # bytes: several buckets for this small model
STEPS, BATCH = 4, 16


@pytest.mark.parametrize("p", [2, 4])
@pytest.mark.parametrize("opt,atol", [("sgd", 1e-6), ("adamw", 2e-5)])
def test_ddp_equals_single_process_and_torch_ddp(p, opt, atol):
    lr = 0.1 if opt == "sgd" else 2e-3
    ref = train_single(config=CFG, steps=STEPS, batch_size=BATCH, optimizer=opt, lr=lr)
    ours = launch(train_data_parallel, p, config=CFG, steps=STEPS, batch_size=BATCH, impl="course", bucket_cap_bytes=CAP,
                  optimizer=opt, lr=lr)
    theirs = launch(train_data_parallel, p, config=CFG, steps=STEPS, batch_size=BATCH, impl="torch", bucket_cap_bytes=CAP,
                    optimizer=opt, lr=lr)
    for r in range(p):  # replicas stay identical although built from different seeds
        assert torch.equal(ours[r]["params"], ours[0]["params"])
    torch.testing.assert_close(ours[0]["params"], ref["params"], atol=atol, rtol=0)
    torch.testing.assert_close(ours[0]["params"], theirs[0]["params"], atol=atol, rtol=0)
    # the mean of the ranks' local losses is the full-batch loss
    mean_loss = [sum(o["losses"][s] for o in ours) / p for s in range(STEPS)]
    assert mean_loss == pytest.approx(ref["losses"], abs=1e-5)


def test_bytes_and_calls_per_step():
    out = launch(train_data_parallel, 2, config=CFG, steps=STEPS, batch_size=BATCH, bucket_cap_bytes=CAP)
    n_buckets = len(out[0]["timeline"].buckets)
    assert n_buckets > 3
    for r in range(2):
        stats = out[r]["comm"]
        assert stats.collective_bytes["all_reduce"] == STEPS * 4 * PSI  # 4 Psi bytes a step
        assert stats.collective_calls["all_reduce"] == STEPS * n_buckets
        assert set(stats.collective_calls) == {"all_reduce"}  # the broadcast came before the reset


def test_gradient_accumulation_communicates_once_per_step():
    ref = train_single(config=CFG, steps=STEPS, batch_size=BATCH, optimizer="sgd", lr=0.1)
    out = launch(train_data_parallel, 2, config=CFG, steps=STEPS, batch_size=BATCH, bucket_cap_bytes=CAP,
                 micro_batches=4, optimizer="sgd", lr=0.1)
    torch.testing.assert_close(out[0]["params"], ref["params"], atol=1e-6, rtol=0)
    n_buckets = len(out[0]["timeline"].buckets)
    assert out[0]["comm"].collective_calls["all_reduce"] == STEPS * n_buckets  # not 4x


@pytest.mark.parametrize("overlap", [True, False])
def test_buckets_launch_during_backward_only_with_overlap(overlap):
    out = launch(train_data_parallel, 2, config=CFG, steps=2, batch_size=BATCH, bucket_cap_bytes=CAP, overlap=overlap)
    tl = out[0]["timeline"]
    _, backward_end = tl.backward
    launches = [t for _, t, _, _ in tl.buckets]
    if overlap:
        assert all(t < backward_end for t in launches), "every bucket starts inside backward"
    else:
        assert all(t >= backward_end for t in launches)
    assert all(done >= launch for _, launch, done, _ in tl.buckets)
    assert tl.wait_end >= max(done for _, _, done, _ in tl.buckets)


def test_buckets_follow_reverse_order_and_cap():
    params = list(GPT(CFG).parameters())
    buckets = assign_buckets(params[::-1], CAP)
    assert [p for b in buckets for p in b] == params[::-1]
    for b in buckets:
        assert len(b) == 1 or sum(p.numel() * 4 for p in b) <= CAP
    assert len(assign_buckets(params, 1)) == len(params)  # tiny cap: one parameter each


def test_bad_inputs_explain_themselves():
    with pytest.raises(ValueError, match="bucket_cap_bytes must be a positive int"):
        assign_buckets([torch.nn.Parameter(torch.ones(2))], 0)
    with pytest.raises(TypeError, match="wraps an nn.Module"):
        BucketedDDP(torch.ones(3))
    with pytest.raises(WorkerError, match="multiple of 4"):
        launch(train_data_parallel, 2, config=CFG, steps=1, batch_size=6, bucket_cap_bytes=CAP, micro_batches=2)


@pytest.mark.parametrize("p", [2, 4])
def test_course_ring_as_torch_ddp_comm_hook(p):
    """torch's DDP with the course's ring in its comm hook: same parameters as torch's own
    all-reduce and as one process, and exactly the ring's bytes for the buckets torch made."""

    ref = train_single(config=CFG, steps=STEPS, batch_size=BATCH, optimizer="adamw", lr=2e-3)
    plain = launch(train_data_parallel, p, config=CFG, steps=STEPS, batch_size=BATCH, impl="torch", bucket_cap_bytes=CAP)
    hooked = launch(train_data_parallel, p, config=CFG, steps=STEPS, batch_size=BATCH, impl="torch+ring",
                    bucket_cap_bytes=CAP)
    torch.testing.assert_close(hooked[0]["params"], plain[0]["params"], atol=2e-5, rtol=0)
    torch.testing.assert_close(hooked[0]["params"], ref["params"], atol=2e-5, rtol=0)
    for r in range(p):
        buckets = hooked[r]["hook_buckets"]
        assert sum(buckets) == STEPS * PSI and len(buckets) > STEPS  # several buckets a step
        assert hooked[r]["comm"].sent_bytes == sum(ring_bytes_sent(n, p, r) for n in buckets)
        assert hooked[r]["comm"].collective_calls.get("all_reduce", 0) == 0  # no gloo all-reduce at all
    assert plain[0]["hook_buckets"] == []
