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
* ``"auto"`` — randomized when ``rank`` is small against ``min(m, n)``
  (``rank <= RANDOMIZED_MAX_FRACTION · min(m, n)``), full otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

SvdMethod = Literal["auto", "full", "randomized"]

#: "auto" uses the randomized SVD when rank ≤ this fraction of min(m, n).
RANDOMIZED_MAX_FRACTION = 0.25


@dataclass(frozen=True)
class LowRank:
    """``A ≈ u @ diag(s) @ vt`` with u (m, r), s (r,), vt (r, n), all of one float dtype."""

    u: np.ndarray
    s: np.ndarray
    vt: np.ndarray

    def __post_init__(self) -> None:
        r = self.u.shape[1]
        if self.s.shape != (r,) or self.vt.shape[0] != r:
            raise ValueError(
                f"LowRank: inconsistent factors u{self.u.shape} s{self.s.shape} vt{self.vt.shape}"
            )
        if not (self.u.dtype == self.s.dtype == self.vt.dtype):
            raise TypeError("LowRank: u, s and vt must share one dtype")

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
        if not 1 <= rank <= full_rank:
            raise ValueError(f"LowRank.from_matrix: rank must be in 1..{full_rank}, got {rank}")
        if method == "auto":
            method = "randomized" if rank <= RANDOMIZED_MAX_FRACTION * full_rank else "full"
        if method == "full":
            u, s, vt = np.linalg.svd(a, full_matrices=False)
        elif method == "randomized":
            u, s, vt = randomized_svd(a, rank, oversample=oversample, power_iters=power_iters, seed=seed)
        else:
            raise ValueError(f"LowRank.from_matrix: method must be auto/full/randomized, got {method!r}")
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
