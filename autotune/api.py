"""The dispatcher: validate and normalise a call once, look its choice up, call the kernel.

The hot path of a repeated call is: normalise the arguments, build a tuple key, one dict lookup
(:data:`_bound`), call. Only a miss builds a :class:`~autotune.problem.Problem`, consults the YAML
database, and — depending on the mode — tunes, applies the heuristic rules, or takes the exact
default:

* ``tune`` (default; ``AUTOTUNE_MODE=tune``): time and check every candidate now, persist, use;
* ``heuristic``: rule-based pick (:mod:`autotune.heuristics`), no timing, nothing written;
* ``off``: always the exact default (``im2col`` for conv2d, ``blas`` for matmul) — BLAS-based,
  any geometry, reference-grade accuracy.

numpy in → numpy out; CPU torch tensors in → torch tensors out (zero-copy both ways; the result
carries no autograd history — these are inference kernels).

A database entry is used only when it fits the call (:func:`entry_invalidity`): its kernel is
registered, applies and offers its parameters, it is exact for an exact call, it was tuned under
a tolerance at least as strict as the current one, and it was made by the current kernel set. An
entry that does not fit gets one warning and is re-tuned (tune mode, which repairs the entry) or
bypassed (other modes). This is decided once, when a call key is first bound.

Two guards stay on the hot path because no entry can prove them: a kernel whose spec is
``finite_only`` (FFT, Winograd) gets non-finite input routed to the exact default, and an
approximate matmul choice is re-checked against an exact product on a sample of calls
(``$AUTOTUNE_VERIFY``, see :func:`verify_rate`).
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from autotune import cache, estimate, heuristics, tuner, weights
from autotune.problem import ConvProblem, MatmulProblem, Problem, parse_problem
from autotune.weights import Weight
from kernels import registry
from kernels.matmul.lowrank import LowRank

Mode = Literal["tune", "heuristic", "off"]
MODES: tuple[str, ...] = ("tune", "heuristic", "off")
EXACT_DEFAULT: dict[str, tuple[str, dict[str, Any]]] = {
    "conv2d": ("im2col", {}),
    "matmul": ("blas", {}),
}
_DTYPES = {np.dtype(np.float32): "float32", np.dtype(np.float64): "float64"}

_mode: str | None = None
#: call key → kernel with its parameters bound. Filled on first use of each key.
_bound: dict[tuple[Any, ...], Callable[..., Any]] = {}
#: call key → sampler re-checking an approximate choice (only keys bound to an inexact kernel).
_verifiers: dict[tuple[Any, ...], _Verifier] = {}
#: problem keys whose database entry was already reported as not fitting (one warning each).
_reported: set[str] = set()
#: Default share of calls on which an approximate choice is re-checked (``$AUTOTUNE_VERIFY``).
DEFAULT_VERIFY_RATE = 0.01


class ChoiceWarning(UserWarning):
    """A remembered choice did not fit a call; the call went on with a fitting kernel."""


# ---------------------------------------------------------------------------------------------
# Mode and state.


def set_mode(mode: Mode | None) -> None:
    """Set the miss behaviour for this process (None: back to ``$AUTOTUNE_MODE`` / ``tune``)."""
    global _mode
    if mode is not None and mode not in MODES:
        raise ValueError(f"set_mode: mode must be one of {MODES}, got {mode!r}")
    _mode = mode
    _forget()


def get_mode() -> str:
    """The active mode: :func:`set_mode`'s, else ``$AUTOTUNE_MODE``, else ``tune``."""
    if _mode is not None:
        return _mode
    mode = os.environ.get("AUTOTUNE_MODE", "tune").strip().lower() or "tune"
    if mode not in MODES:
        raise ValueError(f"AUTOTUNE_MODE must be one of {MODES}, got {mode!r}")
    return mode


def set_tolerance(dtype: str, tol: float) -> None:
    """Change the default tolerance for ``dtype`` in this process.

    Choices bound for that dtype are forgotten, so the next call checks its entry against the new
    tolerance (a stricter one re-tunes entries tuned under a looser one).
    """
    tuner.set_tolerance(dtype, tol)
    _forget(lambda key: key[3] == dtype)


