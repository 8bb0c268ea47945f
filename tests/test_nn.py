"""autotune.nn: Linear, Conv2d and SVDLinear against torch float64 and the Eckart–Young theorem."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import autotune
from autotune import api, cache
from autotune import nn as atnn

F32_TOL = 1e-5


@pytest.fixture
def exact_mode():
    """Dispatch to the exact default (blas/im2col) without timing: these tests check numerics."""
    autotune.set_mode("off")
    yield
    autotune.set_mode(None)


@pytest.fixture
def calls(monkeypatch):
    """Record every dispatcher call made by the modules: (op, shapes of the operands)."""
    seen: list[tuple[str, tuple[tuple[int, ...], ...]]] = []
    matmul, conv2d = api.matmul, api.conv2d

    def spy_matmul(a, b, **kwargs):
        seen.append(("matmul", (tuple(a.shape), tuple(b.shape))))
        return matmul(a, b, **kwargs)

    def spy_conv2d(x, w, b=None, **kwargs):
        seen.append(("conv2d", (tuple(x.shape), tuple(w.shape))))
        return conv2d(x, w, b, **kwargs)

    monkeypatch.setattr(api, "matmul", spy_matmul)
    monkeypatch.setattr(api, "conv2d", spy_conv2d)
    return seen


def rel_max_error(y: torch.Tensor, ref: torch.Tensor) -> float:
    return float((y.detach().double() - ref.detach()).abs().max() / ref.detach().abs().max())


def svd_values(weight: torch.Tensor) -> np.ndarray:
    """Oracle singular values: LAPACK gesvd (the layers use numpy's gesdd)."""
    return scipy.linalg.svd(weight.detach().double().numpy(), compute_uv=False, lapack_driver="gesvd")


def linear_f64(layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Oracle: torch's own F.linear in float64 on the layer's parameters."""
    bias = None if layer.bias is None else layer.bias.double()
    return F.linear(x.double(), layer.weight.double(), bias)


# ---------------------------------------------------------------------------------------------
# Linear.


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("lead", [(5,), (1,), (2, 3)])
def test_linear_inference_matches_torch_float64(exact_mode, calls, bias, lead):
    torch.manual_seed(0)
    layer = atnn.Linear(7, 4, bias=bias).eval()
    x = torch.randn(*lead, 7)
    with torch.no_grad():
        y = layer(x)
    assert y.shape == (*lead, 4) and y.dtype == torch.float32
    assert rel_max_error(y, linear_f64(layer, x)) < F32_TOL
    assert calls == [("matmul", ((int(np.prod(lead)), 7), (7, 4)))]


def test_linear_inference_tunes_into_the_database(isolated_cache, fast_tuning):
    layer = atnn.Linear(6, 3)
    with torch.inference_mode():
        layer(torch.randn(2, 6))
    keys = cache.Database(isolated_cache / cache.FILENAME).entries()
    assert "matmul a=2x6 b=6x3 float32" in keys


def test_linear_training_falls_back_to_autograd(calls):
    torch.manual_seed(0)
    layer = atnn.Linear(5, 3)
    twin = torch.nn.Linear(5, 3)
    twin.load_state_dict(layer.state_dict())
    x = torch.randn(4, 5)
    layer(x).square().sum().backward()
    twin(x).square().sum().backward()
    assert calls == []
    torch.testing.assert_close(layer.weight.grad, twin.weight.grad)
    torch.testing.assert_close(layer.bias.grad, twin.bias.grad)


def test_eval_alone_keeps_autograd_no_grad_dispatches(exact_mode, calls):
    layer = atnn.Linear(5, 3).eval()
    x = torch.randn(2, 5)
    assert layer(x).grad_fn is not None and calls == []
    with torch.no_grad():
        assert layer(x).grad_fn is None
    assert len(calls) == 1


def test_input_requiring_grad_falls_back(exact_mode, calls):
    layer = atnn.Linear(5, 3).requires_grad_(False)
    x = torch.randn(2, 5, requires_grad=True)
    layer(x).sum().backward()
    torch.testing.assert_close(x.grad, layer.weight.sum(0).expand(2, 5))
    assert calls == []


def test_linear_sees_every_kind_of_weight_update(exact_mode):
    torch.manual_seed(0)
    layer = atnn.Linear(4, 3).eval()
    x = torch.randn(2, 4)

    def check():
        with torch.no_grad():
            assert rel_max_error(layer(x), linear_f64(layer, x)) < F32_TOL

    check()
    with torch.no_grad():
        layer.weight.mul_(-2)  # in place: bumps the version counter
    check()
    layer.weight = torch.nn.Parameter(torch.randn(3, 4))  # new storage
    check()
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.5)
    layer(x).sum().backward()
    optimizer.step()
    check()
    layer.load_state_dict({"weight": torch.randn(3, 4), "bias": torch.randn(3)})
    check()


def test_deepcopy_is_independent(exact_mode):
    layer = atnn.Linear(4, 3).eval()
    x = torch.randn(2, 4)
    with torch.no_grad():
        before = layer(x).clone()
        twin = copy.deepcopy(layer)
        twin.weight.zero_()
        twin.bias.fill_(1.0)
        torch.testing.assert_close(twin(x), torch.ones(2, 3))
        torch.testing.assert_close(layer(x), before)


def test_from_torch_and_convert_share_parameters(exact_mode, calls):
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(2, 3, 3, padding=1),
        torch.nn.Flatten(),
        torch.nn.Sequential(torch.nn.Linear(3 * 5 * 5, 4)),
    ).eval()
    x = torch.randn(2, 2, 5, 5)
    with torch.no_grad():
        expected = model(x)
        weight = model[2][0].weight
        converted = atnn.convert(model)
        assert isinstance(converted[0], atnn.Conv2d) and isinstance(converted[2][0], atnn.Linear)
        assert converted[2][0].weight is weight
        torch.testing.assert_close(converted(x), expected, rtol=1e-5, atol=1e-5)
    assert [op for op, _ in calls] == ["conv2d", "matmul"]


# ---------------------------------------------------------------------------------------------
# Conv2d.


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"stride": 2, "padding": 1},
        {"padding": "same", "dilation": 2},
        {"groups": 2, "padding": (1, 0)},
    ],
)
def test_conv2d_inference_matches_torch_float64(exact_mode, calls, options):
    torch.manual_seed(0)
    layer = atnn.Conv2d(4, 6, 3, **options).eval()
    x = torch.randn(2, 4, 9, 8)
    with torch.no_grad():
        y = layer(x)
    ref = F.conv2d(
        x.double(),
        layer.weight.double(),
        layer.bias.double(),
        layer.stride,
        layer.padding,
        layer.dilation,
        layer.groups,
    )
    assert y.shape == ref.shape and rel_max_error(y, ref) < F32_TOL
    assert [op for op, _ in calls] == ["conv2d"]


def test_conv2d_reflect_padding_falls_back_to_torch(exact_mode, calls):
    layer = atnn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect").eval()
    x = torch.randn(1, 2, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), torch.nn.Conv2d.forward(layer, x))
    assert calls == []


# ---------------------------------------------------------------------------------------------
# SVDLinear.


def known_spectrum_layer(s: list[float], in_features: int, seed: int = 0) -> torch.nn.Linear:
    """A float64 Linear whose weight (len(s), in) has exactly the singular values ``s``."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((len(s), len(s))))
    v, _ = np.linalg.qr(rng.standard_normal((in_features, len(s))))
    layer = torch.nn.Linear(in_features, len(s), dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy((u * np.asarray(s)) @ v.T))
    return layer


def test_full_rank_svdlinear_equals_linear(exact_mode, calls):
    torch.manual_seed(0)
    dense = torch.nn.Linear(24, 10)
    layer = atnn.SVDLinear.from_linear(dense).eval()
    assert layer.rank == 10 and layer.v_scaled.dtype == torch.float32
    x = torch.randn(6, 24)
    with torch.no_grad():
        y = layer(x)
    assert rel_max_error(y, linear_f64(dense, x)) < F32_TOL
    # two thin GEMMs, x first: the (in, out) weight is never formed
    assert calls == [("matmul", ((6, 24), (24, 10))), ("matmul", ((6, 10), (10, 10)))]


def test_factors_are_the_svd_with_s_folded_into_v():
    dense = known_spectrum_layer([5.0, 3.0, 2.0, 1.0], in_features=9)
    layer = atnn.SVDLinear.from_linear(dense, rank=3)
    assert layer.v_scaled.shape == (9, 3) and layer.u_t.shape == (3, 4)
    assert layer.v_scaled.is_contiguous() and layer.u_t.is_contiguous()
    torch.testing.assert_close(layer.v_scaled.norm(dim=0), torch.tensor([5.0, 3.0, 2.0], dtype=torch.float64))
    torch.testing.assert_close(layer.u_t @ layer.u_t.T, torch.eye(3, dtype=torch.float64))
    assert layer.n_factor_parameters == 3 * (9 + 4)


@given(
    out_features=st.integers(2, 12),
    extra_in=st.integers(0, 10),
    rank_fraction=st.floats(0.0, 0.99),
    seed=st.integers(0, 2**16),
)
def test_output_error_is_the_eckart_young_tail(out_features, extra_in, rank_fraction, seed):
    """With orthonormal inputs Q (in × in), ‖Y_r − Y‖_F = sqrt(Σ_{i≥r} σᵢ²) and ‖·‖₂ = σ_r exactly."""
    autotune.set_mode("off")
    in_features = out_features + extra_in
    rank = 1 + int(rank_fraction * (out_features - 1))
    rng = np.random.default_rng(seed)
    dense = torch.nn.Linear(in_features, out_features, dtype=torch.float64)
    with torch.no_grad():
        dense.weight.copy_(torch.from_numpy(rng.standard_normal((out_features, in_features))))
    sigma = svd_values(dense.weight)  # independent SVD
    q = torch.from_numpy(np.linalg.qr(rng.standard_normal((in_features, in_features)))[0])
    with torch.no_grad():
        error = atnn.SVDLinear.from_linear(dense, rank).eval()(q) - dense(q)
    scale = sigma[0]
    assert float(torch.linalg.matrix_norm(error)) == pytest.approx(
        np.sqrt(np.sum(sigma[rank:] ** 2)), abs=1e-9 * scale
    )
    tail = sigma[rank] if rank < len(sigma) else 0.0
    assert float(torch.linalg.matrix_norm(error, ord=2)) == pytest.approx(tail, abs=1e-9 * scale)


def test_error_on_general_inputs_obeys_the_bound_and_shrinks_with_rank(exact_mode):
    torch.manual_seed(0)
    dense = torch.nn.Linear(40, 16, dtype=torch.float64)
    sigma = svd_values(dense.weight)
    x = torch.randn(30, 40, dtype=torch.float64)
    x_norm = float(torch.linalg.matrix_norm(x, ord=2))
    errors = []
    with torch.no_grad():
        for rank in range(1, 17):
            error = atnn.SVDLinear.from_linear(dense, rank)(x) - dense(x)
            errors.append(float(torch.linalg.matrix_norm(error, ord=2)))
            tail = sigma[rank] if rank < 16 else 0.0
            assert errors[-1] <= x_norm * tail * (1 + 1e-9) + 1e-12
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(errors))
    assert errors[-1] < 1e-12


def test_float32_layer_error_tracks_the_float64_bound(exact_mode):
    """In float32 the truncation error dominates rounding: within 1e-4 relative of the float64 one."""
    dense = known_spectrum_layer([8.0, 4.0, 2.0, 1.0, 0.5, 0.25], in_features=20)
    q = torch.from_numpy(np.linalg.qr(np.random.default_rng(1).standard_normal((20, 20)))[0])
    dense32 = torch.nn.Linear(20, 6)
    dense32.load_state_dict({k: v.float() for k, v in dense.state_dict().items()})
    with torch.no_grad():
        error = atnn.SVDLinear.from_linear(dense32, 2).eval()(q.float()).double() - dense(q)
    assert float(torch.linalg.matrix_norm(error)) == pytest.approx(np.sqrt(4 + 1 + 0.25 + 0.0625), rel=1e-4)


@pytest.mark.parametrize(
    ("tol", "norm", "rank"),
    [
        # Σσ² = 85.25; tails after r = 1..4: 21.25, 5.25, 1.25, 0.25
        (0.5, "fro", 1),
        (0.25, "fro", 2),
        (0.13, "fro", 3),
        (0.06, "fro", 4),
        (0.01, "fro", 5),
        (0.3, "spectral", 2),  # σ₂/σ₀ = 0.25
        (0.2, "spectral", 3),  # σ₃/σ₀ = 0.125
        (0.0, "spectral", 5),
    ],
)
def test_rank_by_tolerance(tol, norm, rank):
    dense = known_spectrum_layer([8.0, 4.0, 2.0, 1.0, 0.5], in_features=7)
    layer = atnn.SVDLinear.from_linear(dense, tol=tol, norm=norm)
    assert layer.rank == rank
    ord_ = "fro" if norm == "fro" else 2
    with torch.no_grad():
        weight = layer.u_t.T @ layer.v_scaled.T
        relative = torch.linalg.matrix_norm(weight - dense.weight, ord=ord_) / torch.linalg.matrix_norm(
            dense.weight, ord=ord_
        )
    assert float(relative) <= tol + 1e-12


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"rank": 2, "tol": 0.1}, ValueError, "give rank or tol, not both"),
        ({"rank": 0}, ValueError, "rank must be in 1..5"),
        ({"rank": 6}, ValueError, "rank must be in 1..5"),
        ({"tol": 1.5}, ValueError, r"tol must be in \[0, 1\)"),
        ({"tol": 0.1, "norm": "nuclear"}, ValueError, "norm must be 'fro' or 'spectral'"),
    ],
)
def test_from_linear_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        atnn.SVDLinear.from_linear(torch.nn.Linear(7, 5), **kwargs)


