"""Sparse top-k correlations (stats.correlations) against the dense definition, on codes built to break them:
tied values, latents fired once (equal a = Sx/σ), a latent constant on every token (σ = 0), dead latents, a
latent co-active with most others, and shortlists too short for some rows."""

from __future__ import annotations

import pytest
import torch

from tempolens.stats.accumulators import CodeBatch, CountsAccumulator
from tempolens.stats.correlations import (
    PairLoad,
    PairSums,
    correlations_from_pairs,
    correlations_of_sums,
    pair_blocks,
    shortlist,
)


def hostile_batches(W: int = 160, n_tok: int = 400, seed: int = 0) -> list[CodeBatch]:
    g = torch.Generator().manual_seed(seed)
    batches, gpos0 = [], 0
    for part in range(3):
        lat, val, pos = [], [], []
        for t in range(n_tok):
            ids = {0}  # latent 0: on every token with the same value (σ = 0)
            if t % 2 == 0:
                ids.add(1)  # latent 1: with half of everything
            ids |= set(torch.randint(10, W - 20, (int(torch.randint(2, 7, (1,), generator=g)),), generator=g).tolist())
            if t == part * 50 + 7:
                ids.add(W - 20 + part)  # fired once each: equal a
            for i in sorted(ids):
                lat.append(i)
                val.append(1.0 if i == 0 else float(torch.randint(1, 4, (1,), generator=g)))  # few values: ties
                pos.append(gpos0 + t)
        gpos0 += n_tok
        batches.append(
            CodeBatch(
                latent=torch.tensor(lat),
                value=torch.tensor(val),
                gpos=torch.tensor(pos, dtype=torch.int64),
                n_tokens=n_tok,
            )
        )
    return batches  # latents 2..9 and the last 17 but three are dead


def dense_reference(batches, W, k):
    """The definition on the dense W × W matrix: co-activation sums ``Dᵀ·D`` of the dense token × latent codes,
    float64 Pearson ranked in float32, ties by the lower index (a full stable sort)."""
    c = CountsAccumulator(W)
    for b in batches:
        c.update(b)
    lat = torch.cat([b.latent for b in batches])
    tok = torch.unique(torch.cat([b.gpos for b in batches]), return_inverse=True)[1]
    D = torch.zeros(int(tok.max()) + 1, W, dtype=torch.float64)
    D[tok, lat] = torch.cat([b.value for b in batches]).double()
    S, n = D.T @ D, float(c.n_tokens)
    sx, sxx = c.sum.double(), c.sum_sq.double()
    var = (n * sxx - sx * sx).clamp(min=0)
    inv = torch.where(var > 0, 1 / var.clamp(min=1e-300).sqrt(), torch.zeros_like(var))
    P = (S * n - sx[:, None] * sx[None, :]) * inv[:, None] * inv[None, :]
    P32 = P.float() + 0.0
    alive = c.n_active > 0
    P32[:, ~alive] = float("-inf")
    P32.fill_diagonal_(float("-inf"))
    order = torch.argsort(P32, dim=1, descending=True, stable=True)[:, :k]
    ok = torch.isfinite(P32.gather(1, order)) & alive[:, None]
    den = (sxx[:, None] * sxx[order]).sqrt()
    ref = {
        "indices": torch.where(ok, order, torch.full_like(order, -1)),
        "pearson": torch.where(ok, P.gather(1, order), torch.zeros(order.shape, dtype=torch.float64)).float(),
        "cosine": torch.where(
            ok & (den > 0), S.gather(1, order) / den.clamp(min=1e-300), torch.zeros_like(den)
        ).float(),
    }
    return c, ref


