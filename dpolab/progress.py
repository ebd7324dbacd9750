"""Progress bars for long work: ``tqdm.auto``, with one change for notebooks.

A notebook saves a progress bar as a widget plus a text fallback, and the fallback is the
bar as it was when first drawn: "0%". Where widgets do not render (GitHub, nbviewer) every
finished run would read as not started. This bar redraws its output when it closes, so the
saved text is where it ended ("100%| 60/60 [00:29<00:00]")."""

from __future__ import annotations

from typing import Any

from tqdm.auto import tqdm as _auto

__all__ = ["tqdm"]

tqdm: Any = _auto
try:
    from tqdm.notebook import tqdm as _notebook
except ImportError:  # no ipywidgets: tqdm.auto is the console bar already
    _notebook = None

if _notebook is not None and issubclass(_auto, _notebook):
    from IPython.display import display

    class tqdm(_notebook):  # type: ignore[no-redef]
        """``tqdm.notebook.tqdm`` whose saved output is its final state."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, display=False, **kwargs)
            self._handle = None
            if not self.disable:
                self._handle = display(self.container, display_id=True)
                self.displayed = True

        def close(self) -> None:
            super().close()
            if getattr(self, "_handle", None) is not None:
                self._handle.update(self.container)
                self._handle = None
