"""The static viewer in a real browser (system Chromium via Playwright), on hand-written site data.

Every test also checks that the page opened no dialog, threw no script error, set no XSS canary
and requested nothing but its own files (``Visit.assert_clean``).
"""

from __future__ import annotations

import json
import time

import pytest
from viewer_browser import browser, copy_site, visit  # noqa: F401  (browser is a fixture)
from viewer_site import COLUMNS, HOSTILE, PROMPT_CHUNK, write_site

from tempolens.viewer import install_viewer

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    return write_site(tmp_path_factory.mktemp("viewer_site"), n_latents=250, chunk_size=64)


@pytest.fixture()
def v(browser, site):  # noqa: F811
    vis = visit(browser, site.root)
    yield vis
    vis.page.context.close()


def col(spec, name):
    return COLUMNS.index(name)


def expected_order(spec, key, desc, keep=lambda r: True):
    """Sorted latent ids as the viewer defines it: by value, missing values last, ties by index."""
    k = col(spec, key)
    rows = [r for r in spec.index_rows if keep(r)]
    have = [r for r in rows if r[k] is not None]
    miss = [r for r in rows if r[k] is None]
    have.sort(key=lambda r: ((-r[k] if desc else r[k]), r[0]))
    return [r[0] for r in have + miss]


def wait_hash(v, part):
    v.page.wait_for_function("p => location.hash.includes(p)", arg=part, timeout=5000)


def test_index_lists_every_latent_and_sorts_by_each_numeric_column(v, site):
    v.open()
    assert v.page.text_content(".count") == "Showing 100 of 250 latents"
    # Overview: log-density histogram of the alive latents, dead ones counted.
    alive = sum(1 for r in site.index_rows if r[1] > 0)
    assert f"{alive} alive, {250 - alive} dead" in v.page.text_content(".overview figcaption")
    heights = v.page.eval_on_selector_all(
        ".overview rect", "els => els.map(e => e.querySelector('title').textContent.split(': ')[1])"
    )
    assert sum(int(x) for x in heights) == alive
    assert v.rows() == list(range(100))
    v.page.click("button.more")
    v.page.click("button.more")
    assert v.rows() == list(range(250))
    assert v.page.is_hidden("button.more")

    for key, _label in [
        ("max_act", "Max act"),
        ("frac_nonzero", "Density"),
        ("mean_act", "Mean act"),
        ("score", "Score"),
        ("pred_share", "Pred. share"),
    ]:
        v.page.click(f"th[data-col={key}] button")
        wait_hash(v, f"sort={key}&dir=desc")
        assert v.rows() == expected_order(site, key, desc=True)[:100], key
        assert v.page.get_attribute(f"th[data-col={key}]", "aria-sort") == "descending"
        v.page.click(f"th[data-col={key}] button")
        wait_hash(v, f"sort={key}&dir=asc")
        assert v.rows() == expected_order(site, key, desc=False)[:100], key
    v.page.click("th[data-col=index] button")  # index sorts ascending first (the default order)
    v.page.wait_for_function("() => location.hash === '#/'")
    assert v.rows() == list(range(100))
    # Values are shown rounded, with the exact stored number on hover.
    row = site.index_rows[0]
    cell = "tr[data-latent='0'] td:nth-child(3)"
    assert v.page.get_attribute(cell, "title") == repr(row[2])
    assert v.page.text_content(cell) == f"{row[2]:.3g}"
    v.page.click("th[data-col=index] button")
    wait_hash(v, "sort=index&dir=desc")
    assert v.rows() == list(range(249, 149, -1))
    v.assert_clean()


