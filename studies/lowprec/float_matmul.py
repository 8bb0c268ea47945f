"""The emulated low-precision GEMM that im2col, Winograd and matmul share.

``C (M×N) = A (M×K) · B (K×N)`` with operands already stored in the storage format and every
operation rounded to the compute format ``comp``:

    p = rnd(a[i,l] · b[l,j]);  partial = rnd(partial + p)        (l through one block of K)
    C[i,j] = rnd(C[i,j] + partial)                                (once per block)

``k_block`` models a GotoBLAS-style GEMM (OpenBLAS, BLIS): K is cut into blocks, each block's
products are summed from zero in the accumulator, then added to C. ``k_block ≥ K`` is the plain
sequential dot product of the naive loops. With ``comp`` = float32 and float16/bfloat16 operands the
product rounding is exact (11 + 11 and 8 + 8 significand bits fit float32's 24): products formed
exactly and summed in float32, as tensor cores, AMX-BF16 and ARM FMLAL do.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from studies.lowprec.rounding import FloatFormat, rnd, round_array

#: K-block of the blocked GEMM (GotoBLAS-style ``kc``; OpenBLAS uses 256–384 on x86-64).
K_BLOCK = 256


@numba.njit(cache=True)
def gemm_rounded(a, b, comp, k_block):  # pragma: no cover - jitted
    """``a @ b`` with every product and sum rounded to ``comp``; K summed in blocks of ``k_block``."""
    m, k_dim = a.shape
    n = b.shape[1]
    c = np.zeros((m, n))
    partial = np.empty(n)
    for i in range(m):
        for k0 in range(0, k_dim, k_block):
            partial[:] = 0.0
            for kk in range(k0, min(k0 + k_block, k_dim)):
                a_ik = a[i, kk]
                for j in range(n):  # i-k-j: the inner loop streams a row of B
                    partial[j] = rnd(partial[j] + rnd(a_ik * b[kk, j], comp), comp)
            for j in range(n):
                c[i, j] = rnd(c[i, j] + partial[j], comp)
    return c


def matmul_lowprec(
    a: np.ndarray, b: np.ndarray, store: FloatFormat, comp: FloatFormat, k_block: int = K_BLOCK
) -> np.ndarray:
    """``a @ b`` (float64 in, float64 out) with operands and result stored in ``store``.

    ``a`` and ``b`` are rounded to ``store`` first (the storage cast), the GEMM runs in ``comp``
    (:func:`gemm_rounded`) and the result is rounded to ``store`` (the output tensor's dtype).
    ``k_block=K`` gives the naive sequential loop.
    """
    a_st = round_array(a, store)
    b_st = round_array(b, store)
    return round_array(gemm_rounded(a_st, b_st, comp.spec, k_block), store)


@numba.njit(cache=True)
def _log_gemm_rounded(log_a, sign_a, log_b, sign_b, comp):  # pragma: no cover - jitted
    """Σ_l sign·rnd(2^rnd(log_a + log_b)) summed sequentially in ``comp`` (i-l-j order)."""
    m, k_dim = log_a.shape
    n = log_b.shape[1]
    c = np.zeros((m, n))
    for i in range(m):
        for kk in range(k_dim):
            s_a = sign_a[i, kk]
            if s_a == 0.0:
                continue
            l_a = log_a[i, kk]
            for j in range(n):
                s = s_a * sign_b[kk, j]
                if s != 0.0:
                    term = rnd(math.exp2(rnd(l_a + log_b[kk, j], comp)), comp)
                    c[i, j] = rnd(c[i, j] + s * term, comp)
    return c


def log_matmul_lowprec(a: np.ndarray, b: np.ndarray, store: FloatFormat, comp: FloatFormat) -> np.ndarray:
    """Exact log-domain ``a @ b`` in emulated low precision (float64 in, float64 out).

    Operands are stored in ``store``; ``log2|·|`` of each is computed in ``comp`` and stored in
    ``store`` (the log transform, like a Winograd transform, is a stored operand); each product is
    ``rnd_c(2^rnd_c(log a + log b))``, summed sequentially along K in ``comp``; y stored in ``store``.
    """
    a_st, b_st = round_array(a, store), round_array(b, store)
    with np.errstate(divide="ignore"):  # log2(0) = -inf: zeros carry sign 0 and never contribute
        log_a = round_array(round_array(np.log2(np.abs(a_st)), comp), store)
        log_b = round_array(round_array(np.log2(np.abs(b_st)), comp), store)
    c = _log_gemm_rounded(log_a, np.sign(a_st), log_b, np.sign(b_st), comp.spec)
    return round_array(c, store)
