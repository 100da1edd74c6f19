"""Compiled CPU kernel (numba) for the ranking of the correlated latents: per row of a block, the ``k`` largest
Pearson values over the pairs that fired together (and the never-co-active candidates), from one pass over them.

The torch reference in :mod:`tempolens.stats.correlations` gathers four float64 columns per pair, computes every
Pearson value, and ranks them with ``k`` rounds of scatter reductions: at 16,384 latents × 32,768 tokens that is tens
of millions of pairs and ≈ 4 s on one core, most of it memory traffic. Here each row keeps its top ``k`` in a small
sorted list while its pairs stream by, rows in parallel. The Pearson values are the same float64 operations in the
same order, ranked in float32 with ties by the lower column, so the result is the reference's exactly (the tests
compare them).

:func:`available` says whether it can run (numba importable, tensors on the CPU); otherwise callers use the torch
reference. The first call compiles it (a few seconds, once: numba caches the machine code).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from tempolens.bf16 import match_torch_threads

try:  # a declared dependency; the torch reference keeps working where no numba wheel exists
    import numba
    from numba import njit, prange
except ImportError:  # pragma: no cover - exercised only where numba cannot be installed
    numba = None


def available(*tensors: Tensor) -> bool:
    """Whether the compiled ranking can run on ``tensors``: numba is importable and every tensor is on the CPU."""
    return numba is not None and all(t.device.type == "cpu" for t in tensors)


if numba is not None:

    @njit(inline="always")
    def _better(v: Any, c: Any, v2: Any, c2: Any) -> bool:  # pragma: no cover - compiled
        return v > v2 or (v == v2 and c < c2)

    @njit(parallel=True, cache=True, nogil=True, boundscheck=False)
    def _rank_pairs(
        rows: Any, cols: Any, sxy: Any, n: float, sx: Any, inv: Any, start: int, R: int, k: int
    ) -> Any:  # pragma: no cover - compiled
        N = rows.shape[0]
        first = np.zeros(R + 1, dtype=np.int64)  # the entries of each row, in input order (a counting sort)
        for e in range(N):
            first[rows[e] - start + 1] += 1
        for r in range(R):
            first[r + 1] += first[r]
        order = np.empty(N, dtype=np.int64)
        fill = first[:R].copy()
        for e in range(N):
            r = rows[e] - start
            order[fill[r]] = e
            fill[r] += 1
        best = np.full((R, k), -1, dtype=np.int64)
        best_p = np.zeros((R, k), dtype=np.float64)
        for r in prange(R):
            vals = np.empty(k, dtype=np.float32)
            cs = np.empty(k, dtype=np.int64)
            m = 0
            for q in range(first[r], first[r + 1]):
                e = order[q]
                i, j = rows[e], cols[e]
                p = (sxy[e] * n - sx[i] * sx[j]) * inv[i] * inv[j]
                v = np.float32(p)
                if not np.isfinite(v):
                    continue
                if m < k:
                    pos = m
                    m += 1
                elif _better(v, j, vals[k - 1], cs[k - 1]):
                    pos = k - 1
                else:
                    continue
                while pos > 0 and _better(v, j, vals[pos - 1], cs[pos - 1]):
                    vals[pos], cs[pos] = vals[pos - 1], cs[pos - 1]
                    best[r, pos], best_p[r, pos] = best[r, pos - 1], best_p[r, pos - 1]
                    pos -= 1
                vals[pos], cs[pos], best[r, pos], best_p[r, pos] = v, j, e, p
        return best, best_p


def rank_pairs(
    rows: Tensor, cols: Tensor, sxy: Tensor, n: float, sx: Tensor, inv_std: Tensor, start: int, R: int, k: int
) -> tuple[Tensor, Tensor]:
    """``(positions [R, k], pearson [R, k])``: for each row ``start … start + R − 1``, the positions (into the entries
    ``rows, cols, sxy``; −1 where a row has fewer finite values) of its ``k`` largest Pearson values
    ``((n·sxy − sx_i·sx_j)·inv_i)·inv_j`` (float64, ``inv`` = ``inv_std``) ranked in float32, ties by the lower
    column, and those float64 values (0 at −1). The entries' rows must lie in the block."""
    match_torch_threads()
    i64, f64 = torch.int64, torch.float64
    best, best_p = _rank_pairs(
        rows.to(i64).contiguous().numpy(),
        cols.to(i64).contiguous().numpy(),
        sxy.to(f64).contiguous().numpy(),
        float(n),
        sx.to(f64).contiguous().numpy(),
        inv_std.to(f64).contiguous().numpy(),
        int(start),
        int(R),
        int(k),
    )
    return torch.from_numpy(best), torch.from_numpy(best_p)
