"""The database document: its schema, validation, merge and YAML text form (pure functions).

The layout: docs/architecture.md, "The database". Nothing here touches a file:
:mod:`autotune.cache` reads, locks and writes; the CLI's ``merge``/``import`` combine documents
with :func:`merge_documents`.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

SCHEMA = 1
# The libyaml-backed safe loader/dumper when PyYAML was built with it (same safety, ~10x faster).
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SafeDumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

Entry = dict[str, Any]
Document = dict[str, Any]


def empty_document() -> Document:
    return {"schema": SCHEMA, "machines": {}}


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (str, bool, numbers.Real)) or value is None


def entry_problem(key: Any, entry: Any) -> str | None:
    """Why ``entry`` (stored under ``key``) does not fit the schema, or None if it does.

    Checks types only — it is cheap enough for every entry of a large file. Whether the entry
    fits a call (kernel registered, parameters, tolerance, kernel set) is the dispatcher's check.
    """
    # Any op name, not only the ops registered in this process: a process without an extension
    # op (e.g. the `autotune` command) must keep that op's entries when it rewrites the file.
    if not isinstance(key, str) or not key.split(" ", 1)[0].isidentifier():
        return "the key is not a problem ('<op> <fields>', e.g. 'conv2d ...' or 'matmul ...')"
    if not isinstance(entry, dict):
        return f"an entry must be a mapping, got {type(entry).__name__}"
    problem = entry.get("problem")
    if not isinstance(problem, dict) or problem.get("op") != key.split(" ", 1)[0]:
        return "'problem' must be a mapping whose op matches the key"
    if not isinstance(entry.get("choice"), str) or not entry["choice"]:
        return "'choice' must be a kernel name"
    params = entry.get("params", {})
    if params is not None and not (
        isinstance(params, dict) and all(isinstance(k, str) and _is_scalar(v) for k, v in params.items())
    ):
        return "'params' must map names to numbers or strings"
    if "tol" in entry and not (_is_number(entry["tol"]) and entry["tol"] > 0):
        return "'tol' must be a positive number"
    if "kernels" in entry and not isinstance(entry["kernels"], str):
        return "'kernels' must be a digest string"
    candidates = entry.get("candidates", {})
    if candidates is not None and not isinstance(candidates, dict):
        return "'candidates' must map labels to mappings"
    for label, record in (candidates or {}).items():
        if wrong := _candidate_problem(record):
            return f"candidate {label!r}: {wrong}"
    return None


_CANDIDATE_NUMBERS = ("median_us", "min_us", "spread_us", "prepare_us", "rel_err", "rel_l2")


def _candidate_problem(record: Any) -> str | None:
    """Why one candidate record does not fit the schema (None if it does)."""
    if not isinstance(record, dict):
        return "must be a mapping"
    if not isinstance(record.get("kernel", ""), str):
        return "'kernel' must be a name"
    for name in _CANDIDATE_NUMBERS:
        if record.get(name) is not None and not _is_number(record[name]):
            return f"{name!r} must be a number"
    runs = record.get("runs")
    if runs is not None and (isinstance(runs, bool) or not isinstance(runs, int)):
        return "'runs' must be an integer"
    if not isinstance(record.get("params", {}) or {}, dict):
        return "'params' must be a mapping"
    if not isinstance(record.get("reason") or "", str):
        return "'reason' must be text"
    return None


def is_valid_entry(entry: Any) -> bool:
    """An entry the dispatcher can read: a problem record and a named choice (see
    :func:`entry_problem`, which also checks the key)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("problem"), dict):
        return False
    return entry_problem(f"{entry['problem'].get('op')} -", entry) is None


def validate_document(doc: Document) -> tuple[Document, dict[str, Any]]:
    """Split a parsed document (``doc`` is not modified) into ``(clean, rejected)``: its
    well-formed part, and a readable path (``machines/<id>/entries/<key>``) → what was found there
    for each malformed part. Sections hold an optional ``fingerprint`` mapping and an ``entries``
    mapping of problem key → entry (:func:`entry_problem`)."""
    clean: Document = {k: v for k, v in doc.items() if k != "machines"}
    clean["machines"] = {}
    rejected: dict[str, Any] = {}
    machines = doc.get("machines")
    if machines is None:
        return clean, rejected
    if not isinstance(machines, dict):
        return clean, {"machines": machines}
    for machine_id, section in machines.items():
        where = f"machines/{machine_id}"
        if not isinstance(machine_id, str) or not isinstance(section, dict):
            rejected[where] = section
            continue
        kept = {k: v for k, v in section.items() if k not in ("fingerprint", "entries")}
        fingerprint_ = section.get("fingerprint")
        if fingerprint_ is not None and not isinstance(fingerprint_, dict):
            rejected[f"{where}/fingerprint"] = fingerprint_
            fingerprint_ = None
        kept["fingerprint"] = fingerprint_ or {}
        kept["entries"] = _valid_entries(section.get("entries"), f"{where}/entries", rejected)
        clean["machines"][machine_id] = kept
    return clean, rejected


def _valid_entries(entries: Any, where: str, rejected: dict[str, Any]) -> dict[str, Entry]:
    if entries is None:
        return {}
    if not isinstance(entries, dict):
        rejected[where] = entries
        return {}
    valid = {}
    for key, entry in entries.items():
        if entry_problem(key, entry) is None:
            valid[key] = entry
        else:
            rejected[f"{where}/{key}"] = entry
    return valid


def newer(candidate: Entry, current: Entry) -> bool:
    return str(candidate.get("tuned_at", "")) >= str(current.get("tuned_at", ""))


def merge_documents(base: Document, other: Document) -> Document:
    """Merge ``other`` into ``base`` in place: newest ``tuned_at`` wins per (machine, key). Both
    are expected to be validated; malformed parts of ``other`` are skipped all the same."""
    other, _ = validate_document(other)
    for machine_id, section in other["machines"].items():
        target = base["machines"].setdefault(
            machine_id, {"fingerprint": section["fingerprint"], "entries": {}}
        )
        merge_entries(target.setdefault("entries", {}), section["entries"])
    return base


def merge_entries(base: dict[str, Entry], incoming: Mapping[str, Entry]) -> None:
    """Per key, keep the entry with the newest ``tuned_at``."""
    for key, entry in incoming.items():
        if key not in base or newer(entry, base[key]):
            base[key] = entry


def parse_document(text: str, origin: str) -> Document:
    """Parse a database text (safe loader only) and check its top level; ValueError says what is
    wrong. The parts below the top level are checked by :func:`validate_document`."""
    try:
        doc = yaml.load(text, Loader=_SafeLoader)  # a safe loader
    except yaml.YAMLError as exc:
        raise ValueError(f"{origin} is not valid YAML: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise ValueError(f"{origin} is nested too deeply to be a database") from None
    if doc is None:
        return empty_document()
    if not isinstance(doc, dict) or not isinstance(doc.get("schema"), int) or isinstance(doc["schema"], bool):
        raise ValueError(f"{origin} is not an autotune database (no integer 'schema' field)")
    return doc


def dump_document(doc: Document) -> str:
    # default_flow_style=None: collections of scalars (shapes, one candidate's numbers) on one line
    return yaml.dump(doc, Dumper=_SafeDumper, sort_keys=False, default_flow_style=None, width=120)


def iter_sections(doc: Document) -> Iterable[tuple[str, dict[str, Any], dict[str, Entry]]]:
    """(machine id, fingerprint, entries) for every section of a validated document."""
    for machine_id, section in doc["machines"].items():
        yield machine_id, section.get("fingerprint") or {}, section.get("entries") or {}
