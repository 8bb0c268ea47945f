"""The ``autotune`` command (also ``python -m autotune``): tune ahead of time, inspect, benchmark.

Verbs (the command-line contract; see README.md "The command")::

    autotune tune  (--preset NAME | --shapes FILE.yaml | --refresh) [--batch 1,8]
                   [--dtype float32,float64] [--shard i/n] [--budget SECONDS] [--force]
    autotune show  [--op conv2d|matmul] [--all-machines] [--format table|yaml|json]
    autotune explain PROBLEM [--tune]
    autotune export FILE | import FILE | merge FILE... [--out FILE] | clear [--yes]
    autotune bench [--suite NAME] [--out DIR]
    autotune study precision|svd-rank|lns|mnist [--out DIR] [--quick]

Exit status: 0 success; 2 usage error (bad arguments, bad problem syntax, unknown preset, invalid
shapes file, an ``--out`` that cannot be written); 1 failure, with a one-line message (also when
``tune`` could not save its results); 130 interrupted (Ctrl-C) — ``tune`` keeps every problem
finished before the interrupt, because each one is written to the database as soon as it is
tuned. No verb prints a traceback: a damaged database is reported in one line.

Only light modules are imported at start-up; numpy, Numba and PyTorch load with the verb that
needs them, so ``autotune --help`` answers at once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import yaml

import autotune
from autotune import cache, shapes, state, tables
from autotune.problem import DTYPES, Problem, ProblemSyntaxError, parse_problem

PROBLEM_SYNTAX = """\
problem syntax (fields left out take the defaults in brackets):
  conv2d x=NxCxHxW w=KxCxKHxKW [stride=1] [pad=0] [dilation=1] [groups=1] [float32|float64]
  matmul a=MxK b=KxN [float32|float64]
  stride/dilation: S or SH,SW; pad: P, PH,PW or TOP,BOTTOM,LEFT,RIGHT; with groups=G w is KxC/GxKHxKW
  e.g. conv2d x=1x64x56x56 w=64x64x3x3 stride=1 pad=1 float32"""


class UsageError(Exception):
    """The command line cannot be acted on (exit status 2)."""


class CommandError(Exception):
    """The command was understood but failed (exit status 1, one-line message)."""


# ---------------------------------------------------------------------------------------------
# Argument types.


def _batch_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return values


def _dtype_list(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",")]
    bad = [v for v in values if v not in DTYPES]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown dtype {bad[0]!r}; expected {', '.join(DTYPES)}")
    return values


def _shard(text: str) -> tuple[int, int]:
    try:
        return shapes.parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


# ---------------------------------------------------------------------------------------------
# tune


def _model_items(args: argparse.Namespace) -> tuple[str, list[shapes.Item], int]:
    """The conv2d/linear problems of ``--model`` on an ``--input`` of each ``--batch`` size."""
    import torch

    from autotune import models

    if not args.input:
        raise UsageError("--model needs --input NxCxHxW (the example input's shape)")
    try:
        model = models.load_factory(args.model)().eval()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    items: dict[str, shapes.Item] = {}
    for batch in args.batch or [args.input[0]]:
        for item in models.collect(model, torch.randn(batch, *args.input[1:])):
            seen = items.get(item.problem.key)
            items[item.problem.key] = item if seen is None else seen
    args.model_instance = model
    return f"model {args.model}", list(items.values()), len(items)


def _problem_list(args: argparse.Namespace) -> tuple[str, list[shapes.Item], int]:
    """(what was asked for, the items of this shard, the size of the whole list)."""
    if args.refresh:
        return _unfit_entries()
    if args.model:
        return _model_items(args)
    try:
        shape_list = shapes.load_preset(args.preset) if args.preset else shapes.load_shapes(args.shapes)
    except shapes.ShapesError as exc:
        raise UsageError(str(exc)) from None
    items = shapes.expand(shape_list, args.batch, args.dtype)
    origin = f"preset {args.preset}" if args.preset else str(args.shapes)
    if args.shard:
        index, count = args.shard
        return f"{origin}, shard {index}/{count}", shapes.shard(items, index, count), len(items)
    return origin, items, len(items)


def _print_model_report(args: argparse.Namespace, items: list[shapes.Item]) -> None:
    """Per layer: choice, time, vs torch; then the converted model against the plain one."""
    import torch

    from autotune import models

    batch = (args.batch or [args.input[0]])[0]
    example = torch.randn(batch, *args.input[1:])
    plain_us, converted_us = models.compare_forward(args.model_instance, example)
    print(models.report_text(models.ModelReport(models.layer_rows(items), plain_us, converted_us)))


def _unfit_entries() -> tuple[str, list[shapes.Item], int]:
    """This machine's entries that no longer fit their problem (stale kernel set, looser
    tolerance, unknown kernel or parameters), as items to re-tune (``tune --refresh``)."""
    from autotune import dispatch

    items, skipped = [], 0
    for key in state.database().entries():
        try:
            problem = parse_problem(key)
        except ProblemSyntaxError:
            continue  # not a key autotune writes (an edited index or file): nothing to re-tune
        if dispatch.fitting_entry(problem) is not None:
            continue
        if isinstance(problem.weight, str) and problem.op == "matmul":
            skipped += 1  # tuned on the caller's weight, which the database does not hold
            continue
        items.append(shapes.Item(problem))
    note = f" ({skipped} tuned on a caller's weight are left to the next call)" if skipped else ""
    return f"stale or unfit entries{note}", items, len(items)


def _tune_one(problem: Problem, args: argparse.Namespace) -> tuple[dict[str, Any] | None, str]:
    """Tune (or re-tune) one problem into the database: (entry, "") or (None, why it failed)."""
    from autotune import api

    try:
        (entry,) = api.tune([problem], force=args.force, budget_s=args.budget, prune=args.prune)
    except ValueError as exc:  # no candidate within the tolerance: recorded, the run goes on
        return None, str(exc)
    return entry, ""


def _tune_with_progress(
    todo: list[shapes.Item], args: argparse.Namespace, tuned: set[str], failures: dict[str, str]
) -> None:
    """Tune ``todo`` one by one, filling ``tuned``/``failures`` as it goes (so that a Ctrl-C
    leaves an accurate count), with a progress bar on a terminal and one line per problem."""
    from tqdm import tqdm

    from autotune import report

    bar = tqdm(total=len(todo), unit="problem", file=sys.stderr, disable=None, dynamic_ncols=True)
    try:
        for position, item in enumerate(todo, start=1):
            key = item.problem.key
            bar.set_description(report.short_key(key)[:48])
            t0 = time.perf_counter()
            entry, failure = _tune_one(item.problem, args)
            counter = f"[{position}/{len(todo)}]"
            if entry is None:
                failures[key] = failure
                bar.write(f"{counter} failed {report.short_key(key)}: {failure}", file=sys.stderr)
            else:
                tuned.add(key)
                summary = report.summarize(key, entry)
                bar.write(
                    f"{counter} {report.short_key(key)} -> {summary.choice} "
                    f"{report.fmt_time(summary.median_us)} (tuned in {time.perf_counter() - t0:.1f} s)",
                    file=sys.stderr,
                )
            bar.update()
    finally:
        bar.close()


def cmd_tune(args: argparse.Namespace) -> int:
    from autotune import dispatch

    origin, items, total = _problem_list(args)
    db = state.database()
    force = args.force or args.refresh
    todo = [item for item in items if force or dispatch.fitting_entry(item.problem) is None]
    cached = len(items) - len(todo)
    _note(
        f"{origin}: {len(items)}{f' of {total}' if args.shard else ''} problems, "
        f"{cached} already cached, {len(todo)} to tune "
        f"(budget {args.budget:g} s each) into {db.path}"
    )
    failures: dict[str, str] = {}
    tuned: set[str] = set()
    started = time.perf_counter()
    try:
        _tune_with_progress(todo, args, tuned, failures)
    except KeyboardInterrupt:
        _note(
            f"interrupted: {len(tuned)} of {len(todo)} problems tuned and saved in {db.path}; "
            f"run the same command again to tune the rest"
        )
        return 130
    print(_tune_table(items, tuned, failures, db))
    if args.model and not failures:
        _print_model_report(args, items)
    saved = db.flush()
    _note(
        f"{len(tuned)} tuned, {cached} cached, {len(failures)} failed in "
        f"{time.perf_counter() - started:.1f} s; database: {db.path}"
    )
    if tuned and not saved:
        why = "it is read-only or from a newer autotune" if db.read_only else "it could not be written"
        raise CommandError(
            f"{len(db.pending) or len(tuned)} tuned result(s) were not saved to {db.path}: {why}"
        )
    if failures:
        first = next(iter(failures.values()))
        raise CommandError(f"{len(failures)} problem(s) have no kernel within tolerance; first: {first}")
    return 0


def _tune_table(
    items: list[shapes.Item], tuned: set[str], failures: dict[str, str], db: cache.Database
) -> str:
    from autotune import report

    with_layers = any(item.layers for item in items)
    headers = (["layer"] if with_layers else []) + [*report.SUMMARY_HEADERS, "source"]
    rows = []
    for item in items:
        key = item.problem.key
        entry = db.lookup(key)
        if key in failures or entry is None:
            cells = [report.short_key(key), "(none)", "-", "-", "-", "-", "failed"]
        else:
            cells = [
                *report.summary_cells(report.summarize(key, entry)),
                "tuned" if key in tuned else "cached",
            ]
        rows.append(([report.layer_text(item.layers)] if with_layers else []) + cells)
    offset = 1 if with_layers else 0
    return tables.text(headers, rows, right=[offset + 2, offset + 3, offset + 5])


# ---------------------------------------------------------------------------------------------
# show


def _machine_text(machine_id: str, print_: dict[str, Any]) -> str:
    versions = print_.get("versions") or {}
    libs = ", ".join(f"{name} {version}" for name, version in versions.items())
    return f"{machine_id}: {print_.get('cpu', '?')}, {print_.get('cores', '?')} cores; {libs}"


def _shown_entries(
    args: argparse.Namespace, db: cache.Database
) -> list[tuple[str, dict[str, Any], str, dict[str, Any]]]:
    """(machine id, fingerprint, key, entry) of every entry to show, in file order."""
    if args.all_machines:
        sections = list(cache.iter_sections(db.read_document()))
    else:
        sections = [(db.machine_id, db.machine, db.full_entries())]
    found = []
    for machine_id, print_, entries in sections:
        for key, entry in entries.items():
            if cache.is_valid_entry(entry) and (args.op is None or key.split()[0] == args.op):
                found.append((machine_id, print_, key, entry))
    return found


def cmd_show(args: argparse.Namespace) -> int:
    from autotune import report

    db = state.database()
    found = _shown_entries(args, db)
    summaries = [
        (machine_id, print_, report.summarize(key, entry)) for machine_id, print_, key, entry in found
    ]
    if args.format in ("yaml", "json"):
        records = [{"machine": machine_id, **s.to_record()} for machine_id, _, s in summaries]
        if args.format == "json":
            print(json.dumps(records, indent=2))
        else:
            print(yaml.safe_dump(records, sort_keys=False, width=120), end="")
        return 0
    print(f"database: {db.path}")
    if not summaries:
        others = sum(len(e) for m, _, e in cache.iter_sections(db.read_document()) if m != db.machine_id)
        hint = (
            f"; {others} entries of other machines (--all-machines)"
            if others and not args.all_machines
            else ""
        )
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


# ---------------------------------------------------------------------------------------------
# explain


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


# ---------------------------------------------------------------------------------------------
# export / import / merge / clear


def _count(doc: cache.Document) -> tuple[int, int]:
    """(entries, machines) in a document."""
    sections = list(cache.iter_sections(doc))
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
    old = {(m, key): entry for m, _, entries in cache.iter_sections(before) for key, entry in entries.items()}
    added = replaced = 0
    for machine_id, _, entries in cache.iter_sections(after):
        for key, entry in entries.items():
            previous = old.get((machine_id, key))
            if previous is None:
                added += 1
            elif previous != entry:
                replaced += 1
    return added, replaced


def _merge_into_database(docs: Sequence[cache.Document], origin: str) -> None:
    combined = cache.empty_document()
    for doc in docs:
        cache.merge_documents(combined, doc)
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
    usable = sum(len(e) for m, _, e in cache.iter_sections(combined) if m == db.machine_id)
    _note(
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
    _note(f"exported {entries} entries of {machines} machine(s) from {db.path} to {args.file}")
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
    combined = _load(str(out)) if out.exists() else cache.empty_document()
    for doc in docs:
        cache.merge_documents(combined, doc)
    _write(out, combined)
    entries, machines = _count(combined)
    _note(f"merged {len(docs)} file(s) into {out}: {entries} entries of {machines} machine(s)")
    return 0


def cmd_compact(args: argparse.Namespace) -> int:
    db = state.database()
    journal = db.sidecar(".journal")
    if not journal.exists():
        _note(f"nothing to compact: {db.path} has no journal")
        return 0
    try:
        db.compact()
    except OSError as exc:
        raise CommandError(f"cannot write {db.path}: {exc.strerror or exc}") from None
    _note(f"folded {journal.name} into {db.path}")
    return 0


def cmd_clear(args: argparse.Namespace) -> int:
    db = state.database()
    doc = db.read_document()
    count = sum(
        len(entries)
        for machine_id, _, entries in cache.iter_sections(doc)
        if args.all_machines or machine_id == db.machine_id
    )
    scope = "every machine" if args.all_machines else "this machine"
    if count == 0:
        _note(f"nothing to clear for {scope} in {db.path}")
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError(f"refusing to remove {count} entries without --yes (stdin is not a terminal)")
        answer = input(f"remove {count} tuned entries of {scope} from {db.path}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            _note("nothing removed")
            return 1
    removed = db.clear(all_machines=args.all_machines)
    from autotune import api

    api.reset()  # kernels bound from the removed entries must not outlive them in this process
    _note(f"removed {removed} entries of {scope} from {db.path}")
    return 0


# ---------------------------------------------------------------------------------------------
# bench and study


def _shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        dims = ()
    if not dims or min(dims) < 1:
        raise argparse.ArgumentTypeError(
            f"expected positive sizes joined by x (e.g. 1x3x224x224), got {text!r}"
        )
    return dims


def _model_spec(text: str) -> str:
    path, sep, name = text.rpartition(":")
    if not sep or not name.isidentifier() or not Path(path).is_file():
        raise argparse.ArgumentTypeError(f"expected FILE.py:FACTORY with an existing file, got {text!r}")
    return text


def cmd_versus(args: argparse.Namespace, command: str) -> int:
    from autotune import versus

    if args.model:
        if not args.input:
            raise UsageError("--model needs --input NxCxHxW")
        name, items = Path(args.model.rpartition(":")[0]).stem, []
    else:
        try:
            shape_list = (
                shapes.load_shapes(Path(args.shapes)) if args.shapes else shapes.load_preset(args.suite)
            )
        except shapes.ShapesError as exc:
            raise UsageError(str(exc)) from None
        name, items = shape_list.name, shapes.expand(shape_list, args.batch, args.dtype)
        if any(item.problem.op != "conv2d" for item in items):
            raise UsageError("--vs-torch compares conv2d problems (or a --model)")
    result = versus.run(
        items=items,
        model=args.model,
        input_shape=args.input or (),
        import_first=args.import_first,
        rounds=args.rounds,
        suite=name,
        command=command,
    )
    paths = versus.write(result, Path(args.out) / f"versus-{name}-{args.import_first}-first")
    print(versus.summary_text(result))
    _note("wrote " + ", ".join(str(p) for p in paths))
    return 0


def check_out_dir(path: Path, option: str = "--out") -> None:
    """UsageError unless ``path`` is, or can be created as, a writable directory — checked by
    creating it and a probe file in it before any work, so a long run never ends in a write error
    (permission bits alone say nothing for root, or on a read-only file system)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot write there ({exc.strerror or exc})") from None


