"""Torch modules whose inference goes through the autotune dispatcher.

* :class:`Linear` — a ``torch.nn.Linear`` computing ``y = x Wᵀ + b`` as ``autotune.matmul(x, Wᵀ)``;
* :class:`Conv2d` — a ``torch.nn.Conv2d`` computing its convolution with ``autotune.conv2d``;
* :class:`SVDLinear` — a low-rank linear layer ``y = ((x Vᵣ) ⊙ s) Uᵣᵀ + b`` computed as two thin
  GEMMs through the dispatcher, never rebuilding the (out × in) weight.

:func:`convert` swaps the ``torch.nn.Linear``/``Conv2d`` modules of a model for these (sharing
the parameters), so an existing model runs on the dispatcher without retraining.

**Inference vs training.** The dispatcher's kernels are inference kernels: numpy arrays in and
out, no autograd history. So a module uses the dispatcher only when no gradient can be wanted —
under ``torch.no_grad()``/``torch.inference_mode()``, or when neither the input nor any parameter
requires grad. Otherwise (training, fine-tuning, or gradients of an ``eval()`` model) it falls back
to the plain torch ops, with identical math, so autograd works. ``model.eval()`` alone therefore
does *not* switch to the dispatcher; inference code should also disable grad, as it usually does::

    model.eval()
    with torch.no_grad():
        y = model(x)        # every Linear / SVDLinear / Conv2d runs through autotune

On the dispatcher path a module converts its input to a numpy view once, calls
``autotune.matmul``/``conv2d`` on numpy arrays, adds the bias in place and wraps the result with
``torch.from_numpy``: the per-call overhead matters at batch 1, where the GEMMs take microseconds.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from autotune import api
from autotune.weights import Derived
from kernels.matmul.lowrank import LowRank, SvdMethod

Norm = Literal["fro", "spectral"]


def _wants_grad(x: torch.Tensor, *params: torch.Tensor | None) -> bool:
    """True if autograd may need this call's graph (then the torch ops must run)."""
    if not torch.is_grad_enabled():
        return False
    return x.requires_grad or any(p is not None and p.requires_grad for p in params)


def _numpy(t: torch.Tensor | None) -> np.ndarray | None:
    return None if t is None else t.detach().numpy()


def _dense_forward(
    x: torch.Tensor, in_features: int, factors: tuple[np.ndarray, ...], bias: np.ndarray | None
) -> torch.Tensor:
    """``x @ F₁ @ F₂ … + b`` through ``autotune.matmul`` for x (…, in); returns (…, out).

    Works on numpy views throughout (numpy in → numpy out skips the dispatcher's tensor
    conversion); the bias is added in place into the last GEMM's output.
    """
    x_np = x.detach().numpy()
    y = x_np.reshape(-1, in_features)
    for factor in factors:
        y = api.matmul(y, factor)
    if bias is not None:
        if y.flags.writeable:  # kernels return fresh arrays; stay correct if one ever does not
            np.add(y, bias, out=y)
        else:
            y = y + bias
    return torch.from_numpy(y.reshape(*x_np.shape[:-1], y.shape[1]))


# --- Linear. ---------------------------------------------------------------------------------


class Linear(torch.nn.Linear):
    """``torch.nn.Linear`` (``y = x Wᵀ + b``, W (out, in)) whose inference calls the dispatcher.

    Inference computes ``autotune.matmul(x (batch, in), Wᵀ (in, out))`` + b. ``Wᵀ`` is kept as a
    contiguous copy (so the GEMM's right operand is row-major without a per-call transpose) and
    rebuilt only when the weight changes (see :func:`autotune.weights.stamp`). Training falls back to
    ``F.linear`` (module docstring).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._arrays = Derived()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _wants_grad(x, self.weight, self.bias) or x.numel() == 0:
            return F.linear(x, self.weight, self.bias)
        weight_t, bias = self._arrays.get(self._numpy_arrays, self.weight, self.bias)
        return _dense_forward(x, self.in_features, (weight_t,), bias)

    def _numpy_arrays(self) -> tuple[np.ndarray, np.ndarray | None]:
        """(Wᵀ (in, out) contiguous copy, b (out,) view or None)."""
        return np.ascontiguousarray(_numpy(self.weight).T), _numpy(self.bias)

    @classmethod
    def from_torch(cls, layer: torch.nn.Linear) -> Linear:
        """A :class:`Linear` sharing ``layer``'s weight and bias (no copy, no re-initialisation)."""
        new = cls(layer.in_features, layer.out_features, bias=layer.bias is not None, device="meta")
        new.weight = layer.weight
        new.bias = layer.bias
        return new


# --- Conv2d. ---------------------------------------------------------------------------------


