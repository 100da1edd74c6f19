"""The viewer on a site built by the real pipeline: a corpus with hostile token strings → the tiny
Gemma-3 LM (its tokenizer extended with those strings as tokens) → a random Temporal SAE → code
store → `tempolens dashboards` → site, opened from disk in Chromium."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from viewer_browser import browser, visit  # noqa: F401  (fixture)

from tempolens.dashboards.site import read_site_records

pytestmark = pytest.mark.browser

HOSTILE_TOKENS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "&amp;",
    "</script><script>window.__xss=1</script>",
]


def read_js(path: Path, fn: str) -> list:
    """Arguments of the one call in a site data file, parsed as JSON (as the browser would read them)."""
    m = re.fullmatch(rf"{fn}\((.*)\);\n", path.read_text(encoding="utf-8"), re.S)
    assert m, f"{path} is not a single {fn}(...) call"
    return json.loads(f"[{m.group(1)}]")


@pytest.fixture(scope="module")
def pipeline_site(tiny_lm_dir, tmp_path_factory) -> Path:
    pytest.importorskip("tempolens.dashboards.pipeline")
    pytest.importorskip("tempolens.collect")
    import torch
    from fixtures import WORDS, tiny_lm_with_tokens

    from tempolens.collect import CollectConfig, collect
    from tempolens.dashboards.pipeline import DashboardConfig, build_dashboards

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("viewer_pipeline")
    lm = root / "lm"
    tok = tiny_lm_with_tokens(tiny_lm_dir, lm, HOSTILE_TOKENS)
    assert tok.tokenize("a <script>alert(1)</script> &amp; the") == ["a", HOSTILE_TOKENS[0], "&amp;", "the"]

    rng = random.Random(0)
    words = [w for w in WORDS if w.isalpha()]
    lines = []
    for k in range(300):
        ws = [rng.choice(words) for _ in range(12)]
        ws.insert(rng.randrange(12), HOSTILE_TOKENS[k % len(HOSTILE_TOKENS)])
        lines.append(" ".join(ws) + " .")
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")

    collect(
        CollectConfig(
            out=root / "store",
            model=str(lm),
            layer=1,
            sae="random:temporal?width=48&k=6&seed=0",
            corpus=str(corpus),
            n_prompts=24,
            prompt_len=16,
            batch_size=8,
            shard_prompts=12,
            device="cpu",
            progress=False,
        )
    )
    res = build_dashboards(
        DashboardConfig(
            store=root / "store", out=root / "dash", chunk_size=16, batches=False, bulk=False, progress=False
        )
    )
    assert res.site is not None
    return res.site


def test_pipeline_site_opens_and_hostile_tokens_stay_text(browser, pipeline_site):  # noqa: F811
    site = pipeline_site
    meta = read_js(site / "data" / "meta.js", "tempolensMeta")[0]
    index = read_js(site / "data" / "index.js", "tempolensIndex")[0]
    for p in sorted((site / "data" / "features").glob("chunk-*.js")):
        c, recs = read_js(p, "tempolensFeatures")
        assert all(int(k) // meta["chunk_size"] == c for k in recs)
    records = {str(k): r for k, r in read_site_records(site).items()}  # windows decoded as the viewer does
    # A latent whose first top example contains a hostile token.
    pick = next(
        int(k)
        for k, r in sorted(records.items(), key=lambda kv: int(kv[0]))
        if r["activations"] and any(t in HOSTILE_TOKENS for t in r["activations"][0]["tokens"])
    )
    rec = records[str(pick)]

    v = visit(browser, site)
    try:
        v.open()
        assert len(v.rows()) == len(index["rows"]) == meta["n_latents"] == 48
        assert "Prompt length 16 tokens" in v.page.text_content("#runline")
        v.page.click("th[data-col=max_act] button")
        v.page.wait_for_function("() => location.hash.includes('sort=max_act')")
        mx = index["columns"].index("max_act")
        want = [r[0] for r in sorted(index["rows"], key=lambda r: (-r[mx], r[0]))]
        assert v.rows() == want

        v.go(f"#/latent/{pick}")
        v.page.wait_for_selector(f"article.latent h1:text-is('Latent {pick}')")
        toks = v.page.eval_on_selector_all(
            "ol.examples >> nth=0 >> li >> nth=0 >> .tok", "els => els.map(e => [e.textContent, e.title])"
        )
        raw = rec["activations"][0]["tokens"]
        assert len(toks) == len(raw)
        for (text, title), r in zip(toks, raw):
            assert title.startswith(json.dumps(r, ensure_ascii=False) + " · novel code ")
            if r.strip():
                assert text == r
        assert set(HOSTILE_TOKENS) & {t for t, _ in toks}
        assert v.page.locator("article.latent svg.hist >> nth=0 >> rect").count() == len(
            rec["freq_hist_data_bar_heights"]
        )
        assert v.page.locator(".legend").count() == 1  # Temporal SAE: novel vs predicted legend
        n_active = v.page.locator("ol.examples .tok.on").count()
        assert n_active > 0
        v.screenshot("viewer-pipeline-latent.png", full_page=True)
        assert v.page.evaluate("document.querySelectorAll('main img, main script, main iframe').length") == 0
        v.assert_clean()
    finally:
        v.page.context.close()