def cmd_bench(args: argparse.Namespace) -> int:
    from autotune import bench

    check_out_dir(Path(args.out))
    command = "autotune " + " ".join(args.argv)
    if args.vs_torch or args.model:
        return cmd_versus(args, command)
    try:
        shape_list = shapes.load_shapes(Path(args.shapes)) if args.shapes else shapes.load_preset(args.suite)
    except shapes.ShapesError as exc:
        raise UsageError(str(exc)) from None
    result = bench.run(
        shape_list,
        batches=args.batch,
        dtypes=args.dtype,
        cap_s=args.cap,
        budget_s=args.budget,
        command=command,
    )
    paths = bench.write(result, Path(args.out) / f"bench-{shape_list.name}")
    print(bench.summary_text(result))
    _note("wrote " + ", ".join(str(p) for p in paths))
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    import studies

    def unavailable(exc: ImportError) -> CommandError:
        message = f"study {args.name!r} is not available in this installation: {exc}"
        if (exc.name or "").split(".")[0] in studies.EXTRAS:
            message += "; install the studies' dependencies with: pip install 'autotune[studies]'"
        return CommandError(message)

    try:
        module = studies.load(args.name)
    except KeyError as exc:
        raise UsageError(str(exc.args[0])) from None
    except ImportError as exc:
        raise unavailable(exc) from None
    doc = (module.__doc__ or "").strip().split("\n\n")[0]
    parser = argparse.ArgumentParser(prog=f"autotune study {args.name}", description=doc)
    parser.add_argument("--out", type=Path, default=Path("reports"), help="output root (default: reports/)")
    parser.add_argument("--quick", action="store_true", help="a small, fast run (as in the tests)")
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = getattr(module, "add_arguments", None)
    if add_arguments is not None:
        add_arguments(parser)
    options = vars(parser.parse_args(args.study_args))
    out, quick = options.pop("out"), options.pop("quick")
    check_out_dir(out)
    try:
        written = module.run(out, quick=quick, **options)
    except ImportError as exc:  # a dependency imported on first use (scikit-learn's digits)
        if (exc.name or "").split(".")[0] not in studies.EXTRAS:
            raise
        raise unavailable(exc) from None
    except (FileNotFoundError, ValueError) as exc:  # e.g. a --data directory without MNIST files
        raise CommandError(f"study {args.name}: {exc}") from None
    _note(f"study {args.name}: wrote {written}")
    return 0