def _forget(which: Callable[[tuple[Any, ...]], bool] | None = None) -> None:
    """Drop bound choices (all, or the keys ``which`` selects) and their verifiers."""
    for key in [k for k in _bound if which is None or which(k)]:
        del _bound[key]
        _verifiers.pop(key, None)


def reset() -> None:
    """Forget every in-memory choice and the database handle (e.g. after changing the cache dir)."""
    _forget()
    _reported.clear()
    cache.reset()


# ---------------------------------------------------------------------------------------------
# Argument normalisation (shared by conv2d and matmul).


def _as_array(value: Any, name: str, op: str) -> np.ndarray:
    if type(value) is np.ndarray:
        return value
    if isinstance(value, torch.Tensor):
        if not value.is_cpu:
            raise ValueError(f"{op}: {name} is on {value.device}; autotune runs on the CPU only")
        try:
            return value.numpy()  # zero-copy; the common case costs < 1 us
        except RuntimeError:  # requires grad, or a lazily negated/conjugated view
            return value.detach().resolve_conj().resolve_neg().numpy()
        except TypeError:  # a dtype numpy lacks (bfloat16, the float8 types, ...)
            raise TypeError(
                f"{op}: {name} has dtype {value.dtype}; expected float32 or float64 (lower "
                f"precisions are emulated in `autotune study precision`, not dispatched)"
            ) from None
    if isinstance(value, np.ndarray):
        return np.asarray(value)
    raise TypeError(f"{op}: {name} must be a numpy array or a torch tensor, got {type(value).__name__}")


def _dtype_name(arr: np.ndarray, name: str, op: str) -> str:
    try:
        return _DTYPES[arr.dtype]
    except KeyError:
        raise TypeError(
            f"{op}: {name} has dtype {arr.dtype}; expected float32 or float64 (lower precisions "
            f"are emulated in `autotune study precision`, not dispatched)"
        ) from None


def _pair(value: Any, name: str) -> tuple[int, int]:
    if type(value) is int:
        return (value, value)
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)
    ):
        return (int(value[0]), int(value[1]))
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return (int(value), int(value))
    raise TypeError(f"conv2d: {name} must be an int or a pair of ints, got {value!r}")


