"""Logit effects against a dense matmul reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tempolens.stats.logits import logit_effects

torch.set_num_threads(1)


def _setup(seed=0, width=13, d=16, vocab=301):
    g = torch.Generator().manual_seed(seed)
    W_dec = torch.randn(width, d, generator=g)
    W_U = torch.randn(vocab, d, generator=g)
    W_U[5] = W_U[3]  # exact ties inside one vocab chunk: the lower id must come first
    mult = 1 + 0.5 * torch.randn(d, generator=g)
    return W_dec, W_U, mult


@pytest.mark.parametrize("fold", [False, True])
@pytest.mark.parametrize(
    "block,chunk,mem", [(4, 64, 256), (100, 1000, 256), (1, 7, 256), (4, 64, 1e-4), (None, 50, 1e-4)]
)
def test_matches_dense_reference(fold, block, chunk, mem):
    W_dec, W_U, mult = _setup()
    eff = logit_effects(
        W_dec, W_U, mult if fold else None, k=10, n_bins=50, block=block, vocab_chunk=chunk, memory_mb=mem
    )
    ref = ((W_dec * mult) if fold else W_dec).double() @ W_U.double().T
    assert eff.folded_norm is fold
    for i in range(W_dec.shape[0]):
        r = ref[i]
        order = sorted(range(r.numel()), key=lambda t: (-float(r[t]), t))[:10]
        assert eff.top_ids[i].tolist() == order
        assert torch.allclose(eff.top_values[i].double(), r[order], atol=1e-5)
        order_b = sorted(range(r.numel()), key=lambda t: (float(r[t]), t))[:10]
        assert eff.bottom_ids[i].tolist() == order_b
        assert torch.allclose(eff.bottom_values[i].double(), r[order_b], atol=1e-5)
        h, edges = np.histogram(r.numpy(), bins=50, range=(float(r.min()), float(r.max())))
        assert eff.hist_counts[i].tolist() == h.tolist()
        assert np.allclose(eff.hist_centres[i].numpy(), (edges[:-1] + edges[1:]) / 2, atol=1e-4)
        assert int(eff.hist_counts[i].sum()) == W_U.shape[0]


def test_tie_order_is_by_token_id():
    W_dec, W_U, _ = _setup()
    eff = logit_effects(W_dec, W_U, k=300, vocab_chunk=64)
    for i in range(W_dec.shape[0]):
        ids = eff.top_ids[i].tolist()
        assert ids.index(3) + 1 == ids.index(5)


def test_small_vocab_and_shapes():
    W_dec, W_U, _ = _setup(vocab=6)
    eff = logit_effects(W_dec, W_U, k=10)
    assert eff.top_ids.shape == (13, 6) and eff.hist_counts.shape == (13, 50)


def test_row_topk_breaks_boundary_ties_by_lowest_id():
    from tempolens.stats.logits import row_topk

    X = torch.tensor([[1.0, 5.0, 3.0, 3.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0, 2.0, 9.0, -1.0]])
    v, i = row_topk(X, 3, largest=True)
    assert i.tolist() == [[1, 2, 3], [5, 0, 1]] and v.tolist() == [[5.0, 3.0, 3.0], [9.0, 2.0, 2.0]]
    v, i = row_topk(X, 2, largest=False)
    assert i.tolist() == [[6, 0], [6, 0]]


def test_histogram_rows_matches_numpy():
    from tempolens.stats.logits import histogram_rows

    g = torch.Generator().manual_seed(1)
    X = torch.randn(5, 10_000, generator=g)
    X[3] = 0.5  # a constant row: everything in the first bin
    lo, hi = X.amin(1), X.amax(1)
    counts = histogram_rows(X.clone(), lo, hi, 50)
    for r in range(5):
        if r == 3:
            assert counts[r, 0] == 10_000 and counts[r, 1:].sum() == 0
            continue
        x = X[r].double().numpy()
        h, _ = np.histogram(x, bins=50, range=(float(lo[r]), float(hi[r])))
        # float32 arithmetic may put a value lying within rounding of a bin edge on the other side
        pos = (x - float(lo[r])) * 50 / (float(hi[r]) - float(lo[r]))
        near_edge = int((np.abs(pos - np.round(pos)) < 1e-4).sum())
        assert int(counts[r].sum()) == 10_000
        assert int(np.abs(counts[r].numpy() - h).sum()) <= 2 * near_edge, (counts[r].tolist(), h.tolist())


@pytest.mark.parametrize("V,k,group", [(1000, 10, 16), (1037, 10, 16), (4096, 5, 64), (300, 10, 16), (50, 10, 16)])
def test_row_ends_equal_row_topk_with_ties(V, k, group):
    from tempolens.stats.logits import row_ends, row_topk

    g = torch.Generator().manual_seed(V + k)
    X = torch.randn(12, V, generator=g).round(decimals=1)  # many exact ties, also between groups' extremes
    X[3] = 0.0  # a constant row
    X[4, ::7] = 10.0  # the top value repeated in many groups
    X[5, : V // 2] = X[5, V // 2 : 2 * (V // 2)]  # duplicated halves
    tv, ti, bv, bi = row_ends(X, k, group=group)
    rv, ri = row_topk(X, k, largest=True)
    sv, si = row_topk(X, k, largest=False)
    assert torch.equal(ti, ri) and torch.equal(tv, rv)
    assert torch.equal(bi, si) and torch.equal(bv, sv)
    for r in range(X.shape[0]):  # and both agree with a sort by (value, id)
        order = sorted(range(V), key=lambda t: (-float(X[r, t]), t))[: min(k, V)]
        assert ti[r].tolist() == order
