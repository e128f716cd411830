"""Interactive pictures that still read well where widgets cannot run.

``ipywidgets.interact`` redraws a picture when a control moves. A notebook page that is not
connected to a kernel (GitHub, nbviewer, a notebook opened before running) cannot run the
widget and shows its text, ``interactive(children=(FloatSlider(value=2.0, ...``.
:func:`interact` shows the same widget and carries, in the same output, the picture of its
first frame as a PNG, which such pages show instead.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import ipywidgets
from IPython.display import display
from IPython.utils.capture import capture_output


class _WidgetWithPicture:
    """A widget's display bundle plus a PNG fallback: rich front ends pick the widget."""

    def __init__(self, widget: ipywidgets.DOMWidget, png: str | None):
        self.widget, self.png = widget, png

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict:
        bundle = self.widget._repr_mimebundle_(include=include, exclude=exclude)
        if self.png is not None:
            bundle["image/png"] = self.png
            bundle["text/plain"] = "(an interactive picture: run the notebook to move its controls)"
        return bundle


def interact(fn: Callable[..., Any], **controls: Any) -> ipywidgets.interactive:
    """``ipywidgets.interact(fn, **controls)``, displayed with a picture of its first frame.

    The controls are ipywidgets' abbreviations (``(lo, hi, step)`` tuples, lists of options) or
    widgets. ``fn`` draws its picture with matplotlib (``plt.show()``) or prints one line.
    """
    first: list[str | None] = []

    @functools.wraps(fn)
    def draw(**values: Any) -> None:
        if first:  # later frames go straight to the widget
            fn(**values)
            return
        # The first frame runs here, inside the cell that creates the widget: capture what fn
        # shows, keep its picture for the fallback, then show it (so it is drawn only once).
        # Later frames run inside the kernel's widget-message handler, where capturing is unsafe.
        try:
            with capture_output() as out:
                fn(**values)
        finally:
            pictures = [shown.data["image/png"] for shown in out.outputs if "image/png" in shown.data]
            first.append(pictures[0] if pictures else None)
            print(out.stdout, end="")
            for shown in out.outputs:
                display(shown)

    widget = ipywidgets.interactive(draw, **controls)
    for control in widget.kwargs_widgets:
        control.style.description_width = "initial"  # show "bandwidth_gbps", not "bandwidt..."
    display(_WidgetWithPicture(widget, first[0] if first else None))
    return widget