def test_filters_and_search(v, site):
    v.open()
    fr, ma = col(site, "frac_nonzero"), col(site, "max_act")

    v.page.select_option("#f-status", "dead")
    wait_hash(v, "status=dead")
    assert v.rows() == site.dead
    v.page.select_option("#f-status", "alive")
    wait_hash(v, "status=alive")
    assert v.rows() == [r[0] for r in site.index_rows if r[fr] > 0][:100]
    v.page.select_option("#f-status", "all")

    v.page.fill("#f-dmin", "1e-3")
    v.page.fill("#f-dmax", "0.05")
    wait_hash(v, "dmax=0.05")
    want = [r[0] for r in site.index_rows if 1e-3 <= r[fr] <= 0.05]
    assert v.rows() == want[:100]
    assert f"of {len(want)} matching latents" in v.page.text_content(".count")

    v.page.fill("#f-amin", "10")
    wait_hash(v, "amin=10")
    assert v.rows() == [r[0] for r in site.index_rows if 1e-3 <= r[fr] <= 0.05 and r[ma] >= 10][:100]

    v.page.click("text=Reset")
    v.page.wait_for_function("() => location.hash === '#/'")
    assert len(v.rows()) == 100

    v.page.fill("#f-q", "whale")
    wait_hash(v, "q=whale")
    want = [r[0] for r in site.index_rows if "whale" in (r[4] or "") or "whale" in (r[5] or "")]
    assert want and v.rows() == want[:100]

    v.page.fill("#f-q", "mentions KING")  # all words, any case, in tokens or explanation
    wait_hash(v, "q=mentions+KING")
    want = [
        r[0]
        for r in site.index_rows
        if "king" in ((r[4] or "") + "\n" + (r[5] or "")).lower() and "mentions" in (r[5] or "")
    ]
    assert want and v.rows() == want[:100]

    v.page.fill("#f-q", "#17")
    wait_hash(v, "q=%2317")
    assert 17 in v.rows()

    v.page.fill("#f-amin", "abc")
    v.page.wait_for_selector("#f-amin[aria-invalid=true]")

    # Filters survive a visit to a latent page and back (state lives in the URL).
    v.page.fill("#f-q", "whale")
    v.page.fill("#f-amin", "")
    wait_hash(v, "q=whale")
    first = v.rows()[0]
    v.page.click(f"tr[data-latent='{first}'] a")
    v.page.wait_for_selector("article.latent h1")
    v.page.click("text=← All latents")
    v.page.wait_for_selector("#view-index:not([hidden])")
    assert v.page.input_value("#f-q") == "whale"
    assert v.rows()[0] == first
    v.assert_clean()


