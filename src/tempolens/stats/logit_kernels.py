"""Compiled CPU kernels (numba) for the passes of the logit effects that torch can only do as several whole-array
passes: the per-latent vocabulary histogram and the scan for top/bottom-``k`` candidates.

Each is a single pass over a block's ``[B, vocab]`` logits, rows in parallel, that computes exactly what the torch
reference in :mod:`tempolens.stats.logits` computes (same float32 operations in the same order; the tests compare
them bit for bit). The logits may be float32 or bfloat16: bfloat16 values are read as their bit patterns and
widened to float32 exactly, chunk by chunk, so the bf16 route never makes a float32 copy of its logits (a third
pass, :func:`group_extremes`, gives the per-group maxima and minima the candidate scan needs).

On bfloat16 logits of a wide vocabulary the route reads them in full only once: :func:`extremes_and_counts` takes
the group extremes and, in the same read, counts how often each of the 65,536 bfloat16 values occurs in each row;
:func:`histogram_of_counts` then bins each distinct value once (the same counts as :func:`histogram_rows`, whose bin
of a value depends only on the value). :func:`exact_ends` does both exact ends of a row in one pass: the bound, the
candidate scan, the float64 dot products and the ranking. Per block of 256 latents × Gemma 3's 262,144 tokens on
the 2-core AVX512-BF16 EPYC: extremes + histogram 74 → 37 ms, both ends 47 → 26–35 ms. On a 2-core AMX
Xeon, for 256 latents × Gemma 3's 262,144 tokens: the histogram ≈45 ms instead of ≈190 ms (torch needs six passes
over a 268 MB buffer, and its ``bincount`` is single-threaded), the candidate scan a few ms instead of ≈60 ms per
end. On a 2-core AVX512-BF16 EPYC (no AMX), reading bfloat16 took a block from 537 to 437 ms, of which the matmul
is 225 ms.

:func:`available` says whether they can run (numba importable, tensors on the CPU); otherwise callers use the
torch reference. The first call compiles them (a few seconds, once: numba caches the machine code beside this
file, or in the user cache when that is read-only).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from tempolens.bf16 import float32_numpy, match_torch_threads

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
    """Whether the compiled kernels can run on ``tensors``: numba is importable and every tensor is a float32 or
    bfloat16 CPU tensor."""
    return numba is not None and all(t.device.type == "cpu" and t.dtype in _DTYPES for t in tensors)


_DTYPES = (torch.float32, torch.bfloat16)


if numba is not None:
    from tempolens.bf16 import dot64

    @njit(inline="always", nogil=True, boundscheck=False)
    def _load(row: Any, c0: int, n: int, bits: bool, out: Any) -> None:  # pragma: no cover - compiled
        """``row[c0 : c0 + n]`` as float32 into ``out[:n]``; ``bits``: ``row`` holds bfloat16 bit patterns (uint16),
        widened exactly (the float32 whose upper half they are)."""
        if bits:
            u = out.view(np.uint32)
            for j in range(n):
                u[j] = np.uint32(row[c0 + j]) << np.uint32(16)
        else:
            for j in range(n):
                out[j] = row[c0 + j]

    @njit(inline="always", nogil=True, boundscheck=False)
    def _bin(x: Any, low: Any, s: Any, zero: Any, top: Any) -> int:  # pragma: no cover - compiled
        """Bin ``int(clamp((x − lo)·scale, 0, n_bins − 1))`` in float32; NaN goes to bin 0, where the torch reference's
        integer conversion and clamp put it (and never outside the counts)."""
        v = (x - low) * s
        return np.int64(min(max(v, zero), top)) if v == v else 0

    @njit(parallel=True, cache=True, nogil=True, boundscheck=False)
    def _histogram_rows(X: Any, bits: bool, lo: Any, scale: Any, n_bins: int) -> Any:  # pragma: no cover - compiled
        B, V = X.shape
        out = np.zeros((B, n_bins), dtype=np.int64)
        top = np.float32(n_bins - 1)
        zero = np.float32(0.0)
        for b in prange(B):
            low, s = lo[b], scale[b]
            counts = np.zeros(n_bins * _LANES, dtype=np.int64)
            idx = np.empty(_CHUNK, dtype=np.int64)
            vals = np.empty(_CHUNK, dtype=np.float32)
            row = X[b]
            for c0 in range(0, V, _CHUNK):
                n = min(_CHUNK, V - c0)
                _load(row, c0, n, bits, vals)
                for j in range(n):  # (x - lo)·scale, clamped to the bins, truncated: as the torch reference
                    idx[j] = _bin(vals[j], low, s, zero, top)
                for j in range(n):
                    counts[(j % _LANES) * n_bins + idx[j]] += 1
            for j in range(n_bins):
                t = 0
                for lane in range(_LANES):
                    t += counts[lane * n_bins + j]
                out[b, j] = t
        return out

    @njit(inline="always", nogil=True, boundscheck=False)
    def _extremes(vals: Any, n: int) -> Any:  # pragma: no cover - compiled
        """``(max, min)`` of ``vals[:n]``; both NaN when one is NaN, as in torch.amax/amin."""
        hi = lo = vals[0]
        nan = False
        for j in range(1, n):
            x = vals[j]
            hi = x if x > hi else hi
            lo = x if x < lo else lo
            nan |= x != x
        if nan or hi != hi:
            hi = lo = np.float32(np.nan)
        return hi, lo

    @njit(parallel=True, cache=True, nogil=True, boundscheck=False)
    def _group_extremes(X: Any, bits: bool, group: int) -> Any:  # pragma: no cover - compiled
        B, V = X.shape
        n_full = V // group
        n_groups = n_full + (1 if V > n_full * group else 0)
        gmax = np.empty((B, n_groups), dtype=np.float32)
        gmin = np.empty((B, n_groups), dtype=np.float32)
        for b in prange(B):
            vals = np.empty(group, dtype=np.float32)
            row = X[b]
            for g in range(n_groups):
                n = min(group, V - g * group)
                _load(row, g * group, n, bits, vals)
                gmax[b, g], gmin[b, g] = _extremes(vals, n)
        return gmax, gmin

    @njit(parallel=True, cache=True, nogil=True, boundscheck=False)
    def _extremes_and_counts(X: Any, group: int, table: Any) -> Any:  # pragma: no cover - compiled
        """:func:`_group_extremes` of bfloat16 bit patterns ``X``, and in the same read each row's count of every bit
        pattern into ``table [B, 65536]`` (int32: a row has fewer than 2³¹ tokens)."""
        B, V = X.shape
        n_full = V // group
        n_groups = n_full + (1 if V > n_full * group else 0)
        gmax = np.empty((B, n_groups), dtype=np.float32)
        gmin = np.empty((B, n_groups), dtype=np.float32)
        for b in prange(B):
            counts = table[b]
            counts[:] = 0
            vals = np.empty(group, dtype=np.float32)
            row = X[b]
            for g in range(n_groups):
                c0 = g * group
                n = min(group, V - c0)
                _load(row, c0, n, True, vals)
                gmax[b, g], gmin[b, g] = _extremes(vals, n)
                for j in range(n):  # the group is in L1 by now
                    counts[row[c0 + j]] += 1
        return gmax, gmin

    @njit(parallel=True, cache=True, nogil=True, boundscheck=False)
    def _histogram_of_counts(table: Any, lo: Any, scale: Any, n_bins: int) -> Any:  # pragma: no cover - compiled
        B = table.shape[0]
        out = np.zeros((B, n_bins), dtype=np.int64)
        top = np.float32(n_bins - 1)
        zero = np.float32(0.0)
        for b in prange(B):
            counts = table[b]
            low, s = lo[b], scale[b]
            x = np.empty(1, dtype=np.float32)
            u = x.view(np.uint32)
            for bits in range(65536):
                c = counts[bits]
                if c:  # the same float32 operations as _histogram_rows, once per distinct value
                    u[0] = np.uint32(bits) << np.uint32(16)
                    out[b, _bin(x[0], low, s, zero, top)] += c
        return out

    @njit(nogil=True, boundscheck=False)
    def _scan_row(
        row: Any,
        bits: bool,
        sign: Any,
        r: Any,
        gy: Any,
        slack: Any,
        tail_slack: Any,
        bound: Any,
        group: int,
        out: Any,
        start: int,
        vals: Any,
    ) -> int:  # pragma: no cover - compiled
        """Candidates of one row: written to ``out[start:]`` when ``out`` is long enough; returns their number
        (``vals``: a float32 scratch of at least ``max(group, V mod group)`` values)."""
        V = row.shape[0]
        n_full = V // group
        n = 0
        for g in range(n_full):
            if gy[g] + r * abs(gy[g]) + slack[g] >= bound:
                sl = slack[g]
                _load(row, g * group, group, bits, vals)
                for t in range(group):
                    y = vals[t] * sign
                    if y + r * abs(y) + sl >= bound:
                        if start + n < out.shape[0]:
                            out[start + n] = g * group + t
                        n += 1
        tail = V - n_full * group
        _load(row, n_full * group, tail, bits, vals)
        for t in range(tail):
            y = vals[t] * sign
            if y + r * abs(y) + tail_slack[t] >= bound:
                if start + n < out.shape[0]:
                    out[start + n] = n_full * group + t
                n += 1
        return n

    @njit(parallel=True, cache=True, nogil=True, boundscheck=False)
    def _end_candidates(
        X: Any, bits: bool, sign: Any, r: Any, gy: Any, slack: Any, tail_slack: Any, bound: Any, group: int
    ) -> Any:  # pragma: no cover - compiled
        B, V = X.shape
        none = np.empty(0, dtype=np.int64)
        counts = np.zeros(B, dtype=np.int64)
        for b in prange(B):
            vals = np.empty(max(group, V % group), dtype=np.float32)
            counts[b] = _scan_row(X[b], bits, sign, r, gy[b], slack[b], tail_slack[b], bound[b], group, none, 0, vals)
        offsets = np.zeros(B + 1, dtype=np.int64)
        for b in range(B):
            offsets[b + 1] = offsets[b] + counts[b]
        cols = np.empty(offsets[B], dtype=np.int64)
        rows = np.empty(offsets[B], dtype=np.int64)
        for b in prange(B):
            vals = np.empty(max(group, V % group), dtype=np.float32)
            _scan_row(X[b], bits, sign, r, gy[b], slack[b], tail_slack[b], bound[b], group, cols, offsets[b], vals)
            rows[offsets[b] : offsets[b + 1]] = b
        return rows, cols

    @njit(inline="always")
    def _ahead(key: Any, col: Any, key2: Any, col2: Any) -> bool:  # pragma: no cover - compiled
        return key > key2 or (key == key2 and col < col2)

    @njit(nogil=True, boundscheck=False)
    def _end_bound(
        row: Any, sign: Any, r: Any, a: Any, norms: Any, gx: Any, k: int, group: int, vals: Any
    ) -> Any:  # pragma: no cover - compiled
        """``L`` of :func:`tempolens.stats.logits._exact_end` for one row (float32): the smallest ``Y − r·|Y| − a·‖u‖``
        over the ``k`` largest ``Y`` of the ``k`` groups with the largest extremes. NaN when a value is NaN or the row
        has fewer than ``k`` tokens."""
        V = row.shape[0]
        kg = min(k, gx.shape[0])
        gv = np.full(kg, -np.inf, dtype=np.float32)  # the kg groups with the largest Y = sign · group extreme
        gi = np.full(kg, -1, dtype=np.int64)
        for g in range(gx.shape[0]):
            y = sign * gx[g]
            if y != y:
                return np.float32(np.nan)
            if gi[kg - 1] < 0 or y > gv[kg - 1]:
                p = kg - 1
                while p > 0 and (gi[p - 1] < 0 or y > gv[p - 1]):
                    gv[p], gi[p] = gv[p - 1], gi[p - 1]
                    p -= 1
                gv[p], gi[p] = y, g
        ty = np.full(k, -np.inf, dtype=np.float32)  # the k largest Y in those groups
        tc = np.full(k, -1, dtype=np.int64)
        m = 0
        for q in range(kg):
            c0 = gi[q] * group
            n = min(group, V - c0)
            _load(row, c0, n, True, vals)
            for t in range(n):
                y = sign * vals[t]
                if m < k:
                    p = m
                    m += 1
                elif y > ty[k - 1]:
                    p = k - 1
                else:
                    continue
                while p > 0 and y > ty[p - 1]:
                    ty[p], tc[p] = ty[p - 1], tc[p - 1]
                    p -= 1
                ty[p], tc[p] = y, c0 + t
        if m < k:
            return np.float32(np.nan)
        bound = np.float32(np.inf)  # at most the exact k-th value
        for i in range(k):
            bound = min(bound, ty[i] - r * abs(ty[i]) - a * norms[tc[i]])
        return bound

    @njit(nogil=True, boundscheck=False)
    def _one_end(
        row: Any,
        U: Any,
        w: Any,
        sign: Any,
        r: Any,
        a: Any,
        norms: Any,
        group_norms: Any,
        gx: Any,
        k: int,
        group: int,
        vals: Any,
        out_v: Any,
        out_i: Any,
    ) -> bool:  # pragma: no cover - compiled
        """One end of one row (the torch :func:`tempolens.stats.logits._exact_end`, fused): ``False`` when a value is
        not finite or the row has fewer than ``k`` tokens (the caller redoes the row)."""
        V = row.shape[0]
        n_full = V // group
        bound = _end_bound(row, sign, r, a, norms, gx, k, group, vals)
        if not np.isfinite(bound):
            return False
        gy = np.empty(n_full, dtype=np.float32)
        slack = np.empty(n_full, dtype=np.float32)
        for g in range(n_full):
            gy[g] = sign * gx[g]
            slack[g] = a * group_norms[g]
        tail = np.empty(V - n_full * group, dtype=np.float32)
        for t in range(tail.shape[0]):
            tail[t] = a * norms[n_full * group + t]
        none = np.empty(0, dtype=np.int64)
        n = _scan_row(row, True, sign, r, gy, slack, tail, bound, group, none, 0, vals)
        cand = np.empty(n, dtype=np.int64)
        _scan_row(row, True, sign, r, gy, slack, tail, bound, group, cand, 0, vals)
        bk = np.empty(k, dtype=np.float32)  # ranked by sign · exact value, then token id
        m = 0
        for q in range(n):
            c = cand[q]
            v = np.float32(dot64(U[c], w))
            if v != v:
                return False
            key = sign * v
            if m < k:
                p = m
                m += 1
            elif _ahead(key, c, bk[k - 1], out_i[k - 1]):
                p = k - 1
            else:
                continue
            while p > 0 and _ahead(key, c, bk[p - 1], out_i[p - 1]):
                bk[p], out_v[p], out_i[p] = bk[p - 1], out_v[p - 1], out_i[p - 1]
                p -= 1
            bk[p], out_v[p], out_i[p] = key, v, c
        return m == k

    @njit(parallel=True, cache=True, nogil=True, boundscheck=False)
    def _exact_ends(
        X: Any, U: Any, w: Any, r: Any, a: Any, norms: Any, group_norms: Any, gmax: Any, gmin: Any, k: int, group: int
    ) -> Any:  # pragma: no cover - compiled
        B, V = X.shape
        tv = np.zeros((B, k), dtype=np.float32)
        ti = np.zeros((B, k), dtype=np.int64)
        bv = np.zeros((B, k), dtype=np.float32)
        bi = np.zeros((B, k), dtype=np.int64)
        ok = np.zeros(B, dtype=np.bool_)
        one, minus = np.float32(1.0), np.float32(-1.0)
        for b in prange(B):
            vals = np.empty(max(group, V % group), dtype=np.float32)
            top = _one_end(X[b], U, w[b], one, r, a[b], norms, group_norms, gmax[b], k, group, vals, tv[b], ti[b])
            bot = _one_end(X[b], U, w[b], minus, r, a[b], norms, group_norms, gmin[b], k, group, vals, bv[b], bi[b])
            ok[b] = top and bot
        return tv, ti, bv, bi, ok


def exact_ends(
    X: Tensor,
    U: Tensor,
    w: Tensor,
    r: float,
    a: Tensor,
    norms: Tensor,
    group_norms: Tensor,
    gmax: Tensor,
    gmin: Tensor,
    k: int,
    group: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(top values, top ids, bottom values, bottom ids, ok)``: both exact ends of every row of the bfloat16 logits
    ``X [B, V]`` of ``w [B, d]`` through ``U [V, d]``, in one compiled pass per row: what
    :func:`tempolens.stats.logits._exact_end` computes in torch (the same float32 bound and candidate tests, the same
    float64 dot products, ranked by value then token id), without its whole-block gathers and sorts. ``a [B]``: each
    row's input slack; ``norms [V]``, ``group_norms``: the tokens' norms and each column group's largest;
    ``gmax``/``gmin``: the group extremes of ``X``. Rows with ``ok`` false (a non-finite value) hold no answer."""
    if X.dtype != torch.bfloat16:
        raise ValueError("exact_ends reads bfloat16 logits")
    match_torch_threads()
    data, _ = _logits(X)
    U_, w_, a_, norms_, gn_, gmax_, gmin_ = (
        float32_numpy(t) for t in (U, w, a.reshape(-1), norms, group_norms, gmax, gmin)
    )
    tv, ti, bv, bi, ok = _exact_ends(data, U_, w_, np.float32(r), a_, norms_, gn_, gmax_, gmin_, int(k), int(group))
    return torch.from_numpy(tv), torch.from_numpy(ti), torch.from_numpy(bv), torch.from_numpy(bi), torch.from_numpy(ok)


