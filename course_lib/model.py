"""The course's reference model: a small GPT-2-style decoder-only transformer.

    idx (B, T) --embed--> h (B, T, C) --blocks[0..L)--> h --head (ln_f, lm_head)--> logits (B, T, V)

The three stages are separate methods (:meth:`GPT.embed`, :meth:`GPT.run_blocks`,
:meth:`GPT.head`) because later chapters cut the model apart: pipeline parallelism puts
``blocks[a:b]`` on different ranks, tensor parallelism shards the Linear layers inside
:class:`CausalSelfAttention` and :class:`MLP`. To keep that sharding simple:

* q, k, v are three Linear layers (not GPT-2's fused ``c_attn``), so each can be split
  column-wise by heads without un-interleaving a fused weight;
* attention infers the number of heads from its input (``q.shape[-1] // head_dim``), so a
  rank holding ``n_head / tp`` heads runs the very same ``forward``.

References: Vaswani et al. 2017, "Attention Is All You Need" (attention, transformer);
Radford et al. 2019, "Language Models are Unsupervised Multitask Learners" (GPT-2:
pre-LayerNorm, init, weight tying via Press & Wolf 2017); structure in the spirit of
Karpathy's nanoGPT. Code written for this course.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class GPTConfig:
    """Model hyper-parameters. Validated on construction so mistakes fail early and clearly."""

    vocab_size: int
    block_size: int = 64        # max context length T
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128           # model width C; head_dim = n_embd // n_head
    dropout: float = 0.0        # 0.0 keeps every run bit-reproducible (the course default)
    bias: bool = True           # biases in Linear and LayerNorm, as in GPT-2
    tie_weights: bool = True    # lm_head.weight is tok_emb.weight (Press & Wolf 2017)

    def __post_init__(self) -> None:
        for field in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"GPTConfig.{field} must be a positive int, got {value!r}.")
        if self.n_embd % self.n_head != 0:
            divisors = [h for h in range(1, self.n_embd + 1) if self.n_embd % h == 0 and h <= 16]
            raise ValueError(
                f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}: each head gets "
                f"n_embd / n_head channels. Pick n_head from {divisors} or change n_embd.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}.")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention (Vaswani et al. 2017, sec. 3.2).

    ``Attention(Q, K, V) = softmax(Q K^T / sqrt(d_head) + M) V`` with ``M[i, j] = -inf``
    for ``j > i`` (a token sees only itself and the past), per head, then ``out_proj``.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        C = config.n_embd
        self.head_dim = config.head_dim
        self.q_proj = nn.Linear(C, C, bias=config.bias)
        self.k_proj = nn.Linear(C, C, bias=config.bias)
        self.v_proj = nn.Linear(C, C, bias=config.bias)
        self.out_proj = nn.Linear(C, C, bias=config.bias)
        self.attn_dropout_p = config.dropout  # SDPA takes a probability, not a module
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape

        # (B, T, H*D) -> (B, H, T, D). H is read from the data, not the config, so a
        # tensor-parallel rank that owns only some heads runs this code unchanged.
        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(B, T, -1, self.head_dim).transpose(1, 2)

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        # Fused kernel for softmax(QK^T/sqrt(D) + causal mask) V; same math, less memory.
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.attn_dropout_p if self.training else 0.0)
        y = y.transpose(1, 2).reshape(B, T, -1)  # concatenate heads back: (B, T, H*D)
        return self.resid_dropout(self.out_proj(y))


class MLP(nn.Module):
    """Position-wise feed-forward network: ``down_proj(GELU(up_proj(x)))``, hidden 4C.

    Vaswani et al. 2017 sec. 3.3 (with ReLU); GELU from Hendrycks & Gimpel 2016, as in GPT-2.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.up_proj = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.down_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down_proj(F.gelu(self.up_proj(x))))


