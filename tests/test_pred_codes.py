"""Dashboards of the predicted codes z_pred: collect keeps each token's top-k |z_pred| (signed), and
`tempolens dashboards --codes pred` builds the same dashboards from them (positive predictions ranked
and counted, negatives shown in the windows), linked both ways with the novel-code site. Checked
against a direct forward of the tiny LM and a random Temporal SAE."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from fixtures import save_tiny_temporal_sae, write_word_corpus
from schema_validation import validate_batch, validate_feature
from viewer_browser import browser  # noqa: F401  (a fixture)

from tempolens.collect import CollectConfig, collect
from tempolens.dashboards.pipeline import DashboardConfig, build_dashboards
from tempolens.dashboards.site import read_site_records
from tempolens.saes.temporal import top_abs_codes
from tempolens.store import CodeStore, StoreError

torch.set_num_threads(1)
K = 6


def test_top_abs_codes_match_brute_force():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 5, 40, generator=g)
    z[0, 0] = 0.0  # an all-zero token keeps nothing
    z[1, 1, 3:] = 0.0  # a token with fewer than K nonzero entries keeps only those
    c = top_abs_codes(z, K)
    for b in range(2):
        for t in range(5):
            row = z[b, t]
            order = sorted(range(40), key=lambda j: -abs(float(row[j])))[:K]
            want = {j: float(row[j]) for j in order if row[j] != 0}
            got = {int(i): float(v) for i, v in zip(c.indices[b, t], c.values[b, t]) if int(i) >= 0}
            assert got == want
    # with a per-latent centre and scale: ranked by |z - centre| / scale, raw values kept
    center, scale = torch.randn(40, generator=g), torch.rand(40, generator=g) + 0.1
    c = top_abs_codes(z, K, center, scale)
    for b in range(2):
        for t in range(5):
            row = z[b, t]
            order = sorted(range(40), key=lambda j: -abs(float((row[j] - center[j]) / scale[j])))[:K]
            want = {j: float(row[j]) for j in order if row[j] != 0}
            got = {int(i): float(v) for i, v in zip(c.indices[b, t], c.values[b, t]) if int(i) >= 0}
            assert got == want


@pytest.fixture(scope="module")
def run(tiny_lm_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("pred")
    corpus = write_word_corpus(root / "docs.txt", seed=0)
    sae_dir = save_tiny_temporal_sae(root / "sae", seed=3)
    cfg = CollectConfig(
        model=str(tiny_lm_dir),
        layer=2,
        sae=str(sae_dir),
        corpus=str(corpus),
        n_prompts=12,
        prompt_len=16,
        shard_prompts=4,
        batch_size=3,
        out=root / "store",
        pred_k=K,
        progress=False,
    )
    res = collect(cfg)
    dash = root / "dash"
    W_dec = res.sae.W_dec.detach().float().cpu()
    base = dict(store=cfg.out, out=dash, chunk_size=32, progress=False)
    build_dashboards(DashboardConfig(batches=True, bulk=True, **base), model=res.model, W_dec=W_dec)
    build_dashboards(DashboardConfig(batches=True, bulk=True, **base, codes="pred"), model=res.model, W_dec=W_dec)
    return res, cfg, dash, W_dec


def _details(res, cfg):
    from tempolens.sources.corpora import build_prompts, iter_documents

    prompts = build_prompts(res.model.tokenizer, iter_documents(cfg.corpus), n_prompts=12, prompt_len=16, seed=0)
    with torch.inference_mode():
        return prompts, res.sae.forward_details(res.model.hidden_at(prompts.tokens).float())


def _records(site: Path) -> dict[int, dict]:
    return read_site_records(site)


def test_store_keeps_top_k_abs_pred_per_token(run):
    res, cfg, _, _ = run
    store = CodeStore(cfg.out)
    assert store.meta["pred_codes"]["k"] == K
    _, det = _details(res, cfg)
    z = det.z_pred.reshape(-1, res.sae.width)
    got = []
    for sh in store.iter_shards():
        assert sh.has_pred_codes
        tok = sh.pred_token() + sh.index * 4 * 16
        got += list(zip(tok.tolist(), sh.pred_latent.tolist(), sh.pred_value.tolist()))
    by_tok: dict[int, dict[int, float]] = {}
    for t, lat, v in got:
        by_tok.setdefault(t, {})[lat] = v
    center = torch.tensor(store.meta["pred_codes"]["center"])
    scale = torch.tensor(store.meta["pred_codes"]["scale"])
    # the calibration: mean and std of z_pred over the counted tokens of the first batch (3 prompts)
    prompts, _ = _details(res, cfg)
    first = det.z_pred[:3][~prompts.special[:3].bool()].double()
    torch.testing.assert_close(center, first.mean(0).float(), rtol=1e-4, atol=1e-6)
    sd = first.std(0, correction=0).float()
    torch.testing.assert_close(scale[sd > 0], sd[sd > 0], rtol=1e-4, atol=1e-6)
    for t in range(z.shape[0]):
        row = z[t]
        score = ((row - center) / scale).abs()
        kth = float(torch.sort(score, descending=True).values[K - 1])
        kept = by_tok.get(t, {})
        assert len(kept) == min(K, int((row != 0).sum()))
        for j in range(row.numel()):  # the K best scores are kept (up to float noise at the K-th place)
            if j in kept:
                assert float(score[j]) >= kth * (1 - 1e-4) - 1e-6
                assert kept[j] == pytest.approx(float(row[j]), rel=1e-4, abs=1e-5)
            else:
                assert float(score[j]) <= kth * (1 + 1e-4) + 1e-6


def test_pred_dashboards_rank_positive_predictions(run):
    """Top examples of the pred view = the largest stored z_pred > 0 of each latent (× row norm);
    windows carry the signed stored z_pred; density counts z_pred > 0 among the stored codes."""
    res, cfg, dash, W_dec = run
    store = CodeStore(cfg.out)
    W = store.width
    T = store.prompt_len
    norm = W_dec.double().norm(dim=1)
    dense = torch.zeros(store.n_prompts * T, W, dtype=torch.float64)
    special = torch.cat([sh.special for sh in store.iter_shards()]).reshape(-1).bool()
    for sh in store.iter_shards():
        dense[sh.pred_token() + sh.index * 4 * T, sh.pred_latent.long()] = sh.pred_value.double()
    dense[special] = 0.0
    n_counted = int((~special).sum())
    recs = _records(dash / "site" / "pred")
    assert recs
    n_checked = 0
    for i, rec in recs.items():
        col = dense[:, i]
        pos = col[col > 0]
        assert rec["frac_nonzero"] == pytest.approx(pos.numel() / n_counted)
        tops = [a for a in rec["activations"] if a["bin_min"] == -1]
        want = torch.sort(pos, descending=True).values[: len(tops)] * norm[i]
        got = [a["values"][a["qualifying_token_index"]] for a in tops]
        assert got == pytest.approx(want.tolist(), rel=1e-4)
        assert rec["tempolens"]["max_act"] == pytest.approx(
            float(pos.max() * norm[i]) if pos.numel() else 0.0, rel=1e-6
        )
        for a in rec["activations"]:
            g = a["prompt_index"] * T
            signed = (dense[g : g + T, i] * norm[i]).tolist()
            pv = [0.0 if x is None else x for x in a["pred_values"]]
            assert pv == pytest.approx(signed, rel=1e-4, abs=1e-6)
            assert a["values"] == pytest.approx([max(0.0, x) for x in signed], rel=1e-4, abs=1e-6)
        validate_feature(f"pred[{i}]", rec, site=True, temporal=True)
        n_checked += 1
    assert n_checked == len(recs)
    assert any(
        x is not None and x < 0 for rec in recs.values() for a in rec["activations"] for x in a["pred_values"]
    )  # negatives shown


def _flipped_store(res, cfg, root: Path):
    """The run's store collected again with the SAE's decoder negated and its encoder kept (untied, E = the
    old Dᵀ). ``z_in`` comes from the encoder, so (p, D) → (−p, −D) leaves every prediction p·z·D unchanged
    and flips every z_pred: the same predictor, read the other way round."""
    import dataclasses

    from tempolens.saes.loading import load_sae, save_temporal_sae
    from tempolens.saes.temporal import TemporalSAE

    tied = load_sae(str(cfg.sae))
    sae = TemporalSAE(dataclasses.replace(tied.cfg, tied=False))
    state = {k: v for k, v in tied.state_dict().items()}
    state["E"] = tied.D.detach().T.clone()
    state["D"] = -tied.D.detach()
    sae.load_state_dict(state)
    flipped = collect(
        CollectConfig(
            **{**cfg.__dict__, "sae": str(save_temporal_sae(sae, root / "sae-neg")), "out": root / "store-neg"}
        )
    )
    return flipped, sae.W_dec.detach().float().cpu()


@pytest.fixture(scope="module")
def flipped(run, tmp_path_factory):
    res, cfg, _, _ = run
    tmp_path = tmp_path_factory.mktemp("flipped")
    model, W_neg = _flipped_store(res, cfg, tmp_path)
    build_dashboards(
        DashboardConfig(
            batches=True,
            bulk=True,
            store=tmp_path / "store-neg",
            out=tmp_path / "dash",
            chunk_size=32,
            progress=False,
            codes="pred",
        ),
        model=model.model,
        W_dec=W_neg,
    )
    return tmp_path


def test_pred_dashboards_are_invariant_to_the_sign_of_p(run, flipped):
    """A predictor whose p is mostly negative writes −D: its codes are read as −z_pred and its directions
    as −D (the store's ``pred_codes.sign``), so the SAE with D negated — p and z_pred negated, the same
    predictions — gets the same predicted-code dashboards, logit effects and alignment included."""
    _, cfg, dash, _ = run
    tmp_path = flipped
    a, b = CodeStore(cfg.out), CodeStore(tmp_path / "store-neg")
    assert a.pred_sign == 1.0 and a.meta["pred_codes"]["sign"] == 1
    assert b.pred_sign == -1.0 and b.meta["pred_codes"]["sign"] == -1
    for sa, sb in zip(a.iter_shards(), b.iter_shards()):  # the same tokens and latents, z_pred negated
        assert torch.equal(sa.pred_latent, sb.pred_latent)
        torch.testing.assert_close(sb.pred_value, -sa.pred_value, rtol=1e-5, atol=1e-6)
    want, got = _records(dash / "site" / "pred"), _records(tmp_path / "dash" / "site" / "pred")
    assert want.keys() == got.keys() and want
    for i in want:
        w, g = want[i], got[i]
        assert g["frac_nonzero"] == pytest.approx(w["frac_nonzero"])
        for key in ("pos_str", "neg_str", "neuron_alignment_indices"):
            assert g[key] == w[key], (i, key)
        for key in ("pos_values", "neg_values", "neuron_alignment_values", "logits_hist_data_bar_values"):
            assert g[key] == pytest.approx(w[key], rel=1e-4, abs=1e-5), (i, key)
        assert sum(g["logits_hist_data_bar_heights"]) == sum(w["logits_hist_data_bar_heights"])
        for key in ("values", "pred_values"):
            flat = [[0.0 if v is None else v for x in r["activations"] for v in x[key]] for r in (g, w)]
            assert flat[0] == pytest.approx(flat[1], rel=1e-4, abs=1e-6), (i, key)
    meta = json.loads(
        re.fullmatch(
            r"tempolensMeta\((.*)\);\n", (tmp_path / "dash" / "site" / "pred" / "data" / "meta.js").read_text(), re.S
        ).group(1)
    )
    settings = json.loads((tmp_path / "dash" / "neuronpedia-pred" / "batches" / "run_settings.json").read_text())
    assert meta["pred_sign"] == -1 and settings["pred_sign"] == -1 and "-z_pred" in settings["activations"]


def test_pred_site_is_linked_both_ways_and_states_its_codes(run):
    _, _, dash, _ = run
    site = dash / "site"
    assert (
        site / "data" / "views.js"
    ).read_text() == 'tempolensViews({"novel": "index.html", "pred": "pred/index.html"});\n'
    meta = json.loads(
        re.fullmatch(r"tempolensMeta\((.*)\);\n", (site / "pred" / "data" / "meta.js").read_text(), re.S).group(1)
    )
    assert meta["codes"] == "pred" and meta["act_units"] == "norm" and "predicted" in meta["title"]
    assert (site / "pred" / "index.html").is_file() and (site / "pred" / "assets" / "app.js").is_file()
    settings = json.loads((dash / "neuronpedia-pred" / "batches" / "run_settings.json").read_text())
    assert settings["codes"] == "pred" and settings["pred_codes"]["k"] == K and "z_pred" in settings["activations"]
    for p in (dash / "neuronpedia-pred" / "batches").glob("batch-*.json"):
        obj = json.loads(p.read_text())
        validate_batch(obj)
        assert obj["sae_set"] == "temporal-pred-res"
    sums = (dash / "SHA256SUMS").read_text()
    assert "site/pred/data/meta.js" in sums and "neuronpedia/batches/batch-0.json" in sums


def test_codes_pred_needs_a_store_with_pred_codes(tiny_lm_dir, tmp_path, run):
    res, cfg, _, W_dec = run
    plain = collect(
        CollectConfig(
            **{
                **{k: getattr(cfg, k) for k in ("model", "layer", "sae", "corpus", "prompt_len", "batch_size")},
                "n_prompts": 4,
                "shard_prompts": 4,
                "out": tmp_path / "s0",
                "pred_k": 0,
                "progress": False,
            }
        )
    )
    assert "pred_codes" not in CodeStore(tmp_path / "s0").meta
    assert not CodeStore(tmp_path / "s0").load_shard(0).has_pred_codes
    with pytest.raises(StoreError, match="--pred-k"):
        build_dashboards(
            DashboardConfig(
                batches=True, bulk=True, store=tmp_path / "s0", out=tmp_path / "d0", codes="pred", progress=False
            ),
            model=plain.model,
            W_dec=W_dec,
        )


@pytest.mark.browser
def test_latent_pages_link_novel_and_predicted_views_both_ways(run, browser):  # noqa: F811
    from viewer_browser import visit

    _, _, dash, _ = run
    site = dash / "site"
    recs = _records(site / "pred")
    i = next(k for k, r in sorted(recs.items()) if r["activations"])
    v = visit(browser, site, width=1280)
    try:
        v.open(f"#/latent/{i}")
        v.page.wait_for_selector(f"article.latent h1:text-is('Latent {i}')")
        assert "novel codes" in v.page.text_content(".view-switch [aria-current=page]")
        v.page.click(".view-switch a:text-is('predicted codes')")
        v.page.wait_for_selector(f"article.latent h1:text-is('Latent {i} · predicted codes')")
        assert v.page.url.endswith(f"/site/pred/index.html#/latent/{i}")
        assert "predicted code z_pred > 0" in v.page.text_content(".legend")
        negs = v.page.eval_on_selector_all(
            ".ex-tokens .tok.neg", "els => els.map(e => getComputedStyle(e).backgroundColor)"
        )
        assert all(c.startswith("rgba(37, 99, 235") for c in negs)
        v.page.click(".view-switch a:text-is('novel codes')")
        v.page.wait_for_selector(f"article.latent h1:text-is('Latent {i}')")
        assert v.page.url.endswith(f"/site/index.html#/latent/{i}")
        v.assert_clean()
    finally:
        v.page.context.close()


@pytest.mark.browser
def test_flipped_predictor_is_named_on_the_page(flipped, browser):  # noqa: F811
    from viewer_browser import visit

    site = flipped / "dash" / "site" / "pred"
    i = next(k for k, r in sorted(_records(site).items()) if r["activations"])
    v = visit(browser, site, width=1280)
    try:
        v.open(f"#/latent/{i}")
        v.page.wait_for_selector(f"article.latent h1:text-is('Latent {i} · predicted codes')")
        legend = v.page.text_content(".legend")
        assert "predicted code −z_pred > 0" in legend and "points along −D" in legend
        v.assert_clean()
    finally:
        v.page.context.close()


def test_pred_orientation_is_the_sign_of_the_summed_centre(run, flipped):
    """The rule `collect` records and older stores (no `pred_codes.sign`) fall back to."""
    from tempolens.store.codestore import pred_orientation

    assert pred_orientation([0.2, -0.5, 0.1]) == -1 and pred_orientation([0.5, -0.2]) == 1 and pred_orientation([]) == 1
    for root in (run[1].out, flipped / "store-neg"):
        meta = CodeStore(root).meta["pred_codes"]
        assert meta["sign"] == pred_orientation(meta["center"])
