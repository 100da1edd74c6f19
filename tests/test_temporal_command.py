"""The temporal views end to end on the tiny Gemma-3 LM with random-init SAEs: analysis against
SAELens + brute force, `tempolens kernel` / `tempolens events` outputs, CLI errors."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from tempolens.cli import main as cli_main
from tempolens.errors import ConfigError, SourceError
from tempolens.saes.random_init import activation_mean, estimate_scaling, random_temporal_sae, random_topk_sae
from tempolens.sources.open import load_subject_model
from tempolens.temporal.analysis import analyze_text, tokenize
from tempolens.temporal.command import EventsConfig, KernelConfig, read_texts, run_events, run_kernel
from tempolens.temporal.events import parse_marked
from tempolens.temporal.kernels import KernelInputError
from tempolens.temporal.page import decode_matrix

torch.set_num_threads(1)

TEXT = (
    "the cat sat on the mat . the dog ran fast . || the ship sailed the sea and the captain said no . "
    "|| the king and queen had a war in the city"
)
HOSTILE = "the cat <script>alert(1)</script> sat || <img src=x onerror=alert(1)> & amp ; the dog"


@pytest.fixture(scope="module")
def sources(tiny_lm_dir):
    model = load_subject_model(str(tiny_lm_dir), layer=2, progress=None)
    ids, _ = tokenize(model.tokenizer, TEXT, model.bos_id)
    acts = model.hidden_at(torch.tensor([ids]))[0, 1:]
    sae = random_temporal_sae(
        32, 64, 8, n_heads=4, seed=0, mean=activation_mean(acts), scaling_factor=estimate_scaling(acts)
    )
    contrast = random_topk_sae(32, 64, 8, seed=1, mean=activation_mean(acts))
    return model, sae, contrast


def saelens_z_pred(sae, x):
    """z_pred from SAELens's independent TemporalSAE with the same weights."""
    tsae = pytest.importorskip("sae_lens.saes.temporal_sae")
    c = sae.cfg
    ref = tsae.TemporalSAE(
        tsae.TemporalSAEConfig(
            d_in=c.d_in,
            d_sae=c.width,
            n_heads=c.n_heads,
            n_attn_layers=c.n_attn_layers,
            bottleneck_factor=c.bottleneck_factor,
            sae_diff_type=c.sae_diff_type,
            kval_topk=c.k,
            tied_weights=c.tied,
            normalize_activations="constant_scalar_rescale",
            activation_normalization_factor=c.scaling_factor,
            apply_b_dec_to_input=True,
        )
    )
    sd = {k: v for k, v in sae.state_dict().items() if k.startswith("attn_layers.")}
    sd["W_dec"], sd["b_dec"] = sae.D.detach().clone(), sae.b.detach().reshape(-1).clone()
    ref.load_state_dict(sd)
    with torch.no_grad():
        z_novel, z_pred = ref.encode_with_predictions(x)
    return z_novel[0].double(), z_pred[0].double()


def brute_kernel(x):
    p = x - x.mean(0)
    n = p.norm(dim=-1, keepdim=True)
    p = torch.where(n > 1e-9, p / n, torch.zeros_like(p))
    return (p @ p.T)[1:, 1:]


def test_analysis_matches_saelens_and_brute_force(sources):
    model, sae, contrast = sources
    clean, bounds = parse_marked(TEXT)
    a = analyze_text(model, sae, clean, contrast=contrast, name="t", boundaries=bounds)
    ids, _ = tokenize(model.tokenizer, clean, model.bos_id)
    assert a.tokens[0] == "<bos>" and a.token_ids == ids
    L = len(ids)
    x = model.hidden_at(torch.tensor([ids]))
    z_novel, z_pred = saelens_z_pred(sae, x)
    assert torch.allclose(a.kernels["predicted"].double(), brute_kernel(z_pred), atol=2e-4)
    assert torch.allclose(a.kernels["novel"].double(), brute_kernel(z_novel), atol=2e-4)
    dense_sae = contrast.encode(x).codes.to_dense(64)[0].double()
    assert torch.allclose(a.kernels["sae"].double(), brute_kernel(dense_sae), atol=1e-5)
    assert torch.allclose(a.kernels["activations"].double(), brute_kernel(x[0].double()), atol=1e-4)
    for k in a.kernels.values():
        assert k.shape == (L - 1, L - 1)
    # events: the marked boundaries land on the first token of "the ship" and "the king"
    toks = a.shown_tokens
    assert [toks[b] for b in a.boundaries] == ["the", "the"]
    assert toks[a.boundaries[0] + 1] == "ship" and toks[a.boundaries[1] + 1] == "king"
    # attention (BOS query row dropped): mass on tokens + on start/BOS sums to 1 per query
    for maps, sink in zip(a.attention, a.attention_sink):
        assert maps.shape == (4, L - 1, L - 1)
        assert torch.allclose(maps.sum(-1) + sink, torch.ones(4, L - 1), atol=1e-5)
        assert torch.equal(maps.triu(), torch.zeros_like(maps))  # a token never reads itself or the future
    assert a.pred_share.shape == (L - 1,) and ((a.pred_share >= 0) & (a.pred_share <= 1)).all()
    i, v = a.top_novel
    assert i.shape == (L - 1, 5) and (v[:, :-1] >= v[:, 1:]).all()
    nz = z_novel[1:]
    assert torch.allclose(v[:, 0].double(), nz.max(-1).values, atol=1e-4)


