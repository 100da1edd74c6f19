"""The temporal views in headless Chromium (system browser via Playwright): the kernel page (drawing,
hover, switching views), the kernel index, the events page and the autointerp report, each with hostile
strings shown as text, no script run, and the site's one CSP (no 'unsafe-inline')."""

from __future__ import annotations

import pytest
import torch
from viewer_browser import browser  # noqa: F401  (the shared system-Chromium fixture)

from tempolens.dashboards.site import PAGE_CSP
from tempolens.temporal.analysis import TextAnalysis
from tempolens.temporal.page import analysis_payload, write_events_page, write_kernel_index, write_kernel_page

pytestmark = pytest.mark.browser

HOSTILE = [
    "<script>alert(1)</script>",
    '<img src=x onerror="window.__pwned=1;alert(2)">',
    "&amp;",
    " plain",
    "a\u2028b</script>",
]
EVIL = "</script><img src=x onerror=alert(1)>"
QUOTES = "\"'<b>&amp;"


def open_page(browser, url):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    events = {"dialogs": [], "errors": [], "requests": []}
    page.on("dialog", lambda d: (events["dialogs"].append(d.message), d.dismiss()))
    page.on("pageerror", lambda e: events["errors"].append(str(e)))
    page.on("request", lambda r: events["requests"].append(r.url))
    page.goto(url)
    page.wait_for_selector("body[data-ready]")
    return page, events


def assert_page_csp(page):
    """The page's meta CSP is the site's one policy: scripts and styles from files only."""
    csp = page.locator('meta[http-equiv="Content-Security-Policy"]').get_attribute("content")
    assert csp == PAGE_CSP and "unsafe-inline" not in csp and "script-src 'self'" in csp
    assert page.evaluate("[...document.scripts].every(s => s.src !== '')")  # no inline script element
    assert page.locator("style").count() == 0  # no inline style sheet either


def assert_clean(page, ev):
    page.wait_for_timeout(200)
    assert ev["dialogs"] == [] and ev["errors"] == []
    assert page.evaluate("window.__pwned") is None
    assert all(u.startswith("file://") for u in ev["requests"])
    assert page.get_attribute("body", "data-ready") == "true"


def hostile_analysis() -> TextAnalysis:
    n = len(HOSTILE)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 8, generator=g)
    x = x / x.norm(dim=-1, keepdim=True)
    k = x @ x.T
    att = torch.rand(2, n, n, generator=g).tril(-1)
    att = att / (att.sum(-1, keepdim=True) + 1.0)
    return TextAnalysis(
        name="hostile",
        text="".join(HOSTILE),
        tokens=["<bos>"] + HOSTILE,
        token_ids=list(range(n + 1)),
        kernels={"predicted": k, "novel": torch.eye(n), "sae": k.abs()},
        attention=[att],
        attention_sink=[1 - att.sum(-1)],
        pred_share=torch.linspace(0, 1, n),
        top_novel=(torch.tensor([[3, 1, -1]] * n), torch.tensor([[2.5, 0.5, 0.0]] * n)),
        top_sae=None,
        labels=torch.tensor([0, 0, 1, 1, 1]),
        meta={
            "model_id": "<b>m</b>" + EVIL,
            "hook_name": "blocks.0.hook_resid_post",
            "n_tokens": n + 1,
            "pred_top_direction_share": 0.95,
        },
    )


