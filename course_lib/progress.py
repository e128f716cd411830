"""Progress bars that leave a finished line behind, in a notebook and in a terminal.

In a notebook, tqdm draws a live widget. A notebook saved after running keeps that widget's
first frame as its text (``0/600 [00:00<?, ?step/s]``), which is what GitHub and nbviewer show
right above a finished result. :func:`progress` draws the same live bar and, when the loop ends,
replaces it with the bar's last frame as plain text. In a terminal it is plain tqdm.
"""
from __future__ import annotations

from typing import Any, Iterable

from tqdm.auto import tqdm
from tqdm.notebook import tqdm as notebook_tqdm


class _NotebookBar(notebook_tqdm):
    """The notebook widget, shown under a display id so that :meth:`close` can replace it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, display=False, **kwargs)
        self._handle = None
        if not self.disable:
            from IPython.display import display  # only reached inside a kernel

            self._handle = display(self.container, display_id=True)

    def close(self) -> None:
        super().close()
        if self._handle is not None:
            self._handle.update({"text/plain": str(self)}, raw=True)
            self._handle = None


def progress(iterable: Iterable | None = None, *, desc: str, total: int | None = None, unit: str = "it",
             disable: bool = False) -> tqdm:
    """``tqdm(iterable, desc=desc, ...)`` whose notebook bar ends as one line of text."""
    bar = _NotebookBar if issubclass(tqdm, notebook_tqdm) else tqdm
    # Redrawn at most twice a second: each redraw is a message to the browser, which re-renders.
    return bar(iterable, desc=desc, total=total, unit=unit, disable=disable, mininterval=0.5)
