"""The one table writer: fixed-width text, GitHub markdown and CSV, plus number formats.

Used by the CLI (``tune``, ``show``, ``explain``), ``bench``, ``tune --model`` and the studies,
so every table the project prints or writes looks the same.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
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


def write_csv(rows: Iterable[Mapping[str, Any]], path: Path, fields: Sequence[str]) -> Path:
    """One CSV row per mapping, columns ``fields`` in order; None becomes an empty cell."""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row[k] for k in fields})
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV written by :func:`write_csv`, as strings."""
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def sci(value: float | None, digits: int = 1) -> str:
    """``1.2e-04`` style; ``0`` for an exact zero, ``—`` for missing or nan."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if value == 0:
        return "0"
    return f"{value:.{digits}e}"