def test_hostile_tokens_render_as_text(browser, tmp_path):
    a = hostile_analysis()
    scores = {"predicted": {"block_contrast": 0.25, "boundary_auroc": None}}
    figures = {EVIL: "javascript:alert(1)", QUOTES: "https://example.com/x.png"}  # not site files: dropped
    path = write_kernel_page(tmp_path, analysis_payload(a, scores=scores, figures=figures, title=EVIL + QUOTES))
    assert "<img" not in path.read_text() and "<script>" not in path.read_text()
    page, ev = open_page(browser, path.as_uri())
    try:
        assert_page_csp(page)
        strip = page.locator("[data-testid=tokens]")
        text = strip.text_content()
        for tok in HOSTILE[:3]:
            assert tok in text
        assert page.locator("img").count() == 0
        assert page.evaluate("window.__pwned") is None
        assert page.locator("h1").text_content() == EVIL + QUOTES and page.title() == EVIL + QUOTES
        assert "<b>m</b>" + EVIL in page.locator(".meta").text_content()
        assert page.locator("h1 *, .meta b, .meta img").count() == 0
        assert "collapsed to one direction" in page.locator("#predictor-note").text_content()
        # hover the cell (row 0, column 1)
        box = page.locator("canvas").bounding_box()
        n = len(HOSTILE)
        size = box["width"] - 92  # label margin for short texts
        page.mouse.move(box["x"] + 92 + 1.5 * size / n, box["y"] + 0.5 * size / n)
        info = page.locator("[data-testid=info]").text_content()
        assert "row 0: “<script>alert(1)</script>”" in info
        assert '“<img src=x onerror="window.__pwned=1;alert(2)">”' in info
        expected = float(a.kernels["predicted"][0, 1])
        assert f"{expected:.3f}" in info
        assert "block contrast 0.250" in page.locator(".tk-controls").text_content()
        # switch to an attention head; hover shows the start/BOS weight
        page.select_option("select", label="Attention layer 0 head 1")
        page.mouse.move(box["x"] + 92 + 0.5 * size / n, box["y"] + 2.5 * size / n)
        info = page.locator("[data-testid=info]").text_content()
        assert "Attention layer 0 head 1" in info and "start slot + BOS" in info
        assert f"{float(a.attention[0][1, 2, 0]):.3f}" in info
        # clicking a token colours the text by its row and lists its top latents with safe links
        page.locator(".tk-tok").nth(2).click()
        assert "tk-sel" in page.locator(".tk-tok").nth(2).get_attribute("class")
        assert page.locator(".tk-latents a").first.get_attribute("href") == "../index.html#/latent/3"
        assert_clean(page, ev)
    finally:
        page.close()


def test_kernel_page_from_the_pipeline(browser, tmp_path, tiny_lm_dir):
    from tempolens.saes.random_init import random_temporal_sae, random_topk_sae
    from tempolens.sources.open import load_subject_model
    from tempolens.temporal.command import KernelConfig, run_kernel

    model = load_subject_model(str(tiny_lm_dir), layer=1, progress=None)
    sources = (model, random_temporal_sae(32, 64, 8, seed=3), random_topk_sae(32, 64, 8, seed=4))
    run_kernel(
        KernelConfig(
            text=["the cat sat on the mat . || the ship sailed & the sea < the whale >"], out=tmp_path, figures=True
        ),
        sources=sources,
    )
    page, ev = open_page(browser, (tmp_path / "kernels" / "text-1.html").as_uri())
    try:
        labels = page.locator("select option").all_text_contents()
        assert labels[:3] == ["Predicted codes (z_pred)", "Novel codes (z_novel)", "Standard SAE codes"]
        assert sum(lab.startswith("Attention") for lab in labels) == 4
        # the canvas has drawn pixels (not blank)
        lit = page.evaluate("""() => { const c = document.querySelector('canvas'); const d = c.getContext('2d')
            .getImageData(100, 10, 50, 50).data; let s = 0;
            for (let i = 0; i < d.length; i += 4) s += d[i] + d[i+1] + d[i+2];
            return s; }""")
        assert lit > 0
        imgs = page.locator("img.tk-fig")
        assert imgs.count() == 3
        page.wait_for_function("() => [...document.images].every(i => i.complete && i.naturalWidth > 0)")
        page.goto((tmp_path / "kernels" / "index.html").as_uri())
        page.click("text=text 1")
        assert page.url.endswith("text-1.html")
        assert ev["dialogs"] == [] and ev["errors"] == []
    finally:
        page.close()


