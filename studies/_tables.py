"""The studies' CSV files and number format (the tables themselves: :mod:`autotune.tables`)."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from autotune.tables import markdown, text

__all__ = ["markdown", "read_csv", "sci", "text", "write_csv"]


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