# ---------------------------------------------------------------------------------------------
# Parser and entry point.


def _note(message: str) -> None:
    """Progress and status lines go to stderr, so stdout carries only tables and data."""
    print(message, file=sys.stderr, flush=True)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keep the hand-wrapped descriptions and examples; show defaults of options that have one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" not in text and action.default not in (None, False, argparse.SUPPRESS):
            text += " (default: %(default)s)"
        return text


def _verb(
    subparsers: Any, name: str, handler: Callable[[argparse.Namespace], int], summary: str, details: str = ""
) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        name,
        help=summary,
        description=summary + ("\n\n" + details if details else ""),
        formatter_class=_Formatter,
    )
    parser.set_defaults(handler=handler, parser=parser)
    return parser


def _add_model_options(model_group: Any, input_group: Any, model_help: str) -> None:
    """``--model FILE.py:FACTORY`` (into ``model_group``) and its ``--input NxCxHxW``."""
    model_group.add_argument(
        "--model", type=_model_spec, metavar="FILE.py:FACTORY", help=f"{model_help} (needs --input)"
    )
    input_group.add_argument(
        "--input", type=_shape, metavar="1x3x224x224", help="the model's example input shape"
    )


def _add_tune(subparsers: Any) -> None:
    from autotune.shapes import preset_names

    parser = _verb(
        subparsers,
        "tune",
        cmd_tune,
        "Tune a list of problems ahead of time into the database.",
        f"Problems already in the database are skipped unless --force. Each problem is saved as soon\n"
        f"as it is tuned, so Ctrl-C keeps everything finished.\n"
        f"Presets: {', '.join(preset_names())}.\n"
        f"Shapes file schema: examples/shapes.yaml (and autotune/shapes.py).\n\n"
        f"examples:\n  autotune tune --preset resnet18 --batch 1\n"
        f"  autotune tune --shapes examples/shapes.yaml --dtype float32,float64\n"
        f"  autotune tune --preset vgg16 --shard 1/2     # on machine 1; --shard 2/2 on machine 2\n"
        f"  autotune tune --model examples/resnet.py:resnet_tiny --input 1x3x64x64 --batch 1,8\n\n"
        f"{PROBLEM_SYNTAX}",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--refresh",
        action="store_true",
        help="re-tune this machine's entries that no longer fit (kernel set changed, tuned under a "
        "looser tolerance, unknown kernel or parameters)",
    )
    source.add_argument(
        "--preset", metavar="NAME", help=f"a shipped problem list: {', '.join(preset_names())}"
    )
    source.add_argument("--shapes", metavar="FILE.yaml", type=Path, help="a problem list file")
    _add_model_options(
        source, parser, "a model: its conv2d/linear layers as autotune.nn.convert dispatches them"
    )
    parser.add_argument(
        "--prune",
        action="store_true",
        help="skip candidates that this machine's earlier measurements put more than 3x behind the best "
        "(faster; see BENCHMARKS.md §12 for what it costs)",
    )
    parser.add_argument(
        "--batch",
        type=_batch_list,
        metavar="1,8",
        help="batch sizes (N of x, rows of a) replacing the list's",
    )
    parser.add_argument(
        "--dtype", type=_dtype_list, metavar="float32,float64", help="dtypes replacing the list's"
    )
    parser.add_argument(
        "--shard", type=_shard, metavar="i/n", help="tune only the i-th of n round-robin slices (1 <= i <= n)"
    )
    _add_budget(parser)
    parser.add_argument("--force", action="store_true", help="re-tune problems that are already cached")


