"""One unit convention for dashboards: activations are contribution norms (code × decoder row norm,
model units) by default, raw codes with `--act-units code`; logit effects are those of the unit-norm
decoder direction. Checked against brute-force references on a small random store and the tiny LM."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from schema_validation import validate_batch
from test_stats_accumulators import make_codes, write_store

from tempolens.dashboards.pipeline import ACT_UNITS, DashboardConfig, build_dashboards
from tempolens.dashboards.site import read_site_records
from tempolens.errors import ConfigError
from tempolens.stats.features import FeatureStats, compute_feature_stats

torch.set_num_threads(1)
WIDTH, D = 24, 32


@pytest.fixture(scope="module")
def lm(tiny_lm_dir):
    from tempolens.sources.open import load_subject_model

    return load_subject_model(tiny_lm_dir, layer=1, progress=None)


@pytest.fixture(scope="module")
def codes():
    return make_codes(n_prompts=12, T=16, width=WIDTH, ties=False)


@pytest.fixture(scope="module")
def store(codes, tmp_path_factory):
    return write_store(tmp_path_factory.mktemp("store") / "s", codes, 5)


def _rows(n: int, scale: torch.Tensor | None, seed: int = 3) -> torch.Tensor:
    W = torch.randn(WIDTH, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    W = W / W.norm(dim=1, keepdim=True)
    if scale is not None:
        W = W * scale.to(torch.float64).unsqueeze(1)
    return W.to(torch.float32)


def _features(out: Path) -> dict[int, dict]:
    feats = {}
    for p in sorted((out / "neuronpedia" / "batches").glob("batch-*.json")):
        for f in json.loads(p.read_text())["features"]:
            feats[f["feature_index"]] = f
    return feats


def _site_records(out: Path) -> dict[int, dict]:
    return read_site_records(out / "site")


def _build(store, lm, W_dec, out: Path, units: str):
    cfg = DashboardConfig(
        batches=True, bulk=True, store=store.root, out=out, act_units=units, chunk_size=8, progress=False
    )
    build_dashboards(cfg, model=lm, W_dec=W_dec)
    return _features(out), _site_records(out)


# Temporal-like decoder: row norms far from 1 (the embedded Temporal SAE's are ~3e5), spread over
# four orders of magnitude so that a wrong scale cannot hide in rounding.
ROW_NORMS = torch.logspace(-2, 2, WIDTH, dtype=torch.float64)


@pytest.fixture(scope="module")
def temporal_pair(store, lm, tmp_path_factory):
    W = _rows(WIDTH, ROW_NORMS)
    a = _build(store, lm, W, tmp_path_factory.mktemp("norm"), "norm")
    b = _build(store, lm, W, tmp_path_factory.mktemp("code"), "code")
    return W, a, b


def test_unit_rows_both_conventions_agree(store, lm, tmp_path):
    """TopK-like SAE with unit decoder rows: contribution norm == code, so both builds are identical."""
    W = _rows(WIDTH, None)
    fa, ra = _build(store, lm, W, tmp_path / "norm", "norm")
    fb, rb = _build(store, lm, W, tmp_path / "code", "code")
    assert fa.keys() == fb.keys() == set(range(WIDTH))
    for i in fa:
        a, b = fa[i], fb[i]
        assert a["pos_values"] == b["pos_values"] and a["neg_values"] == b["neg_values"]
        assert a["freq_hist_data_bar_values"] == pytest.approx(b["freq_hist_data_bar_values"], rel=1e-5)
        for x, y in zip(a["activations"], b["activations"]):
            assert x["values"] == pytest.approx(y["values"], rel=1e-5, abs=0)
        assert ra[i]["tempolens"]["max_act"] == pytest.approx(rb[i]["tempolens"]["max_act"], rel=1e-6)
        assert ra[i]["tempolens"]["decoder_norm"] == pytest.approx(1.0, rel=1e-6)


def test_temporal_ratio_is_the_row_norm(temporal_pair, store):
    """Non-unit rows: every activation, max, mean and histogram position of the `norm` build is the
    `code` build's times the latent's decoder row norm; counts, examples and logits are unchanged."""
    W, (fn, rn), (fc, rc) = temporal_pair
    norm = W.double().norm(dim=1)
    stats = compute_feature_stats(store, progress=False)
    for i in range(WIDTH):
        a, b = fn[i], fc[i]
        s = float(norm[i])
        assert rn[i]["tempolens"]["decoder_norm"] == pytest.approx(s, rel=1e-6)
        assert rn[i]["tempolens"]["act_units"] == "norm" and rc[i]["tempolens"]["act_units"] == "code"
        assert rc[i]["tempolens"]["max_act"] == pytest.approx(float(stats.max_act[i]), rel=1e-6)  # raw codes
        assert rn[i]["tempolens"]["max_act"] == pytest.approx(float(stats.max_act[i]) * s, rel=1e-6)
        assert rn[i]["tempolens"]["mean_act"] == pytest.approx(float(stats.mean_act[i]) * s, rel=1e-6)
        assert a["frac_nonzero"] == b["frac_nonzero"]
        assert a["freq_hist_data_bar_heights"] == b["freq_hist_data_bar_heights"]
        assert a["freq_hist_data_bar_values"] == pytest.approx(
            [v * s for v in b["freq_hist_data_bar_values"]], rel=1e-5
        )
        assert (
            a["pos_str"] == b["pos_str"] and a["pos_values"] == b["pos_values"] and a["neg_values"] == b["neg_values"]
        )
        assert len(a["activations"]) == len(b["activations"])
        for x, y in zip(a["activations"], b["activations"]):
            assert x["qualifying_token_index"] == y["qualifying_token_index"] and x["tokens"] == y["tokens"]
            assert x["values"] == pytest.approx([v * s for v in y["values"]], rel=1e-4, abs=0)
            if x["bin_min"] != -1:
                assert x["bin_max"] == pytest.approx(y["bin_max"] * s, rel=1e-5)


def test_logit_effects_are_of_the_unit_direction(temporal_pair, lm):
    """Brute force: W_U · (final-norm multiplier ⊙ w/‖w‖) over the whole vocabulary."""
    W, (fn, _), _ = temporal_pair
    W_U, mult, _ = lm.unembed()
    u = W.double() / W.double().norm(dim=1, keepdim=True)
    if mult is not None:
        u = u * mult.double().unsqueeze(0)
    logits = u @ W_U.double().T  # [width, vocab]
    for i in range(WIDTH):
        top = torch.sort(logits[i], descending=True).values[:10]
        bottom = torch.sort(logits[i]).values[:10]
        assert fn[i]["pos_values"] == pytest.approx(top.tolist(), rel=1e-4, abs=1e-6)
        assert fn[i]["neg_values"] == pytest.approx(bottom.tolist(), rel=1e-4, abs=1e-6)


def test_convention_is_stated_in_settings_meta_and_source(temporal_pair, store, lm, tmp_path):
    W = _rows(WIDTH, ROW_NORMS)
    out = tmp_path / "d"
    build_dashboards(
        DashboardConfig(batches=True, bulk=True, store=store.root, out=out, progress=False), model=lm, W_dec=W
    )
    settings = json.loads((out / "neuronpedia" / "batches" / "run_settings.json").read_text())
    assert settings["act_units"] == "norm" and "decoder row" in settings["activations"]
    assert "unit-norm decoder direction" in settings["logit_effects"]
    meta_text = (out / "site" / "data" / "meta.js").read_text()
    meta = json.loads(re.fullmatch(r"tempolensMeta\((.*)\);\n", meta_text, re.S).group(1))
    assert meta["act_units"] == "norm" and meta["act_units_label"] == ACT_UNITS["norm"]
    source = next((out / "neuronpedia" / "bulk").rglob("source.jsonl"))
    assert ACT_UNITS["norm"] in source.read_text() and "unit-norm decoder direction" in source.read_text()
    for p in (out / "neuronpedia" / "batches").glob("batch-*.json"):
        validate_batch(json.loads(p.read_text()))


def test_scaled_stats_equal_stats_of_scaled_codes(codes, store, tmp_path):
    """FeatureStats.scaled (applied as statistics are read; the store keeps raw codes) equals the
    statistics of a store whose codes were multiplied by the scale, as far as float32 allows."""
    scale = torch.logspace(-3, 3, WIDTH, dtype=torch.float64)
    c2 = dict(codes)
    c2["value"] = (codes["value"].double() * scale[codes["latent"].long()]).float()
    scaled_store = write_store(tmp_path / "scaled", c2, 5)
    want = compute_feature_stats(scaled_store, progress=False)
    got = compute_feature_stats(store, progress=False).scaled(scale)
    assert torch.equal(got.n_active, want.n_active)
    assert torch.equal(got.top_gpos, want.top_gpos)
    torch.testing.assert_close(got.max_act, want.max_act, rtol=1e-6, atol=0)
    torch.testing.assert_close(got.top_value, want.top_value, rtol=1e-6, atol=0)
    torch.testing.assert_close(got.sum, want.sum, rtol=1e-6, atol=0)
    torch.testing.assert_close(got.sum_sq, want.sum_sq, rtol=1e-5, atol=0)
    torch.testing.assert_close(got.mean_act, want.mean_act, rtol=1e-6, atol=0)
    # bins scale with the max: counts agree except where float rounding moves a value across an edge
    assert (got.hist_counts - want.hist_counts).abs().sum() <= 2
    torch.testing.assert_close(got.corr_pearson, want.corr_pearson, rtol=1e-4, atol=1e-5)
    assert isinstance(got, FeatureStats) and got.width == WIDTH


def test_act_units_option_is_validated(store):
    with pytest.raises(ConfigError, match="--act-units"):
        DashboardConfig(batches=True, bulk=True, store=store.root, act_units="logits")
    with pytest.raises(ConfigError, match="--codes"):
        DashboardConfig(batches=True, bulk=True, store=store.root, codes="both")
