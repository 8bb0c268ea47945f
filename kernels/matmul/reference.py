"""The float64 reference matmul (``method="naive"``): plain loops, independent of every candidate.

Loop order i-k-j so that the innermost loop streams a row of B and a row of C (it vectorises
without any BLAS); parallel over rows of the result; float64 accumulation.
"""

from __future__ import annotations

import numba
import numpy as np

from kernels.registry import KernelSpec, register


@numba.njit(cache=True, parallel=True)
def _matmul_f64(a, b):  # pragma: no cover - jitted
    m, k = a.shape
    n = b.shape[1]
    c = np.zeros((m, n), dtype=np.float64)
    for i in numba.prange(m):
        for p in range(k):
            a_ip = a[i, p]
            if a_ip != 0.0:
                for j in range(n):
                    c[i, j] += a_ip * b[p, j]
    return c


def matmul_reference(a, b):
    """``C[i, j] = Σ_p A[i, p] · B[p, j]`` in float64 loops; returns float64."""
    return _matmul_f64(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))


def naive(a, b):
    """Float64 reference loops, result cast to the input dtype (slow; for checking, not speed)."""
    return matmul_reference(a, b).astype(a.dtype, copy=False)


def small_enough(problem) -> bool:
    """Whether the problem is small enough to be worth timing (see ``declines``)."""
    m, k = problem.a_shape
    return m * k * problem.b_shape[1] <= 2**24


register(
    KernelSpec(
        name="naive",
        op="matmul",
        fn=naive,
        reference=True,
        worth_tuning=small_enough,
        declines="float64 loops only win on tiny problems; tried up to 2^24 multiply-adds",
    )
)
