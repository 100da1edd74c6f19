"""Compiled CPU kernels (numba) for the correlated latents: the co-activation sums of the pairs that fired together
(:func:`pair_entries`, :func:`coalesce_pairs`), and their ranking: per row of a block, the ``k`` largest Pearson values
over those pairs (and the never-co-active candidates), from one pass over them.

The sums: each shard's products ``x_i·x_j`` (exact in float64) are kept as pair keys; at the end a counting sort by
row and, per row, a float64 accumulator over the width with a bitmap of the columns it touched give each pair's sum in
the entries' order, emitted in column order. No sort of the tens of millions of entries (torch's ``unique``), no dense
``rows × width`` buffer (0.7–1 GB at 16,384 latents). At 16,384 latents × 32,768 tokens (33M entries in two blocks):
1.8 → 1.5 s for the sums.

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

    @njit(inline="always", nogil=True, boundscheck=False)
    def _token_end(gpos: Any, a: int) -> int:  # pragma: no cover - compiled
        """The end of the run of codes of the token at ``a`` (token-major codes: each token's consecutive)."""
        b = a + 1
        while b < gpos.shape[0] and gpos[b] == gpos[a]:
            b += 1
        return b

    @njit(cache=True, nogil=True, boundscheck=False)
    def _pair_entries(latent: Any, value: Any, gpos: Any, start: int, stop: int, width: int) -> Any:  # pragma: no cover
        N = latent.shape[0]
        n = 0  # first pass: how many entries (per token: its codes in the block × all its codes)
        a = 0
        while a < N:
            b = _token_end(gpos, a)
            inside = 0
            for e in range(a, b):
                inside += 1 if start <= latent[e] < stop else 0
            n += inside * (b - a)
            a = b
        keys = np.empty(n, dtype=np.int64)
        vals = np.empty(n, dtype=np.float64)
        q = 0
        a = 0
        while a < N:
            b = _token_end(gpos, a)
            for e in range(a, b):
                i = latent[e]
                if start <= i < stop:
                    vi = np.float64(value[e])
                    for f in range(a, b):
                        keys[q] = i * width + latent[f]
                        vals[q] = vi * np.float64(value[f])  # exact: a float64 product of two float32 values
                        q += 1
            a = b
        return keys, vals

    @njit(cache=True, nogil=True, boundscheck=False)
    def _add_products(buf: Any, latent: Any, value: Any, gpos: Any, start: int, stop: int) -> None:  # pragma: no cover
        N = latent.shape[0]
        a = 0
        while a < N:
            b = _token_end(gpos, a)
            for e in range(a, b):
                i = latent[e]
                if start <= i < stop:
                    vi = np.float64(value[e])
                    for f in range(a, b):
                        buf[i - start, latent[f]] += vi * np.float64(value[f])
            a = b

    @njit(inline="always")
    def _low_bit(word: Any, debruijn: Any) -> int:  # pragma: no cover - compiled
        """Index of the lowest set bit of a nonzero uint64 (de Bruijn multiplication)."""
        low = word & (~word + np.uint64(1))
        return debruijn[(low * np.uint64(0x03F79D71B4CB0A89)) >> np.uint64(58)]

    @njit(parallel=True, cache=True, nogil=True, boundscheck=False)
    def _by_row(keys: Any, vals: Any, start: int, R: int, width: int, threads: int) -> Any:  # pragma: no cover
        """``(first [R + 1], cols, values)``: the entries grouped by row, each row's in entry order (a stable counting
        sort, in ``threads`` slices of the entries)."""
        N = keys.shape[0]
        T = max(1, min(threads, N // 65536 + 1))
        per_e = (N + T - 1) // T
        hist = np.zeros((T, R), dtype=np.int64)
        for t in prange(T):
            for e in range(t * per_e, min(N, (t + 1) * per_e)):
                hist[t, keys[e] // width - start] += 1
        first = np.zeros(R + 1, dtype=np.int64)
        for r in range(R):  # slice t's entries of row r follow those of slices 0 … t − 1
            acc = first[r]
            for t in range(T):
                c = hist[t, r]
                hist[t, r] = acc
                acc += c
            first[r + 1] = acc
        cols = np.empty(N, dtype=np.int64)
        sv = np.empty(N, dtype=np.float64)
        for t in prange(T):
            fill = hist[t]
            for e in range(t * per_e, min(N, (t + 1) * per_e)):
                row = keys[e] // width
                q = fill[row - start]
                cols[q], sv[q] = keys[e] - row * width, vals[e]
                fill[row - start] = q + 1
        return first, cols, sv

    @njit(cache=True, nogil=True, boundscheck=False)
    def _pairs_of_rows(
        first: Any, cols: Any, sv: Any, chosen: Any, distinct: Any, start: int, width: int
    ) -> Any:  # pragma: no cover - compiled
        """``(rows, cols, sums)`` of the ``chosen`` rows' pairs (``distinct`` per row), each row's in first-touch order,
        summed in entry order."""
        R = chosen.shape[0]
        n_out = 0
        for r in range(R):
            if chosen[r]:
                n_out += distinct[r]
        f_rows = np.empty(n_out, dtype=np.int64)
        f_cols = np.empty(n_out, dtype=np.int64)
        f_sums = np.empty(n_out, dtype=np.float64)
        acc = np.zeros(width, dtype=np.float64)
        seen = np.zeros(width, dtype=np.bool_)
        o = 0
        for r in range(R):
            if not chosen[r]:
                continue
            for q in range(first[r], first[r + 1]):
                acc[cols[q]] += sv[q]
            for q in range(first[r], first[r + 1]):
                j = cols[q]
                if not seen[j]:
                    seen[j] = True
                    f_rows[o], f_cols[o], f_sums[o] = r + start, j, acc[j]
                    o += 1
            for q in range(first[r], first[r + 1]):
                acc[cols[q]] = 0.0
                seen[cols[q]] = False
        return f_rows, f_cols, f_sums

    @njit(parallel=True, cache=True, nogil=True, boundscheck=False)
    def _distinct_per_row(first: Any, cols: Any, width: int, threads: int) -> Any:  # pragma: no cover - compiled
        """Each row's number of distinct columns (a bitmap per thread)."""
        R = first.shape[0] - 1
        n_words = (width + 63) // 64
        U = max(1, min(threads, R))
        per = (R + U - 1) // U
        distinct = np.zeros(R, dtype=np.int64)
        for t in prange(U):
            bits = np.zeros(n_words, dtype=np.uint64)
            for r in range(t * per, min(R, (t + 1) * per)):
                m = 0
                for q in range(first[r], first[r + 1]):
                    w, bit = cols[q] >> 6, np.uint64(1) << np.uint64(cols[q] & 63)
                    if not bits[w] & bit:
                        bits[w] |= bit
                        m += 1
                distinct[r] = m
                for q in range(first[r], first[r + 1]):
                    bits[cols[q] >> 6] = 0
        return distinct

    @njit(parallel=True, cache=True, nogil=True, boundscheck=False)
    def _coalesce_pairs(
        keys: Any, vals: Any, start: int, R: int, width: int, threads: int, debruijn: Any
    ) -> Any:  # pragma: no cover - compiled
        first, cols, sv = _by_row(keys, vals, start, R, width, threads)
        n_words = (width + 63) // 64
        U = max(1, min(threads, R))
        per = (R + U - 1) // U
        distinct = _distinct_per_row(first, cols, width, threads)
        out_first = np.zeros(R + 1, dtype=np.int64)
        for r in range(R):
            out_first[r + 1] = out_first[r] + distinct[r]
        M = out_first[R]
        out_rows = np.empty(M, dtype=np.int64)
        out_cols = np.empty(M, dtype=np.int64)
        out_sums = np.empty(M, dtype=np.float64)
        for t in prange(U):  # sums in entry order, emitted in column order
            bits = np.zeros(n_words, dtype=np.uint64)
            acc = np.zeros(width, dtype=np.float64)
            touched = np.empty(0, dtype=np.int64)
            for r in range(t * per, min(R, (t + 1) * per)):
                for q in range(first[r], first[r + 1]):
                    j = cols[q]
                    bits[j >> 6] |= np.uint64(1) << np.uint64(j & 63)
                    acc[j] += sv[q]
                o = out_first[r]
                if 8 * distinct[r] >= n_words:  # dense enough: scan the bitmap
                    for w in range(n_words):
                        word = bits[w]
                        while word:
                            j = w * 64 + _low_bit(word, debruijn)
                            word &= word - np.uint64(1)
                            out_rows[o], out_cols[o], out_sums[o] = r + start, j, acc[j]
                            acc[j] = 0.0
                            o += 1
                        bits[w] = 0
                else:  # a few columns: sort them
                    if touched.shape[0] < distinct[r]:
                        touched = np.empty(2 * distinct[r], dtype=np.int64)
                    m = 0
                    for q in range(first[r], first[r + 1]):
                        j = cols[q]
                        w, bit = j >> 6, np.uint64(1) << np.uint64(j & 63)
                        if bits[w] & bit:
                            bits[w] &= ~bit
                            touched[m] = j
                            m += 1
                    srt = np.sort(touched[:m])
                    for x in range(m):
                        j = srt[x]
                        out_rows[o], out_cols[o], out_sums[o] = r + start, j, acc[j]
                        acc[j] = 0.0
                        o += 1
        return out_rows, out_cols, out_sums

    @njit(inline="always")
    def _keep_best(p: Any, j: Any, sxy: Any, m: int, k: int, vals: Any, best: Any, best_p: Any, best_s: Any) -> int:
        """Insert ``(Pearson p, column j, S_ij)`` into a row's top ``k`` (float32 value, then the lower column);
        returns the row's new length."""  # pragma: no cover - compiled
        v = np.float32(p)
        if not np.isfinite(v):
            return m
        if m < k:
            pos = m
            m += 1
        elif _better(v, j, vals[k - 1], best[k - 1]):
            pos = k - 1
        else:
            return m
        while pos > 0 and _better(v, j, vals[pos - 1], best[pos - 1]):
            vals[pos], best[pos], best_p[pos], best_s[pos] = (
                vals[pos - 1],
                best[pos - 1],
                best_p[pos - 1],
                best_s[pos - 1],
            )
            pos -= 1
        vals[pos], best[pos], best_p[pos], best_s[pos] = v, j, p, sxy
        return m

    @njit(nogil=True, boundscheck=False)
    def _rank_row(
        i: int,
        lo: int,
        hi: int,
        cols: Any,
        sv: Any,
        bits: Any,
        acc: Any,
        n: float,
        sx: Any,
        inv: Any,
        alive: Any,
        short: Any,
        k: int,
        v32: Any,
        best: Any,
        best_p: Any,
        best_s: Any,
    ) -> Any:  # pragma: no cover - compiled
        """Row ``i`` of :func:`_rank_entries` from its entries ``lo … hi − 1`` (``bits``, ``acc``: a zeroed column
        bitmap and accumulator, left zeroed): ``(never-co-active candidates ranked, distinct partners)``."""
        for q in range(lo, hi):  # the row's sums, in entry order
            j = cols[q]
            bits[j >> 6] |= np.uint64(1) << np.uint64(j & 63)
            acc[j] += sv[q]
        m = 0
        fresh = 0
        for c in short:  # never co-active (S = 0): the shared list, less the row and its partners
            if c == i or bits[c >> 6] & (np.uint64(1) << np.uint64(c & 63)):
                continue
            fresh += 1
            m = _keep_best(((0.0 * n - sx[i] * sx[c]) * inv[i]) * inv[c], c, 0.0, m, k, v32, best, best_p, best_s)
        d = 0
        for q in range(lo, hi):  # each partner once: its bit is cleared when it is ranked
            j = cols[q]
            w, bit = j >> 6, np.uint64(1) << np.uint64(j & 63)
            if not bits[w] & bit:
                continue
            bits[w] &= ~bit
            d += 1
            sxy = acc[j]
            acc[j] = 0.0
            if j != i and alive[j]:
                m = _keep_best(((sxy * n - sx[i] * sx[j]) * inv[i]) * inv[j], j, sxy, m, k, v32, best, best_p, best_s)
        return fresh, d

    @njit(parallel=True, cache=True, nogil=True, boundscheck=False)
    def _rank_entries(
        keys: Any,
        vals: Any,
        start: int,
        R: int,
        width: int,
        threads: int,
        n: float,
        sx: Any,
        inv: Any,
        alive: Any,
        short: Any,
        k: int,
        partial: bool,
    ) -> Any:  # pragma: no cover - compiled
        first, cols, sv = _by_row(keys, vals, start, R, width, threads)
        best = np.full((R, k), -1, dtype=np.int64)
        best_p = np.zeros((R, k), dtype=np.float64)
        best_s = np.zeros((R, k), dtype=np.float64)
        flagged = np.zeros(R, dtype=np.bool_)
        distinct = np.zeros(R, dtype=np.int64)
        n_words = (width + 63) // 64
        U = max(1, min(threads, R))
        per = (R + U - 1) // U
        for t in prange(U):
            bits = np.zeros(n_words, dtype=np.uint64)
            acc = np.zeros(width, dtype=np.float64)
            v32 = np.empty(k, dtype=np.float32)
            for r in range(t * per, min(R, (t + 1) * per)):
                i = r + start
                fresh, distinct[r] = _rank_row(
                    i,
                    first[r],
                    first[r + 1],
                    cols,
                    sv,
                    bits,
                    acc,
                    n,
                    sx,
                    inv,
                    alive,
                    short,
                    k,
                    v32,
                    best[r],
                    best_p[r],
                    best_s[r],
                )
                flagged[r] = alive[i] and ((fresh < k and partial) or inv[i] == 0)
        f_rows, f_cols, f_sums = _pairs_of_rows(first, cols, sv, flagged, distinct, start, width)
        return best, best_p, best_s, flagged, f_rows, f_cols, f_sums


def rank_entries(
    keys: Tensor,
    vals: Tensor,
    start: int,
    R: int,
    width: int,
    n: float,
    sx: Tensor,
    inv_std: Tensor,
    alive: Tensor,
    short: Tensor,
    k: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor, tuple[Tensor, Tensor, Tensor]]:
    """The ranking of :func:`tempolens.stats.correlations.correlations_from_pairs`, straight from the uncoalesced
    entries of :func:`pair_entries` (keys ``row · width + col``, rows ``start … start + R − 1``): per row its pair sums
    (as :func:`coalesce_pairs` makes them), Pearson over its co-active partners (self and dead latents left out) and
    over the ``short`` list's latents it never fired with (``S = 0``), the ``k`` best kept as :func:`rank_pairs` keeps
    them. Returns ``(indices [R, k], Pearson [R, k], S_ij [R, k], flagged [R], pairs)``: −1 / 0 / 0 where a row has
    fewer; ``flagged``: alive rows to rank over every latent instead (fewer than ``k`` of the list left when it does
    not hold every alive latent, or a constant latent), with their coalesced ``pairs`` ``(rows, cols, sums)``."""
    match_torch_threads()
    f64 = torch.float64
    out = _rank_entries(
        keys.to(torch.int64).contiguous().numpy(),
        vals.to(f64).contiguous().numpy(),
        int(start),
        int(R),
        int(width),
        numba.get_num_threads(),
        float(n),
        sx.to(f64).contiguous().numpy(),
        inv_std.to(f64).contiguous().numpy(),
        alive.to(torch.bool).contiguous().numpy(),
        short.to(torch.int64).contiguous().numpy(),
        int(k),
        bool(short.numel() < int(alive.sum())),
    )
    best, best_p, best_s, flagged, f_rows, f_cols, f_sums = (torch.from_numpy(x) for x in out)
    return best, best_p, best_s, flagged, (f_rows, f_cols, f_sums)


def _debruijn_table() -> np.ndarray:
    """``table[(b · 0x03F79D71B4CB0A89 mod 2⁶⁴) >> 58] = i`` for ``b = 2ⁱ``: a lowest set bit's index by a multiply."""
    table = np.zeros(64, dtype=np.int64)
    for i in range(64):
        table[((1 << i) * 0x03F79D71B4CB0A89 % 2**64) >> 58] = i
    return table


_DEBRUIJN = _debruijn_table()


def pair_entries(
    latent: Tensor, value: Tensor, gpos: Tensor, start: int, stop: int, width: int
) -> tuple[Tensor, Tensor]:
    """``(keys, products)`` of every co-activation of a batch's codes (token-major: each token's codes consecutive,
    ``gpos`` its position) whose first latent lies in ``[start, stop)``: per token, each of its codes in the block with
    each of its codes, itself included, in token order; ``key = i · width + j``, ``product = x_i · x_j`` in float64
    (exact). Nothing is coalesced."""
    keys, vals = _pair_entries(
        latent.to(torch.int64).contiguous().numpy(),
        value.to(torch.float32).contiguous().numpy(),
        gpos.to(torch.int64).contiguous().numpy(),
        int(start),
        int(stop),
        int(width),
    )
    return torch.from_numpy(keys), torch.from_numpy(vals)


def add_products(buf: Tensor, latent: Tensor, value: Tensor, gpos: Tensor, start: int, stop: int) -> None:
    """Add the products of :func:`pair_entries` into the dense float64 ``buf [stop − start, width]`` (row ``i − start``,
    column ``j``), in the same order: each pair's sum is the one :func:`coalesce_pairs` makes of the entries."""
    _add_products(
        buf.numpy(),
        latent.to(torch.int64).contiguous().numpy(),
        value.to(torch.float32).contiguous().numpy(),
        gpos.to(torch.int64).contiguous().numpy(),
        int(start),
        int(stop),
    )


def coalesce_pairs(keys: Tensor, vals: Tensor, start: int, R: int, width: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(rows, cols, sums)`` of the distinct keys ``row · width + col`` (rows in ``[start, start + R)``), sorted by row
    then column, each sum taken in float64 in the entries' order: a counting sort by row and, per row, a dense
    accumulator with a bitmap of its columns (no sort of the entries)."""
    match_torch_threads()
    rows, cols, sums = _coalesce_pairs(
        keys.to(torch.int64).contiguous().numpy(),
        vals.to(torch.float64).contiguous().numpy(),
        int(start),
        int(R),
        int(width),
        numba.get_num_threads(),
        _DEBRUIJN,
    )
    return torch.from_numpy(rows), torch.from_numpy(cols), torch.from_numpy(sums)


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
