"""Tune a whole model ahead of time: find its conv2d and linear problems, tune them, compare.

:func:`collect` runs the model once on an example input with forward hooks on every
``torch.nn.Conv2d`` and ``torch.nn.Linear`` and returns the problems exactly as
``autotune.nn.convert(model)`` will dispatch them: conv2d with the module's weight as a *fixed*
weight (``weight=fixed`` in the key), linear as ``matmul(x (rows, in), Wᵀ (in, out))``. Identical
problems are merged, with every layer that shares them. :func:`tune_model` tunes them into the
database (the usual budget), then reports every layer's choice and, side by side in this process,
the converted model's forward time against the plain model's. No torchvision needed: any
``torch.nn.Module`` works; ``examples/resnet.py`` has ResNet-style ones.
"""

from __future__ import annotations

import copy
import importlib.util
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from autotune import api, dispatch, shapes, tables, timing
from autotune.problem import ConvProblem, MatmulProblem, Problem

DTYPES = {torch.float32: "float32", torch.float64: "float64"}


def load_factory(spec: str) -> Callable[[], torch.nn.Module]:
    """``path/to/file.py:factory`` → the factory; ValueError naming what is wrong."""
    path, sep, name = spec.rpartition(":")
    if not sep or not Path(path).is_file():
        raise ValueError(f"model must be FILE.py:FACTORY with an existing file, got {spec!r}")
    module_spec = importlib.util.spec_from_file_location(f"autotune_model_{Path(path).stem}", path)
    module = importlib.util.module_from_spec(module_spec)  # type: ignore[arg-type]
    module_spec.loader.exec_module(module)  # type: ignore[union-attr]
    factory = getattr(module, name, None)
    if not callable(factory):
        raise ValueError(f"{path} has no callable {name!r}")
    return factory


def _conv_problem(layer: torch.nn.Conv2d, x: torch.Tensor) -> Problem | None:
    if layer.padding_mode != "zeros" or x.dim() != 4 or x.dtype not in DTYPES:
        return None  # autotune.nn.Conv2d leaves these to torch
    kernel_hw = tuple(layer.weight.shape[2:])
    pad = api.padding_quad(layer.padding, kernel_hw, tuple(layer.dilation), tuple(layer.stride))
    return ConvProblem(
        tuple(x.shape),
        tuple(layer.weight.shape),
        tuple(layer.stride),
        pad,
        tuple(layer.dilation),
        layer.groups,
        DTYPES[x.dtype],
        weight="fixed",
    )


def _linear_problem(layer: torch.nn.Linear, x: torch.Tensor) -> Problem | None:
    if x.dtype not in DTYPES or x.numel() == 0:
        return None
    rows = math.prod(x.shape[:-1])
    return MatmulProblem((rows, layer.in_features), (layer.in_features, layer.out_features), DTYPES[x.dtype])


