"""A miss: from a problem to the kernel to call, for any op.

:func:`resolve` uses the database entry if it fits the call (:func:`entry_invalidity`; one that
does not gets one warning and is re-tuned in tune mode, bypassed otherwise); else the mode decides:

* ``tune`` (default; ``AUTOTUNE_MODE=tune``): time and check every candidate now, persist, use;
* ``heuristic``: predicted from tuned neighbours or rules (:mod:`autotune.heuristics`), no
  timing, nothing written;
* ``off``: always the exact default (``Problem.EXACT_DEFAULT``: ``im2col`` for conv2d, ``blas``
  for matmul) — BLAS-based, any geometry, reference-grade accuracy.

An approximate choice is re-checked against an exact product on a sample of calls
(``$AUTOTUNE_VERIFY``, see :func:`verify_rate`).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from autotune import estimate, heuristics, tuner
from autotune.evaluate import rel_max_error
from autotune.problem import Problem, parse_problem
from autotune.state import STATE, database
from kernels import registry

#: Default share of calls on which an approximate choice is re-checked (``$AUTOTUNE_VERIFY``).
DEFAULT_VERIFY_RATE = 0.01


class ChoiceWarning(UserWarning):
    """A remembered choice did not fit a call; the call went on with a fitting kernel."""


def entry_invalidity(problem: Problem, entry: dict[str, Any]) -> str | None:
    """Why a (schema-valid) database entry must not be used for ``problem``; None if it fits."""
    try:
        spec = registry.get(problem.op, entry["choice"])
    except KeyError:
        return f"its kernel {entry['choice']!r} is not registered"
    if spec.inapplicable(problem):
        return f"{spec.name} does not apply to this problem"
    if not spec.exact and problem.tol is None:
        return f"{spec.name} is approximate and the call is exact (no tol=)"
    if wrong_params := registry.params_problem(spec, problem, entry.get("params") or {}):
        return wrong_params
    tuned_tol, current_tol = entry.get("tol"), tuner.tolerance(problem)
    if tuned_tol is None or tuned_tol > current_tol * (1 + 1e-9):
        return f"it was tuned under tol {tuned_tol}, looser than the current tol {current_tol:g}"
    if entry.get("kernels") != registry.kernel_set_digest(problem.op):
        return "it was chosen among a different set of kernels (stale; `autotune tune --refresh`)"
    return None


def fitting_entry(problem: Problem) -> dict[str, Any] | None:
    """The database entry for ``problem`` if there is one and it fits, else None."""
    entry = database().lookup(problem.key)
    return entry if entry is not None and entry_invalidity(problem, entry) is None else None


def _tuned(problem: Problem, **options: Any) -> tuner.TuneResult:
    """Tune and store ``problem``; ValueError (naming tol and method=) when nothing is accurate."""
    try:
        result = tuner.tune_problem(problem, **options)
    except RuntimeError as exc:
        raise ValueError(
            f"{problem.op}: no kernel meets tol={tuner.tolerance(problem):g} for {problem.key} "
            f"({exc}); loosen tol or force one with method="
        ) from None
    database().store({problem.key: result.to_entry()})
    return result


def resolve(problem: Problem, inputs: tuple[np.ndarray, ...] | None = None) -> Callable[..., Any]:
    """The kernel to call for ``problem`` under the current mode (may tune and persist)."""
    entry = database().lookup(problem.key)
    mode = STATE.get_mode()
    if entry is not None:
        why = entry_invalidity(problem, entry)
        if why is None:
            return registry.get(problem.op, entry["choice"]).bind(entry.get("params") or {})
        if problem.key not in STATE.reported:  # one warning per problem and process
            STATE.reported.add(problem.key)
            action = "re-tuning" if mode == "tune" else f"falling back ({mode} mode)"
            message = f"the database entry for {problem.key} is not used: {why}; {action}"
            warnings.warn(message, ChoiceWarning, stacklevel=4)  # the conv2d/matmul call
    if mode == "off":
        name, params = problem.EXACT_DEFAULT
    elif mode == "heuristic":
        name, params, _ = heuristics.choose(problem, database().entries())
        if registry.get(problem.op, name).inapplicable(problem):
            name, params = problem.EXACT_DEFAULT
    else:
        result = _tuned(problem, inputs=inputs)
        name, params = result.choice, result.params
    return registry.get(problem.op, name).bind(params)


def forced(spec: registry.KernelSpec, params: dict[str, Any], problem: Problem) -> Callable[..., Any]:
    """``spec`` bound to ``params`` for a ``method=`` call; ValueError saying what it needs if it
    does not apply."""
    if spec.inapplicable(problem):
        needs = f" (needs {spec.needs})" if spec.needs else ""
        raise ValueError(f"{problem.op}: method={spec.name!r} does not apply to {problem.key}{needs}")
    return spec.bind(params)


def exact_default(problem: Problem | type[Problem]) -> Callable[..., Any]:
    """The op's exact default kernel, bound (``off`` mode; non-finite input)."""
    name, params = problem.EXACT_DEFAULT
    return registry.get(problem.op, name).bind(params)


