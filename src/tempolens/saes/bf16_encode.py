"""The TopK encode of a wide SAE from a bfloat16 matmul, with the exact top ``k``.

A TopK SAE's encode is one ``[tokens, d] × [d, width]`` matmul and a top-``k`` per token. At 16k–65k latents the
float32 matmul is as long as the LM forward on a CPU. With native bfloat16 matmuls (AMX, AVX512-BF16) the bfloat16
product is ≈2.5× faster, and it is only used to screen: each entry's error is bounded (:mod:`tempolens.bf16`), so
``L``, the smallest lower bound among a token's ``k`` best screened scores, is at most the exact ``k``-th score, and
only the latents whose upper bound reaches ``L`` can be in the exact top ``k`` (≈150 per token for ``k = 64`` of 16,384
random latents, d = 640). Those are recomputed exactly (float64 sums of the float32 products plus ``b_enc``, rounded
once) and ranked.

So the selected latents are the exact top ``k`` of the pre-activations (a float32 matmul can differ from them only
at near-ties within its own rounding), and every value is the correctly rounded pre-activation, which may differ from
a float32 matmul's in its last bits. Three compiled passes: each token row screened (a running top ``k`` of the screened
scores, then its candidates), the candidates' exact values latent by latent (each encoder column is read once per
batch, not once per token), and each row's top ``k`` among them. A row holding a non-finite score, or more candidates
than the screen keeps, is redone in float32 by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tempolens.bf16 import OUTPUT_ROUND, compiled, float32_numpy, input_slack, match_torch_threads

try:  # a declared dependency; without it the SAEs encode in float32
    from numba import njit, prange

    from tempolens.bf16 import dot64
except ImportError:  # pragma: no cover - exercised only where numba cannot be installed
    njit = None

MIN_WIDTH = 8192
"""Narrower SAEs encode in float32: at 4,096 latents the screening passes cost more than the matmul saves."""


@dataclass
class Bf16Encoder:
    """What the screened encode needs of ``W_enc [d, width]``, computed once per set of weights."""

    W_b: Tensor
    """``[d, width]`` bfloat16 copy of ``W_enc``."""
    W_t: Tensor
    """``[width, d]`` float32 ``W_enc`` transposed (contiguous rows for the exact recomputation)."""
    col_norms: Tensor
    """``[width]`` float64 ``‖W_enc[:, j]‖``, rounded up."""
    b_enc: Tensor
    """``[width]`` float32."""
    mult: Tensor
    """``[width]`` float32 non-negative multiplier of each score (``‖W_dec‖`` under ``rescale_acts_by_decoder_norm``,
    else ones)."""
    key: tuple
    """The weights' identity and versions: rebuilt when they change."""
    _out: Tensor | None = None

    @classmethod
    def of(cls, W_enc: Tensor, b_enc: Tensor, mult: Tensor | None, key: tuple) -> Bf16Encoder:
        W = W_enc.detach()
        ones = torch.ones(W.shape[1], dtype=torch.float32)
        return cls(
            W_b=W.to(torch.bfloat16),
            W_t=W.T.contiguous(),
            col_norms=W.double().norm(dim=0) * (1 + 2.0**-40),
            b_enc=b_enc.detach().float().contiguous(),
            mult=(mult.detach().float() if mult is not None else ones).contiguous(),
            key=key,
        )

    def screened(self, xc: Tensor) -> Tensor:
        """``[n, width]`` bfloat16 ``xc · W_enc`` (``xc [n, d]`` float32), into a buffer reused across calls."""
        n, width = xc.shape[0], self.W_b.shape[1]
        if self._out is None or self._out.shape[0] < n:
            with torch.inference_mode(False):  # a normal tensor: reusable in and out of inference mode
                self._out = torch.empty(n, width, dtype=torch.bfloat16)
        return torch.mm(xc.to(torch.bfloat16), self.W_b, out=self._out[:n])


