"""The most correlated latents of every latent, exact at any width, from sparse co-activation sums.

Pearson over all counted tokens (zeros included) of latents ``i`` and ``j``::

    r_ij = (n·S_ij − Sx_i·Sx_j) / (σ_i·σ_j),   σ_i = sqrt(n·Sxx_i − Sx_i²),   S_ij = Σ_t x_i(t)·x_j(t)

Most pairs never fire together (``S_ij = 0``); their ``r_ij = −a_i·a_j`` with ``a_i = Sx_i/σ_i ≥ 0`` (codes are
positive). So the top of row ``i`` lies among its co-active partners and, from the latents it never fired with,
those with the smallest ``a_j``: one short list shared by every row. Nothing ``width × width`` is ever held:
the sums exist only for pairs that fired together (:class:`PairSums`), in blocks of rows sized by how many
such pairs they can produce (:func:`pair_blocks`), one pass over the store per block. On the CPU with numba the
sums are float64 sums of the exact float64 products, coalesced without a sort (:mod:`.pair_kernels`).

Ranking follows the dense definition: values computed in float64 in the dense order of operations, ranked in
float32, ties broken by the lower index; the reported Pearson is the float64 value. The one approximation: among
latents whose ``a`` round to the same float32 (e.g. every latent that fired once), the list keeps the lowest
indices, so a pair whose float32 value differs from its neighbours' by one ulp can be swapped with them.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from tempolens.stats import pair_kernels
from tempolens.stats.accumulators import CodeBatch, ShardLike, as_batch

BYTES_PER_PAIR = 48
"""Memory per co-activation entry while a block is summed and coalesced (key, value, inverse index, sort space)."""
SHORTLIST_EXTRA = 64
"""Never-co-active candidates kept beyond ``k + 1`` in the shared list (rows co-active with more of the list are
computed in full)."""


def _csr(rows: Tensor, cols: Tensor, vals: Tensor, n_rows: int, n_cols: int) -> Tensor:
    """CSR matrix from unique ``(row, col)`` entries (columns sorted within rows)."""
    order = torch.argsort(rows * n_cols + cols)
    crow = torch.zeros(n_rows + 1, dtype=torch.int64)
    crow[1:] = torch.cumsum(torch.bincount(rows, minlength=n_rows), 0)
    return torch.sparse_csr_tensor(crow, cols[order], vals[order], (n_rows, n_cols), check_invariants=False)


def _token_index(b: CodeBatch) -> tuple[Tensor, int]:
    """Consecutive token numbers of a batch's codes (CSR, token-major) and the token count."""
    _, inv = torch.unique_consecutive(b.gpos, return_inverse=True)
    return inv, int(inv[-1]) + 1


class PairLoad:
    """Per latent, how many co-activation entries its row produces: ``Σ_t [x_i(t) ≠ 0]·nnz(t)`` (pass 1)."""

    def __init__(self, width: int):
        self.load = torch.zeros(int(width), dtype=torch.int64)

    def update(self, shard: ShardLike) -> None:
        b = as_batch(shard)
        if b.latent.numel() == 0:
            return
        inv, n_tok = _token_index(b)
        nnz = torch.bincount(inv, minlength=n_tok)
        self.load.index_add_(0, b.latent, nnz[inv])

    def merge(self, other: PairLoad) -> None:
        self.load += other.load

    def result(self) -> Tensor:
        return self.load.clone()


