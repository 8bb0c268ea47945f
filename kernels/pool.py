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
  factorisations (:class:`kernels.matmul.lowrank.LowRank`) and the fused Winograd's per-job GEMMs
  (Numba's ``np.dot``, scipy's OpenBLAS, called from inside the pool's threads) run on the calling
  thread only (:func:`on_calling_thread`): OpenBLAS's workers, once woken, spin for a
  long time after the call and took the cores of the next PyTorch layer.

The OpenMP wait policy is left at the runtime's default: PyTorch then runs as fast in this process
as in a process of its own. A user's own ``OMP_WAIT_POLICY``/``NUMBA_THREADING_LAYER`` win.
"""

from __future__ import annotations

import functools
import os
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


def on_calling_thread(call: Callable[[], T]) -> T:
    """``call()`` with OpenBLAS limited to the calling thread, its thread count restored after.

    Costs two ctypes calls per library; OpenBLAS's worker threads are never woken, so
    none is left spinning on a core that PyTorch's next parallel region needs.
    """
    libraries = _openblas_libraries()
    saved = [lib.get_num_threads() for lib in libraries]
    for lib in libraries:
        lib.set_num_threads(1)
    try:
        return call()
    finally:
        for lib, threads in zip(libraries, saved, strict=True):
            lib.set_num_threads(threads)


configure()
workspace.warm_allocator()