def test_latent_page_shows_highlighted_examples_histograms_logits_and_links(v, site):
    i = 0
    rec = site.records[i]
    v.open(f"#/latent/{i}")
    v.page.wait_for_selector("article.latent")
    assert v.page.text_content("article.latent h1") == f"Latent {i}"
    stats = v.page.text_content(".stats")
    f = rec["frac_nonzero"]
    assert f"Density{float(f'{f:.3g}')}" in stats  # 3 significant digits on the card ...
    assert repr(f) in v.page.get_attribute(".stat >> nth=0", "title")  # ... full precision on hover
    assert f"1 in {round(1 / rec['frac_nonzero']):,} tokens" in stats or "1 in" in stats

    # 20 top examples + 5 intervals × 3; every active token has a background, the qualifying one is marked.
    assert v.page.locator("ol.examples > li").count() == 35
    backgrounds = v.page.eval_on_selector_all(".tok.on", "els => els.map(e => getComputedStyle(e).backgroundColor)")
    assert backgrounds and all(b.startswith("rgba(234, 88, 12") for b in backgrounds)
    assert v.page.locator(".tok.q").count() == 35
    top = rec["activations"][0]
    q = top["qualifying_token_index"]
    first_tokens = v.page.eval_on_selector_all(
        "ol.examples >> nth=0 >> li >> nth=0 >> .tok", "els => els.map(e => e.title)"
    )
    assert first_tokens[q].split(" · ")[1] == f"novel code {top['values'][q]}"
    # Intensity grows with the value: the qualifying (max) token is the most opaque.
    alphas = v.page.eval_on_selector_all(
        "ol.examples >> nth=0 >> li >> nth=0 >> .tok", "els => els.map(e => getComputedStyle(e).backgroundColor)"
    )

    def alpha(c):
        return (
            float(c.rstrip(")").split(",")[3])
            if c.startswith("rgba") and c.count(",") == 3
            else (1.0 if c.startswith("rgb(") else 0.0)
        )

    assert alpha(alphas[q]) == max(alpha(c) for c in alphas)

    # Interval headings: range and share of active tokens.
    heads = v.page.eval_on_selector_all("h3.interval-h", "els => els.map(e => e.textContent)")
    assert len(heads) == 5
    assert "60.0% of active tokens" in heads[-1] and heads[-1].startswith("Interval 1 · (0,")

    # Histograms are inline SVG with one rect per bin and axis labels.
    assert v.page.locator("article.latent svg.hist").count() == 2
    assert v.page.locator("article.latent svg.hist >> nth=0 >> rect").count() == 50
    assert v.page.locator("article.latent svg.hist >> nth=1 >> rect").count() == 50
    assert "novel code (active tokens only)" in v.page.text_content("article.latent svg.hist >> nth=0")
    # Logit tables list the tokens and values of the record.
    pos = v.page.eval_on_selector_all("table.logits.pos tbody tr td:first-child .tok", "els => els.map(e => e.title)")
    assert pos == [f'"{t}"' for t in rec["pos_str"]]

    # Temporal panels: legend, predicted-code underline, switchable to predicted share.
    assert "novel code value" in v.page.text_content(".legend") and "predicted by context" in v.page.text_content(
        ".legend"
    )
    before = v.page.eval_on_selector(".ex-tokens .tok", "e => getComputedStyle(e).borderBottomColor")
    v.page.select_option("#underline-mode", "share")
    after = v.page.eval_on_selector(".ex-tokens .tok", "e => getComputedStyle(e).borderBottomColor")
    assert before != after
    assert "Predicted share at top activations" in stats

    # Tooltip with exact values on hover.
    v.page.hover(".tok.q >> nth=0")
    tip = v.page.text_content("#tooltip")
    qv = top["values"][q]
    assert f"novel code: {float(f'{qv:.3g}')} ({qv})" in tip and "predicted by context" in tip
    v.page.mouse.move(0, 0)
    v.page.wait_for_selector("#tooltip", state="hidden")
    v.page.focus(".tok.q >> nth=1")  # keyboard: qualifying tokens are focusable
    assert v.page.is_visible("#tooltip") and "qualifying token" in v.page.text_content("#tooltip")

    # Correlated latents link to their pages; j / k move between latents.
    v.page.click("a.corr-link >> nth=0")
    wait_hash(v, f"#/latent/{rec['correlated_features_indices'][0]}")
    v.page.wait_for_selector(f"article.latent h1:text-is('Latent {rec['correlated_features_indices'][0]}')")
    v.page.keyboard.press("j")
    wait_hash(v, "#/latent/2")
    v.page.wait_for_selector("article.latent h1:text-is('Latent 2')")
    v.page.keyboard.press("k")
    v.page.wait_for_selector("article.latent h1:text-is('Latent 1')")
    v.assert_clean()


