"""Plain-text tables for the terminal: columns as wide as their widest cell, two spaces apart,
so that long point names, paths and class names never run into the next column."""

from __future__ import annotations

import math
from collections.abc import Sequence


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    """``header`` and ``rows`` as aligned text: the first ``left`` columns flush left, the others
    flush right (numbers); the last column flush left when it is a note."""
    widths = column_widths([header, *rows])
    return "\n".join(table_line(r, widths, left) for r in [header, *rows])


def column_widths(rows: Sequence[Sequence[object]]) -> list[int]:
    """The width of each column of ``rows``: its widest cell."""
    return [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]


def table_line(
    cells: Sequence[object], widths: Sequence[int], left: int = 1, note: bool = True
) -> str:
    """One line of a table with these column ``widths`` (as :func:`text_table` lays it out), for
    tables printed a line at a time: a cell wider than its column pushes the next one right,
    two spaces apart, and never runs into it. ``note``: the last column is flush left."""
    parts = []
    for i, (cell, w) in enumerate(zip(cells, widths)):
        cell = str(cell)
        flush_left = i < left or (note and i == len(widths) - 1)
        parts.append(cell.ljust(w) if flush_left else cell.rjust(w))
    return "  ".join(parts).rstrip()


def log10_cui(c: float | None, fmt: str = ".3f", zero: str = "-inf") -> str:
    """log10 of a CUI as text: "n/a" where it is unknown (null in the JSON, NaN in an
    analysis), ``zero`` where it is 0 (the Grad-CAM map is 0 everywhere)."""
    if c is None or not math.isfinite(c):
        return "n/a"
    return format(math.log10(c), fmt) if c > 0 else zero
