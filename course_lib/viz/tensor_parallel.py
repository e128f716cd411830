"""Chapter 5 pictures: which rank holds which shard of each weight of one tensor-parallel block;
activation bytes per rank under plain TP and under Megatron-SP."""
from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.patches import Rectangle

from course_lib.model import GPTConfig
from course_lib.tensor_parallel import vocab_range
from course_lib.tp_gpt import activation_bytes_per_block

RANK_COLOURS = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C"]


def _matrix(ax, x0: float, rows: int, cols: int, split: str | None, t: int, label: str,
            pieces: list[tuple[int, int]] | None = None, scale: float = 1.0) -> float:
    """Draw a (rows x cols) weight at x0, split by ``rows`` / ``cols`` / None (replicated)."""
    h, w = rows * scale, max(cols, 3) * scale  # a vector (LayerNorm gain) drawn 3 units wide
    if split is None:
        ax.add_patch(Rectangle((x0, -h), w, h, facecolor="#DDDDDD", edgecolor="black", hatch="//"))
    else:
        n = rows if split == "rows" else cols
        pieces = pieces or [(r * n // t, (r + 1) * n // t) for r in range(t)]
        for r, (a, b) in enumerate(pieces):
            if split == "rows":
                rect = Rectangle((x0, -b * scale), w, (b - a) * scale)
            else:
                rect = Rectangle((x0 + a * w / n, -h), (b - a) * w / n, h)
            rect.set(facecolor=RANK_COLOURS[r % len(RANK_COLOURS)], edgecolor="black")
            ax.add_patch(rect)
    ax.text(x0 + w / 2, 1.5, label, ha="center", va="bottom", fontsize=7)
    ax.text(x0 + w / 2, -h - 1.5, f"{rows}x{cols}", ha="center", va="top", fontsize=7)
    return x0 + w + 16


def draw_block_shards(config: GPTConfig, t: int, ax=None):
    """One block's weights in PyTorch's (out, in) layout, coloured by the rank that holds each
    piece: column-parallel layers split rows (output features), row-parallel layers split
    columns (input features); grey hatched = replicated on every rank."""
    if ax is None:
        _, ax = plt.subplots(figsize=(13, 3.6))
    C, V = config.n_embd, config.vocab_size
    s = 1.0
    x = 0.0
    x = _matrix(ax, x, C, 1, None, t, "ln_1", scale=s)
    for name in ("q_proj", "k_proj", "v_proj"):
        x = _matrix(ax, x, C, C, "rows", t, f"{name}\ncolumn-par.", scale=s)
    x = _matrix(ax, x, C, C, "cols", t, "out_proj\nrow-par.", scale=s)
    x = _matrix(ax, x, C, 1, None, t, "ln_2", scale=s)
    x = _matrix(ax, x, 4 * C, C, "rows", t, "up_proj\ncolumn-par.", scale=s)
    x = _matrix(ax, x, C, 4 * C, "cols", t, "down_proj\nrow-par.", scale=s)
    pieces = [vocab_range(V, r, t) for r in range(t)]
    x = _matrix(ax, x, V, C, "rows", t, "tok_emb = lm_head\nvocab-par.", pieces=pieces, scale=s)
    ax.set_xlim(-2, x)
    ax.set_ylim(-4 * C * s - 6, 24)
    ax.set_aspect("equal")
    ax.axis("off")
    handles = [Rectangle((0, 0), 1, 1, facecolor=RANK_COLOURS[r]) for r in range(t)]
    handles.append(Rectangle((0, 0), 1, 1, facecolor="#DDDDDD", hatch="//"))
    ax.legend(handles, [f"rank {r}" for r in range(t)] + ["replicated"], loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    ax.set_title(f"t = {t}: which rank holds which shard (one block and the vocabulary)", fontsize=10)
    return ax


def plot_activation_bytes(config: GPTConfig, batch_size: int, measured: dict[tuple[int, bool], int] | None = None,
                          degrees: tuple[int, ...] = (1, 2, 4), ax=None):
    """Bytes one block keeps for backward on each rank, against t: plain TP (the LayerNorm
    regions stay whole) and Megatron-SP (everything split, the single-process bytes over t).
    Bars: :func:`~course_lib.tp_gpt.activation_bytes_per_block`; dots: ``measured``
    ``{(t, sequence_parallel): bytes}`` where given."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3))
    T, width = config.block_size, 0.38
    for k, (sp, label, colour) in enumerate(((False, "tensor parallel", "#4C72B0"),
                                              (True, "+ sequence parallel", "#55A868"))):
        xs = [i + (k - 0.5) * width for i in range(len(degrees))]
        ys = [activation_bytes_per_block(config, batch_size, T, t, sp and t > 1) / 1e3 for t in degrees]
        ax.bar(xs, ys, width, color=colour, label=f"{label} (formula)")
        for x, t in zip(xs, degrees):
            if measured and (t, sp) in measured:
                ax.plot(x, measured[(t, sp)] / 1e3, "ko", ms=4)
    if measured:
        ax.plot([], [], "ko", ms=4, label="measured (saved_tensors_hooks)")
    ax.set_xticks(range(len(degrees)), [f"t = {t}" for t in degrees])
    ax.set(ylabel="kB per rank", title=f"activations one block keeps for backward (B={batch_size}, T={T})")
    ax.legend(fontsize=8)
    return ax