class Conv2d(torch.nn.Conv2d):
    """``torch.nn.Conv2d`` whose inference calls ``autotune.conv2d`` (same semantics).

    Falls back to torch for training (module docstring) and for ``padding_mode`` other than
    ``"zeros"`` (the dispatcher pads with zeros only).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding_mode != "zeros" or _wants_grad(x, self.weight, self.bias) or x.numel() == 0:
            return super().forward(x)
        return api.conv2d(
            x,
            self.weight,
            self.bias,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups,
        )

    @classmethod
    def from_torch(cls, layer: torch.nn.Conv2d) -> Conv2d:
        """A :class:`Conv2d` sharing ``layer``'s weight and bias (no copy, no re-initialisation)."""
        new = cls(
            layer.in_channels,
            layer.out_channels,
            layer.kernel_size,
            stride=layer.stride,
            padding=layer.padding,
            dilation=layer.dilation,
            groups=layer.groups,
            bias=layer.bias is not None,
            padding_mode=layer.padding_mode,
            device="meta",
        )
        new.weight = layer.weight
        new.bias = layer.bias
        return new


def convert(model: torch.nn.Module) -> torch.nn.Module:
    """Replace, in place, every ``torch.nn.Linear``/``Conv2d`` of ``model`` by its autotune twin.

    Parameters are shared, not copied. Returns ``model`` (or the replacement, when ``model``
    itself is a Linear/Conv2d).
    """
    if type(model) is torch.nn.Linear:
        return Linear.from_torch(model)
    if type(model) is torch.nn.Conv2d:
        return Conv2d.from_torch(model)
    for name, child in model.named_children():
        setattr(model, name, convert(child))
    return model


# --- SVDLinear. ------------------------------------------------------------------------------


def rank_for_tolerance(s: np.ndarray, tol: float, norm: Norm = "fro") -> int:
    """Smallest rank r ≥ 1 whose truncation error relative to ‖W‖ is within ``tol``.

    By Eckart–Young, with singular values s₀ ≥ s₁ ≥ …:

    * ``"fro"``: ‖W − Wᵣ‖_F / ‖W‖_F = sqrt(Σ_{i≥r} sᵢ²) / sqrt(Σ sᵢ²);
    * ``"spectral"``: ‖W − Wᵣ‖₂ / ‖W‖₂ = s_r / s₀ (0 at full rank).
    """
    s = np.asarray(s, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"rank_for_tolerance: s must be a non-empty 1-D array, got shape {s.shape}")
    if not 0 <= tol < 1:
        raise ValueError(f"rank_for_tolerance: tol must be in [0, 1), got {tol!r}")
    if norm == "fro":
        tail_sq = np.concatenate([np.cumsum((s**2)[::-1])[::-1], [0.0]])  # tail_sq[r] = Σ_{i≥r} sᵢ²
        errors = np.sqrt(tail_sq / max(tail_sq[0], np.finfo(np.float64).tiny))
    elif norm == "spectral":
        errors = np.concatenate([s, [0.0]]) / max(s[0], np.finfo(np.float64).tiny)
    else:
        raise ValueError(f"rank_for_tolerance: norm must be 'fro' or 'spectral', got {norm!r}")
    return max(1, int(np.argmax(errors <= tol)))


