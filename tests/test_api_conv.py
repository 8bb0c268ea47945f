"""The public conv2d: seed 2-D form, input/output types and shapes, argument errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import autotune

EXACT = ["naive", "direct", "im2col", "fft", "torch", "pytorch"]
SEED_SIZES = range(3, 50, 4)


def seed_cases():
    """Odd square inputs 3…49 with a 3×3 kernel and with a large odd kernel (~half the input)."""
    for n in SEED_SIZES:
        yield n, 3
        large = max(3, (n // 2) | 1)
        if large != 3:
            yield n, large


@pytest.mark.parametrize("method", [*EXACT, "winograd", "winograd(tile=4)", "winograd(tile=6)"])
def test_seed_form_mean_l1_vs_torch(method):
    rng = np.random.default_rng(7)
    limit = 1e-3 if method.startswith("winograd") else 1e-4
    for n, k in seed_cases():
        if method.startswith("winograd") and k != 3:
            continue
        x = rng.standard_normal((n, n)).astype(np.float32)
        kern = rng.standard_normal((k, k)).astype(np.float32)
        b = float(rng.standard_normal())
        y = autotune.conv2d(x, kern, b, method=method)
        expected = F.conv2d(
            torch.from_numpy(x)[None, None], torch.from_numpy(kern)[None, None], torch.tensor([b])
        )[0, 0].numpy()
        assert y.shape == expected.shape == (n - k + 1, n - k + 1)
        assert y.dtype == np.float32
        assert np.abs(y - expected).mean() < limit, (n, k)


def test_seed_form_dispatch_tunes_and_matches_torch(fast_tuning):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((49, 49)).astype(np.float32)
    kern = rng.standard_normal((3, 3)).astype(np.float32)
    y = autotune.conv2d(x, kern, 0.5)
    expected = F.conv2d(torch.from_numpy(x)[None, None], torch.from_numpy(kern)[None, None])[0, 0]
    np.testing.assert_allclose(y, expected.numpy() + 0.5, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", ["direct", "im2col", "winograd", "fft", "torch"])
@pytest.mark.parametrize(
    ("x_shape", "w_shape", "kwargs"),
    [
        ((2, 4, 9, 11), (6, 4, 3, 3), {"padding": 1}),
        ((4, 9, 11), (6, 4, 3, 3), {"padding": "same"}),
        ((1, 6, 10, 10), (6, 2, 3, 3), {"groups": 3, "padding": "valid"}),
        ((1, 2, 8, 7), (3, 2, 4, 4), {"padding": "same"}),  # even kernel: asymmetric padding
        ((1, 3, 12, 12), (2, 3, 3, 3), {"stride": 2, "dilation": 2, "padding": (1, 2)}),
    ],
)
@pytest.mark.parametrize("as_torch", [False, True])
def test_output_type_and_shape_match_torch(method, x_shape, w_shape, kwargs, as_torch):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32)
    with warnings.catch_warnings():  # torch notes that even-kernel "same" pads a copy
        warnings.simplefilter("ignore", UserWarning)
        expected = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), **kwargs)
    if method == "winograd" and (kwargs.get("stride", 1) != 1 or w_shape[2] != 3):
        with pytest.raises(ValueError, match="does not apply"):
            autotune.conv2d(x, w, b, method=method, **kwargs)
        return
    inputs = (torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)) if as_torch else (x, w, b)
    y = autotune.conv2d(*inputs, method=method, **kwargs)
    assert isinstance(y, torch.Tensor if as_torch else np.ndarray)
    assert tuple(y.shape) == tuple(expected.shape)
    assert y.dtype == (torch.float32 if as_torch else np.float32)
    np.testing.assert_allclose(np.asarray(y), expected.numpy(), rtol=1e-4, atol=1e-4)


def test_float64_stays_float64():
    x = np.random.default_rng(0).standard_normal((1, 2, 6, 6))
    w = np.random.default_rng(1).standard_normal((3, 2, 3, 3))
    y = autotune.conv2d(x, w, method="im2col")
    assert y.dtype == np.float64
    expected = F.conv2d(torch.from_numpy(x), torch.from_numpy(w)).numpy()
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


def _x(shape=(1, 4, 8, 8), dtype=np.float32):
    return np.ones(shape, dtype=dtype)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: autotune.conv2d([[1.0]], [[1.0]]), TypeError, "x must be a numpy array"),
        (lambda: autotune.conv2d(_x(dtype=np.int32), _x((2, 4, 3, 3), np.int32)), TypeError, "dtype int32"),
        (lambda: autotune.conv2d(_x(dtype=np.float16), _x((2, 4, 3, 3), np.float16)), TypeError, "float16"),
        (lambda: autotune.conv2d(_x(), _x((2, 4, 3, 3), np.float64)), TypeError, "must match"),
        (lambda: autotune.conv2d(_x(), _x((2, 3, 3, 3))), ValueError, "expected w.shape\\[1\\]"),
        (lambda: autotune.conv2d(_x(), _x((3, 2, 3, 3)), groups=2), ValueError, "groups=2 must divide"),
        (lambda: autotune.conv2d(_x(), _x((2, 4, 9, 9))), ValueError, "does not fit"),
        (lambda: autotune.conv2d(_x(), _x((2, 4, 3, 3)), padding=-1), ValueError, "padding must be >= 0"),
        (lambda: autotune.conv2d(_x(), _x((2, 4, 3, 3)), padding="full"), ValueError, "padding must be"),
        (lambda: autotune.conv2d(_x(), _x((2, 4, 3, 3)), stride=0), ValueError, "stride"),
        (lambda: autotune.conv2d(_x(), _x((2, 4, 3, 3)), stride=2.5), TypeError, "stride must be"),
        (lambda: autotune.conv2d(_x(), _x((2, 4, 3, 3)), stride=2, padding="same"), ValueError, "same"),
        (
            lambda: autotune.conv2d(_x(), _x((2, 4, 3, 3)), np.ones(3, np.float32)),
            ValueError,
            "b must have shape",
        ),
        (lambda: autotune.conv2d(_x(), _x((2, 4, 3, 3)), method="magic"), ValueError, "unknown method"),
        (lambda: autotune.conv2d(_x(), _x((2, 4, 5, 5)), method="winograd"), ValueError, "does not apply"),
        (lambda: autotune.conv2d(_x(), _x((2, 4, 3, 3)), tol=-1), ValueError, "tol must be"),
        (lambda: autotune.conv2d(_x((8, 8)), _x((2, 4, 3, 3))), ValueError, "expected x"),
        (lambda: autotune.conv2d(_x(), _x((2, 4, 3, 3)), groups=1.5), TypeError, "groups must be an int"),
    ],
)
def test_bad_arguments_raise_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_bad_mode_in_environment_is_named(monkeypatch):
    monkeypatch.setenv("AUTOTUNE_MODE", "fastest")
    with pytest.raises(ValueError, match="AUTOTUNE_MODE"):
        autotune.conv2d(_x(), _x((2, 4, 3, 3)))
