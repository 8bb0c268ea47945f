"""The LNS study: its oracles and helpers against independent computations, and a quick run's numbers."""

from __future__ import annotations

import argparse
import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

import studies
from kernels.matmul import lns
from studies import _tables as tables
from studies import lns as study


def randn(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape)


# ---------------------------------------------------------------------------------------------
# Oracles and helpers


@pytest.mark.parametrize("f", range(7))
def test_quantisation_model_matches_numerical_integration(f):
    # E[(2^((δa+δb)/n) − 1)²] over δa, δb ~ U(−½, ½) by the midpoint rule on a 2000x2000 grid
    n = 2**f
    delta = (np.arange(2000) + 0.5) / 2000 - 0.5
    eps = np.exp2((delta[:, None] + delta[None, :]) / n) - 1
    assert study.quantisation_l2_model(f) == pytest.approx(math.sqrt(np.mean(eps**2)), rel=1e-5)


@pytest.mark.parametrize("f", [0, 3, 6])
def test_output_conversion_bound_is_reached_just_above_a_threshold(f):
    n = 2**f
    threshold = 2 ** (1 / (2 * n))  # between the levels 1 and 2^(1/n), in the log domain
    c = np.array([[threshold * (1 + 1e-12)]])
    converted = lns.to_log_format(c, f)
    assert converted[0, 0] == 2 ** (1 / n)  # rounds up to the next level
    assert (converted[0, 0] - c[0, 0]) / c[0, 0] == pytest.approx(study.output_conversion_bound(f), rel=1e-9)
    below = lns.to_log_format(np.array([[threshold * (1 - 1e-12)]]), f)
    assert below[0, 0] == 1.0


def test_accumulator_pairs_and_worst_case_width():
    assert [study.accumulator_pairs(f) for f in range(4)] == [1, 2, 4, 8]
    assert study.accumulator_pairs(6, 2) == 16 and study.accumulator_pairs(5, 5) == 1
    assert study.worst_case_acc_bits(64, 4) == 32 + 6
    assert study.worst_case_acc_bits(1000, 4) == 32 + 10
    assert study.worst_case_acc_bits(64, 4, hybrid_bits=2) == 32 + 6 + 5
    assert study.accumulator_bits(1024, 4) == 2 * 16 * 42
    assert study.accumulator_bits(1024, 6, 2) == 2 * 16 * (42 + 7)


@pytest.mark.parametrize("f", [2, 4])
def test_largest_magnitudes_need_exactly_the_worst_case_width(f):
    # every operand at the top of the format (log rounds to e_max): each product adds 2^31 units
    a = np.full((2, 64), 2 ** (-1 / 2**f))
    ea, ebt = study.encode_pair(a, a.T.copy(), f)
    run = study.run_lns(ea, ebt)
    assert run.max_bits_used == study.worst_case_acc_bits(64, f) == (64 * 2**31).bit_length()
    assert not run.overflow.any()


def test_run_lns_in_row_blocks_equals_one_pass(monkeypatch):
    a, b = randn((37, 50), 0), randn((50, 9), 1)
    ea, ebt = study.encode_pair(a, b, 3)
    one = lns.lns_matmul_detailed(ea, ebt, f=3, keep_partials=True)
    monkeypatch.setattr(study, "PARTIALS_BYTES", 9 * 8 * 2 * 8 * 5)  # five rows per block
    blocked = study.run_lns(ea, ebt)
    np.testing.assert_array_equal(blocked.c, one.c)
    expected_bits = [[int(v).bit_length() for v in row] for row in one.partials.max(axis=(2, 3))]
    np.testing.assert_array_equal(blocked.bits_used, expected_bits)


def test_stage_three_is_what_out_log_returns():
    a, b = randn((12, 40), 2), randn((40, 7), 3)
    for f in (0, 2, 5):
        ea, ebt = study.encode_pair(a, b, f)
        converted = lns.to_log_format(study.run_lns(ea, ebt).c, f)
        np.testing.assert_array_equal(converted, lns.log_approx(a, b, f=f, out_log=1))


def test_hybrid_grid():
    assert study.hybrid_grid(0, True) == [] and study.hybrid_grid(4, True) == [1, 2, 3, 4]
    assert study.hybrid_grid(4, False) == [1, 4] and study.hybrid_grid(1, False) == [1]


