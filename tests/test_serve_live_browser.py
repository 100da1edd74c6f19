"""The /live page in headless Chromium against a real server (tiny Gemma-3 LM, random-init SAEs):
typing hostile text shows it as text, runs no script, and errors appear as messages."""

from __future__ import annotations

import pytest
import torch
from viewer_browser import browser  # noqa: F401  (the shared system-Chromium fixture)

from tempolens.serve import ServeConfig, make_analyzer, make_server, start_in_thread

pytestmark = pytest.mark.browser
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def live_server(tiny_lm_dir):
    from tempolens.saes.random_init import random_temporal_sae, random_topk_sae
    from tempolens.sources.open import load_subject_model

    model = load_subject_model(str(tiny_lm_dir), layer=2, progress=None)
    analyzer = make_analyzer(
        model, random_temporal_sae(32, 64, 8, seed=0), random_topk_sae(32, 64, 8, seed=1), max_tokens=64
    )
    srv = make_server(ServeConfig(port=0, max_chars=300), analyzer)
    start_in_thread(srv)
    yield srv
    srv.shutdown()
    srv.server_close()


def test_live_form_hostile_text_and_errors(browser, live_server):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1200, "height": 900})
    dialogs, errors = [], []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(live_server.url + "live")
        page.wait_for_selector("body[data-ready=true]")
        from tempolens.dashboards.site import PAGE_CSP

        assert page.locator('meta[http-equiv="Content-Security-Policy"]').get_attribute("content") == PAGE_CSP
        assert page.locator("script:not([src]), style").count() == 0
        assert page.locator("#live-text").get_attribute("maxlength") == "300"
        hostile = "the cat <script>alert(1)</script> sat || the dog <img src=x onerror=alert(1)> ran &amp; the sea"
        page.fill("#live-text", hostile)
        page.click("#live-go")
        page.wait_for_selector(".tk-tok")
        status = page.locator("[data-testid=status]").text_content()
        assert "tokens" in status
        toks = page.locator(".tk-tok").all_text_contents()
        # the word-level tokenizer splits markup into pieces; each shows as literal text
        assert toks[:2] == ["the", "cat"] and "<" in toks and "script" in toks and "&" in toks
        assert page.locator("#app img").count() == 0 and page.locator("#app script").count() == 0
        # the event marker became a boundary
        assert page.locator(".tk-bnd").count() == 1
        box = page.locator("#app canvas").bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.7, box["y"] + box["height"] * 0.3)
        assert "Predicted codes (z_pred)" in page.locator("[data-testid=info]").text_content()
        # an over-long text: the server's error is shown as a message
        page.locator("#live-text").evaluate("e => e.removeAttribute('maxlength')")
        page.fill("#live-text", "the cat " * 40)
        page.click("#live-go")
        expect(page.locator("[data-testid=status]")).to_contain_text(
            "the limit is 300"
        )  # the page's CSP forbids eval-based waits
        page.fill("#live-text", "<b>bold</b> " * 10)
        page.click("#live-go")
        expect(page.locator("[data-testid=status]")).to_contain_text("tokens")
        assert page.locator("#app b").count() == 0
        page.wait_for_timeout(200)
        assert dialogs == [] and errors == []
    finally:
        page.close()
