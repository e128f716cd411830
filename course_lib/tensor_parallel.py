"""Tensor parallelism (Megatron-LM): every weight matrix split across the t ranks of a group.

Notation (Shoeybi et al. 2019, "Megatron-LM: Training Multi-Billion Parameter Language Models
Using Model Parallelism", sec. 3). Megatron writes a linear layer as ``Y = X A`` with
``A`` of shape (in, out). PyTorch stores ``W = A^T`` of shape (out, in) and computes
``y = x W^T``. The two splits, in both languages:

* **column-parallel**: ``A = [A_1 ... A_t]`` (split the *output* features; in PyTorch the
  *rows* of W). Rank i computes ``Y_i = X A_i``, a slice of Y: the full Y is the
  **concatenation** of the slices, and each rank needs the whole input X.
* **row-parallel**: ``A = [A_1; ...; A_t]`` (split the *input* features; in PyTorch the
  *columns* of W). With X split the same way, ``Y = sum_i X_i A_i``: the full Y is a
  **sum**, one all-reduce.

Column then row (an MLP, or attention split by heads) needs no communication in between,
because GeLU and per-head attention act on each slice separately. Two conjugate operators
carry all the communication (Megatron Fig. 3):

* ``f`` (:func:`copy_to_tp`) before a column-parallel layer: identity forward, all-reduce
  backward (every rank's slice of Y depends on the whole X, so dL/dX is a sum over ranks);
* ``g`` (:func:`reduce_from_tp`) after a row-parallel layer: all-reduce forward, identity
  backward.

Per transformer block: 2 all-reduces of the (B, T, C) activation forward, 2 backward.
Weight gradients never cross ranks: each rank's shard gradient is already the matching
block of the full gradient. The tensor-parallel group is the whole world here.

The vocabulary is split the same way: :class:`VocabParallelEmbedding` (rows of the table)
and :func:`vocab_parallel_cross_entropy`, which reduces three numbers per token (max,
sum of exponentials, target logit) instead of gathering the (B, T, V) logits.

Dropout on a split tensor needs masks that agree where the tensor is replicated and differ
where it is split: :class:`KeyedDropout` (its docstring says how the random numbers are drawn).
The formulas (bytes per stage and collective, parameters per rank) close the file.

Written for this course; facts and formulas from Megatron-LM (Shoeybi et al. 2019).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib import comm
from course_lib.collectives import chunk_bounds
from course_lib.model import GPTConfig


# ----------------------------------------------------------------------------- 1. the operators
class CopyToTP(torch.autograd.Function):
    """Megatron's ``f``: forward ``y = x`` (identity); backward ``dL/dx = sum_ranks dL/dy_r``.

    Placed before column-parallel layers: the input is replicated, but each rank's output
    slice contributes its own part of the input gradient, so those parts are summed.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        if comm.get_world_size() == 1:
            return grad
        grad = grad.contiguous().clone()
        comm.all_reduce(grad)
        return grad


