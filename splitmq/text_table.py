"""Plain-text tables for the command-line reports: columns as wide as their widest cell."""

from __future__ import annotations

from collections.abc import Container, Sequence


def aligned_rows(rows: Sequence[Sequence[str]], *, left: Container[int] = ()) -> list[str]:
    """Each row as one line, cells two spaces apart, padded to their column's widest cell:
    text columns (indices in `left`) flush left, numbers flush right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.ljust(width) if i in left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return lines
