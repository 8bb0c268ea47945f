"""Repeat calls with torch tensors go straight to the bound kernel and stay correct."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import autotune
from autotune import api, dispatch, state
from kernels import registry


def oracle(x, w, b=None, **geometry):
    return F.conv2d(x.double(), w.double(), None if b is None else b.double(), **geometry)


def max_error(y, ref) -> float:
    return float((y.double() - ref).abs().max() / ref.abs().max())


@pytest.mark.parametrize("method", ["direct", "im2col", "torch", "winograd"])
def test_repeat_calls_follow_new_and_mutated_weights(method, monkeypatch):
    """Fresh weights, in-place updates and a new bias are all seen by the cached fast entry."""
    monkeypatch.setattr(
        dispatch, "resolve", lambda problem, inputs=None: registry.get("conv2d", method).bind({})
    )
    x = torch.randn(1, 3, 10, 10)
    w = torch.randn(4, 3, 3, 3)
    b = torch.randn(4)
    for step in range(5):
        if step == 1:
            w = torch.randn(4, 3, 3, 3)  # a new tensor (may reuse the old one's memory)
        if step == 2:
            w.mul_(-2.0)  # in place: torch bumps its version
        if step == 3:
            b = torch.randn(4)
        if step == 4:
            w.data = torch.randn(4, 3, 3, 3)  # new storage, same object, same version
        y = autotune.conv2d(x, w, b, padding=1)
        assert isinstance(y, torch.Tensor)
        assert max_error(y, oracle(x, w, b, padding=1)) < 1e-5
    assert any(key[0] == "conv2d-fast" for key in state.STATE.bound)


def test_a_torch_choice_is_a_native_tensor_call(monkeypatch):
    calls = []
    spec = registry.get("conv2d", "torch")
    native = spec.tensor_fn

    def counting(*args):
        calls.append(1)
        return native(*args)

    monkeypatch.setattr(api, "_native", lambda fn: counting)
    monkeypatch.setattr(dispatch, "resolve", lambda problem, inputs=None: spec.fn)
    x, w = torch.randn(2, 3, 8, 8), torch.randn(5, 3, 3, 3)
    for _ in range(3):
        y = autotune.conv2d(x, w, stride=2)
    assert len(calls) == 2  # the first call takes the full path, the repeats the native one
    assert max_error(y, oracle(x, w, stride=2)) < 1e-5


def test_tensors_that_require_grad_and_non_contiguous_inputs():
    autotune.set_mode("off")
    w = torch.nn.Parameter(torch.randn(4, 3, 3, 3))
    x = torch.randn(1, 3, 12, 12, requires_grad=True)
    x_t = torch.randn(1, 3, 12, 12).transpose(2, 3)  # same shape, not contiguous
    for inputs in (x, x_t, x, x_t):
        y = autotune.conv2d(inputs, w, padding=1)
        assert not y.requires_grad
        np.testing.assert_allclose(
            y.numpy(), oracle(inputs.detach(), w.detach(), padding=1).numpy(), rtol=1e-4, atol=1e-4
        )
    b = torch.randn(4, requires_grad=True)  # only the bias asks for grad
    for _ in range(2):
        assert not autotune.conv2d(x_t, w.detach(), b, padding=1).requires_grad


@pytest.mark.parametrize("method", ["winograd", "fft"])
def test_repeat_calls_route_non_finite_input_to_the_exact_kernel(method, monkeypatch):
    """The repeat-call path keeps the finite_only guard: NaN/Inf never spreads beyond torch's."""
    spec = registry.get("conv2d", method)
    monkeypatch.setattr(dispatch, "resolve", lambda problem, inputs=None: spec.bind(spec.defaults))
    w = torch.randn(4, 3, 3, 3)
    clean = torch.randn(1, 3, 12, 12)
    poisoned = clean.clone()
    poisoned[0, 1, 5, 5] = float("nan")
    poisoned[0, 2, 2, 7] = float("inf")
    for x in (clean, poisoned, clean, poisoned):  # the first call binds, the rest repeat
        y = autotune.conv2d(x, w, padding=1)
        ref = oracle(x, w, padding=1)
        assert torch.equal(torch.isfinite(y), torch.isfinite(ref))
    assert any(key[0] == "conv2d-fast" for key in state.STATE.bound)


@pytest.mark.parametrize("method", ["winograd", "fft"])
def test_a_fixed_weight_is_checked_for_nan_once_per_content(method, monkeypatch):
    """A module parameter's finiteness is kept with its state: a clean weight is not re-read on
    every call, and a NaN written into it (its version bumps) still reaches the exact kernel."""
    spec = registry.get("conv2d", method)
    monkeypatch.setattr(dispatch, "resolve", lambda problem, inputs=None: spec.bind(spec.defaults))
    passes = []
    real_isfinite = np.isfinite
    monkeypatch.setattr(np, "isfinite", lambda a: passes.append(a.shape) or real_isfinite(a))
    w = torch.nn.Parameter(torch.randn(4, 3, 3, 3), requires_grad=False)
    x = torch.randn(1, 3, 12, 12)
    for _ in range(4):
        y = autotune.conv2d(x, w, padding=1)
        assert max_error(y, oracle(x, w.detach(), padding=1)) < 1e-4
    assert passes.count((4, 3, 3, 3)) == 1 and passes.count((1, 3, 12, 12)) == 4
    with torch.no_grad():
        w[1, 2, 0, 0] = float("nan")
    for _ in range(2):
        y = autotune.conv2d(x, w, padding=1)
        assert torch.equal(torch.isfinite(y), torch.isfinite(oracle(x, w.detach(), padding=1)))
    handle = autotune.Weight(w.detach().numpy())
    xa = x.numpy()
    for _ in range(2):
        ya = autotune.conv2d(xa, handle, padding=1)
        assert np.array_equal(np.isfinite(ya), np.isfinite(oracle(x, w.detach(), padding=1).numpy()))


def test_unhashable_geometry_takes_the_full_path_and_is_right_every_time():
    """A list stride or padding cannot key the repeat-call map: each call is validated in full."""
    x, w = torch.randn(1, 2, 9, 9), torch.randn(3, 2, 3, 3)
    ref = oracle(x, w, stride=(2, 1), padding=(1, 0))
    for _ in range(3):
        y = autotune.conv2d(x, w, stride=[2, 1], padding=[1, 0])
        assert max_error(y, ref) < 1e-5
    assert not any(key[0] == "conv2d-fast" for key in state.STATE.bound)
