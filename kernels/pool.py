"""One thread pool for every kernel: PyTorch's OpenMP runtime.

A process that runs PyTorch, Numba and numpy's BLAS holds up to four thread pools: libgomp
(PyTorch's intra-op threads and MKL), Numba's threading layer, OpenBLAS's pthreads and
pocketfft's workers. Pools that do not know each other fight over the cores: a pool's idle
threads keep spinning after their work (libgomp for ``GOMP_SPINCOUNT`` iterations, OpenBLAS for
``2^THREAD_TIMEOUT`` cycles) on the core the next pool needs, and an im2col call right after a
PyTorch call took ten times as long (BENCHMARKS.md §1).

The cure is to have one pool only, the one PyTorch already runs on:

* **Numba** uses its ``omp`` threading layer. Its ``GOMP_parallel`` binds to the libgomp that is
  already loaded — PyTorch's, whichever of numba and torch was imported first — so a Numba
  ``prange`` runs on the very worker threads of PyTorch's convolutions (``tests/test_pool.py``
  checks that no other thread does work). Its thread count follows ``torch.get_num_threads()``.
* **GEMMs and FFTs** of the conv kernels, and the svd matmul kernel's larger products, go
  through :func:`matmul`, :func:`rfft2` and :func:`irfft2`, i.e. ``torch.matmul`` (MKL) and
  ``torch.fft`` on the same OpenMP threads — never OpenBLAS's or scipy.fft's own workers, whose
  threads would spin beside PyTorch's.
* **numpy's own BLAS**, where a kernel is that by definition (matmul's ``blas``), LAPACK's
  factorisations (:class:`kernels.matmul.lowrank.LowRank`) and the per-job GEMMs of the fused
  Winograd and of ``fft_tiles`` (Numba's ``np.dot``, scipy's OpenBLAS, called from inside the
  pool's threads) run on the calling
  thread only (:func:`on_calling_thread`): OpenBLAS's workers, once woken, spin for a
  long time after the call and took the cores of the next PyTorch layer.

The OpenMP wait policy is left at the runtime's default: PyTorch then runs as fast in this process
as in a process of its own. A user's own ``OMP_WAIT_POLICY``/``NUMBA_THREADING_LAYER`` win.
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import numba
import numpy as np
import torch

from kernels import workspace

T = TypeVar("T")

#: Numba threading layers in order of preference: ``omp`` shares PyTorch's OpenMP threads.
LAYER_PRIORITY = ["omp", "tbb", "workqueue"]


def configure() -> None:  # called below, on the first import of this module
    """Put Numba on PyTorch's OpenMP pool, with PyTorch's thread count (idempotent).

    Only defaults: a threading layer chosen with ``NUMBA_THREADING_LAYER`` is kept. Called on
    import of :mod:`kernels`, after ``torch`` is loaded, so the ``omp`` layer binds to the libgomp
    PyTorch uses.
    """
    if "NUMBA_THREADING_LAYER" not in os.environ and "NUMBA_THREADING_LAYER_PRIORITY" not in os.environ:
        numba.config.THREADING_LAYER_PRIORITY = list(LAYER_PRIORITY)
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


def report() -> dict[str, Any]:
    """The thread settings in force (recorded in the machine fingerprint and by the benchmarks)."""
    return {
        "numba_layer": numba.threading_layer(),
        "numba_threads": int(numba.get_num_threads()),
        "torch_threads": int(torch.get_num_threads()),
        "gemm": "torch.matmul",
        "fft": "torch.fft",
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
    }


def tensor(a: np.ndarray) -> torch.Tensor:
    """A zero-copy view (read-only arrays are only read, so PyTorch's warning does not apply)."""
    if not a.flags.writeable:
        a = a.view()
        a.flags.writeable = True  # never written: torch.matmul/fft only read their inputs
    return torch.from_numpy(a)


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``np.matmul(a, b)`` (batched, broadcasting) through ``torch.matmul`` on the one pool."""
    with torch.no_grad():
        if out is None:
            return torch.matmul(tensor(a), tensor(b)).numpy()
        target = torch.from_numpy(out)
        if out.flags.c_contiguous:
            torch.matmul(tensor(a), tensor(b), out=target)
        else:  # torch writes a non-contiguous out through a temporary anyway
            target.copy_(torch.matmul(tensor(a), tensor(b)))
    return out


def rfft2(x: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Real 2-D FFT over the last two axes, zero-padded to ``shape`` (complex64 for float32)."""
    with torch.no_grad():
        return torch.fft.rfft2(tensor(x), s=shape).numpy()


def irfft2(x_hat: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`rfft2` for a real signal of the last two axes' ``shape``."""
    with torch.no_grad():
        return torch.fft.irfft2(tensor(x_hat), s=shape).numpy()


def next_fast_len(n: int, largest_prime: int = 7) -> int:
    """The smallest even m >= n whose prime factors are all at most ``largest_prime`` (2, 3, 5 or
    7: fast FFT sizes).

    Even: a real FFT of odd length is much slower (``torch.fft``, 16-32 planes, forward and
    inverse: 63×63 1.8-2.4x the time of 64×64, 75×75 about 1.6x that of 80×80; BENCHMARKS.md §20).
    Among even sizes the fastest is not always the smallest (72×72 took less than 70×70 on an Intel
    Xeon, §26): the FFT kernel offers ``largest_prime`` 3 to the tuner as well.
    """
    if largest_prime not in (2, 3, 5, 7):
        raise ValueError(f"next_fast_len: largest_prime must be 2, 3, 5 or 7, got {largest_prime!r}")
    primes = [p for p in (2, 3, 5, 7) if p <= largest_prime]
    m = max(2, int(n) + int(n) % 2)
    while True:
        rest = m
        for p in primes:
            while rest % p == 0:
                rest //= p
        if rest == 1:
            return m
        m += 2


@functools.cache
def _openblas_libraries() -> list[Any]:
    """threadpoolctl's controllers of the OpenBLAS libraries: numpy's, and scipy's, which Numba's
    ``np.dot`` calls (loaded here first, so that it is among them even before any jitted GEMM ran)."""
    import scipy.linalg.cython_blas  # noqa: F401  (loads scipy's BLAS)
    from threadpoolctl import ThreadpoolController

    return [lib for lib in ThreadpoolController().lib_controllers if lib.internal_api == "openblas"]


@functools.cache
def _openblas_thread_calls() -> list[tuple[Callable[[], int], Callable[[int], Any]]]:
    """(get, set) thread-count functions of each OpenBLAS library, resolved once as ctypes calls.

    threadpoolctl finds the libraries; its own ``set_num_threads`` looks the symbol up and checks
    which Python thread controls OpenBLAS on every call: 26 µs for the four calls around a fused
    kernel (7-10% of a 0.3 ms FFT call), against about 1 µs for the ctypes calls themselves.
    Symbols are named as threadpoolctl names them (scipy's builds prefix ``scipy_`` and may suffix
    ``64_``; the OpenMP build's count is the OpenMP runtime's).
    """
    calls = []
    for lib in _openblas_libraries():
        dynlib = ctypes.CDLL(lib.filepath)  # the loaded library's handle, not a second copy
        affixes = [(p, s) for p in ("", "scipy_") for s in ("", "64_", "_64")]
        prefix, suffix = next(
            ((p, s) for p, s in affixes if hasattr(dynlib, f"{p}openblas_get_num_threads{s}")), ("", "")
        )
        getter = "omp_get_max_threads" if lib.threading_layer == "openmp" else "openblas_get_num_threads"
        get = getattr(dynlib, f"{prefix}{getter}{suffix}", None) or getattr(dynlib, getter)
        put = getattr(dynlib, f"{prefix}openblas_set_num_threads{suffix}")
        get.restype, put.argtypes, put.restype = ctypes.c_int, [ctypes.c_int], None
        calls.append((get, put))
    return calls


_limit_lock = threading.Lock()
_limit_depth = 0
_limit_saved: list[int] = []


def on_calling_thread(call: Callable[[], T]) -> T:
    """``call()`` with OpenBLAS limited to the calling thread, its thread count restored after.

    OpenBLAS's worker threads are never woken, so none is left spinning on a core that PyTorch's
    next parallel region needs. The count is process-wide: calls from several Python threads at
    once limit it while any of them runs and the last one out restores it.
    """
    global _limit_depth, _limit_saved
    libraries = _openblas_thread_calls()
    with _limit_lock:
        if _limit_depth == 0:
            _limit_saved = [get() for get, _ in libraries]
            for _, put in libraries:
                put(1)
        _limit_depth += 1
    try:
        return call()
    finally:
        with _limit_lock:
            _limit_depth -= 1
            if _limit_depth == 0:
                for (_, put), threads in zip(libraries, _limit_saved, strict=True):
                    put(threads)


configure()
workspace.warm_allocator()
