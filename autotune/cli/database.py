"""The verbs that read and edit the database: ``show``, ``explain``, ``export``, ``import``,
``merge``, ``compact``, ``clear``."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from autotune import cache, schema, state, tables
from autotune.cli._common import PROBLEM_SYNTAX, CommandError, UsageError, add_budget, note, verb
from autotune.problem import Problem, ProblemSyntaxError, parse_problem


def _machine_text(machine_id: str, print_: dict[str, Any]) -> str:
    versions = print_.get("versions") or {}
    libs = ", ".join(f"{name} {version}" for name, version in versions.items())
    return f"{machine_id}: {print_.get('cpu', '?')}, {print_.get('cores', '?')} cores; {libs}"


def _shown_entries(args: argparse.Namespace, db: cache.Database) -> list[tuple[str, dict, str, cache.Entry]]:
    """(machine id, fingerprint, key, entry) of every entry to show, in file order."""
    if args.all_machines:
        sections = list(schema.iter_sections(db.read_document()))
    else:
        sections = [(db.machine_id, db.machine, db.full_entries())]
    found = []
    for machine_id, print_, entries in sections:
        for key, entry in entries.items():
            if schema.is_valid_entry(entry) and (args.op is None or key.split()[0] == args.op):
                found.append((machine_id, print_, key, entry))
    return found


def cmd_show(args: argparse.Namespace) -> int:
    from autotune import report

    db = state.database()
    summaries = [(m, fp, report.summarize(key, entry)) for m, fp, key, entry in _shown_entries(args, db)]
    if args.format in ("yaml", "json"):
        records = [{"machine": machine_id, **s.to_record()} for machine_id, _, s in summaries]
        if args.format == "json":
            print(json.dumps(records, indent=2))
        else:
            print(yaml.safe_dump(records, sort_keys=False, width=120), end="")
        return 0
    print(f"database: {db.path}")
    if not summaries:
        others = sum(len(e) for m, _, e in schema.iter_sections(db.read_document()) if m != db.machine_id)
        hint = ""
        if others and not args.all_machines:
            hint = f"; {others} entries of other machines (--all-machines)"
        print(f"no tuned problems{'' if args.op is None else ' for ' + args.op} on this machine{hint}")
        print("tune some with e.g.: autotune tune --preset seed")
        return 0
    machines = {machine_id: print_ for machine_id, print_, _ in summaries}
    for machine_id, print_ in machines.items():
        here = " (this machine)" if machine_id == db.machine_id else ""
        print(f"machine {_machine_text(machine_id, print_)}{here}")
    headers = (["machine"] if args.all_machines else []) + report.SUMMARY_HEADERS
    rows = [
        ([machine_id] if args.all_machines else []) + report.summary_cells(s)
        for machine_id, _, s in summaries
    ]
    offset = 1 if args.all_machines else 0
    print(tables.text(headers, rows, right=[offset + 2, offset + 3, offset + 5]))
    print(f"{len(rows)} problem{'s' if len(rows) != 1 else ''}; details of one: autotune explain <problem>")
    return 0


def _parse_spec(words: Sequence[str]) -> Problem:
    spec = " ".join(words)
    try:
        return parse_problem(spec)
    except ProblemSyntaxError as exc:
        raise UsageError(f"bad problem {spec!r}: {exc}") from None


def cmd_explain(args: argparse.Namespace) -> int:
    from autotune import api, report

    problem = _parse_spec(args.problem)
    db = state.database()
    entry = db.lookup(problem.key)
    if entry is None:
        if not args.tune:
            from autotune import heuristics
            from kernels import registry

            name, params, source = heuristics.choose(problem, db.entries())
            pick = registry.label(name, params)
            print(f"{problem.key}\n  not tuned; heuristic mode would pick {pick} {source}")
            raise CommandError(
                f"{problem.key} is not tuned on this machine ({db.path}); add --tune to tune it now"
            )
        try:
            (entry,) = api.tune([problem], budget_s=args.budget)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
    if "candidates" not in entry:  # a large database's index holds only the dispatch fields
        entry = db.full_entries().get(problem.key, entry)
    print(report.explain_text(problem, entry, db.machine))
    return 0


def _count(doc: cache.Document) -> tuple[int, int]:
    """(entries, machines) in a document."""
    sections = list(schema.iter_sections(doc))
    return sum(len(entries) for _, _, entries in sections), len(sections)


def _load(path: str) -> cache.Document:
    try:
        return cache.load_file(Path(path))
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def _write(path: Path, doc: cache.Document) -> None:
    """Write an exported/merged database file atomically."""
    try:
        cache.write_atomic(path, cache.dump_document(doc))
    except OSError as exc:
        raise CommandError(f"cannot write {path}: {exc.strerror or exc}") from None


def _changes(before: cache.Document, after: cache.Document) -> tuple[int, int]:
    """(added, replaced) entries between two versions of a document."""
    old, new = _by_key(before), _by_key(after)
    return sum(k not in old for k in new), sum(k in old and old[k] != entry for k, entry in new.items())


def _by_key(doc: cache.Document) -> dict[tuple[str, str], cache.Entry]:
    """(machine id, problem key) → entry, for every entry of a document."""
    return {(m, key): entry for m, _, entries in schema.iter_sections(doc) for key, entry in entries.items()}


def _merge_into_database(docs: Sequence[cache.Document], origin: str) -> None:
    combined = functools.reduce(cache.merge_documents, docs, cache.empty_document())
    db = state.database()
    before = db.read_document()
    try:
        after = db.merge_into_file(combined)
    except OSError as exc:
        raise CommandError(f"cannot write {db.path}: {exc.strerror or exc}") from None
    if db.read_only:
        raise CommandError(f"{db.path} was written by a newer autotune; nothing was imported")
    added, replaced = _changes(before, after)
    incoming, machines = _count(combined)
    usable = sum(len(e) for m, _, e in schema.iter_sections(combined) if m == db.machine_id)
    note(
        f"{origin}: {incoming} entries of {machines} machine(s), {usable} for this machine; "
        f"{added} added, {replaced} updated, {incoming - added - replaced} already up to date (or older); "
        f"database: {db.path}"
    )


def cmd_export(args: argparse.Namespace) -> int:
    db = state.database()
    doc = db.read_document()
    entries, machines = _count(doc)
    if args.file == "-":
        sys.stdout.write(cache.dump_document(doc))
    else:
        _write(Path(args.file), doc)
    note(f"exported {entries} entries of {machines} machine(s) from {db.path} to {args.file}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    _merge_into_database([_load(args.file)], f"imported {args.file}")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    docs = [_load(path) for path in args.files]
    if args.out is None:
        _merge_into_database(docs, f"merged {len(docs)} file(s)")
        return 0
    out = Path(args.out)
    base = _load(str(out)) if out.exists() else cache.empty_document()
    combined = functools.reduce(cache.merge_documents, docs, base)
    _write(out, combined)
    entries, machines = _count(combined)
    note(f"merged {len(docs)} file(s) into {out}: {entries} entries of {machines} machine(s)")
    return 0


def cmd_compact(args: argparse.Namespace) -> int:
    db = state.database()
    journal = db.sidecar(".journal")
    if not journal.exists():
        note(f"nothing to compact: {db.path} has no journal")
        return 0
    try:
        db.compact()
    except OSError as exc:
        raise CommandError(f"cannot write {db.path}: {exc.strerror or exc}") from None
    note(f"folded {journal.name} into {db.path}")
    return 0


def cmd_clear(args: argparse.Namespace) -> int:
    db = state.database()
    doc = db.read_document()
    count = sum(len(e) for m, _, e in schema.iter_sections(doc) if args.all_machines or m == db.machine_id)
    scope = "every machine" if args.all_machines else "this machine"
    if count == 0:
        note(f"nothing to clear for {scope} in {db.path}")
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError(f"refusing to remove {count} entries without --yes (stdin is not a terminal)")
        answer = input(f"remove {count} tuned entries of {scope} from {db.path}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            note("nothing removed")
            return 1
    removed = db.clear(all_machines=args.all_machines)
    from autotune import api

    api.reset()  # kernels bound from the removed entries must not outlive them in this process
    note(f"removed {removed} entries of {scope} from {db.path}")
    return 0


def add_inspection_verbs(subparsers: Any) -> None:
    show = verb(
        subparsers,
        "show",
        cmd_show,
        "List the cached choices.",
        "time = median of the chosen kernel; vs torch / vs runner-up = their median over the choice's\n"
        "(above 1: the choice is faster); the runner-up is the fastest accepted different kernel;\n"
        "rel_err = max|y - ref| / max|ref| against the float64 reference.",
    )
    show.add_argument("--op", metavar="OP", help="only this op (conv2d, matmul, or an op an extension adds)")
    show.add_argument("--all-machines", action="store_true", help="include entries tuned on other machines")
    show.add_argument("--format", choices=["table", "yaml", "json"], default="table", help="output format")

    explain = verb(
        subparsers,
        "explain",
        cmd_explain,
        "Show every candidate of one problem and why the choice won.",
        "The problem may be one quoted argument or several words.\n\n"
        "example:\n  autotune explain conv2d x=1x64x56x56 w=64x64x3x3 stride=1 pad=1 float32\n\n"
        f"{PROBLEM_SYNTAX}",
    )
    explain.add_argument("problem", nargs="+", metavar="PROBLEM", help="the problem spec")
    explain.add_argument("--tune", action="store_true", help="tune the problem now if it is not cached")
    add_budget(explain)


def add_database_verbs(subparsers: Any) -> None:
    export = verb(
        subparsers, "export", cmd_export, "Write the whole database (every machine) to FILE ('-': stdout)."
    )
    export.add_argument("file", metavar="FILE")
    imported = verb(
        subparsers,
        "import",
        cmd_import,
        "Merge a database file into this one.",
        "Per (machine, problem) the entry with the newest tuned_at wins; nothing else is lost.",
    )
    imported.add_argument("file", metavar="FILE")
    merge = verb(
        subparsers,
        "merge",
        cmd_merge,
        "Combine database files (shards, machines) into this database or into --out.",
        "Per (machine, problem) the entry with the newest tuned_at wins; nothing else is lost.\n\n"
        "example (two identical machines):\n"
        "  A$ AUTOTUNE_CACHE_DIR=a autotune tune --preset vgg16 --shard 1/2\n"
        "  B$ AUTOTUNE_CACHE_DIR=b autotune tune --preset vgg16 --shard 2/2\n"
        "  autotune merge a/autotune.yaml b/autotune.yaml",
    )
    merge.add_argument("files", nargs="+", metavar="FILE")
    merge.add_argument(
        "--out", metavar="FILE", help="write the combination here (merged with it if it exists)"
    )
    verb(
        subparsers,
        "compact",
        cmd_compact,
        "Fold the journal of a large database into the YAML file.",
        "A database above 1 MB takes new entries through an append-only journal beside it\n"
        "(autotune.yaml.journal) instead of rewriting the whole file per entry; import, merge and\n"
        "clear fold it in as well.",
    )
    clear = verb(subparsers, "clear", cmd_clear, "Remove this machine's tuned entries from the database.")
    clear.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    clear.add_argument("--all-machines", action="store_true", help="remove the entries of every machine")
