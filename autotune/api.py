"""The public calls: validate and normalise once, look the choice up, call the kernel.

The path of a call — the torch fast path, the normalised key and its one dict lookup, a miss, the
guards no entry can prove (non-finite input, re-checked approximate choices) — is described in
docs/architecture.md, "The lifecycle of a call". numpy in → numpy out; CPU torch tensors in →
torch tensors out (zero-copy both ways; no autograd history — these are inference kernels).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable
from typing import Any, Literal

import numpy as np
import torch

from autotune import dispatch, state, weights
from autotune.dispatch import ChoiceWarning, exact_default
from autotune.problem import ConvProblem, MatmulProblem, Pair, Problem, Quad
from autotune.state import MODES, STATE
from autotune.weights import Weight
from kernels import registry
from kernels.matmul.lowrank import LowRank

__all__ = ["ChoiceWarning", "conv2d", "get_mode", "matmul", "reset", "set_mode", "set_tolerance", "tune"]

Mode = Literal["tune", "heuristic", "off"]
_DTYPES = {np.dtype(np.float32): "float32", np.dtype(np.float64): "float64"}


# --- Mode and state. -------------------------------------------------------------------------


def set_mode(mode: Mode | None) -> None:
    """Set the miss behaviour for this process (None: back to ``$AUTOTUNE_MODE`` / ``tune``)."""
    if mode is not None and mode not in MODES:
        raise ValueError(f"set_mode: mode must be one of {MODES}, got {mode!r}")
    STATE.mode = mode
    STATE.forget()


def get_mode() -> str:
    """The active mode: :func:`set_mode`'s, else ``$AUTOTUNE_MODE``, else ``tune``."""
    return STATE.get_mode()


def set_tolerance(dtype: str, tol: float) -> None:
    """Change the default tolerance for ``dtype`` in this process.

    Choices bound for that dtype are forgotten, so the next call checks its entry against the
    new tolerance (a stricter one re-tunes entries tuned under a looser one).
    """
    if not isinstance(dtype, str) or dtype not in STATE.tolerances:
        raise ValueError(f"set_tolerance: dtype must be one of {sorted(STATE.tolerances)}, got {dtype!r}")
    STATE.tolerances[dtype] = _tolerance(tol, "set_tolerance", optional=False)  # type: ignore[assignment]
    STATE.forget(lambda key: dtype in repr(key))  # the dtype's name, or torch's, is part of every key


def reset() -> None:
    """Forget every in-memory choice and the database handle (e.g. after changing the cache dir)."""
    state.reset()


def tune(problems: Iterable[Problem | str], **options: Any) -> list[dict[str, Any]]:
    """Tune each problem (a Problem or its text form) into the database; return the entries
    (options and behaviour: :func:`autotune.dispatch.tune`)."""
    return dispatch.tune(problems, **options)


# --- Argument normalisation (shared by conv2d and matmul). -----------------------------------


def _bad_dtype(op: str, name: str, dtype: Any) -> TypeError:
    return TypeError(
        f"{op}: {name} has dtype {dtype}; expected float32 or float64 (lower precisions are emulated "
        f"in `autotune study precision`, not dispatched)"
    )


def _as_array(value: Any, name: str, op: str) -> np.ndarray:
    if type(value) is np.ndarray:
        return value
    if isinstance(value, torch.Tensor):
        if not value.is_cpu:
            raise ValueError(f"{op}: {name} is on {value.device}; autotune runs on the CPU only")
        try:
            return value.numpy()  # zero-copy
        except RuntimeError:  # requires grad, or a lazily negated/conjugated view
            return value.detach().resolve_conj().resolve_neg().numpy()
        except TypeError:  # a dtype numpy lacks (bfloat16, the float8 types, ...)
            raise _bad_dtype(op, name, value.dtype) from None
    if isinstance(value, np.ndarray):
        return np.asarray(value)
    raise TypeError(f"{op}: {name} must be a numpy array or a torch tensor, got {type(value).__name__}")


