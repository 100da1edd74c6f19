"""Playwright helpers for the viewer's browser tests: the system Chromium, and a page that records
every request, dialog and script error so that tests can assert none of them happened."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-gpu",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="module")
def browser():
    """The system Chromium driven by Playwright (never a downloaded browser)."""
    if not CHROMIUM.exists():
        pytest.skip("system Chromium missing at /usr/bin/chromium: install it with `apt-get install -y chromium`")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright missing: pip install playwright")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@dataclass
class Visit:
    """One browser page on a site, with everything it did recorded."""

    page: object
    site: Path
    requests: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def open(self, hash_: str = "#/", ready: bool = True) -> None:
        self.page.goto((self.site / "index.html").as_uri() + hash_)
        if ready:
            self.page.wait_for_selector("body[data-ready]", timeout=15000)

    def go(self, hash_: str) -> None:
        """Navigate inside the single page (hash routing), as a link click would."""
        self.page.evaluate("h => { location.hash = h; }", hash_)

    def rows(self) -> list[int]:
        return [
            int(x)
            for x in self.page.eval_on_selector_all("table.latents tbody tr", "els => els.map(e => e.dataset.latent)")
        ]

    def screenshot(self, name: str, full_page: bool = False) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / name
        self.page.screenshot(path=str(path), full_page=full_page)
        return path

    def assert_clean(self) -> None:
        """No dialog opened, no script error, no request left the site's files, no XSS canary set."""
        assert self.dialogs == [], f"a dialog opened (injected script ran?): {self.dialogs}"
        assert self.errors == [], f"script errors on the page: {self.errors}"
        assert self.page.evaluate("typeof window.__xss") == "undefined", "an XSS canary was set"
        outside = [u for u in self.requests if not u.startswith("file://")]
        assert outside == [], f"requests outside file://: {outside}"


def visit(browser, site: Path, width: int = 1400, height: int = 1000) -> Visit:
    ctx = browser.new_context(viewport={"width": width, "height": height}, service_workers="block")
    page = ctx.new_page()
    v = Visit(page=page, site=Path(site))
    page.on("request", lambda r: v.requests.append(r.url))
    page.on("dialog", lambda d: (v.dialogs.append(f"{d.type}: {d.message}"), d.dismiss()))
    page.on("pageerror", lambda e: v.errors.append(str(e)))
    return v


def copy_site(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
