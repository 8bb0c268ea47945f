"""The tuning database: one human-readable YAML file, shared by processes and machines.

Layout of ``<cache dir>/autotune.yaml``::

    schema: 1
    machines:
      <fingerprint id>:
        fingerprint: {cpu: ..., isa: [...], cores: 2, threads: {...}, versions: {...}}
        entries:
          "conv2d x=1x64x56x56 w=64x64x3x3 stride=1 pad=1 dilation=1 groups=1 float32":
            problem: {...}
            choice: winograd
            params: {tile: 4}
            tol: 0.0001
            tuned_at: '2026-11-25T11:42:03+00:00'
            candidates:
              winograd(tile=4): {kernel: winograd, params: {tile: 4}, median_us: ..., ok: true}
              fft: {kernel: fft, median_us: ..., rel_err: ..., ok: false, reason: ...}

Rules (DESIGN.md §6):

* read with ``yaml.safe_load``, written with ``yaml.safe_dump``;
* only the section whose fingerprint matches this machine is used; the others stay in the file;
* writes take a file lock, re-read the file, merge (newest ``tuned_at`` wins per key) and replace
  the file atomically, so concurrent writers lose nothing;
* an unparseable file is moved aside (``autotune.yaml.corrupt-<time>``) with a warning; a
  malformed entry is skipped with a warning but left in the file; a file written by a newer schema
  is never overwritten (this process then tunes in memory only);
* reads go through an in-memory map: a lookup is a dict access, not a file read.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import warnings
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from filelock import FileLock

SCHEMA = 1
FILENAME = "autotune.yaml"
LOCK_TIMEOUT_S = 120.0

Entry = dict[str, Any]
Document = dict[str, Any]


class CacheWarning(UserWarning):
    """Something about the database file needed attention; the call itself went on."""


# ---------------------------------------------------------------------------------------------
# Location and machine fingerprint.


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


_ISA_FLAGS = (
    "sse4.2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512vnni",
    "avx512bf16",
    "avx512fp16",
    "amx-tile",
    "neon",
    "sve",
)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith(("model name", "Model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


@cache
def fingerprint() -> dict[str, Any]:
    """What makes timings comparable: CPU, ISA, cores, thread settings, library versions.

    Computed once per process, when the database is first used.
    """
    import llvmlite.binding as llvm
    import numba
    import numpy
    import threadpoolctl
    import torch

    from autotune import __version__

    features = llvm.get_host_cpu_features()
    blas_threads = max(
        (pool["num_threads"] for pool in threadpoolctl.threadpool_info() if pool["user_api"] == "blas"),
        default=1,
    )
    return {
        "cpu": _cpu_model(),
        "llvm_cpu": llvm.get_host_cpu_name(),
        "isa": [flag for flag in _ISA_FLAGS if features.get(flag, False)],
        "cores": os.cpu_count(),
        "threads": {
            "numba": numba.get_num_threads(),
            "numba_layer": numba.threading_layer(),  # "omp": PyTorch's pool (kernels/pool.py)
            "torch": torch.get_num_threads(),
            "blas": blas_threads,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
        },
        "versions": {
            "numpy": str(numpy.__version__),
            "numba": str(numba.__version__),
            "torch": str(torch.__version__),
            "autotune": __version__,
        },
    }


def fingerprint_id(print_: Mapping[str, Any]) -> str:
    """Short stable id of a fingerprint (the section name in the file)."""
    text = yaml.safe_dump(dict(print_), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def now_iso() -> str:
    """UTC timestamp used for ``tuned_at`` (sortable as text)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


# ---------------------------------------------------------------------------------------------
# Pure document operations (also used by the CLI's merge/import).


def empty_document() -> Document:
    return {"schema": SCHEMA, "machines": {}}


def is_valid_entry(entry: Any) -> bool:
    """An entry the dispatcher can use: a problem record and a named choice."""
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("choice"), str)
        and isinstance(entry.get("problem"), dict)
        and isinstance(entry.get("params", {}), dict)
    )


def _newer(candidate: Any, current: Any) -> bool:
    if not is_valid_entry(current):
        return True
    if not is_valid_entry(candidate):
        return False
    return str(candidate.get("tuned_at", "")) >= str(current.get("tuned_at", ""))


def merge_documents(base: Document, other: Document) -> Document:
    """Merge ``other`` into ``base`` in place: newest ``tuned_at`` wins per (machine, key)."""
    for machine_id, section in (other.get("machines") or {}).items():
        if not isinstance(section, dict):
            continue
        target = base["machines"].setdefault(
            machine_id, {"fingerprint": section.get("fingerprint", {}), "entries": {}}
        )
        target.setdefault("entries", {})
        for key, entry in (section.get("entries") or {}).items():
            if key not in target["entries"] or _newer(entry, target["entries"][key]):
                target["entries"][key] = entry
    return base


def parse_document(text: str, origin: str) -> Document:
    """Parse and structurally check a database text; ValueError says what is wrong."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{origin} is not valid YAML: {exc}") from None
    if doc is None:
        return empty_document()
    if not isinstance(doc, dict) or not isinstance(doc.get("schema"), int):
        raise ValueError(f"{origin} is not an autotune database (no integer 'schema' field)")
    machines = doc.setdefault("machines", {})
    if machines is None:
        doc["machines"] = {}
    elif not isinstance(machines, dict):
        raise ValueError(f"{origin}: 'machines' must be a mapping")
    return doc


def dump_document(doc: Document) -> str:
    # default_flow_style=None: collections of scalars (shapes, one candidate's numbers) on one line
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=120)


def _file_mode(path: Path) -> int:
    """The existing file's permission bits, else 0666 minus the process umask."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temp file beside ``path`` and rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates the file 0600; keep the mode an ordinary file would get (or had).
        os.chmod(tmp_name, _file_mode(path))
        with os.fdopen(fd, "w", encoding="utf-8") as tmp:
            tmp.write(text)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise


