"""Feature statistics against brute-force dense computation on small random stores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tempolens.stats.accumulators import (
    CodeBatch,
    CountsAccumulator,
    IntervalSampler,
    TopKAccumulator,
    bin_index,
    sample_keys,
)
from tempolens.stats.examples import gather_windows
from tempolens.stats.features import FeatureStats, compute_feature_stats, neuron_alignment
from tempolens.store.codestore import CodeStore, StoreWriter

torch.set_num_threads(1)


def make_codes(
    n_prompts: int = 12,
    T: int = 16,
    width: int = 24,
    k: int = 5,
    seed: int = 0,
    temporal: bool = True,
    ties: bool = True,
):
    """Random sparse codes as whole-store arrays (tokens, special, CSR codes, extras)."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(4, 60, (n_prompts, T), generator=g)
    special = torch.zeros(n_prompts, T, dtype=torch.uint8)
    special[:, 0] = 1  # BOS
    tokens[:, 0] = 2
    special[-1, -3:] = 1  # some padding at the end of the last prompt
    tokens[-1, -3:] = 0
    # skewed latent popularity; latent width-1 is dead
    probs = torch.linspace(3.0, 0.2, width)
    probs[-1] = 0
    N = n_prompts * T
    n_per = torch.randint(0, k + 1, (N,), generator=g)
    lat_list, val_list = [], []
    for i in range(N):
        lat = (
            torch.multinomial(probs, int(n_per[i]), replacement=False, generator=g)
            if n_per[i] > 0
            else torch.zeros(0, dtype=torch.int64)
        )
        val = torch.rand(int(n_per[i]), generator=g) * 4 + 0.01
        if ties:
            val = (val * 4).round() / 4 + 0.25  # many exact ties, all > 0
        lat_list.append(lat)
        val_list.append(val)
    ptr = torch.zeros(N + 1, dtype=torch.int64)
    ptr[1:] = torch.cumsum(n_per, 0)
    latent = torch.cat(lat_list).to(torch.int32)
    value = torch.cat(val_list).to(torch.float32)
    extras = {"sq_err": torch.rand(n_prompts, T, generator=g), "sq_norm": torch.rand(n_prompts, T, generator=g) + 1}
    code_extras = {}
    if temporal:
        extras["pred_share"] = torch.rand(n_prompts, T, generator=g)
        code_extras["pred"] = torch.randn(latent.numel(), generator=g)
    return dict(
        tokens=tokens,
        special=special,
        ptr=ptr,
        latent=latent,
        value=value,
        extras=extras,
        code_extras=code_extras,
        width=width,
        T=T,
        n_prompts=n_prompts,
    )


def write_store(root: Path, c: dict, shard_prompts: int) -> CodeStore:
    P, T, W = c["n_prompts"], c["T"], c["width"]
    n_shards = (P + shard_prompts - 1) // shard_prompts
    meta = {
        "model": {
            "spec": "tiny",
            "model_id": "org/tiny-model",
            "hook_name": "blocks.1.hook_resid_post",
            "layer": 1,
            "hidden_size": 8,
        },
        "sae": {
            "spec": "tiny-sae",
            "architecture": "temporal" if c["extras"].get("pred_share") is not None else "topk",
            "width": W,
            "d_in": 8,
        },
        "prompts": {"n_prompts": P, "prompt_len": T, "seed": 0, "policy": "test"},
        "corpus": {"spec": "test-corpus"},
        "n_shards": n_shards,
        "shard_size": shard_prompts,
        "created": "2026-01-01T00:00:00Z",
    }
    w = StoreWriter(root, meta)
    for s in range(n_shards):
        lo, hi = s * shard_prompts, min(P, (s + 1) * shard_prompts)
        a, b = int(c["ptr"][lo * T]), int(c["ptr"][hi * T])
        w.write_shard(
            s,
            tokens=c["tokens"][lo:hi],
            prompt_ids=torch.arange(lo, hi),
            special=c["special"][lo:hi],
            code_ptr=c["ptr"][lo * T : hi * T + 1] - a,
            code_latent=c["latent"][a:b],
            code_value=c["value"][a:b],
            extras={k: v[lo:hi] for k, v in c["extras"].items()},
            code_extras={k: v[a:b] for k, v in c["code_extras"].items()},
        )
    return CodeStore(root)