@pytest.mark.parametrize("extra", [0, 2, 64])
@pytest.mark.parametrize("memory_mb", [1e-3, 1e-2, 1024])
@pytest.mark.parametrize("mode", ["fused", "compiled", "dense-compiled", "sparse", "dense"])
def test_sparse_correlations_equal_the_dense_ranking(extra, memory_mb, mode):
    W, k = 160, 5
    batches = hostile_batches(W)
    counts, ref = dense_reference(batches, W, k)
    load = PairLoad(W)
    for b in batches:
        load.update(b)
    blocks = pair_blocks(load.result(), memory_mb)
    assert blocks[0][0] == 0 and blocks[-1][1] == W and all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))
    parts = []
    for start, stop in blocks:
        compiled = mode in ("fused", "compiled", "dense-compiled")
        dense = mode.startswith("dense")
        acc = PairSums(W, start, stop, memory_mb=1024 if dense else None, compiled=compiled, entries=10**9)
        assert (acc.buf is not None) == dense
        for b in batches:
            acc.update(b)
        moments = (counts.n_tokens, counts.sum, counts.sum_sq, counts.n_active, k, extra)
        if mode == "fused":  # ranked straight from the entries
            parts.append(correlations_of_sums(acc, *moments))
        else:
            parts.append(correlations_from_pairs(acc.result(), start, stop, *moments))
    got = {key: torch.cat([p[key] for p in parts]) for key in ("indices", "pearson", "cosine")}
    assert torch.equal(got["indices"], ref["indices"])
    assert torch.allclose(got["pearson"], ref["pearson"], atol=1e-6, rtol=0)
    assert torch.allclose(got["cosine"], ref["cosine"], atol=1e-6, rtol=0)
    assert (got["indices"][2:10] == -1).all()  # dead rows list nothing


def test_the_hostile_codes_exercise_every_branch():
    W = 160
    batches = hostile_batches(W)
    counts, _ = dense_reference(batches, W, 5)
    n = counts.n_tokens
    sx, sxx = counts.sum.double(), counts.sum_sq.double()
    var = n * sxx - sx * sx
    assert var[0] == 0 and counts.n_active[0] == n  # a constant latent
    a = sx / var.clamp(min=1e-300).sqrt()
    once = a[W - 20 : W - 17]
    assert torch.allclose(once, once[0].expand(3))  # equal a: ties at the end of the shortlist
    alive = counts.n_active > 0
    assert shortlist(a, alive, 5, 0).numel() >= 6
    assert not alive[2:10].any()


def test_pair_sums_merge_and_empty():
    W = 40
    batches = hostile_batches(W, n_tok=60)
    one, a, b = (PairSums(W, 0, W, compiled=False) for _ in range(3))
    for i, x in enumerate(batches):
        one.update(x)
        (a if i % 2 else b).update(x)
    b.merge(a)
    r1, r2 = one.result(), b.result()
    assert torch.equal(r1[0], r2[0]) and torch.equal(r1[1], r2[1]) and torch.allclose(r1[2], r2[2], rtol=1e-12)
    c_one, c_a, c_b = (PairSums(W, 0, W, compiled=True) for _ in range(3))  # the compiled entries, merged too
    for i, x in enumerate(batches):
        c_one.update(x)
        (c_a if i % 2 else c_b).update(x)
    c_b.merge(c_a)
    for r in (c_one.result(), c_b.result()):
        assert torch.equal(r1[0], r[0]) and torch.equal(r1[1], r[1]) and torch.allclose(r1[2], r[2], rtol=1e-12)
    dense = PairSums(W, 0, W, memory_mb=1, compiled=False)  # 40 × 40 float64 fits: summed in a dense buffer
    for x in batches:
        dense.update(x)
    r3 = dense.result()
    assert torch.equal(r1[0], r3[0]) and torch.equal(r1[1], r3[1]) and torch.allclose(r1[2], r3[2], rtol=1e-12)
    sparse_half, dense_half = PairSums(W, 0, W, compiled=False), PairSums(W, 0, W, memory_mb=1, compiled=False)
    for i, x in enumerate(batches):
        (sparse_half if i % 2 else dense_half).update(x)
    dense_half.merge(sparse_half)  # dense + sparse: read out as pairs, then concatenated
    r4 = dense_half.result()
    assert dense_half.buf is None
    assert torch.equal(r1[0], r4[0]) and torch.equal(r1[1], r4[1]) and torch.allclose(r1[2], r4[2], rtol=1e-12)
    rows, cols, sums = PairSums(W, 0, 5).result()
    assert rows.numel() == cols.numel() == sums.numel() == 0
    with pytest.raises(ValueError):
        one.merge(PairSums(W, 0, 5))