def _padding(value: Any, kernel_hw: tuple[int, int], dilation: tuple[int, int], stride) -> tuple:
    if isinstance(value, str):
        if value == "valid":
            return (0, 0, 0, 0)
        if value == "same":
            if stride != (1, 1):
                raise ValueError("conv2d: padding='same' requires stride=1 (as in torch)")
            total_h = dilation[0] * (kernel_hw[0] - 1)
            total_w = dilation[1] * (kernel_hw[1] - 1)
            # torch puts the odd extra row/column at the bottom/right
            return (total_h // 2, total_h - total_h // 2, total_w // 2, total_w - total_w // 2)
        raise ValueError(f"conv2d: padding must be 'same', 'valid', an int or a pair; got {value!r}")
    ph, pw = _pair(value, "padding")
    return (ph, ph, pw, pw)


def _tolerance(tol: Any, op: str) -> float | None:
    if tol is None:
        return None
    if isinstance(tol, bool) or not isinstance(tol, (int, float, np.floating, np.integer)):
        raise TypeError(f"{op}: tol must be a positive number or None, got {tol!r}")
    if not (tol > 0 and math.isfinite(tol)):
        raise ValueError(f"{op}: tol must be a positive finite number or None, got {tol!r}")
    return float(tol)


_LABEL = re.compile(r"^\s*(?P<name>[A-Za-z_][\w]*)\s*(\((?P<params>[^)]*)\))?\s*$")


def _parse_method(method: str, op: str) -> tuple[registry.KernelSpec, dict[str, Any]]:
    """``"winograd"`` or ``"winograd(tile=4)"`` → spec and parameters."""
    if not isinstance(method, str):
        raise TypeError(f"{op}: method must be a string or None, got {type(method).__name__}")
    match = _LABEL.match(method)
    if match is None:
        raise ValueError(f"{op}: cannot parse method={method!r}; expected e.g. 'winograd(tile=4)'")
    try:
        spec = registry.get(op, match["name"])
    except KeyError:
        raise ValueError(
            f"{op}: unknown method {match['name']!r}; expected one of "
            f"{', '.join(registry.names(op))} (or None to dispatch by the tuning database)"
        ) from None
    params = dict(spec.defaults)
    accepted = registry.parameter_names(spec)
    for item in filter(None, (match["params"] or "").split(",")):
        name, equals, text = (part.strip() for part in item.partition("="))
        if name not in accepted or not equals:
            known = ", ".join(sorted(accepted)) or "none"
            raise ValueError(
                f"{op}: method={method!r}: {spec.name} has no parameter {name!r} "
                f"(its parameters: {known}); expected e.g. 'winograd(tile=4)'"
            )
        params[name] = _parameter_value(text, name, method, op)
    return spec, params


def _parameter_value(text: str, name: str, method: str, op: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"{op}: method={method!r}: parameter {name} must be a number, got {text!r}")
    return value


# ---------------------------------------------------------------------------------------------
# Resolution on a miss.


def entry_invalidity(problem: Problem, entry: dict[str, Any]) -> str | None:
    """Why a (schema-valid) database entry must not be used for ``problem``; None if it fits."""
    try:
        spec = registry.get(problem.op, entry["choice"])
    except KeyError:
        return f"its kernel {entry['choice']!r} is not registered"
    if not _applies(spec, problem):
        return f"{spec.name} does not apply to this problem"
    if not spec.exact and problem.tol is None:
        return f"{spec.name} is approximate and the call is exact (no tol=)"
    wrong_params = registry.params_problem(spec, problem, entry.get("params") or {})
    if wrong_params:
        return wrong_params
    tuned_tol, current_tol = entry.get("tol"), tuner.tolerance(problem)
    if tuned_tol is None or tuned_tol > current_tol * (1 + 1e-9):
        return f"it was tuned under tol {tuned_tol}, looser than the current tol {current_tol:g}"
    if entry.get("kernels") != registry.kernel_set_digest(problem.op):
        return "it was chosen among a different set of kernels (stale; `autotune tune --refresh`)"
    return None


def fitting_entry(problem: Problem) -> dict[str, Any] | None:
    """The database entry for ``problem`` if there is one and it fits, else None."""
    entry = cache.database().lookup(problem.key)
    return entry if entry is not None and entry_invalidity(problem, entry) is None else None


def _report_unfit(problem: Problem, why: str, action: str) -> None:
    if problem.key not in _reported:
        _reported.add(problem.key)
        warnings.warn(
            f"the database entry for {problem.key} is not used: {why}; {action}", ChoiceWarning, stacklevel=5
        )


def _no_kernel_error(problem: Problem, exc: RuntimeError) -> ValueError:
    return ValueError(
        f"{problem.op}: no kernel meets tol={tuner.tolerance(problem):g} for {problem.key} "
        f"({exc}); loosen tol or force one with method="
    )


def resolve(problem: Problem, inputs: tuple[np.ndarray, ...] | None = None) -> Callable[..., Any]:
    """The kernel to call for ``problem`` under the current mode (may tune and persist)."""
    db = cache.database()
    entry = db.lookup(problem.key)
    mode = get_mode()
    if entry is not None:
        why = entry_invalidity(problem, entry)
        if why is None:
            return tuner.bind(registry.get(problem.op, entry["choice"]), dict(entry.get("params") or {}))
        _report_unfit(problem, why, "re-tuning" if mode == "tune" else f"falling back ({mode} mode)")
    if mode == "off":
        name, params = EXACT_DEFAULT[problem.op]
    elif mode == "heuristic":
        name, params, _ = heuristics.choose(problem, db.entries())
        if not _applies(registry.get(problem.op, name), problem):
            name, params = EXACT_DEFAULT[problem.op]
    else:
        try:
            result = tuner.tune_problem(problem, inputs=inputs)
        except RuntimeError as exc:
            raise _no_kernel_error(problem, exc) from None
        db.store({problem.key: result.to_entry()})
        name, params = result.choice, result.params
    return tuner.bind(registry.get(problem.op, name), params)


def _applies(spec: registry.KernelSpec, problem: Problem) -> bool:
    return problem.dtype in spec.dtypes and bool(spec.applies(problem))


def _forced(spec: registry.KernelSpec, params: dict[str, Any], problem: Problem) -> Callable[..., Any]:
    if not _applies(spec, problem):
        doc = (spec.applies.__doc__ or "").strip().splitlines()
        needs = f" (needs {doc[0][0].lower()}{doc[0][1:].rstrip('.')})" if doc else ""
        raise ValueError(f"{problem.op}: method={spec.name!r} does not apply to {problem.key}{needs}")
    return tuner.bind(spec, params)


# ---------------------------------------------------------------------------------------------
# conv2d.


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
    if arr.dtype != dtype:
        arr = arr.astype(dtype)
    return np.ascontiguousarray(arr)


def _fast_conv_key(x: Any, w: Any, b: Any, stride: Any, padding: Any, dilation: Any, groups: Any) -> Any:
    """The repeat-call key of a torch-tensor conv2d: the raw arguments, hashed as given.

    A call whose tensors have the same shapes, dtypes, device and types, and whose geometry
    arguments are equal, was validated and normalised before, so it may go straight to the
    kernel bound then (:func:`_fast_conv_call`). None when the call does not qualify (numpy
    input, a Weight handle, a non-tensor bias, unhashable arguments): the full path handles it.
    """
    if type(x) is not torch.Tensor or type(w) not in _TENSOR_TYPES:
        return None
    if b is not None and type(b) not in _TENSOR_TYPES:
        return None
    bias = None if b is None else (b.shape, b.dtype)
    key = (
        "conv2d-fast",
        x.shape,
        x.dtype,
        x.device,
        w.shape,
        w.dtype,
        type(w),
        bias,
        stride,
        padding,
        dilation,
        groups,
    )
    try:
        hash(key)
    except TypeError:
        return None
    return key


_TENSOR_TYPES = (torch.Tensor, torch.nn.Parameter)


def _spec_of(fn: Callable[..., Any]) -> registry.KernelSpec | None:
    """The spec of a bound conv2d kernel (bound functions carry it; bare ones are looked up)."""
    spec = getattr(fn, "spec", None)
    return spec if spec is not None else next((s for s in registry.specs("conv2d") if s.fn is fn), None)


def _native(fn: Callable[..., Any]) -> Callable[..., Any] | None:
    """The kernel's torch-tensor entry point (``KernelSpec.tensor_fn``), if it has one."""
    spec = _spec_of(fn)
    if spec is None or spec.tensor_fn is None or getattr(fn, "params", None):
        return None
    return spec.tensor_fn


class _TensorViews:
    """C-contiguous numpy views of a call's weight and bias, kept while the same unchanged tensors
    come back (same objects, same ``_version``): a model passes its parameters on every call."""

    def __init__(self) -> None:
        self.key: tuple[Any, ...] = ()
        self.arrays: tuple[Any, Any] = (None, None)

    def of(self, w: Any, b: Any) -> tuple[np.ndarray, np.ndarray | None]:
        key = (id(w), w._version, id(b), None if b is None else b._version)
        if key != self.key:
            wa = np.ascontiguousarray(_as_array(w, "w", "conv2d"))
            ba = None if b is None else np.ascontiguousarray(_as_array(b, "b", "conv2d"))
            self.key, self.arrays = key, (wa, ba)
        return self.arrays


def _fast_conv_call(
    fn: Callable[..., Any],
    fixed: bool,
    stride: tuple[int, int],
    pad: tuple,
    dilation: tuple[int, int],
    groups: int,
) -> Callable[[Any, Any, Any], Any]:
    """What a repeat torch-tensor call runs: the kernel's native tensor call, or the numpy kernel
    on zero-copy views (the tail of :func:`conv2d`, with everything the key proves skipped)."""
    native = _native(fn)
    if native is not None:
        return lambda x, w, b: native(x, w, b, stride, pad, dilation, groups)

    views = _TensorViews()
    spec = _spec_of(fn)
    exact = _exact_default("conv2d") if spec is not None and spec.finite_only else None

    def call(x: Any, w: Any, b: Any) -> Any:
        wa, ba = views.of(w, b)
        try:  # a zero-copy view; a tensor that requires grad refuses .numpy()
            xa = np.ascontiguousarray(x.numpy())
        except RuntimeError:
            xa = np.ascontiguousarray(x.detach().numpy())
        if exact is not None and not _all_finite(xa, wa):  # as in conv2d: NaN/Inf to the exact kernel
            return torch.from_numpy(exact(xa, wa, ba, stride, pad, dilation, groups))
        weight = _weight_for_call(fn, w, wa, None) if fixed else wa
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
        fast = _bound.get(fast_key)
        if fast is not None:
            return fast(x, w, b)
    is_torch = isinstance(x, torch.Tensor)
    xa = _as_array(x, "x", "conv2d")
    # A module parameter or a Weight handle is reused across calls: its transforms are prepared
    # once (and tuned as such); any other weight is treated as new on every call.
    fixed = isinstance(w, (Weight, torch.nn.Parameter))
    wa = w.array if isinstance(w, Weight) else _as_array(w, "w", "conv2d")
    dtype = _dtype_name(xa, "x", "conv2d")
    if wa.dtype != xa.dtype:
        raise TypeError(f"conv2d: w has dtype {wa.dtype} but x has {xa.dtype}; they must match")
    seed_form = xa.ndim == 2
    unbatched = xa.ndim == 3
    if seed_form and wa.ndim == 2:
        if groups != 1:
            raise ValueError("conv2d: the 2-D form (x (H,W), k (kh,kw)) has one channel; groups must be 1")
        xa = xa.reshape(1, 1, *xa.shape)
        wa = wa.reshape(1, 1, *wa.shape)
    elif unbatched and wa.ndim == 4:
        xa = xa.reshape(1, *xa.shape)
    elif xa.ndim != 4 or wa.ndim != 4:
        raise ValueError(
            f"conv2d: expected x (N,C,H,W) or (C,H,W) with w (K,C/groups,kh,kw), or x (H,W) with "
            f"k (kh,kw); got x.ndim={xa.ndim}, w.ndim={wa.ndim}"
        )
    if type(groups) is not int:
        if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)):
            raise TypeError(f"conv2d: groups must be an int, got {groups!r}")
        groups = int(groups)
    stride_hw = _pair(stride, "stride")
    dilation_hw = _pair(dilation, "dilation")
    pad = _padding(padding, wa.shape[2:], dilation_hw, stride_hw)
    tol_value = _tolerance(tol, "conv2d")
    ba = _conv_bias(b, wa.shape[0], xa.dtype, seed_form)

    key = ("conv2d", xa.shape, wa.shape, dtype, stride_hw, pad, dilation_hw, groups, tol_value, method, fixed)
    fn = _bound.get(key)
    if fn is None:
        problem = ConvProblem(
            tuple(xa.shape),
            tuple(wa.shape),
            stride_hw,
            pad,
            dilation_hw,
            groups,
            dtype,
            tol_value,
            "fixed" if fixed else None,
        )
        if method is not None:
            fn = _forced(*_parse_method(method, "conv2d"), problem)
        else:
            fn = resolve(problem)
        _bound[key] = fn
    if fast_key is not None and x.dim() == 4 and (ba is None or b.dtype == x.dtype):
        _bound[fast_key] = _fast_conv_call(fn, fixed, stride_hw, pad, dilation_hw, groups)
    spec = getattr(fn, "spec", None)
    if spec is not None and spec.finite_only and method is None and not _all_finite(xa, wa):
        fn = _exact_default("conv2d")  # its NaN/Inf pattern is the reference's
    weight = _weight_for_call(fn, w, wa, None) if fixed else np.ascontiguousarray(wa)
    y = fn(np.ascontiguousarray(xa), weight, ba, stride_hw, pad, dilation_hw, groups)
    if seed_form:
        y = y[0, 0]
    elif unbatched:
        y = y[0]
    return torch.from_numpy(y) if is_torch else y


