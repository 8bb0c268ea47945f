"""Reliability: the database is never wrong, never in the way, and never breaks a call.

Damaged files, entries that do not fit the call, approximate choices under ``tol=``, non-finite
inputs, symlinks, temp files, lock contention, a writer killed mid-write, and one-line errors.
Results are checked against torch in float64 (an oracle independent of every kernel here).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from filelock import FileLock
from hypothesis import given
from hypothesis import strategies as st

import autotune
from autotune import api, cache, cli, dispatch, machine, schema, state, tuner
from autotune.api import ChoiceWarning
from autotune.cache import CacheWarning
from autotune.problem import ConvProblem, MatmulProblem
from autotune.weights import digest
from kernels import registry

SMALL_X = (1, 2, 6, 6)
SMALL_W = (3, 2, 3, 3)
SMALL_KEY = ConvProblem(SMALL_X, SMALL_W, padding=(1, 1, 1, 1)).key


def torch_conv(x: np.ndarray, w: np.ndarray, padding: int = 1) -> np.ndarray:
    return torch.nn.functional.conv2d(
        torch.from_numpy(x).double(), torch.from_numpy(w).double(), padding=padding
    ).numpy()


def small_conv() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    x = rng.standard_normal(SMALL_X).astype(np.float32)
    w = rng.standard_normal(SMALL_W).astype(np.float32)
    return x, w, autotune.conv2d(x, w, padding=1)


def rel_err(y: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(y - ref).max() / np.abs(ref).max())


def write_doc(cache_dir: Path, doc: object) -> Path:
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / "autotune.yaml"
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return path


def this_machine() -> tuple[str, dict]:
    db = state.database()
    return db.machine_id, db.machine


def fitting_entry(problem, choice: str, params: dict | None = None, **fields) -> dict:
    """An entry that fits ``problem`` in every respect the dispatcher checks, unless overridden."""
    entry = {
        "problem": problem.to_dict(),
        "choice": choice,
        "params": params or {},
        "tol": tuner.tolerance(problem),
        "kernels": registry.kernel_set_digest(problem.op),
        "tuned_at": machine.now_iso(),
        "candidates": {},
    }
    entry.update(fields)
    return entry


def store_entry(problem, entry: dict) -> None:
    state.database().store({problem.key: entry})
    api.reset()  # a fresh process: nothing bound yet


# ---------------------------------------------------------------------------------------------
# 1. An entry is used only when it fits the call.


def test_tightening_the_tolerance_re_tunes_a_looser_choice(counts, isolated_cache, fast_tuning):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 8, 16, 16)).astype(np.float32)
    w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    autotune.conv2d(x, w)
    tuned = counts["tune-started"]
    autotune.set_tolerance("float32", 1e-6)
    with pytest.warns(ChoiceWarning, match="looser than the current tol 1e-06"):
        y = autotune.conv2d(x, w)
    assert counts["tune-started"] == tuned + 1
    assert rel_err(y, torch_conv(x, w, 0)) <= 1e-6
    (entry,) = state.database().entries().values()
    assert entry["tol"] == 1e-6
    api.reset()  # the next process: the repaired entry fits and is used
    autotune.conv2d(x, w)
    assert counts["tune-started"] == tuned + 1


def test_set_tolerance_forgets_only_its_dtype(isolated_cache, fast_tuning):
    x32 = np.ones((1, 1, 5, 5), np.float32)
    autotune.conv2d(x32, np.ones((1, 1, 3, 3), np.float32))
    autotune.conv2d(x32.astype(np.float64), np.ones((1, 1, 3, 3)))
    autotune.set_tolerance("float64", 1e-9)
    keys = {key[3] for key in state.STATE.bound}
    assert keys == {"float32"}


@pytest.mark.parametrize(
    ("choice", "params", "why"),
    [
        ("svd", {"rank_b": 1}, "approximate and the call is exact"),
        ("no_such_kernel", {}, "not registered"),
        ("blas", {"tile": 4}, "no parameter 'tile'"),
    ],
)
def test_matmul_entry_that_does_not_fit_is_re_tuned(isolated_cache, fast_tuning, choice, params, why):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((16, 32)).astype(np.float32)
    b = rng.standard_normal((32, 16)).astype(np.float32)
    problem = MatmulProblem(a.shape, b.shape)
    store_entry(problem, fitting_entry(problem, choice, params))
    with pytest.warns(ChoiceWarning, match=why):
        c = autotune.matmul(a, b)
    assert rel_err(c, a.astype(np.float64) @ b) <= 1e-5
    repaired = state.database().lookup(problem.key)
    assert dispatch.entry_invalidity(problem, repaired) is None


@pytest.mark.parametrize(
    ("params", "fields", "why"),
    [
        ({"tile": 99}, {}, "does not offer"),
        ({"tile": 2, "unknown": 1}, {}, "no parameter 'unknown'"),
        ({"tile": 2}, {"kernels": "000000000000"}, "different set of kernels"),
        ({"tile": 2}, {"tol": 1.0}, "looser"),
    ],
)
@pytest.mark.parametrize("mode", ["tune", "off", "heuristic"])
def test_conv_entry_that_does_not_fit_warns_once_and_is_bypassed(
    counts, isolated_cache, fast_tuning, params, fields, why, mode
):
    problem = ConvProblem(SMALL_X, SMALL_W, padding=(1, 1, 1, 1))
    store_entry(problem, fitting_entry(problem, "winograd", params, **fields))
    autotune.set_mode(mode)
    before = counts["tune-started"]
    rng = np.random.default_rng(2)
    x = rng.standard_normal(SMALL_X).astype(np.float32)
    w = rng.standard_normal(SMALL_W).astype(np.float32)
    with pytest.warns(ChoiceWarning, match=why):
        y = autotune.conv2d(x, w, padding=1)
    assert rel_err(y, torch_conv(x, w)) <= 1e-5
    assert counts["tune-started"] == before + (mode == "tune")
    autotune.set_mode(mode)  # forgets the bound kernel: the entry is looked at again ...
    with cache.warnings.catch_warnings():
        cache.warnings.simplefilter("error", ChoiceWarning)  # ... without a second warning
        autotune.conv2d(x, w, padding=1)


def test_refresh_re_tunes_stale_entries(capsys, isolated_cache, fast_tuning):
    autotune.tune(["conv2d x=1x1x8x8 w=1x1x3x3", "matmul a=4x8 b=8x2"])
    doc = yaml.safe_load((isolated_cache / "autotune.yaml").read_text())
    for section in doc["machines"].values():
        for entry in section["entries"].values():
            entry["kernels"] = "0123456789ab"  # as if the kernel set had changed since
    write_doc(isolated_cache, doc)
    api.reset()
    assert cli.main(["tune", "--refresh", "--budget", "0.2"]) == 0
    assert "2 tuned" in capsys.readouterr().err
    current = {op: registry.kernel_set_digest(op) for op in ("conv2d", "matmul")}
    for key, entry in state.database().entries().items():
        assert entry["kernels"] == current[key.split()[0]]


# ---------------------------------------------------------------------------------------------
# 2. The whole file is validated on load; malformed parts are set aside; CLI never crashes.


def _damaged_documents() -> dict[str, object]:
    machine_id, machine = this_machine()
    good = fitting_entry(ConvProblem(SMALL_X, SMALL_W, padding=(1, 1, 1, 1)), "im2col")

    def section(entries: object) -> dict:
        return {"schema": 1, "machines": {machine_id: {"fingerprint": machine, "entries": entries}}}

    return {
        "entries is a list": section([good]),
        "entries is a string": section("oops"),
        "entries is a number": section(12),
        "machines is a list": {"schema": 1, "machines": ["a", "b"]},
        "section is a string": {"schema": 1, "machines": {machine_id: "oops"}},
        "fingerprint is a list": {"schema": 1, "machines": {machine_id: {"fingerprint": [1], "entries": {}}}},
        "entry is a list": section({SMALL_KEY: [1, 2]}),
        "problem is a string": section({SMALL_KEY: {**good, "problem": "conv2d"}}),
        "choice is a number": section({SMALL_KEY: {**good, "choice": 3}}),
        "params is a list": section({SMALL_KEY: {**good, "params": [4]}}),
        "tol is a string": section({SMALL_KEY: {**good, "tol": "tight"}}),
        "candidates is a list": section({SMALL_KEY: {**good, "candidates": [1]}}),
        "candidate numbers are text": section(
            {
                SMALL_KEY: {
                    **good,
                    "candidates": {"im2col": {"kernel": "im2col", "median_us": "fast", "ok": True}},
                }
            }
        ),
        "key is not a problem": section({"hello": good, 42: good}),
        "python tag": "schema: 1\nmachines: !!python/object/apply:os.system ['touch PWNED']\n",
        "not yaml": "schema: 1\nmachines: {unclosed\n",
        "schema is text": "schema: one\nmachines: {}\n",
        "a list at the top": "- 1\n- 2\n",
        "deep nesting": "schema: 1\nmachines: " + "[" * 5000 + "]" * 5000 + "\n",
        "empty": "",
    }


def damaged_cases() -> list[str]:
    return [
        "entries is a list",
        "entries is a string",
        "entries is a number",
        "machines is a list",
        "section is a string",
        "fingerprint is a list",
        "entry is a list",
        "problem is a string",
        "choice is a number",
        "params is a list",
        "tol is a string",
        "candidates is a list",
        "candidate numbers are text",
        "key is not a problem",
        "python tag",
        "not yaml",
        "schema is text",
        "a list at the top",
        "deep nesting",
        "empty",
    ]


@pytest.mark.parametrize("case", damaged_cases())
def test_damaged_file_never_breaks_a_call(isolated_cache, fast_tuning, case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_doc(isolated_cache, _damaged_documents()[case])
    rng = np.random.default_rng(3)
    x = rng.standard_normal(SMALL_X).astype(np.float32)
    w = rng.standard_normal(SMALL_W).astype(np.float32)
    with cache.warnings.catch_warnings(record=True):
        cache.warnings.simplefilter("always")
        y = autotune.conv2d(x, w, padding=1)
    assert rel_err(y, torch_conv(x, w)) <= 1e-5
    assert not (tmp_path / "PWNED").exists()
    doc = yaml.safe_load((isolated_cache / "autotune.yaml").read_text())
    clean, rejected = cache.validate_document(doc)
    assert rejected == {} and SMALL_KEY in clean["machines"][state.database().machine_id]["entries"]
    if case != "empty":
        kept_aside = list(isolated_cache.glob("autotune.yaml.rejected")) + list(
            isolated_cache.glob("autotune.yaml.corrupt-*")
        )
        assert kept_aside, "the damaged part must be kept somewhere"


@pytest.mark.parametrize("case", damaged_cases())
def test_no_cli_verb_crashes_on_a_damaged_file(capsys, isolated_cache, case, tmp_path):
    path = write_doc(isolated_cache, _damaged_documents()[case])
    other = tmp_path / "other.yaml"
    other.write_text(path.read_text())
    for argv in (
        ["show"],
        ["show", "--all-machines", "--format", "json"],
        ["explain", SMALL_KEY],
        ["export", str(tmp_path / "out.yaml")],
        ["merge", str(other), "--out", str(tmp_path / "merged.yaml")],
        ["import", str(other)],
    ):
        write_doc(isolated_cache, _damaged_documents()[case])
        api.reset()
        code = cli.main(argv)  # an exception escaping here is the traceback a user would see
        err = capsys.readouterr().err
        assert code in (0, 1), (argv, err)
        assert "Traceback" not in err and all(len(line) < 1000 for line in err.splitlines()), err


def test_a_damaged_file_gives_no_traceback_from_the_console_script(isolated_cache):
    write_doc(isolated_cache, _damaged_documents()["entries is a string"])
    for argv in (["show"], ["explain", SMALL_KEY], ["import", str(isolated_cache / "autotune.yaml")]):
        done = subprocess.run(
            [sys.executable, "-m", "autotune", *argv],
            capture_output=True,
            text=True,
            env={**os.environ, "AUTOTUNE_CACHE_DIR": str(isolated_cache)},
            timeout=120,
        )
        assert done.returncode in (0, 1) and "Traceback" not in done.stderr, done.stderr


# A generated document: the schema's skeleton with arbitrary values at every level.
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True), st.text(max_size=8)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
entry_like = st.fixed_dictionaries(
    {},
    optional={
        "problem": st.one_of(values, st.just({"op": "conv2d"}), st.just({"op": "matmul"})),
        "choice": st.one_of(values, st.sampled_from(["im2col", "blas", "svd", "nope"])),
        "params": st.one_of(values, st.dictionaries(st.text(max_size=5), scalars, max_size=2)),
        "tol": st.one_of(values, st.floats(1e-9, 1)),
        "kernels": values,
        "candidates": st.one_of(
            values,
            st.dictionaries(st.text(max_size=5), st.dictionaries(st.text(max_size=5), scalars), max_size=2),
        ),
    },
)
keys = st.one_of(st.text(max_size=10), st.sampled_from(["conv2d x=1x1x5x5 w=1x1x3x3", "matmul a=2x2 b=2x2"]))
sections = st.one_of(
    values,
    st.fixed_dictionaries(
        {},
        optional={
            "fingerprint": values,
            "entries": st.one_of(values, st.dictionaries(keys, st.one_of(entry_like, values), max_size=3)),
        },
    ),
)
documents = st.one_of(
    values,
    st.fixed_dictionaries(
        {"schema": st.one_of(st.just(1), values)},
        optional={"machines": st.one_of(values, st.dictionaries(st.text(max_size=6), sections, max_size=3))},
    ),
)


@given(documents)
def test_loader_fuzz_never_raises_and_keeps_only_schema_valid_parts(doc):
    text = yaml.safe_dump(doc)
    try:
        parsed = cache.parse_document(text, "fuzz")
    except ValueError:
        return  # not a database at all: the caller moves it aside
    clean, _ = cache.validate_document(parsed)
    assert cache.validate_document(clean) == (clean, {})  # idempotent: what is kept is valid
    for _, _, entries in schema.iter_sections(clean):
        for key, entry in entries.items():
            assert cache.entry_problem(key, entry) is None
    merged = cache.merge_documents(cache.empty_document(), clean)
    assert cache.parse_document(cache.dump_document(merged), "round trip")["machines"] == merged["machines"]


# ---------------------------------------------------------------------------------------------
# 3. Approximate choices under tol= stay honest.


def _steep_weight(k: int, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A (k, n) weight of numerical rank 8 (the other singular values 1e-5), and its weakest left
    singular vector."""
    u, _ = np.linalg.qr(rng.standard_normal((k, k)))
    v, _ = np.linalg.qr(rng.standard_normal((n, n)))
    s = np.array([1.0] * 8 + [1e-5] * (min(k, n) - 8))
    return (u[:, : len(s)] * s) @ v[: len(s)], u[:, len(s) - 1]