def available(x: Tensor, W_enc: Tensor, k: int) -> bool:
    """Whether the screened encode applies: numba, CPU float32 tensors, a width of at least :data:`MIN_WIDTH` and ``k``
    at most a quarter of it."""
    width = W_enc.shape[1]
    return (
        njit is not None
        and compiled(x, W_enc)
        and W_enc.dtype == torch.float32
        and width >= MIN_WIDTH
        and 1 <= k <= width // 4
    )


def topk_scores(xc: Tensor, enc: Bf16Encoder, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(values [n, k] float32, latents [n, k] int64, candidates [n] int64)``: per row of ``xc [n, d]`` (float32,
    centred input) the ``k`` largest scores ``(xc·W_enc + b_enc)·mult``, descending (ties: the lower latent first),
    computed exactly (module docstring), and how many latents were recomputed; ``−1`` candidates marks a row with a
    non-finite screened score or more than ``max(8k, 1024)`` candidates (its values are not computed: redo it in
    float32)."""
    xc = xc.detach()
    Y = enc.screened(xc)
    a = input_slack(xc).squeeze(1).double()
    match_torch_threads()
    bits = Y.view(torch.int16).numpy().view(np.uint16)
    vals, idx, n_cand = _topk_rows(
        bits,
        float32_numpy(xc),
        enc.W_t.numpy(),
        enc.b_enc.numpy(),
        enc.mult.numpy(),
        a.numpy(),
        enc.col_norms.numpy(),
        k,
        OUTPUT_ROUND,
        max(8 * k, 1024),
    )
    return torch.from_numpy(vals), torch.from_numpy(idx), torch.from_numpy(n_cand)


if njit is not None:

    @njit(inline="always", nogil=True, boundscheck=False)
    def _worse(v: float, i: int, w: float, j: int) -> bool:  # pragma: no cover - compiled
        """Whether entry ``(v, i)`` ranks below ``(w, j)``: a smaller value, or an equal one with a larger index."""
        return v < w or (v == w and i > j)

    @njit(inline="always", nogil=True, boundscheck=False)
    def _sift(hv: Any, hi: Any, p: int, k: int) -> None:  # pragma: no cover - compiled
        """Restore the min-heap (the worst entry at the root) below position ``p``."""
        while True:
            c = 2 * p + 1
            if c >= k:
                return
            if c + 1 < k and _worse(hv[c + 1], hi[c + 1], hv[c], hi[c]):
                c += 1
            if not _worse(hv[c], hi[c], hv[p], hi[p]):
                return
            hv[p], hv[c] = hv[c], hv[p]
            hi[p], hi[c] = hi[c], hi[p]
            p = c

    @njit(inline="always", nogil=True, boundscheck=False)
    def _push(hv: Any, hi: Any, size: int, k: int, v: float, i: int) -> int:  # pragma: no cover - compiled
        """Offer ``(v, i)`` to the heap of the ``k`` best seen so far (``size`` entries filled); the new size."""
        if size < k:
            hv[size], hi[size] = v, i
            size += 1
            if size == k:
                for p in range(k // 2 - 1, -1, -1):
                    _sift(hv, hi, p, k)
            return size
        if _worse(hv[0], hi[0], v, i):
            hv[0], hi[0] = v, i
            _sift(hv, hi, 0, k)
        return size

    @njit(nogil=True, boundscheck=False)
    def _screen_row(
        bits: Any, b: Any, m: Any, a: float, norms: Any, k: int, r: float, y: Any, sc: Any, hv: Any, hi: Any, out: Any
    ) -> int:  # pragma: no cover - compiled
        """The candidates of one row into ``out``; their number, or −1 when a screened score is not finite or they
        do not fit in ``out``. ``bits``: the row's screened products (bfloat16 bit patterns); ``y`` (float32), ``sc``
        (float64), ``hv``, ``hi``: scratch."""
        width = bits.shape[0]
        u = y.view(np.uint32)
        nan = 0.0
        for j in range(width):  # the screened scores s = (y + b)·m, y widened exactly from its bit pattern
            u[j] = np.uint32(bits[j]) << np.uint32(16)
            sc[j] = (np.float64(y[j]) + b[j]) * m[j]
            nan += sc[j] * 0.0  # NaN as soon as one score is not finite
        if nan != 0.0:
            return -1
        for j in range(k):
            hv[j], hi[j] = sc[j], j
        for p in range(k // 2 - 1, -1, -1):
            _sift(hv, hi, p, k)
        root = hv[0]
        for j in range(k, width):  # the k best screened scores
            if sc[j] > root:
                hv[0], hi[0] = sc[j], j
                _sift(hv, hi, 0, k)
                root = hv[0]
        low = np.inf  # L: the smallest lower bound among them
        for p in range(k):
            j = hi[p]
            low = min(low, hv[p] - (a * norms[j] + r * abs(np.float64(y[j]))) * m[j] - 2.0**-50 * abs(hv[p]))
        n = 0
        for j in range(width):  # the candidates: upper bound ≥ L
            if sc[j] + (a * norms[j] + r * abs(np.float64(y[j]))) * m[j] + 2.0**-50 * abs(sc[j]) >= low:
                if n == out.shape[0]:
                    return -1
                out[n] = j
                n += 1
        return n

    @njit(nogil=True, boundscheck=False)
    def _by_latent(cand: Any, n_cand: Any, width: int) -> Any:  # pragma: no cover - compiled
        """The candidate slots ``t·cap + p`` grouped by latent (CSR: offsets ``[width + 1]``, slots)."""
        n, cap = cand.shape
        offsets = np.zeros(width + 1, dtype=np.int64)
        for t in range(n):
            for p in range(max(n_cand[t], 0)):
                offsets[cand[t, p] + 1] += 1
        for j in range(width):
            offsets[j + 1] += offsets[j]
        fill = offsets[:-1].copy()
        slots = np.empty(offsets[width], dtype=np.int64)
        for t in range(n):
            for p in range(max(n_cand[t], 0)):
                j = cand[t, p]
                slots[fill[j]] = t * cap + p
                fill[j] += 1
        return offsets, slots

    @njit(parallel=True, cache=True, nogil=True, boundscheck=False)
    def _topk_rows(
        Y: Any, X: Any, W_t: Any, b: Any, m: Any, a: Any, norms: Any, k: int, r: float, cap: int
    ) -> Any:  # pragma: no cover - compiled
        n, width = Y.shape
        cand = np.empty((n, cap), dtype=np.int64)
        n_cand = np.empty(n, dtype=np.int64)
        for t in prange(n):  # screen every row
            y = np.empty(width, dtype=np.float32)
            sc = np.empty(width, dtype=np.float64)
            hv = np.empty(k, dtype=np.float64)
            hi = np.empty(k, dtype=np.int64)
            n_cand[t] = _screen_row(Y[t], b, m, a[t], norms, k, r, y, sc, hv, hi, cand[t])
        offsets, slots = _by_latent(cand, n_cand, width)
        exact = np.empty((n, cap), dtype=np.float64)
        flat = exact.reshape(-1)
        for j in prange(width):  # exact values, latent by latent: each row of W_t is read once
            for q in range(offsets[j], offsets[j + 1]):
                s = slots[q]
                flat[s] = (dot64(X[s // cap], W_t[j]) + b[j]) * m[j]
        vals = np.zeros((n, k), dtype=np.float32)
        idx = np.zeros((n, k), dtype=np.int64)
        for t in prange(n):  # the exact top k of each row's candidates, descending, ties by latent
            if n_cand[t] < 0:
                continue
            hv = np.empty(k, dtype=np.float64)
            hi = np.empty(k, dtype=np.int64)
            size = 0
            for p in range(n_cand[t]):
                size = _push(hv, hi, size, k, exact[t, p], cand[t, p])
            order = np.argsort(-hv, kind="mergesort")
            for p in range(k):
                q = p
                while q > 0 and hv[order[q]] == hv[order[q - 1]] and hi[order[q]] < hi[order[q - 1]]:
                    order[q], order[q - 1] = order[q - 1], order[q]
                    q -= 1
            for p in range(k):
                vals[t, p] = np.float32(hv[order[p]])
                idx[t, p] = hi[order[p]]
        return vals, idx, n_cand
