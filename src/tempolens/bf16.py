"""bfloat16 matmuls whose float32 answers stay exact: the rounding bound, and the exact recomputation.

On a CPU with native bfloat16 matmuls (AMX, AVX512-BF16) a bfloat16 matmul with float32 accumulation runs 2–4× faster
than float32. Where only a few entries of the product matter (the top ``k`` of each row), the bfloat16 product screens
them: with a rigorous bound on each entry's error, only the entries that could be among the exact top ``k`` are
recomputed exactly. Two stages use it: the logit effects (:mod:`tempolens.stats.logits`) and the TopK encode of wide
SAEs (:mod:`tempolens.saes.bf16_encode`).

The bound. For float32 vectors ``w`` (one row of the left factor) and ``u`` (one column of the right), with ``ŵ, û``
their bfloat16 roundings and ``y`` the bfloat16 matmul's entry (float32 sums of exact products, rounded to bfloat16 on
output)::

    |y − w·u| ≤ a(w)·‖u‖ + r·|y|,   a(w) = ‖w − ŵ‖ + 2⁻⁸‖ŵ‖ + 2d·2⁻²⁴‖w‖,   r = 2⁻⁸ / (1 − 2⁻⁸)

(``w·u − ŵ·û = (w − ŵ)·u + ŵ·(u − û)``, Cauchy–Schwarz with ``‖u − û‖ ≤ 2⁻⁸‖u‖``; the float32 sums, at most two
roundings per term; the output's rounding to bfloat16). :func:`input_slack` gives ``a`` per row.

The exact values: :func:`exact_dots` recomputes chosen entries as float64 sums of the float32 inputs' products (each
product is exact in float64), rounded once to float32: the correctly rounded value up to float64's own rounding, so it
may differ from a float32 matmul's entry in the last float32 bits (which sums in another order) but is closer to
the exact one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

try:  # a declared dependency; the torch reference keeps working where no numba wheel exists
    import numba
    from numba import njit, prange
except ImportError:  # pragma: no cover - exercised only where numba cannot be installed
    numba = None

BF16_ROUND = 2.0**-8
"""Unit roundoff of bfloat16 (8 significant bits): rounding to nearest changes a value by at most this fraction."""

OUTPUT_ROUND = BF16_ROUND / (1 - BF16_ROUND)
"""``r``: the relative error of a bfloat16 output, measured against the rounded value."""


def input_slack(w: Tensor) -> Tensor:
    """``a(w)`` of every row of ``w [n, d]`` (float32, ``[n, 1]``): the bfloat16 matmul's entry ``y`` with a column
    ``u`` is within ``a·‖u‖ + r·|y|`` of ``w·u`` (module docstring). Rounded up by 2⁻¹⁶ relative to cover its own
    float32 arithmetic."""
    wb = w.to(torch.bfloat16).float()
    a = (w - wb).norm(dim=1, keepdim=True) + BF16_ROUND * wb.norm(dim=1, keepdim=True)
    a = a + 2 * w.shape[1] * 2.0**-24 * w.norm(dim=1, keepdim=True)
    return a * (1 + 2.0**-16)


def compiled(*tensors: Tensor) -> bool:
    """Whether the compiled kernels can run on ``tensors``: numba is importable and every tensor is on the CPU."""
    return numba is not None and all(t.device.type == "cpu" for t in tensors)


def match_torch_threads() -> None:
    """Run the compiled kernels on as many threads as torch (never more than numba was started with). Needs numba."""
    assert numba is not None
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


def exact_dots(A: Tensor, B: Tensor, ia: Tensor, ib: Tensor) -> Tensor:
    """``[n]`` float32: ``A[ia[p]] · B[ib[p]]`` for every ``p``, summed in float64 from the float32 rows and rounded
    once (``A [m, d]``, ``B [q, d]`` float32; ``ia``, ``ib`` int64 ``[n]``). Compiled on the CPU (no gathered copy of
    the rows), else in torch (the same float64 products, summed in torch's order)."""
    if compiled(A, B) and A.dtype == B.dtype == torch.float32:
        match_torch_threads()
        out = _exact_dots(float32_numpy(A), float32_numpy(B), ia.contiguous().numpy(), ib.contiguous().numpy())
        return torch.from_numpy(out)
    return (A[ia].double() * B[ib].double()).sum(1).float()


def float32_numpy(t: Tensor) -> np.ndarray:
    """A C-contiguous float32 numpy view (a copy only when ``t`` is not already one)."""
    return t.detach().to(torch.float32).contiguous().numpy()


if numba is not None:

    @njit(inline="always", nogil=True, boundscheck=False, fastmath=False)
    def dot64(a: Any, b: Any) -> float:  # pragma: no cover - compiled
        """``a · b`` of two float32 rows as a float64 sum (four interleaved partial sums)."""
        n = a.shape[0]
        s0 = s1 = s2 = s3 = 0.0
        j = 0
        while j + 4 <= n:
            s0 += np.float64(a[j]) * np.float64(b[j])
            s1 += np.float64(a[j + 1]) * np.float64(b[j + 1])
            s2 += np.float64(a[j + 2]) * np.float64(b[j + 2])
            s3 += np.float64(a[j + 3]) * np.float64(b[j + 3])
            j += 4
        while j < n:
            s0 += np.float64(a[j]) * np.float64(b[j])
            j += 1
        return (s0 + s1) + (s2 + s3)

    @njit(parallel=True, cache=True, nogil=True, boundscheck=False)
    def _exact_dots(A: Any, B: Any, ia: Any, ib: Any) -> Any:  # pragma: no cover - compiled
        n = ia.shape[0]
        out = np.empty(n, dtype=np.float32)
        for p in prange(n):
            out[p] = np.float32(dot64(A[ia[p]], B[ib[p]]))
        return out