# ---------------------------------------------------------------------------------------------
# The study, quick


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    target = study.run(tmp_path_factory.mktemp("studies"), quick=True)
    return target, tables.read_csv(target / "lns_errors.csv"), tables.read_csv(target / "lns_mlp.csv")


def _rows(rows, **match):
    selected = [r for r in rows if all(r[k] == str(v) for k, v in match.items())]
    assert selected, match
    return selected


def _median(rows, field="rel_max", **match):
    return float(np.median([float(r[field]) for r in _rows(rows, **match)]))


STAGES = {"experiment": "stages", "source": "gaussian"}


def test_quick_run_writes_csvs_plots_and_summary(quick_run):
    target, _, _ = quick_run
    assert target.name == "lns"
    pngs = {p.name for p in target.glob("*.png")}
    assert pngs == {
        "lns_error_vs_f.png",
        "lns_error_sources.png",
        "lns_accumulator_width.png",
        "lns_hybrid.png",
        "lns_mlp.png",
    }
    for name in pngs:
        with Image.open(target / name) as image:
            assert image.width > 800 and image.height > 400
    summary = (target / "summary.md").read_text()
    assert "autotune study lns --quick" in summary
    assert "every run" in summary and "give the same test accuracy at every f: yes" in summary


def test_error_falls_with_f_and_halves_per_bit(quick_run):
    _, rows, _ = quick_run
    for variant in (study.QUANTISED, study.LNS, study.OUT_LOG):
        medians = [_median(rows, **STAGES, variant=variant, f=f) for f in study.F_VALUES]
        assert all(b < a for a, b in itertools.pairwise(medians)), variant
        assert 0.1 < medians[0] < 0.6 and 2e-3 < medians[-1] < 1e-2, variant
    # one more fraction bit halves the log step and, on average, the error
    q = [_median(rows, **STAGES, variant=study.QUANTISED, f=f) for f in study.F_VALUES]
    assert 1.6 < (q[1] / q[-1]) ** (1 / 5) < 2.5


def test_quantisation_error_matches_the_model(quick_run):
    _, rows, _ = quick_run
    for r in _rows(rows, **STAGES, variant=study.QUANTISED):
        model = study.quantisation_l2_model(int(r["f"]))
        assert 0.85 < float(r["rel_l2"]) / model < 1.15, (r["subject"], r["f"])


def test_wide_accumulators_add_nothing_to_the_quantised_product(quick_run):
    _, rows, _ = quick_run
    wide = _rows(rows, experiment="stages", variant=study.LNS)
    assert {r["source"] for r in wide} == {"gaussian", "mlp"}
    for r in wide:
        assert float(r["own_rel_max"]) < 1e-14 and r["own_of"] == study.QUANTISED
        assert r["overflow_outputs"] == "0"
        assert float(r["rel_max"]) == pytest.approx(
            float(
                _rows(
                    rows,
                    experiment="stages",
                    subject=r["subject"],
                    seed=r["seed"],
                    f=r["f"],
                    variant=study.QUANTISED,
                )[0]["rel_max"]
            ),
            rel=1e-9,
        )
        assert int(r["acc_bits_used"]) <= int(r["acc_bits_worst_case"])


def test_narrow_accumulators_raise_the_overflow_flag_exactly_where_they_saturate(quick_run):
    _, rows, _ = quick_run
    width = _rows(rows, experiment="width")
    assert all(r["flags_match_bits_needed"] == "True" for r in width)
    assert all(float(r["unflagged_deviation"]) == 0.0 for r in width)
    for subject in {r["subject"] for r in width}:
        used = int(
            _rows(rows, experiment="stages", subject=subject, seed=0, f=4, variant=study.LNS)[0][
                "acc_bits_used"
            ]
        )
        for r in _rows(width, subject=subject):
            bits, flagged = int(r["acc_bits"]), int(r["overflow_outputs"])
            if bits >= used:
                assert flagged == 0 and float(r["own_rel_max"]) < 1e-14, (subject, bits)
            else:
                assert flagged > 0 and float(r["own_rel_max"]) > 1e-2, (subject, bits)
        narrowest = _rows(width, subject=subject, acc_bits=min(int(r["acc_bits"]) for r in width))[0]
        assert narrowest["overflow_fraction"] == "1.0" and float(narrowest["rel_max"]) > 0.5


