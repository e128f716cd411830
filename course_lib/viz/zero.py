"""Chapter 4's ZeRO picture: the model state a rank holds at each stage, measured against the formula."""
from __future__ import annotations

from course_lib.zero import formula_bytes


def plot_memory(ax, held: dict[int, dict[str, int]], psi: int, world_size: int) -> None:
    """Stacked bars of measured bytes per rank for each stage, with the formula as a black tick."""
    parts = [("params", "#4C72B0"), ("grads", "#55A868"), ("optimizer", "#DD8452")]
    stages = sorted(held)
    for s in stages:
        bottom = 0.0
        for name, colour in parts:
            v = held[s][name] / 1e3
            ax.bar(s, v, bottom=bottom, color=colour, label=name if s == stages[0] else None)
            bottom += v
        ax.plot([s - 0.4, s + 0.4], [sum(formula_bytes(psi, world_size, s).values()) / 1e3] * 2, "k-", lw=2,
                label="formula (4+4+8)Psi, /p per stage" if s == stages[0] else None)
    ax.set_xticks(stages, [f"stage {s}" if s else "DDP" for s in stages])
    ax.set_ylabel("kB per rank")
    ax.set_title(f"model state per rank, p = {world_size}, Psi = {psi:,}", fontsize=10)
    ax.legend(fontsize=8)