def _all_finite(*arrays: np.ndarray) -> bool:
    """No NaN/Inf in any array: one vectorised pass each (measured faster than a sum, e.g. 19 us
    vs 32 us on a 1x64x56x56 float32 input)."""
    return all(bool(np.isfinite(arr).all()) for arr in arrays)


def _exact_default(op: str) -> Callable[..., Any]:
    name, params = EXACT_DEFAULT[op]
    return tuner.bind(registry.get(op, name), params)


# ---------------------------------------------------------------------------------------------
# matmul.


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
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
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


def _matmul_kernel(
    problem: MatmulProblem, method: str | None, inputs: tuple[np.ndarray, np.ndarray] | None
) -> Callable[..., Any]:
    """The bound kernel: forced by ``method`` (ranks become svd's parameters) or resolved."""
    if method is None:
        return resolve(problem, inputs)
    spec, params = _parse_method(method, "matmul")
    ranks = {"rank_a": problem.rank_a, "rank_b": problem.rank_b}
    if spec.name == "svd":
        params.update({name: rank for name, rank in ranks.items() if rank is not None})
    elif any(rank is not None for rank in ranks.values()):
        raise ValueError(f"matmul: rank_A/rank_B are truncation ranks of method='svd', not of {method!r}")
    return _forced(spec, params, problem)


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
    if state is None:
        state = weights.state_of(B, b)
    return state.prepared(spec, params, b)


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
    a = _matmul_operand(A, "A")
    b = _matmul_operand(B, "B")
    dtype = _check_matmul_operands(a, b)
    tol_value = _tolerance(tol, "matmul")
    rank_a = _matmul_rank(rank_A, "rank_A", a)
    rank_b = _matmul_rank(rank_B, "rank_B", b)
    factored = isinstance(a, LowRank) or isinstance(b, LowRank)
    if method is None and (factored or rank_a is not None or rank_b is not None):
        method = "svd"  # ranks and factors are svd's parameters: there is nothing left to choose
    elif factored and _parse_method(method, "matmul")[0].name != "svd":  # type: ignore[arg-type]
        raise ValueError(f"matmul: a LowRank operand needs method='svd' (or None), got {method!r}")
    a_arg = a if isinstance(a, LowRank) else np.ascontiguousarray(a)
    state = weight = None
    if method is None and tol_value is not None:
        # Approximate kernels are eligible: their error depends on B's content, so it is in the key.
        state = weights.state_of(B, b)
        weight = state.digest(b)  # type: ignore[arg-type]

    key = ("matmul", a.shape, b.shape, dtype, rank_a, rank_b, tol_value, method, weight)
    fn = _bound.get(key)
    if fn is None:
        problem = MatmulProblem(tuple(a.shape), tuple(b.shape), dtype, rank_a, rank_b, tol_value, weight)
        inputs = None if weight is None else (a_arg, np.ascontiguousarray(b))
        fn = _matmul_kernel(problem, method, inputs)  # type: ignore[arg-type]
        _bound[key] = fn
        _watch_if_approximate(key, fn, problem, method)
    spec = getattr(fn, "spec", None)
    if spec is not None and spec.finite_only and method is None and not _all_finite(a_arg, b):  # type: ignore[arg-type]
        fn = _exact_default("matmul")
    c = fn(a_arg, _weight_for_call(fn, B, b, state))
    verifier = _verifiers.get(key)
    if verifier is not None and verifier.due():
        c = _verified(key, verifier, a_arg, b, c)  # type: ignore[arg-type]
    return torch.from_numpy(c) if is_torch else c