class SVDLinear(torch.nn.Module):
    """A rank-r linear layer: ``y = x Wᵣᵀ + b`` with ``Wᵣ = Uᵣ diag(s) Vᵣᵀ`` (W is out × in).

    Parameters (both row-major in the orientation their GEMM reads them):

    * ``v_scaled`` (in, r) = ``Vᵣ diag(s)`` — the singular values folded into the input-side factor;
    * ``u_t`` (r, out) = ``Uᵣᵀ``;
    * ``bias`` (out,) or None.

    Forward, for x (…, in): ``t = x @ v_scaled`` (batch, r), then ``y = t @ u_t + b`` (batch, out):
    ``2·batch·r·(in + out)`` flops instead of ``2·batch·in·out``, and ``r·(in + out)`` weights instead
    of ``in·out``. The order is the point of the layer: ``x`` meets the thin factor first, so the
    (in × out) product is never formed.

    Why ``s`` is folded, once, at construction: the unfolded form ``((x Vᵣ) ⊙ s) Uᵣᵀ`` needs a
    third pass over the (batch, r) intermediate on every call; folded, a call is exactly two GEMMs.
    Measured on a 512→128 layer with r = 32 (dispatcher, interleaved medians): the unfolded
    form cost ~17% more at batch 1 and ~5% more at batch 1000. The
    side does not matter numerically: float32 output errors against float64 were 4–5e-7 for ``s``
    in V, in Uᵀ, split as √s into both, or unfolded (a diagonal scaling barely changes a GEMM's
    relative rounding error). Nor for ``--finetune``: 3 epochs of Adam on digits models recovered
    the same accuracy (within ±2 points, no consistent winner) for all three placements. ``s`` goes
    into the input-side factor so that ``u_t`` keeps orthonormal rows: then ``‖t‖ = ‖y − b‖`` row by
    row, the intermediate has the output's scale. Both factors are ``nn.Parameter`` objects, trainable
    with autograd (torch ops in training mode; module docstring).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        *,
        bias: bool = True,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if not 1 <= rank <= min(in_features, out_features):
            raise ValueError(
                f"SVDLinear: rank must be in 1..{min(in_features, out_features)} for a "
                f"{out_features}x{in_features} weight, got {rank}"
            )
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.v_scaled = torch.nn.Parameter(torch.empty(in_features, rank, dtype=dtype))
        self.u_t = torch.nn.Parameter(torch.empty(rank, out_features, dtype=dtype))
        if bias:
            self.bias = torch.nn.Parameter(torch.empty(out_features, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self._arrays = Derived()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Random init with torch.nn.Linear's scale per factor (for training from scratch)."""
        with torch.no_grad():
            self.v_scaled.uniform_(-(self.in_features**-0.5), self.in_features**-0.5)
            self.u_t.uniform_(-(self.rank**-0.5), self.rank**-0.5)
            if self.bias is not None:
                self.bias.uniform_(-(self.in_features**-0.5), self.in_features**-0.5)

    @classmethod
    def from_lowrank(
        cls, factors: LowRank, bias: torch.Tensor | None = None, *, dtype: torch.dtype | None = None
    ) -> SVDLinear:
        """The layer ``y = x (U diag(s) Vᵀ)ᵀ + b`` for factors of a weight W (out × in).

        ``dtype`` (default: the factors' dtype) is the parameters' dtype; ``s`` is folded in the
        factors' precision before the cast.
        """
        out_features, in_features = factors.shape
        if dtype is None:
            dtype = torch.float64 if factors.dtype == np.float64 else torch.float32
        layer = cls(in_features, out_features, factors.rank, bias=bias is not None, dtype=dtype)
        with torch.no_grad():
            layer.v_scaled.copy_(torch.from_numpy(np.ascontiguousarray(factors.vt.T * factors.s)))
            layer.u_t.copy_(torch.from_numpy(np.ascontiguousarray(factors.u.T)))
            if bias is not None:
                layer.bias.copy_(bias.detach())
        return layer

    @classmethod
    def from_linear(
        cls,
        layer: torch.nn.Linear,
        rank: int | None = None,
        *,
        tol: float | None = None,
        norm: Norm = "fro",
        method: SvdMethod = "full",
    ) -> SVDLinear:
        """Factor a dense layer's weight, truncated to ``rank`` or to a relative error ``tol``.

        Args:
            layer: any ``torch.nn.Linear`` (weight W (out, in)); its bias is copied.
            rank: keep this many singular triplets (None with ``tol`` None: all of them — exact).
            tol: instead of ``rank``, the smallest rank with ``‖W − Wᵣ‖ / ‖W‖ ≤ tol``
                (:func:`rank_for_tolerance`, needs the full spectrum).
            norm: the norm of ``tol``: ``"fro"`` or ``"spectral"``.
            method: SVD algorithm for an explicit rank (:meth:`LowRank.from_matrix`); ``"full"``
                (LAPACK) gives the exact Eckart–Young optimum and costs little at layer sizes.

        The SVD runs in float64 and the factors are cast to the layer's dtype.
        """
        if rank is not None and tol is not None:
            raise ValueError("SVDLinear.from_linear: give rank or tol, not both")
        weight = layer.weight.detach().to(torch.float64).numpy()
        if tol is not None:
            factors = LowRank.from_matrix(weight, method="full")
            factors = factors.truncate(rank_for_tolerance(factors.s, tol, norm))
        else:
            factors = LowRank.from_matrix(weight, rank, method=method)
        return cls.from_lowrank(factors, layer.bias, dtype=layer.weight.dtype)

    @property
    def n_factor_parameters(self) -> int:
        """Weights held: r·(in + out) (bias excluded), against in·out for the dense layer."""
        return self.rank * (self.in_features + self.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _wants_grad(x, self.v_scaled, self.u_t, self.bias) or x.numel() == 0:
            return F.linear(torch.matmul(x, self.v_scaled), self.u_t.T, self.bias)
        v_scaled, u_t, bias = self._arrays.get(self._numpy_arrays, self.v_scaled, self.u_t, self.bias)
        return _dense_forward(x, self.in_features, (v_scaled, u_t), bias)

    def _numpy_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Views of (v_scaled, u_t, bias): they share the parameters' memory, so only a
        re-assigned parameter (new ``data_ptr``) really needs new ones."""
        return _numpy(self.v_scaled), _numpy(self.u_t), _numpy(self.bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, "
            f"bias={self.bias is not None}"
        )