def _dtype_name(arr: np.ndarray, name: str, op: str) -> str:
    try:
        return _DTYPES[arr.dtype]
    except KeyError:
        raise _bad_dtype(op, name, arr.dtype) from None


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _pair(value: Any, name: str) -> tuple[int, int]:
    if type(value) is int:
        return (value, value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(_is_int(v) for v in value):
        return (int(value[0]), int(value[1]))
    if _is_int(value):
        return (int(value), int(value))
    raise TypeError(f"conv2d: {name} must be an int or a pair of ints, got {value!r}")


def padding_quad(value: Any, kernel_hw: tuple[int, int], dilation: tuple[int, int], stride) -> tuple:
    """``padding=`` (int, pair, ``"same"``, ``"valid"``) as (top, bottom, left, right), as torch pads."""
    if isinstance(value, str):
        if value == "valid":
            return (0, 0, 0, 0)
        if value == "same":
            if stride != (1, 1):
                raise ValueError("conv2d: padding='same' requires stride=1 (as in torch)")
            total_h, total_w = (d * (k - 1) for d, k in zip(dilation, kernel_hw, strict=True))
            # torch puts the odd extra row/column at the bottom/right
            return (total_h // 2, total_h - total_h // 2, total_w // 2, total_w - total_w // 2)
        raise ValueError(f"conv2d: padding must be 'same', 'valid', an int or a pair; got {value!r}")
    ph, pw = _pair(value, "padding")
    return (ph, ph, pw, pw)


def _tolerance(tol: Any, where: str, optional: bool = True) -> float | None:
    """``tol`` as a float (None stays None when ``optional``); TypeError/ValueError name it."""
    if tol is None and optional:
        return None
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real):
        raise TypeError(f"{where}: tol must be a positive number{' or None' * optional}, got {tol!r}")
    if not (tol > 0 and math.isfinite(tol)):
        raise ValueError(f"{where}: tol must be a positive finite number{' or None' * optional}, got {tol!r}")
    return float(tol)


# --- conv2d. ---------------------------------------------------------------------------------


def _conv_bias(b: Any, k_out: int, dtype: np.dtype, seed_form: bool) -> np.ndarray | None:
    if b is None:
        return None
    if isinstance(b, (int, float, np.integer, np.floating)) and not isinstance(b, (bool, np.bool_)):
        arr = np.full(k_out, b, dtype=dtype)
    else:
        arr = np.asarray(b) if isinstance(b, (complex, np.number)) else _as_array(b, "b", "conv2d")
        if arr.dtype.kind not in "fiu":  # complex, bool, object, strings: never cast silently
            raise TypeError(f"conv2d: b has dtype {arr.dtype}; expected a real (integer or float) bias")
        if seed_form and arr.size == 1:
            arr = arr.reshape(1)
        if arr.shape != (k_out,):
            raise ValueError(f"conv2d: b must have shape ({k_out},), got {tuple(arr.shape)}")
    return np.ascontiguousarray(arr, dtype=dtype)


def _fast_conv_key(x: Any, w: Any, b: Any, stride: Any, padding: Any, dilation: Any, groups: Any) -> Any:
    """The repeat-call key of a torch-tensor conv2d: the raw arguments as given (a call equal in
    them was validated before, so it may go straight to :func:`_fast_conv_call`). None for numpy
    input, a Weight handle or a non-tensor bias: the full path."""
    if type(x) is not torch.Tensor or type(w) not in _TENSOR_TYPES:
        return None
    if b is not None and type(b) not in _TENSOR_TYPES:
        return None
    bias = None if b is None else (b.shape, b.dtype)
    # May be unhashable (a list stride): conv2d then takes the full path.
    geometry = (stride, padding, dilation, groups)
    return ("conv2d-fast", x.shape, x.dtype, x.device, w.shape, w.dtype, type(w), bias, geometry)


_TENSOR_TYPES = (torch.Tensor, torch.nn.Parameter)


def _spec_of(fn: Callable[..., Any]) -> registry.KernelSpec | None:
    """The spec of a bound conv2d kernel (bound functions carry it; bare ones are looked up)."""
    spec = getattr(fn, "spec", None)
    return spec if spec is not None else next((s for s in registry.specs("conv2d") if s.fn is fn), None)


def _native(fn: Callable[..., Any]) -> Callable[..., Any] | None:
    """The kernel's torch-tensor entry point (``KernelSpec.tensor_fn``), if it has one."""
    spec = _spec_of(fn)
    return None if spec is None or getattr(fn, "params", None) else spec.tensor_fn


def _contiguous(w: Any, b: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """C-contiguous numpy views of a call's weight and bias tensors."""
    wa = np.ascontiguousarray(_as_array(w, "w", "conv2d"))
    return wa, None if b is None else np.ascontiguousarray(_as_array(b, "b", "conv2d"))


def _fast_conv_call(
    fn: Callable[..., Any], fixed: str | None, stride: Pair, pad: Quad, dilation: Pair, groups: int
) -> Callable[[Any, Any, Any], Any]:
    """What a repeat torch-tensor call runs: the kernel's native tensor call, or the numpy kernel
    on zero-copy views (the tail of :func:`conv2d`, with everything the key proves skipped)."""
    native = _native(fn)
    if native is not None:
        return lambda x, w, b: native(x, w, b, stride, pad, dilation, groups)

    views = weights.Derived()
    spec = _spec_of(fn)
    exact = exact_default(ConvProblem) if spec is not None and spec.finite_only else None

    def call(x: Any, w: Any, b: Any) -> Any:
        wa, ba = views.get(lambda: _contiguous(w, b), w, b)
        try:  # a zero-copy view; a tensor that requires grad refuses .numpy()
            xa = np.ascontiguousarray(x.numpy())
        except RuntimeError:
            xa = np.ascontiguousarray(x.detach().numpy())
        state = weights.state_of(w, wa) if fixed else None  # looked up once per call
        if exact is not None and not (_all_finite(xa) and _weight_finite(wa, state)):  # as in conv2d
            return torch.from_numpy(exact(xa, wa, ba, stride, pad, dilation, groups))
        weight = _weight_for_call(fn, w, wa, state) if fixed else wa
        return torch.from_numpy(fn(xa, weight, ba, stride, pad, dilation, groups))

    return call


def conv2d(
    x: Any,
    w: Any,
    b: Any = None,
    *,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] | str = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    method: str | None = None,
    tol: float | None = None,
) -> Any:
    """2-D cross-correlation with the same semantics as ``torch.nn.functional.conv2d``.

    Args:
        x: input (N, C, H, W), unbatched (C, H, W), or the 2-D seed form (H, W).
        w: weight (K, C/groups, kh, kw), or (kh, kw) with a 2-D ``x``.
        b: bias (K,) or None; with the 2-D form also a scalar.
        stride, dilation: int or (h, w).
        padding: int, (h, w), ``"same"`` (stride 1 only) or ``"valid"``.
        groups: number of channel groups.
        method: force a kernel (``naive``, ``direct``, ``im2col``, ``winograd``, ``fft``,
            ``torch``/``pytorch``; parameters as ``"winograd(tile=4)"``); None dispatches by the
            tuning database and the mode.
        tol: relative max-error tolerance for tuning (default: 1e-4 float32, 1e-10 float64).

    Returns:
        numpy array for numpy input, torch tensor for torch input; same dtype as ``x``; shape
        (N, K, Ho, Wo), (K, Ho, Wo) or (Ho, Wo) following the input form.
    """
    fast_key = (
        _fast_conv_key(x, w, b, stride, padding, dilation, groups) if method is None and tol is None else None
    )
    if fast_key is not None:
        try:  # hashed here only: a tuple's hash is not cached, and this is every repeat call
            fast = STATE.bound.get(fast_key)
        except TypeError:  # unhashable arguments (a list stride): the full path
            fast = fast_key = None
        if fast is not None:
            return fast(x, w, b)
    is_torch = isinstance(x, torch.Tensor)
    xa = _as_array(x, "x", "conv2d")
    # A module parameter or a Weight handle is reused across calls: its transforms are prepared
    # once (and tuned as such); any other weight is treated as new on every call.
    fixed = "fixed" if isinstance(w, (Weight, torch.nn.Parameter)) else None
    wa = w.array if isinstance(w, Weight) else _as_array(w, "w", "conv2d")
    dtype = _dtype_name(xa, "x", "conv2d")
    if wa.dtype != xa.dtype:
        raise TypeError(f"conv2d: w has dtype {wa.dtype} but x has {xa.dtype}; they must match")
    seed_form, unbatched = xa.ndim == 2, xa.ndim == 3
    if seed_form and wa.ndim == 2:
        if groups != 1:
            raise ValueError("conv2d: the 2-D form (x (H,W), k (kh,kw)) has one channel; groups must be 1")
        xa, wa = xa.reshape(1, 1, *xa.shape), wa.reshape(1, 1, *wa.shape)
    elif unbatched and wa.ndim == 4:
        xa = xa.reshape(1, *xa.shape)
    elif xa.ndim != 4 or wa.ndim != 4:
        raise ValueError(
            f"conv2d: expected x (N,C,H,W) or (C,H,W) with w (K,C/groups,kh,kw), or x (H,W) with "
            f"k (kh,kw); got x.ndim={xa.ndim}, w.ndim={wa.ndim}"
        )
    if type(groups) is not int:
        if not _is_int(groups):
            raise TypeError(f"conv2d: groups must be an int, got {groups!r}")
        groups = int(groups)
    stride_hw, dilation_hw = _pair(stride, "stride"), _pair(dilation, "dilation")
    pad = padding_quad(padding, wa.shape[2:], dilation_hw, stride_hw)
    tol_value = _tolerance(tol, "conv2d")
    ba = _conv_bias(b, wa.shape[0], xa.dtype, seed_form)

    key = ("conv2d", xa.shape, wa.shape, dtype, stride_hw, pad, dilation_hw, groups, tol_value, method, fixed)
    fn = STATE.bound.get(key)
    if fn is None:
        problem = ConvProblem(
            xa.shape, wa.shape, stride_hw, pad, dilation_hw, groups, dtype, tol_value, fixed
        )
        fn = _bind(key, problem, method)
    if fast_key is not None and x.dim() == 4 and (ba is None or b.dtype == x.dtype):
        STATE.bound[fast_key] = _fast_conv_call(fn, fixed, stride_hw, pad, dilation_hw, groups)
    spec = getattr(fn, "spec", None)
    checked = spec is not None and spec.finite_only and method is None
    state = weights.state_of(w, wa) if fixed else None
    if checked and not (_all_finite(xa) and _weight_finite(wa, state)):
        fn = exact_default(ConvProblem)  # its NaN/Inf pattern is the reference's
    weight = _weight_for_call(fn, w, wa, state) if fixed else np.ascontiguousarray(wa)
    y = fn(np.ascontiguousarray(xa), weight, ba, stride_hw, pad, dilation_hw, groups)
    if seed_form:
        y = y[0, 0]
    elif unbatched:
        y = y[0]
    return torch.from_numpy(y) if is_torch else y


def _all_finite(*arrays: np.ndarray) -> bool:
    """No NaN/Inf in any array: one vectorised pass each (measured faster than summing)."""
    return all(bool(np.isfinite(arr).all()) for arr in arrays)


def _weight_finite(wa: np.ndarray, state: weights.WeightState | None) -> bool:
    """:func:`_all_finite` of a weight (conv2d's w, matmul's B); a fixed one's (Weight, module
    parameter: it has a ``state``) is kept per content, like its prepared forms."""
    return state.finite(wa) if state is not None else _all_finite(wa)


def _bind(key: tuple, problem: Problem, method: str | None, inputs: tuple | None = None) -> Callable:
    """Bind a missed call ``key`` (conv2d and matmul alike) to ``method=``'s kernel or to the choice
    :func:`autotune.dispatch.resolve` makes — tuned on the caller's ``inputs`` when given (approximate
    kernels: their error depends on the data); an approximate choice gets a verifier."""
    fn = STATE.bound[key] = dispatch.resolve(problem, inputs) if method is None else _forced(problem, method)
    dispatch.watch_if_approximate(key, fn, problem, method)
    return fn


def _forced(problem: Problem, method: str) -> Callable[..., Any]:
    """``method=``'s kernel; matmul's ranks become the parameters of svd (and of nothing else)."""
    spec, params = registry.parse(problem.op, method)
    ranks = {name: getattr(problem, name, None) for name in ("rank_a", "rank_b")}
    if spec.name == "svd":
        params.update({name: rank for name, rank in ranks.items() if rank is not None})
    elif any(rank is not None for rank in ranks.values()):
        raise ValueError(f"matmul: rank_A/rank_B are truncation ranks of method='svd', not of {method!r}")
    return dispatch.forced(spec, params, problem)


# --- matmul. ---------------------------------------------------------------------------------


def _matmul_operand(value: Any, name: str) -> np.ndarray | LowRank:
    """A numpy array (torch and Weight unwrapped) or a LowRank; TypeError for anything else."""
    if isinstance(value, LowRank):
        return value
    if isinstance(value, Weight):
        if name == "A":
            raise TypeError("matmul: A is a Weight; Weight handles are for the right operand B (the weight)")
        return value.array
    return _as_array(value, name, "matmul")


def _matmul_rank(value: Any, name: str, operand: np.ndarray | LowRank) -> int | None:
    if value is None:
        return None
    if not _is_int(value):
        raise TypeError(f"matmul: {name} must be a positive int or None, got {value!r}")
    if isinstance(operand, LowRank) and not 1 <= value <= operand.rank:
        raise ValueError(
            f"matmul: {name} must be in 1..{operand.rank} (its operand is a LowRank of rank "
            f"{operand.rank}), got {value}"
        )
    return int(value)


def _shape_text(operand: np.ndarray | LowRank) -> str:
    kind = f"a LowRank (rank {operand.rank}) " if isinstance(operand, LowRank) else ""
    return f"{kind}{operand.shape[0]}x{operand.shape[1]}"


def _check_matmul_operands(a: np.ndarray | LowRank, b: np.ndarray | LowRank) -> str:
    """Validate dtypes and shapes; return the dtype name."""
    dtype = _dtype_name(a, "A", "matmul")  # type: ignore[arg-type]
    if b.dtype != a.dtype:
        raise TypeError(f"matmul: B has dtype {b.dtype} but A has {a.dtype}; they must match")
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"matmul: A and B must be 2-D, got A.ndim={a.ndim}, B.ndim={b.ndim}")
    if a.shape[1] != b.shape[0]:
        raise ValueError(
            f"matmul: A is {_shape_text(a)} and B is {_shape_text(b)}; expected A.shape[1] == B.shape[0]"
        )
    return dtype