@pytest.mark.parametrize("i", [0, 1, 2])  # predicted codes: fill 0 (even latents) and fill null (odd); long windows
def test_window_references_decode_to_the_exact_tokens_and_values(v, site, i):
    """Each example is stored as (prompt, start, length) into the shared prompt tables plus sparse values;
    the page shows exactly the windows of the ground truth: tokens, values, predicted codes and shares."""
    rec = site.records[i]
    v.open(f"#/latent/{i}")
    v.page.wait_for_selector("article.latent .tok.q")
    decoded = v.page.evaluate(f"window.tempolensViewer.loadRecord({i})")
    keys = (
        "bin_min",
        "bin_max",
        "bin_contains",
        "tokens",
        "values",
        "qualifying_token_index",
        "prompt_index",
        "pred_values",
        "pred_share",
    )
    want = [{k: a[k] for k in keys} for a in rec["activations"]]
    assert [{k: a[k] for k in keys} for a in decoded["activations"]] == want
    shown_examples = v.page.eval_on_selector_all(
        "ol.examples li",
        """lis => lis.map(li => {
        const b = li.querySelector('button.expand'); if (b) b.click();
        return [li.querySelector('.ex-rank').title, [...li.querySelectorAll('.tok')].map(e => e.title)]; })""",
    )
    by_prompt = {a["prompt_index"]: a for a in rec["activations"]}  # the test site gives each example its own prompt
    assert len(shown_examples) == len(by_prompt) == len(rec["activations"])
    for rank_title, titles in shown_examples:
        a = by_prompt[int(rank_title.split(",")[0].removeprefix("prompt "))]
        assert rank_title == f"prompt {a['prompt_index']}, token {a['qualifying_token_index']}"
        assert len(titles) == len(a["tokens"])
        for title, tok, val, pv, share in zip(titles, a["tokens"], a["values"], a["pred_values"], a["pred_share"]):
            parts = title.split(" · ")
            assert parts[0] == json.dumps(tok, ensure_ascii=False)
            assert float(parts[1].removeprefix("novel code ")) == val
            assert float(parts[2].removeprefix("predicted ")) == pv
            assert abs(float(parts[3].removeprefix("predicted share ").rstrip("%")) - share * 100) <= 0.05 + 1e-9
    v.assert_clean()


def test_long_examples_are_windowed_and_expand(v, site):
    i = site.long_latent
    v.open(f"#/latent/{i}")
    first = v.page.locator("ol.examples >> nth=0 >> li >> nth=0")
    first.locator(".tok.q").wait_for()
    assert first.locator(".tok").count() == 40 + 1 + 12
    first.locator("button.expand").click()
    assert first.locator(".tok").count() == 100
    assert first.locator("button.expand").get_attribute("aria-expanded") == "true"
    v.assert_clean()


def test_hostile_token_strings_render_as_literal_text_and_run_nothing(v, site):
    i = site.hostile_latent
    rec = site.records[i]
    v.open(f"#/latent/{i}")
    v.page.wait_for_selector("article.latent")
    n_scripts = v.page.evaluate("document.scripts.length")
    toks = v.page.eval_on_selector_all(
        "ol.examples >> nth=0 >> li >> nth=0 >> .tok", "els => els.map(e => [e.textContent, e.title])"
    )
    raw = rec["activations"][0]["tokens"]
    assert len(toks) == len(raw)
    for (text, title), r in zip(toks, raw):
        if r == "\n":
            assert text == "⏎"  # visible, and exact on hover
        else:
            assert text == r
        assert title.startswith(json.dumps(r, ensure_ascii=False))
    for h in HOSTILE[:5]:
        assert h in [t for t, _ in toks]
    # Nothing from the data became markup.
    assert v.page.evaluate("document.querySelectorAll('article img, article script, article iframe').length") == 0
    assert v.page.evaluate("document.querySelectorAll('main svg:not(.hist) ').length") == 0
    assert v.page.evaluate("document.scripts.length") == n_scripts
    srcs = v.page.evaluate("[...document.scripts].map(s => s.getAttribute('src'))")
    assert srcs[:7] == [
        "assets/app.js",
        "data/meta.js",
        "data/index.js",
        "data/autointerp.js",
        "data/kernels.js",
        "data/features/chunk-0.js",
        "data/tokens.js",
    ]
    prompt_files = {f"data/prompts/prompts-{a['prompt_index'] // PROMPT_CHUNK}.js" for a in rec["activations"]}
    assert sorted(srcs[7:]) == sorted(prompt_files)  # exactly the prompt files of this latent's examples
    assert v.page.text_content(".explanation q") == rec["tempolens"]["explanation"]
    pos = v.page.eval_on_selector_all("table.logits.pos tbody tr td:first-child", "els => els.map(e => e.textContent)")
    assert pos[:3] == HOSTILE[:3]

    # Index: hostile top tokens, explanation and site title stay text.
    v.go("#/?q=alert")
    v.page.wait_for_selector(f"tr[data-latent='{i}']")
    assert v.page.text_content(f"tr[data-latent='{i}'] td.toks") == site.index_rows[i][4]
    assert v.page.text_content(f"tr[data-latent='{i}'] td.expl") == site.index_rows[i][5]
    assert v.page.text_content("#brand") == "Test dashboards <b>not bold</b> & co"
    assert v.page.evaluate("document.querySelectorAll('#brand *, .run h1 *').length") == 0
    assert v.page.text_content(".run h1") == "Test dashboards <b>not bold</b> & co"

    # Report and kernel list: hostile strings stay text, a javascript: link is dropped.
    v.go("#/report")
    v.page.wait_for_selector(".report h1")
    assert v.page.text_content(".report dd") == "test-judge " + HOSTILE[1] + " (openai)"
    assert v.page.text_content(".report-scores tbody tr:nth-child(2) td") == HOSTILE[0]
    v.go("#/kernels")
    v.page.wait_for_selector(".kernel-list")
    hrefs = v.page.eval_on_selector_all(".kernel-list a", "els => els.map(e => e.getAttribute('href'))")
    assert hrefs == ["kernels/story-0.html"]
    v.page.wait_for_timeout(100)
    v.assert_clean()


