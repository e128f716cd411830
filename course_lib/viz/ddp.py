"""Chapter 4's picture: one data-parallel step of one rank, buckets overlapping the backward pass."""
from __future__ import annotations

from course_lib.ddp import StepTimeline


def plot_timeline(ax, timeline: StepTimeline, title: str = "") -> None:
    """Draw one step of one rank: forward, backward, and each bucket's all-reduce from its
    launch to its completion (ms since the forward started)."""
    if timeline is None or timeline.forward is None:
        raise ValueError("no timeline recorded: run a step through BucketedDDP first")
    t0 = timeline.forward[0]
    ms = lambda t: 1e3 * (t - t0)  # noqa: E731
    rows = [("forward", *timeline.forward, "#4C72B0"), ("backward (from 1st grad)", *timeline.backward, "#55A868")]
    for i, start, end, nbytes in timeline.buckets:
        rows.append((f"bucket {i} ({nbytes // 1024} KiB)", start, end, "#DD8452"))
    for y, (label, start, end, colour) in enumerate(rows):
        ax.barh(y, ms(end) - ms(start), left=ms(start), color=colour, height=0.7)
    ax.axvline(ms(timeline.backward[1]), color="#55A868", ls="--", lw=1)
    ax.axvline(ms(timeline.wait_end), color="k", ls=":", lw=1)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("ms since the forward pass started (dashed: backward returned; dotted: grads averaged)")
    ax.set_title(title, fontsize=10)
