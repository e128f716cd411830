"""Pictures of a placement: which device holds which module, and the pipeline timeline.

The timeline is the flow-shop schedule behind `cost.pipeline_time`: stage s (a device with
its contiguous block of modules) takes t_s = L_d per micro-batch, and micro-batch i starts
stage s when both stage s-1 has finished i and stage s has finished i-1:

    start(i, s) = max(end(i, s-1), end(i-1, s)),   end(i, s) = start(i, s) + t_s.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .cost import device_load, stages
from .problem import Problem, check_int, check_number


def flow_shop(stage_times: Sequence[float], n_microbatches: int) -> np.ndarray:
    """start[i, s] of micro-batch i on stage s (see the module docstring); end = start + t_s."""
    n_microbatches = check_int(n_microbatches, "flow_shop: n_microbatches", 1, "e.g. 8")
    t = np.array([check_number(v, f"flow_shop: stage_times[{s}]", "seconds >= 0")
                  for s, v in enumerate(stage_times)])
    if np.any(t < 0):
        raise ValueError(f"flow_shop: stage times must be >= 0 seconds, got {t.tolist()}")
    start = np.zeros((n_microbatches, len(t)))
    end = np.zeros_like(start)
    for i in range(n_microbatches):
        for s in range(len(t)):
            start[i, s] = max(end[i, s - 1] if s else 0.0, end[i - 1, s] if i else 0.0)
            end[i, s] = start[i, s] + t[s]
    return start


def draw_placement(problem: Problem, x: Sequence[int], ax, title: str = "") -> None:
    """One coloured cell per module, labelled with its device; memory use per device below."""
    import matplotlib.pyplot as plt

    x = problem.check_assignment(x)
    colors = plt.cm.tab10(np.arange(problem.n) % 10)
    for j, d in enumerate(x):
        ax.add_patch(plt.Rectangle((j, 0), 0.95, 1, color=colors[d]))
        ax.text(j + 0.47, 0.5, problem.devices[d].name, ha="center", va="center", fontsize=7, rotation=90)
    ax.set_xlim(0, problem.k)
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    ax.set_xticks(np.arange(problem.k) + 0.47, [m.name for m in problem.modules], rotation=90, fontsize=7)
    ax.set_title(title, fontsize=9)


def draw_timeline(problem: Problem, x: Sequence[int], n_microbatches: int, ax, title: str = "") -> float:
    """Gantt chart of `n_microbatches` flowing through the pipeline x; returns the makespan."""
    import matplotlib.pyplot as plt

    x = problem.check_assignment(x)
    n_microbatches = check_int(n_microbatches, "draw_timeline: n_microbatches", 1, "e.g. 8")
    runs = stages(x)
    load = device_load(problem, x)
    t = [load[d] for _, _, d in runs]
    start = flow_shop(t, n_microbatches)
    colors = plt.cm.viridis(np.linspace(0.1, 0.9, n_microbatches))
    for s, (a, b, d) in enumerate(runs):
        for i in range(n_microbatches):
            ax.broken_barh([(start[i, s], t[s])], (s - 0.4, 0.8), color=colors[i], edgecolor="white")
            if t[s] > 0:
                ax.text(start[i, s] + t[s] / 2, s, str(i), ha="center", va="center", fontsize=7, color="white")
    ax.set_yticks(range(len(runs)), [f"{problem.devices[d].name}\nmodules {a}..{b - 1}" for a, b, d in runs],
                  fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("time [s]")
    ax.set_title(title, fontsize=9)
    return float(start[-1, -1] + t[-1]) if runs else 0.0