def kernel_for(problem: Problem) -> Callable[..., Any]:
    """The kernel the dispatcher calls for ``problem``, bound once per process: the generic entry
    for an op without a public function of its own (call it with ``problem.call_args(inputs)``)."""
    key = (f"{problem.op}-problem", problem.key)
    fn = STATE.bound.get(key)
    if fn is None:
        fn = STATE.bound[key] = resolve(problem)
    return fn


# --- Re-checking approximate choices on later calls. -----------------------------------------


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
class Verifier:
    """Counts the calls of one bound approximate choice and says which ones to check."""

    problem: Problem
    period: int
    calls: int = 0

    def due(self) -> bool:
        self.calls += 1
        return (self.calls - 1) % self.period == 0


def watch_if_approximate(key: tuple, fn: Callable[..., Any], problem: Problem, method: str | None) -> None:
    """Register a verifier for a key bound (by the tuner or the database) to an inexact kernel."""
    spec = getattr(fn, "spec", None)
    if method is not None or spec is None or spec.exact or problem.tol is None:
        return  # forced kernels are the caller's responsibility; exact ones need no check
    rate = verify_rate()
    if rate > 0:
        STATE.verifiers[key] = Verifier(problem, period=max(1, round(1 / rate)))


def verified(key: tuple[Any, ...], args: tuple[Any, ...], out: np.ndarray) -> np.ndarray:
    """``out`` if it is within the problem's tolerance of the exact result; otherwise warn, drop
    the choice, re-tune on these operands (tune mode) and return the re-tuned kernel's result."""
    verifier = STATE.verifiers[key]
    problem = verifier.problem
    exact = problem.exact(args)
    if not np.isfinite(exact).all():
        return out  # non-finite operands went to the exact default: nothing to compare
    error, tol = rel_max_error(out, exact), tuner.tolerance(problem)
    if error <= tol:
        return out
    tune_mode = STATE.get_mode() == "tune"
    found = f"{problem.op}: the approximate choice for {problem.key} has rel_err {error:.2e} > tol {tol:g}"
    action = "re-tuning on them" if tune_mode else "using the exact default from now on"
    warnings.warn(f"{found} on this call's operands; {action}", ChoiceWarning, stacklevel=3)
    STATE.verifiers.pop(key, None)
    contiguous = tuple(np.ascontiguousarray(a) for a in args)
    if tune_mode:
        result = _tuned(problem, inputs=contiguous)
        fn = registry.get(problem.op, result.choice).bind(result.params)
    else:
        fn = exact_default(problem)
    STATE.bound[key] = fn
    watch_if_approximate(key, fn, problem, None)
    return fn(*contiguous)


# --- Offline tuning. -------------------------------------------------------------------------


def _op_of(key: tuple[Any, ...]) -> str:
    """The op of a call key (``"conv2d"``, ``"conv2d-fast"`` and ``"conv2d-problem"`` keys alike)."""
    return str(key[0]).split("-", 1)[0]


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
    others are re-tuned. Each result is written as soon as it is measured, so an interruption
    keeps everything finished (what the file could not take yet stays in ``database().pending``).
    ``on_result(problem, entry, cached)`` follows each problem. With ``prune``, candidates that
    this machine's earlier measurements put far behind the best so far are not tried
    (:mod:`autotune.estimate`), and the others are timed briefly, the leaders in full (the race).
    """
    entries = []
    for item in problems:
        problem = parse_problem(item) if isinstance(item, str) else item
        entry = None if force else fitting_entry(problem)
        cached = entry is not None
        if entry is None:
            known = estimate.relative_times(database().entries()) if prune else {}
            entry = _tuned(problem, budget_s=budget_s, relative=known, screen=prune).to_entry()
            STATE.forget(lambda key, op=problem.op: _op_of(key) == op)  # no bound kernel outlives its entry
        entries.append(entry)
        if on_result is not None:
            on_result(problem, entry, cached)
    return entries
