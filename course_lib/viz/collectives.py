"""Chapter 0's pictures: what each rank holds before and after a collective, drawn from real runs."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import torch

# One colour per source rank: in the demos a value's tens digit is the rank it came from.
PALETTE = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C"]


def _colour(v: float, world_size: int, summed: bool) -> str:
    if summed or v != int(v) or not 0 <= v < 10 * world_size:
        return "#d9d9d9"  # a sum or anything else: no single origin
    return PALETTE[int(v) // 10 % len(PALETTE)]


def draw_ranks(ax, data: Sequence[torch.Tensor | None], title: str, summed: bool = False, fmt: str = "{:g}") -> None:
    """One row per rank, one box per element; ``None`` means the rank holds no result."""
    p = len(data)
    width = max((len(t) for t in data if t is not None), default=1)
    for r, t in enumerate(data):
        y = p - 1 - r
        ax.text(-0.6, y, f"rank {r}", ha="right", va="center", fontsize=9)
        if t is None:
            ax.text(width / 2 - 0.5, y, "(nothing)", ha="center", va="center", color="#999999", fontsize=8)
            continue
        for i, v in enumerate(t.flatten().tolist()):
            ax.add_patch(plt.Rectangle((i - 0.45, y - 0.4), 0.9, 0.8, color=_colour(v, p, summed)))
            ax.text(i, y, fmt.format(v), ha="center", va="center", fontsize=8)
    ax.set_xlim(-2.2, max(width, 1) - 0.4)
    ax.set_ylim(-0.6, p - 0.4)
    ax.set_title(title, fontsize=10)
    ax.axis("off")


def draw_collective(name: str, results: list[dict], ax_pair=None):
    """Before / after panels of one collective, from ``launch(collective_before_after, p, name)``."""
    if ax_pair is None:
        fig, ax_pair = plt.subplots(1, 2, figsize=(8, 0.45 * len(results) + 0.8))
    before = [r["before"] for r in results]
    after = [r["after"] for r in results]
    summed = name in ("reduce", "all_reduce", "reduce_scatter")
    fmt = "{:.0f} ms" if name == "barrier" else "{:g}"
    draw_ranks(ax_pair[0], before, f"{name}: before" + (" (arrive)" if name == "barrier" else ""), fmt=fmt,
               summed=name == "barrier")
    draw_ranks(ax_pair[1], after, f"{name}: after" + (" (leave)" if name == "barrier" else ""), summed=summed
               or name == "barrier", fmt=fmt)
    return ax_pair