class ReduceFromTP(torch.autograd.Function):
    """Megatron's ``g``: forward ``y = sum_ranks x_r`` (all-reduce); backward identity.

    Placed after row-parallel layers: each rank holds a partial sum of the output; the
    output is the same on every rank, so its gradient already is the gradient of each
    partial sum.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        if comm.get_world_size() == 1:
            return x.view_as(x)
        y = x.contiguous().clone()  # all_reduce works in place; autograd's input must stay intact
        comm.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad


def copy_to_tp(x: torch.Tensor) -> torch.Tensor:
    """``f(x)``: identity forward, all-reduce of the gradient backward."""
    return CopyToTP.apply(x)


def reduce_from_tp(x: torch.Tensor) -> torch.Tensor:
    """``g(x)``: all-reduce forward, identity backward."""
    return ReduceFromTP.apply(x)


# ----------------------------------------------------------------------------- 2. shards
def check_rank(rank: int, t: int, who: str) -> None:
    """Raise a clear error unless ``t >= 1`` is an int and ``0 <= rank < t``."""
    if not isinstance(t, int) or isinstance(t, bool) or t < 1:
        raise ValueError(f"{who}: the tensor-parallel degree t must be an int >= 1, got {t!r}")
    if not isinstance(rank, int) or isinstance(rank, bool) or not 0 <= rank < t:
        raise ValueError(f"{who}: rank must be an int in [0, t) = [0, {t}), got {rank!r}; "
                         "pass this process's rank in the tensor-parallel group")


def shard(tensor: torch.Tensor, dim: int, rank: int, t: int, *, even: bool = True) -> torch.Tensor:
    """Rank ``rank``'s block of ``tensor`` split into ``t`` pieces along ``dim`` (a copy).

    ``even=True`` demands equal pieces (heads, MLP hidden units); ``even=False`` allows
    pieces that differ by one row (``torch.tensor_split``: the vocabulary, e.g. 46 over 4).
    """
    check_rank(rank, t, "shard")
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"shard: expected a torch.Tensor to split, got {type(tensor).__name__}")
    if not -tensor.dim() <= dim < tensor.dim():
        raise ValueError(f"shard: dim={dim} does not exist in a tensor of shape {tuple(tensor.shape)}; "
                         f"use a dim in [{-tensor.dim()}, {tensor.dim()})")
    n = tensor.shape[dim]
    if even and n % t:
        raise ValueError(f"dimension {dim} of size {n} does not split into {t} equal shards; "
                         f"choose a tensor-parallel degree that divides {n}")
    if n < t:
        raise ValueError(f"shard: dimension {dim} of size {n} has fewer rows than t={t} ranks; lower t")
    return tensor.tensor_split(t, dim=dim)[rank].clone()


def vocab_range(vocab_size: int, rank: int, t: int) -> tuple[int, int]:
    """``[start, end)`` of the token ids whose embedding rows (and logits) rank ``rank`` owns:
    the ``torch.tensor_split`` pieces (:func:`course_lib.collectives.chunk_bounds`), the
    first ``V mod t`` ranks one row larger."""
    check_rank(rank, t, "vocab_range")
    if not isinstance(vocab_size, int) or vocab_size < t:
        raise ValueError(f"vocab_range: vocab_size={vocab_size!r} must be an int >= t={t}: every rank needs "
                         "at least one vocabulary row; lower t")
    bounds = chunk_bounds(vocab_size, t)
    return bounds[rank], bounds[rank + 1]


# ----------------------------------------------------------------------------- 3. linear layers
def _check_linear(linear: object, who: str) -> None:
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"{who} shards an nn.Linear (the single-process layer); got {type(linear).__name__}")


def _check_module(module: object, who: str, needs: tuple[str, ...], example: str) -> None:
    missing = [n for n in needs if not isinstance(getattr(module, n, None), nn.Linear)]
    if missing:
        raise TypeError(f"{who} shards {example} (with nn.Linear {', '.join(needs)}); got "
                        f"{type(module).__name__}, which lacks {', '.join(missing)}")


class ColumnParallelLinear(nn.Module):
    """``Y_i = X A_i + b_i``: this rank's ``out / t`` output features of ``linear``.

    ``weight`` is rows ``[i out/t, (i+1) out/t)`` of the (out, in) PyTorch weight. The output
    stays sharded (the next layer is row-parallel). ``copy_input`` applies ``f`` to the input;
    attention turns it off for q, k and v and applies ``f`` once for all three.
    """

    def __init__(self, linear: nn.Linear, rank: int, t: int, copy_input: bool = True) -> None:
        super().__init__()
        _check_linear(linear, "ColumnParallelLinear")
        check_rank(rank, t, "ColumnParallelLinear")
        self.weight = nn.Parameter(shard(linear.weight.detach(), 0, rank, t))
        self.bias = nn.Parameter(shard(linear.bias.detach(), 0, rank, t)) if linear.bias is not None else None
        self.weight.tp_dim = 0  # which dim of the full weight was split (for unsharding)
        if self.bias is not None:
            self.bias.tp_dim = 0
        self.copy_input = copy_input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.copy_input:
            x = copy_to_tp(x)
        return F.linear(x, self.weight, self.bias)


class RowParallelLinear(nn.Module):
    """``Y = sum_i X_i A_i + b``: input features split, partial products summed by ``g``.

    ``weight`` is columns ``[i in/t, (i+1) in/t)`` of the (out, in) weight. The bias is
    replicated and added once, *after* the all-reduce (added before, it would count t times).
    """

    def __init__(self, linear: nn.Linear, rank: int, t: int) -> None:
        super().__init__()
        _check_linear(linear, "RowParallelLinear")
        check_rank(rank, t, "RowParallelLinear")
        self.weight = nn.Parameter(shard(linear.weight.detach(), 1, rank, t))
        self.weight.tp_dim = 1
        self.bias = nn.Parameter(linear.bias.detach().clone()) if linear.bias is not None else None

    def partial(self, x_shard: torch.Tensor) -> torch.Tensor:
        """This rank's term ``X_i A_i`` of the sum (no bias)."""
        return F.linear(x_shard, self.weight)

    def forward(self, x_shard: torch.Tensor) -> torch.Tensor:
        y = reduce_from_tp(self.partial(x_shard))
        return y + self.bias if self.bias is not None else y


