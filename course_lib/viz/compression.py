"""Chapter 7's plots: loss against steps, against bytes sent, and against modelled wall-clock time."""
from __future__ import annotations

import matplotlib.pyplot as plt

from course_lib.compression_time import Cluster, predict_step_seconds
from course_lib.runs.compression import make_compressor, mean_losses
from course_lib.viz.collectives import PALETTE

_STYLES = ["-", "--", ":", "-."]


def _top(runs: dict[str, list[dict]]) -> float:
    """Upper y-limit: a little above the starting loss, so that a method that diverges (sign at
    SGD's learning rate: a +-1 step per coordinate) leaves the plot instead of squashing it."""
    return 1.15 * max(mean_losses(res)[0] for res in runs.values())


def _style(i: int) -> dict:
    return {"color": PALETTE[i % len(PALETTE)], "ls": _STYLES[i // len(PALETTE) % len(_STYLES)], "lw": 1.4}


def plot_loss_steps_bytes(runs: dict[str, list[dict]], title: str = "") -> plt.Figure:
    """Two panels: global-batch loss against step and against cumulative MB handed to collectives
    per rank (log scale), one curve per method. ``runs``: method -> the ranks' results of
    :func:`course_lib.runs.compression.train_compressed`."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8))
    for i, (method, res) in enumerate(runs.items()):
        loss = mean_losses(res)
        mb = [res[0]["bytes_per_step"] * (s + 1) / 1e6 for s in range(len(loss))]
        a.plot(range(1, len(loss) + 1), loss, label=method, **_style(i))
        b.plot(mb, loss, label=method, **_style(i))
    a.set(xlabel="step", ylabel="training loss (global batch)", ylim=(None, _top(runs)))
    b.set(xlabel="MB sent per rank (collective inputs, log)", xscale="log", ylim=(None, _top(runs)))
    b.legend(fontsize=7, ncol=2)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_time_to_loss(runs: dict[str, list[dict]], shapes: list[tuple[int, ...]], clusters: list[Cluster],
                      flop_per_device: float) -> plt.Figure:
    """One panel per cluster: the measured loss curves against the *modelled* wall-clock time,
    step k at ``k * predict_step_seconds(method, cluster)``."""
    fig, axes = plt.subplots(1, len(clusters), figsize=(5.5 * len(clusters), 3.8), squeeze=False)
    for ax, cluster in zip(axes[0], clusters):
        for i, (method, res) in enumerate(runs.items()):
            loss = mean_losses(res)
            t = predict_step_seconds(make_compressor(method), shapes, cluster, flop_per_device)
            ax.plot([1e3 * t * (s + 1) for s in range(len(loss))], loss, label=method, **_style(i))
        ax.set(xlabel="modelled wall-clock time (ms)", ylabel="training loss", title=cluster.name,
               ylim=(None, _top(runs)))
        ax.title.set_fontsize(9)
    axes[0][-1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig
