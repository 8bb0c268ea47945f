"""``autotune bench --vs-torch``: two worker processes, alternating rounds, one row per problem."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from autotune import shapes
from autotune.bench import versus
from autotune.problem import parse_problem

TINY = shapes.Item(parse_problem("conv2d x=1x2x9x9 w=3x2x3x3 pad=1 float32"), ("tiny",))


@pytest.mark.parametrize("control", ["", "plain", "imported"])
def test_versus_times_both_processes_and_labels_the_control_run(control, tmp_path, monkeypatch):
    """The autotune side tunes the problem it has not seen (its pick is reported); a control run
    puts plain PyTorch calls on both sides (one beside autotune's import and kernels) and says so."""
    monkeypatch.setenv("AUTOTUNE_CACHE_DIR", str(tmp_path))
    result = versus.run(items=[TINY], rounds=2, min_time_s=0.0, suite="tiny", control=control)
    (row,) = result.rows
    assert row.torch_us > 0 and row.autotune_us > 0 and row.speedup > 0
    assert set(row.faults) == {"torch", "autotune"} and all(f >= 0 for f in row.faults.values())
    assert result.control == control
    if control:
        assert row.pick == f"torch ({control} control)" and "control run" in versus.summary_text(result)
        assert ("autotune imported" in versus.summary_text(result)) == (control == "imported")
        assert not (tmp_path / "autotune.yaml").exists()  # no autotune.conv2d dispatch: nothing tuned
    else:
        assert row.pick not in ("", "?") and row.tuner_torch_us is not None
        assert "imported first: torch" in versus.summary_text(result)
    assert versus.load(versus.write(result, tmp_path / "out")[0]).rows == result.rows


WORKER = Path(versus.__file__).with_name("_worker.py")
#: Allocate, touch and free 20 MiB twice; print the page faults of the second time.
SECOND_ALLOCATION_FAULTS = """
import importlib.util, resource, sys
import numpy as np
spec = importlib.util.spec_from_file_location("worker", sys.argv[1])
worker = importlib.util.module_from_spec(spec)
spec.loader.exec_module(worker)
if sys.argv[2] == "warm":
    worker.warm_heap()
for _ in range(2):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = np.empty(20 << 20, np.uint8)
    block[:: 1 << 12] = 1
    del block
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(faults)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's mmap threshold")
def test_a_warm_heap_serves_a_large_block_again_without_page_faults():
    """``--warm-heap``: after one 30 MiB free, a 20 MiB output is reused from the heap the second
    time; in a fresh process it comes from the OS again (the first free only then raises the
    threshold): about 500 faults here (numpy asks for huge pages), 5,120 with 4 KiB pages."""
    faults = {}
    for mode in ("warm", "fresh"):
        args = [sys.executable, "-c", SECOND_ALLOCATION_FAULTS, str(WORKER), mode]
        faults[mode] = int(subprocess.run(args, capture_output=True, text=True, check=True).stdout)
    assert faults["fresh"] > 100 and faults["warm"] * 10 < faults["fresh"], faults


def test_the_warm_heap_run_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOTUNE_CACHE_DIR", str(tmp_path))
    result = versus.run(items=[TINY], rounds=1, min_time_s=0.0, suite="tiny", control="plain", warm_heap=True)
    assert result.warm_heap and "both heaps warmed" in versus.summary_text(result)
