"""Problem lists for offline tuning and benchmarks: the shipped presets and ``--shapes`` files.

A preset is a YAML file in ``autotune/presets/`` (package data); a ``--shapes`` file has the same
schema, documented in ``examples/shapes.yaml`` (with ``--batch`` and ``--dtype``). ``--shard i/n``
keeps every n-th problem from the i-th (round-robin, so large layers spread over the shards).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from autotune.problem import DTYPES, Problem, ProblemSyntaxError, parse_problem


class ShapesError(ValueError):
    """A preset name or shapes file that cannot be used; the message says what and where."""


@dataclass(frozen=True)
class Item:
    """One problem to tune, with the model layers it stands for (may be empty)."""

    problem: Problem
    layers: tuple[str, ...] = ()


@dataclass(frozen=True)
class ShapeList:
    """A parsed preset or shapes file, before ``--batch``/``--dtype`` expansion."""

    name: str
    description: str
    items: tuple[Item, ...]
    batch: tuple[int, ...] = ()
    dtype: tuple[str, ...] = ()


def preset_names() -> list[str]:
    """The presets shipped with the package (file stems of ``autotune/presets/*.yaml``)."""
    folder = resources.files("autotune") / "presets"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_preset(name: str) -> ShapeList:
    """The shipped preset called ``name``; ShapesError lists the known ones."""
    if name not in preset_names():
        raise ShapesError(f"unknown preset {name!r}; known: {', '.join(preset_names())}")
    resource = resources.files("autotune") / "presets" / f"{name}.yaml"
    return parse_shapes(resource.read_text(encoding="utf-8"), f"preset {name}")


def load_shapes(path: Path) -> ShapeList:
    """A ``--shapes`` file; ShapesError says what is wrong with it."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ShapesError(f"cannot read shapes file {path}: {exc.strerror or exc}") from None
    return parse_shapes(text, str(path))


def _int_list(value: Any, field: str, origin: str) -> tuple[int, ...]:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values):
        raise ShapesError(f"{origin}: {field!r} must be a positive integer or a list of them, got {value!r}")
    return tuple(values)


def _dtype_list(value: Any, origin: str) -> tuple[str, ...]:
    values = value if isinstance(value, list) else [value]
    if not values or not all(v in DTYPES for v in values):
        raise ShapesError(
            f"{origin}: 'dtype' must be one of {', '.join(DTYPES)} or a list of them, got {value!r}"
        )
    return tuple(values)


def _item(entry: Any, index: int, origin: str) -> Item:
    where = f"{origin}: problems[{index}]"
    layers: tuple[str, ...] = ()
    if isinstance(entry, dict):
        unknown = set(entry) - {"problem", "layers"}
        if unknown or "problem" not in entry:
            raise ShapesError(
                f"{where}: expected keys 'problem' and optionally 'layers', got {sorted(entry)}"
            )
        raw_layers = entry.get("layers") or []
        if not isinstance(raw_layers, list) or not all(isinstance(x, str) for x in raw_layers):
            raise ShapesError(f"{where}: 'layers' must be a list of names")
        layers = tuple(raw_layers)
        entry = entry["problem"]
    if not isinstance(entry, str):
        raise ShapesError(
            f"{where}: expected a problem string like 'conv2d x=1x3x32x32 w=8x3x3x3', got {entry!r}"
        )
    try:
        return Item(parse_problem(entry), layers)
    except ProblemSyntaxError as exc:
        raise ShapesError(f"{where}: {exc}") from None


def parse_shapes(text: str, origin: str) -> ShapeList:
    """Parse and check a preset/shapes document (schema in the module docstring)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ShapesError(f"{origin} is not valid YAML: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("problems"), list) or not doc["problems"]:
        raise ShapesError(f"{origin}: expected a mapping with a non-empty 'problems' list")
    unknown = set(doc) - {"name", "description", "batch", "dtype", "problems"}
    if unknown:
        raise ShapesError(
            f"{origin}: unknown keys {sorted(unknown)}; expected name, description, batch, dtype, problems"
        )
    return ShapeList(
        name=str(doc.get("name") or Path(origin).stem),
        description=str(doc.get("description") or ""),
        items=tuple(_item(entry, i, origin) for i, entry in enumerate(doc["problems"])),
        batch=_int_list(doc["batch"], "batch", origin) if "batch" in doc else (),
        dtype=_dtype_list(doc["dtype"], origin) if "dtype" in doc else (),
    )


def with_batch_and_dtype(problem: Problem, batch: int | None, dtype: str | None) -> Problem:
    """``problem`` with its batch dimension and/or dtype replaced (None keeps the original)."""
    if batch is not None:
        problem = problem.with_batch(batch)
    return problem if dtype is None else dataclasses.replace(problem, dtype=dtype)


def expand(
    shapes: ShapeList, batches: Sequence[int] | None = None, dtypes: Sequence[str] | None = None
) -> list[Item]:
    """Every problem × batch size × dtype, in file order, identical problems merged. ``batches``/
    ``dtypes`` default to the file's; when neither gives any, the problem's own are kept."""
    batch_options: Sequence[int | None] = batches or shapes.batch or [None]
    dtype_options: Sequence[str | None] = dtypes or shapes.dtype or [None]
    merged: dict[str, Item] = {}
    for item in shapes.items:
        for batch in batch_options:
            for dtype in dtype_options:
                problem = with_batch_and_dtype(item.problem, batch, dtype)
                seen = merged.get(problem.key)
                layers = item.layers if seen is None else seen.layers + item.layers
                merged[problem.key] = Item(problem, tuple(dict.fromkeys(layers)))
    return list(merged.values())


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/4"`` → (2, 4); ValueError unless 1 <= i <= n."""
    index, sep, count = text.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i = n = 0
    if not sep or n < 1 or not 1 <= i <= n:
        raise ValueError(f"expected i/n with 1 <= i <= n (e.g. 1/2), got {text!r}")
    return i, n


def shard(items: Sequence[Item], index: int, count: int) -> list[Item]:
    """The ``index``-th (1-based) of ``count`` round-robin slices of ``items``."""
    return list(items[index - 1 :: count])
