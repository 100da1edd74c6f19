"""The kernel page in headless Chromium (system browser via Playwright): drawing, hover, switching
views, and hostile token strings shown as text with no script run."""

from __future__ import annotations

import pytest
import torch
from viewer_browser import browser  # noqa: F401  (the shared system-Chromium fixture)

from tempolens.temporal.analysis import TextAnalysis
from tempolens.temporal.page import analysis_payload, write_kernel_page

pytestmark = pytest.mark.browser

HOSTILE = ["<script>alert(1)</script>", '<img src=x onerror="window.__pwned=1;alert(2)">', "&amp;", " plain", "a\u2028b</script>"]


def open_page(browser, url):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    events = {"dialogs": [], "errors": [], "requests": []}
    page.on("dialog", lambda d: (events["dialogs"].append(d.message), d.dismiss()))
    page.on("pageerror", lambda e: events["errors"].append(str(e)))
    page.on("request", lambda r: events["requests"].append(r.url))
    page.goto(url)
    return page, events


def hostile_analysis() -> TextAnalysis:
    n = len(HOSTILE)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 8, generator=g)
    x = x / x.norm(dim=-1, keepdim=True)
    k = x @ x.T
    att = torch.rand(2, n, n, generator=g).tril(-1)
    att = att / (att.sum(-1, keepdim=True) + 1.0)
    return TextAnalysis(
        name="hostile", text="".join(HOSTILE), tokens=["<bos>"] + HOSTILE, token_ids=list(range(n + 1)),
        kernels={"predicted": k, "novel": torch.eye(n), "sae": k.abs()}, attention=[att], attention_sink=[1 - att.sum(-1)],
        pred_share=torch.linspace(0, 1, n), top_novel=(torch.tensor([[3, 1, -1]] * n), torch.tensor([[2.5, 0.5, 0.0]] * n)),
        top_sae=None, labels=torch.tensor([0, 0, 1, 1, 1]), meta={"model_id": "<b>m</b>", "hook_name": "blocks.0.hook_resid_post", "n_tokens": n + 1},
    )


def test_hostile_tokens_render_as_text(browser, tmp_path):
    a = hostile_analysis()
    path = write_kernel_page(tmp_path, analysis_payload(a, scores={"predicted": {"block_contrast": 0.25, "boundary_auroc": None}}))
    page, ev = open_page(browser, path.as_uri())
    try:
        strip = page.locator("[data-testid=tokens]")
        text = strip.text_content()
        for tok in HOSTILE[:3]:
            assert tok in text
        assert page.locator("img").count() == 0
        assert page.evaluate("window.__pwned") is None
        assert page.locator("h1").text_content() == "hostile"
        assert "<b>m</b>" in page.locator(".meta").text_content()
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
        page.wait_for_timeout(200)
        assert ev["dialogs"] == [] and ev["errors"] == []
        assert all(u.startswith("file://") for u in ev["requests"])
    finally:
        page.close()


def test_kernel_page_from_the_pipeline(browser, tmp_path, tiny_lm_dir):
    from tempolens.saes.random_init import random_temporal_sae, random_topk_sae
    from tempolens.sources.open import load_subject_model
    from tempolens.temporal.command import KernelConfig, run_kernel

    model = load_subject_model(str(tiny_lm_dir), layer=1, progress=None)
    sources = (model, random_temporal_sae(32, 64, 8, seed=3), random_topk_sae(32, 64, 8, seed=4))
    run_kernel(KernelConfig(text=["the cat sat on the mat . || the ship sailed & the sea < the whale >"], out=tmp_path, figures=True), sources=sources)
    page, ev = open_page(browser, (tmp_path / "kernels" / "text-1.html").as_uri())
    try:
        labels = page.locator("select option").all_text_contents()
        assert labels[:3] == ["Predicted codes (z_pred)", "Novel codes (z_novel)", "Standard SAE codes"]
        assert sum(lab.startswith("Attention") for lab in labels) == 4
        # the canvas has drawn pixels (not blank)
        lit = page.evaluate("""() => { const c = document.querySelector('canvas'); const d = c.getContext('2d')
            .getImageData(100, 10, 50, 50).data; let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i] + d[i+1] + d[i+2]; return s; }""")
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
