"""The tuning database: one human-readable YAML file, shared by processes and machines.

Layout and rules — safe YAML only, one section per machine, locked re-read-merge-replace writes,
damage set aside with a warning, entries kept when the lock is busy, the journal and index of
large files: docs/architecture.md, "The database". The document's schema is :mod:`autotune.schema`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import warnings
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from filelock import FileLock, Timeout

from autotune.files import file_mode, real_path, remove_stale_temps, write_atomic
from autotune.machine import fingerprint, fingerprint_id, now_iso
from autotune.schema import (
    SCHEMA,
    Document,
    Entry,
    _SafeLoader,
    dump_document,
    empty_document,
    entry_problem,
    merge_documents,
    merge_entries,
    parse_document,
    validate_document,
)

FILENAME = "autotune.yaml"
#: How long a CLI write (import, merge, clear, a final flush) waits for the lock.
LOCK_TIMEOUT_S = 120.0
#: How long storing a freshly tuned entry waits; past it the entry is kept and written later.
STORE_LOCK_TIMEOUT_S = 10.0

#: Files at least this large take new entries through the journal and keep a JSON index.
JOURNAL_ABOVE_BYTES = 1 << 20
#: The fields of an entry the dispatcher needs (what the index keeps).
HOT_FIELDS = ("choice", "params", "tol", "kernels", "tuned_at")


class CacheWarning(UserWarning):
    """Something about the database file needed attention; the call itself went on."""


# --- Location. -------------------------------------------------------------------------------


def cache_dir() -> Path:
    """``$AUTOTUNE_CACHE_DIR``; else ``cache/`` of a writable checkout; else the user cache dir."""
    configured = os.environ.get("AUTOTUNE_CACHE_DIR")
    if configured:
        return Path(configured).expanduser()
    root = Path(__file__).resolve().parent.parent
    checkout_cache = root / "cache"
    if (root / "pyproject.toml").is_file() and checkout_cache.is_dir() and os.access(checkout_cache, os.W_OK):
        return checkout_cache
    import platformdirs

    return Path(platformdirs.user_cache_dir("autotune", appauthor=False))


def cache_path() -> Path:
    """The database file."""
    return cache_dir() / FILENAME


# --- The database. ---------------------------------------------------------------------------


class Database:
    """The YAML file at ``path`` plus the in-memory map of this machine's usable entries."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path if path is not None else cache_path()
        self.machine = fingerprint()
        self.machine_id = fingerprint_id(self.machine)
        self.read_only = False
        self._entries: dict[str, Entry] | None = None
        #: Entries tuned here but not yet in the file (the lock was busy, or the write failed).
        self.pending: dict[str, Entry] = {}
        self._warned: set[str] = set()

    @property
    def lock(self) -> FileLock:
        return self._lock(LOCK_TIMEOUT_S)

    def _lock(self, timeout_s: float) -> FileLock:
        # On the target of a symlink, so that every path leading to one file shares one lock.
        return FileLock(str(real_path(self.path)) + ".lock", timeout=timeout_s)

    def _warn_once(self, message: str, stacklevel: int = 4) -> None:
        if message not in self._warned:
            self._warned.add(message)
            warnings.warn(message, CacheWarning, stacklevel=stacklevel)

    # -- reading ------------------------------------------------------------------------------

    def read_document(self) -> Document:
        """The whole database (every machine; the file and its journal), validated: a corrupt file
        is moved aside, malformed parts are dropped with a warning. Never raises on content."""
        doc = self.read_with_rejected()[0]
        self._fold_journal(doc)
        return doc

    def read_with_rejected(self) -> tuple[Document, dict[str, Any]]:
        """(validated document, malformed parts by path) of the file as it is now."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return empty_document(), {}
        except UnicodeDecodeError:
            return self._set_aside("is not UTF-8 text"), {}
        except OSError as exc:  # e.g. permissions: leave the file alone, work in memory
            self._warn_once(f"{self.path} cannot be read ({exc}); choices are kept in memory only")
            self.read_only = True
            return empty_document(), {}
        try:
            doc = parse_document(text, str(self.path))
        except ValueError as exc:
            return self._set_aside(str(exc)), {}
        if doc["schema"] > SCHEMA:
            self._warn_once(
                f"{self.path} has schema {doc['schema']}, newer than this autotune's "
                f"{SCHEMA}; it is left untouched and choices are tuned in memory only"
            )
            self.read_only = True
            return empty_document(), {}
        clean, rejected = validate_document(doc)
        if rejected:
            self._warn_once(
                f"{self.path}: {_ignoring(rejected)}; "
                f"they are kept in {self.path.name}.rejected when the file is next written"
            )
        return clean, rejected

    def _set_aside(self, why: str) -> Document:
        aside = self.sidecar(f".corrupt-{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}")
        try:
            os.replace(real_path(self.path), aside)
            where = f"moved aside to {aside.name}"
        except OSError as exc:
            where = f"could not be moved aside ({exc})"
        warnings.warn(f"{self.path}: {why}; {where}; starting empty", CacheWarning, stacklevel=5)
        return empty_document()

    def _keep_rejected(self, rejected: Mapping[str, Any]) -> None:
        """Add malformed parts to ``<file>.rejected`` (a YAML map: path → what was there)."""
        aside = self.sidecar(".rejected")
        kept: dict[str, Any] = {}
        with contextlib.suppress(OSError, UnicodeDecodeError, yaml.YAMLError):
            loaded = yaml.load(aside.read_text(encoding="utf-8"), Loader=_SafeLoader)
            if isinstance(loaded, dict) and isinstance(loaded.get("rejected"), dict):
                kept = loaded["rejected"]
        kept.update(rejected)
        write_atomic(aside, dump_document({"rejected_at": now_iso(), "rejected": kept}))

    def _usable(self, doc: Document) -> dict[str, Entry]:
        section = doc["machines"].get(self.machine_id)
        return dict(section["entries"]) if section else {}

    def sidecar(self, suffix: str) -> Path:
        """A file beside the database's target: ``.journal``, ``.index.json``, ``.rejected``."""
        target = real_path(self.path)
        return target.with_name(target.name + suffix)

    def entries(self) -> dict[str, Entry]:
        """This machine's usable entries (loaded from the file on first use). For a large file they
        come from the index and hold only :data:`HOT_FIELDS`; :meth:`full_entries` has everything."""
        if self._entries is None:
            stamp = _file_stamp(self.path)
            base = self._read_index(stamp) if _large(stamp) else None
            if base is not None:
                merge_entries(base, self._journal_entries().get(self.machine_id, {}))
            else:
                doc = self.read_with_rejected()[0]
                if _large(stamp):
                    self._write_index(stamp, self._usable(doc))
                self._fold_journal(doc)
                base = self._usable(doc)
            self._entries = {**base, **self.pending}
        return self._entries

    def full_entries(self) -> dict[str, Entry]:
        """This machine's entries with every field (parses the whole file: for the CLI)."""
        return {**self._usable(self.read_document()), **self.pending}

    # -- the index and the journal (large files) ----------------------------------------------

    def _read_index(self, stamp: list[int]) -> dict[str, Entry] | None:
        """The index's entries if it belongs to the file as it is now, else None."""
        try:
            index = json.loads(self.sidecar(".index.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(index, dict) or index.get("machine") != self.machine_id:
            return None
        entries = index.get("entries")
        # Each entry is checked against the schema when it is looked up (:meth:`lookup`), not
        # here: at 100k entries that check is a third of the start-up.
        return entries if index.get("stamp") == stamp and isinstance(entries, dict) else None

    def _write_index(self, stamp: list[int], entries: Mapping[str, Entry]) -> None:
        """Best effort: a missing or stale index only costs the next process a full parse."""
        hot = {key: _hot(entry) for key, entry in entries.items()}
        index = {"stamp": stamp, "machine": self.machine_id, "entries": hot}
        with contextlib.suppress(OSError):
            write_atomic(self.sidecar(".index.json"), json.dumps(index, separators=(",", ":")))

    def _journal_entries(self) -> dict[str, dict[str, Entry]]:
        """machine id → entries appended to the journal (a record cut short by a kill is skipped)."""
        try:
            text = self.sidecar(".journal").read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return {}
        found: dict[str, dict[str, Entry]] = {}
        for chunk in _JOURNAL_RECORD.split(text):
            if (record := _parse_record(chunk)) is not None:
                merge_entries(found.setdefault(record["machine"], {}), {record["key"]: record["entry"]})
        return found

    def _append_journal(self, entries: Mapping[str, Entry]) -> None:
        """Append one YAML document per entry (holding the lock), flushed to disk.

        Each record starts on a fresh line (a newline, then ``---``), so a record cut short by a
        killed writer never swallows the next one.
        """
        text = "".join(
            "\n---\n" + dump_document({"machine": self.machine_id, "key": key, "entry": entry})
            for key, entry in entries.items()
        )
        fd = os.open(self.sidecar(".journal"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, file_mode(self.path))
        try:
            os.write(fd, text.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)

    def lookup(self, key: str) -> Entry | None:
        """The entry for a problem key, or None. A dict access after the first call (plus the
        schema check of that one entry, which may come from the index)."""
        entry = self.entries().get(key)
        return entry if entry is None or entry_problem(key, entry) is None else None

    # -- writing ------------------------------------------------------------------------------

    def store(self, new_entries: Mapping[str, Entry]) -> bool:
        """Merge entries for this machine into the file; False if they are not in it yet. The
        in-memory map is updated either way; entries the file could not take (lock held too long,
        write failed) stay in :attr:`pending` for the next store or :meth:`flush` (also at exit)."""
        self.entries().update(new_entries)
        self.pending.update(new_entries)
        return self.flush(STORE_LOCK_TIMEOUT_S)

    def flush(self, timeout_s: float = LOCK_TIMEOUT_S) -> bool:
        """Write :attr:`pending` entries to the file; True if none is left pending."""
        if not self.pending:
            return True
        if self.read_only:
            return False
        entries = dict(self.pending)
        try:  # into the file, or appended to the journal of a large one
            if not _large(_file_stamp(self.path)):
                section = {"fingerprint": self.machine, "entries": entries}
                self.merge_into_file({"machines": {self.machine_id: section}}, timeout_s)
            else:
                with self._lock(timeout_s):
                    remove_stale_temps(self.path)
                    self._append_journal(entries)
                if self._entries is not None:
                    self._entries.update(entries)
        except Timeout:
            self._warn_once(
                f"{self.path} is locked by another process; {len(self.pending)} tuned entries are "
                f"kept in memory and written at the next store or at exit"
            )
            return False
        except OSError as exc:
            self._warn_once(f"could not write {self.path} ({exc}); keeping choices in memory")
            return False
        if self.read_only:
            return False
        self.pending.clear()
        return True

    def merge_into_file(self, other: Document, timeout_s: float = LOCK_TIMEOUT_S) -> Document:
        """Lock, re-read (file and journal), merge ``other`` in, write atomically (folding the
        journal in); returns the merged document."""
        real_path(self.path).parent.mkdir(parents=True, exist_ok=True)
        with self._lock(timeout_s):
            doc, rejected = self.read_with_rejected()
            if self.read_only:
                return doc
            self._fold_journal(doc)  # its entries now go into the file
            merge_documents(doc, other)
            self._write_locked(doc, rejected)
        self._entries = {**self._usable(doc), **self.pending}
        return doc

    def compact(self) -> None:
        """Fold the journal into the file (a no-op without one)."""
        if self.sidecar(".journal").exists():
            self.merge_into_file(empty_document())

    def _fold_journal(self, doc: Document) -> None:
        for machine_id, entries in self._journal_entries().items():
            section = doc["machines"].setdefault(machine_id, {"fingerprint": {}, "entries": {}})
            if machine_id == self.machine_id and not section["fingerprint"]:
                section["fingerprint"] = self.machine
            merge_entries(section["entries"], entries)

    def _write_locked(self, doc: Document, rejected: Mapping[str, Any]) -> None:
        """Write ``doc`` (holding the lock): stale temp files first, rejected parts kept aside;
        then the index (large files) and an empty journal (its entries are in ``doc``)."""
        remove_stale_temps(self.path)
        if rejected:
            self._keep_rejected(rejected)
        write_atomic(self.path, dump_document(doc))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.sidecar(".journal"))
        stamp = _file_stamp(self.path)
        if _large(stamp):
            self._write_index(stamp, self._usable(doc))

    def clear(self, all_machines: bool = False) -> int:
        """Remove this machine's entries (or every machine's); returns how many were removed."""
        real_path(self.path).parent.mkdir(parents=True, exist_ok=True)
        with self.lock:
            doc, rejected = self.read_with_rejected()
            if self.read_only:
                return 0
            self._fold_journal(doc)
            if all_machines:
                removed = sum(len(section["entries"]) for section in doc["machines"].values())
                doc["machines"] = {}
            else:
                section = doc["machines"].pop(self.machine_id, None) or {}
                removed = len(section.get("entries") or {})
            self._write_locked(doc, rejected)
        self._entries = {}
        self.pending.clear()
        return removed


def _file_stamp(path: Path) -> list[int] | None:
    """[size, mtime_ns, inode] of the file (through symlinks), or None if there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _large(stamp: list[int] | None) -> bool:
    """A file this large takes new entries through the journal and keeps an index."""
    return stamp is not None and stamp[0] >= JOURNAL_ABOVE_BYTES


def _ignoring(rejected: Mapping[str, Any]) -> str:
    """``ignoring 4 malformed part(s): 'a', 'b', 'c' and 1 more``."""
    names = ", ".join(repr(path) for path in list(rejected)[:3])
    more = f" and {len(rejected) - 3} more" if len(rejected) > 3 else ""
    return f"ignoring {len(rejected)} malformed part(s): {names}{more}"


def _hot(entry: Entry) -> Entry:
    """The dispatch fields of an entry (what the index keeps)."""
    hot = {name: entry[name] for name in HOT_FIELDS if name in entry}
    hot["problem"] = {"op": entry["problem"]["op"]}
    return hot


#: Journal records start with a line ``---``.
_JOURNAL_RECORD = re.compile(r"^---\n", re.MULTILINE)


def _parse_record(chunk: str) -> dict[str, Any] | None:
    """One journal record, or None if it is empty, cut short or malformed."""
    if not chunk.strip():
        return None
    try:
        record = yaml.load(chunk, Loader=_SafeLoader)  # a safe loader
    except (yaml.YAMLError, RecursionError):
        return None
    if isinstance(record, dict) and isinstance(record.get("machine"), str):
        return record if entry_problem(record.get("key"), record.get("entry")) is None else None
    return None


def load_file(path: Path) -> Document:
    """Read another database file (for import/merge), validated; ValueError if it is not one.

    Malformed parts are dropped with a warning naming them (the file itself is not changed).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    doc = parse_document(text, str(path))
    if doc["schema"] > SCHEMA:
        raise ValueError(f"{path} has schema {doc['schema']}; this autotune reads up to {SCHEMA}")
    clean, rejected = validate_document(doc)
    if rejected:
        warnings.warn(f"{path}: {_ignoring(rejected)}", CacheWarning, stacklevel=2)
    other = Database(Path(path))
    if other.sidecar(".journal").exists():  # a large database's newest entries (read, not changed)
        other._fold_journal(clean)
    return clean
