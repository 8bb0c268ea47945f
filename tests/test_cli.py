"""The ``autotune`` command: tune, show, explain, export/import/merge/clear, bench, study, exit codes.

Most tests call :func:`autotune.cli.main` in-process (fast: no interpreter start-up, and the
``fast_tuning`` fixture applies); a few run the real console script in a subprocess to check what
a user sees: exit codes, one-line errors, no tracebacks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml

from autotune import cache, cli, report, schema, shapes, state, tuner
from autotune.bench import suite as bench
from autotune.problem import parse_problem

TINY = """\
name: tiny
batch: [1]
problems:
  - conv2d x=1x1x8x8 w=1x1x3x3
  - problem: conv2d x=1x2x6x6 w=2x2x3x3 pad=1
    layers: [block.conv1, block.conv2]
  - {problem: matmul a=1x16 b=16x8, layers: [fc]}
"""
TINY_KEYS = {
    parse_problem(spec).key
    for spec in ("conv2d x=1x1x8x8 w=1x1x3x3", "conv2d x=1x2x6x6 w=2x2x3x3 pad=1", "matmul a=1x16 b=16x8")
}


@pytest.fixture
def tiny_shapes(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_script(cache_dir: Path, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """``python -m autotune ARGV`` with its own cache directory."""
    env = {**os.environ, "AUTOTUNE_CACHE_DIR": str(cache_dir)}
    return subprocess.run(
        [sys.executable, "-m", "autotune", *argv],
        capture_output=True,
        text=True,
        env=env,
        input=stdin,
        timeout=120,
    )


def db_keys() -> set[str]:
    return set(state.database().entries())


# ---------------------------------------------------------------------------------------------
# tune / show / explain


def test_tune_shapes_file_then_show_lists_every_problem(capsys, tiny_shapes, fast_tuning):
    code, out, err = run_cli(capsys, "tune", "--shapes", tiny_shapes, "--budget", "0.2")
    assert code == 0, err
    assert db_keys() == TINY_KEYS
    assert "3 to tune" in err and "3 tuned, 0 cached, 0 failed" in err
    assert "block.conv1 +1" in out and "fc" in out  # the layer column of the summary table

    code, out, _ = run_cli(capsys, "show")
    assert code == 0
    for key in TINY_KEYS:
        assert report.short_key(key) in out


def test_show_machine_readable_formats_and_op_filter(capsys, tiny_shapes, fast_tuning):
    assert cli.main(["tune", "--shapes", str(tiny_shapes), "--budget", "0.2"]) == 0
    capsys.readouterr()
    _, out, _ = run_cli(capsys, "show", "--format", "json")
    records = json.loads(out)
    assert {r["problem"] for r in records} == TINY_KEYS
    assert all(r["choice"] and r["median_us"] > 0 and r["rel_err"] < r["tol"] for r in records)
    _, out, _ = run_cli(capsys, "show", "--format", "yaml", "--op", "matmul")
    assert [r["problem"] for r in yaml.safe_load(out)] == ["matmul a=1x16 b=16x8 float32"]


def test_rerun_skips_cached_problems_unless_forced(counts, capsys, tiny_shapes, fast_tuning):
    assert cli.main(["tune", "--shapes", str(tiny_shapes), "--budget", "0.2"]) == 0
    count = counts["tune-started"]
    code, out, err = run_cli(capsys, "tune", "--shapes", tiny_shapes)
    assert code == 0 and count == counts["tune-started"]
    assert "3 already cached" in err and out.count("cached") == 3
    code, _, err = run_cli(capsys, "tune", "--shapes", tiny_shapes, "--force", "--budget", "0.2")
    assert code == 0 and count + 3 == counts["tune-started"]


def test_batch_and_dtype_expand_the_list(capsys, tiny_shapes, fast_tuning):
    code, _, err = run_cli(
        capsys, "tune", "--shapes", tiny_shapes, "--batch", "1,2", "--dtype", "float64", "--budget", "0.2"
    )
    assert code == 0, err
    keys = db_keys()
    assert len(keys) == 6 and all(key.endswith("float64") for key in keys)
    assert "matmul a=2x16 b=16x8 float64" in keys


def test_explain_takes_one_argument_or_several_words(capsys, tiny_shapes, fast_tuning):
    assert cli.main(["tune", "--shapes", str(tiny_shapes), "--budget", "0.2"]) == 0
    capsys.readouterr()
    code, quoted, _ = run_cli(capsys, "explain", "conv2d x=1x2x6x6 w=2x2x3x3 pad=1")
    assert code == 0
    code, words, _ = run_cli(
        capsys, "explain", "conv2d", "x=1x2x6x6", "w=2x2x3x3", "stride=1", "pad=1", "float32"
    )
    assert code == 0 and words == quoted
    entry = state.database().lookup(parse_problem("conv2d x=1x2x6x6 w=2x2x3x3 pad=1").key)
    lines = quoted.splitlines()
    for label, record in entry["candidates"].items():
        line = next(line for line in lines if line.startswith(label + " "))
        assert ("rejected: " + record["reason"] in line) if not record["ok"] else ("rejected" not in line)
    assert sum("chosen" in line for line in lines) == 1
    assert lines[-1] == f"why: {entry['why']}"


def test_explain_lists_accepted_fastest_first_then_rejected(capsys, tiny_shapes, fast_tuning):
    assert cli.main(["tune", "--shapes", str(tiny_shapes), "--budget", "0.2"]) == 0
    capsys.readouterr()
    _, out, _ = run_cli(capsys, "explain", "conv2d x=1x1x8x8 w=1x1x3x3")
    table = out.split("\n\n")[1].splitlines()[2:]
    verdicts = ["rejected" if "rejected:" in row else "ok" for row in table]
    assert verdicts == sorted(verdicts, key=lambda v: v == "rejected")
    entry = next(iter(state.database().entries().values()))
    accepted = sorted((v["score_us"], label) for label, v in entry["candidates"].items() if v["ok"])
    assert [row.split()[0] for row in table[: len(accepted)]] == [label for _, label in accepted]


def test_explain_of_an_untuned_problem_fails_or_tunes_with_flag(capsys, fast_tuning):
    code, _, err = run_cli(capsys, "explain", "matmul a=2x3 b=3x4")
    assert code == 1 and "not tuned on this machine" in err and "--tune" in err
    code, out, _ = run_cli(capsys, "explain", "--tune", "--budget", "0.2", "matmul a=2x3 b=3x4")
    assert code == 0 and "chosen" in out and db_keys() == {"matmul a=2x3 b=3x4 float32"}


def test_ctrl_c_keeps_what_was_tuned_and_a_rerun_finishes(capsys, tiny_shapes, fast_tuning, monkeypatch):
    calls = []

    def interrupted_on_second(problem, **kwargs):
        calls.append(problem)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return fast_tuning(problem, **kwargs)

    monkeypatch.setattr(tuner, "tune_problem", interrupted_on_second)
    code, _, err = run_cli(capsys, "tune", "--shapes", tiny_shapes, "--budget", "0.2")
    assert code == 130
    assert "interrupted: 1 of 3 problems tuned and saved" in err and "Traceback" not in err
    state.reset()  # a new process: read the file, not this process's memory
    assert len(db_keys()) == 1
    monkeypatch.setattr(tuner, "tune_problem", fast_tuning)
    code, _, err = run_cli(capsys, "tune", "--shapes", tiny_shapes, "--budget", "0.2")
    assert code == 0 and "1 already cached" in err and db_keys() == TINY_KEYS


# ---------------------------------------------------------------------------------------------
# export / import / merge / clear


def test_export_clear_import_round_trip(capsys, tiny_shapes, fast_tuning, tmp_path):
    assert cli.main(["tune", "--shapes", str(tiny_shapes), "--budget", "0.2"]) == 0
    before = dict(state.database().entries())
    exported = tmp_path / "export.yaml"
    assert cli.main(["export", str(exported)]) == 0
    assert cli.main(["clear", "--yes"]) == 0
    state.reset()
    assert db_keys() == set()
    capsys.readouterr()
    code, _, err = run_cli(capsys, "import", exported)
    assert code == 0 and "3 added" in err
    state.reset()
    assert state.database().entries() == before


def test_merge_of_two_shards_equals_one_unsharded_run(
    capsys, tiny_shapes, fast_tuning, tmp_path, monkeypatch
):
    def tune_into(name: str, *extra: str) -> Path:
        monkeypatch.setenv("AUTOTUNE_CACHE_DIR", str(tmp_path / name))
        assert cli.main(["tune", "--shapes", str(tiny_shapes), "--budget", "0.2", *extra]) == 0
        return tmp_path / name / cache.FILENAME

    shard_files = [tune_into("one", "--shard", "1/2"), tune_into("two", "--shard", "2/2")]
    unsharded = tune_into("all")
    merged = tmp_path / "merged.yaml"
    assert cli.main(["merge", *map(str, shard_files), "--out", str(merged)]) == 0

    def keys(path: Path) -> set[str]:
        return {key for _, _, entries in schema.iter_sections(cache.load_file(path)) for key in entries}

    one, two = (keys(path) for path in shard_files)
    assert one and two and not one & two
    assert keys(merged) == keys(unsharded) == TINY_KEYS

    monkeypatch.setenv("AUTOTUNE_CACHE_DIR", str(tmp_path / "fresh"))
    assert cli.main(["merge", *map(str, shard_files)]) == 0  # into the database
    assert db_keys() == TINY_KEYS


def test_merge_keeps_the_newest_entry_per_key_and_every_machine(capsys, tmp_path):
    db = state.database()
    key = "matmul a=2x3 b=3x4 float32"

    def document(machine: str, choice: str, tuned_at: str) -> dict:
        entry = {
            "problem": parse_problem(key).to_dict(),
            "choice": choice,
            "params": {},
            "tuned_at": tuned_at,
        }
        return {"schema": 1, "machines": {machine: {"fingerprint": {}, "entries": {key: entry}}}}

    files = []
    for name, doc in {
        "old.yaml": document(db.machine_id, "torch", "2026-01-01T00:00:00+00:00"),
        "new.yaml": document(db.machine_id, "blas", "2026-02-01T00:00:00+00:00"),
        "other.yaml": document("another-cpu", "naive", "2025-01-01T00:00:00+00:00"),
    }.items():
        files.append(tmp_path / name)
        files[-1].write_text(yaml.safe_dump(doc))
    # newest wins whatever the order of the files
    assert cli.main(["merge", str(files[1]), str(files[0]), str(files[2])]) == 0
    state.reset()
    assert state.database().lookup(key)["choice"] == "blas"
    sections = {m: entries for m, _, entries in schema.iter_sections(state.database().read_document())}
    assert sections["another-cpu"][key]["choice"] == "naive"


def test_import_of_a_file_that_is_not_a_database_fails_with_one_line(capsys, tmp_path):
    bad = tmp_path / "notes.yaml"
    bad.write_text("- just\n- a list\n")
    code, _, err = run_cli(capsys, "import", bad)
    assert code == 1 and "not an autotune database" in err and len(err.strip().splitlines()) == 1


def test_clear_asks_first(capsys, tiny_shapes, fast_tuning, monkeypatch):
    assert cli.main(["tune", "--shapes", str(tiny_shapes), "--budget", "0.2"]) == 0
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False, raising=False)
    code, _, err = run_cli(capsys, "clear")
    assert code == 2 and "--yes" in err and len(db_keys()) == 3
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert cli.main(["clear"]) == 1 and len(db_keys()) == 3
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    assert cli.main(["clear"]) == 0 and db_keys() == set()


# ---------------------------------------------------------------------------------------------
# Presets, shapes files, shards.


def test_presets_are_data_with_the_documented_contents():
    assert set(shapes.preset_names()) >= {"seed", "resnet18", "vgg16", "mnist-mlp", "large-kernel"}
    resnet = shapes.load_preset("resnet18")
    assert len(resnet.items) == 11 and sum(len(item.layers) for item in resnet.items) == 20
    assert resnet.items[0].problem.key == parse_problem("conv2d x=1x3x224x224 w=64x3x7x7 stride=2 pad=3").key
    seed = shapes.expand(shapes.load_preset("seed"))
    sizes = sorted({item.problem.x_shape[2] for item in seed})
    assert sizes == [*range(3, 49, 4), 49] and all(item.problem.x_shape[:2] == (1, 1) for item in seed)
    mlp = shapes.expand(shapes.load_preset("mnist-mlp"), [1, 8])
    assert [item.problem.key for item in mlp[:2]] == [
        "matmul a=1x784 b=784x512 float32",
        "matmul a=8x784 b=784x512 float32",
    ]
    assert {item.problem.b_shape for item in mlp} == {(784, 512), (512, 128), (128, 10)}


def test_example_shapes_file_loads():
    example = Path(__file__).resolve().parent.parent / "examples" / "shapes.yaml"
    items = shapes.expand(shapes.load_shapes(example))
    assert len(items) == 10 and {
        item.problem.x_shape[0] if item.problem.op == "conv2d" else item.problem.a_shape[0] for item in items
    } == {1, 8}


def test_identical_problems_are_merged_with_their_layers():
    shape_list = shapes.parse_shapes(
        "problems:\n - {problem: conv2d x=4x1x8x8 w=1x1x3x3, layers: [a]}\n"
        " - {problem: conv2d x=2x1x8x8 w=1x1x3x3, layers: [b]}\n",
        "test",
    )
    (item,) = shapes.expand(shape_list, [1])
    assert item.layers == ("a", "b") and item.problem.x_shape == (1, 1, 8, 8)


@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_shards_are_disjoint_and_cover_the_list(count):
    items = shapes.expand(shapes.load_preset("seed"))
    slices = [shapes.shard(items, i, count) for i in range(1, count + 1)]
    keys = [item.problem.key for part in slices for item in part]
    assert sorted(keys) == sorted(item.problem.key for item in items) and len(set(keys)) == len(keys)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("problems: [conv2d x=1x1x8 w=1x1x3x3]", "problems[0]"),
        ("problems: []", "non-empty 'problems'"),
        ("problems: [matmul a=2x3 b=3x4]\nbatches: [1]", "unknown keys ['batches']"),
        ("problems: [matmul a=2x3 b=3x4]\nbatch: [0]", "'batch' must be a positive integer"),
        ("problems: [{problem: matmul a=2x3 b=3x4, layer: x}]", "expected keys 'problem'"),
        ("problems: [: bad", "not valid YAML"),
    ],
)
def test_bad_shapes_file_is_a_usage_error(capsys, tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    code, _, err = run_cli(capsys, "tune", "--shapes", path)
    assert code == 2 and message in err and str(path) in err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["tune"],
        ["tune", "--preset", "nope"],
        ["tune", "--preset", "seed", "--shard", "3/2"],
        ["tune", "--preset", "seed", "--shard", "0/2"],
        ["tune", "--preset", "seed", "--batch", "0"],
        ["tune", "--preset", "seed", "--dtype", "float16"],
        ["tune", "--preset", "seed", "--budget", "-1"],
        ["tune", "--shapes", "/no/such/file.yaml"],
        ["show", "--format", "xml"],
        ["explain", "conv2d", "x=1x1x8x8"],
        ["explain", "conv3d x=1"],
        ["bench", "--suite", "nope"],
        ["study", "nope"],
    ],
)
def test_usage_errors_exit_2(capsys, argv):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and "error:" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "verb", ["tune", "show", "explain", "export", "import", "merge", "clear", "bench", "study"]
)
def test_every_verb_has_help(capsys, verb):
    code, out, _ = run_cli(capsys, verb, "--help")
    assert code == 0 and out.startswith("usage: autotune " + verb)


# ---------------------------------------------------------------------------------------------
# study and bench


def test_study_dispatches_to_the_module_contract(capsys, monkeypatch, tmp_path):
    calls = {}
    module = types.ModuleType("studies.fake")

    def add_arguments(parser):
        parser.add_argument("--rank", type=int, default=3)

    def run(out, *, quick=False, **options):
        calls.update(out=out, quick=quick, **options)
        return out / "fake"

    module.add_arguments, module.run = add_arguments, run
    monkeypatch.setitem(sys.modules, "studies.fake", module)
    monkeypatch.setitem(cli_studies().STUDIES, "fake", "studies.fake")
    code, _, err = run_cli(capsys, "study", "fake", "--out", tmp_path, "--quick", "--rank", "7")
    assert code == 0 and calls == {"out": tmp_path, "quick": True, "rank": 7}
    code, _, err = run_cli(capsys, "study", "fake", "--rank", "x")
    assert code == 2 and "--rank" in err


def test_missing_study_module_is_a_one_line_failure(capsys, monkeypatch):
    monkeypatch.setitem(cli_studies().STUDIES, "absent", "studies.absent_module")
    code, _, err = run_cli(capsys, "study", "absent")
    assert code == 1 and "not available" in err and len(err.strip().splitlines()) == 1


def test_study_without_the_studies_extra_says_how_to_install_it(capsys, monkeypatch):
    def load(name):
        raise ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib")

    monkeypatch.setattr(cli_studies(), "load", load)
    code, _, err = run_cli(capsys, "study", "precision")
    assert code == 1 and "pip install 'autotune[studies]'" in err and len(err.strip().splitlines()) == 1


def test_study_needing_an_extra_at_run_time_says_how_to_install_it(capsys, monkeypatch, tmp_path):
    def run(out, *, quick=False):
        raise ModuleNotFoundError("No module named 'sklearn'", name="sklearn")

    module = types.ModuleType("studies.fake")
    module.run = run
    monkeypatch.setitem(sys.modules, "studies.fake", module)
    monkeypatch.setitem(cli_studies().STUDIES, "fake", "studies.fake")
    code, _, err = run_cli(capsys, "study", "fake", "--out", tmp_path)
    assert code == 1 and "pip install 'autotune[studies]'" in err and len(err.strip().splitlines()) == 1


def cli_studies():
    import studies

    return studies


def test_bench_writes_json_markdown_and_png(capsys, fast_tuning, monkeypatch, tmp_path):
    monkeypatch.setattr(bench, "PEAK_N", 256)
    code, out, err = run_cli(
        capsys, "bench", "--suite", "mnist-mlp", "--batch", "2", "--cap", "0.05", "--out", tmp_path
    )
    assert code == 0, err
    folder = tmp_path / "bench-mnist-mlp"
    result = json.loads((folder / "bench.json").read_text())
    assert result["peak_gflops"] > 0 and len(result["problems"]) == 3
    for problem in result["problems"]:
        labels = {c["label"] for c in problem["candidates"]}
        assert {"blas", "torch", "naive", bench.DISPATCH} <= labels
        assert problem["pick"] in labels
        dispatch = next(c for c in problem["candidates"] if c["label"] == bench.DISPATCH)
        assert dispatch["ok"] and dispatch["gflops"] > 0
    markdown = (folder / "bench.md").read_text()
    assert "% peak" in markdown and "matmul a=2x784 b=784x512 float32" in markdown
    assert (folder / "bench.png").stat().st_size > 0
    assert "GFLOP/s" in out


# ---------------------------------------------------------------------------------------------
# The real console script.


def test_console_script_tunes_shows_and_rejects_bad_syntax(tmp_path, tiny_shapes):
    cache_dir = tmp_path / "script-cache"
    done = run_script(cache_dir, "tune", "--shapes", str(tiny_shapes), "--budget", "0.3")
    assert done.returncode == 0, done.stderr
    shown = run_script(cache_dir, "show", "--format", "json")
    assert {r["problem"] for r in json.loads(shown.stdout)} == TINY_KEYS
    bad = run_script(cache_dir, "explain", "conv2d x=1x1x8 w=1x1x3x3")
    assert bad.returncode == 2
    assert "x=1x1x8" in bad.stderr and "expected 4 dimensions" in bad.stderr and "Traceback" not in bad.stderr
    script = Path(sys.executable).with_name("autotune")
    if script.exists():
        version = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
        assert version.returncode == 0 and version.stdout.startswith("autotune ")


def test_a_closed_pipe_is_not_an_error(monkeypatch, capsys):
    """``autotune show | head -1``: the reader leaving early is no error line and no traceback."""
    from autotune.cli import database

    def reader_left(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(database, "cmd_show", reader_left)
    monkeypatch.setattr("os.dup2", lambda *args: None)  # keep pytest's stdout
    assert cli.main(["show"]) == 1
    assert capsys.readouterr().err == ""
