"""Calibration (chapter 1): the alpha-beta fit, the GPT profile, the link measurement on real
gloo ranks, and the flow-shop schedule behind the timeline pictures."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from course_lib.allocation import Device, chain_dp, device_load, pipeline_time, random_problem
from course_lib.allocation import calibrate
from course_lib.allocation.cost import flow_shop
from course_lib.model import GPT, GPTConfig


def test_fit_recovers_alpha_and_beta_from_exact_data():
    b = np.array([4, 64, 1024, 2 ** 16, 2 ** 20, 2 ** 22], float)
    alpha, beta = calibrate.fit_alpha_beta(b, 30e-6 + b / 5e9)
    assert alpha == pytest.approx(30e-6, rel=1e-9) and 1 / beta == pytest.approx(5e9, rel=1e-9)


def test_fit_rejects_bad_input():
    with pytest.raises(ValueError, match="same length"):
        calibrate.fit_alpha_beta(np.ones(3), np.ones(2))
    with pytest.raises(ValueError, match="> 0 seconds"):
        calibrate.fit_alpha_beta(np.array([1.0, 2.0]), np.array([1e-6, 0.0]))


def test_profile_counts_memory_and_flop_of_every_module():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=20, block_size=16, n_layer=2, n_head=2, n_embd=16))
    prof = calibrate.profile_gpt(model, batch_size=4, repeats=1)
    assert [p.name for p in prof] == ["embed", "block0", "block1", "head"]
    # every parameter is counted once, 16 bytes each (tied head matrix counted in embed)
    assert sum(p.param_bytes for p in prof) == 16 * model.num_params()
    C, T, B = 16, 16, 4
    lin = 6 * B * T * (4 * C * C + 2 * 4 * C * C)
    assert prof[1].flop == lin + 3 * 4 * B * T * T * C
    assert all(p.seconds > 0 and p.act_bytes > 0 for p in prof)
    # a block saves far more than its input for backward (attention scores, MLP hidden)
    assert prof[1].act_bytes > 4 * B * T * C * 4
    assert prof[0].out_bytes == B * T * C * 4 and prof[-1].out_bytes == 0
    p = calibrate.gpt_problem(prof, [Device("a", 1e9, 1e9), Device("b", 2e9, 1e9)], 1e-5, 1e9)
    assert p.is_chain and p.T[0, 1] == 2 * B * T * C * 4  # activation forward + gradient back
    chain_dp(p, "bottleneck")


def test_link_is_measured_on_real_ranks():
    sizes, seconds = calibrate.measure_link(sizes=[4, 4096, 16 << 20], repeats=3)
    assert sizes.tolist() == [4, 4096, 16 << 20] and np.all(seconds > 0)
    # 16 MiB take far longer than 4 bytes at any plausible bandwidth (> 1 ms at 16 GB/s), even
    # on a loaded machine where a tiny message can wait a millisecond for the CPU
    assert seconds[2] > seconds[0]


def test_flow_shop_simulation_matches_the_pipeline_formula():
    for seed in range(20):
        p = random_problem(10, 4, seed, memory_slack=2.0)
        x = chain_dp(p, "bottleneck").assignment
        t = [device_load(p, x)[d] for d in sorted(set(x))]
        for n_mb in (1, 3, 9):
            start = flow_shop(t, n_mb)
            assert start[-1, -1] + t[-1] == pytest.approx(pipeline_time(p, x, n_mb), rel=1e-12)
