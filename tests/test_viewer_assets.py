"""The viewer's files without a browser: what they may contain, how they are installed, and the
pure helpers of app.js run under Node (when Node is installed)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from tempolens.viewer import ASSET_FILES, ASSETS_DIR, PAGE_CSP, PAGE_FILE, REPORT_FILE, install_viewer

APP = (ASSETS_DIR / "app.js").read_text(encoding="utf-8")
TEMPORAL = (ASSETS_DIR / "temporal.js").read_text(encoding="utf-8")
HTML = (ASSETS_DIR / "index.html").read_text(encoding="utf-8")
REPORT = (ASSETS_DIR / "report.html").read_text(encoding="utf-8")
CSS = (ASSETS_DIR / "style.css").read_text(encoding="utf-8")


def test_install_viewer_puts_page_at_root_and_assets_below(tmp_path):
    written = install_viewer(tmp_path / "site")
    assert [p.relative_to(tmp_path / "site").as_posix() for p in written] == ["index.html"] + [
        f"assets/{name}" for name in ASSET_FILES
    ]
    assert set(ASSET_FILES) == {"app.js", "style.css", "temporal.js"}
    for p in written:
        src = ASSETS_DIR / (PAGE_FILE if p.name == PAGE_FILE else p.name)
        assert p.read_bytes() == src.read_bytes()
    (tmp_path / "site" / "data").mkdir()
    (tmp_path / "site" / "data" / "meta.js").write_text("tempolensMeta({});\n")
    install_viewer(tmp_path / "site")  # idempotent; data untouched
    assert (tmp_path / "site" / "data" / "meta.js").read_text() == "tempolensMeta({});\n"
    assert sorted(p.name for p in (tmp_path / "site" / "assets").iterdir()) == sorted(ASSET_FILES)
    # the autointerp report folder gets report.html and the same assets; the kernel pages only the assets
    assert install_viewer(tmp_path / "rep", pages=(REPORT_FILE,))[0] == tmp_path / "rep" / "report.html"
    assert not (tmp_path / "rep" / "index.html").exists()
    assert [p.name for p in install_viewer(tmp_path / "k", pages=())] == list(ASSET_FILES)


def test_every_page_has_the_one_csp_and_no_inline_code():
    from tempolens.dashboards.site import html_shell

    shell = html_shell("<t>", "kernel", assets="../assets/", scripts=["data/page-x.js"], attrs={"max-chars": "9"})
    for page in (HTML, REPORT, shell):
        csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page).group(1)
        assert csp == PAGE_CSP and "unsafe-inline" not in csp
        assert re.findall(r"<script(?![^>]*\bsrc=)", page) == [] and "<style" not in page and " style=" not in page
    assert "<title>&lt;t&gt;</title>" in shell and 'data-max-chars="9"' in shell
    assert re.findall(r'<script src="([^"]+)"', shell) == ["../assets/temporal.js", "data/page-x.js"]
    assert re.findall(r'(?:src|href)="([^"]+)"', REPORT) == ["assets/style.css", "assets/app.js"]


def test_page_loads_only_local_files():
    refs = re.findall(r'(?:src|href)="([^"]+)"', HTML)
    assert sorted(refs) == sorted(["#main", "#/", "assets/app.js", "assets/style.css"])
    for text in (HTML, REPORT, APP, TEMPORAL, CSS):
        urls = [u for u in re.findall(r"https?://[^\s'\")]+", text) if u != "http://www.w3.org/2000/svg"]
        assert urls == [], f"no CDN or remote URL allowed: {urls}"
    assert "@import" not in CSS and "url(" not in CSS
    # Defence in depth: no inline script may run, nothing may be fetched from elsewhere.
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', HTML).group(1)
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "object-src 'none'" in csp
    assert "<script>" not in HTML.replace('<script src="assets/app.js" defer></script>', "")


def test_app_never_parses_data_as_html_or_code():
    code = re.sub(r"/\*.*?\*/", "", APP, flags=re.S)
    code = re.sub(r"//[^\n]*", "", code)
    for banned in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        "fetch(",
        "XMLHttpRequest",
        "DOMParser",
        "createContextualFragment",
        "srcdoc",
    ):
        assert banned not in code, banned
    temporal = re.sub(r"//[^\n]*", "", re.sub(r"/\*.*?\*/", "", TEMPORAL, flags=re.S))
    for banned in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        "XMLHttpRequest",
        "DOMParser",
        "createContextualFragment",
        "srcdoc",
        "setAttribute('on",
        "cssText",
    ):
        assert banned not in temporal, banned
    assert temporal.count("fetch(") == 1 and "fetch('/api/analyze'" in temporal  # the live page's one request
    # setAttribute is only ever called with attribute names written in the code (never "on…" from data).
    assert "setAttribute(k," in code and "k.slice(0, 2) === 'on'" in code


node = shutil.which("node")


@pytest.mark.skipif(node is None, reason="Node.js not installed (the browser tests cover the same code)")
def test_pure_helpers_under_node():
    script = (
        """
    global.window = {}; global.document = { readyState: 'loading', addEventListener() {} };
    """
        + APP
        + """
    const v = window.tempolensViewer;
    const out = {
      tok: ['\\n', ' ', '  ', '', '\\t', 'a\\u0001b', ' the', '<b>', '\\r\\n', 'x\\u007f'].map(t => v.showToken(t)),
      fmt: [0, 1, 0.5, 1234.5678, 0.000123, 123456, -2.5, null, NaN, 1/3].map(x => v.fmt(x)),
      oneIn: [0.5, 0.001, 1/3, 1e-7, 0, null].map(x => v.oneIn(x)),
      ticks: [v.niceTicks(0, 1, 4), v.niceTicks(0, 19.78, 4), v.niceTicks(-2, 2, 4), v.niceTicks(3, 3, 4)],
      num: ['', ' 1e-5 ', '0.1', '2%', 'abc', '1e', '.5', '-3'].map(x => {
        const r = v.parseUserNumber(x);
        return Number.isNaN(r) ? 'NaN' : r;
      }),
      href: ['kernels/a.html', 'javascript:alert(1)', '/etc/passwd', '../x.html', 'kernels/../../x', 'http://x',
             'a b', 'kernels/story-1.html#t'].map(x => v.safeRelativeHref(x)),
      act: [v.actColor(0, 1), v.actColor(1, 1), v.actColor(0.5, 1), v.actColor(2, 1), v.actColor(1, 0)],
      pred: [v.predColor(0, 1), v.predColor(1, 1), v.predColor(-1, 1)],
    };
    process.stdout.write(JSON.stringify(out));
    """
    )
    res = subprocess.run([node, "-e", script], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert [t["text"] for t in out["tok"]] == ["⏎", "␣", "␣␣", "∅", "⇥", "a\u2401b", " the", "<b>", "␍⏎", "x␡"]
    assert [t["ws"] for t in out["tok"]] == [True, True, True, True, True, True, False, False, True, True]
    assert out["fmt"] == ["0", "1", "0.5", "1230", "1.23e-4", "1.23e+5", "-2.5", "–", "–", "0.333"]
    assert out["oneIn"] == [
        "1 in 2 tokens",
        "1 in 1,000 tokens",
        "1 in 3 tokens",
        "1 in 10,000,000 tokens",
        "never active",
        "never active",
    ]
    assert out["ticks"] == [[0, 0.2, 0.4, 0.6, 0.8, 1], [0, 5, 10, 15], [-2, -1, 0, 1, 2], [3]]
    assert out["num"] == [None, 1e-5, 0.1, 0.02, "NaN", "NaN", 0.5, -3]  # blank → no filter; garbage → invalid
    assert out["href"] == ["kernels/a.html", None, None, None, None, None, None, "kernels/story-1.html#t"]
    assert out["act"][0] == "" and out["act"][4] == ""
    assert (
        out["act"][1] == "rgba(234, 88, 12, 0.850)"
        and out["act"][2] == "rgba(234, 88, 12, 0.475)"
        and out["act"][3] == out["act"][1]
    )
    assert out["pred"] == ["transparent", "rgba(37, 99, 235, 1.000)", "rgba(220, 38, 38, 1.000)"]


@pytest.mark.skipif(node is None, reason="Node.js not installed")
def test_app_js_parses():
    for name in ("app.js", "temporal.js"):
        res = subprocess.run([node, "--check", str(ASSETS_DIR / name)], capture_output=True, text=True, timeout=30)
        assert res.returncode == 0, res.stderr