def test_approximate_choice_is_rechecked_on_later_calls(counts, isolated_cache, fast_tuning, monkeypatch):
    monkeypatch.setenv("AUTOTUNE_VERIFY", "1")  # check every call
    rng = np.random.default_rng(4)
    b, weak = _steep_weight(64, 64, rng)
    b = b.astype(np.float32)
    a = rng.standard_normal((32, 64)).astype(np.float32)
    problem = MatmulProblem(a.shape, b.shape, tol=1e-2, weight=digest(b))
    store_entry(problem, fitting_entry(problem, "svd", {"rank_b": 8}))
    c = autotune.matmul(a, b, tol=1e-2)
    assert rel_err(c, a.astype(np.float64) @ b) <= 1e-2  # fine on generic data
    a_weak = np.tile(weak, (32, 1)).astype(np.float32)  # rows in the weight's weakest direction
    before = counts["tune-started"]
    with pytest.warns(ChoiceWarning, match="re-tuning"):
        c = autotune.matmul(a_weak, b, tol=1e-2)
    assert rel_err(c, a_weak.astype(np.float64) @ b) <= 1e-2
    assert counts["tune-started"] == before + 1


def test_tuning_checks_approximate_kernels_on_random_data_too(isolated_cache, fast_tuning):
    rng = np.random.default_rng(5)
    b, _ = _steep_weight(64, 64, rng)
    b = b.astype(np.float32)
    # The caller's A lies in the weight's strongest directions only: rank 1 would do for it.
    a = np.tile(np.linalg.svd(b.astype(np.float64))[0][:, 0], (32, 1)).astype(np.float32)
    autotune.matmul(a, b, tol=1e-2)
    (entry,) = state.database().entries().values()
    assert entry["choice"] != "svd" or entry["params"]["rank_b"] > 1
    generic = rng.standard_normal((32, 64)).astype(np.float32)
    chosen = registry.get("matmul", entry["choice"]).fn(generic, b, **entry["params"])
    assert rel_err(chosen, generic.astype(np.float64) @ b) <= 1e-2


