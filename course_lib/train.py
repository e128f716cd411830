"""Single-process training: the reference every parallel chapter compares against.

One optimisation step is ``train_step = compute_loss_and_grads + optimizer.step``. The
parallel chapters keep the first half, insert their communication (all-reduce of
gradients, pipeline send/recv, ...), then step; then they check that their losses and
parameters match what :func:`train_step` gives on the same global batch.

Everything is deterministic given the seeds: the model from ``torch.manual_seed``
before :class:`~course_lib.model.GPT` is built, the batches from the ``seed`` passed to
:func:`train` (a private ``torch.Generator``, so nothing else can disturb the stream).

``./course bench train`` (:mod:`course_lib.bench.train`) trains the reference model, times it to the
target loss and prints a sample.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from course_lib.configs import reference_config
from course_lib.data import CharTokenizer, TextDataset, get_batch, load_dataset
from course_lib.model import GPT
from course_lib.progress import progress as progress_bar

# The reference run's settings. ``./course bench train`` measures it against the targets below.
# Why lr 2e-3: the loss falls steadily, while at 6e-3..1e-2 it stalls near the entropy of the
# character frequencies and its escape is erratic and depends on the thread count, which would
# make every parallel chapter's comparison with this run fragile.
DEFAULT_BATCH_SIZE = 32
DEFAULT_LR = 2e-3
DEFAULT_STEPS = 600
DEFAULT_EVAL_EVERY = 100
DEFAULT_EVAL_ITERS = 8
REFERENCE_TARGET_LOSS = 0.40     # val loss (nats/char) the reference run must reach
REFERENCE_TIME_BUDGET_S = 60.0   # ... within this wall time on 2 CPU threads


def build_reference(seed: int = 0) -> tuple[GPT, TextDataset]:
    """Load the dataset and build the default model, seeded: same weights on every call
    (and on every rank, which is how data parallel replicas start identical)."""
    data = load_dataset()
    torch.manual_seed(seed)
    return GPT(reference_config(data.vocab_size)), data


# --------------------------------------------------------------------------------------
# Optimizers
# --------------------------------------------------------------------------------------


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay only matrices (Linear weights, embeddings), not biases or LayerNorm gains,
    following GPT-2/3 practice: decaying a gain or a bias toward 0 has no regularising
    meaning, it only shifts the layer."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: torch.nn.Module, name: str = "adamw", lr: float = DEFAULT_LR,
                   weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.99),
                   momentum: float = 0.0) -> torch.optim.Optimizer:
    """``"adamw"``: AdamW (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization"):
    ``m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= lr (m_hat / (sqrt(v_hat) + eps) + wd p)``.
    ``"sgd"``: ``p -= lr g`` (with optional heavy-ball ``momentum``), whose update is a
    plain function of the gradient, handy for checking parallel gradients step by step.

    With ``weight_decay=0`` (the reference default) all parameters are a single group, so
    a sharded optimizer (ZeRO) only has to flatten one list to match it.
    """
    params = param_groups(model, weight_decay) if weight_decay > 0 else list(model.parameters())
    if name == "adamw":
        # foreach=False: the simple per-parameter loop, so a hand-written sharded
        # AdamW can match it bit for bit without relying on fused-kernel rounding.
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay,
                                 foreach=False)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                               foreach=False)
    raise ValueError(f"unknown optimizer {name!r}; choose 'adamw' or 'sgd'.")


# --------------------------------------------------------------------------------------
# One step, split in two so parallel versions can communicate in between
# --------------------------------------------------------------------------------------


def compute_loss_and_grads(model: GPT, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Forward + backward: leaves ``p.grad = d loss / d p`` for the mean cross-entropy over
    this batch, returns the (detached) loss. Gradients are *overwritten*, not accumulated."""
    model.zero_grad(set_to_none=True)
    _, loss = model(x, y)
    loss.backward()
    return loss.detach()


def train_step(model: GPT, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               grad_clip: float | None = None) -> float:
    """One reference optimisation step on the batch ``(x, y)``; returns its loss.

    ``grad_clip``: rescale gradients so their global L2 norm is at most this value
    (Pascanu et al. 2013). Off by default: a parallel version would need the norm over
    *all* shards, one more thing to get right before the basics match.
    """
    loss = compute_loss_and_grads(model, x, y)
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss.item()


@torch.no_grad()
def estimate_loss(model: GPT, data: torch.Tensor, batch_size: int = DEFAULT_BATCH_SIZE,
                  iters: int = DEFAULT_EVAL_ITERS, seed: int = 1234) -> float:
    """Mean loss over ``iters`` batches drawn with a *fixed* seed: every call scores the
    same windows, so successive evaluations differ only because the model changed."""
    was_training = model.training
    model.eval()
    g = torch.Generator().manual_seed(seed)
    losses = [model(*get_batch(data, batch_size, model.config.block_size, g))[1].item()
              for _ in range(iters)]
    model.train(was_training)
    return sum(losses) / len(losses)


# --------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------


@dataclass
class History:
    """Losses of a run. ``train_loss[i]`` is the loss of step ``i`` (before its update);
    ``val_loss`` holds ``(steps_done, loss)`` pairs, ``val_seconds`` the wall time since
    the start at which each was measured; ``seconds`` is the whole run."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[tuple[int, float]] = field(default_factory=list)
    val_seconds: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def seconds_to(self, target: float) -> float | None:
        """Wall time of the first evaluation with val loss <= ``target`` (None: never)."""
        return next((t for t, (_, v) in zip(self.val_seconds, self.val_loss) if v <= target),
                    None)

    @property
    def final_val_loss(self) -> float:
        return self.val_loss[-1][1] if self.val_loss else math.nan


def train(model: GPT, data: TextDataset, steps: int = DEFAULT_STEPS,
          batch_size: int = DEFAULT_BATCH_SIZE, lr: float = DEFAULT_LR,
          optimizer: str | torch.optim.Optimizer = "adamw", weight_decay: float = 0.0,
          grad_clip: float | None = None, eval_every: int = DEFAULT_EVAL_EVERY,
          eval_iters: int = DEFAULT_EVAL_ITERS, seed: int = 0,
          progress: bool = True) -> History:
    """Train ``model`` in place for ``steps`` steps on ``data.train``; returns a :class:`History`.

    Batches come from ``get_batch(data.train, batch_size, block_size, Generator(seed))``,
    step after step. Validation loss is measured at step 0, every ``eval_every`` steps,
    and after the last step (``eval_every=0`` disables all but the last). ``optimizer`` is
    ``"adamw"``/``"sgd"`` (built with ``lr`` and ``weight_decay``) or a ready optimizer.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}.")
    opt = (make_optimizer(model, optimizer, lr=lr, weight_decay=weight_decay)
           if isinstance(optimizer, str) else optimizer)
    gen = torch.Generator().manual_seed(seed)
    hist = History()
    block_size = model.config.block_size
    model.train()
    t0 = time.perf_counter()
    bar = progress_bar(range(steps), disable=not progress, desc="train", unit="step")
    for step in bar:
        if eval_every and step % eval_every == 0:
            hist.val_loss.append((step, estimate_loss(model, data.val, batch_size, eval_iters)))
            hist.val_seconds.append(time.perf_counter() - t0)
        x, y = get_batch(data.train, batch_size, block_size, gen)
        hist.train_loss.append(train_step(model, opt, x, y, grad_clip))
        postfix = {"loss": f"{hist.train_loss[-1]:.3f}"}
        if hist.val_loss:
            postfix["val"] = f"{hist.val_loss[-1][1]:.3f}"
        bar.set_postfix(postfix, refresh=False)  # refresh=False: redraw at tqdm's own pace
    hist.val_loss.append((steps, estimate_loss(model, data.val, batch_size, eval_iters)))
    hist.seconds = time.perf_counter() - t0
    hist.val_seconds.append(hist.seconds)
    bar.close()
    return hist


def sample(model: GPT, tokenizer: CharTokenizer, prompt: str = "One sunny day,",
           max_new_tokens: int = 200, temperature: float = 0.8, top_k: int | None = None,
           seed: int = 0) -> str:
    """Continue ``prompt`` with ``max_new_tokens`` sampled characters, reproducible by ``seed``."""
    idx = torch.tensor([tokenizer.encode(prompt)], dtype=torch.long)
    g = torch.Generator().manual_seed(seed)
    out = model.generate(idx, max_new_tokens, temperature=temperature, top_k=top_k, generator=g)
    return tokenizer.decode(out[0])