def histogram_rows(X: Tensor, lo: Tensor, scale: Tensor, n_bins: int) -> Tensor:
    """``[B, n_bins]`` int64 counts of each row of ``X [B, N]`` (float32 or bfloat16) in the bins
    ``int(clamp((x − lo)·scale, 0, n_bins − 1))`` computed in float32 (``lo``, ``scale``: float32 ``[B]``). ``X`` is
    only read."""
    match_torch_threads()
    data, bits = _logits(X)
    return torch.from_numpy(_histogram_rows(data, bits, float32_numpy(lo), float32_numpy(scale), n_bins))


def group_extremes(X: Tensor, group: int) -> tuple[Tensor, Tensor]:
    """``(maxima, minima)`` ``[B, ⌈V / group⌉]`` float32 of each group of ``group`` columns of ``X [B, V]`` (float32
    or bfloat16; the last ``V mod group`` columns are one more group), NaN when the group holds one: what
    ``amax``/``amin`` over the groups give."""
    match_torch_threads()
    data, bits = _logits(X)
    gmax, gmin = _group_extremes(data, bits, group)
    return torch.from_numpy(gmax), torch.from_numpy(gmin)


BF16_PATTERNS = 65536
"""Distinct bfloat16 bit patterns: the width of the count tables of :func:`extremes_and_counts`."""


