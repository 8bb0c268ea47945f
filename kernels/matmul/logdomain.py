"""``log``: exact log-domain matmul — every product is formed as a sum of logarithms.

``C[i, j] = Σ_p sign(A[i,p])·sign(B[p,j]) · 2^(log2|A[i,p]| + log2|B[p,j]|)``

Each product is converted back to linear (``exp2``) and the linear values are summed, so the
algorithm is exact in real arithmetic; only the rounding of ``log2``/``exp2`` differs from a
multiply. Zeros never enter the log domain: ``log2|0|`` is ``-inf``, whose ``exp2`` is an exact
``+0``, and the zero sign makes the term an exact zero, so no NaN/inf appears for finite inputs.

Precision (what the precision study reads): storage, log/exp compute and accumulation are all in
the input dtype (float32 → ``log2f``/``exp2f``, float32 sums, like sgemm; float64 throughout for
float64). Loop order i-p-j: the inner loop streams a row of ``log2|B|`` and of the result, and
rows of C are computed in parallel.
"""

from __future__ import annotations

import numba
import numpy as np

from kernels.registry import KernelSpec, register


@numba.njit(cache=True, parallel=True)
def _log_matmul(log_a, sign_a, log_b, sign_b, out):  # pragma: no cover - jitted
    m, k = log_a.shape
    n = log_b.shape[1]
    for i in numba.prange(m):
        for p in range(k):
            s_a = sign_a[i, p]
            if s_a == 0:
                continue
            l_a = log_a[i, p]
            for j in range(n):
                # sign_b is 0 where B is 0; there log_b is -inf and exp2 gives an exact 0.
                out[i, j] += s_a * sign_b[p, j] * np.exp2(l_a + log_b[p, j])
    return out


def log_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact log-domain ``a @ b``: products as ``±2^(log2|a| + log2|b|)``, summed in linear.

    Args:
        a: (m, k) float32/float64, C-contiguous.
        b: (k, n) of the same dtype.

    Returns:
        (m, n) array of the input dtype.
    """
    with np.errstate(divide="ignore"):  # log2(0) = -inf is intended (see the module docstring)
        log_a, log_b = np.log2(np.abs(a)), np.log2(np.abs(b))
    out = np.zeros((a.shape[0], b.shape[1]), dtype=a.dtype)
    return _log_matmul(log_a, np.sign(a), log_b, np.sign(b), out)


#: Largest m·k·n the tuner tries. Every product here costs an exp2, two orders of magnitude more
#: than a BLAS multiply-add, so beyond this size a call only spends the tuning budget.
MAX_TUNED_MACS = 2**24


def small_enough(problem) -> bool:
    """Whether the problem is small enough to be worth timing (see ``declines``)."""
    m, k = problem.a_shape
    return m * k * problem.b_shape[1] <= MAX_TUNED_MACS


#: Why ``small_enough`` declines (shared with ``log_approx``).
TOO_LARGE = "software log-domain products are ~1000x slower than BLAS; tried up to 2^24 multiply-adds"


register(
    KernelSpec(
        name="log",
        op="matmul",
        fn=log_matmul,
        aliases=("logmatmul",),
        worth_tuning=small_enough,
        declines=TOO_LARGE,
    )
)
