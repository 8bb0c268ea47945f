"""LowRank: a matrix kept as its truncated SVD factors ``A ≈ U diag(s) Vᵀ``.

This is what a fixed weight is factored into once (``autotune.nn`` layers hold one) and what can
be passed to ``autotune.matmul`` in place of a dense operand. Products with it never rebuild the
dense matrix: see :mod:`kernels.matmul.svd`.

Factorisation:

* ``"full"`` — LAPACK's divide-and-conquer SVD (``numpy.linalg.svd``, ``full_matrices=False``),
  then keep the leading ``rank`` triplets;
* ``"randomized"`` — Halko, Martinsson & Tropp (2011), Alg. 4.4 + 5.1: Gaussian sketch with
  ``oversample`` extra columns, ``power_iters`` QR-stabilised power iterations, then the exact
  SVD of the small projected matrix. Cost O(mn(r + p)) instead of O(mn·min(m, n));
* ``"auto"`` — randomized when the sketch is small against ``min(m, n)``
  (``rank + oversample <= RANDOMIZED_MAX_FRACTION · min(m, n)``), full otherwise.

Our own HMT rather than scikit-learn's ``randomized_svd``: the same algorithm (with 2 power
iterations scikit-learn skips the re-orthonormalisation this one does), and side by side at
n = 256…1024, r = n/64…n/2 neither was consistently faster (ratios 0.4–2.7 either way on this
shared machine), so the compute path keeps no dependency on scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from kernels import pool

SvdMethod = Literal["auto", "full", "randomized"]

#: "auto" uses the randomized SVD when the sketch width rank + oversample ≤ this fraction of
#: min(m, n). Measured with benchmarks/matmul_svd_lns.py (table 3: float32 n×n Gaussian,
#: interleaved medians, quiet machine; randomized time / full gesdd time at rank n/16, n/8, n/4,
#: 3n/8, n/2):
#:   2 BLAS threads (as dispatched): n=256 .11 .21 .59 1.15 1.34   n=512 .09 .20 .46 .65 .88
#:                                   n=1024 .09 .19 .36 .80 1.14
#:   1 BLAS thread:                  n=256 .13 .18 .37 .65 .93   n=512 .07 .12 .29 .50 .74
#:                                   n=1024 .05 .11 .27 .48 .76
#: With a sketch under n/4 the randomized SVD is 1.7-20x faster in every setting; past it the
#: gain shrinks to nothing by n/2 (with 2 threads it is slower from 3n/8 at n=256), while the
#: full SVD is exactly optimal — so the full SVD is taken there.
RANDOMIZED_MAX_FRACTION = 0.25


# eq=False: identity semantics (hashable, usable as a cache key); comparing factor arrays
# element-wise is never what "is this the same weight" means.
@dataclass(frozen=True, eq=False)
class LowRank:
    """``A ≈ u @ diag(s) @ vt`` with u (m, r), s (r,), vt (r, n), all of one float dtype.

    Treated as immutable: products and caches assume the factors never change after construction.
    """

    u: np.ndarray
    s: np.ndarray
    vt: np.ndarray

    def __post_init__(self) -> None:
        for name in ("u", "s", "vt"):
            factor = getattr(self, name)
            if not isinstance(factor, np.ndarray):
                raise TypeError(f"LowRank: {name} must be a numpy array, got {type(factor).__name__}")
        if self.u.ndim != 2 or self.s.ndim != 1 or self.vt.ndim != 2:
            raise ValueError(
                f"LowRank: expected u (m, r), s (r,), vt (r, n); got u{self.u.shape} s{self.s.shape} "
                f"vt{self.vt.shape}"
            )
        r = self.u.shape[1]
        if r < 1 or self.s.shape != (r,) or self.vt.shape[0] != r:
            raise ValueError(
                f"LowRank: inconsistent factors u{self.u.shape} s{self.s.shape} vt{self.vt.shape}"
            )
        if not (self.u.dtype == self.s.dtype == self.vt.dtype):
            raise TypeError("LowRank: u, s and vt must share one dtype")
        if self.u.dtype not in (np.float32, np.float64):
            raise TypeError(f"LowRank: factors must be float32 or float64, got {self.u.dtype}")

    @property
    def shape(self) -> tuple[int, int]:
        return (self.u.shape[0], self.vt.shape[1])

    @property
    def rank(self) -> int:
        return self.s.shape[0]

    @property
    def dtype(self) -> np.dtype:
        return self.u.dtype

    @property
    def ndim(self) -> int:
        return 2

    @property
    def nbytes(self) -> int:
        return self.u.nbytes + self.s.nbytes + self.vt.nbytes

    def truncate(self, rank: int) -> LowRank:
        """The leading ``rank`` triplets (singular values are sorted descending)."""
        if not 1 <= rank <= self.rank:
            raise ValueError(f"LowRank.truncate: rank must be in 1..{self.rank}, got {rank}")
        return LowRank(
            np.ascontiguousarray(self.u[:, :rank]),
            np.ascontiguousarray(self.s[:rank]),
            np.ascontiguousarray(self.vt[:rank]),
        )

    def to_dense(self) -> np.ndarray:
        """Rebuild the (m, n) matrix — for tests and studies, never on a compute path."""
        return (self.u * self.s) @ self.vt

    @classmethod
    def from_matrix(
        cls,
        a: np.ndarray,
        rank: int | None = None,
        *,
        method: SvdMethod = "auto",
        oversample: int = 10,
        power_iters: int = 2,
        seed: int = 0,
    ) -> LowRank:
        """Truncated SVD of a 2-D float array (``rank=None`` keeps every triplet)."""
        if not isinstance(a, np.ndarray) or a.ndim != 2 or a.dtype not in (np.float32, np.float64):
            raise TypeError("LowRank.from_matrix: a must be a 2-D float32/float64 numpy array")
        full_rank = min(a.shape)
        rank = full_rank if rank is None else rank
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)):
            raise TypeError(f"LowRank.from_matrix: rank must be an int or None, got {rank!r}")
        if not 1 <= rank <= full_rank:
            raise ValueError(f"LowRank.from_matrix: rank must be in 1..{full_rank}, got {rank}")
        if method == "auto":
            small_sketch = rank + oversample <= RANDOMIZED_MAX_FRACTION * full_rank
            method = "randomized" if small_sketch else "full"
        if method not in ("full", "randomized"):
            raise ValueError(f"LowRank.from_matrix: method must be auto/full/randomized, got {method!r}")
        # LAPACK on the calling thread: OpenBLAS's threads took as long or up to 4x longer, except
        # on full SVDs of 1024x1024 (1.3x faster), and then spun beside PyTorch (BENCHMARKS.md §19)
        u, s, vt = pool.on_calling_thread(
            lambda: (
                np.linalg.svd(a, full_matrices=False)
                if method == "full"
                else randomized_svd(a, rank, oversample=oversample, power_iters=power_iters, seed=seed)
            )
        )
        dtype = a.dtype
        return cls(
            np.ascontiguousarray(u[:, :rank], dtype=dtype),
            np.ascontiguousarray(s[:rank], dtype=dtype),
            np.ascontiguousarray(vt[:rank], dtype=dtype),
        )


def randomized_svd(
    a: np.ndarray, rank: int, *, oversample: int = 10, power_iters: int = 2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Halko–Martinsson–Tropp randomized truncated SVD; returns (u, s, vt) with ``rank`` triplets."""
    m, n = a.shape
    sketch = min(rank + oversample, min(m, n))
    rng = np.random.default_rng(seed)
    omega = rng.standard_normal((n, sketch)).astype(a.dtype)
    q, _ = np.linalg.qr(a @ omega)
    for _ in range(power_iters):  # subspace iteration, re-orthonormalised for stability
        q, _ = np.linalg.qr(a.T @ q)
        q, _ = np.linalg.qr(a @ q)
    u_small, s, vt = np.linalg.svd(q.T @ a, full_matrices=False)
    return (q @ u_small)[:, :rank], s[:rank], vt[:rank]
