"""The YAML database: persistence across processes, concurrency, damage, foreign and future files."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

import autotune
from autotune import state
from autotune.cache import CacheWarning

CONV_CALL = textwrap.dedent(
    """
    import numpy as np, autotune
    from autotune import state
    tuned = []
    state.STATE.listeners.append(lambda event, _: tuned.append(event == "tune-started"))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, {c}, 10, 10)).astype(np.float32)
    w = rng.standard_normal((3, {c}, 3, 3)).astype(np.float32)
    y = autotune.conv2d(x, w, padding=1)
    print(sum(tuned), float(np.abs(y).sum()))
    """
)


def run_python(code: str, cache_dir: Path, **env: str) -> str:
    full_env = {**os.environ, "AUTOTUNE_CACHE_DIR": str(cache_dir), **env}
    done = subprocess.run(
        [sys.executable, "-c", code], env=full_env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def load(cache_dir: Path) -> dict:
    return yaml.safe_load((cache_dir / "autotune.yaml").read_text())


def entries(cache_dir: Path) -> dict:
    (section,) = load(cache_dir)["machines"].values()
    return section["entries"]


def test_second_process_dispatches_without_tuning(isolated_cache):
    first = run_python(CONV_CALL.format(c=2), isolated_cache)
    second = run_python(CONV_CALL.format(c=2), isolated_cache)
    tuned_first, total_first = first.split()
    tuned_second, total_second = second.split()
    assert (tuned_first, tuned_second) == ("1", "0")
    assert float(total_first) == pytest.approx(float(total_second), rel=1e-5)


def test_entry_records_problem_choice_and_every_candidate(isolated_cache, fast_tuning):
    x = np.ones((1, 8, 8, 8), np.float32)  # 8x8 channels: Winograd is tried too
    w = np.ones((8, 8, 3, 3), np.float32)
    autotune.conv2d(x, w, padding=1)
    (key, entry), *_ = entries(isolated_cache).items()
    assert key == "conv2d x=1x8x8x8 w=8x8x3x3 stride=1 pad=1 dilation=1 groups=1 float32"
    assert entry["problem"]["x_shape"] == [1, 8, 8, 8] and entry["tol"] == 1e-4
    assert entry["choice"] in {"direct", "im2col", "winograd", "fft", "torch", "naive"}
    assert entry["tuned_at"] and entry["why"]
    timed = [c for c in entry["candidates"].values() if "median_us" in c]
    assert len(timed) >= 5
    for record in entry["candidates"].values():
        assert set(record) >= {"kernel", "ok"}
        assert record["ok"] or record["reason"]


def test_eight_processes_writing_at_once_lose_nothing(isolated_cache):
    env = {**os.environ, "AUTOTUNE_CACHE_DIR": str(isolated_cache)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONV_CALL.format(c=c)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for c in range(1, 9)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err.decode()
    keys = set(entries(isolated_cache))
    assert keys == {
        f"conv2d x=1x{c}x10x10 w=3x{c}x3x3 stride=1 pad=1 dilation=1 groups=1 float32" for c in range(1, 9)
    }


def test_hit_is_served_from_memory(counts, isolated_cache, fast_tuning):
    x = np.ones((1, 1, 6, 6), np.float32)
    w = np.ones((1, 1, 3, 3), np.float32)
    autotune.conv2d(x, w)
    (isolated_cache / "autotune.yaml").unlink()
    before = counts["tune-started"]
    autotune.conv2d(x, w)
    assert before == counts["tune-started"]
    assert not (isolated_cache / "autotune.yaml").exists()


def test_corrupt_file_is_moved_aside_and_the_call_works(isolated_cache, fast_tuning):
    isolated_cache.mkdir(parents=True)
    (isolated_cache / "autotune.yaml").write_text("schema: 1\nmachines: [unclosed\n")
    with pytest.warns(CacheWarning, match="moved aside"):
        y = autotune.conv2d(np.ones((1, 1, 5, 5), np.float32), np.ones((1, 1, 3, 3), np.float32))
    assert float(y.sum()) == pytest.approx(81.0)
    aside = list(isolated_cache.glob("autotune.yaml.corrupt-*"))
    assert len(aside) == 1 and "unclosed" in aside[0].read_text()
    assert len(entries(isolated_cache)) == 1


def test_not_a_database_is_moved_aside(isolated_cache, fast_tuning):
    isolated_cache.mkdir(parents=True)
    (isolated_cache / "autotune.yaml").write_bytes(b"\xff\xfe binary junk")
    with pytest.warns(CacheWarning):
        autotune.conv2d(np.ones((1, 1, 5, 5), np.float32), np.ones((1, 1, 3, 3), np.float32))
    assert list(isolated_cache.glob("autotune.yaml.corrupt-*"))


def test_malformed_entry_is_dropped_and_kept_in_the_rejected_copy(isolated_cache, fast_tuning):
    db = state.database()
    isolated_cache.mkdir(parents=True)
    doc = {
        "schema": 1,
        "machines": {db.machine_id: {"fingerprint": db.machine, "entries": {"conv2d junk": "oops"}}},
    }
    (isolated_cache / "autotune.yaml").write_text(yaml.safe_dump(doc))
    with pytest.warns(CacheWarning, match="malformed"):
        autotune.conv2d(np.ones((1, 1, 5, 5), np.float32), np.ones((1, 1, 3, 3), np.float32))
    assert "conv2d junk" not in entries(isolated_cache) and len(entries(isolated_cache)) == 1
    rejected = yaml.safe_load((isolated_cache / "autotune.yaml.rejected").read_text())
    assert rejected["rejected"][f"machines/{db.machine_id}/entries/conv2d junk"] == "oops"


def test_other_machines_are_kept_but_not_used(counts, isolated_cache, fast_tuning):
    key = "conv2d x=1x1x5x5 w=1x1x3x3 stride=1 pad=0 dilation=1 groups=1 float32"
    foreign = {
        "fingerprint": {"cpu": "Some Other CPU", "cores": 128},
        "entries": {
            key: {"problem": {"op": "conv2d"}, "choice": "naive", "params": {}, "tuned_at": "2099-01-01"}
        },
    }
    isolated_cache.mkdir(parents=True)
    (isolated_cache / "autotune.yaml").write_text(
        yaml.safe_dump({"schema": 1, "machines": {"elsewhere000": foreign}})
    )
    before = counts["tune-started"]
    autotune.conv2d(np.ones((1, 1, 5, 5), np.float32), np.ones((1, 1, 3, 3), np.float32))
    assert before + 1 == counts["tune-started"]  # the foreign entry was not used
    doc = load(isolated_cache)
    assert doc["machines"]["elsewhere000"] == foreign
    assert len(doc["machines"]) == 2


def test_newer_schema_is_never_overwritten(isolated_cache, fast_tuning):
    isolated_cache.mkdir(parents=True)
    future = "schema: 99\nmachines: {}\nsomething_new: true\n"
    (isolated_cache / "autotune.yaml").write_text(future)
    with pytest.warns(CacheWarning, match="newer"):
        y = autotune.conv2d(np.ones((1, 1, 5, 5), np.float32), np.ones((1, 1, 3, 3), np.float32))
    assert float(y.sum()) == pytest.approx(81.0)
    assert (isolated_cache / "autotune.yaml").read_text() == future


def test_heuristic_mode_writes_nothing(counts, isolated_cache):
    autotune.set_mode("heuristic")
    before = counts["tune-started"]
    x = np.random.default_rng(0).standard_normal((1, 16, 20, 20)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((16, 16, 3, 3)).astype(np.float32)
    y = autotune.conv2d(x, w, padding=1)
    expected = autotune.conv2d(x, w, padding=1, method="naive")
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
    assert before == counts["tune-started"]
    assert not isolated_cache.exists() or not (isolated_cache / "autotune.yaml").exists()


def test_heuristic_mode_from_the_environment(isolated_cache, monkeypatch):
    monkeypatch.setenv("AUTOTUNE_MODE", "heuristic")
    autotune.matmul(np.ones((4, 4), np.float32), np.ones((4, 4), np.float32))
    assert not (isolated_cache / "autotune.yaml").exists()


def test_off_mode_uses_the_exact_default(counts, isolated_cache):
    autotune.set_mode("off")
    before = counts["tune-started"]
    y = autotune.conv2d(np.ones((1, 1, 5, 5), np.float32), np.ones((1, 1, 3, 3), np.float32))
    assert float(y.sum()) == pytest.approx(81.0)
    assert before == counts["tune-started"]
    assert not (isolated_cache / "autotune.yaml").exists()


def test_set_mode_rejects_unknown_modes():
    with pytest.raises(ValueError, match="mode must be one of"):
        autotune.set_mode("fast")


def test_unwritable_cache_dir_warns_and_keeps_working(tmp_path, monkeypatch, fast_tuning):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    monkeypatch.setenv("AUTOTUNE_CACHE_DIR", str(blocker))
    autotune.reset()
    with pytest.warns(CacheWarning, match="cannot be read|could not write"):
        y = autotune.conv2d(np.ones((1, 1, 5, 5), np.float32), np.ones((1, 1, 3, 3), np.float32))
    assert float(y.sum()) == pytest.approx(81.0)


def test_offline_tune_skips_what_is_cached(isolated_cache, fast_tuning):
    specs = ["conv2d x=1x1x8x8 w=1x1x3x3", "matmul a=4x8 b=8x2"]
    seen = []
    autotune.tune(specs, on_result=lambda p, e, cached: seen.append(cached))
    autotune.tune(specs, on_result=lambda p, e, cached: seen.append(cached))
    assert seen == [False, False, True, True]
    assert len(entries(isolated_cache)) == 2
