"""The one progress bar (tqdm) behind extraction, hub scoring and the command line.

Library functions take ``progress=`` as a callback ``(done, total)``; :func:`progress_bar` turns
a label into such a callback that draws a tqdm bar on stderr. tqdm is imported on first use, so
``import transferjax`` does not pay for it.
"""

from __future__ import annotations

import sys
from typing import Callable

__all__ = ["progress_bar"]


def progress_bar(label: str, unit: str = "it", stream=None) -> Callable[[int, int], None]:
    """A ``(done, total)`` callback drawing a tqdm bar; the bar closes when ``done >= total``."""
    state: dict = {}

    def update(done: int, total: int) -> None:
        from tqdm.auto import tqdm

        bar = state.get("bar")
        if bar is None:
            bar = state["bar"] = tqdm(
                total=total, desc=label, unit=unit, file=sys.stderr if stream is None else stream,
                leave=True, dynamic_ncols=True,
            )
        bar.update(done - bar.n)
        if done >= total:
            bar.close()
            state.pop("bar")

    return update
