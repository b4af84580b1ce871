"""The analysis's progress bar (tqdm when installed; off when not asked for or not a terminal)."""

from __future__ import annotations

import sys
from typing import Any


class NoBar:
    """A progress bar that shows nothing."""

    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, initial: int, enabled: bool) -> Any:
    """A bar over ``total`` images starting at ``initial``, shown only when ``enabled`` and
    stderr is a terminal."""
    try:
        from tqdm import tqdm
    except ImportError:  # the progress bar is optional
        return NoBar()
    return tqdm(
        total=total,
        initial=initial,
        unit="img",
        desc="analysing",
        disable=not enabled or not sys.stderr.isatty(),
        leave=False,
    )
