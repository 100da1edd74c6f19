"""The static site's data files (contract: ``docs/site-data.md``), its page shells and the copy of the viewer assets.

Every data file is a small script that calls a global function with a JSON literal, so the site opens
from ``file://`` with no server. :func:`js_literal` (the one implementation: the kernel pages, the events
page and the autointerp report write their data through it too) escapes ``<``, ``>``, ``&``, U+2028 and
U+2029 so no string from the data (token strings are untrusted) can end the script or break its parsing.

Every page is a static or thin HTML shell with :data:`PAGE_CSP` (no inline script or style) that loads
the viewer assets (``tempolens/viewer/assets``, installed by :func:`install_viewer`) and its data files.
"""

from __future__ import annotations

import html
import json
import shutil
from pathlib import Path
from typing import Any, Sequence

from tempolens.errors import TempolensError
from tempolens.fsutil import atomic_write_bytes

INDEX_COLUMNS: tuple[str, ...] = ("index", "frac_nonzero", "max_act", "mean_act", "top_tokens", "explanation", "score", "pred_share")

_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_TABLE = str.maketrans(_ESCAPES)
_BYTE_ESCAPES = tuple((k.encode(), v.encode()) for k, v in _ESCAPES.items())


def js_literal(obj: Any) -> str:
    """JSON text of ``obj`` that is also safe inside ``<script>``: a valid JSON document with no raw
    ``<``, ``>``, ``&``, U+2028 or U+2029 (they are ``\\uXXXX`` escapes, which JSON and JavaScript decode
    back to the same characters). NaN/Infinity are refused."""
    text = json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.translate(_TABLE)


def js_literal_fast(obj: Any) -> str:
    """:func:`js_literal` for large data already checked finite (uses ``orjson`` when installed).

    The escapes are byte replacements on the UTF-8 JSON (≈20× faster than ``str.translate``;
    the same output: the escaped characters never occur inside a multi-byte sequence)."""
    from tempolens.dashboards.records import dumps_bytes

    data = dumps_bytes(obj)
    for raw, esc in _BYTE_ESCAPES:
        data = data.replace(raw, esc)
    return data.decode()


def js_call(function: str, *args: Any) -> bytes:
    """``function(arg, ...);`` with every argument as a :func:`js_literal`."""
    return (f"{function}(" + ",".join(js_literal(a) for a in args) + ");\n").encode()


ASSETS_DIR: Path = Path(__file__).resolve().parent.parent / "viewer" / "assets"
"""Folder of the viewer's files: the pages ``index.html`` and ``report.html``, and the assets they load."""

PAGE_FILE = "index.html"
"""The dashboard site's page; it goes to the site root."""

REPORT_FILE = "report.html"
"""The autointerp report's page (the report view of ``app.js``); it goes to the report folder's root."""

ASSET_FILES: tuple[str, ...] = ("app.js", "style.css", "temporal.js")
"""Files that the pages load from ``assets/``: the dashboard and report views (``app.js``), the
temporal views (``temporal.js``: kernel pages, kernel index, events page, live page) and the style."""

PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'none'"
)
"""The Content-Security-Policy of every page (in its ``<meta>``; ``tempolens serve`` sends the same
plus ``frame-ancestors 'none'``): scripts and styles only from files, never inline."""


class ViewerError(TempolensError):
    """The viewer's assets are missing (a broken install) or cannot be copied."""


def viewer_assets_dir() -> Path:
    """The folder of the viewer's files (:data:`ASSETS_DIR`)."""
    return ASSETS_DIR


def install_viewer(site_dir: Path | str, pages: Sequence[str] = (PAGE_FILE,)) -> list[Path]:
    """Copy the viewer into ``site_dir``: the given ``pages`` (of :data:`ASSETS_DIR`) at its root, the
    assets (:data:`ASSET_FILES`) under ``assets/``; ``pages=()`` installs only the assets (for the
    kernel pages, which are shells written beside their data).

    Existing viewer files are replaced (each copy is written to a temporary name, then renamed,
    so a reader never sees half a file); data files are not touched. Returns the written paths.
    """
    site = Path(site_dir)
    sources = [ASSETS_DIR / name for name in pages] + [ASSETS_DIR / name for name in ASSET_FILES]
    missing = [p.name for p in sources if not p.is_file()]
    if missing:
        raise ViewerError(f"viewer assets {', '.join(missing)} are missing from {ASSETS_DIR}; reinstall tempolens")
    targets = [site / name for name in pages] + [site / "assets" / name for name in ASSET_FILES]
    written = []
    try:
        (site / "assets").mkdir(parents=True, exist_ok=True)
        for src, dst in zip(sources, targets):
            tmp = dst.with_name(f".{dst.name}.tmp")
            shutil.copyfile(src, tmp)
            tmp.replace(dst)
            written.append(dst)
    except OSError as e:
        raise ViewerError(
            f"cannot write the viewer into {site} ({e.strerror or e}); choose a writable --out folder") from e
    return written