@pytest.mark.parametrize("n_alive", [0, 1])
def test_no_candidate_anywhere_gives_empty_lists(n_alive):
    """At most one alive latent (a tiny predicted-code store can get there): no pair fired together and the shortlist
    is empty, so every row's list is empty (index −1) instead of an IndexError."""
    W, n = 6, 10
    empty = (torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.float64))
    n_active = torch.zeros(W, dtype=torch.int64)
    sum_x, sum_sq = torch.zeros(W, dtype=torch.float64), torch.zeros(W, dtype=torch.float64)
    if n_alive:
        n_active[2], sum_x[2], sum_sq[2] = 3, 1.5, 1.25
    out = correlations_from_pairs(empty, 0, W, n, sum_x, sum_sq, n_active, k=3)
    assert out["indices"].shape == (W, 3) and (out["indices"] == -1).all() and (out["pearson"] == 0).all()


def test_compiled_ranking_equals_the_torch_ranking(monkeypatch):
    """The compiled pass (Pearson + per-row top k) gives the torch reference's indices, Pearson and cosine bit for
    bit, on the hostile codes (ties, dead and constant latents, rows computed in full)."""
    from tempolens.stats import pair_kernels

    assert pair_kernels.available(torch.zeros(1))
    W, k = 160, 5
    batches = hostile_batches(W)
    counts, _ = dense_reference(batches, W, k)

    def correlations() -> dict[str, torch.Tensor]:
        acc = PairSums(W, 0, W)
        for b in batches:
            acc.update(b)
        return correlations_from_pairs(
            acc.result(), 0, W, counts.n_tokens, counts.sum, counts.sum_sq, counts.n_active, k
        )

    compiled = correlations()
    monkeypatch.setattr(pair_kernels, "numba", None)
    assert not pair_kernels.available(torch.zeros(1))
    ref = correlations()
    for key in ("indices", "pearson", "cosine"):
        assert torch.equal(compiled[key], ref[key]), key


def test_compiled_rank_pairs_orders_by_value_then_column():
    """With sx = 0 and inv = 1 the Pearson value is the sum itself: the compiled ranking then equals a brute-force
    ranking (float32 value descending, ties by the lower column; -inf and NaN never listed) and _rank_rows."""
    from tempolens.stats import pair_kernels
    from tempolens.stats.correlations import _rank_rows

    g = torch.Generator().manual_seed(1)
    R, k, W, start = 5, 4, 300, 7
    rows = torch.cat([torch.full((n,), start + r) for r, n in enumerate((200, 3, 0, 150, 90))])
    cols = torch.cat([torch.randperm(W, generator=g)[:n] for n in (200, 3, 0, 150, 90)])
    val = (torch.randint(0, 30, (rows.numel(),), generator=g).double() / 8).to(torch.float64)
    val[::29], val[3::41] = float("-inf"), float("nan")
    ones = torch.ones(W + start, dtype=torch.float64)
    best, best_p = pair_kernels.rank_pairs(rows, cols, val, 1.0, ones * 0, ones, start, R, k)
    assert torch.equal(best, _rank_rows(rows - start, cols, val.float(), R, k))
    for r in range(R):
        mine = [i for i in range(rows.numel()) if int(rows[i]) == start + r and bool(torch.isfinite(val[i]))]
        mine.sort(key=lambda i: (-float(val[i]), int(cols[i])))
        assert best[r].tolist() == mine[:k] + [-1] * (k - len(mine[:k])), r
        assert torch.equal(best_p[r], torch.where(best[r] >= 0, val[best[r].clamp(min=0)], 0.0))