def test_svdlinear_trains_with_autograd(calls):
    torch.manual_seed(0)
    layer = atnn.SVDLinear.from_linear(torch.nn.Linear(6, 4), rank=2)
    x = torch.randn(3, 6)
    layer(x).square().sum().backward()
    assert calls == []
    # oracle: autograd of the explicit formula on leaf copies
    v = layer.v_scaled.detach().clone().requires_grad_()
    u = layer.u_t.detach().clone().requires_grad_()
    ((x @ v) @ u + layer.bias.detach()).square().sum().backward()
    torch.testing.assert_close(layer.v_scaled.grad, v.grad)
    torch.testing.assert_close(layer.u_t.grad, u.grad)


def test_svdlinear_inference_sees_trained_factors(exact_mode):
    torch.manual_seed(0)
    layer = atnn.SVDLinear.from_linear(torch.nn.Linear(6, 4), rank=2).eval()
    x = torch.randn(3, 6)
    tuned = copy.deepcopy(layer)
    optimizer = torch.optim.SGD(tuned.parameters(), lr=0.1)
    with torch.no_grad():
        before = layer(x).clone()
        tuned(x)  # fill the copy's array cache before training it
    tuned(x).sum().backward()
    optimizer.step()
    with torch.no_grad():
        expected = (x.double() @ tuned.v_scaled.double()) @ tuned.u_t.double() + tuned.bias.double()
        assert rel_max_error(tuned(x), expected) < F32_TOL
        torch.testing.assert_close(layer(x), before)
        assert not torch.allclose(tuned(x), before)
