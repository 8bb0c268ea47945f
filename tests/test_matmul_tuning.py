"""Tuning with approximate matmul kernels, and reuse of a weight's prepared forms.

Choices here rest on margins far beyond timing noise (a rank-4 weight: the svd product needs ~30x
fewer flops than BLAS) or on accuracy alone; no test asserts a time.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

import autotune
from autotune import tuner, weights
from kernels import registry

TOL_LOOSE = 1e-2
TOL_TIGHT = 1e-5


def low_rank_weight(n: int = 256, rank: int = 4, noise: float = 1e-3, seed: int = 0) -> np.ndarray:
    """float32 (n, n): a rank-``rank`` matrix plus a little full-rank noise."""
    rng = np.random.default_rng(seed)
    signal = rng.standard_normal((n, rank)) @ rng.standard_normal((rank, n))
    return (signal + noise * rng.standard_normal((n, n))).astype(np.float32)


def activation(m: int = 128, n: int = 256, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((m, n)).astype(np.float32)


def rel_err(c, a, b) -> float:
    ref = np.asarray(a, np.float64) @ np.asarray(b, np.float64)
    return float(np.abs(np.asarray(c, np.float64) - ref).max() / np.abs(ref).max())


def only_entry(cache_dir):
    document = yaml.safe_load((cache_dir / "autotune.yaml").read_text())
    (section,) = document["machines"].values()
    ((key, entry),) = section["entries"].items()
    return key, entry


def test_loose_tol_picks_svd_at_the_smallest_accurate_rank(fast_tuning, isolated_cache):
    w, x = low_rank_weight(), activation()
    c = autotune.matmul(x, w, tol=TOL_LOOSE)
    assert rel_err(c, x, w) <= TOL_LOOSE
    key, entry = only_entry(isolated_cache)
    assert f"tol=0.01 weight={weights.digest(w)}" in key
    assert entry["choice"] == "svd" and entry["params"] == {"rank_b": 4}
    verdicts = entry["candidates"]
    assert all(not verdicts[f"svd(rank_b={r})"]["ok"] for r in (1, 2, 3))
    assert "prepare_us" in verdicts["svd(rank_b=4)"]


def test_tight_tol_refuses_svd_and_log_approx(fast_tuning, isolated_cache):
    w, x = low_rank_weight(), activation()
    c = autotune.matmul(x, w, tol=TOL_TIGHT)
    assert rel_err(c, x, w) <= TOL_TIGHT
    _, entry = only_entry(isolated_cache)
    assert entry["choice"] not in ("svd", "log_approx")
    approximate = {
        label: v for label, v in entry["candidates"].items() if v["kernel"] in ("svd", "log_approx")
    }
    assert approximate and all(v["reason"].startswith("inaccurate") for v in approximate.values())


def test_without_tol_approximate_kernels_are_not_candidates(fast_tuning, isolated_cache):
    w, x = low_rank_weight(64), activation(8, 64)
    autotune.matmul(x, w)
    key, entry = only_entry(isolated_cache)
    assert "weight=" not in key
    for name in ("svd", "log_approx"):
        assert entry["candidates"][name]["reason"].startswith("approximate: eligible only with")
    log = entry["candidates"]["log"]  # the exact log-domain kernel is always a candidate
    assert log["rel_err"] < 1e-5 and not log.get("reason", "").startswith(("approximate", "not applicable"))


def test_same_content_in_another_array_is_a_cache_hit(counts, fast_tuning):
    w, x = low_rank_weight(), activation()
    autotune.matmul(x, w, tol=TOL_LOOSE)
    tuned = counts["tune-started"]
    again = autotune.matmul(x, w.copy(), tol=TOL_LOOSE)
    assert tuned == counts["tune-started"]
    assert rel_err(again, x, w) <= TOL_LOOSE


def test_torch_weight_is_prepared_once_and_refreshed_after_an_in_place_update(counts, fast_tuning):
    w = torch.from_numpy(low_rank_weight().T.copy())  # (out, in) like nn.Linear; B is the view w.T
    x = torch.from_numpy(activation())
    autotune.matmul(x, w.T, tol=TOL_LOOSE)
    tuned, prepared = counts["tune-started"], counts["prepared"]
    for _ in range(3):  # w.T is a new view object each time; its base and version are the same
        c = autotune.matmul(x, w.T, tol=TOL_LOOSE)
    assert (tuned, prepared) == (counts["tune-started"], counts["prepared"])
    assert isinstance(c, torch.Tensor) and rel_err(c, x, w.T) <= TOL_LOOSE
    with torch.no_grad():
        w[:, :8] *= -3.0  # in place: bumps the version counter shared by w and its views
    c = autotune.matmul(x, w.T, tol=TOL_LOOSE)
    assert tuned + 1 == counts["tune-started"]  # new content, new digest, new key
    assert prepared + 1 == counts["prepared"]
    assert rel_err(c, x, w.T) <= TOL_LOOSE


def test_forced_svd_reuses_factors_of_an_unchanged_weight(counts):
    w, x = low_rank_weight(), activation()
    handle = autotune.Weight(w)
    before = counts["prepared"]
    results = [autotune.matmul(x, handle, method="svd", rank_B=4) for _ in range(3)]
    assert before + 1 == counts["prepared"]
    w *= 2.0  # the handle owns a copy: the caller's later writes do not reach it
    again = autotune.matmul(x, handle, method="svd", rank_B=4)
    np.testing.assert_array_equal(again, results[0])
    assert rel_err(again, x, handle.array) <= TOL_LOOSE


def test_plain_numpy_weight_changed_in_place_is_refactored(counts):
    w, x = low_rank_weight(), activation()
    first = autotune.matmul(x, w, method="svd", rank_B=4)
    before = counts["prepared"]
    autotune.matmul(x, w, method="svd", rank_B=4)
    assert before == counts["prepared"]  # same content digest: factors reused
    w *= 2.0
    second = autotune.matmul(x, w, method="svd", rank_B=4)
    assert before + 1 == counts["prepared"]
    np.testing.assert_allclose(second, 2.0 * first, rtol=1e-4, atol=1e-3)


def test_lowrank_operand_dispatches_to_svd_without_tuning(counts, isolated_cache):
    factors = autotune.LowRank.from_matrix(low_rank_weight(), 4)
    x = activation()
    tuned = counts["tune-started"]
    c = autotune.matmul(x, factors, tol=TOL_LOOSE)
    assert tuned == counts["tune-started"] and not (isolated_cache / "autotune.yaml").exists()
    np.testing.assert_allclose(c, x @ factors.to_dense(), rtol=1e-4, atol=1e-3)


def test_log_approx_tuning_keeps_the_fewest_fraction_bits_that_meet_tol(fast_tuning, isolated_cache):
    x = activation(16, 64)
    w = np.random.default_rng(2).standard_normal((64, 32)).astype(np.float32)  # full rank: svd cannot help
    autotune.matmul(x, w, tol=0.05)
    _, entry = only_entry(isolated_cache)
    tried = {v["params"]["f"]: v for v in entry["candidates"].values() if v["kernel"] == "log_approx"}
    accurate = [f for f, v in tried.items() if v.get("rel_err", 1.0) <= 0.05]
    assert accurate == [max(tried)]  # the walk stopped at the first accurate f
    assert all(tried[f]["reason"].startswith("inaccurate") for f in tried if f != max(tried))


@pytest.mark.parametrize("mode", ["off", "heuristic"])
def test_modes_without_tuning_stay_exact_with_a_tol(mode):
    autotune.set_mode(mode)
    w, x = low_rank_weight(64), activation(8, 64)
    c = autotune.matmul(x, w, tol=TOL_LOOSE)
    assert rel_err(c, x, w) < 1e-5


def test_tuner_prepares_each_setting_once_and_times_calls_with_the_prepared_weight(fast_tuning):
    calls = {"prepare": 0, "raw": 0}

    def scaled(a, b, scale=1):
        if isinstance(b, np.ndarray):  # the raw weight: must never reach a timed call
            calls["raw"] += 1
            return (a @ b) * scale
        return (a @ b[0]) * scale

    def prepare(b, scale=1):
        calls["prepare"] += 1
        return (b.copy(),)

    spec = registry.KernelSpec(
        name="prepared_probe",
        op="matmul",
        fn=scaled,
        exact=False,
        param_grid=lambda problem: [{"scale": 1}, {"scale": 2}],
        prepare=prepare,
    )
    registry.register(spec)
    try:
        # weight= marks a weight reused across calls: its preparation is not per-call cost
        problem = autotune.MatmulProblem((4, 6), (6, 5), tol=1e-3, weight="0123456789abcdef")
        result = tuner.tune_problem(problem)
        probes = {v.label: v for v in result.candidates if v.kernel == "prepared_probe"}
        assert calls == {"prepare": 2, "raw": 0}
        assert probes["prepared_probe(scale=1)"].ok and probes["prepared_probe(scale=1)"].runs >= 3
        assert probes["prepared_probe(scale=2)"].reason.startswith("inaccurate")
        assert all(v.prepare_us is not None for v in probes.values())

        # a one-off weight: the transform is part of every call, so the raw weight is timed
        calls.update(prepare=0, raw=0)
        one_off = tuner.tune_problem(autotune.MatmulProblem((4, 6), (6, 5), tol=1e-3))
        assert calls["prepare"] == 0 and calls["raw"] >= 3
        assert all(v.prepare_us is None for v in one_off.candidates)
    finally:
        registry.unregister("matmul", "prepared_probe")


def test_ranks_of_the_activation_only_need_no_weight_preparation(counts):
    x, w = low_rank_weight(64, 2), activation(64, 32)
    autotune.matmul(x, w, rank_A=2)
    before = counts["prepared"]
    for _ in range(3):
        c = autotune.matmul(x, w, rank_A=2)
    assert before == counts["prepared"]
    assert rel_err(c, x, w) < 1e-2
