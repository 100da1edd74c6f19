"""Readable numbers that never overflow: the viewer in Chromium at 1280 px and 800 px widths, with the
magnitudes of a real Temporal SAE site (logit effects of millions, activations of 1e-4, densities
printed with 17 digits). Element boxes are compared: the text of every table cell and stat card lies
inside its own box, and no two cells' texts overlap."""

from __future__ import annotations

import json
import re

import pytest
from viewer_browser import browser, visit  # noqa: F401  (browser is a fixture)
from viewer_site import js_literal, write_site

pytestmark = pytest.mark.browser

LATENT = 0
WIDTHS = (1280, 800)

# For every table row and every stat card: the box of each cell, and the box of the text inside it
# (a Range over the cell's contents measures the text even where it spills out of the cell).
MEASURE = """
() => {
  const box = r => ({left: r.left, right: r.right, top: r.top, bottom: r.bottom, w: r.width, h: r.height});
  const textBox = el => {
    const r = document.createRange();
    r.selectNodeContents(el);
    return box(r.getBoundingClientRect());
  };
  const out = [];
  const visible = el => el.getClientRects().length > 0;
  document.querySelectorAll('#view-page table tr, #view-index table tr').forEach((tr, k) => {
    if (!visible(tr)) return;
    const cells = Array.from(tr.children).filter(visible);
    out.push({where: (tr.closest('table').className || 'table') + ' row ' + k,
              cells: cells.map(c => ({text: c.textContent, cell: box(c.getBoundingClientRect()),
                                      content: textBox(c)}))});
  });
  document.querySelectorAll('#view-page .stats').forEach(st => {
    out.push({where: 'stat cards', cells: Array.from(st.children).filter(visible).map(c =>
      ({text: c.textContent, cell: box(c.getBoundingClientRect()), content: textBox(c)}))});
  });
  return out;
}
"""


def problems(rows: list[dict], tol: float = 1.0) -> list[str]:
    """Texts outside their own cell, and pairs of cells in one row whose texts overlap."""
    bad = []
    for row in rows:
        cells = [c for c in row["cells"] if c["content"]["w"] > 0]
        for c in cells:
            cb, tb = c["cell"], c["content"]
            if tb["left"] < cb["left"] - tol or tb["right"] > cb["right"] + tol:
                bad.append(
                    f"{row['where']}: text {c['text']!r} ({tb['left']:.0f}..{tb['right']:.0f}) "
                    f"overflows its cell ({cb['left']:.0f}..{cb['right']:.0f})"
                )
        for i, a in enumerate(cells):
            for b in cells[i + 1 :]:
                ta, tb = a["content"], b["content"]
                if (
                    min(ta["right"], tb["right"]) - max(ta["left"], tb["left"]) > tol
                    and min(ta["bottom"], tb["bottom"]) - max(ta["top"], tb["top"]) > tol
                ):
                    bad.append(f"{row['where']}: texts {a['text']!r} and {b['text']!r} overlap")
    return bad


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The hand-written test site, with latent 0 given the numbers seen on the embedded default's
    Temporal SAE site before contribution norms (and long token strings in the logit tables)."""
    spec = write_site(
        tmp_path_factory.mktemp("layout_site"), n_latents=80, chunk_size=64, autointerp=False, kernels=False
    )
    rec = spec.records[LATENT]
    rec["neg_values"] = [
        -1883417.25,
        -1712345.5,
        -1500000.125,
        -1234567.875,
        -1100000.5,
        -998765.4375,
        -876543.25,
        -765432.125,
        -654321.5,
        -543210.25,
    ]
    rec["pos_values"] = [
        3431234.5,
        3012345.25,
        2890123.75,
        2500000.125,
        2345678.5,
        2100000.25,
        1987654.5,
        1876543.25,
        1765432.125,
        1654321.5,
    ]
    rec["neg_str"][:3] = ["7", " internationalization", "\u2581\u2581\u2581\u2581\u2581\u2581\u2581\u2581"]
    rec["pos_str"][:3] = ["13", " counterrevolutionaries", "................"]
    rec["frac_nonzero"] = 0.019473328000984433
    rec["tempolens"]["max_act"] = 0.00055312347
    rec["tempolens"]["mean_act"] = 0.00013443072702331962
    rec["correlated_features_pearson"] = [0.13443072702331962, -0.0123456789, 0.9876543210123, 0.5, 0.25]
    rec["correlated_features_l1"] = [0.019473328000984433, 0.0001234567, 0.333333333333, 0.5, 0.25]
    for a in rec["activations"]:
        a["values"] = [v * 1e-4 for v in a["values"]]
        a["bin_min"] = a["bin_min"] * 1e-4 if a["bin_min"] != -1 else -1
        a["bin_max"] = a["bin_max"] * 1e-4
        if "pred_values" in a:
            a["pred_values"] = [v * 1e-4 for v in a["pred_values"]]
    rec["freq_hist_data_bar_values"] = [v * 1e-4 for v in rec["freq_hist_data_bar_values"]]
    rec["logits_hist_data_bar_values"] = [v * 1e6 for v in rec["logits_hist_data_bar_values"]]
    chunk = {str(i): r for i, r in spec.records.items() if i // 64 == 0}
    (spec.root / "data" / "features" / "chunk-0.js").write_text(
        f"tempolensFeatures(0, {js_literal(chunk)});\n", encoding="utf-8"
    )
    spec.index_rows[LATENT][1:4] = [rec["frac_nonzero"], rec["tempolens"]["max_act"], rec["tempolens"]["mean_act"]]
    text = (spec.root / "data" / "index.js").read_text(encoding="utf-8")
    idx = json.loads(re.fullmatch(r"tempolensIndex\((.*)\);\n", text, re.S).group(1))
    idx["rows"][LATENT] = spec.index_rows[LATENT]
    (spec.root / "data" / "index.js").write_text(f"tempolensIndex({js_literal(idx)});\n", encoding="utf-8")
    return spec


@pytest.mark.parametrize("width", WIDTHS)
def test_tables_and_cards_never_overflow(browser, site, width):  # noqa: F811
    v = visit(browser, site.root, width=width, height=900)
    try:
        v.open(f"#/latent/{LATENT}")
        v.page.wait_for_selector("article.latent table.logits")
        v.screenshot(f"layout-latent-{width}.png", full_page=True)
        bad = problems(v.page.evaluate(MEASURE))
        # every number in the logit tables and stat cards has at most 3 significant digits
        shown = v.page.eval_on_selector_all("table.logits td.num, .stat-v", "els => els.map(e => e.textContent)")
        v.open("#/")
        v.page.wait_for_selector("table.latents tbody tr")
        v.screenshot(f"layout-index-{width}.png")
        bad += problems(v.page.evaluate(MEASURE))
        v.assert_clean()
    finally:
        v.page.context.close()
    assert bad == [], "\n".join(bad[:20])
    for t in shown:
        digits = re.sub(r"e[+-]?\d+$", "", t.replace(",", "")).lstrip("-").replace(".", "").lstrip("0")
        assert not re.fullmatch(r"\d+", digits) or len(digits) <= 3 or t.replace(",", "").isdigit(), (
            f"{t!r} has more than 3 significant digits"
        )