def test_kernel_index_hostile_titles(browser, tmp_path):
    entries = [
        {
            "name": "one",
            "title": EVIL,
            "n_tokens": 12,
            "scores": {"predicted": {"block_contrast": 0.5, "boundary_auroc": 0.75}},
        },
        {"name": "two", "title": QUOTES, "n_tokens": 7, "scores": {}},
    ]
    path = write_kernel_index(tmp_path, entries, events_summary={"predicted": {}})
    page, ev = open_page(browser, path.as_uri())
    try:
        assert_page_csp(page)
        links = page.locator("table a")
        assert links.all_text_contents() == [EVIL, QUOTES]
        assert [links.nth(i).get_attribute("href") for i in range(2)] == ["one.html", "two.html"]
        heads = page.locator("th").all_text_contents()
        assert heads == ["text", "tokens", "Predicted codes (z_pred) contrast / AUROC"]
        assert page.locator("tbody tr").first.locator("td").all_text_contents() == [EVIL, "12", "0.500 / 0.750"]
        assert page.locator("tbody tr").nth(1).locator("td").all_text_contents() == [QUOTES, "7", "–"]
        assert page.locator("a[href='events.html']").count() == 1
        assert page.locator("main img, main b").count() == 0
        assert_clean(page, ev)
    finally:
        page.close()


def test_events_page_hostile_names(browser, tmp_path):
    data = {
        "header": "Event-boundary check: " + EVIL,
        "summary": {"columns": ["codes", "block contrast"], "rows": [[QUOTES, "0.100 ± 0.020"]]},
        "texts": {
            "columns": ["text", "tokens"],
            "rows": [
                [{"text": EVIL, "href": "evil.html"}, "9"],
                [{"text": "bad link", "href": "javascript:window.__pwned=1"}, "3"],
            ],
        },
    }
    path = write_events_page(tmp_path, data)
    page, ev = open_page(browser, path.as_uri())
    try:
        assert_page_csp(page)
        assert page.locator("h1").text_content() == "Event-boundary check"
        assert page.locator("main > p").first.text_content() == "Event-boundary check: " + EVIL
        assert page.locator("tbody tr").first.locator("td").all_text_contents() == [QUOTES, "0.100 ± 0.020"]
        assert page.locator("table a").all_text_contents() == [EVIL]  # the javascript: link is shown as text only
        assert page.locator("table a").get_attribute("href") == "evil.html"
        assert "bad link" in page.locator("table").nth(1).text_content()
        assert page.locator("main img, main b").count() == 0
        assert_clean(page, ev)
    finally:
        page.close()


def test_autointerp_report_hostile_strings(browser, tmp_path):
    from tempolens.autointerp.db import ResultsDB
    from tempolens.autointerp.report import build_report

    db = ResultsDB(tmp_path / "results.sqlite")
    try:
        rep = build_report(db, tmp_path, wall_s=1.0)
    finally:
        db.close()
    assert rep["saes"] == []
    # the same files build_report writes, with hostile strings in the report
    from tempolens.dashboards.site import js_call

    sc = {"mean": 0.8, "ci_low": 0.7, "ci_high": 0.9, "n": 5, "n_unscored": 0, "chance": 0.5}
    rep.update(
        judge=EVIL,
        embedding_model=QUOTES,
        saes=[
            {
                "label": EVIL,
                "architecture": QUOTES,
                "width": 64,
                "n_alive": 60,
                "n_latents": 5,
                "scores": {"saebench": sc},
                "pooled": {},
                "parse_failures": {},
                "n_llm_calls": 5,
                "transport_errors": 0,
                "tokens": {"prompt": 10, "completion": 2},
            }
        ],
    )
    (tmp_path / "data" / "autointerp.js").write_bytes(js_call("tempolensAutointerp", rep))
    assert "<script" not in (tmp_path / "report.html").read_text().replace('<script src="assets/app.js" defer>', "")
    page, ev = open_page(browser, (tmp_path / "report.html").as_uri())
    try:
        assert_page_csp(page)
        page.wait_for_selector(".report")
        row = page.locator(".report-scores tbody tr").first.locator("td").all_text_contents()
        assert row[:2] == [EVIL, QUOTES] and row[4].startswith("0.800 [0.700, 0.900]")
        assert EVIL in page.locator(".facts").text_content() and QUOTES in page.locator(".facts").text_content()
        assert "Context (not comparable)" in page.locator(".report").text_content()
        assert page.locator(".report img, .report b:not(.report-scores b)").count() == 0
        assert_clean(page, ev)
    finally:
        page.close()
