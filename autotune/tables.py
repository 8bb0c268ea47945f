"""The one table writer: fixed-width text and GitHub markdown.

Used by the CLI (``tune``, ``show``, ``explain``), ``bench``, ``tune --model`` and the studies,
so every table the project prints or writes looks the same (the studies' CSV files and number
format: :mod:`studies._tables`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def text(headers: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[int] = ()) -> str:
    """A fixed-width table: two spaces between columns, a rule under the header; ``right`` lists
    the column indices to right-align (numbers)."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[Any]) -> str:
        padded = [
            str(cell).rjust(width) if i in right else str(cell).ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(padded).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def markdown(headers: Sequence[str], rows: Iterable[Sequence[Any]], right: Sequence[int] = ()) -> str:
    """A GitHub-flavoured markdown table (``right`` columns right-aligned; ``|`` in cells escaped)."""
    align = ["---:" if i in right else "---" for i in range(len(headers))]
    lines = [headers, align, *rows]
    return "\n".join("| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in lines)
