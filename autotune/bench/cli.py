"""``autotune bench``: the side-by-side kernel table, or (``--vs-torch``, ``--model``) plain PyTorch
in a process of its own against the dispatcher."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from autotune import shapes
from autotune.cli._common import (
    UsageError,
    add_budget,
    add_model_options,
    batch_list,
    check_out_dir,
    dtype_list,
    note,
    seconds,
    verb,
)


def cmd_versus(args: argparse.Namespace, command: str) -> int:
    from autotune.bench import versus

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
        control=args.control,
        warm_heap=args.warm_heap,
    )
    first = f"{args.import_first}-first"
    sides = {"": first, "plain": "control"}.get(args.control) or f"control-{args.control}-{first}"
    sides += "-warm-heap" if args.warm_heap else ""
    paths = versus.write(result, Path(args.out) / f"versus-{name}-{sides}")
    print(versus.summary_text(result))
    note("wrote " + ", ".join(str(p) for p in paths))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from autotune.bench import suite as bench

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
    note("wrote " + ", ".join(str(p) for p in paths))
    return 0


def add_bench_verb(subparsers: Any) -> None:
    """Register ``autotune bench``."""
    from autotune.shapes import preset_names

    bench = verb(
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
    bench.add_argument("--batch", type=batch_list, metavar="1,8", help="batch sizes replacing the suite's")
    bench.add_argument(
        "--dtype", type=dtype_list, metavar="float32,float64", help="dtypes replacing the suite's"
    )
    bench.add_argument("--cap", type=seconds, default=1.0, metavar="SECONDS", help="timing cap per candidate")
    add_budget(bench)
    versus = bench.add_argument_group(
        "side by side with plain PyTorch, each in a process of its own (alternating rounds)"
    )
    versus.add_argument(
        "--vs-torch", action="store_true", help="compare autotune.conv2d with F.conv2d in another process"
    )
    add_model_options(versus, versus, "compare a whole model (implies --vs-torch)")
    versus.add_argument(
        "--import-first",
        choices=["torch", "autotune"],
        default="torch",
        help="import order on autotune's side",
    )
    versus.add_argument("--rounds", type=int, default=5, help="alternating timing rounds")
    versus.add_argument(
        "--warm-heap",
        action="store_true",
        help="both processes first allocate and free 30 MiB, which raises glibc's mmap threshold as "
        "a process that has run its model once has: large outputs then come from the heap, not "
        "fresh from the OS (page faults) on every call",
    )
    versus.add_argument(
        "--control",
        nargs="?",
        const="plain",
        default="",
        choices=["plain", "imported"],
        help="A/A run: plain PyTorch on both sides (how far apart two identical processes are); "
        "'imported': the second process imports autotune and runs its kernels once, then makes the "
        "same plain PyTorch calls (what having autotune around costs them)",
    )
