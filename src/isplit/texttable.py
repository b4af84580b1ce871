"""Plain-text tables for the terminal: columns as wide as their widest cell, two spaces apart,
so that long point names never run into the next column."""

from __future__ import annotations

from collections.abc import Sequence


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    """``header`` and ``rows`` as aligned text: the first ``left`` columns flush left, the others
    flush right (numbers); the last column flush left when it is a note."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        parts = []
        for i, (cell, w) in enumerate(zip(cells, widths)):
            cell = str(cell)
            flush_left = i < left or i == len(widths) - 1
            parts.append(cell.ljust(w) if flush_left else cell.rjust(w))
        return "  ".join(parts).rstrip()

    return "\n".join(line(r) for r in [header, *rows])