def test_output_conversion_stays_within_its_bound(quick_run):
    _, rows, _ = quick_run
    for r in _rows(rows, experiment="stages", variant=study.OUT_LOG):
        bound = study.output_conversion_bound(int(r["f"]))
        assert bound / 4 < float(r["own_rel_max"]) <= bound * (1 + 1e-12), (r["subject"], r["f"])


def test_hybrid_saves_accumulators_at_a_cost_in_error(quick_run):
    _, rows, _ = quick_run
    hybrid = _rows(rows, **STAGES, variant=study.HYBRID)
    for r in hybrid:
        f, h = int(r["f"]), int(r["hybrid_bits"])
        assert int(r["acc_pairs"]) == 2 ** (f - h)
        assert int(r["acc_bits_worst_case"]) == study.worst_case_acc_bits(int(r["k"]), f, h)
        assert r["overflow_outputs"] == "0"
    # Mitchell on all bits levels off at a few percent; pure LNS keeps halving
    mitchell = _median(rows, **STAGES, variant=study.HYBRID, f=6, hybrid_bits=6)
    assert 0.02 < mitchell < 0.08
    assert mitchell > 5 * _median(rows, **STAGES, variant=study.LNS, f=6)
    # one Mitchell bit on top of f beats f − 1 pure with the same accumulator count
    for f in range(2, 7):
        assert _median(rows, **STAGES, variant=study.HYBRID, f=f, hybrid_bits=1) < _median(
            rows, **STAGES, variant=study.LNS, f=f - 1
        )


def test_baselines_are_float32_accurate(quick_run):
    _, rows, _ = quick_run
    for variant in (study.BLAS32, study.LOG32):
        assert _median(rows, experiment="baseline", source="gaussian", variant=variant) < 2e-6


def test_mlp_accuracy_approaches_float32_as_f_grows(quick_run):
    _, _, accuracy = quick_run

    def acc(variant, f=""):
        (row,) = _rows(accuracy, variant=variant, f=f)  # one row per variant and f (hybrids aside)
        return float(row["accuracy"])

    float32 = acc(study.BLAS32)
    assert float32 > 0.9 and abs(acc(study.FLOAT64) - float32) <= 2 / 360
    assert abs(acc(study.LNS, 6) - float32) <= 0.01
    assert abs(acc(study.OUT_LOG, 6) - float32) <= 0.01
    assert acc(study.LNS, 0) > 0.8  # powers of two still classify most digits
    for f in study.F_VALUES:  # stage (1) and (2) compute the same numbers up to float64 rounding
        assert acc(study.QUANTISED, f) == acc(study.LNS, f)


def test_options_and_registration(tmp_path):
    parser = argparse.ArgumentParser()
    study.add_arguments(parser)
    assert parser.parse_args(["--epochs", "7"]).epochs == 7
    assert studies.load("lns") is study
    with pytest.raises(ValueError, match="epochs"):
        study.run(tmp_path, epochs=0)


# ---------------------------------------------------------------------------------------------
# The encoder at the binade edge, signed accumulators, fixed-point constants


@pytest.mark.parametrize("f", [0, 2, 4])
def test_encoder_keeps_a_peak_whose_log_rounds_into_the_next_binade(f):
    # 3.96: log2 = 1.9855, which rounds to 2 at f ≤ 4 — the peak must encode as 4.0, not clip to 2^(2 − 1/n)
    x = np.array([[3.96, -1.0, 0.3]])
    t = lns.encode(x, lns.LnsFormat(f, 4))
    assert t.decode()[0, 0] == 4.0
    assert t.decode()[0, 1] == -1.0
    assert int(t.exponent.max()) <= t.fmt.e_max
    assert study.frexp_scale_clipped(x, t.fmt) == 1  # the former scale clipped exactly this value


@pytest.mark.parametrize("f", [0, 1, 2, 4, 6])
def test_encoder_rounds_every_value_to_the_nearest_level(f):
    # oracle: exact rational comparison of x with the geometric midpoint between the two candidate
    # levels (x ≥ 2^((E+½)/n) ⇔ x^(2n) ≥ 2^(2E+1)), on values that never underflow
    rng = np.random.default_rng(f)
    x = rng.standard_normal((6, 40)) * 3
    x[0, 0] = 3.96
    t = lns.encode(x, lns.LnsFormat(f, 4))
    n = 2**f
    for value, e in zip(x.ravel(), (t.exponent + n * t.scale).ravel(), strict=True):
        magnitude = Fraction(abs(float(value))) ** (2 * n)
        assert magnitude >= Fraction(2) ** (2 * int(e) - 1)  # at or above the threshold below E
        assert magnitude < Fraction(2) ** (2 * int(e) + 1)  # below the threshold above E
    assert study.misencoded(x, t) == 0


