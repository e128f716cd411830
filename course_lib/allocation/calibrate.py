"""Calibration: turn measurements on this machine into a `Problem` for the solvers.

Two measurements feed the cost model of `cost.py`:

* per module of the reference GPT (embedding, each block, head + loss): the forward +
  backward time t_j, the analytic work w_j [FLOP], the parameter memory p_j (weights,
  gradients, AdamW's two moments: 16 bytes per fp32 parameter) and the activation memory
  a_j, measured as the bytes autograd saves for the backward pass
  (`torch.autograd.graph.saved_tensors_hooks`), and the bytes crossing a cut after it;
* the point-to-point link between two gloo ranks: a ping-pong over message sizes b,
  fitted to t(b) = alpha + b / B (Hockney 1994, the alpha-beta model), with chapter 3's
  `course_lib.alpha_beta` (``fit_alpha_beta`` is chapter 3's, re-exported here; its result
  unpacks as ``alpha, beta``).

Work is counted analytically, the usual way (Kaplan et al. 2020, "Scaling Laws for Neural
Language Models", sec. 2.1): a Linear layer of in x out weights costs 2 * in * out FLOP per
token forward and twice that backward, so 6 * in * out for forward + backward; attention's
two (T x T) products add 2 * 2 * T * C forward per token (x3 with backward). The device
speed is then s = sum_j w_j / sum_j t_j, and the notebook compares the predicted per-module
time w_j / s with the measured t_j: where they differ (the embedding does almost no FLOP but
still takes time), the one-speed-per-device model is the approximation to keep in mind.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch

from course_lib import alpha_beta
from course_lib.alpha_beta import fit_alpha_beta  # re-exported: chapter 1 fits its links with chapter 3's fit
from course_lib.model import GPT

from .problem import Device, Links, Module, Problem, check_int, check_number

BYTES_PER_PARAM = 16  # fp32 weight + grad + AdamW exp_avg + exp_avg_sq


@dataclass(frozen=True)
class LayerProfile:
    """One module of the GPT as measured: name, fwd+bwd seconds, FLOP, bytes."""

    name: str
    seconds: float
    flop: float
    param_bytes: int
    act_bytes: int
    out_bytes: int


def _linear_flop(tokens: int, fan_in: int, fan_out: int) -> float:
    return 6.0 * tokens * fan_in * fan_out  # forward 2 * in * out per token, backward twice that


def _block_flop(model: GPT, B: int, T: int) -> float:
    C = model.config.n_embd
    tokens = B * T
    linears = 4 * _linear_flop(tokens, C, C) + 2 * _linear_flop(tokens, C, 4 * C)  # q,k,v,proj; MLP
    attention = 3.0 * 2 * 2 * tokens * T * C  # QK^T and AV, full T x T (the causal mask saves no FLOP here)
    return linears + attention


def _saved_bytes(fn, *inputs: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Run fn(*inputs) and count the bytes autograd saved for backward (distinct storages)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(*inputs)
    # The input of a module is the previous module's output, already counted there.
    for x in inputs:
        if x.is_floating_point():
            seen.pop(x.untyped_storage().data_ptr(), None)
    return out, sum(seen.values())


def _time_fwd_bwd(fn, make_input, repeats: int) -> float:
    times = []
    for _ in range(repeats + 1):  # the first call warms up allocator and kernels
        x = make_input()
        t0 = time.perf_counter()
        out = fn(x)
        out.backward(torch.ones_like(out) if out.dim() else None)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def profile_gpt(model: GPT, batch_size: int = 8, repeats: int = 5, seed: int = 0) -> list[LayerProfile]:
    """Measure every module of `model` (embed, blocks 0..L-1, head with loss) on a
    (batch_size, block_size) batch: fwd+bwd time (median of `repeats`), FLOP, bytes."""
    batch_size = check_int(batch_size, "profile_gpt: batch_size", 1)
    repeats = check_int(repeats, "profile_gpt: repeats", 1)
    seed = check_int(seed, "profile_gpt: seed", 0)
    cfg = model.config
    B, T, C = batch_size, cfg.block_size, cfg.n_embd
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(cfg.vocab_size, (B, T), generator=g)
    tgt = torch.randint(cfg.vocab_size, (B, T), generator=g)
    act = B * T * C * 4  # the (B, T, C) float32 activation crossing every cut
    h0 = model.embed(idx).detach()

    def nbytes(mod: torch.nn.Module) -> int:
        return BYTES_PER_PARAM * sum(p.numel() for p in mod.parameters())

    out: list[LayerProfile] = []
    emb_params = model.tok_emb.weight.numel() + model.pos_emb.weight.numel()
    t = _time_fwd_bwd(lambda i: model.embed(i), lambda: idx, repeats)
    _, saved = _saved_bytes(model.embed, idx)
    # Embedding "work": a lookup, ~0 FLOP; count the gradient scatter-add, 2 per element.
    out.append(LayerProfile("embed", t, 2.0 * B * T * C, BYTES_PER_PARAM * emb_params, saved, act))
    for i, block in enumerate(model.blocks):
        t = _time_fwd_bwd(block, lambda: h0.clone().requires_grad_(), repeats)
        _, saved = _saved_bytes(block, h0.clone().requires_grad_())
        out.append(LayerProfile(f"block{i}", t, _block_flop(model, B, T), nbytes(block), saved, act))

    def head_loss(h: torch.Tensor) -> torch.Tensor:
        return GPT.loss_fn(model.head(h), tgt)

    t = _time_fwd_bwd(head_loss, lambda: h0.clone().requires_grad_(), repeats)
    _, saved = _saved_bytes(head_loss, h0.clone().requires_grad_())
    # With tied weights the head's matrix is the token embedding: count its bytes once (embed).
    head_params = sum(p.numel() for p in model.ln_f.parameters())
    if not cfg.tie_weights:
        head_params += model.lm_head.weight.numel()
    out.append(LayerProfile("head", t, _linear_flop(B * T, C, cfg.vocab_size),
                            BYTES_PER_PARAM * head_params, saved, 0))
    return out


def measure_link(sizes: list[int] | None = None, repeats: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Ping-pong between two gloo ranks on this machine (:func:`course_lib.alpha_beta.ping_pong`):
    (sizes [bytes], one-way seconds)."""
    sizes, seconds = alpha_beta.measure_point_to_point(sizes or [4 * 4 ** i for i in range(11)], repeats)
    return np.array(sizes, float), np.array(seconds, float)


def gpt_problem(profile: list[LayerProfile], devices: list[Device], alpha: float, bandwidth: float,
                backward: bool = True) -> Problem:
    """A chain `Problem` from a GPT profile: module j gets w_j = its FLOP, m_j = params +
    activations, and sends its output activation to module j+1 (plus, with `backward`, the
    same bytes of gradient back: a training micro-batch crosses every cut twice)."""
    if not profile:
        raise ValueError("profile is empty; run profile_gpt(model) first")
    alpha = check_number(alpha, "gpt_problem: alpha [s]", "the fitted link latency, >= 0")
    if isinstance(bandwidth, (str, bytes)) or bandwidth is None:
        raise ValueError(f"gpt_problem: bandwidth must be a number [bytes/s], got {bandwidth!r}")
    factor = 2 if backward else 1
    modules = [Module(p.name, p.flop, p.param_bytes, p.act_bytes, factor * p.out_bytes) for p in profile]
    return Problem(tuple(devices), tuple(modules), Links.uniform(len(devices), bandwidth, alpha))
