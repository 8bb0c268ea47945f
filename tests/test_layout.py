"""The package layout: the library does not load the research code's dependencies."""

from __future__ import annotations

import subprocess
import sys


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