def dense_of(c: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dense [N, W] codes, dense [N, W] preds (NaN where absent), valid mask [N]."""
    N = c["n_prompts"] * c["T"]
    counts = c["ptr"][1:] - c["ptr"][:-1]
    tok = torch.repeat_interleave(torch.arange(N), counts)
    D = torch.zeros(N, c["width"], dtype=torch.float64)
    D[tok, c["latent"].long()] = c["value"].double()
    Pd = torch.full((N, c["width"]), float("nan"))
    if c["code_extras"]:
        Pd[tok, c["latent"].long()] = c["code_extras"]["pred"]
    valid = c["special"].reshape(-1) == 0
    return D, Pd, valid


@pytest.fixture(scope="module")
def codes():
    return make_codes()


@pytest.fixture(scope="module")
def stores(codes, tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    return {sp: write_store(root / f"s{sp}", codes, sp) for sp in (12, 5, 3)}


@pytest.fixture(scope="module")
def stats(stores):
    return compute_feature_stats(stores[12], seed=7, progress=False)


def test_counts_match_dense(codes, stats):
    D, _, valid = dense_of(codes)
    Dv = D[valid]
    assert stats.n_tokens == int(valid.sum())
    assert torch.equal(stats.n_active, (Dv > 0).sum(0))
    assert torch.allclose(stats.sum, Dv.sum(0))
    assert torch.allclose(stats.sum_sq, (Dv**2).sum(0))
    assert torch.allclose(stats.max_act.double(), Dv.max(0).values)
    assert torch.allclose(stats.frac_nonzero, (Dv > 0).double().mean(0), rtol=0, atol=1e-15)
    assert stats.frac_nonzero.dtype == torch.float64
    assert stats.n_active[-1] == 0  # the dead latent


def test_specials_never_count(codes, stats):
    D, _, valid = dense_of(codes)
    # codes sitting at BOS/pad positions exist in the store but are ignored
    assert (D[~valid] > 0).any()  # the store does hold codes there
    special_pos = {int(p) for p in torch.nonzero(~valid).squeeze(1)}
    used = stats.top_gpos[stats.top_gpos >= 0].tolist() + stats.int_gpos[stats.int_gpos >= 0].tolist()
    assert not special_pos.intersection(used)


def test_topk_matches_dense_with_deterministic_ties(codes, stats):
    D, Pd, valid = dense_of(codes)
    N, W = D.shape
    share = codes["extras"]["pred_share"].reshape(-1)
    k = stats.top_value.shape[1]
    for lat in range(W):
        col = D[:, lat].clone()
        col[~valid] = 0
        pos = torch.nonzero(col > 0).squeeze(1).tolist()
        # reference order: value descending, then position ascending
        ref = sorted(pos, key=lambda p: (-float(col[p]), p))[:k]
        got = [p for p in stats.top_gpos[lat].tolist() if p >= 0]
        assert got == ref, lat
        assert torch.allclose(stats.top_value[lat, : len(ref)].double(), col[ref])
        assert torch.allclose(stats.top_pred[lat, : len(ref)], Pd[ref, lat])
        assert torch.allclose(stats.top_pred_share[lat, : len(ref)], share[ref])
    # mean predicted share at the top examples
    alive = stats.n_active > 0
    ref_mean = torch.stack(
        [
            share[[p for p in stats.top_gpos[i].tolist() if p >= 0]].mean() if alive[i] else torch.tensor(float("nan"))
            for i in range(W)
        ]
    )
    assert torch.allclose(stats.pred_share_top[alive], ref_mean[alive])
    assert torch.isnan(stats.pred_share_top[~alive]).all()


def test_histogram_matches_numpy(codes, stats):
    D, _, valid = dense_of(codes)
    Dv = D[valid].float()
    for lat in range(codes["width"]):
        nz = Dv[:, lat][Dv[:, lat] > 0]
        if nz.numel() == 0:
            assert stats.hist_counts[lat].sum() == 0
            continue
        # bins (0, max]: a value on an edge belongs to the lower bin (right-closed bins)
        edges = stats.hist_edges[lat]
        ref = [int(((nz > edges[i]) & (nz <= edges[i + 1])).sum()) for i in range(50)]
        assert stats.hist_counts[lat].tolist() == ref
        assert int(stats.hist_counts[lat].sum()) == int(stats.n_active[lat])
        # and agrees with numpy's histogram on the same range away from edges
        h, _ = np.histogram(nz.numpy(), bins=50, range=(0, float(stats.max_act[lat])))
        assert h.sum() == sum(ref)


def test_intervals_exclude_zeros_and_share_active(codes, stats):
    D, _, valid = dense_of(codes)
    Dv = D.clone().float()
    Dv[~valid] = 0
    n_int = stats.int_counts.shape[1]
    for lat in range(codes["width"]):
        col = Dv[:, lat]
        nz = col[col > 0]
        edges = stats.int_edges[lat]
        ref = torch.tensor([int(((nz > edges[i]) & (nz <= edges[i + 1])).sum()) for i in range(n_int)])
        assert torch.equal(stats.int_counts[lat], ref)
        if nz.numel():
            assert torch.allclose(stats.int_share[lat], ref.double() / nz.numel())
            assert abs(float(stats.int_share[lat].sum()) - 1) < 1e-12
        for j in range(n_int):
            got = [p for p in stats.int_gpos[lat, j].tolist() if p >= 0]
            members = [p for p in torch.nonzero((col > edges[j]) & (col <= edges[j + 1])).squeeze(1).tolist()]
            assert len(got) == min(5, len(members))
            assert set(got) <= set(members)  # only nonzero, in-interval activations
            for p, v in zip(got, stats.int_value[lat, j].tolist()):
                assert v > 0 and v == pytest.approx(float(col[p]))
            # exactly the smallest hash keys
            if members:
                keys = sample_keys(7, torch.tensor(members), torch.full((len(members),), lat), codes["width"])
                ref_sel = [members[i] for i in torch.argsort(keys).tolist()[:5]]
                assert sorted(got) == sorted(ref_sel)


def test_correlations_match_dense(codes, stats):
    D, _, valid = dense_of(codes)
    Dv = D[valid]
    C = torch.corrcoef(Dv.T)
    norms = Dv.norm(dim=0)
    W = codes["width"]
    for i in range(W):
        idx = stats.corr_indices[i].tolist()
        if stats.n_active[i] == 0:
            assert idx == [-1] * len(idx)
            continue
        cand = [(-float(C[i, j]), j) for j in range(W) if j != i and stats.n_active[j] > 0]
        ref = [j for _, j in sorted(cand)[: len(idx)]]
        assert idx == ref
        for j, p, c in zip(idx, stats.corr_pearson[i].tolist(), stats.corr_cosine[i].tolist()):
            assert p == pytest.approx(float(C[i, j]), abs=1e-5)
            assert c == pytest.approx(float(Dv[:, i] @ Dv[:, j] / (norms[i] * norms[j])), abs=1e-5)


def test_correlations_in_row_blocks_equal_one_block(stores, stats):
    blocked = compute_feature_stats(stores[5], seed=7, progress=False, corr_memory_mb=1e-4)  # ≈ 2 pairs a block
    assert stats.settings["correlation_blocks"] == 1 and blocked.settings["correlation_blocks"] > 8
    assert torch.equal(blocked.corr_indices, stats.corr_indices)
    assert torch.allclose(blocked.corr_pearson, stats.corr_pearson, atol=1e-6)


@pytest.mark.parametrize("split", [5, 3])
def test_any_sharding_gives_the_same_result(stores, stats, split):
    other = compute_feature_stats(stores[split], seed=7, progress=False)
    for name in (
        "n_active",
        "max_act",
        "top_value",
        "top_gpos",
        "top_pred",
        "top_pred_share",
        "hist_counts",
        "int_counts",
        "int_value",
        "int_gpos",
        "int_pred",
        "corr_indices",
    ):
        assert torch.equal(getattr(other, name).nan_to_num(-9), getattr(stats, name).nan_to_num(-9)), name
    assert torch.allclose(other.sum, stats.sum) and torch.allclose(other.corr_pearson, stats.corr_pearson, atol=1e-6)


def test_merge_equals_one_pass(stores, stats):
    s5 = stores[5]
    shards = [CodeBatch.from_shard(s) for s in s5.iter_shards()]
    parts = []
    for b in shards:
        c, t = CountsAccumulator(24), TopKAccumulator(24, 20)
        c.update(b), t.update(b)
        iv = IntervalSampler(stats.max_act, 5, 5, seed=7)
        iv.update(b)
        parts.append((c, t, iv))
    # merge in reverse order
    c, t, iv = parts[-1]
    for c2, t2, iv2 in reversed(parts[:-1]):
        c.merge(c2), t.merge(t2), iv.merge(iv2)
    assert torch.equal(c.n_active, stats.n_active) and torch.equal(c.max, stats.max_act)
    assert torch.equal(t.gpos, stats.top_gpos) and torch.equal(t.value, stats.top_value)
    r = iv.result()
    assert torch.equal(r["gpos"], stats.int_gpos) and torch.equal(r["counts"], stats.int_counts)


def test_seed_changes_samples_deterministically(stores, stats):
    again = compute_feature_stats(stores[3], seed=7, progress=False)
    other = compute_feature_stats(stores[12], seed=8, progress=False)
    assert torch.equal(again.int_gpos, stats.int_gpos)
    assert not torch.equal(other.int_gpos, stats.int_gpos)


def test_bin_index_edges():
    hi = torch.tensor([1.0] * 6)
    v = torch.tensor([1e-6, 0.2, 0.2000001, 0.5, 0.999, 1.0])
    assert bin_index(v, hi, 5).tolist() == [0, 0, 1, 2, 4, 4]


def test_save_load_roundtrip(stats, tmp_path):
    stats.save(tmp_path / "s.safetensors")
    back = FeatureStats.load(tmp_path / "s.safetensors")
    assert back.n_tokens == stats.n_tokens and back.is_temporal and back.settings == stats.settings
    assert torch.equal(back.int_gpos, stats.int_gpos)


def test_neuron_alignment():
    W = torch.tensor([[0.5, -2.0, 1.0, 0.5], [-1.0, -1.0, 3.0, 0.0]])
    na = neuron_alignment(W, 2)
    assert na["indices"].tolist() == [[2, 0], [2, 0]] or na["indices"][0, 0] == 2
    assert na["values"][0].tolist() == [1.0, 0.5]
    assert na["l1"][0].tolist() == pytest.approx([1.0 / 4.0, 0.5 / 4.0])
    assert na["l1"][1, 0] == pytest.approx(3 / 5)


def test_windows_match_dense(codes, stores, stats):
    D, Pd, valid = dense_of(codes)
    T = codes["T"]
    st = stores[5]
    lat = torch.arange(codes["width"]).unsqueeze(1).expand_as(stats.top_gpos)
    m = stats.top_gpos >= 0
    w = gather_windows(st, lat[m], stats.top_gpos[m], window=8, after=2)
    assert w.tokens.shape[1] == 8
    share = codes["extras"]["pred_share"]
    for e in range(w.latent.numel()):
        g = int(stats.top_gpos[m][e])
        p, t = divmod(g, T)
        s = int(w.start[e])
        assert 0 <= s <= T - 8 and s <= t < s + 8 and t - s <= 8 - 1 - 0
        assert int(w.qualifying[e]) == t - s
        if 5 <= t <= T - 3:
            assert t - s == 5  # 8 - 1 - 2 tokens before, 2 after
        sl = slice(p * T + s, p * T + s + 8)
        ref = D[sl, int(w.latent[e])].float() * valid[sl]
        assert torch.equal(w.values[e], ref)
        assert w.values[e, t - s] == stats.top_value[m][e]
        assert torch.equal(w.tokens[e], codes["tokens"][p, s : s + 8])
        refp = Pd[sl, int(w.latent[e])].masked_fill(~valid[sl], float("nan"))
        assert torch.equal(w.pred[e].nan_to_num(-9), refp.nan_to_num(-9))
        assert torch.equal(w.pred_share[e], share[p, s : s + 8])
    whole = gather_windows(st, lat[m][:3], stats.top_gpos[m][:3], window=128)
    assert whole.tokens.shape[1] == T and (whole.start == 0).all()


def test_example_windows_are_the_shown_examples_with_their_groups(stores, stats):
    """example_windows = the examples examples_of shows, in its order, read by gather_windows, with each group."""
    from tempolens.stats.examples import example_windows, examples_of

    st, latents = stores[5], [0, 3, 7]
    lat, gpos, group, value = examples_of(stats, latents)
    assert (group == -1).any() and (group >= 0).any()
    w = example_windows(st, stats, latents, window=8, after=2)
    ref = gather_windows(st, lat, gpos, window=8, after=2)
    assert w.group is not None and torch.equal(w.group, group) and torch.equal(w.latent, lat)
    assert torch.equal(w.values, ref.values) and torch.equal(w.tokens, ref.tokens) and torch.equal(w.start, ref.start)
    assert torch.equal(w.values[torch.arange(lat.numel()), w.qualifying], value)
    assert w.scaled(torch.full((stats.width,), 2.0)).group is w.group


def test_histogram_and_coact_merge_equal_one_pass(stores, stats):
    from tempolens.stats.accumulators import HistogramAccumulator
    from tempolens.stats.correlations import PairSums, correlations_from_pairs

    batches = [CodeBatch.from_shard(s) for s in stores[3].iter_shards()]
    hists, coacts = [], []
    for b in batches:
        h, c = HistogramAccumulator(stats.max_act, 50), PairSums(24, 4, 17, memory_mb=1)
        h.update(b), c.update(b)
        hists.append(h), coacts.append(c)
    h, c = hists[0], coacts[0]
    for h2, c2 in zip(hists[1:], coacts[1:]):
        h.merge(h2), c.merge(c2)
    assert torch.equal(h.result()["counts"], stats.hist_counts)
    one = PairSums(24, 4, 17, memory_mb=1)
    for b in batches:
        one.update(b)
    (r1, c1, s1), (r2, c2, s2) = c.result(), one.result()
    assert torch.equal(r1, r2) and torch.equal(c1, c2) and torch.allclose(s1, s2, rtol=1e-12)
    corr = correlations_from_pairs(c.result(), 4, 17, stats.n_tokens, stats.sum, stats.sum_sq, stats.n_active, 3)
    assert torch.equal(corr["indices"], stats.corr_indices[4:17])
    with pytest.raises(ValueError):
        c.merge(PairSums(24, 0, 24))
