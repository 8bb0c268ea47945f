"""A module of this repository as it was at an earlier commit, for the A/B benchmarks."""

from __future__ import annotations

import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np

import kernels.registry
from autotune import timing

ROOT = Path(__file__).resolve().parent.parent


def module_at(rev: str, path: str, imports: dict[str, types.ModuleType] | None = None) -> types.ModuleType:
    """``path`` (e.g. ``kernels/conv2d/fft.py``) at commit ``rev`` (``git show``), loaded as a
    module of its own, compiled afresh (not from Numba's cache). Kernel registrations in it are
    skipped, so today's registry is unchanged; its imports resolve to today's modules, except those
    named in ``imports`` (module name → the module to use instead, e.g. another one at ``rev``)."""
    source = subprocess.run(
        ["git", "show", f"{rev}:{path}"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    source = source.replace("cache=True", "cache=False")  # Numba caches only functions of files on disk
    module = types.ModuleType(f"{Path(path).stem}_at_{rev}")
    sys.modules[module.__name__] = module  # dataclasses look their module up there
    register, kernels.registry.register = kernels.registry.register, lambda spec: spec
    today = {name: sys.modules.get(name) for name in imports or {}}
    sys.modules.update(imports or {})
    try:
        exec(compile(source, f"{path}@{rev}", "exec"), module.__dict__)  # our own file, at a commit
    finally:
        kernels.registry.register = register
        for name, found in today.items():
            if found is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = found
    return module


def alternate(then: Callable[[], object], now: Callable[[], object], rounds: int) -> tuple[float, float]:
    """Medians over ``rounds`` alternating rounds of the tuner's score (µs) of each call: alternating
    in one process cancels the drift of a shared machine that separate runs cannot."""
    scores: list[list[float]] = [[], []]
    for _ in range(rounds):
        for call, found in zip((then, now), scores, strict=True):
            found.append(timing.measure(call, min_runs=5, min_time_s=0.03, max_time_s=1.0).score_us)
    before, after = (float(np.median(s)) for s in scores)
    return before, after