def _add_budget(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--budget",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="tuning time budget per problem (default: 5); past it the remaining candidates are timed once",
    )


def _add_inspection(subparsers: Any) -> None:
    show = _verb(
        subparsers,
        "show",
        cmd_show,
        "List the cached choices.",
        "time = median of the chosen kernel; vs torch / vs runner-up = their median over the choice's\n"
        "(above 1: the choice is faster); the runner-up is the fastest accepted different kernel;\n"
        "rel_err = max|y - ref| / max|ref| against the float64 reference.",
    )
    show.add_argument("--op", choices=["conv2d", "matmul"], help="only this op")
    show.add_argument("--all-machines", action="store_true", help="include entries tuned on other machines")
    show.add_argument("--format", choices=["table", "yaml", "json"], default="table", help="output format")

    explain = _verb(
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
    _add_budget(explain)


def _add_database(subparsers: Any) -> None:
    export = _verb(
        subparsers, "export", cmd_export, "Write the whole database (every machine) to FILE ('-': stdout)."
    )
    export.add_argument("file", metavar="FILE")
    imported = _verb(
        subparsers,
        "import",
        cmd_import,
        "Merge a database file into this one.",
        "Per (machine, problem) the entry with the newest tuned_at wins; nothing else is lost.",
    )
    imported.add_argument("file", metavar="FILE")
    merge = _verb(
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
    _verb(
        subparsers,
        "compact",
        cmd_compact,
        "Fold the journal of a large database into the YAML file.",
        "A database above 1 MB takes new entries through an append-only journal beside it\n"
        "(autotune.yaml.journal) instead of rewriting the whole file per entry; import, merge and\n"
        "clear fold it in as well.",
    )
    clear = _verb(subparsers, "clear", cmd_clear, "Remove this machine's tuned entries from the database.")
    clear.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    clear.add_argument("--all-machines", action="store_true", help="remove the entries of every machine")


def _add_reports(subparsers: Any) -> None:
    from autotune.shapes import preset_names
    from studies import STUDIES

    bench = _verb(
        subparsers,
        "bench",
        cmd_bench,
        "Time every kernel side by side, with torch, the dispatcher and this machine's peak.",
        "Writes bench.json, bench.md and bench.png into OUT/bench-SUITE/. GFLOP/s counts direct-\n"
        "equivalent FLOPs; the peak is a large float32 GEMM through BLAS measured in the same run.\n"
        "The dispatcher's pick comes from the database (problems not yet tuned are tuned first).",
    )
    suite = bench.add_mutually_exclusive_group()
    suite.add_argument("--suite", choices=preset_names(), default="seed", help="problem list (a preset)")
    suite.add_argument("--shapes", metavar="FILE.yaml", help="a problem list file (as for tune)")
    bench.add_argument("--out", default="reports", metavar="DIR", help="output root")
    bench.add_argument("--batch", type=_batch_list, metavar="1,8", help="batch sizes replacing the suite's")
    bench.add_argument(
        "--dtype", type=_dtype_list, metavar="float32,float64", help="dtypes replacing the suite's"
    )
    bench.add_argument(
        "--cap", type=_seconds, default=1.0, metavar="SECONDS", help="timing cap per candidate"
    )
    _add_budget(bench)
    versus = bench.add_argument_group(
        "side by side with plain PyTorch, each in a process of its own (alternating rounds)"
    )
    versus.add_argument(
        "--vs-torch", action="store_true", help="compare autotune.conv2d with F.conv2d in another process"
    )
    _add_model_options(versus, versus, "compare a whole model (implies --vs-torch)")
    versus.add_argument(
        "--import-first",
        choices=["torch", "autotune"],
        default="torch",
        help="import order on autotune's side",
    )
    versus.add_argument("--rounds", type=int, default=5, help="alternating timing rounds")

    study = _verb(
        subparsers,
        "study",
        cmd_study,
        "Run a study: CSV + PNG plots + summary.md into OUT/NAME.",
        "common options: --out DIR (default reports/), --quick (small and fast).\n"
        "study-specific options: autotune study NAME --help",
    )
    study.usage = "autotune study NAME [--out DIR] [--quick] [study options]"
    study.add_argument("name", choices=list(STUDIES), metavar="NAME", help=f"one of: {', '.join(STUDIES)}")
    study.add_argument("study_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    """The ``autotune`` argument parser with one sub-command per verb."""
    parser = argparse.ArgumentParser(
        prog="autotune",
        formatter_class=_Formatter,
        description=(
            "cuDNN-style algorithm find for the CPU: time every conv2d/matmul kernel per problem,\n"
            "reject inaccurate ones, remember the fastest in a YAML database.\n\n"
            f"database: $AUTOTUNE_CACHE_DIR/{cache.FILENAME} if set, else cache/ of a writable checkout,\n"
            "else the user cache directory."
        ),
        epilog="examples:\n  autotune tune --preset seed && autotune show\n"
        "  autotune explain conv2d x=1x1x49x49 w=1x1x3x3\n"
        "  autotune bench --suite resnet18\n\n"
        "'autotune VERB --help' describes each verb.",
    )
    parser.add_argument("--version", action="version", version=f"autotune {autotune.__version__}")
    subparsers = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    _add_tune(subparsers)
    _add_inspection(subparsers)
    _add_database(subparsers)
    _add_reports(subparsers)
    return parser


@contextlib.contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Warnings (e.g. a corrupt database moved aside) as one ``autotune: warning:`` line."""

    def show(
        message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None
    ) -> None:
        print(f"autotune: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def _fail(parser: argparse.ArgumentParser, message: str) -> NoReturn:
    parser.error(message)  # prints the verb's usage line; exits 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``autotune`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        args.argv = argv
        if getattr(args, "budget", False) is None:
            from autotune.tuner import DEFAULT_BUDGET_S

            args.budget = DEFAULT_BUDGET_S
        with _one_line_warnings():
            try:
                return int(args.handler(args) or 0)
            except UsageError as exc:
                _fail(args.parser, str(exc))
            except CommandError as exc:
                print(f"autotune {args.verb}: error: {exc}", file=sys.stderr)
                return 1
            except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
                # Last line of defence (e.g. a database file damaged in a way the schema check
                # did not foresee): one line, never a traceback.
                print(f"autotune {args.verb}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
                return 1
    except SystemExit as exit_:  # argparse: --help/--version (0) and usage errors (2)
        return exit_.code if isinstance(exit_.code, int) else 1
    except KeyboardInterrupt:
        print("autotune: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout closed early, e.g. `autotune show | head`
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
