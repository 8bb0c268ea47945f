"""docs/fleet.md end to end: n shards tuned by concurrent processes, then merged, equal one run.

This is what a SLURM job array or a Kubernetes Indexed Job does, with the scheduler replaced by
``subprocess.Popen``: every shard is a separate ``python -m autotune tune --shard i/4`` process with
its own ``AUTOTUNE_CACHE_DIR``, all running at once; ``autotune merge`` then combines the four
shard databases. The merged database must hold, in this machine's section, exactly the problems
that one unsharded run tunes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from autotune import cache, machine, shapes

SHARDS = 4
# No ``batch``/``dtype`` keys: every problem keeps its own N/M and dtype, so 8 distinct problems.
FLEET_SHAPES = """\
name: fleet-test
problems:
  - conv2d x=1x1x8x8 w=1x1x3x3
  - conv2d x=1x2x6x6 w=2x2x3x3 pad=1
  - conv2d x=1x2x8x8 w=4x2x3x3 stride=2 pad=1
  - {problem: conv2d x=1x4x6x6 w=4x4x1x1, layers: [pointwise]}
  - conv2d x=1x4x6x6 w=4x1x3x3 pad=1 groups=4
  - matmul a=1x16 b=16x8
  - matmul a=2x8 b=8x4
  - {problem: matmul a=4x32 b=32x16, layers: [fc]}
"""


def autotune_process(cache_dir: Path, log: Path, *argv: str) -> subprocess.Popen:
    """Start ``python -m autotune ARGV`` with its own database directory; output goes to ``log``."""
    env = {**os.environ, "AUTOTUNE_CACHE_DIR": str(cache_dir)}
    with log.open("w") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "autotune", *argv], stdout=out, stderr=subprocess.STDOUT, env=env
        )


def finish(process: subprocess.Popen, log: Path) -> None:
    try:
        code = process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise
    assert code == 0, f"{process.args} exited {code}:\n{log.read_text()}"


def this_machine_keys(cache_dir: Path) -> set[str]:
    """Problem keys of this machine's section of the database in ``cache_dir`` (file and journal,
    read through autotune's own reader), after checking that it has no other section."""
    db = cache.Database(cache_dir / cache.FILENAME)
    assert db.machine_id == machine.fingerprint_id(machine.fingerprint())
    doc = db.read_document()
    assert set(doc["machines"]) == {db.machine_id}, "tuned under another fingerprint than this process's"
    return set(db.full_entries())


def test_four_concurrent_shards_merged_equal_one_unsharded_run(tmp_path):
    shapes_file = tmp_path / "fleet.yaml"
    shapes_file.write_text(FLEET_SHAPES)
    items = shapes.expand(shapes.load_shapes(shapes_file))
    expected = {item.problem.key for item in items}
    assert len(expected) == 8
    tune = ["tune", "--shapes", str(shapes_file), "--budget", "0.2"]

    # the job array: every shard at once, each into its own database
    shard_dirs = [tmp_path / f"shard-{i}" for i in range(1, SHARDS + 1)]
    running = [
        (autotune_process(d, tmp_path / f"{d.name}.log", *tune, "--shard", f"{i}/{SHARDS}"), d)
        for i, d in enumerate(shard_dirs, start=1)
    ]
    for process, shard_dir in running:
        finish(process, tmp_path / f"{shard_dir.name}.log")

    # the dependent merge job, into a fresh target database
    merged_dir = tmp_path / "merged"
    files = [str(d / cache.FILENAME) for d in shard_dirs]
    finish(autotune_process(merged_dir, tmp_path / "merge.log", "merge", *files), tmp_path / "merge.log")

    # the reference: the same list tuned by one process
    single_dir = tmp_path / "single"
    finish(autotune_process(single_dir, tmp_path / "single.log", *tune), tmp_path / "single.log")

    shard_keys = [this_machine_keys(d) for d in shard_dirs]
    for i, keys in enumerate(shard_keys, start=1):
        assert keys == {item.problem.key for item in shapes.shard(items, i, SHARDS)}, f"shard {i}/{SHARDS}"
        assert keys, f"shard {i}/{SHARDS} tuned nothing"
        for j, other in enumerate(shard_keys, start=1):
            assert i == j or not keys & other, f"shards {i} and {j} overlap: {keys & other}"
    assert set().union(*shard_keys) == expected
    assert sum(map(len, shard_keys)) == len(expected)
    assert this_machine_keys(merged_dir) == this_machine_keys(single_dir) == expected
