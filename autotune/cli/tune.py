"""``autotune tune``: a problem list (preset, shapes file, model, or the entries that no longer fit)
tuned ahead of time into the database, with a progress bar and a summary table."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from autotune import cache, shapes, state, tables
from autotune.cli._common import (
    PROBLEM_SYNTAX,
    CommandError,
    UsageError,
    add_budget,
    add_model_options,
    batch_list,
    dtype_list,
    note,
    shard_arg,
    verb,
)
from autotune.problem import ProblemSyntaxError, parse_problem


def _model_items(args: argparse.Namespace) -> tuple[str, list[shapes.Item], int]:
    """The conv2d/linear problems of ``--model`` on an ``--input`` of each ``--batch`` size."""
    from autotune import models

    if not args.input:
        raise UsageError("--model needs --input NxCxHxW (the example input's shape)")
    try:
        args.model_instance, items = models.model_items(args.model, args.input, args.batch)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return f"model {args.model}", items, len(items)


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


def _tune_with_progress(
    todo: list[shapes.Item], args: argparse.Namespace, tuned: set[str], failures: dict[str, str]
) -> None:
    """Tune (or re-tune) ``todo`` into the database one by one, filling ``tuned``/``failures`` as
    it goes (so that a Ctrl-C leaves an accurate count), with a progress bar on a terminal and one
    line per problem."""
    from tqdm import tqdm

    from autotune import api, report

    bar = tqdm(total=len(todo), unit="problem", file=sys.stderr, disable=None, dynamic_ncols=True)
    try:
        for position, item in enumerate(todo, start=1):
            key, short, t0 = item.problem.key, report.short_key(item.problem.key), time.perf_counter()
            bar.set_description(short[:48])
            try:
                (entry,) = api.tune([item.problem], force=args.force, budget_s=args.budget, prune=args.prune)
            except ValueError as exc:  # no candidate within the tolerance: recorded, the run goes on
                failures[key] = str(exc)
                line = f"failed {short}: {exc}"
            else:
                tuned.add(key)
                done, took = report.summarize(key, entry), time.perf_counter() - t0
                line = f"{short} -> {done.choice} {report.fmt_time(done.median_us)} (tuned in {took:.1f} s)"
            bar.write(f"[{position}/{len(todo)}] {line}", file=sys.stderr)
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
    note(
        f"{origin}: {len(items)}{f' of {total}' if args.shard else ''} problems, "
        f"{cached} already cached, {len(todo)} to tune (budget {args.budget:g} s each) into {db.path}"
    )
    failures: dict[str, str] = {}
    tuned: set[str] = set()
    started = time.perf_counter()
    try:
        _tune_with_progress(todo, args, tuned, failures)
    except KeyboardInterrupt:
        note(
            f"interrupted: {len(tuned)} of {len(todo)} problems tuned and saved in {db.path}; "
            f"run the same command again to tune the rest"
        )
        return 130
    print(_tune_table(items, tuned, failures, db))
    if args.model and not failures:
        from autotune import models

        print(models.cli_report(args.model_instance, args.input, args.batch, items))
    saved = db.flush()
    note(
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


def add_tune_verb(subparsers: Any) -> None:
    from autotune.shapes import preset_names

    parser = verb(
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
    add_model_options(
        source, parser, "a model: its conv2d/linear layers as autotune.nn.convert dispatches them"
    )
    parser.add_argument(
        "--prune",
        action="store_true",
        help="skip candidates that this machine's earlier measurements put more than 2x behind what "
        "they must beat, time the others briefly and only the leaders in full (under half the time; "
        "BENCHMARKS.md §19: what it costs)",
    )
    parser.add_argument(
        "--batch", type=batch_list, metavar="1,8", help="batch sizes (N of x, rows of a) replacing the list's"
    )
    parser.add_argument(
        "--dtype", type=dtype_list, metavar="float32,float64", help="dtypes replacing the list's"
    )
    parser.add_argument(
        "--shard",
        type=shard_arg,
        metavar="i/n",
        help="tune only the i-th of n round-robin slices (1 <= i <= n)",
    )
    add_budget(parser)
    parser.add_argument("--force", action="store_true", help="re-tune problems that are already cached")
