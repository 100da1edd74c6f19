"""Compiled CPU kernels (numba) for the two passes of the logit effects that torch can only do as several
whole-array passes: the per-latent vocabulary histogram and the scan for top/bottom-``k`` candidates.

Each is a single pass over a block's ``[B, vocab]`` float32 logits, rows in parallel, that computes exactly what
the torch reference in :mod:`tempolens.stats.logits` computes (same float32 operations in the same order; the
tests compare them bit for bit). On a 2-core AMX Xeon, for 256 latents × Gemma 3's 262,144 tokens: the histogram
≈45 ms instead of ≈190 ms (torch needs six passes over a 268 MB buffer, and its ``bincount`` is single-threaded),
the candidate scan a few ms instead of ≈60 ms per end.

:func:`available` says whether they can run (numba importable, tensors on the CPU); otherwise callers use the
torch reference. The first call compiles them (a few seconds, once: numba caches the machine code beside this
file, or in the user cache when that is read-only).
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

_CHUNK = 4096
"""Tokens whose bin ids are computed (vectorised) before they are counted."""

_LANES = 8
"""Interleaved partial histograms per row (consecutive tokens rarely wait on the same counter)."""


def available(*tensors: Tensor) -> bool:
    """Whether the compiled kernels can run on ``tensors``: numba is importable and every tensor is a float32 CPU
    tensor."""
    return numba is not None and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)


def _threads() -> None:
    """Use as many threads as torch (never more than numba was started with)."""
    assert numba is not None
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


if numba is not None:

    @njit(parallel=True, cache=True, nogil=True, boundscheck=False)
    def _histogram_rows(X: Any, lo: Any, scale: Any, n_bins: int) -> Any:  # pragma: no cover - compiled
        B, V = X.shape
        out = np.zeros((B, n_bins), dtype=np.int64)
        top = np.float32(n_bins - 1)
        zero = np.float32(0.0)
        for b in prange(B):
            low, s = lo[b], scale[b]
            counts = np.zeros(n_bins * _LANES, dtype=np.int64)
            idx = np.empty(_CHUNK, dtype=np.int64)
            row = X[b]
            for c0 in range(0, V, _CHUNK):
                n = min(_CHUNK, V - c0)
                for j in range(n):  # (x - lo)·scale, clamped to the bins, truncated: as the torch reference
                    idx[j] = np.int64(min(max((row[c0 + j] - low) * s, zero), top))
                for j in range(n):
                    counts[(j % _LANES) * n_bins + idx[j]] += 1
            for j in range(n_bins):
                t = 0
                for lane in range(_LANES):
                    t += counts[lane * n_bins + j]
                out[b, j] = t
        return out

    @njit(nogil=True, boundscheck=False)
    def _scan_row(
        row: Any, sign: Any, r: Any, gy: Any, slack: Any, tail_slack: Any, bound: Any, group: int, out: Any, start: int
    ) -> int:  # pragma: no cover - compiled
        """Candidates of one row: written to ``out[start:]`` when ``out`` is long enough; returns their number."""
        V = row.shape[0]
        n_full = V // group
        n = 0
        for g in range(n_full):
            if gy[g] + r * abs(gy[g]) + slack[g] >= bound:
                sl = slack[g]
                for j in range(g * group, (g + 1) * group):
                    y = row[j] * sign
                    if y + r * abs(y) + sl >= bound:
                        if start + n < out.shape[0]:
                            out[start + n] = j
                        n += 1
        for t in range(V - n_full * group):
            j = n_full * group + t
            y = row[j] * sign
            if y + r * abs(y) + tail_slack[t] >= bound:
                if start + n < out.shape[0]:
                    out[start + n] = j
                n += 1
        return n

    @njit(parallel=True, cache=True, nogil=True, boundscheck=False)
    def _end_candidates(
        X: Any, sign: Any, r: Any, gy: Any, slack: Any, tail_slack: Any, bound: Any, group: int
    ) -> Any:  # pragma: no cover - compiled
        B = X.shape[0]
        none = np.empty(0, dtype=np.int64)
        counts = np.zeros(B, dtype=np.int64)
        for b in prange(B):
            counts[b] = _scan_row(X[b], sign, r, gy[b], slack[b], tail_slack[b], bound[b], group, none, 0)
        offsets = np.zeros(B + 1, dtype=np.int64)
        for b in range(B):
            offsets[b + 1] = offsets[b] + counts[b]
        cols = np.empty(offsets[B], dtype=np.int64)
        rows = np.empty(offsets[B], dtype=np.int64)
        for b in prange(B):
            _scan_row(X[b], sign, r, gy[b], slack[b], tail_slack[b], bound[b], group, cols, offsets[b])
            rows[offsets[b] : offsets[b + 1]] = b
        return rows, cols


def histogram_rows(X: Tensor, lo: Tensor, scale: Tensor, n_bins: int) -> Tensor:
    """``[B, n_bins]`` int64 counts of each row of the float32 ``X [B, N]`` in the bins ``int(clamp((x − lo)·scale,
    0, n_bins − 1))`` (``lo``, ``scale``: float32 ``[B]``). ``X`` is only read."""
    _threads()
    return torch.from_numpy(_histogram_rows(_np(X), _np(lo), _np(scale), n_bins))


def end_candidates(
    X: Tensor, sign: float, r: float, gy: Tensor, slack: Tensor, tail_slack: Tensor, bound: Tensor, group: int
) -> tuple[Tensor, Tensor]:
    """``(rows, cols)`` of every entry of ``X [B, V]`` (float32) with ``y + r·|y| + s ≥ bound[row]``, ``y = sign·x``,
    ``s`` its group's ``slack`` (``[B, V // group]``), or for the last ``V mod group`` columns its own ``tail_slack``;
    a whole group is skipped when its largest ``y`` (``gy``) fails the test. Row-major order; float32 arithmetic."""
    _threads()
    f32 = np.float32
    rows, cols = _end_candidates(_np(X), f32(sign), f32(r), _np(gy), _np(slack), _np(tail_slack), _np(bound), group)
    return torch.from_numpy(rows), torch.from_numpy(cols)


def _np(t: Tensor) -> np.ndarray:
    """A C-contiguous float32 numpy view (a copy only when ``t`` is not already one)."""
    return t.detach().to(torch.float32).contiguous().numpy()