# ---------------------------------------------------------------------------------------------
# Re-checking approximate choices on later calls.


def verify_rate() -> float:
    """Share of calls on which an approximate choice is re-checked: ``$AUTOTUNE_VERIFY`` (a number
    in [0, 1]; 0 turns checking off), default :data:`DEFAULT_VERIFY_RATE`. The first call of each
    bound choice is always checked when the rate is above 0."""
    text = os.environ.get("AUTOTUNE_VERIFY", "").strip()
    if not text:
        return DEFAULT_VERIFY_RATE
    try:
        rate = float(text)
    except ValueError:
        rate = math.nan
    if not 0 <= rate <= 1:
        raise ValueError(f"AUTOTUNE_VERIFY must be a number in [0, 1] (share of calls checked), got {text!r}")
    return rate


@dataclass
class _Verifier:
    """Counts the calls of one bound approximate choice and says which ones to check."""

    problem: MatmulProblem
    period: int
    calls: int = 0

    def due(self) -> bool:
        self.calls += 1
        return (self.calls - 1) % self.period == 0


def _watch_if_approximate(
    key: tuple[Any, ...], fn: Callable[..., Any], problem: MatmulProblem, method: str | None
) -> None:
    """Register a verifier for a key bound (by the tuner or the database) to an inexact kernel."""
    spec = getattr(fn, "spec", None)
    if method is not None or spec is None or spec.exact or problem.tol is None:
        return  # forced kernels are the caller's responsibility; exact ones need no check
    rate = verify_rate()
    if rate > 0:
        _verifiers[key] = _Verifier(problem, period=max(1, round(1 / rate)))


