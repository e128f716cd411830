"""The course GPT, tensor-parallel: built from a single-process :class:`~course_lib.model.GPT`,
and turned back into one (``shard`` and ``unshard``).

    tp = TensorParallelGPT(model, rank, t)            # this rank's shards of model's weights
    logits_shard, loss = tp(idx, targets)             # loss equal on every rank to model(idx, targets)
    full = unshard(tp)                                # {GPT parameter name: full tensor}, on every rank

Parameter names are those of the GPT (``blocks.0.attn.q_proj.weight`` ...), so ``unshard``
returns a state dict the single-process model loads. Each sharded parameter carries
``tp_dim``, the dimension of the full tensor that was split; replicated ones carry none.
With ``sequence_parallel=True`` the residual stream is split along time between the
tensor-parallel regions (:mod:`course_lib.sequence_parallel`), and the all-gathered inputs
of the column-parallel layers are not kept for backward (Megatron-SP).

Dropout (``config.dropout > 0``) sits where the GPT has it: after the embedding, on the
attention probabilities, after ``out_proj`` and after ``down_proj``. Its masks come from one
:class:`~course_lib.tensor_parallel.KeyedDropout` stream (seed ``dropout_seed``), which draws
the mask of the whole tensor and keeps this rank's block, so the numbers do not depend on t
or on sequence parallelism; they equal the single-process GPT's only in distribution (see
``KeyedDropout``). With ``dropout = 0`` they equal it number for number.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib import comm
from course_lib.model import GPT
from course_lib.sequence_parallel import (all_reduce_sequence_parallel_grads, gather_linears, reduce_scatter_to_sp,
                                          seq_range)
from course_lib.tensor_parallel import (KeyedDropout, ParallelAttention, ParallelMLP, VocabParallelEmbedding,
                                        check_degree, check_rank, copy_to_tp, shard, vocab_parallel_cross_entropy,
                                        vocab_range)


def _replicate(module: nn.Module, sequence_parallel: bool) -> nn.Module:
    """A copy of a module whose parameters every rank holds in full."""
    out = copy.deepcopy(module)
    for p in out.parameters():
        p.sequence_parallel = sequence_parallel
    return out


class TPBlock(nn.Module):
    """``h + drop(attn(ln_1(h)))``, then ``h + drop(mlp(ln_2(h)))``, attention and MLP tensor-parallel."""

    def __init__(self, block: nn.Module, rank: int, t: int, n_head: int, sequence_parallel: bool,
                 dropout: KeyedDropout | None = None) -> None:
        super().__init__()
        self.sequence_parallel, self.rank, self.t = sequence_parallel, rank, t
        self.ln_1 = _replicate(block.ln_1, sequence_parallel)
        self.attn = ParallelAttention(block.attn, rank, t, n_head, dropout)
        self.ln_2 = _replicate(block.ln_2, sequence_parallel)
        self.mlp = ParallelMLP(block.mlp, rank, t)
        self.dropout = dropout
        for row in (self.attn.out_proj, self.mlp.down_proj):
            if row.bias is not None:
                row.bias.sequence_parallel = sequence_parallel

    def drop(self, y: torch.Tensor) -> torch.Tensor:
        """Residual dropout on the whole (B, T, C), or on this rank's (B, T/t, C) under SP."""
        if self.dropout is None:
            return y
        if not self.sequence_parallel:
            return self.dropout(y)
        B, T_local, C = y.shape
        lo, hi = seq_range(T_local * self.t, self.rank, self.t)
        return self.dropout(y, (B, T_local * self.t, C), (slice(None), slice(lo, hi)))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if not self.sequence_parallel:
            h = h + self.drop(self.attn(self.ln_1(h)))
            return h + self.drop(self.mlp(self.ln_2(h)))
        # h is (B, T/t, C). Into the split region: all-gather, keeping only the shard for backward;
        # out of it: reduce-scatter.
        a, m = self.attn, self.mlp
        q, k, v = gather_linears(self.ln_1(h), a.q_proj, a.k_proj, a.v_proj)
        h = h + self.drop(_bias(reduce_scatter_to_sp(a.out_proj.partial(a.attend(q, k, v))), a.out_proj.bias))
        (up,) = gather_linears(self.ln_2(h), m.up_proj)
        d = m.down_proj
        return h + self.drop(_bias(reduce_scatter_to_sp(d.partial(F.gelu(up))), d.bias))


