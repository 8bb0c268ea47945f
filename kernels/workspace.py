"""Per-thread scratch memory that kernels reuse from one call to the next.

glibc serves a large allocation (above its mmap threshold, 128 KiB to 32 MiB) with fresh pages
from the OS, and a freed one goes back; every call that allocates its temporaries anew then
faults them in 4 KiB at a time. When calls alternate with PyTorch's own allocations, glibc's
adaptive threshold does not settle, and that is the normal case inside a model: Winograd's V and
M (3.6 MB on 1×64×56×56) took 816 page faults, +1.1 ms on a 0.55 ms kernel, on every call that
followed a PyTorch convolution (BENCHMARKS.md §18). A kernel's temporaries therefore come from
:func:`scratch`, which hands out the same memory on every call.

The memory is per Python thread (two threads calling kernels never share a buffer) and stays
allocated at the largest size asked for, up to :data:`LIMIT_BYTES` per name; larger requests
get fresh memory, whose faults are then a small share of such a call's time.
"""

from __future__ import annotations

import math
import threading
from functools import cache
from pathlib import Path

import numpy as np

#: Largest buffer kept per name and thread (larger requests are allocated for the call).
LIMIT_BYTES = 64 << 20

_local = threading.local()


def scratch(name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised C-contiguous array; the same memory for every call with ``name`` from
    this thread.

    Valid only until the next request for ``name`` on this thread: a kernel uses it for its own
    temporaries and never returns it (nor a view of it) to its caller.
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes > LIMIT_BYTES:
        return np.empty(shape, dtype=dtype)
    buffers: dict[str, np.ndarray] = _local.__dict__.setdefault("buffers", {})
    buffer = buffers.get(name)
    if buffer is None or buffer.nbytes < nbytes:
        buffer = buffers[name] = np.empty(max(nbytes, 1), dtype=np.uint8)
    return buffer[:nbytes].view(dtype).reshape(shape)


#: What :func:`warm_allocator` allocates: under glibc's largest adaptive mmap threshold (32 MiB).
WARM_BYTES = 30 << 20


def warm_allocator() -> None:
    """Allocate and free one 30 MiB block, as any process has done once it freed a large array.

    glibc then serves allocations up to that size from its heap and keeps up to twice that much
    free heap before returning memory to the OS (its adaptive mmap and trim thresholds). Without
    it the kernels' temporaries left the heap to be trimmed and grown again on every forward pass
    of a model, and the PyTorch layers in it page-faulted: ResNet-18 at batch 1 took 2,200 faults
    and 25.5 ms per forward pass, none and 22.3 ms once warmed (BENCHMARKS.md §26). The block is
    never touched, so this costs microseconds. Called once, on import of :mod:`kernels.pool`.
    """
    block = np.empty(WARM_BYTES, dtype=np.uint8)
    del block


def release() -> None:
    """Free this thread's buffers (they are allocated again on the next request)."""
    _local.__dict__.pop("buffers", None)


#: What :func:`core_cache_bytes` assumes where the OS does not say.
DEFAULT_CORE_CACHE_BYTES = 1 << 20


@cache
def core_cache_bytes() -> int:
    """The size of one core's level-2 cache (Linux's ``/sys/devices/system/cpu/cpu0/cache``), or
    :data:`DEFAULT_CORE_CACHE_BYTES` where that is not to be read: what a job may keep in cache
    from one step to the next (the fused Winograd's choice of job size uses it)."""
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            if (index / "level").read_text().strip() == "2":
                return _size_bytes((index / "size").read_text().strip())
        except (OSError, ValueError):
            continue
    return DEFAULT_CORE_CACHE_BYTES


def _size_bytes(text: str) -> int:
    """``2048K`` → 2097152 (the kernel's notation: a number with an optional K, M or G)."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if text and text[-1].upper() in units:
        return int(text[:-1]) * units[text[-1].upper()]
    return int(text)


#: Bytes of a cache line: the alignment of :func:`line_aligned_empty`, and what one streaming
#: store of :func:`kernels.simd.transpose_lines_plus` writes whole.
LINE_BYTES = 64


def line_aligned_empty(shape: tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised C-contiguous array whose first element starts a cache line (numpy aligns
    to 16 bytes): every row of an output whose rows are whole lines then starts one, and streaming
    stores write those lines whole (:func:`kernels.conv2d._common.rows_channels_first_by_blocks`).
    For itemsizes that divide a line (every float and complex dtype); a few microseconds, as it
    runs on every call of a kernel that returns one."""
    dtype = np.dtype(dtype)
    count, per_line = math.prod(shape), LINE_BYTES // dtype.itemsize
    raw = np.empty(count + per_line, dtype=dtype)
    skip = (-raw.__array_interface__["data"][0] % LINE_BYTES) // dtype.itemsize
    return raw[skip : skip + count].reshape(shape)
