"""Process state in one object: use_cache switches databases for a block, listeners hear tuning."""

from __future__ import annotations

import numpy as np
import pytest

import autotune
from autotune import state

X = np.random.default_rng(0).standard_normal((1, 2, 9, 9)).astype(np.float32)
W = np.random.default_rng(1).standard_normal((3, 2, 3, 3)).astype(np.float32)


def test_use_cache_tunes_into_its_directory_and_restores_the_previous_one(
    isolated_cache, tmp_path, fast_tuning, counts
):
    autotune.conv2d(X, W, padding=1)  # tuned into the configured database
    bound_before = dict(state.STATE.bound)
    other = tmp_path / "other"
    with autotune.use_cache(other) as used:
        assert used == other and state.database().path == other / "autotune.yaml"
        assert not state.STATE.bound  # nothing bound under the other database leaks in
        autotune.conv2d(X, W, padding=1)  # a miss there: tuned again, written there
        assert counts["tune-started"] == 2
    assert (other / "autotune.yaml").is_file() and (isolated_cache / "autotune.yaml").is_file()
    assert state.database().path == isolated_cache / "autotune.yaml"
    assert state.STATE.cache_dir is None and state.STATE.bound == bound_before
    autotune.conv2d(X, W, padding=1)
    assert counts["tune-started"] == 2  # back on the first database's binding: no tuning


def test_use_cache_is_restored_when_the_block_raises(isolated_cache, tmp_path):
    with pytest.raises(RuntimeError), autotune.use_cache(tmp_path / "x"):
        raise RuntimeError("boom")
    assert state.database().path == isolated_cache / "autotune.yaml"


def test_listeners_hear_every_tuning_event_and_are_removed_after_the_block(fast_tuning):
    heard = []
    with state.listening(lambda event, subject: heard.append((event, type(subject).__name__))):
        autotune.conv2d(X, W)
    autotune.conv2d(X, np.ascontiguousarray(W[:2]))  # after the block: not heard
    assert heard == [("tune-started", "ConvProblem"), ("tune-finished", "TuneResult")]


@pytest.mark.parametrize(
    ("dtype", "tol", "error"),
    [("float16", 1e-3, ValueError), ("float32", "1e-3", TypeError), ("float32", -1.0, ValueError)],
)
def test_set_tolerance_names_what_is_wrong(dtype, tol, error):
    with pytest.raises(error, match="set_tolerance"):
        autotune.set_tolerance(dtype, tol)
    assert state.STATE.tolerances == state.DEFAULT_TOL