def test_rank_rows_prefilter_keeps_the_exact_top_k():
    """Rows with many entries are first cut to those at or above a lower bound on their k-th value; the result
    equals a brute-force ranking (value descending, ties by the lower column), with ties, -inf and NaN entries,
    a row shorter than k and an empty row."""
    from tempolens.stats.correlations import _rank_rows

    g = torch.Generator().manual_seed(0)
    R, k, W = 6, 4, 400
    rows, cols = [], []
    for r in range(R - 1):  # the last row is empty
        n = 3 if r == 2 else 300  # row 2 has fewer than k entries
        rows += [r] * n
        cols += torch.randperm(W, generator=g)[:n].tolist()
    rows_t, cols_t = torch.tensor(rows), torch.tensor(cols)
    val = torch.randint(0, 40, (len(rows),), generator=g).float() / 8  # many exact ties
    val[::37] = float("-inf")
    val[5::53] = float("nan")
    assert len(rows) > 8 * k * R  # the prefilter runs
    got = _rank_rows(rows_t, cols_t, val, R, k)
    for r in range(R):
        mine = [i for i in range(len(rows)) if rows[i] == r and bool(torch.isfinite(val[i]))]
        mine.sort(key=lambda i: (-float(val[i]), cols[i]))
        want = mine[:k] + [-1] * (k - len(mine[:k]))
        assert got[r].tolist() == want, r


@pytest.mark.parametrize("width", [40, 5000])  # columns scanned from the bitmap, and sorted (few per row)
def test_compiled_pair_sums_equal_float64_sums_in_entry_order(width):
    """The compiled coalescing: every distinct (row, column) once, sorted by row then column, each sum the float64 sum
    of its products in entry order (checked against a Python loop), with fractional values that round differently in
    another order."""
    from tempolens.stats import pair_kernels

    g = torch.Generator().manual_seed(width)
    n_tok, start, stop = 300, 3, 31
    lat, val, pos = [], [], []
    for t in range(n_tok):
        ids = sorted(set(torch.randint(0, 40, (int(torch.randint(1, 9, (1,), generator=g)),), generator=g).tolist()))
        lat += [i * (width // 40) for i in ids]
        val += (torch.rand(len(ids), generator=g) * 3 + 1e-3).tolist()
        pos += [t] * len(ids)
    latent, value, gpos = torch.tensor(lat), torch.tensor(val, dtype=torch.float32), torch.tensor(pos)
    lo, hi = start * (width // 40), stop * (width // 40)
    keys, prods = pair_kernels.pair_entries(latent, value, gpos, lo, hi, width)
    expect: dict[int, float] = {}
    for t in range(n_tok):
        at = (gpos == t).nonzero().squeeze(1).tolist()
        for e in at:
            if lo <= lat[e] < hi:
                for f in at:
                    key = lat[e] * width + lat[f]
                    expect[key] = expect.get(key, 0.0) + float(value[e]) * float(value[f])
    assert keys.numel() == sum(1 for _ in prods) and len(expect) <= keys.numel()
    rows, cols, sums = pair_kernels.coalesce_pairs(keys, prods, lo, hi - lo, width)
    order = sorted(expect)
    assert (rows * width + cols).tolist() == order
    assert sums.tolist() == [expect[k] for k in order]  # bit for bit: the same float64 additions in the same order
    empty = pair_kernels.coalesce_pairs(keys[:0], prods[:0], lo, hi - lo, width)
    assert all(x.numel() == 0 for x in empty)


def test_compiled_dense_and_entry_sums_are_the_same_sums():
    """Compiled, the dense buffer (narrow SAEs: smaller than the entries) and the coalesced entries hold bit-identical
    float64 sums; the form follows the sizes."""
    g = torch.Generator().manual_seed(5)
    batches = []
    for part in range(2):
        gpos = torch.arange(200).repeat_interleave(6) + 200 * part
        batches.append(
            CodeBatch(
                latent=torch.stack([torch.randperm(30, generator=g)[:6] for _ in range(200)]).reshape(-1),
                value=torch.rand(1200, generator=g) + 0.01,
                gpos=gpos,
                n_tokens=200,
            )
        )
    dense = PairSums(30, 2, 25, memory_mb=1, compiled=True, entries=10**6)
    entries = PairSums(30, 2, 25, memory_mb=1, compiled=True, entries=10)  # the buffer would be the larger form
    assert dense.buf is not None and entries.buf is None
    assert PairSums(30, 2, 25, memory_mb=1, compiled=True).buf is None  # entries unknown: the entries form
    for b in batches:
        dense.update(b)
        entries.update(b)
    (r1, c1, s1), (r2, c2, s2) = dense.result(), entries.result()
    assert torch.equal(r1, r2) and torch.equal(c1, c2) and torch.equal(s1, s2)
