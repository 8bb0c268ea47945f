"""Weights: the right operand of a matmul, whose derived forms are computed once per content.

A weight's content digest and prepared forms are kept for as long as it is known to be unchanged
(a :class:`Weight` handle by construction; a torch tensor by its base, view geometry and
``_version``; a plain array never: re-hashed per call). The rules: docs/architecture.md, "Weights".
"""

from __future__ import annotations

import hashlib
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from autotune.state import STATE

#: Prepared forms kept for plain numpy weights, by content digest (least recently used dropped).
DIGEST_CACHE_SIZE = 8

#: (kernel, parameters) settings whose ``prepare`` returned the weight itself (e.g. svd without
#: ``rank_b``): there is nothing to prepare, so callers skip even the weight's state lookup.
_NOOP_PREPARES: set[tuple[Any, ...]] = set()


def stamp(tensor: torch.Tensor | None) -> tuple[int, int, int] | None:
    """Identity of a tensor's current values: the object, its storage address and its version.

    Every in-place write through autograd-visible ops (``optimizer.step()``, ``load_state_dict``,
    writes under ``torch.no_grad()``) bumps ``_version``; assigning ``param.data = ...`` changes
    ``data_ptr()``. Writes through ``param.data.<op>_()`` or a numpy view bypass both.
    """
    return None if tensor is None else (id(tensor), tensor.data_ptr(), tensor._version)


class Derived:
    """Arrays derived from some tensors (numpy views, a transposed copy), rebuilt only when one of
    the tensors' :func:`stamp` changes: a model passes the same parameters on every call.

    ``build`` is passed at each call, never stored: a stored closure would survive
    ``copy.deepcopy`` of a module and keep reading the original's parameters.
    """

    def __init__(self) -> None:
        self._stamps: list[Any] | None = None
        self._arrays: tuple[Any, ...] = ()

    def get(self, build: Callable[[], tuple[Any, ...]], *tensors: torch.Tensor | None) -> tuple[Any, ...]:
        # stamp() inlined: this runs on every repeat call of a model layer
        stamps = [None if t is None else (id(t), t.data_ptr(), t._version) for t in tensors]
        if stamps != self._stamps:
            self._arrays, self._stamps = build(), stamps
        return self._arrays


def _prepare_key(spec: Any, params: Mapping[str, Any]) -> tuple[Any, ...]:
    return (spec.name, *sorted(params.items()))


def prepare_is_noop(spec: Any, params: Mapping[str, Any]) -> bool:
    """True once ``spec.prepare`` with ``params`` has returned its input unchanged."""
    return _prepare_key(spec, params) in _NOOP_PREPARES


def digest(array: np.ndarray) -> str:
    """16 hex digits identifying the content: SHA-1 over dtype, shape and C-order bytes."""
    contiguous = np.ascontiguousarray(array)
    hasher = hashlib.sha1(f"{contiguous.dtype.str}{contiguous.shape}".encode(), usedforsecurity=False)
    hasher.update(memoryview(contiguous).cast("B"))
    return hasher.hexdigest()[:16]


class WeightState:
    """What is known about one unchanged weight content: its digest and its prepared forms."""

    def __init__(self, known_digest: str | None = None) -> None:
        self._digest = known_digest
        self._finite: bool | None = None
        self._prepared: dict[tuple[Any, ...], Any] = {}

    def finite(self, array: np.ndarray) -> bool:
        """No NaN/Inf in ``array`` (checked on first use: a pass over a 512×512×3×3 filter took
        0.5-1 ms, a third of some calls, when made on every call; BENCHMARKS.md §26)."""
        if self._finite is None:
            self._finite = bool(np.isfinite(array).all())
        return self._finite

    def digest(self, array: np.ndarray) -> str:
        """The content digest (computed from ``array`` on first use)."""
        if self._digest is None:
            self._digest = digest(array)
        return self._digest

    def prepared(self, spec: Any, params: Mapping[str, Any], array: np.ndarray) -> Any:
        """``spec.prepare(array, **params)`` (on a C-contiguous ``array``), once per (kernel, params)."""
        key = _prepare_key(spec, params)
        found = self._prepared.get(key)
        if found is None:
            STATE.notify("prepared", spec)
            contiguous = np.ascontiguousarray(array)
            found = spec.prepare(contiguous, **params)
            if found is contiguous:  # nothing derived; never keep a reference to the caller's array
                _NOOP_PREPARES.add(key)
                return contiguous
            self._prepared[key] = found
        return found


