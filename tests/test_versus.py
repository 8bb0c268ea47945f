"""``autotune bench --vs-torch``: two worker processes, alternating rounds, one row per problem."""

from __future__ import annotations

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
