"""The package layout: the library does not load the research code's dependencies."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_import_autotune_loads_no_research_dependencies():
    """``import autotune`` (API and CLI included) imports none of the studies' dependencies, and the
    API does not import scipy.fft: the hot path needs none of them."""
    code = (  # the [studies] extra: plots, embedded data sets, bfloat16
        "import autotune, sys; import autotune.api, autotune.cli; "
        "print(sorted(m for m in sys.modules "
        "if m.split('.')[0] in {'matplotlib','sklearn','skimage','ml_dtypes'})); "
        "print('scipy.fft' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[]", "False"], done.stdout + done.stderr


#: Layers over the dispatch core (they use only what it exports): not counted in its size.
LAYERS = ("autotune/bench/", "autotune/nn.py", "autotune/models.py")
ROOT = Path(__file__).resolve().parent.parent


def test_the_dispatch_core_stays_small():
    """Everything conv2d/matmul/tune and the CLI need: at most 4,500 lines, no module over 500."""
    sizes = {
        path.relative_to(ROOT).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
        for path in (ROOT / "autotune").rglob("*.py")
    }
    core = {name: lines for name, lines in sizes.items() if not name.startswith(LAYERS)}
    assert sum(core.values()) <= 4500, sorted(core.items(), key=lambda item: -item[1])[:5]
    assert max(sizes.values()) <= 500, max(sizes.items(), key=lambda item: item[1])


def test_kernels_never_import_autotune():
    """The wall between the layers: kernel modules see problems only through duck typing."""
    offenders = [
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "kernels").rglob("*.py")
        if "import autotune" in (text := path.read_text(encoding="utf-8")) or "from autotune" in text
    ]
    assert offenders == []


def test_no_file_refers_to_a_document_outside_the_repository():
    """Docs and code point only at files in the repository (no shared design notes elsewhere)."""
    suffixes = {".py", ".md", ".toml", ".yaml", ".cfg", ".txt"}
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    hits = [
        name
        for name in tracked
        if Path(name).suffix in suffixes
        and name != "tests/test_layout.py"
        and any(word in (ROOT / name).read_text(encoding="utf-8") for word in ("DESIGN.md", "../shared"))
    ]
    assert hits == []
