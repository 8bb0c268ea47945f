"""Shared fixtures: every test gets its own empty tuning database and default settings."""

from __future__ import annotations

import os
from collections import Counter

import pytest
from hypothesis import settings

import autotune
from autotune import state, tuner

# Numba compiles on first use; a wall-clock deadline per example would only measure that.
settings.register_profile("autotune", deadline=None, max_examples=40, derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "autotune"))


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """A fresh AUTOTUNE_CACHE_DIR, default mode and tolerances for each test."""
    cache_dir = tmp_path / "cache"
    monkeypatch.setenv("AUTOTUNE_CACHE_DIR", str(cache_dir))
    monkeypatch.delenv("AUTOTUNE_MODE", raising=False)
    saved_tol = dict(state.STATE.tolerances)
    autotune.set_mode(None)
    autotune.reset()
    yield cache_dir
    state.STATE.tolerances.clear()
    state.STATE.tolerances.update(saved_tol)
    autotune.set_mode(None)
    autotune.reset()


@pytest.fixture
def fast_tuning(monkeypatch):
    """Shorter timing loops: tests check choices and files, not speed."""
    original = tuner.tune_problem

    def quick(problem, **kwargs):
        kwargs.setdefault("min_runs", 3)
        kwargs.setdefault("min_time_s", 0.0)
        return original(problem, **kwargs)

    monkeypatch.setattr(tuner, "tune_problem", quick)
    return quick


@pytest.fixture
def throwaway_kernels():
    """Register kernels for one test only."""
    from kernels import registry

    names = []

    def add(spec):
        names.append((spec.op, spec.name))
        return registry.register(spec)

    yield add
    for op, name in names:
        registry.unregister(op, name)


@pytest.fixture(autouse=True)
def counts():
    """How many times each tuning event happened during the test (``"tune-started"``,
    ``"tune-finished"``, ``"prepared"``): proves that a cache hit timed and prepared nothing."""
    seen: Counter[str] = Counter()
    with state.listening(lambda event, _subject: seen.update([event])):
        yield seen
