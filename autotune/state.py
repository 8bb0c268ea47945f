"""Process state: everything the dispatcher remembers between calls, in one object, :data:`STATE`
(what it holds: docs/architecture.md, "Where process state lives"). Nothing else in the package
keeps mutable state about dispatch, so :func:`reset` and :func:`use_cache` are complete.
"""

from __future__ import annotations

import atexit
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autotune import cache, machine

MODES: tuple[str, ...] = ("tune", "heuristic", "off")
#: Default relative max-error tolerance per dtype (``autotune.set_tolerance`` changes them).
DEFAULT_TOL: dict[str, float] = {"float32": 1e-4, "float64": 1e-10}

#: ``listener(event, subject)``: event is ``"tune-started"`` (subject: the problem),
#: ``"tune-finished"`` (the TuneResult) or ``"prepared"`` (the kernel spec whose ``prepare`` ran).
Listener = Callable[[str, Any], None]


@dataclass
class State:
    """The dispatcher's memory in this process (see the module docstring)."""

    mode: str | None = None
    tolerances: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_TOL))
    #: call key → kernel with its parameters bound.
    bound: dict[tuple[Any, ...], Callable[..., Any]] = field(default_factory=dict)
    #: call key → sampler re-checking an approximate choice.
    verifiers: dict[tuple[Any, ...], Any] = field(default_factory=dict)
    #: problem keys whose database entry was already reported as not fitting.
    reported: set[str] = field(default_factory=set)
    #: set by :func:`use_cache`: the database directory, whatever the environment says.
    cache_dir: Path | None = None
    db: cache.Database | None = None
    listeners: list[Listener] = field(default_factory=list)

    def get_mode(self) -> str:
        """:func:`autotune.set_mode`'s mode, else ``$AUTOTUNE_MODE``, else ``tune``."""
        if self.mode is not None:
            return self.mode
        mode = os.environ.get("AUTOTUNE_MODE", "tune").strip().lower() or "tune"
        if mode not in MODES:
            raise ValueError(f"AUTOTUNE_MODE must be one of {MODES}, got {mode!r}")
        return mode

    def database(self) -> cache.Database:
        """The database at the current location (re-opened when the location changed)."""
        path = cache.cache_path() if self.cache_dir is None else self.cache_dir / cache.FILENAME
        if self.db is None or self.db.path != path:
            self.close_database()
            self.db = cache.Database(path)
        return self.db

    def close_database(self) -> None:
        """Write what the database still holds in memory and drop the handle."""
        if self.db is not None and self.db.pending:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", cache.CacheWarning)
                self.db.flush()
        self.db = None

    def forget(self, which: Callable[[tuple[Any, ...]], bool] | None = None) -> None:
        """Drop bound choices (all, or the keys ``which`` selects) and their verifiers."""
        for key in [k for k in self.bound if which is None or which(k)]:
            del self.bound[key]
            self.verifiers.pop(key, None)

    def notify(self, event: str, subject: Any) -> None:
        for listener in list(self.listeners):
            listener(event, subject)


STATE = State()


def database() -> cache.Database:
    """The process's database (:meth:`State.database`)."""
    return STATE.database()


def reset() -> None:
    """Forget every in-memory choice, the database handle and the machine probe (after changing
    the cache location or the thread settings). Mode and tolerances are kept."""
    STATE.forget()
    STATE.reported.clear()
    STATE.close_database()
    machine.forget()


@contextmanager
def use_cache(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Use the database in directory ``path`` inside the block (choices bound before are set
    aside and come back after it); yields the directory."""
    directory = Path(path).expanduser()
    saved = (STATE.cache_dir, dict(STATE.bound), dict(STATE.verifiers))
    reset()
    STATE.cache_dir = directory
    try:
        yield directory
    finally:
        reset()
        STATE.cache_dir = saved[0]
        STATE.bound.update(saved[1])
        STATE.verifiers.update(saved[2])


@contextmanager
def listening(listener: Listener) -> Iterator[Listener]:
    """Call ``listener(event, subject)`` for every tuning event inside the block."""
    STATE.listeners.append(listener)
    try:
        yield listener
    finally:
        STATE.listeners.remove(listener)


@atexit.register
def _flush_at_exit() -> None:
    STATE.close_database()