def _verified(
    key: tuple[Any, ...], verifier: _Verifier, a: np.ndarray, b: np.ndarray, c: np.ndarray
) -> np.ndarray:
    """``c`` if it is within the problem's tolerance of the exact product; otherwise warn, drop
    the choice, re-tune on these operands (tune mode) and return the re-tuned kernel's result."""
    exact = a.astype(np.float64) @ np.asarray(b, dtype=np.float64)
    problem = verifier.problem
    if not np.isfinite(exact).all():
        return c  # non-finite operands went to the exact default: nothing to compare
    error, tol = tuner.rel_max_error(c, exact), tuner.tolerance(problem)
    if error <= tol:
        return c
    warnings.warn(
        f"matmul: the approximate choice for {problem.key} has rel_err {error:.2e} > tol {tol:g} on "
        f"this call's operands; "
        + ("re-tuning on them" if get_mode() == "tune" else "using the exact default from now on"),
        ChoiceWarning,
        stacklevel=3,
    )
    _verifiers.pop(key, None)
    contiguous_b = np.ascontiguousarray(b)
    if get_mode() == "tune":
        try:
            result = tuner.tune_problem(problem, inputs=(a, contiguous_b))
        except RuntimeError as exc:
            raise _no_kernel_error(problem, exc) from None
        cache.database().store({problem.key: result.to_entry()})
        fn = tuner.bind(registry.get("matmul", result.choice), result.params)
    else:
        fn = _exact_default("matmul")
    _bound[key] = fn
    _watch_if_approximate(key, fn, problem, None)
    return fn(a, contiguous_b)


