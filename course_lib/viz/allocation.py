"""Chapter 1's pictures: which device holds which module, and the pipeline's flow-shop timeline
(:func:`course_lib.allocation.cost.flow_shop`)."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np

from course_lib.allocation.cost import device_load, flow_shop, stages
from course_lib.allocation.problem import Problem, check_int


def draw_placement(problem: Problem, x: Sequence[int], ax, title: str = "") -> None:
    """One coloured cell per module, labelled with its device; memory use per device below."""
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
    x = problem.check_assignment(x)
    n_microbatches = check_int(n_microbatches, "draw_timeline: n_microbatches", 1, "e.g. 8")
    runs = stages(x)
    load = device_load(problem, x)
    t = [load[d] for _, _, d in runs]
    start = flow_shop(t, n_microbatches)
    colors = plt.cm.viridis(np.linspace(0.1, 0.9, n_microbatches))
    makespan = float(start[-1, -1] + t[-1]) if runs else 0.0
    for s, (a, b, d) in enumerate(runs):
        for i in range(n_microbatches):
            ax.broken_barh([(start[i, s], t[s])], (s - 0.4, 0.8), color=colors[i], edgecolor="white")
            if t[s] > makespan / 60:  # a label on a sliver of a bar only smudges it
                ax.text(start[i, s] + t[s] / 2, s, str(i), ha="center", va="center", fontsize=7, color="white")
    ax.set_yticks(range(len(runs)), [f"{problem.devices[d].name}\nmodules {a}..{b - 1}" for a, b, d in runs],
                  fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("time [s]")
    ax.set_title(title, fontsize=9)
    return makespan