# ---------------------------------------------------------------------------------------------
# The database.


class Database:
    """The YAML file at ``path`` plus the in-memory map of this machine's usable entries."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path if path is not None else cache_path()
        self.machine = fingerprint()
        self.machine_id = fingerprint_id(self.machine)
        self.read_only = False
        self._entries: dict[str, Entry] | None = None

    @property
    def lock(self) -> FileLock:
        return FileLock(str(self.path) + ".lock", timeout=LOCK_TIMEOUT_S)

    # -- reading ------------------------------------------------------------------------------

    def read_document(self) -> Document:
        """The whole file (every machine). Corrupt files are moved aside; never raises on content."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return empty_document()
        except UnicodeDecodeError:
            return self._set_aside("is not UTF-8 text")
        except OSError as exc:  # e.g. permissions: leave the file alone, work in memory
            if not self.read_only:
                warnings.warn(
                    f"{self.path} cannot be read ({exc}); choices are kept in memory only",
                    CacheWarning,
                    stacklevel=3,
                )
            self.read_only = True
            return empty_document()
        try:
            doc = parse_document(text, str(self.path))
        except ValueError as exc:
            return self._set_aside(str(exc))
        if doc["schema"] > SCHEMA:
            if not self.read_only:
                warnings.warn(
                    f"{self.path} has schema {doc['schema']}, newer than this autotune's "
                    f"{SCHEMA}; it is left untouched and choices are tuned in memory only",
                    CacheWarning,
                    stacklevel=3,
                )
            self.read_only = True
            return empty_document()
        return doc

    def _set_aside(self, why: str) -> Document:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        try:
            os.replace(self.path, aside)
            where = f"moved aside to {aside.name}"
        except OSError as exc:
            where = f"could not be moved aside ({exc})"
        warnings.warn(f"{self.path}: {why}; {where}; starting empty", CacheWarning, stacklevel=4)
        return empty_document()

    def _usable(self, doc: Document) -> dict[str, Entry]:
        section = doc["machines"].get(self.machine_id)
        entries = section.get("entries") if isinstance(section, dict) else None
        usable: dict[str, Entry] = {}
        for key, entry in (entries or {}).items():
            if is_valid_entry(entry):
                usable[key] = entry
            else:
                warnings.warn(f"{self.path}: skipping malformed entry {key!r}", CacheWarning, stacklevel=4)
        return usable

    def entries(self) -> dict[str, Entry]:
        """This machine's usable entries (loaded from the file on first use)."""
        if self._entries is None:
            self._entries = self._usable(self.read_document())
        return self._entries

    def lookup(self, key: str) -> Entry | None:
        """The entry for a problem key, or None. A dict access after the first call."""
        return self.entries().get(key)

    def reload(self) -> None:
        """Forget the in-memory map; the next lookup re-reads the file."""
        self._entries = None

    # -- writing ------------------------------------------------------------------------------

    def store(self, new_entries: Mapping[str, Entry]) -> bool:
        """Merge entries for this machine into the file; False if it could not be written.

        The in-memory map is updated either way (and refreshed with what other processes wrote).
        """
        memory = self.entries()
        memory.update(new_entries)
        if self.read_only:
            return False
        incoming = {
            "machines": {self.machine_id: {"fingerprint": self.machine, "entries": dict(new_entries)}}
        }
        try:
            self.merge_into_file(incoming)
        except OSError as exc:
            warnings.warn(
                f"could not write {self.path} ({exc}); keeping choices in memory",
                CacheWarning,
                stacklevel=3,
            )
            return False
        return True

    def merge_into_file(self, other: Document) -> Document:
        """Lock, re-read, merge ``other`` in, write atomically; returns the merged document."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.lock:
            doc = self.read_document()
            if self.read_only:
                return doc
            merge_documents(doc, other)
            write_atomic(self.path, dump_document(doc))
        self._entries = self._usable(doc)
        return doc

    def clear(self, all_machines: bool = False) -> int:
        """Remove this machine's entries (or every machine's); returns how many were removed."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.lock:
            doc = self.read_document()
            if self.read_only:
                return 0
            if all_machines:
                removed = sum(len((s or {}).get("entries") or {}) for s in doc["machines"].values())
                doc["machines"] = {}
            else:
                section = doc["machines"].pop(self.machine_id, None) or {}
                removed = len(section.get("entries") or {})
            write_atomic(self.path, dump_document(doc))
        self._entries = {}
        return removed


def load_file(path: Path) -> Document:
    """Read another database file (for import/merge); ValueError if it is not one."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    doc = parse_document(text, str(path))
    if doc["schema"] > SCHEMA:
        raise ValueError(f"{path} has schema {doc['schema']}; this autotune reads up to {SCHEMA}")
    return doc


_database: Database | None = None


def database() -> Database:
    """The process-wide database for the current cache location (re-resolved if it changed)."""
    global _database
    path = cache_path()
    if _database is None or _database.path != path:
        _database = Database(path)
    return _database


def reset() -> None:
    """Drop the process-wide database object and fingerprint (after changing the cache dir or
    the thread settings: the next lookup re-reads the file under the current fingerprint)."""
    global _database
    _database = None
    fingerprint.cache_clear()


def iter_sections(doc: Document) -> Iterable[tuple[str, dict[str, Any], dict[str, Entry]]]:
    """(machine id, fingerprint, entries) for every section of a document."""
    for machine_id, section in doc["machines"].items():
        if isinstance(section, dict):
            yield machine_id, section.get("fingerprint") or {}, section.get("entries") or {}