def _weight_for_call(
    fn: Callable[..., Any], B: Any, b: np.ndarray | LowRank, state: weights.WeightState | None
) -> Any:
    """The weight argument of the call (matmul's B, conv2d's w): ``b`` prepared by the chosen
    kernel's ``prepare`` hook and reused while B is unchanged, else ``b`` itself, C-contiguous
    (copied only when it is used)."""
    if isinstance(b, LowRank):
        return b
    spec, params = getattr(fn, "spec", None), getattr(fn, "params", None)
    if spec is None or spec.prepare is None or weights.prepare_is_noop(spec, params):
        return np.ascontiguousarray(b)
    return (state or weights.state_of(B, b)).prepared(spec, params, b)


def matmul(
    A: Any,
    B: Any,
    *,
    method: str | None = None,
    tol: float | None = None,
    rank_A: int | None = None,
    rank_B: int | None = None,
) -> Any:
    """``A @ B`` for 2-D float32/float64 operands, dispatched like :func:`conv2d`.

    Args:
        A: (m, k) numpy array, torch tensor, or :class:`~kernels.matmul.lowrank.LowRank`.
        B: (k, n) numpy array, torch tensor, :class:`~autotune.weights.Weight` or LowRank — the
            weight: its digest and prepared forms (SVD factors, LNS encoding) are computed once
            while it is unchanged (see :mod:`autotune.weights`).
        method: force a kernel: ``naive``, ``blas``, ``torch``/``pytorch``, ``svd``,
            ``log``/``logmatmul``, ``log_approx`` (parameters as ``"log_approx(f=6)"``); None
            dispatches by the tuning database and the mode.
        tol: relative max-error tolerance for tuning. Given with ``method=None``, it also admits
            the approximate kernels (``svd`` with the smallest rank that meets it, ``log_approx``
            with the fewest fraction bits); their error depends on the data, so the choice is
            keyed on B's content digest and tuned on the actual operands.
        rank_A, rank_B: truncate that operand to its rank-r SVD (the ``svd`` kernel, which they
            imply when ``method`` is None). A LowRank operand also implies ``svd``; its rank
            argument truncates it further.

    Returns:
        (m, n) numpy array, or torch tensor when A (or B, if A is a LowRank) is one; A's dtype.
    """
    is_torch = isinstance(A, torch.Tensor) or (isinstance(A, LowRank) and isinstance(B, torch.Tensor))
    a, b = _matmul_operand(A, "A"), _matmul_operand(B, "B")
    dtype = _check_matmul_operands(a, b)
    tol_value = _tolerance(tol, "matmul")
    rank_a, rank_b = _matmul_rank(rank_A, "rank_A", a), _matmul_rank(rank_B, "rank_B", b)
    factored = isinstance(a, LowRank) or isinstance(b, LowRank)
    if method is None and (factored or rank_a is not None or rank_b is not None):
        method = "svd"  # ranks and factors are svd's parameters: there is nothing left to choose
    elif factored and registry.parse("matmul", method)[0].name != "svd":  # type: ignore[arg-type]
        raise ValueError(f"matmul: a LowRank operand needs method='svd' (or None), got {method!r}")
    a_arg = a if isinstance(a, LowRank) else np.ascontiguousarray(a)
    state = weight = None
    if method is None and tol_value is not None:
        # Approximate kernels are eligible: their error depends on B's content, so it is in the key.
        state = weights.state_of(B, b)
        weight = state.digest(b)  # type: ignore[arg-type]

    key = ("matmul", a.shape, b.shape, dtype, rank_a, rank_b, tol_value, method, weight)
    fn = STATE.bound.get(key)
    if fn is None:
        problem = MatmulProblem(a.shape, b.shape, dtype, rank_a, rank_b, tol_value, weight)
        fn = _bind(key, problem, method, None if weight is None else (a_arg, np.ascontiguousarray(b)))
    spec = getattr(fn, "spec", None)
    checked = spec is not None and spec.finite_only and method is None
    if isinstance(B, (Weight, torch.nn.Parameter)) and not isinstance(b, LowRank):
        state = state or weights.state_of(B, b)
    if checked and not (_all_finite(a_arg) and _weight_finite(b, state)):  # type: ignore[arg-type]
        fn = exact_default(MatmulProblem)
    c = fn(a_arg, _weight_for_call(fn, B, b, state))
    verifier = STATE.verifiers.get(key)
    if verifier is not None and verifier.due():
        c = dispatch.verified(key, (a_arg, b), c)
    return torch.from_numpy(c) if is_torch else c