def test_too_long_and_wrong_sae_are_clear_errors(sources):
    model, sae, contrast = sources
    with pytest.raises(KernelInputError, match="above the limit of 5"):
        analyze_text(model, sae, TEXT.replace("||", ""), max_tokens=5)
    with pytest.raises(ConfigError, match="must be a Temporal SAE"):
        analyze_text(model, contrast, "the cat sat")


def test_run_kernel_writes_pages_figures_and_escapes(sources, tmp_path):
    out = tmp_path / "site"
    res = run_kernel(KernelConfig(text=[HOSTILE], out=out, figures=True), sources=sources)
    entry = res["texts"][0]
    for f in entry["figures"]:
        with open(f, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    page = (out / "kernels" / "text-1.html").read_text()
    # the page is a shell of the viewer: no inline script, no data; the data file holds the tokens escaped
    assert re.findall(r"<script[^>]*>", page) == [
        '<script src="../assets/temporal.js" defer>',
        '<script src="data/page-text-1.js" defer>',
    ]
    assert "alert" not in page and "<style" not in page and "unsafe-inline" not in page
    js = (out / "kernels" / "data" / "page-text-1.js").read_text()
    assert "<" not in js and "&" not in js
    data = json.loads(re.fullmatch(r"tempolensKernelPage\((\{.*\})\);\n", js, re.S).group(1))
    assert (out / "assets" / "temporal.js").is_file() and (out / "assets" / "style.css").is_file()
    assert "script" in data["tokens"] and "<" in data["tokens"]
    n = data["n"]
    got = decode_matrix(next(m for m in data["matrices"] if m["id"] == "predicted")["data"], n, -1.0, 1.0)
    a = analyze_text(sources[0], sources[1], parse_marked(HOSTILE)[0], contrast=sources[2])
    assert abs(got - a.kernels["predicted"].numpy()).max() < 2e-5
    assert data["boundaries"] and set(data["scores"]) == {"predicted", "novel", "sae", "activations"}
    # the page prints the predicted codes' top-1 variance share of this text
    share = a.meta["pred_top_direction_share"]
    assert f"z_pred top-1 share {share:.3f}" in data["predictor_note"] and data["meta_line"].startswith("model ")
    index = (out / "kernels" / "data" / "index.js").read_text()
    assert '"href":"text-1.html"' in index
    js = (out / "data" / "kernels.js").read_text()
    assert js.startswith("tempolensKernels(") and "kernels/text-1.html" in js
    # a second run with another text keeps the first page in the index
    run_kernel(KernelConfig(text=["the dog ran"], out=out, figures=False), sources=sources)
    index = (out / "kernels" / "data" / "index.js").read_text()
    assert '"href":"text-1.html"' in index


def test_run_events_on_a_file(sources, tmp_path):
    f = tmp_path / "stories.jsonl"
    f.write_text(
        json.dumps({"name": "one", "text": TEXT})
        + "\n"
        + json.dumps(
            {
                "name": "two",
                "text": (
                    "the red house . the green tree || the sea and the whale and the captain ahab ran || the king sat"
                ),
            }
        )
        + "\n"
    )
    res = run_events(EventsConfig(file=f, out=tmp_path / "site", pages=False, half_width=3), sources=sources)
    assert res["n_texts"] == 2
    assert 0 < res["diagnostics"]["pred_top_direction_share"]["mean"] <= 1
    assert set(res["summary"]) == {"predicted", "novel", "sae", "activations"}
    for s in res["summary"].values():
        assert s["block_contrast"]["n"] == 2 and math.isfinite(s["block_contrast"]["mean"])
        assert 0.0 <= s["boundary_auroc"]["mean"] <= 1.0
        assert s["boundary_auroc_sentences"]["n"] == 0  # lower-case test texts have no detectable sentence starts
    kdir = tmp_path / "site" / "kernels"
    saved = json.loads((kdir / "events.json").read_text())
    assert saved["summary"]["predicted"]["block_contrast"]["mean"] == pytest.approx(
        res["summary"]["predicted"]["block_contrast"]["mean"]
    )
    assert "| Predicted codes (z_pred) |" in (kdir / "events.md").read_text()
    assert 'data-page="events"' in (kdir / "events.html").read_text()
    events = (kdir / "data" / "events.js").read_text()
    assert events.startswith("tempolensEvents(") and "Event-boundary check" in events and '"href":"one.html"' in events


def test_read_texts_txt_and_errors(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("first text || second event\n\nanother text\n")
    ts = read_texts(f)
    assert [t.text for t in ts] == ["first text second event", "another text"] and ts[0].boundaries == [11]
    bad = tmp_path / "b.jsonl"
    bad.write_text("{not json}\n")
    with pytest.raises(ConfigError, match="line 1 is not valid JSON"):
        read_texts(bad)


def test_demo_selection():
    from tempolens.temporal.command import texts_from_config

    assert [t.name for t in texts_from_config(KernelConfig())][:2] == ["harbour-day", "expedition"]
    assert [t.name for t in texts_from_config(KernelConfig(demo=["robot-lab"], text=["a b"]))] == [
        "text-1",
        "robot-lab",
    ]
    with pytest.raises(ConfigError, match="unknown demo story nope; choose from all, harbour-day"):
        texts_from_config(KernelConfig(demo=["nope"]))


def test_cli_errors_are_one_line(capsys, tmp_path):
    assert cli_main(["kernel", "--max-tokens", "2"]) == 2
    assert "--max-tokens must be between 3 and 8192" in capsys.readouterr().err
    assert cli_main(["kernel", "--file", str(tmp_path / "missing.txt")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli_main(["events", "--half-width", "1"]) == 2
    assert "--half-width" in capsys.readouterr().err


def test_load_sources_with_random_specs(tiny_lm_dir):
    from tempolens.temporal.command import load_sources

    base = dict(model=str(tiny_lm_dir), layer=1)
    model, sae, contrast = load_sources(
        KernelConfig(**base, sae="random:temporal?width=64&k=8&n_heads=4", contrast_sae="random:topk?width=64&k=8"),
        progress=None,
    )
    assert sae.is_temporal and sae.width == 64 and contrast.architecture == "topk" and model.layer == 1
    # the random Temporal SAE is centred on the demo stories' activations (decoder bias = mean · s)
    assert float(sae.b.detach().abs().sum()) > 0
    _, _, none = load_sources(
        KernelConfig(**base, sae="random:temporal?width=64&k=8&n_heads=4", contrast_sae="none"), progress=None
    )
    assert none is None
    with pytest.raises(ConfigError, match="not a Temporal SAE"):
        load_sources(KernelConfig(**base, sae="random:topk?width=64&k=8", contrast_sae="none"), progress=None)
    with pytest.raises(SourceError, match="d_in=16"):
        load_sources(
            KernelConfig(
                **base, sae="random:temporal?d_in=16&width=64&k=8&n_heads=4&mean=zero&scale=1", contrast_sae="none"
            ),
            progress=None,
        )


def test_top_direction_share():
    from tempolens.temporal.analysis import top_direction_share

    g = torch.Generator().manual_seed(0)
    v, c = torch.randn(50, generator=g), torch.randn(50, generator=g)
    s = torch.randn(30, 1, generator=g)
    assert top_direction_share(c + s * v) == pytest.approx(1.0)  # a constant plus one signed direction
    iso = torch.eye(30)  # equal variance in every direction after centring
    assert top_direction_share(iso) == pytest.approx(1 / 29, rel=1e-6)


def test_predictor_note_says_plainly_when_the_predictor_collapsed():
    from tempolens.temporal.page import predictor_note

    collapsed = predictor_note({"pred_top_direction_share": 0.997})
    assert "99.7%" in collapsed and "collapsed to one direction" in collapsed and "not event blocks" in collapsed
    healthy = predictor_note({"pred_top_direction_share": 0.2})
    assert "0.200" in healthy and "collapsed" not in healthy
    assert predictor_note({}) == "" and predictor_note({"pred_top_direction_share": float("nan")}) == ""