# ----------------------------------------------------------------------------- 4. MLP and attention
class ParallelMLP(nn.Module):
    """``Z = GeLU(X A) B`` with A column-parallel, B row-parallel (Megatron sec. 3, Fig. 3a).

    ``GeLU(X A_i)`` is computed locally (GeLU is elementwise, so it commutes with the
    column split; it does not commute with a sum: ``GeLU(a + b) != GeLU(a) + GeLU(b)``).
    Communication: one all-reduce forward (in ``g``), one backward (in ``f``).
    """

    def __init__(self, mlp: nn.Module, rank: int, t: int) -> None:
        super().__init__()
        _check_module(mlp, "ParallelMLP", ("up_proj", "down_proj"), "a course_lib.model.MLP")
        self.up_proj = ColumnParallelLinear(mlp.up_proj, rank, t, copy_input=False)
        self.down_proj = RowParallelLinear(mlp.down_proj, rank, t)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """``GeLU(X A_i)``: this rank's 4C/t hidden units, no communication."""
        return F.gelu(self.up_proj(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.hidden(copy_to_tp(x)))


class ParallelAttention(nn.Module):
    """Causal self-attention with ``n_head / t`` heads per rank (Megatron sec. 3, Fig. 3b).

    q, k, v are column-parallel *by heads*: rank i's rows of each weight are exactly the
    heads ``[i H/t, (i+1) H/t)``, because head h uses output features ``[h D, (h+1) D)``.
    Heads never mix, so attention runs locally; ``out_proj`` is row-parallel.
    ``dropout`` (a :class:`KeyedDropout`, or None) drops attention probabilities: the mask of
    the whole (B, H, T, T) tensor is drawn, this rank keeps its heads.
    """

    def __init__(self, attn: nn.Module, rank: int, t: int, n_head: int, dropout: "KeyedDropout | None" = None) -> None:
        super().__init__()
        _check_module(attn, "ParallelAttention", ("q_proj", "k_proj", "v_proj", "out_proj"),
                      "a course_lib.model.CausalSelfAttention")
        check_rank(rank, t, "ParallelAttention")
        if n_head % t:
            raise ValueError(f"n_head={n_head} is not divisible by the tensor-parallel degree t={t}: "
                             "attention is split by whole heads; pick t among the divisors of n_head")
        self.head_dim, self.n_head = attn.head_dim, n_head
        self.heads_here = slice(rank * n_head // t, (rank + 1) * n_head // t)
        self.q_proj = ColumnParallelLinear(attn.q_proj, rank, t, copy_input=False)
        self.k_proj = ColumnParallelLinear(attn.k_proj, rank, t, copy_input=False)
        self.v_proj = ColumnParallelLinear(attn.v_proj, rank, t, copy_input=False)
        self.out_proj = RowParallelLinear(attn.out_proj, rank, t)
        self.dropout = dropout

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """softmax(Q K^T / sqrt(D) + M) V for this rank's heads, from their (B, T, C/t) q, k, v."""
        B, T, _ = q.shape

        def heads(u: torch.Tensor) -> torch.Tensor:
            return u.view(B, T, -1, self.head_dim).transpose(1, 2)

        q, k, v = heads(q), heads(k), heads(v)
        if self.dropout is None or not self.dropout.active:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # written out, so that the probabilities can be dropped with a keyed mask
            causal = torch.ones(T, T, dtype=torch.bool).triu(1)
            att = (q @ k.transpose(-2, -1) / self.head_dim ** 0.5).masked_fill(causal, float("-inf")).softmax(-1)
            y = self.dropout(att, (B, self.n_head, T, T), (slice(None), self.heads_here)) @ v
        return y.transpose(1, 2).reshape(B, T, -1)

    def local_heads(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's heads from the replicated input x; (B, T, C/t)."""
        return self.attend(self.q_proj(x), self.k_proj(x), self.v_proj(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.local_heads(copy_to_tp(x)))  # one f for q, k and v


class KeyedDropout(nn.Module):
    """Dropout whose masks do not depend on how the tensor is split across ranks.

    ``y = x * keep / (1 - p)``, ``keep ~ Bernoulli(1 - p)``. The k-th call draws the mask of
    the *whole* tensor (``full_shape``) from a generator seeded by ``(seed, k)`` and keeps
    the block ``index`` that this rank holds. Every rank makes the same calls in the same
    order, so:

    * in replicated regions (plain TP) every rank draws the same mask, as it must;
    * in split regions (sequence parallelism: a slice of T; attention: a slice of heads) each
      rank gets its own, different, part of one global mask;
    * the result does not depend on t: the TP and TP+SP models at t = 1, 2, 4 compute the
      same numbers for the same ``seed``.

    RNG and the single-process GPT: ``nn.Dropout`` draws from the global generator in another
    order, so with ``p > 0`` the TP model equals the single-process one *in distribution*
    only; with ``p = 0`` (or in ``eval()`` mode) no mask is drawn and they are equal number
    for number. Megatron-LM instead gives each tensor-parallel rank its own seed (a per-rank
    offset, its model-parallel RNG tracker) and draws only its shard: cheaper (no full mask),
    but then the masks, and so the numbers, change with t. Drawing the full mask costs
    ``prod(full_shape)`` random numbers per rank; only this rank's block is kept for backward.
    """

    def __init__(self, p: float, seed: int = 0) -> None:
        super().__init__()
        if not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
            raise ValueError(f"KeyedDropout: p must be a probability in [0, 1), got {p!r}")
        self.p, self.seed, self.calls = float(p), int(seed), 0

    @property
    def active(self) -> bool:
        return self.training and self.p > 0

    def forward(self, x: torch.Tensor, full_shape: tuple[int, ...] | None = None, index: tuple = ()) -> torch.Tensor:
        if not self.active:
            return x
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.calls)
        self.calls += 1
        keep = torch.empty(full_shape or x.shape).bernoulli_(1.0 - self.p, generator=gen)[index]
        if keep.shape != x.shape:
            raise ValueError(f"KeyedDropout: block {index} of the full shape {full_shape} is {tuple(keep.shape)}, "
                             f"but x is {tuple(x.shape)}; pass the full tensor's shape and this rank's slice")
        return x * (keep / (1.0 - self.p))


# ----------------------------------------------------------------------------- 5. vocabulary
class VocabParallelEmbedding(nn.Module):
    """Rows ``[start, end)`` of the token embedding table on each rank (Megatron sec. 3).

    ``E[idx] = sum_ranks E_r[idx]`` where ``E_r[idx]`` is the row if rank r owns ``idx`` and
    0 otherwise: a lookup, a mask, and ``g`` (all-reduce forward, identity backward).
    """

    def __init__(self, embedding: nn.Embedding, rank: int, t: int) -> None:
        super().__init__()
        if not isinstance(embedding, nn.Embedding):
            raise TypeError(f"VocabParallelEmbedding shards an nn.Embedding; got {type(embedding).__name__}")
        self.start, self.end = vocab_range(embedding.num_embeddings, rank, t)
        self.weight = nn.Parameter(embedding.weight.detach()[self.start:self.end].clone())
        self.weight.tp_dim = 0

    def partial(self, idx: torch.Tensor) -> torch.Tensor:
        """``E_r[idx]``: this rank's rows for the ids it owns, zeros for the others."""
        mine = (idx >= self.start) & (idx < self.end)
        local = torch.where(mine, idx - self.start, 0)
        return F.embedding(local, self.weight) * mine.unsqueeze(-1)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return reduce_from_tp(self.partial(idx))


class _VocabParallelCrossEntropy(torch.autograd.Function):
    """Cross-entropy over logits split along the vocabulary, never gathered.

    ``loss_n = log sum_v exp(z_nv - m_n) - (z_{n,y_n} - m_n)`` with ``m_n = max_v z_nv``.
    Each of ``m_n``, ``sum_v exp(z_nv - m_n)`` and ``z_{n,y_n}`` is a reduction over the
    vocabulary, so each rank reduces its slice and one all-reduce (MAX, SUM, SUM) of N
    numbers combines them: 3 N floats per rank instead of N V / t. Backward is local:
    ``dL/dz_nv = (softmax(z_n)_v - [v = y_n]) / N`` on this rank's slice.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, start: int) -> torch.Tensor:
        z = logits.detach().reshape(-1, logits.shape[-1]).float()
        y = targets.reshape(-1)
        n, v_local = z.shape
        m = z.max(dim=-1).values
        if comm.get_world_size() > 1:
            comm.all_reduce(m, op=comm.ReduceOp.MAX)
        z = z - m[:, None]
        exp = z.exp()
        sum_exp = exp.sum(dim=-1)
        mine = (y >= start) & (y < start + v_local)
        local_y = torch.where(mine, y - start, 0)
        target = torch.where(mine, z.gather(1, local_y[:, None]).squeeze(1), 0.0)
        if comm.get_world_size() > 1:
            comm.all_reduce(sum_exp)
            comm.all_reduce(target)
        softmax = exp / sum_exp[:, None]
        ctx.save_for_backward(softmax, mine, local_y)
        ctx.shape = logits.shape
        return (sum_exp.log() - target).mean()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        softmax, mine, local_y = ctx.saved_tensors
        n = softmax.shape[0]
        d = softmax.clone()
        rows = torch.arange(n)[mine]
        d[rows, local_y[mine]] -= 1.0
        return (d * (grad / n)).reshape(ctx.shape), None, None


def vocab_parallel_cross_entropy(logits_shard: torch.Tensor, targets: torch.Tensor, start: int) -> torch.Tensor:
    """Mean next-token cross-entropy from this rank's logits for token ids
    ``[start, start + logits_shard.shape[-1])``; equal on every rank to
    ``F.cross_entropy`` on the full logits. ``targets`` are global token ids."""
    if logits_shard.shape[:-1] != targets.shape:
        raise ValueError(f"logits_shard {tuple(logits_shard.shape)} must be targets {tuple(targets.shape)} "
                         "plus a last (vocabulary) dimension")
    return _VocabParallelCrossEntropy.apply(logits_shard, targets, start)


# ----------------------------------------------------------------------------- 6. the formulas
AR, AG, RS = "all_reduce", "all_gather_into_tensor", "reduce_scatter_tensor"  # comm's names for the calls


def comm_bytes_by_op(config: GPTConfig, batch_size: int, t: int, seq_len: int | None = None,
                     sequence_parallel: bool = False) -> dict[str, dict[str, int]]:
    """Bytes this rank puts into each kind of collective (``comm``'s count: the input of each
    call), per stage: ``{"block_fwd": {"all_reduce": ...}, ...}``; empty dicts where none.

    With ``N = 4 B T C`` bytes of activation, ``t > 1``, plain TP (Megatron-LM):

    * embedding forward: 1 all-reduce of N (``g``); backward: none;
    * each block, forward: 2 all-reduces of N (``g`` after out_proj and down_proj);
      backward: 2 of N (``f`` before q/k/v and before up_proj);
    * head: forward, 3 all-reduces of 4 B T (max, sum-exp, target logit); backward 1 of N
      (``f`` before the vocab-parallel lm_head); after backward (``finish_grads``): nothing.

    Sequence parallelism (Korthikanti et al. 2022): each ``g`` becomes a reduce-scatter (input
    N), each ``f`` an all-gather (input N/t); backward swaps them, and each all-gather before a
    column-parallel layer is *repeated* in backward, because only the sequence shard was kept:

    * embedding: forward 1 reduce-scatter of N; backward 1 all-gather of N/t;
    * each block: forward 2 all-gathers of N/t and 2 reduce-scatters of N; backward
      2 all-gathers of N/t (the reduce-scatters' backward) + 2 of N/t (the re-gathers) and
      2 reduce-scatters of N (the gathers' backward);
    * head: forward 1 all-gather of N/t and the loss's 3 all-reduces of 4 B T; backward
      1 all-gather of N/t (re-gather) and 1 reduce-scatter of N;
    * ``finish_grads``: 1 all-reduce of the replicated parameters' gradients (they saw T/t tokens).

    On a ring, an all-reduce of n bytes puts ``2 (t-1)/t n`` on each rank's link, a
    reduce-scatter of n or an all-gather to n ``(t-1)/t n`` (:func:`sequence_parallel.ring_wire_bytes`).
    """
    check_degree(config, t)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1 (sequences per batch), got {batch_size!r}")
    T = config.block_size if seq_len is None else seq_len
    if not isinstance(T, int) or not 1 <= T <= config.block_size:
        raise ValueError(f"seq_len must be an int in [1, block_size={config.block_size}] or None, got {seq_len!r}")
    stages = ("embed_fwd", "embed_bwd", "block_fwd", "block_bwd", "head_fwd", "head_bwd", "finish_grads")
    if t == 1:
        return {s: {} for s in stages}
    act = 4 * batch_size * T * config.n_embd
    tok = 4 * batch_size * T
    if not sequence_parallel:
        return dict(embed_fwd={AR: act}, embed_bwd={}, block_fwd={AR: 2 * act}, block_bwd={AR: 2 * act},
                    head_fwd={AR: 3 * tok}, head_bwd={AR: act}, finish_grads={})
    if T % t:
        raise ValueError(f"sequence parallelism splits T={T} into t={t} equal parts; use a T that t divides")
    sh = act // t
    return dict(embed_fwd={RS: act}, embed_bwd={AG: sh},
                block_fwd={AG: 2 * sh, RS: 2 * act}, block_bwd={AG: 4 * sh, RS: 2 * act},
                head_fwd={AG: sh, AR: 3 * tok}, head_bwd={AG: sh, RS: act},
                finish_grads={AR: 4 * param_count_per_rank(config, t)["replicated"]})


def comm_bytes_per_layer(config: GPTConfig, batch_size: int, t: int, seq_len: int | None = None,
                         sequence_parallel: bool = False) -> dict[str, int]:
    """Bytes this rank puts into collectives per stage, all kinds together: the sums of
    :func:`comm_bytes_by_op` (which gives the formulas). Plain TP, ``N = 4 B T C``: embedding
    N forward; each block 2N forward and 2N backward; head 3 x 4BT forward, N backward."""
    by_op = comm_bytes_by_op(config, batch_size, t, seq_len, sequence_parallel)
    out = {stage: sum(ops.values()) for stage, ops in by_op.items()}
    if not sequence_parallel:
        del out["finish_grads"]  # always 0 under plain TP: no weight gradient crosses ranks
    return out


def param_count_per_rank(config: GPTConfig, t: int, rank: int = 0) -> dict[str, int]:
    """Parameters on rank ``rank``: ``sharded`` (split t ways) and ``replicated`` (on every rank).

    Per block, sharded: q, k, v, out_proj and up/down weights ``12 C^2 / t`` plus the q, k, v
    and up biases ``7 C / t``; replicated: 2 LayerNorms (4C) and the out_proj and down_proj
    biases (2C). Embedding: the rank's rows of the V x C table (shared with the head when
    tied); replicated: positions ``block_size x C`` and ln_f (2C).
    """
    check_degree(config, t)
    check_rank(rank, t, "param_count_per_rank")
    C, L = config.n_embd, config.n_layer
    b = 1 if config.bias else 0
    start, end = vocab_range(config.vocab_size, rank, t)
    sharded = L * (12 * C * C + b * 7 * C) // t + (end - start) * C
    if not config.tie_weights:
        sharded += (end - start) * C
    replicated = L * (2 * (1 + b) * C + b * 2 * C) + config.block_size * C + (1 + b) * C
    return dict(sharded=sharded, replicated=replicated, total=sharded + replicated)


def check_degree(config: GPTConfig, t: int) -> None:
    """Raise a clear error if ``config`` cannot be split ``t`` ways (heads, vocabulary)."""
    if not isinstance(config, GPTConfig):
        raise TypeError(f"expected a course_lib.model.GPTConfig, got {type(config).__name__}")
    if not isinstance(t, int) or isinstance(t, bool) or t < 1:
        raise ValueError(f"the tensor-parallel degree t must be an int >= 1, got {t!r}")
    if config.n_head % t:
        raise ValueError(f"n_head={config.n_head} is not divisible by t={t}: attention is split by whole "
                         f"heads; use t in {[d for d in range(1, config.n_head + 1) if config.n_head % d == 0]}")
    if config.vocab_size < t:
        raise ValueError(f"vocab_size={config.vocab_size} < t={t}: every rank needs at least one vocabulary row")
