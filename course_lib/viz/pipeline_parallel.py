"""Gantt charts of pipeline schedules: one row per rank, one box per forward / backward."""
from __future__ import annotations

import matplotlib.pyplot as plt

from course_lib.pipeline_simulator import Timeline

COLOURS = {"F": "#4C72B0", "B": "#DD8452", "W": "#55A868"}


def draw_gantt(tl: Timeline, ax=None, title: str | None = None, unit: str = "ms", scale: float = 1e3):
    """Draw ``tl``: rank 0 on top; F blue, B orange, W green; the number is the micro-batch, a
    lighter box a later model chunk (interleaving). Title: the bubble of this timeline."""
    if ax is None:
        _, ax = plt.subplots(figsize=(10, 0.45 * tl.schedule.p + 0.9))
    p, v = tl.schedule.p, tl.schedule.v
    t0 = min(e[1] for ev in tl.events for e in ev)
    for r, ev in enumerate(tl.events):
        for a, s, e in ev:
            if not a.is_compute:
                continue
            chunk = a.stage // p
            ax.barh(p - 1 - r, (e - s) * scale, left=(s - t0) * scale, height=0.8,
                    color=COLOURS[a.kind], alpha=1.0 - 0.45 * chunk / max(v - 1, 1) if v > 1 else 1.0,
                    edgecolor="white", linewidth=0.5)
            if (e - s) * scale > 0.012 * tl.makespan * scale:
                ax.text((s - t0 + (e - s) / 2) * scale, p - 1 - r, str(a.mb), ha="center", va="center",
                        fontsize=7, color="white")
    ax.set_yticks(range(p), [f"rank {r}" for r in reversed(range(p))])
    ax.set_xlabel(unit)
    ax.set_xlim(0, tl.makespan * scale)
    ax.set_title(title or f"{tl.schedule.name}: bubble {100 * tl.bubble():.1f}%", fontsize=10)
    return ax


def draw_side_by_side(simulated: Timeline, measured: Timeline, title: str = ""):
    """Simulated (left, predicted seconds) and measured (right) timelines of one schedule."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.45 * simulated.schedule.p + 1.1))
    draw_gantt(simulated, axes[0], f"{title} simulated: bubble {100 * simulated.bubble():.1f}%")
    draw_gantt(measured, axes[1], f"{title} measured: bubble {100 * measured.bubble():.1f}%")
    fig.tight_layout()
    return fig