def collect(model: torch.nn.Module, example_input: torch.Tensor) -> list[shapes.Item]:
    """Every conv2d/linear problem of one forward pass, with the names of the layers behind it."""
    found: dict[str, shapes.Item] = {}

    def hook(name: str) -> Callable[..., None]:
        def record(layer: torch.nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            x = inputs[0]
            make = _conv_problem if isinstance(layer, torch.nn.Conv2d) else _linear_problem
            problem = make(layer, x)  # type: ignore[arg-type]
            if problem is not None:
                seen = found.get(problem.key)
                layers = (name,) if seen is None else (*seen.layers, name)
                found[problem.key] = shapes.Item(problem, layers)

        return record

    handles = [
        layer.register_forward_hook(hook(name))
        for name, layer in model.named_modules()
        if type(layer) in (torch.nn.Conv2d, torch.nn.Linear)
    ]
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        for handle in handles:
            handle.remove()
    return list(found.values())


@dataclass(frozen=True)
class LayerRow:
    """One distinct problem of the model after tuning."""

    layers: tuple[str, ...]
    problem: str
    choice: str
    time_us: float | None
    vs_torch: float | None


@dataclass(frozen=True)
class ModelReport:
    """What :func:`tune_model` found: every layer's choice and the whole-model comparison."""

    rows: list[LayerRow]
    plain_us: float
    converted_us: float

    @property
    def speedup(self) -> float:
        return self.plain_us / self.converted_us


def compare_forward(
    model: torch.nn.Module, example_input: torch.Tensor, rounds: int = 9
) -> tuple[float, float]:
    """Score (µs) of the plain model's forward and of an ``autotune.nn.convert``-ed copy, timed
    interleaved in this process (the copy shares no state with ``model``)."""
    from autotune import nn

    converted = nn.convert(copy.deepcopy(model))
    samples: dict[str, list[timing.Sample]] = {"plain": [], "converted": []}
    with torch.no_grad():
        for net in (model, converted, model, converted):  # warm-up; the converted one tunes misses
            net(example_input)
        for _ in range(rounds):
            for label, net in (("plain", model), ("converted", converted)):
                samples[label].extend(timing.run_once(lambda net=net: net(example_input)) for _ in range(2))
    return (
        timing.summarize(samples["plain"]).score_us,
        timing.summarize(samples["converted"]).score_us,
    )


def layer_rows(items: Sequence[shapes.Item]) -> list[LayerRow]:
    """Each item's database choice, its time and its speed-up over torch (from the entry)."""
    from autotune import report

    rows = []
    for item in items:
        entry = dispatch.fitting_entry(item.problem)
        if entry is None:
            rows.append(LayerRow(item.layers, item.problem.key, "not tuned", None, None))
            continue
        summary = report.summarize(item.problem.key, entry)
        time_us = summary.score_us if summary.score_us is not None else summary.median_us
        rows.append(LayerRow(item.layers, item.problem.key, summary.choice, time_us, summary.vs_torch))
    return rows


def tune_model(
    model: torch.nn.Module,
    example_input: torch.Tensor,
    *,
    budget_s: float | None = None,
    compare: bool = True,
) -> ModelReport:
    """Tune every conv2d/linear problem of ``model`` on ``example_input`` (as
    ``autotune.nn.convert`` will dispatch them) and report per layer and for the whole model.

    ``model`` itself is not changed (the comparison converts a copy). ``compare=False`` skips the
    whole-model timing (its fields are then NaN).
    """
    items = collect(model, example_input)
    options = {} if budget_s is None else {"budget_s": budget_s}
    api.tune([item.problem for item in items], **options)
    plain_us = converted_us = float("nan")
    if compare:
        plain_us, converted_us = compare_forward(model, example_input)
    return ModelReport(layer_rows(items), plain_us, converted_us)


def report_text(report_: ModelReport) -> str:
    """The per-layer table and the whole-model line."""
    from autotune import report

    headers = ["layers", "problem", "choice", "time", "vs torch"]
    rows = [
        [
            report.layer_text(list(row.layers)),
            report.short_key(row.problem),
            row.choice,
            report.fmt_time(row.time_us),
            report.fmt_ratio(row.vs_torch),
        ]
        for row in report_.rows
    ]
    lines = [tables.text(headers, rows, right=[3, 4])]
    if math.isfinite(report_.plain_us):
        lines.append(
            f"whole model, forward in this process: plain {report.fmt_time(report_.plain_us)}, "
            f"converted {report.fmt_time(report_.converted_us)}: {report_.speedup:.2f}x "
            f"(against plain PyTorch in a process of its own: autotune bench --model)"
        )
    return "\n".join(lines)


def model_items(
    spec: str, input_shape: Sequence[int], batches: Sequence[int] | None
) -> tuple[torch.nn.Module, list[shapes.Item]]:
    """``tune --model FILE.py:FACTORY``: the model (in eval mode) and its conv2d/linear problems on
    an input of ``input_shape`` with each of ``batches`` (default: the input's own batch)."""
    model = load_factory(spec)().eval()
    items: dict[str, shapes.Item] = {}
    for batch in batches or [input_shape[0]]:
        for item in collect(model, torch.randn(batch, *input_shape[1:])):
            items.setdefault(item.problem.key, item)
    return model, list(items.values())


def cli_report(
    model: torch.nn.Module,
    input_shape: Sequence[int],
    batches: Sequence[int] | None,
    items: list[shapes.Item],
) -> str:
    """Per layer: choice, time, vs torch; then the converted model against the plain one (at the
    first batch size)."""
    example = torch.randn((batches or [input_shape[0]])[0], *input_shape[1:])
    plain_us, converted_us = compare_forward(model, example)
    return report_text(ModelReport(layer_rows(items), plain_us, converted_us))
