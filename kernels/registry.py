"""The kernel registry: the only thing ``autotune`` needs from ``kernels``.

A kernel module describes each of its kernels with a :class:`KernelSpec` and calls
:func:`register` at import time. :func:`specs` imports every module under ``kernels.conv2d`` and
``kernels.matmul`` first, so adding a kernel means adding one file — the tuner never imports a
kernel module by name.

Kernels see problems only through duck typing (``kernels`` never imports ``autotune``). The
attributes an ``applies``/``param_grid`` callable may read are:

* conv2d: ``x_shape`` (N, C, H, W), ``w_shape`` (K, C/groups, kh, kw), ``stride`` (sh, sw),
  ``padding`` (top, bottom, left, right), ``dilation`` (dh, dw), ``groups``, ``dtype`` (str),
  ``out_shape`` (N, K, Ho, Wo);
* matmul: ``a_shape`` (m, k), ``b_shape`` (k, n), ``dtype``, ``rank_a``, ``rank_b`` (int or None).

Call conventions (arrays are C-contiguous numpy arrays of one float dtype):

* conv2d: ``fn(x, w, b, stride, padding, dilation, groups, **params) -> y`` (``b`` may be None);
* matmul: ``fn(a, b, **params) -> c``; a kernel may also accept an operand in a factored or
  encoded form (``kernels.matmul.lowrank.LowRank``, or what its spec's ``prepare`` returns).
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import math
import pkgutil
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Op = str
FLOAT_DTYPES = frozenset({"float32", "float64"})

Params = Mapping[str, Any]


def _always(problem: Any) -> bool:
    return True


def _no_params(problem: Any) -> list[dict[str, Any]]:
    return [{}]


@dataclass(frozen=True)
class KernelSpec:
    """What the tuner knows about one kernel.

    Attributes:
        name: the public method name (``method=`` in the API, ``choice`` in the database).
        op: ``"conv2d"`` or ``"matmul"``.
        fn: the kernel function (see the module docstring for the call convention).
        dtypes: dtype names the kernel accepts.
        exact: True if the algorithm is exact in real arithmetic (only rounding differs from the
            reference). Inexact kernels (truncated SVD, approximate log accumulation) are eligible
            only when the caller's tolerance admits them or they are forced with ``method=``.
        applies: ``applies(problem) -> bool``; False means "this kernel cannot do this problem".
        param_grid: ``param_grid(problem) -> list[dict]``: the tunable-parameter settings the tuner
            may try, in order of preference. ``[{}]`` for kernels without parameters.
        search: ``"all"`` times every setting and keeps the fastest accurate one;
            ``"first_accurate"`` walks the grid in order (e.g. increasing SVD rank), stops at the
            first setting within tolerance and times only that one.
        reference: True for the float64 oracle every candidate is checked against.
        aliases: other names accepted for ``method=`` (e.g. ``pytorch`` for ``torch``).
        defaults: parameters used when the kernel is forced with ``method=`` and none are given.
        needs: what ``applies`` requires, in words (``"3×3 filters, stride 1, dilation 1"``): the
            reason recorded when it does not apply.
        worth_tuning: ``worth_tuning(problem) -> bool``; False keeps the tuner from trying a kernel
            that applies but cannot win at this size; ``method=`` still forces it.
        declines: why ``worth_tuning`` says no, in words: the reason recorded in the entry.
        prepare: optional ``prepare(weight, **params) -> prepared weight``: the once-per-weight
            part of the kernel (truncated SVD factors, an LNS encoding, …). The weight is the
            second positional argument of the call (matmul ``b``, conv2d ``w``). It is an
            optimisation only — ``fn(x, prepare(w, **p), …, **p)`` equals ``fn(x, w, …, **p)``, so
            ``fn`` accepts the raw weight too. The tuner prepares once per setting and times the
            call with the prepared weight; ``autotune.matmul`` keeps prepared weights per
            unchanged weight (``autotune.weights``).
        tensor_fn: optional ``tensor_fn(x, w, b, ...)`` taking and returning CPU torch tensors
            with the same semantics as ``fn`` (a vendor kernel's native call). The dispatcher
            uses it for torch inputs, so that a kernel that is PyTorch anyway does not pay a
            numpy round trip.
        version: bump it when a change to the kernel can change its speed or its results; it is
            part of :func:`kernel_set_digest`, so database entries made by the old code go stale.
        finite_only: True if one NaN/Inf in the input can spread to outputs whose reference value
            is finite (transforms that mix every input value into every output value: FFT,
            Winograd). The dispatcher sends calls with non-finite input to an exact kernel instead.
        workspace: optional ``workspace(problem) -> bytes``: the temporary memory one call needs
            beyond its inputs and output (transformed operands, spectra). The tuner does not try
            a kernel whose workspace exceeds this machine's memory cap, and says so.
    """

    name: str
    op: Op
    fn: Callable[..., Any]
    dtypes: frozenset[str] = FLOAT_DTYPES
    exact: bool = True
    applies: Callable[[Any], bool] = _always
    needs: str = ""
    param_grid: Callable[[Any], list[dict[str, Any]]] = _no_params
    search: Literal["all", "first_accurate"] = "all"
    reference: bool = False
    aliases: tuple[str, ...] = ()
    defaults: Mapping[str, Any] = field(default_factory=dict)
    worth_tuning: Callable[[Any], bool] = _always
    declines: str = "cannot win at this size"
    prepare: Callable[..., Any] | None = None
    tensor_fn: Callable[..., Any] | None = None
    version: int = 1
    finite_only: bool = False
    workspace: Callable[[Any], int] | None = None

    def label(self, params: Params) -> str:
        """This kernel with ``params`` as reports, ``method=`` and the database name it."""
        return label(self.name, params)

    def bind(self, params: Params) -> Callable[..., Any]:
        """The kernel function with its parameters fixed (what the dispatcher calls).

        When there is something to bind, or the spec has a ``prepare`` hook, the result carries
        ``.spec`` and ``.params``, so a dispatcher can pass a prepared weight instead of the raw
        one.
        """
        if not params and self.prepare is None:
            return self.fn
        fn, fixed = self.fn, dict(params)

        def bound(*args: Any) -> Any:
            return fn(*args, **fixed)

        bound.__name__ = self.label(fixed)
        bound.spec = self  # type: ignore[attr-defined]
        bound.params = fixed  # type: ignore[attr-defined]
        return bound

    def inapplicable(self, problem: Any) -> str | None:
        """Why this kernel cannot compute ``problem`` (None if it can)."""
        if problem.dtype not in self.dtypes:
            return f"not applicable: {problem.dtype} not supported"
        if not self.applies(problem):
            return "not applicable" + (f": needs {self.needs}" if self.needs else "")
        return None

    def unpromising(self, problem: Any) -> str | None:
        """Why the tuner should not try this kernel on ``problem`` although it applies (None: try)."""
        return None if self.worth_tuning(problem) else f"not tried: {self.declines} (method= forces it)"

    @property
    def summary(self) -> str:
        """First line of the kernel function's docstring."""
        doc = (self.fn.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


def label(name: str, params: Params) -> str:
    """``winograd(tile=4)``: how a kernel + parameter setting is named in reports, ``method=`` and
    the database."""
    if not params:
        return name
    return f"{name}({','.join(f'{k}={v}' for k, v in params.items())})"


#: op → positional arguments of a kernel call before its keyword parameters.
_POSITIONAL: dict[str, int] = {"conv2d": 7, "matmul": 2}


def add_op(op: str, positional: int) -> None:
    """Accept kernels of a new op whose calls take ``positional`` arguments before the keyword
    parameters (``autotune.problem.register`` calls it for each problem class)."""
    _POSITIONAL[op] = positional


_REGISTRY: dict[tuple[str, str], KernelSpec] = {}
_ALIASES: dict[tuple[str, str], str] = {}
_loaded = False


def register(spec: KernelSpec) -> KernelSpec:
    """Add ``spec`` to the registry (a later registration under the same name replaces it)."""
    if spec.op not in _POSITIONAL:
        raise ValueError(f"register: op must be one of {sorted(_POSITIONAL)}, got {spec.op!r}")
    _REGISTRY[(spec.op, spec.name)] = spec
    for alias in spec.aliases:
        _ALIASES[(spec.op, alias)] = spec.name
    return spec


def unregister(op: str, name: str) -> None:
    """Remove a kernel (used by tests that register a throw-away candidate)."""
    spec = _REGISTRY.pop((op, name), None)
    if spec is not None:
        for alias in spec.aliases:
            _ALIASES.pop((op, alias), None)


def load_all(rescan: bool = False) -> None:
    """Import every public module of every package under ``kernels/`` (``kernels/<op>/``), so that
    each registers its specs. Once per process; ``rescan`` looks for files added since."""
    global _loaded
    if _loaded and not rescan:
        return
    importlib.import_module("kernels.pool")  # the one thread pool, before any kernel runs
    importlib.invalidate_caches()
    root = importlib.import_module("kernels")
    for package in pkgutil.iter_modules(root.__path__, prefix="kernels."):
        if not package.ispkg or package.name.rsplit(".", 1)[-1].startswith("_"):
            continue
        path = importlib.import_module(package.name).__path__
        for module in pkgutil.iter_modules(path, prefix=f"{package.name}."):
            if not module.name.rsplit(".", 1)[-1].startswith("_"):
                importlib.import_module(module.name)
    _loaded = True


def specs(op: str) -> list[KernelSpec]:
    """All registered kernels of ``op``, reference first, then in registration order."""
    load_all()
    found = [spec for (spec_op, _), spec in _REGISTRY.items() if spec_op == op]
    return sorted(found, key=lambda spec: not spec.reference)


def names(op: str) -> list[str]:
    """The method names of ``op`` (without aliases)."""
    return [spec.name for spec in specs(op)]


def get(op: str, name: str) -> KernelSpec:
    """The spec called ``name`` (or one of its aliases) for ``op``; KeyError if unknown."""
    load_all()
    canonical = _ALIASES.get((op, name), name)
    try:
        return _REGISTRY[(op, canonical)]
    except KeyError:
        known = ", ".join(sorted(names(op)))
        raise KeyError(f"no {op} kernel named {name!r}; known: {known}") from None


def kernel_set_digest(op: str) -> str:
    """A short digest of the registered ``op`` kernels' names and versions.

    Database entries record it; an entry whose digest differs was chosen among a different set of
    kernels (one added, removed or changed) and is stale.
    """
    text = ";".join(f"{spec.name}:{spec.version}" for spec in sorted(specs(op), key=lambda s: s.name))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def parameter_names(spec: KernelSpec) -> frozenset[str]:
    """The keyword parameters ``spec.fn`` accepts after the call's positional arguments."""
    parameters = list(inspect.signature(spec.fn).parameters.values())[_POSITIONAL[spec.op] :]
    return frozenset(p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def params_problem(spec: KernelSpec, problem: Any, params: Params) -> str | None:
    """Why ``params`` are not a setting ``spec`` could have chosen for ``problem`` (None if they are).

    A tuned choice is always one of ``spec.param_grid(problem)`` (or the defaults), so anything
    else in a database entry was edited or written by different code.
    """
    unknown = sorted(set(params) - parameter_names(spec))
    if unknown:
        return f"{spec.name} has no parameter {unknown[0]!r}"
    if dict(params) == dict(spec.defaults) or dict(params) in spec.param_grid(problem):
        return None
    return f"{spec.name} does not offer {dict(params)} for this problem"


_LABEL = re.compile(r"^\s*(?P<name>[A-Za-z_][\w]*)\s*(\((?P<params>[^)]*)\))?\s*$")


def parse(op: str, method: Any) -> tuple[KernelSpec, dict[str, Any]]:
    """``"winograd"`` or ``"winograd(tile=4)"`` (a :func:`label`) → spec and parameters.

    Parameters missing from the text take the spec's ``defaults``. TypeError/ValueError name
    the ``method`` argument and say what was expected.
    """
    if not isinstance(method, str):
        raise TypeError(f"{op}: method must be a string or None, got {type(method).__name__}")
    match = _LABEL.match(method)
    if match is None:
        raise ValueError(f"{op}: cannot parse method={method!r}; expected e.g. 'winograd(tile=4)'")
    try:
        spec = get(op, match["name"])
    except KeyError:
        raise ValueError(
            f"{op}: unknown method {match['name']!r}; expected one of "
            f"{', '.join(names(op))} (or None to dispatch by the tuning database)"
        ) from None
    params = dict(spec.defaults)
    accepted = parameter_names(spec)
    for item in filter(None, (match["params"] or "").split(",")):
        name, equals, text = (part.strip() for part in item.partition("="))
        if name not in accepted or not equals:
            known = ", ".join(sorted(accepted)) or "none"
            raise ValueError(
                f"{op}: method={method!r}: {spec.name} has no parameter {name!r} "
                f"(its parameters: {known}); expected e.g. 'winograd(tile=4)'"
            )
        params[name] = _number(text, f"{op}: method={method!r}: parameter {name}")
    return spec, params


def _number(text: str, what: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"{what} must be a number, got {text!r}")
    return value


def reference(op: str) -> KernelSpec:
    """The float64 reference kernel of ``op``."""
    for spec in specs(op):
        if spec.reference:
            return spec
    raise LookupError(f"no reference kernel registered for {op}")