def test_verify_rate_is_validated(monkeypatch):
    monkeypatch.setenv("AUTOTUNE_VERIFY", "often")
    with pytest.raises(ValueError, match="AUTOTUNE_VERIFY"):
        dispatch.verify_rate()


# ---------------------------------------------------------------------------------------------
# 4. Non-finite inputs: never more non-finite outputs than the reference.


def _poisoned(shape: tuple[int, ...], dtype=np.float32, seed: int = 6) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    flat = x.reshape(-1)
    flat[flat.size // 3] = np.nan
    flat[2 * flat.size // 3] = np.inf
    return x


CONV_CHOICES = [("naive", {}), ("direct", {}), ("im2col", {}), ("torch", {}), ("fft", {})] + [
    ("winograd", {"tile": t}) for t in (2, 4, 6)
]


@pytest.mark.parametrize(("choice", "params"), CONV_CHOICES)
def test_conv_choice_never_spreads_nan_or_inf(isolated_cache, choice, params):
    x = _poisoned((1, 4, 16, 16))
    w = np.random.default_rng(8).standard_normal((4, 4, 3, 3)).astype(np.float32)
    problem = ConvProblem(x.shape, w.shape, padding=(1, 1, 1, 1))
    store_entry(problem, fitting_entry(problem, choice, params))
    y = autotune.conv2d(x, w, padding=1)
    ref = torch_conv(x, w)
    assert (~np.isfinite(y)).sum() <= (~np.isfinite(ref)).sum()
    finite = np.isfinite(ref)
    assert np.array_equal(np.isfinite(y), finite)
    np.testing.assert_allclose(y[finite], ref[finite], rtol=1e-4, atol=1e-4)


MATMUL_CHOICES = [
    ("naive", {}),
    ("blas", {}),
    ("torch", {}),
    ("log", {}),
    ("svd", {"rank_b": 4}),
    ("log_approx", {"f": 8}),
]


@pytest.mark.parametrize(("choice", "params"), MATMUL_CHOICES)
@pytest.mark.parametrize("poisoned", ["A", "B"])
def test_matmul_choice_never_spreads_nan_or_inf(isolated_cache, choice, params, poisoned):
    rng = np.random.default_rng(9)
    a = _poisoned((8, 16)) if poisoned == "A" else rng.standard_normal((8, 16)).astype(np.float32)
    b = _poisoned((16, 6)) if poisoned == "B" else rng.standard_normal((16, 6)).astype(np.float32)
    exact = registry.get("matmul", choice).exact
    problem = MatmulProblem(a.shape, b.shape, tol=None if exact else 0.5, weight=None if exact else digest(b))
    store_entry(problem, fitting_entry(problem, choice, params))
    with cache.warnings.catch_warnings():
        cache.warnings.simplefilter("ignore", RuntimeWarning)  # numpy on inf * 0
        c = autotune.matmul(a, b, tol=None if exact else 0.5)
        ref = (torch.from_numpy(a).double() @ torch.from_numpy(b).double()).numpy()
    assert (~np.isfinite(c)).sum() <= (~np.isfinite(ref)).sum()


@pytest.mark.parametrize("op", ["conv2d", "matmul"])
def test_kernels_not_declared_finite_only_keep_the_reference_pattern(op):
    """The probe behind ``finite_only``: every other kernel, forced, keeps the NaN/Inf mask."""
    for spec in registry.specs(op):
        if spec.finite_only:
            continue
        if op == "conv2d":
            kernel = 1 if spec.name == "pointwise" else 3  # the one filter size it applies to
            x, w = _poisoned((1, 3, 10, 10)), np.ones((2, 3, kernel, kernel), np.float32)
            pad = (kernel // 2,) * 4
            y, ref = spec.fn(x, w, None, (1, 1), pad, (1, 1), 1), torch_conv(x, w, kernel // 2)
        else:
            x, w = _poisoned((6, 9)), np.ones((9, 4), np.float32)
            with np.errstate(invalid="ignore"):
                y = spec.fn(x, w, **spec.param_grid(MatmulProblem(x.shape, w.shape))[0])
                ref = x.astype(np.float64) @ w
        assert np.array_equal(np.isfinite(y), np.isfinite(ref)), spec.name


@pytest.mark.parametrize(
    "bias", [np.array([1 + 2j, 0, 0], np.complex64), np.complex64(1j), 1j, np.array([True, False, True])]
)
def test_non_real_bias_is_a_type_error(bias):
    x, w = np.ones(SMALL_X, np.float32), np.ones(SMALL_W, np.float32)
    with pytest.raises(TypeError, match="conv2d: b"):
        autotune.conv2d(x, w, bias)


# ---------------------------------------------------------------------------------------------
# 5. Symlinks, temp files, lock contention, a writer killed mid-write.


def test_symlinked_database_is_written_through_to_its_target(isolated_cache, fast_tuning, tmp_path):
    shared = tmp_path / "shared" / "team.yaml"
    shared.parent.mkdir()
    isolated_cache.mkdir()
    (isolated_cache / "autotune.yaml").symlink_to(shared)
    small_conv()
    assert (isolated_cache / "autotune.yaml").is_symlink()
    assert SMALL_KEY in yaml.safe_load(shared.read_text())["machines"][state.database().machine_id]["entries"]
    assert not list(isolated_cache.glob(".autotune.yaml.*"))


def test_stale_temp_files_are_removed_under_the_lock(isolated_cache, fast_tuning):
    isolated_cache.mkdir()
    for name in (".autotune.yaml.abc123.tmp", ".autotune.yaml.zz.tmp"):
        (isolated_cache / name).write_text("x" * 1000)
    (isolated_cache / "unrelated.tmp").write_text("keep me")
    small_conv()
    assert not list(isolated_cache.glob(".autotune.yaml.*.tmp"))
    assert (isolated_cache / "unrelated.tmp").exists()


def test_lock_contention_keeps_the_result_and_writes_it_later(isolated_cache, fast_tuning, monkeypatch):
    monkeypatch.setattr(cache, "STORE_LOCK_TIMEOUT_S", 0.05)
    isolated_cache.mkdir()
    db = state.database()
    with FileLock(str(isolated_cache / "autotune.yaml") + ".lock"):
        with pytest.warns(CacheWarning, match="locked by another process"):
            small_conv()
        assert SMALL_KEY in db.pending
    assert db.flush()
    (section,) = yaml.safe_load((isolated_cache / "autotune.yaml").read_text())["machines"].values()
    assert SMALL_KEY in section["entries"] and not db.pending


WRITER = textwrap.dedent(
    """
    import sys
    from autotune import state
    db = state.database()
    entry = {"problem": {"op": "matmul"}, "choice": "blas", "params": {}, "tuned_at": "t", "why": "x" * 4000}
    for i in range(100000):
        db.store({f"matmul a={i + 1}x2 b=2x2 float32": entry})
        print(i, flush=True)
    """
)


def test_kill_during_writes_loses_no_stored_entry_and_leaves_no_temp_file(isolated_cache):
    env = {**os.environ, "AUTOTUNE_CACHE_DIR": str(isolated_cache)}
    confirmed = -1
    for kill_after in (40, 90):
        proc = subprocess.Popen([sys.executable, "-c", WRITER], env=env, stdout=subprocess.PIPE, text=True)
        for line in proc.stdout:
            confirmed_here = int(line)
            if confirmed_here >= kill_after:
                break
        time.sleep(0.003 * kill_after % 0.05)  # land somewhere inside a later write
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        doc = cache.parse_document((isolated_cache / "autotune.yaml").read_text(), "after kill")
        (section,) = doc["machines"].values()
        stored = {int(key.split()[1][2:].split("x")[0]) - 1 for key in section["entries"]}
        assert set(range(confirmed_here + 1)) <= stored  # every confirmed store survived
        confirmed = max(confirmed, confirmed_here)
    state.database().store({})  # any write (under the lock) sweeps the dead writers' temp files
    state.database().store({"matmul a=1x3 b=3x1 float32": {"problem": {"op": "matmul"}, "choice": "blas"}})
    assert not list(isolated_cache.glob(".autotune.yaml.*.tmp"))
    assert confirmed >= 90


# ---------------------------------------------------------------------------------------------
# 7. One-line errors that name the argument; the CLI's exit codes.


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda x, w: autotune.conv2d(x, w, method="winograd(tile=abc)"),
            ValueError,
            "parameter tile must be a number",
        ),
        (lambda x, w: autotune.conv2d(x, w, method="winograd(size=4)"), ValueError, "no parameter 'size'"),
        (lambda x, w: autotune.conv2d(x, w, padding=10**6), ValueError, "padding"),
        (lambda x, w: autotune.conv2d(x, w, tol="abc"), TypeError, "tol"),
        (lambda x, w: autotune.set_tolerance("float32", "abc"), TypeError, "tol must be a positive number"),
        (lambda x, w: autotune.set_tolerance("float32", float("nan")), ValueError, "tol"),
        (
            lambda x, w: autotune.conv2d(torch.from_numpy(x).bfloat16(), w),
            TypeError,
            "x has dtype torch.bfloat16",
        ),
    ],
)
def test_bad_arguments_are_named(call, error, message):
    x, w = np.ones(SMALL_X, np.float32), np.ones(SMALL_W, np.float32)
    with pytest.raises(error, match=message):
        call(x, w)


def test_tune_exits_1_when_results_cannot_be_saved(
    capsys, isolated_cache, fast_tuning, tmp_path, monkeypatch
):
    def refuse(path, text):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(cache, "write_atomic", refuse)
    shapes_file = tmp_path / "one.yaml"
    shapes_file.write_text("name: one\nproblems: [conv2d x=1x1x8x8 w=1x1x3x3]\n")
    code = cli.main(["tune", "--shapes", str(shapes_file), "--budget", "0.2"])
    err = capsys.readouterr().err
    assert code == 1 and "not saved" in err


@pytest.mark.parametrize("verb", [["bench", "--out"], ["study", "precision", "--quick", "--out"]])
def test_unwritable_out_is_refused_before_any_work(capsys, tmp_path, monkeypatch, verb):
    import studies
    from autotune.bench import suite as bench

    def no_work(*args, **kwargs):
        raise AssertionError("work started before --out was checked")

    monkeypatch.setattr(bench, "run", no_work)
    monkeypatch.setattr(studies, "load", lambda name: type("m", (), {"run": no_work, "__doc__": ""}))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code = cli.main([*verb, str(blocker / "sub")])
    err = capsys.readouterr().err
    assert code == 2 and "--out" in err and "Traceback" not in err


def test_cli_help_does_not_import_torch():
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, autotune.cli; print('torch' in sys.modules, 'numpy' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.split() == ["False", "False"], done.stderr


# ---------------------------------------------------------------------------------------------
# 6. Large files: appended journal, JSON index (thresholds lowered so that small files count).


@pytest.fixture
def large_file_mode(monkeypatch):
    monkeypatch.setattr(cache, "JOURNAL_ABOVE_BYTES", 1)


def test_large_file_takes_new_entries_through_the_journal(
    isolated_cache, fast_tuning, large_file_mode, capsys
):
    autotune.tune(["conv2d x=1x1x8x8 w=1x1x3x3"])  # no file yet: written whole
    main_text = (isolated_cache / "autotune.yaml").read_text()
    autotune.tune(["matmul a=4x8 b=8x2"])  # appended, the file untouched
    assert (isolated_cache / "autotune.yaml").read_text() == main_text
    assert "matmul a=4x8 b=8x2" in (isolated_cache / "autotune.yaml.journal").read_text()
    api.reset()  # a new process sees both, from the index and the journal
    assert set(state.database().entries()) == {
        "conv2d x=1x1x8x8 w=1x1x3x3 stride=1 pad=0 dilation=1 groups=1 float32",
        "matmul a=4x8 b=8x2 float32",
    }
    assert cli.main(["compact"]) == 0
    assert not (isolated_cache / "autotune.yaml.journal").exists()
    (section,) = yaml.safe_load((isolated_cache / "autotune.yaml").read_text())["machines"].values()
    assert len(section["entries"]) == 2 and "candidates" in section["entries"]["matmul a=4x8 b=8x2 float32"]


def test_merge_and_import_read_a_large_files_journal_too(
    isolated_cache, fast_tuning, large_file_mode, tmp_path, monkeypatch
):
    """A shard database whose newest entries are still in its journal merges completely."""
    autotune.tune(["conv2d x=1x1x8x8 w=1x1x3x3"])
    autotune.tune(["matmul a=4x8 b=8x2"])  # journaled: the YAML file does not have it yet
    assert (isolated_cache / "autotune.yaml.journal").exists()
    target = tmp_path / "merged"
    target.mkdir()
    monkeypatch.setenv("AUTOTUNE_CACHE_DIR", str(target))
    api.reset()
    assert cli.main(["merge", str(isolated_cache / "autotune.yaml")]) == 0
    api.reset()
    assert "matmul a=4x8 b=8x2 float32" in state.database().entries()
    assert (isolated_cache / "autotune.yaml.journal").exists()  # the source is left as it was


def test_index_is_used_only_for_the_file_it_was_built_from(isolated_cache, fast_tuning, large_file_mode):
    autotune.tune(["matmul a=4x8 b=8x2"])
    api.reset()
    state.database().entries()  # builds the index
    index = json.loads((isolated_cache / "autotune.yaml.index.json").read_text())
    assert list(index["entries"]) == ["matmul a=4x8 b=8x2 float32"]
    path = isolated_cache / "autotune.yaml"
    path.write_text(path.read_text().replace("matmul a=4x8 b=8x2 float32", "matmul a=4x8 b=8x3 float32"))
    api.reset()
    assert list(state.database().entries()) == ["matmul a=4x8 b=8x3 float32"]  # the edit, not the index


def test_a_torn_journal_record_is_skipped(isolated_cache, fast_tuning, large_file_mode):
    autotune.tune(["conv2d x=1x1x8x8 w=1x1x3x3", "matmul a=4x8 b=8x2"])
    with open(isolated_cache / "autotune.yaml.journal", "a") as journal:
        journal.write("---\nmachine: abc\nkey: matmul a=1x1 b=1x1 float32\nentry: {problem: {op: mat")
    autotune.tune(["matmul a=2x8 b=8x2"])  # appended right after the torn record
    api.reset()
    assert len(state.database().entries()) == 3


def test_a_tampered_index_entry_is_ignored(counts, isolated_cache, fast_tuning, large_file_mode):
    autotune.tune(["matmul a=4x8 b=8x2"])
    api.reset()
    state.database().entries()  # builds the index
    index_path = isolated_cache / "autotune.yaml.index.json"
    index = json.loads(index_path.read_text())
    index["entries"]["matmul a=4x8 b=8x2 float32"] = {"choice": 7, "params": "x"}
    index_path.write_text(json.dumps(index))
    api.reset()
    before = counts["tune-started"]
    c = autotune.matmul(np.ones((4, 8), np.float32), np.ones((8, 2), np.float32))
    assert float(c.sum()) == 64.0 and counts["tune-started"] == before + 1