class Weight:
    """A numpy weight that is promised not to change: its digest and prepared forms are kept.

    ``autotune.matmul(x, Weight(w), tol=1e-2)`` hashes and factors ``w`` once, however often it is
    called; ``autotune.conv2d(x, Weight(w))`` transforms a filter once (Winograd ``U``, the FFT
    spectrum) and is tuned as a fixed weight. Accepts a 2-D (matmul, or a 2-D conv kernel) or
    4-D (conv2d) float32/float64 numpy array or torch tensor (copied to numpy).
    """

    def __init__(self, array: Any, *, copy: bool = True) -> None:
        if isinstance(array, torch.Tensor):
            array = array.detach().cpu().numpy()
        if not isinstance(array, np.ndarray):
            kind = type(array).__name__
            raise TypeError(f"Weight: array must be a numpy array or a torch tensor, got {kind}")
        if array.ndim not in (2, 4) or array.dtype not in (np.float32, np.float64):
            raise TypeError(
                f"Weight: expected a 2-D or 4-D float32/float64 array, got {array.ndim}-D {array.dtype}"
            )
        if copy:
            # A private copy rather than a read-only flag: torch warns on every non-writable array
            # it wraps, and nothing outside the handle holds a reference to write through.
            array = np.array(array, order="C", copy=True)
        self.array: np.ndarray = array
        self.state = WeightState()

    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    @property
    def ndim(self) -> int:
        return self.array.ndim

    @property
    def digest(self) -> str:
        return self.state.digest(self.array)

    def __repr__(self) -> str:
        return f"Weight({'x'.join(map(str, self.shape))} {self.dtype})"


class _TrackedTensor:
    """The states of the views of one torch base tensor, valid for one ``_version``."""

    def __init__(self, base: torch.Tensor, on_death: Callable[[Any], None]) -> None:
        self.base_ref = weakref.ref(base, on_death)
        self.version = base._version
        self.views: dict[tuple[Any, ...], WeightState] = {}


_tracked: dict[int, _TrackedTensor] = {}
_by_digest: OrderedDict[str, WeightState] = OrderedDict()


def _tensor_state(tensor: torch.Tensor) -> WeightState:
    base = tensor._base if tensor._base is not None else tensor
    key = id(base)
    tracked = _tracked.get(key)
    if tracked is None or tracked.base_ref() is not base or tracked.version != tensor._version:
        tracked = _TrackedTensor(base, lambda _ref, key=key: _tracked.pop(key, None))
        _tracked[key] = tracked
    geometry = (tensor.data_ptr(), tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype)
    if (state := tracked.views.get(geometry)) is None:
        state = tracked.views[geometry] = WeightState()
    return state


def _content_state(array: np.ndarray) -> WeightState:
    content = digest(array)
    if (state := _by_digest.get(content)) is None:
        state = _by_digest[content] = WeightState(content)
        while len(_by_digest) > DIGEST_CACHE_SIZE:
            _by_digest.popitem(last=False)
    else:
        _by_digest.move_to_end(content)
    return state


def state_of(value: Any, array: np.ndarray) -> WeightState:
    """The state of the weight ``value`` (a Weight, torch tensor or numpy array) whose data is ``array``."""
    if isinstance(value, Weight):
        return value.state
    if isinstance(value, torch.Tensor) and not value.is_inference():  # inference tensors have no _version
        return _tensor_state(value)
    return _content_state(array)


def forget() -> None:
    """Drop every tracked tensor and digest-keyed state (Weight handles keep their own)."""
    _tracked.clear()
    _by_digest.clear()
