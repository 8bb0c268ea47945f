"""The extension story (issue "A lean core"): a new kernel is one new file under ``kernels/``; a
new op is a problem class and its kernels, with no edit to the core.

Both tests write their extension as source files at test time, import them the way a user's
program would, and remove them afterwards, so the rest of the suite sees the registries as they
were.
"""

from __future__ import annotations

import importlib
import importlib.util
import secrets
import sys
from pathlib import Path

import numpy as np
import pytest

import autotune
import kernels.conv2d
from autotune import cli, dispatch, problem, state
from autotune.evaluate import rel_max_error
from kernels import registry
from kernels.conv2d.reference import conv2d_reference

# ---------------------------------------------------------------------------------------------
# A new kernel: one new file under kernels/conv2d/.

TOY_KERNEL_SOURCE = '''\
"""A toy conv2d kernel: 1×1 filters with stride 1 as one numpy einsum (written by a test)."""

import numpy as np

from kernels.registry import KernelSpec, register


def TOY_NAME(x, w, b, stride, padding, dilation, groups):
    """1×1 convolution, stride 1: ``einsum`` over the input channels of each group."""
    top, bottom, left, right = padding
    x_padded = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right))) if any(padding) else x
    n, c, h, wd = x_padded.shape
    k = w.shape[0]
    xg = x_padded.reshape(n, groups, c // groups, h, wd)
    wg = w.reshape(groups, k // groups, c // groups)
    y = np.einsum("gkc,ngchw->ngkhw", wg, xg).reshape(n, k, h, wd)
    if b is not None:
        y += b.reshape(1, k, 1, 1)
    return np.ascontiguousarray(y, dtype=x.dtype)


def applies(problem):
    """1×1 filters, stride 1 (any padding, groups; dilation does not matter for 1×1)."""
    return tuple(problem.w_shape[2:]) == (1, 1) and tuple(problem.stride) == (1, 1)


register(KernelSpec(name="TOY_NAME", op="conv2d", fn=TOY_NAME, applies=applies, needs="1×1 filters, stride 1"))
'''