def test_frexp_scale_clipping_counts_match_the_review():
    # the review's 12 standard-normal cases (4 shapes x 3 seeds, both operands): 192 / 9 / 2 / 0
    subjects = study.gaussian_subjects(study.FULL.shapes, study.FULL.seeds)
    counts = []
    for f in (0, 2, 4, 6):
        fmt = lns.LnsFormat(f, 4)
        counts.append(
            sum(study.frexp_scale_clipped(s.a, fmt) + study.frexp_scale_clipped(s.b, fmt) for s in subjects)
        )
    assert counts == [192, 9, 2, 0]
    rows = [r for s in subjects[:3] for r in study.encoder_rows(s, 0)]
    assert all(r.value == 0 for r in rows if r.variant == "rounded-peak scale")


@pytest.mark.parametrize(("f", "hybrid_bits"), [(0, 0), (3, 0), (4, 2), (3, 3)])
def test_signed_accumulators_equal_the_unsigned_pairs_when_nothing_saturates(f, hybrid_bits):
    a, b = randn((5, 300), 10 + f), randn((300, 6), 20 + f)
    kw = {"f": f, "hybrid_bits": hybrid_bits, "keep_partials": True}
    unsigned = lns.lns_matmul_detailed(a, b, **kw)
    signed = lns.lns_matmul_detailed(a, b, signed=1, **kw)
    assert not unsigned.overflow.any() and not signed.overflow.any()
    np.testing.assert_array_equal(
        signed.partials[..., 0], unsigned.partials[..., 0] - unsigned.partials[..., 1]
    )
    assert not signed.partials[..., 1].any()
    np.testing.assert_array_equal(signed.c, unsigned.c)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_signed_accumulator_saturates_at_its_twos_complement_range(sign):
    ones = np.full((1, 8), sign)
    # each product is 2^30 units; a 32-bit signed accumulator holds [−2^31, 2^31 − 1]: one product
    narrow = lns.lns_matmul_detailed(ones, np.ones((8, 1)), acc_bits=32, signed=1)
    assert narrow.overflow.all()
    expected = 2**31 - 1 if sign > 0 else -(2**31)
    assert narrow.c[0, 0] == expected * 2.0**narrow.lsb_exponent
    assert not lns.lns_matmul_detailed(ones, np.ones((8, 1)), acc_bits=35, signed=1).overflow.any()


@pytest.mark.parametrize(("f", "hybrid_bits", "signed"), [(0, 0, 0), (3, 0, 1), (5, 0, 0), (4, 2, 1)])
def test_fixed_point_constants_give_the_exact_integer_sum(f, hybrid_bits, signed):
    # oracle: Σ round(2^(r/n)·2^t)·(P − N) in exact rationals from the kept accumulators
    t = 24
    a, b = randn((4, 200), 30 + f), randn((200, 3), 40 + f)
    result = lns.lns_matmul_detailed(
        a, b, f=f, hybrid_bits=hybrid_bits, signed=signed, table_bits=t, keep_partials=True
    )
    n = 2**f
    constants = [round(Fraction(2 ** (r * 2**hybrid_bits / n)) * 2**t) for r in range(2 ** (f - hybrid_bits))]
    unit = Fraction(2) ** (result.lsb_exponent - t - (f if hybrid_bits else 0))
    for i, j in itertools.product(range(4), range(3)):
        acc = result.partials[i, j]
        exact = sum(c * (int(p) - int(m)) for c, (p, m) in zip(constants, acc, strict=True)) * unit
        assert abs(Fraction(result.c[i, j]) - exact) <= abs(exact) * Fraction(1, 2**50)
    floating = lns.lns_matmul_detailed(a, b, f=f, hybrid_bits=hybrid_bits)
    assert study.rel_max_error(result.c, floating.c) <= 2.0 ** -(t + 1)


def test_budget_designs_fit_the_budget_and_their_addends():
    for budget in study.BUDGETS:
        for exp_bits, f, h, width in study.budget_designs(budget):
            assert study.accumulator_pairs(f, h) * width <= budget
            assert (2 << exp_bits) + (f + 1 if h else 0) < width  # one addend fits a signed accumulator
    assert (3, 6, 6, 32) in study.budget_designs(32)