def extremes_and_counts(X: Tensor, group: int, table: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`group_extremes` of bfloat16 logits ``X [B, V]`` and, from the same read, how often each bfloat16 value
    occurs in each row, into ``table`` (int32 ``[≥ B, 65536]``, overwritten; index = bit pattern). Its
    :func:`histogram_of_counts` is :func:`histogram_rows` of ``X``, computed once per distinct value."""
    if X.dtype != torch.bfloat16 or table.dtype != torch.int32 or table.shape[1] != BF16_PATTERNS:
        raise ValueError("extremes_and_counts reads bfloat16 logits into an int32 [rows, 65536] table")
    match_torch_threads()
    data, _ = _logits(X)
    gmax, gmin = _extremes_and_counts(data, group, table[: X.shape[0]].numpy())
    return torch.from_numpy(gmax), torch.from_numpy(gmin)


def histogram_of_counts(table: Tensor, lo: Tensor, scale: Tensor, n_bins: int) -> Tensor:
    """:func:`histogram_rows` of the logits whose bit-pattern counts ``table [B, 65536]`` holds
    (:func:`extremes_and_counts`): the same bins, each value's count added at once."""
    match_torch_threads()
    out = _histogram_of_counts(table.numpy(), float32_numpy(lo), float32_numpy(scale), n_bins)
    return torch.from_numpy(out)


def end_candidates(
    X: Tensor, sign: float, r: float, gy: Tensor, slack: Tensor, tail_slack: Tensor, bound: Tensor, group: int
) -> tuple[Tensor, Tensor]:
    """``(rows, cols)`` of every entry of ``X [B, V]`` (float32 or bfloat16) with ``y + r·|y| + s ≥ bound[row]``,
    ``y = sign·x``, ``s`` its group's ``slack`` (``[B, V // group]``), or for the last ``V mod group`` columns its own
    ``tail_slack``; a whole group is skipped when its largest ``y`` (``gy``) fails the test. Row-major order; float32
    arithmetic."""
    match_torch_threads()
    f32 = np.float32
    data, bits = _logits(X)
    arrays = (float32_numpy(t) for t in (gy, slack, tail_slack, bound))
    args = (f32(sign), f32(r), *arrays, group)
    rows, cols = _end_candidates(data, bits, *args)
    return torch.from_numpy(rows), torch.from_numpy(cols)


def _logits(X: Tensor) -> tuple[np.ndarray, bool]:
    """``(array, bits)``: a C-contiguous numpy view of ``X``, as uint16 bit patterns when ``X`` is bfloat16 (numpy
    has no bfloat16; ``bits`` tells the kernels to widen them), else as float32."""
    if X.dtype == torch.bfloat16:
        return X.detach().contiguous().view(torch.int16).numpy().view(np.uint16), True
    return float32_numpy(X), False