def test_a_new_kernel_is_one_new_file(monkeypatch, fast_tuning):
    name = f"toy_{secrets.token_hex(4)}"
    package_dir = Path(kernels.conv2d.__path__[0])
    path = package_dir / f"{name}.py"
    assert not path.exists()
    path.write_text(TOY_KERNEL_SOURCE.replace("TOY_NAME", name), encoding="utf-8")
    try:
        # The registry scans kernels/ once per process; a new process finds the file by itself,
        # this one is told to look again (the same discovery code: pkgutil over the packages).
        registry.load_all(rescan=True)
        assert name in registry.names("conv2d")
        spec = registry.get("conv2d", name)
        assert spec.needs == "1×1 filters, stride 1"

        # Forced with method=: equals the float64 reference.
        rng = np.random.default_rng(0)
        x = rng.standard_normal((2, 6, 5, 7)).astype(np.float32)
        w = rng.standard_normal((4, 6, 1, 1)).astype(np.float32)
        b = rng.standard_normal(4).astype(np.float32)
        for padding, groups in ((0, 1), (1, 2)):
            wg = w[:, : 6 // groups]
            y = autotune.conv2d(x, wg, b, padding=padding, groups=groups, method=name)
            ref = conv2d_reference(x, wg, b, (1, 1), (padding,) * 4, (1, 1), groups)
            assert y.dtype == np.float32 and y.shape == ref.shape
            assert rel_max_error(y, ref) <= 1e-5

        # Tuned: a candidate on a 1×1 problem, "not applicable" with its reason on a 3×3 one.
        pointwise, spatial = autotune.tune(
            ["conv2d x=1x16x16x16 w=16x16x1x1 float32", "conv2d x=1x4x8x8 w=4x4x3x3 pad=1 float32"]
        )
        verdict = pointwise["candidates"][name]
        assert verdict["ok"] is True, verdict
        assert verdict["rel_err"] <= 1e-5
        assert spatial["candidates"][name] == {
            "kernel": name,
            "ok": False,
            "reason": "not applicable: needs 1×1 filters, stride 1",
        }
        with pytest.raises(ValueError, match=r"needs 1×1 filters, stride 1"):
            autotune.conv2d(x, rng.standard_normal((4, 6, 3, 3)).astype(np.float32), method=name)
    finally:
        registry.unregister("conv2d", name)
        sys.modules.pop(f"kernels.conv2d.{name}", None)
        vars(kernels.conv2d).pop(name, None)
        Path(importlib.util.cache_from_source(str(path))).unlink(missing_ok=True)
        path.unlink(missing_ok=True)
    assert name not in registry.names("conv2d")


# ---------------------------------------------------------------------------------------------
# A new op: a Problem subclass (file 1) and its kernels (file 2), nothing else.

ROWSUM_PROBLEM_SOURCE = '''\
"""The rowsum op: y[i] = sum over j of x[i, j], for a 2-D float array (a toy op outside the core)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from autotune.problem import Problem, ProblemSyntaxError, register


@register
@dataclass(frozen=True)
class RowsumProblem(Problem):
    """One rowsum call on an (m, n) array."""

    shape: tuple[int, int]
    dtype: str = "float32"
    tol: float | None = None
    weight: str | None = None
    op: ClassVar[str] = "rowsum"
    FIELDS: ClassVar[frozenset[str]] = frozenset({"x", "tol"})
    POSITIONAL: ClassVar[int] = 1
    EXACT_DEFAULT: ClassVar[tuple[str, dict[str, Any]]] = ("numpy", {})

    def __post_init__(self):
        if len(self.shape) != 2 or min(self.shape) < 1:
            raise ValueError(f"rowsum: x must be a non-empty 2-D array, got shape {self.shape}")

    @property
    def key(self):
        tol = "" if self.tol is None else f" tol={self.tol:g}"
        return f"rowsum x={self.shape[0]}x{self.shape[1]} {self.dtype}{tol}"

    @property
    def out_shape(self):
        return (self.shape[0],)

    @property
    def flops(self):
        return self.shape[0] * self.shape[1]

    def random_inputs(self, rng):
        return (rng.standard_normal(self.shape).astype(self.dtype),)

    @classmethod
    def from_fields(cls, fields, dtype, tol):
        if "x" not in fields:
            raise ProblemSyntaxError("rowsum spec needs x=MxN; e.g. rowsum x=64x128")
        rows, cols = (int(size) for size in fields["x"].split("x"))
        return cls(shape=(rows, cols), dtype=dtype, tol=tol)


from . import rowsum_kernels  # noqa: E402, F401  (the op's kernels register themselves)
'''

ROWSUM_KERNELS_SOURCE = '''\
"""rowsum kernels: the float64 oracle, two accurate ones, and one that rounds through float16."""

import numpy as np

from kernels.registry import KernelSpec, register


def reference(x):
    """float64 sum of each row (the oracle)."""
    return x.astype(np.float64).sum(axis=1).astype(x.dtype)


def numpy_sum(x):
    """numpy's pairwise sum along the rows."""
    return x.sum(axis=1)


def matvec(x):
    """x @ ones: a BLAS matrix-vector product."""
    return x @ np.ones(x.shape[1], dtype=x.dtype)


def half(x):
    """Sums in float16: fast on paper, far outside a float32 tolerance."""
    return x.astype(np.float16).sum(axis=1, dtype=np.float16).astype(x.dtype)


def _never(problem):
    return False


register(
    KernelSpec(
        name="reference",
        op="rowsum",
        fn=reference,
        reference=True,
        worth_tuning=_never,
        declines="the float64 oracle is never the fastest",
    )
)
register(KernelSpec(name="numpy", op="rowsum", fn=numpy_sum))
register(KernelSpec(name="matvec", op="rowsum", fn=matvec))
register(KernelSpec(name="half", op="rowsum", fn=half))
'''


@pytest.fixture
def rowsum_op(tmp_path, monkeypatch):
    """Write the rowsum op's files into a fresh package on sys.path and import it; yields (the
    problem class, the files written). Everything it registered is removed afterwards."""
    package = f"toy_op_{secrets.token_hex(4)}"
    directory = tmp_path / package
    directory.mkdir()
    files = [directory / "problem.py", directory / "rowsum_kernels.py"]
    files[0].write_text(ROWSUM_PROBLEM_SOURCE, encoding="utf-8")
    files[1].write_text(ROWSUM_KERNELS_SOURCE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "rowsum" not in problem.PROBLEMS
    try:
        module = importlib.import_module(f"{package}.problem")
        yield module.RowsumProblem, files
    finally:
        for name in list(registry.names("rowsum")):
            registry.unregister("rowsum", name)
        problem.PROBLEMS.pop("rowsum", None)
        registry._POSITIONAL.pop("rowsum", None)
        for module_name in [m for m in sys.modules if m == package or m.startswith(f"{package}.")]:
            del sys.modules[module_name]


def test_a_new_op_touches_three_files(rowsum_op, fast_tuning, counts, capsys, isolated_cache):
    RowsumProblem, files = rowsum_op
    # The whole op: the files the fixture wrote (no edit anywhere else).
    assert len(files) <= 3
    assert sorted(registry.names("rowsum")) == ["half", "matvec", "numpy", "reference"]

    p = problem.parse_problem("rowsum x=64x128 float32")
    assert isinstance(p, RowsumProblem) and p.shape == (64, 128)
    assert p.key == "rowsum x=64x128 float32"
    assert problem.parse_problem(p.key) == p
    assert problem.problem_from_dict(p.to_dict()) == p
    with pytest.raises(problem.ProblemSyntaxError, match="rowsum spec needs x="):
        problem.parse_problem("rowsum float32")

    (entry,) = autotune.tune([p])
    assert counts["tune-started"] == 1
    assert entry["problem"] == {"op": "rowsum", "shape": [64, 128], "dtype": "float32"}
    candidates = entry["candidates"]
    assert entry["choice"] in ("numpy", "matvec")
    assert candidates[entry["choice"]]["ok"] is True
    assert candidates["half"]["ok"] is False
    assert candidates["half"]["reason"].startswith("inaccurate: rel_err")
    assert candidates["half"]["rel_err"] > 1e-4
    assert candidates["reference"]["reason"].startswith("not tried: the float64 oracle")

    # The generic dispatch entry: the tuned choice, bound, on the op's positional arguments.
    inputs = p.random_inputs(np.random.default_rng(1))
    fn = dispatch.kernel_for(p)
    y = fn(*p.call_args(inputs))
    np.testing.assert_allclose(y, inputs[0].astype(np.float64).sum(axis=1), rtol=1e-5, atol=1e-4)
    assert fn is dispatch.kernel_for(p)  # bound once per process

    # As a new process would: the entry comes back from the YAML file and is used untimed.
    state.reset()
    assert "rowsum x=64x128 float32" in (isolated_cache / "autotune.yaml").read_text()
    y_again = dispatch.kernel_for(p)(*p.call_args(inputs))
    np.testing.assert_array_equal(y_again, y)
    assert counts["tune-started"] == 1

    capsys.readouterr()
    assert cli.main(["show"]) == 0
    shown = capsys.readouterr().out
    assert "rowsum x=64x128 float32" in shown and entry["choice"] in shown
    assert cli.main(["show", "--op", "rowsum", "--format", "json"]) == 0
    assert '"problem": "rowsum x=64x128 float32"' in capsys.readouterr().out
    assert cli.main(["explain", "rowsum x=64x128 float32"]) == 0
    explained = capsys.readouterr().out
    assert "half" in explained and "inaccurate" in explained


def test_a_new_op_without_tuning(rowsum_op, counts, capsys):
    """Heuristic and off modes pick the op's exact default: the heuristics have no rules for an
    op they do not know, and must not answer with another op's kernel."""
    RowsumProblem, _ = rowsum_op
    x = np.random.default_rng(2).standard_normal((8, 16)).astype(np.float32)
    for mode in ("heuristic", "off"):
        autotune.set_mode(mode)
        p = RowsumProblem(shape=(8, 16))
        fn = dispatch.kernel_for(p)
        assert fn is registry.get("rowsum", "numpy").fn
        np.testing.assert_allclose(fn(x), x.sum(axis=1), rtol=1e-6)
    assert counts["tune-started"] == 0
    autotune.set_mode(None)
    assert cli.main(["explain", "rowsum x=8x16"]) == 1  # not tuned: says what heuristics would pick
    assert "heuristic mode would pick numpy" in capsys.readouterr().out


def test_entries_of_an_op_this_process_does_not_know_stay_in_the_file(
    rowsum_op, fast_tuning, counts, isolated_cache, monkeypatch
):
    """A process without the extension (e.g. the ``autotune`` command) reads and writes the same
    database: it must leave the extension's entries where they are."""
    RowsumProblem, _ = rowsum_op
    p = RowsumProblem(shape=(16, 32))
    autotune.tune([p])
    with monkeypatch.context() as unknown:
        unknown.delitem(problem.PROBLEMS, "rowsum")
        state.reset()
        other = problem.MatmulProblem((2, 2), (2, 2))
        state.database().store({other.key: {"problem": other.to_dict(), "choice": "blas"}})
        state.reset()
        assert p.key in state.database().entries()
    assert not list(isolated_cache.glob("autotune.yaml.rejected"))
    state.reset()
    assert dispatch.fitting_entry(p) is not None
    dispatch.kernel_for(p)
    assert counts["tune-started"] == 1
