"""BLAS GEMM through numpy (OpenBLAS sgemm/dgemm) on the calling thread: the exact workhorse."""

from __future__ import annotations

import numpy as np

from kernels import pool
from kernels.registry import KernelSpec, register


def blas(a, b):
    """``a @ b`` through numpy's BLAS (sgemm/dgemm), single-threaded on the calling thread.

    OpenBLAS's own worker threads would spin beside PyTorch's after the call (kernels/pool.py);
    the multi-threaded GEMM on the one pool is the ``torch`` kernel.
    """
    return pool.on_calling_thread(lambda: np.matmul(a, b))


register(KernelSpec(name="blas", op="matmul", fn=blas))
