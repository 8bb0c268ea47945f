"""This machine: what makes timings comparable (CPU, ISA, cores, thread settings, versions).

The database files every entry under the fingerprint of the machine and process that measured it
(:func:`fingerprint`, a section per :func:`fingerprint_id`), and uses only the section that
matches. Probing is done once per process (the thread counts are part of it, so changing them
means :func:`forget`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from functools import cache
from typing import Any

import yaml

from autotune._version import __version__

_ISA_FLAGS = (  # x86, its AVX-512 and AMX extensions, Arm
    *("sse4.2", "avx", "avx2", "fma", "f16c"),
    *("avx512f", "avx512bw", "avx512vl", "avx512vnni", "avx512bf16", "avx512fp16", "amx-tile"),
    *("neon", "sve"),
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
    """What makes timings comparable: CPU, ISA, cores, thread settings, library versions
    (computed once per process, when the database is first used)."""
    import llvmlite.binding as llvm
    import numba
    import numpy
    import threadpoolctl
    import torch

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


#: Default share of the available memory one candidate's workspace may take (``$AUTOTUNE_MEMORY_CAP``).
DEFAULT_MEMORY_SHARE = 0.25


def available_memory() -> int:
    """Bytes the OS says can be allocated now without swapping (``MemAvailable``), else all RAM."""
    try:
        with open("/proc/meminfo", encoding="utf-8") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def memory_cap() -> int:
    """The most workspace a tuning candidate may need: ``$AUTOTUNE_MEMORY_CAP`` (a share of the
    available memory in (0, 1]) × :func:`available_memory`, default :data:`DEFAULT_MEMORY_SHARE`."""
    text = os.environ.get("AUTOTUNE_MEMORY_CAP", "").strip()
    try:
        share = float(text) if text else DEFAULT_MEMORY_SHARE
    except ValueError:
        share = float("nan")
    if not 0 < share <= 1:
        raise ValueError(
            f"AUTOTUNE_MEMORY_CAP must be a share of the available memory in (0, 1], got {text!r}"
        )
    return int(share * available_memory())


def forget() -> None:
    """Probe again on next use (after the thread settings changed)."""
    fingerprint.cache_clear()


def now_iso() -> str:
    """UTC timestamp used for ``tuned_at`` (sortable as text)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")