def html_shell(title: str, page: str, assets: str, scripts: Sequence[str] = (),
               attrs: dict[str, str] | None = None) -> str:
    """A page of the temporal views: :data:`PAGE_CSP`, ``<assets>style.css``, ``<assets>temporal.js``, then
    the data ``scripts`` (relative URLs, in order), and ``<body data-page="<page>">`` plus ``attrs`` as
    ``data-*`` attributes. No inline script or style; ``title`` is escaped (the view sets the final title)."""
    e = lambda x: html.escape(str(x), quote=True)  # noqa: E731
    tags = "".join(f'<script src="{e(src)}" defer></script>\n' for src in [f"{assets}temporal.js", *scripts])
    data_attrs = "".join(f' data-{e(k)}="{e(v)}"' for k, v in (attrs or {}).items())
    return (
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{PAGE_CSP}\">\n"
        "<meta name=\"referrer\" content=\"no-referrer\">\n"
        f"<title>{e(title)}</title>\n<link rel=\"stylesheet\" href=\"{e(assets)}style.css\">\n{tags}</head>\n"
        f"<body data-page=\"{e(page)}\"{data_attrs}>\n<div id=\"page\"></div>\n"
        "<noscript><p class=\"notice\">This page needs JavaScript (no network access is used: everything is read "
        "from the files beside this page).</p></noscript>\n<p id=\"loading\" class=\"notice\">Loading…</p>\n"
        "</body>\n</html>\n"
    )


class SiteWriter:
    """Writes one site folder: ``index.html``, ``assets/``, ``data/meta.js``, ``data/index.js``,
    ``data/features/chunk-<c>.js``, optional ``data/autointerp.js``."""

    def __init__(self, root: Path, chunk_size: int):
        self.root = Path(root)
        self.chunk_size = int(chunk_size)
        self.data = self.root / "data"
        (self.data / "features").mkdir(parents=True, exist_ok=True)

    def copy_assets(self) -> list[Path]:
        """Install the viewer (:func:`install_viewer`): ``index.html`` at the site root, the assets in ``assets/``."""
        return install_viewer(self.root)

    def chunk_of(self, latent: int) -> int:
        return int(latent) // self.chunk_size

    def write_chunk(self, c: int, records: dict[int, dict[str, Any]]) -> Path:
        path = self.data / "features" / f"chunk-{c}.js"
        body = {str(k): v for k, v in sorted(records.items())}
        atomic_write_bytes(path, f"tempolensFeatures({int(c)},{js_literal_fast(body)});\n".encode())
        return path

    def write_index(self, rows: list[list[Any]]) -> Path:
        path = self.data / "index.js"
        atomic_write_bytes(path, js_call("tempolensIndex", {"columns": list(INDEX_COLUMNS), "rows": rows}))
        return path

    def write_meta(self, meta: dict[str, Any]) -> Path:
        path = self.data / "meta.js"
        atomic_write_bytes(path, js_call("tempolensMeta", meta))
        return path

    def write_autointerp(self, report: dict[str, Any]) -> Path:
        path = self.data / "autointerp.js"
        atomic_write_bytes(path, js_call("tempolensAutointerp", report))
        return path


def load_autointerp(path: Path) -> dict[int, dict[str, Any]]:
    """Read an autointerp results file: JSON ``{"<latent>": {"explanation": str, "scores": {name: number}}}``.

    Parsed strictly (untrusted input stays data); raises ``ConfigError`` naming what is wrong.
    """
    from tempolens.errors import ConfigError

    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"--autointerp {path} is not a readable JSON file ({e}); pass a JSON object {{latent: {{explanation, scores}}}}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"--autointerp {path} must hold a JSON object mapping latent ids to {{explanation, scores}}")
    out: dict[int, dict[str, Any]] = {}
    for key, val in raw.items():
        try:
            latent = int(key)
        except ValueError:
            raise ConfigError(f"--autointerp {path}: key {key!r} is not a latent id (an integer)") from None
        if not isinstance(val, dict):
            raise ConfigError(f"--autointerp {path}: the entry of latent {latent} must be an object with 'explanation' and 'scores'")
        expl = val.get("explanation")
        if expl is not None and not isinstance(expl, str):
            raise ConfigError(f"--autointerp {path}: the explanation of latent {latent} must be a string")
        scores = val.get("scores") or {}
        if not isinstance(scores, dict) or not all(isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf") for k, v in scores.items()):
            raise ConfigError(f"--autointerp {path}: the scores of latent {latent} must map scorer names to finite numbers")
        out[latent] = {"explanation": expl, "scores": {k: float(v) for k, v in scores.items()}}
    return out