def pair_blocks(load: Tensor, memory_mb: float) -> list[tuple[int, int]]:
    """Row blocks ``[start, stop)`` whose co-activation entries (``load``, from :class:`PairLoad`) fit
    ``memory_mb`` at :data:`BYTES_PER_PAIR` each; a single row heavier than that is a block of its own."""
    W = load.numel()
    budget = max(1, int(memory_mb * 2**20 // BYTES_PER_PAIR))
    cum = torch.cumsum(load, 0)
    blocks, start = [], 0
    while start < W:
        base = int(cum[start - 1]) if start else 0
        stop = int(torch.searchsorted(cum, torch.tensor(base + budget), right=True))
        stop = min(W, max(stop, start + 1))
        blocks.append((start, stop))
        start = stop
    return blocks


class PairSums:
    """Exact co-activation sums ``S[i, j]`` of latent rows ``[start, stop)`` with every latent, only for the pairs
    that fired together, accumulated in shard order in float64. Into a dense ``rows × width`` buffer when it fits
    ``memory_mb`` (and, compiled, is no larger than the ``entries`` the rows produce, 16 bytes each: narrow SAEs);
    its nonzeros are read once at the end. Otherwise as pair keys: compiled (numba on the CPU, the default where it
    can run), every product of a shard (:func:`.pair_kernels.pair_entries`), coalesced by ``result()`` without a
    sort of the entries (:func:`.pair_kernels.coalesce_pairs`) or ranked straight from them
    (:func:`correlations_of_sums`); in torch, a sparse ``Aᵀ·A`` product per shard (``A`` = its codes), coalesced by
    ``result()``. Compiled, each product ``x_i·x_j`` is exact in float64 and summed in token order in either form, so
    both give the same sums. Merge = addition / concatenation."""

    def __init__(
        self,
        width: int,
        start: int,
        stop: int,
        memory_mb: float | None = None,
        compiled: bool | None = None,
        entries: int | None = None,
    ):
        self.width, self.start, self.stop = int(width), int(start), int(stop)
        self.compiled = pair_kernels.available() if compiled is None else compiled
        """Whether the compiled kernels make the sums (``None``: where numba can run)."""
        dense_bytes = (self.stop - self.start) * self.width * 8
        dense = memory_mb is not None and dense_bytes <= memory_mb * 2**20
        if self.compiled:  # the entries are the other form: the smaller one
            dense = dense and entries is not None and dense_bytes <= 16 * entries
        self.buf = torch.zeros(self.stop - self.start, self.width, dtype=torch.float64) if dense else None
        self.keys: list[Tensor] = []
        self.vals: list[Tensor] = []

    def update(self, shard: ShardLike) -> None:
        b = as_batch(shard)
        if b.latent.numel() == 0:
            return
        if self.compiled and self.buf is not None:
            pair_kernels.add_products(self.buf, b.latent, b.value, b.gpos, self.start, self.stop)
            return
        if self.compiled:
            keys, vals = pair_kernels.pair_entries(b.latent, b.value, b.gpos, self.start, self.stop, self.width)
            if keys.numel():
                self.keys.append(keys)
                self.vals.append(vals)
            return
        inv, n_tok = _token_index(b)
        rows = (b.latent >= self.start) & (b.latent < self.stop)
        if not bool(rows.any()):
            return
        R = self.stop - self.start
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
            left = _csr(b.latent[rows] - self.start, inv[rows], b.value[rows], R, n_tok)
            right = _csr(inv, b.latent, b.value, n_tok, self.width)
            prod = torch.sparse.mm(left, right)
        crow, col = prod.crow_indices(), prod.col_indices()
        r = torch.repeat_interleave(torch.arange(R, dtype=torch.int64), crow[1:] - crow[:-1])
        keys = r * self.width + col.to(torch.int64)
        if self.buf is not None:  # (row, col) pairs of a CSR product are unique: index_put_ accumulates exactly
            self.buf.view(-1).index_put_((keys,), prod.values().to(torch.float64), accumulate=True)
        else:
            self.keys.append(keys + self.start * self.width)
            self.vals.append(prod.values().to(torch.float64))

    def merge(self, other: PairSums) -> None:
        if (self.start, self.stop, self.width) != (other.start, other.stop, other.width):
            raise ValueError("co-activation sums over different rows cannot be merged")
        if self.buf is not None and other.buf is not None:
            self.buf += other.buf
            return
        for acc in (self, other):
            if acc.buf is not None:  # one of them dense: read it out as pairs
                rows, cols, sums = acc._dense_pairs()
                acc.keys, acc.vals, acc.buf = [rows * acc.width + cols], [sums], None
        self.keys += other.keys
        self.vals += other.vals

    def _dense_pairs(self) -> tuple[Tensor, Tensor, Tensor]:
        assert self.buf is not None
        nz = self.buf.nonzero()  # row-major: sorted by row, then column
        return nz[:, 0] + self.start, nz[:, 1], self.buf[nz[:, 0], nz[:, 1]]

    def result(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(rows, cols, sums)`` of every pair that fired together, sorted by row then column."""
        if self.buf is not None:
            return self._dense_pairs()
        if not self.keys:
            empty = torch.zeros(0, dtype=torch.int64)
            return empty, empty.clone(), torch.zeros(0, dtype=torch.float64)
        keys = torch.cat(self.keys)
        if self.compiled:
            vals = torch.cat(self.vals)
            self.keys, self.vals = [], []  # the entries are freed as the sums are made
            rows, cols, sums = pair_kernels.coalesce_pairs(keys, vals, self.start, self.stop - self.start, self.width)
            self.keys, self.vals = [rows * self.width + cols], [sums]  # one entry per pair: the same sums again
            return rows, cols, sums
        uniq, inv = torch.unique(keys, sorted=True, return_inverse=True)
        sums = torch.zeros(uniq.numel(), dtype=torch.float64).index_add_(0, inv, torch.cat(self.vals))
        return uniq // self.width, uniq % self.width, sums


def _pearson(sxy: Tensor, n: float, sx_i: Tensor, sx_j: Tensor, inv_i: Tensor, inv_j: Tensor) -> Tensor:
    """float64 Pearson in the dense order of operations: ``((n·S − Sx_i·Sx_j)·inv_i)·inv_j``."""
    return (sxy * n - sx_i * sx_j) * inv_i * inv_j


def shortlist(a: Tensor, alive: Tensor, k: int, extra: int = SHORTLIST_EXTRA) -> Tensor:
    """The first ``k + 1 + extra`` alive latents in ascending ``a`` at float32 precision, ties by index: for a row
    with ``a_i > 0`` the order of its never-co-active values, the same rule as the ranking's."""
    ids = alive.nonzero().squeeze(1)
    order = ids[torch.argsort(a[ids].to(torch.float32), stable=True)]
    return order[: k + 1 + extra]


def _rank_rows(rows: Tensor, cols: Tensor, val32: Tensor, R: int, k: int) -> Tensor:
    """Per row (``0..R-1``) the positions of the ``k`` best entries by float32 value, ties by the lower column:
    ``[R, k]`` positions into the inputs (−1 where a row has fewer). ``k`` rounds of a per-row maximum and, among
    the entries equal to it, the lowest column (scatter reductions: no sort of the entries)."""
    n = rows.numel()
    out = torch.full((R, k), -1, dtype=torch.int64)
    if n == 0:
        return out
    pos = torch.arange(n)
    if n > 8 * k * R:  # most entries cannot be in their row's top k: drop them first (same result)
        keep = val32 >= _kth_lower_bound(rows, cols, val32, R, k)[rows]
        pos, rows, cols, val32 = pos[keep], rows[keep], cols[keep], val32[keep]
    v = val32.clone()
    big = torch.iinfo(torch.int64).max
    for j in range(k):
        best = torch.full((R,), float("-inf")).scatter_reduce(0, rows, v, "amax", include_self=True)
        hit = (v == best[rows]) & torch.isfinite(v)
        col = torch.where(hit, cols, torch.full_like(cols, big))
        low = torch.full((R,), big, dtype=torch.int64).scatter_reduce(0, rows, col, "amin", include_self=True)
        chosen = hit & (cols == low[rows])
        out[rows[chosen], j] = pos[chosen]
        v[chosen] = float("-inf")
    return out


def _kth_lower_bound(rows: Tensor, cols: Tensor, val32: Tensor, R: int, k: int) -> Tensor:
    """``[R]`` a value at or below each row's ``k``-th largest entry (−inf where unknown), from one pass: the
    entries of a row are dealt into ``k`` buckets by column and each bucket's maximum is an entry of the row, so
    the smallest of ``k`` non-empty bucket maxima is the ``k``-th largest of ``k`` distinct entries, at most the
    row's ``k``-th largest. Every entry of a row's top ``k``, ties included, is ``≥`` it."""
    finite = torch.isfinite(val32)
    bucket = rows * k + cols % k
    top = torch.full((R * k,), float("-inf")).scatter_reduce(
        0, bucket[finite], val32[finite], "amax", include_self=True
    )
    return top.view(R, k).amin(1)  # −inf when a bucket is empty: keeps the whole row


def _moments(
    n_tokens: int, sum_x: Tensor, sum_sq: Tensor, n_active: Tensor
) -> tuple[float, Tensor, Tensor, Tensor, Tensor]:
    """``(n, Sx, Sxx, 1/σ, alive)`` in float64 (``1/σ = 0`` for a constant latent)."""
    n = float(max(n_tokens, 1))
    sx, sxx = sum_x.to(torch.float64), sum_sq.to(torch.float64)
    var = (n * sxx - sx * sx).clamp(min=0)
    inv_std = torch.where(var > 0, 1.0 / torch.sqrt(var.clamp(min=1e-300)), torch.zeros_like(var))
    return n, sx, sxx, inv_std, n_active > 0


def correlations_from_pairs(
    pairs: tuple[Tensor, Tensor, Tensor],
    start: int,
    stop: int,
    n_tokens: int,
    sum_x: Tensor,
    sum_sq: Tensor,
    n_active: Tensor,
    k: int,
    extra: int = SHORTLIST_EXTRA,
) -> dict[str, Tensor]:
    """Top-``k`` correlated latents of rows ``[start, stop)`` by Pearson, with cosine similarity, from the sums of
    the pairs that fired together (:meth:`PairSums.result`). The latent itself and dead latents are never
    listed; a dead row gets no entries (index −1). Equal to ranking the dense ``R × width`` matrix."""
    rows, cols, sxy = pairs
    W, R, kk = sum_x.numel(), stop - start, min(k, sum_x.numel())
    n, sx, sxx, inv_std, alive = _moments(n_tokens, sum_x, sum_sq, n_active)
    keep = (rows != cols) & alive[cols]
    rows, cols, sxy = rows[keep], cols[keep], sxy[keep]
    # never-co-active candidates: one shared list, each row minus itself and its co-active partners
    short = shortlist(sx * inv_std, alive, kk, extra)
    c_rows = torch.arange(start, stop).repeat_interleave(short.numel())
    c_cols = short.repeat(R)
    W64 = torch.tensor(W, dtype=torch.int64)
    co_keys = rows * W64 + cols
    c_keys = c_rows * W64 + c_cols
    pos = torch.searchsorted(co_keys, c_keys).clamp(max=max(co_keys.numel() - 1, 0))
    clash = (co_keys[pos] == c_keys) if co_keys.numel() else torch.zeros_like(c_keys, dtype=torch.bool)
    fresh = ~clash & (c_rows != c_cols)
    c_rows, c_cols = c_rows[fresh], c_cols[fresh]
    all_rows = torch.cat([rows, c_rows])
    all_cols = torch.cat([cols, c_cols])
    all_s = torch.cat([sxy, torch.zeros(c_rows.numel(), dtype=torch.float64)])
    best, best_p = _ranked(all_rows, all_cols, all_s, n, sx, inv_std, start, R, kk)
    # computed in full: rows whose own list ran short of never-co-active candidates (unless the list holds every
    # alive latent), and constant latents (σ = 0: every value is 0, so ties go by index, not by a)
    n_fresh = torch.bincount(c_rows - start, minlength=R)
    short_rows = ((n_fresh < kk) & (short.numel() < int(alive.sum()))) | (inv_std[start:stop] == 0)
    short_rows &= alive[start:stop]
    # a sentinel at the end stands for "no entry" (best = −1), so this also works when no row has any candidate
    at = torch.where(best >= 0, best, torch.full_like(best, all_cols.numel()))
    idx = torch.cat([all_cols, torch.tensor([-1], dtype=all_cols.dtype)])[at]
    cos_s = torch.cat([all_s, torch.zeros(1, dtype=torch.float64)])[at]
    ranked = (idx, best_p, cos_s)  # best_p: 0 where a row has no entry
    return _finish(ranked, short_rows, (rows, cols, sxy), start, stop, n, sx, sxx, inv_std, alive, kk)


def correlations_of_sums(
    sums: PairSums, n_tokens: int, sum_x: Tensor, sum_sq: Tensor, n_active: Tensor, k: int, extra: int = SHORTLIST_EXTRA
) -> dict[str, Tensor]:
    """:func:`correlations_from_pairs` of ``sums``' rows; with the compiled sums, coalesced and ranked in one pass per
    row (:func:`.pair_kernels.rank_entries`: no array of every pair, no search for the shortlist's clashes), which
    gives the same lists and values. Compiled entries are consumed (moved into one array each, never held twice)."""
    start, stop = sums.start, sums.stop
    if not sums.compiled or sums.buf is not None:
        return correlations_from_pairs(sums.result(), start, stop, n_tokens, sum_x, sum_sq, n_active, k, extra)
    kk = min(k, sum_x.numel())
    n, sx, sxx, inv_std, alive = _moments(n_tokens, sum_x, sum_sq, n_active)
    short = shortlist(sx * inv_std, alive, kk, extra)
    keys, vals = _concat_releasing(sums.keys, torch.int64), _concat_releasing(sums.vals, torch.float64)
    idx, val, cos_s, short_rows, full_pairs = pair_kernels.rank_entries(
        keys, vals, start, stop - start, sum_x.numel(), n, sx, inv_std, alive, short, kk
    )
    return _finish((idx, val, cos_s), short_rows, full_pairs, start, stop, n, sx, sxx, inv_std, alive, kk)


def _concat_releasing(parts: list[Tensor], dtype: torch.dtype) -> Tensor:
    """The concatenation of ``parts``, which is emptied as it is copied: at most one part is held twice."""
    out = torch.empty(sum(p.numel() for p in parts), dtype=dtype)
    at = 0
    parts.reverse()
    while parts:
        p = parts.pop()
        out[at : at + p.numel()] = p
        at += p.numel()
        del p
    return out


def _finish(
    ranked: tuple[Tensor, Tensor, Tensor],
    short_rows: Tensor,
    pairs: tuple[Tensor, Tensor, Tensor],
    start: int,
    stop: int,
    n: float,
    sx: Tensor,
    sxx: Tensor,
    inv_std: Tensor,
    alive: Tensor,
    k: int,
) -> dict[str, Tensor]:
    """The lists of rows ``[start, stop)`` from each row's ranked ``(indices, Pearson, S_ij)`` (−1 / 0 / 0 where a row
    has fewer), the ``short_rows`` ranked over every latent instead (from ``pairs``: at least their co-active pairs,
    self and dead partners excluded), dead rows emptied, and the cosine similarities."""
    idx, val, cos_s = ranked
    rows, cols, sxy = pairs
    for r in short_rows.nonzero().squeeze(1).tolist():
        idx[r], val[r], cos_s[r] = _dense_row(start + r, rows, cols, sxy, n, sx, inv_std, alive, k)
    valid = (idx >= 0) & alive[start:stop].unsqueeze(1)
    safe = idx.clamp(min=0)
    den = torch.sqrt(sxx[start:stop].unsqueeze(1) * sxx[safe])
    cosine = torch.where(den > 0, cos_s / den.clamp(min=1e-300), torch.zeros_like(den))
    return {
        "indices": torch.where(valid, idx, torch.full_like(idx, -1)),
        "pearson": torch.where(valid, val, torch.zeros_like(val)).to(torch.float32),
        "cosine": torch.where(valid, cosine, torch.zeros_like(cosine)).to(torch.float32),
    }


def _ranked(
    rows: Tensor, cols: Tensor, sxy: Tensor, n: float, sx: Tensor, inv_std: Tensor, start: int, R: int, k: int
) -> tuple[Tensor, Tensor]:
    """``(positions [R, k], float64 Pearson [R, k])`` of each row's ``k`` best entries (−1 / 0 where a row has fewer):
    one compiled pass (:mod:`.pair_kernels`: no gathers, no rounds) on the CPU, else the torch reference."""
    if pair_kernels.available(sxy):
        return pair_kernels.rank_pairs(rows, cols, sxy, n, sx, inv_std, start, R, k)
    p = _pearson(sxy, n, sx[rows], sx[cols], inv_std[rows], inv_std[cols])
    best = _rank_rows(rows - start, cols, p.to(torch.float32) + 0.0, R, k)  # + 0.0: no −0.0
    return best, torch.cat([p, torch.zeros(1, dtype=torch.float64)])[torch.where(best >= 0, best, -1)]


def _dense_row(
    i: int, rows: Tensor, cols: Tensor, sxy: Tensor, n: float, sx: Tensor, inv_std: Tensor, alive: Tensor, k: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Row ``i`` ranked over every latent (the rare row co-active with most of the shared list)."""
    s = torch.zeros(sx.numel(), dtype=torch.float64)
    mine = rows == i
    s[cols[mine]] = sxy[mine]
    p = _pearson(s, n, sx[i], sx, inv_std[i], inv_std)
    p32 = p.to(torch.float32)
    p32[~alive] = float("-inf")
    p32[i] = float("-inf")
    order = torch.argsort(p32, descending=True, stable=True)[:k]
    ok = torch.isfinite(p32[order])
    idx = torch.where(ok, order, torch.full_like(order, -1))
    return (
        idx,
        torch.where(ok, p[order], torch.zeros_like(p[order])),
        torch.where(ok, s[order], torch.zeros_like(s[order])),
    )