def test_autointerp_report_shows_scores_with_intervals_and_context(v, site):
    v.open("#/report")
    v.page.wait_for_selector(".report")
    assert v.page.get_attribute("#nav a[aria-current=page]", "href") == "#/report"
    heads = v.page.eval_on_selector_all(".report-scores th", "els => els.map(e => e.textContent)")
    assert heads == [
        "SAE",
        "architecture",
        "width",
        "latents (alive)",
        "saebench",
        "embedding",
        "parse failures",
        "errors",
        "tokens",
    ]
    first = v.page.eval_on_selector_all(".report-scores tbody tr:first-child td", "els => els.map(e => e.textContent)")
    assert first[:4] == ["temporal", "temporal", "250", "30 (200)"]
    assert first[4] == "0.810 [0.770, 0.850] n=30" and first[6] == "2"
    # One dot + CI whisker + chance line per (scorer, SAE).
    assert v.page.locator("svg.ciplot circle.dot").count() == 4
    assert v.page.locator("svg.ciplot line.ci").count() == 4
    assert v.page.locator("svg.ciplot line.chance").count() == 4
    assert "saebench 0.714" in v.page.text_content(".report")
    assert "Context (not comparable)" in v.page.text_content(".report h2")
    v.assert_clean()


def test_opens_from_file_url_without_network_and_saves_screenshots(v, site):
    v.open()
    v.screenshot("viewer-index.png")
    v.go("#/latent/0")
    v.page.wait_for_selector("article.latent svg.hist")
    v.page.hover(".tok.q >> nth=0")
    v.screenshot("viewer-latent.png", full_page=True)
    v.go("#/report")
    v.page.wait_for_selector(".report")
    v.screenshot("viewer-report.png")
    assert v.requests and all(u.startswith("file://") for u in v.requests)
    assert any(u.endswith("data/features/chunk-0.js") for u in v.requests)
    # Feature chunks are loaded lazily: only the chunk of the latent that was shown.
    assert not any("chunk-1.js" in u for u in v.requests)
    v.assert_clean()


def test_dead_missing_and_unknown_latents(v, site):
    dead = site.dead[0]
    v.open(f"#/latent/{dead}")
    v.page.wait_for_selector("article.latent")
    assert "never fired" in v.page.text_content("article.latent")
    v.go("#/latent/250")
    v.page.wait_for_selector("h1:text-is('No latent 250')")
    v.go("#/nowhere")
    v.page.wait_for_selector("h1:text-is('Page not found')")
    # Goto box.
    v.page.fill("#goto-input", "#5")
    v.page.press("#goto-input", "Enter")
    v.page.wait_for_selector("article.latent h1:text-is('Latent 5')")
    v.assert_clean()