def _bias(y: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    return y if b is None else y + b


class VocabParallelHead(nn.Module):
    """``logits_r = ln_f(h) E_r^T``: this rank's vocabulary slice of the logits."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.weight.tp_dim = 0
        self.bias = None  # the GPT's head has none

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)


class TensorParallelGPT(nn.Module):
    """Rank ``rank``'s share of ``model`` at tensor-parallel degree ``t`` (Megatron-LM)."""

    def __init__(self, model: GPT, rank: int, t: int, sequence_parallel: bool = False, dropout_seed: int = 0) -> None:
        super().__init__()
        if not isinstance(model, GPT):
            raise TypeError(f"expected a course_lib.model.GPT to shard, got {type(model).__name__}")
        cfg = model.config
        check_degree(cfg, t)
        check_rank(rank, t, "TensorParallelGPT")
        if sequence_parallel and cfg.block_size % t:
            raise ValueError(f"sequence_parallel splits T into t={t} equal parts, but block_size={cfg.block_size} "
                             "is not a multiple of t; pick t dividing block_size or sequence_parallel=False")
        self.config, self.rank, self.t, self.sequence_parallel = cfg, rank, t, sequence_parallel
        self.dropout = KeyedDropout(cfg.dropout, dropout_seed) if cfg.dropout > 0 else None
        self.tok_emb = VocabParallelEmbedding(model.tok_emb, rank, t)
        self.pos_emb = _replicate(model.pos_emb, sequence_parallel)
        self.blocks = nn.ModuleList(TPBlock(b, rank, t, cfg.n_head, sequence_parallel, self.dropout)
                                    for b in model.blocks)
        self.ln_f = _replicate(model.ln_f, sequence_parallel)
        start, end = vocab_range(cfg.vocab_size, rank, t)
        self.lm_head = VocabParallelHead(model.lm_head.weight.detach()[start:end].clone())
        if cfg.tie_weights:
            self.lm_head.weight = self.tok_emb.weight  # the same rows: tying survives the split
        self.vocab_start = start

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        """``h_0``: (B, T, C) replicated, or (B, T/t, C) under sequence parallelism."""
        GPT.check_idx(self, idx)
        B, T = idx.shape
        if not self.sequence_parallel:
            h = self.tok_emb(idx) + self.pos_emb(torch.arange(T))
            return h if self.dropout is None else self.dropout(h)
        lo, hi = seq_range(T, self.rank, self.t)
        h = reduce_scatter_to_sp(self.tok_emb.partial(idx)) + self.pos_emb(torch.arange(lo, hi))
        if self.dropout is None:
            return h
        return self.dropout(h, (B, T, self.config.n_embd), (slice(None), slice(lo, hi)))

    def run_blocks(self, h: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            h = block(h)
        return h

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """This rank's logits, (B, T, V_r) for its vocabulary range."""
        x = self.ln_f(h)
        if self.sequence_parallel:
            return gather_linears(x, self.lm_head)[0]  # all-gather; only the shard kept for backward
        return self.lm_head(copy_to_tp(x))

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        logits = self.head(self.run_blocks(self.embed(idx)))
        if targets is None:
            return logits, None
        return logits, vocab_parallel_cross_entropy(logits, targets, self.vocab_start)

    def finish_grads(self) -> None:
        """After backward: under sequence parallelism, sum the partial gradients of the
        replicated parameters used on a slice of the sequence. Without it, nothing to do."""
        if self.sequence_parallel:
            all_reduce_sequence_parallel_grads(self)


# ----------------------------------------------------------------------------- unshard
def gather_dim(x: torch.Tensor, dim: int) -> torch.Tensor:
    """All-gather the ranks' pieces of a tensor split along ``dim`` (pieces may differ by one
    row, as the vocabulary's do: padded to the largest for gloo, then trimmed)."""
    t = comm.get_world_size()
    if t == 1:
        return x.detach().clone()
    x = x.detach().movedim(dim, 0).contiguous()
    sizes = torch.tensor([x.shape[0]])
    all_sizes = [torch.zeros_like(sizes) for _ in range(t)]
    comm.all_gather(all_sizes, sizes)
    n = int(max(s.item() for s in all_sizes))
    padded = torch.zeros((n, *x.shape[1:]), dtype=x.dtype)
    padded[:x.shape[0]] = x
    pieces = [torch.empty_like(padded) for _ in range(t)]
    comm.all_gather(pieces, padded)
    return torch.cat([p[:int(s.item())] for p, s in zip(pieces, all_sizes)]).movedim(0, dim)


def unshard(tp: TensorParallelGPT, grads: bool = False) -> dict[str, torch.Tensor]:
    """The full parameters (or, with ``grads``, their gradients) by the GPT's names, on every
    rank. A collective: every rank must call it."""
    out = {}
    for name, p in tp.named_parameters():
        x = p.grad if grads else p
        if x is None:
            raise ValueError(f"{name} has no gradient: call loss.backward() (and tp.finish_grads()) first")
        out[name] = gather_dim(x, p.tp_dim) if hasattr(p, "tp_dim") else x.detach().clone()
    return out


def shard_of(full: torch.Tensor, p: torch.Tensor, rank: int, t: int) -> torch.Tensor:
    """This rank's piece of the full tensor ``full`` for the (possibly sharded) parameter ``p``."""
    return shard(full, p.tp_dim, rank, t, even=False) if hasattr(p, "tp_dim") else full.clone()


# ----------------------------------------------------------------------------- memory
def saved_activation_bytes(model: nn.Module, fn, *args) -> tuple[object, int]:
    """Run ``fn(*args)`` and count the bytes autograd keeps for backward: distinct storages,
    ``model``'s parameters excluded (they are counted as parameter memory)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(*args)
    return out, sum(seen.values())


def activation_bytes_per_block(config, batch_size: int, seq_len: int, t: int,
                               sequence_parallel: bool = False) -> int:
    """Bytes one block keeps for backward on each rank (fp32, dropout 0), counted from this code.

    With ``N = B T C`` and H heads, at t = 1 a block saves ``16 N + 4 B T + B H T`` floats:
    the 2 LayerNorm inputs (2N) and their mean and 1/std (4BT), the 2 LayerNorm outputs that
    the linears keep (2N), q, k, v and the attention output (4N) with the log-sum-exp of
    fused attention (BHT), the MLP's hidden before and after GeLU (8N).

    * Plain TP splits what lies between f and g: ``4 N + 4 B T + (12 N + B H T) / t``; the
      LayerNorm inputs, statistics and outputs stay whole on every rank.
    * Megatron-SP also splits the LayerNorm regions along T and keeps only the shard of each
      all-gathered LayerNorm output (re-gathered in backward): everything is split,
      ``(16 N + 4 B T + B H T) / t``, the single-process block's bytes over t
      (Korthikanti et al. 2022 sec. 4.2.2). Their fp16 count ``s b h (10 + 24/t + 5 a s/(h t))``
      differs by design: no dropout masks (dropout 0), and fused attention keeps no T x T scores.
    """
    check_degree(config, t)
    for name, value in (("batch_size", batch_size), ("seq_len", seq_len)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"activation_bytes_per_block: {name} must be an int >= 1, got {value!r}")
    if sequence_parallel and seq_len % t:
        raise ValueError(f"sequence parallelism splits seq_len={seq_len} into t={t} equal parts; use a multiple of t")
    B, T, C, H = batch_size, seq_len, config.n_embd, config.n_head
    N = B * T * C
    if sequence_parallel:
        return 4 * (16 * N + 4 * B * T + B * H * T) // t
    return 4 * (4 * N + 4 * B * T + (12 * N + B * H * T) // t)