# ---------------------------------------------------------------------------------------------
# Offline tuning.


def tune(
    problems: Iterable[Problem | str],
    *,
    force: bool = False,
    budget_s: float = tuner.DEFAULT_BUDGET_S,
    on_result: Callable[[Problem, dict[str, Any], bool], None] | None = None,
    prune: bool = False,
) -> list[dict[str, Any]]:
    """Tune each problem (a Problem or its text form) into the database; return the entries.

    Problems with an entry that fits (:func:`entry_invalidity`) are skipped unless ``force``;
    entries that do not fit (stale, tuned under a looser tolerance, ...) are re-tuned. Each
    result is written as soon as it is measured, so an interruption keeps everything finished so
    far; results the file could not take yet stay in ``cache.database().pending``.
    ``on_result(problem, entry, cached)`` is called after each problem (progress reporting).

    With ``prune``, candidates that this machine's earlier measurements (the entries in memory)
    put far behind the best measured so far are not tried (:mod:`autotune.estimate`).
    """
    db = cache.database()
    entries = []
    for item in problems:
        problem = parse_problem(item) if isinstance(item, str) else item
        entry = None if force else fitting_entry(problem)
        cached = entry is not None
        if entry is None:
            known = estimate.rates(db.entries()) if prune else {}
            try:
                result = tuner.tune_problem(problem, budget_s=budget_s, rates=known)
            except RuntimeError as exc:
                raise _no_kernel_error(problem, exc) from None
            entry = result.to_entry()
            db.store({problem.key: entry})
            _forget(lambda key, op=problem.op: key[0] == op)  # no bound kernel outlives its entry
        entries.append(entry)
        if on_result is not None:
            on_result(problem, entry, cached)
    return entries