def test_missing_chunk_and_missing_data_give_clear_messages(browser, site, tmp_path):  # noqa: F811
    broken = tmp_path / "broken"
    copy_site(site.root, broken)
    (broken / "data" / "features" / "chunk-1.js").unlink()
    vis = visit(browser, broken)
    vis.open("#/latent/70")
    vis.page.wait_for_selector("#view-page .error")
    assert "chunk-1.js" in vis.page.text_content(
        "#view-page .error"
    ) and "tempolens dashboards" in vis.page.text_content("#view-page .error")
    vis.page.context.close()

    empty = tmp_path / "empty"
    install_viewer(empty)
    vis = visit(browser, empty)
    vis.open(ready=False)
    vis.page.wait_for_selector("body[data-ready=error]")
    assert "data/meta.js" in vis.page.text_content("#loading")
    vis.page.context.close()


def test_standard_sae_site_has_no_temporal_panels(browser, tmp_path):  # noqa: F811
    spec = write_site(tmp_path / "std", n_latents=30, chunk_size=16, temporal=False, autointerp=True, kernels=False)
    vis = visit(browser, spec.root)
    vis.open("#/latent/0")
    vis.page.wait_for_selector("article.latent .example")
    assert vis.page.locator(".legend").count() == 0
    assert vis.page.locator(".ex-pred").count() == 0
    assert "predicted" not in (vis.page.get_attribute(".tok.q", "title") or "")
    vis.go("#/")
    vis.page.wait_for_selector("table.latents")
    assert vis.page.locator("th[data-col=pred_share]").count() == 0
    assert vis.page.eval_on_selector_all("#nav a", "els => els.map(e => e.textContent)") == [
        "Latents",
        "Autointerp report",
    ]
    # A report of another shape is still shown, as text.
    vis.go("#/report")
    vis.page.wait_for_selector(".report figure table")
    assert vis.page.text_content(".report h1") == "Autointerp ballpark " + HOSTILE[1]
    assert HOSTILE[0] in vis.page.text_content(".report table")
    vis.assert_clean()
    vis.page.context.close()


def test_index_of_65k_latents_stays_fast(browser, tmp_path, record_property):  # noqa: F811
    n = 65536
    t0 = time.perf_counter()
    spec = write_site(tmp_path / "big", n_latents=n, chunk_size=256, records=False, autointerp=False, kernels=False)
    t_write = time.perf_counter() - t0
    vis = visit(browser, spec.root)
    t0 = time.perf_counter()
    vis.open()
    vis.page.wait_for_selector("table.latents tbody tr")
    t_open = time.perf_counter() - t0
    assert len(vis.rows()) == 100
    assert vis.page.text_content(".count") == "Showing 100 of 65,536 latents"
    t0 = time.perf_counter()
    vis.page.click("th[data-col=max_act] button")
    wait_hash(vis, "sort=max_act")
    t_sort = time.perf_counter() - t0
    assert vis.rows() == expected_order(spec, "max_act", desc=True)[:100]
    t0 = time.perf_counter()
    vis.page.fill("#f-q", "whale")
    wait_hash(vis, "q=whale")
    t_search = time.perf_counter() - t0
    assert len(vis.rows()) == 100
    record_property("viewer_65k_seconds", {"write": t_write, "open": t_open, "sort": t_sort, "search": t_search})
    print(
        f"\n65,536 latents: open {t_open:.2f}s, sort {t_sort:.2f}s, search {t_search:.2f}s (site written in "
        f"{t_write:.2f}s)"
    )
    assert t_open < 10 and t_sort < 5 and t_search < 5
    vis.assert_clean()
    vis.page.context.close()