class Block(nn.Module):
    """Pre-LayerNorm transformer block (GPT-2; Xiong et al. 2020 "On Layer Normalization
    in the Transformer Architecture"): ``x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))``.

    Normalising *inside* the residual branch keeps the residual path an identity, which
    is what lets deep stacks train without warm-up tricks.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    """Decoder-only language model: token + learned position embeddings, ``n_layer``
    :class:`Block` s, final LayerNorm, linear head to vocabulary logits."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos_emb = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_weights:
            # One matrix both reads tokens in and scores tokens out: fewer parameters,
            # and better small-model perplexity (Press & Wolf 2017). Note for pipeline
            # parallelism: the first and last stage then share this parameter.
            self.lm_head.weight = self.tok_emb.weight
        self.apply(self._init_weights)
        # GPT-2 scales the init of layers that write into the residual stream by
        # 1/sqrt(2 * n_layer): 2 such writes per block, so the stream's variance
        # stays O(1) regardless of depth.
        for name, p in self.named_parameters():
            if name.endswith(("out_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """GPT-2 init: weights ~ N(0, 0.02), biases 0, LayerNorm (1, 0)."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        # nn.LayerNorm already initialises to weight=1, bias=0.

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count; tied weights counted once. ``non_embedding`` drops ``pos_emb``
        (and ``tok_emb`` when it is not tied to the head), the convention of Kaplan et al. 2020."""
        n = sum(p.numel() for p in self.parameters())  # parameters() de-duplicates ties
        if non_embedding:
            n -= self.pos_emb.weight.numel()
            if not self.config.tie_weights:
                n -= self.tok_emb.weight.numel()
        return n

    # --- the three separable stages ---------------------------------------------------

    def check_idx(self, idx: torch.Tensor) -> None:
        """Raise a clear error for inputs the model cannot embed."""
        if not isinstance(idx, torch.Tensor) or idx.dim() != 2:
            shape = tuple(idx.shape) if isinstance(idx, torch.Tensor) else type(idx).__name__
            raise ValueError(f"idx must be a (batch, time) tensor of token ids, got {shape}. "
                             "For one sequence use idx[None, :].")
        if idx.dtype not in (torch.long, torch.int32):  # what nn.Embedding accepts
            raise TypeError(f"idx must hold integer token ids, got dtype {idx.dtype}; "
                            "use torch.tensor(ids, dtype=torch.long).")
        T = idx.shape[1]
        if T > self.config.block_size:
            raise ValueError(
                f"sequence length {T} exceeds block_size={self.config.block_size} (the number "
                f"of learned positions). Crop the input to its last {self.config.block_size} "
                "tokens, e.g. idx[:, -block_size:], or build the model with a larger block_size.")
        if idx.numel() > 0:
            lo, hi = int(idx.min()), int(idx.max())
            if lo < 0 or hi >= self.config.vocab_size:
                raise ValueError(
                    f"token ids must be in [0, {self.config.vocab_size - 1}] (vocab_size="
                    f"{self.config.vocab_size}), got min {lo}, max {hi}. Was the data encoded "
                    "with a different tokenizer than the one used to size the model?")

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        """``h_0[b, t] = tok_emb[idx[b, t]] + pos_emb[t]``; shape (B, T, C)."""
        self.check_idx(idx)
        pos = torch.arange(idx.shape[1], device=idx.device)
        return self.drop(self.tok_emb(idx) + self.pos_emb(pos))

    def run_blocks(self, h: torch.Tensor, start: int = 0, end: int | None = None) -> torch.Tensor:
        """Apply ``blocks[start:end]`` in order, i.e. one pipeline stage's share of layers."""
        n = len(self.blocks)
        end = n if end is None else end
        if not 0 <= start <= end <= n:
            raise ValueError(
                f"need 0 <= start <= end <= n_layer={n}, got start={start}, end={end}.")
        for block in self.blocks[start:end]:
            h = block(h)
        return h

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """``logits = ln_f(h) @ W_head^T``; shape (B, T, vocab_size)."""
        return self.lm_head(self.ln_f(h))

    @staticmethod
    def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy ``-1/(B T) sum log softmax(logits)[target]`` (nats)."""
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

    def forward(self, idx: torch.Tensor,
                targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return ``(logits, loss)``; ``loss`` is None when no ``targets`` are given."""
        logits = self.head(self.run_blocks(self.embed(idx)))
        if targets is None:
            return logits, None
        if targets.shape != idx.shape:
            raise ValueError(f"targets shape {tuple(targets.shape)} must equal idx shape "
                             f"{tuple(idx.shape)} (one next-token target per input position).")
        if targets.numel() > 0 and (int(targets.min()) < 0
                                    or int(targets.max()) >= self.config.vocab_size):
            raise ValueError(f"target ids must be in [0, {self.config.vocab_size - 1}], got min "
                             f"{int(targets.min())}, max {int(targets.max())}.")
        return logits, self.loss_fn(logits, targets)

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Autoregressive sampling: repeat ``x_{t+1} ~ softmax(logits_t / temperature)``
        (restricted to the ``top_k`` most likely tokens if given), feeding the last
        ``block_size`` tokens back in. Returns ``idx`` with ``max_new_tokens`` appended.
        ``temperature=0`` means greedy (argmax). Pass ``generator`` for reproducible samples.
        """
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}.")
        was_training = self.training
        self.eval()  # no dropout while sampling
        try:
            for _ in range(max_new_tokens):
                logits, _ = self(idx[:, -self.config.block_size:])
                logits = logits[:, -1, :]
                if temperature == 0:
                    nxt = logits.argmax(dim=-1, keepdim=True)
                else:
                    logits = logits / temperature
                    if top_k is not None:
                        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, [-1]]
                        logits = logits.masked_fill(logits < kth, float("-inf"))
                    probs = F.softmax(logits, dim=-1)
                    nxt = torch.multinomial(probs, num_samples=1, generator=generator)
                idx = torch.cat([idx, nxt], dim=1)
        finally:
            self.train(was_training)
        return idx
