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
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tempolens.errors import TempolensError
from tempolens.fsutil import atomic_write_bytes

if TYPE_CHECKING:
    from torch import Tensor

INDEX_COLUMNS: tuple[str, ...] = (
    "index",
    "frac_nonzero",
    "max_act",
    "mean_act",
    "top_tokens",
    "explanation",
    "score",
    "pred_share",
)

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
            f"cannot write the viewer into {site} ({e.strerror or e}); choose a writable --out folder"
        ) from e
    return written


def html_shell(
    title: str, page: str, assets: str, scripts: Sequence[str] = (), attrs: dict[str, str] | None = None
) -> str:
    """A page of the temporal views: :data:`PAGE_CSP`, ``<assets>style.css``, ``<assets>temporal.js``, then
    the data ``scripts`` (relative URLs, in order), and ``<body data-page="<page>">`` plus ``attrs`` as
    ``data-*`` attributes. No inline script or style; ``title`` is escaped (the view sets the final title)."""
    e = lambda x: html.escape(str(x), quote=True)  # noqa: E731
    tags = "".join(f'<script src="{e(src)}" defer></script>\n' for src in [f"{assets}temporal.js", *scripts])
    data_attrs = "".join(f' data-{e(k)}="{e(v)}"' for k, v in (attrs or {}).items())
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{PAGE_CSP}">\n'
        '<meta name="referrer" content="no-referrer">\n'
        f'<title>{e(title)}</title>\n<link rel="stylesheet" href="{e(assets)}style.css">\n{tags}</head>\n'
        f'<body data-page="{e(page)}"{data_attrs}>\n<div id="page"></div>\n'
        '<noscript><p class="notice">This page needs JavaScript (no network access is used: everything is read '
        'from the files beside this page).</p></noscript>\n<p id="loading" class="notice">Loading…</p>\n'
        "</body>\n</html>\n"
    )


SITE_ACTIVATION_KEYS: tuple[str, ...] = (
    "bin_min",
    "bin_max",
    "bin_contains",
    "prompt_index",
    "start",
    "qualifying_token_index",
)
"""Keys of an activation in a site chunk, before its ``values`` (and ``pred_values``): the window is
referenced (prompt, first position; its length is ``meta.window_len``), not copied."""

PROMPT_CHUNK_SIZE = 64
"""Prompts per ``data/prompts/prompts-<p>.js`` (``meta.prompt_chunk_size``)."""


class SiteWriter:
    """Writes one site folder: ``index.html``, ``assets/``, ``data/meta.js``, ``data/index.js``,
    ``data/features/chunk-<c>.js``, ``data/prompts/prompts-<p>.js``, ``data/tokens.js``, optional
    ``data/autointerp.js`` (layout: ``docs/site-data.md``).

    The example windows are stored once: :meth:`add_windows` keeps the token ids (and per-token predicted
    shares) of every prompt position an example shows, :meth:`write_prompts` writes them with one table
    of the token strings that occur; each latent's activations reference their window and keep only
    their own sparse values."""

    def __init__(self, root: Path, chunk_size: int, n_prompts: int = 0, prompt_len: int = 0):
        self.root = Path(root)
        self.chunk_size = int(chunk_size)
        self.data = self.root / "data"
        (self.data / "features").mkdir(parents=True, exist_ok=True)
        self.n_prompts, self.prompt_len = int(n_prompts), int(prompt_len)
        self._tokens: Any = None
        """``[n_prompts, prompt_len]`` int64 token ids of the shown positions, −1 elsewhere (made on first use)."""
        self._share: Any = None
        """``[n_prompts, prompt_len]`` float64 predicted shares of the shown positions (NaN elsewhere), or ``None``."""

    def copy_assets(self) -> list[Path]:
        """Install the viewer (:func:`install_viewer`): ``index.html`` at the site root, the assets in ``assets/``."""
        return install_viewer(self.root)

    def chunk_of(self, latent: int) -> int:
        """The feature chunk of ``latent``."""
        return int(latent) // self.chunk_size

    def add_windows(self, prompt: Tensor, start: Tensor, tokens: Tensor, pred_share: Tensor | None = None) -> None:
        """Keep the token ids (``tokens [E, L]``) and, for Temporal SAEs, the predicted shares
        (``pred_share [E, L]``, rounded when written) of the windows ``(prompt[e], start[e] .. start[e] + L)``
        for :meth:`write_prompts`. The same position always holds the same token and share (one store)."""
        import torch

        from tempolens.stats.examples import first_of_each

        if self._tokens is None:
            self._tokens = torch.full((self.n_prompts, self.prompt_len), -1, dtype=torch.int64)
        if tokens.numel() == 0:
            return
        prompt, start = prompt.to(torch.int64), start.to(torch.int64)
        key = prompt * (self.prompt_len + 1) + start
        if key.numel() > 1:  # many examples show the same window: write each distinct one once
            first = first_of_each(key)[0]
            prompt, start, tokens = prompt[first], start[first], tokens[first]
            pred_share = None if pred_share is None else pred_share[first]
        rows = prompt.unsqueeze(1)
        cols = start.unsqueeze(1) + torch.arange(tokens.shape[1])
        self._tokens[rows, cols] = tokens.to(torch.int64)
        if pred_share is not None:
            if self._share is None:
                self._share = torch.full((self.n_prompts, self.prompt_len), float("nan"), dtype=torch.float64)
            self._share[rows, cols] = pred_share.to(torch.float64)

    def write_prompts(self, token_strings: Callable[[list[int]], list[str]]) -> dict[str, int]:
        """Write ``data/tokens.js`` (the strings of the token ids that occur, as one table; a prompt
        refers to a string by its index in it) and ``data/prompts/prompts-<p>.js`` (every prompt with a
        shown position, :data:`PROMPT_CHUNK_SIZE` per file). ``token_strings`` maps token ids (a list) to
        their strings. Returns the meta fields the viewer needs to read them."""
        import torch

        if self._tokens is None:
            self._tokens = torch.full((self.n_prompts, self.prompt_len), -1, dtype=torch.int64)
        tok = self._tokens
        used = torch.unique(tok[tok >= 0])
        strings = token_strings(used.tolist()) if used.numel() else []
        # the same encoder as the batch files' token strings (orjson), escaped for a script
        atomic_write_bytes(self.data / "tokens.js", f"tempolensTokens({js_literal_fast(list(strings))});\n".encode())
        local = torch.where(tok >= 0, torch.searchsorted(used, tok.clamp(min=0)), -1)
        shown = (tok >= 0).any(1).nonzero().squeeze(1).tolist()
        share = None
        if self._share is not None:
            from tempolens.dashboards.records import round_sig

            share = round_sig(self._share)
        (self.data / "prompts").mkdir(parents=True, exist_ok=True)
        chunks: dict[int, dict[str, Any]] = {}
        for p in shown:
            entry: dict[str, Any] = {"tokens": local[p].tolist()}
            if share is not None:
                entry["pred_share"] = [None if v != v else v for v in share[p].tolist()]
            chunks.setdefault(p // PROMPT_CHUNK_SIZE, {})[str(p)] = entry
        for c, body in chunks.items():
            path = self.data / "prompts" / f"prompts-{c}.js"
            atomic_write_bytes(path, f"tempolensPrompts({int(c)},{js_literal_fast(body)});\n".encode())
        return {"prompt_chunk_size": PROMPT_CHUNK_SIZE, "n_token_strings": int(used.numel())}

    def write_chunk(self, c: int, records: dict[int, dict[str, Any]]) -> Path:
        """Write the feature chunk ``c``: each record with its activations in the site's form
        (:func:`site_activation`)."""
        path = self.data / "features" / f"chunk-{c}.js"
        body = {str(k): site_record(v) for k, v in sorted(records.items())}
        atomic_write_bytes(path, f"tempolensFeatures({int(c)},{js_literal_fast(body)});\n".encode())
        return path

    def write_index(self, rows: list[list[Any]]) -> Path:
        """Write ``data/index.js`` (columns: :data:`INDEX_COLUMNS`)."""
        path = self.data / "index.js"
        atomic_write_bytes(path, js_call("tempolensIndex", {"columns": list(INDEX_COLUMNS), "rows": rows}))
        return path

    def write_meta(self, meta: dict[str, Any]) -> Path:
        """Write ``data/meta.js``."""
        path = self.data / "meta.js"
        atomic_write_bytes(path, js_call("tempolensMeta", meta))
        return path

    def write_autointerp(self, report: dict[str, Any]) -> Path:
        """Write ``data/autointerp.js`` (the autointerp report shown by the viewer)."""
        path = self.data / "autointerp.js"
        atomic_write_bytes(path, js_call("tempolensAutointerp", report))
        return path


def site_activation(a: Any) -> dict[str, Any]:
    """The site form of one activation of a record (a :class:`tempolens.dashboards.records.Activation`):
    :data:`SITE_ACTIVATION_KEYS`, the sparse ``values`` and, when the windows have them, ``pred_values``."""
    out = {  # the keys of SITE_ACTIVATION_KEYS, in order, as a literal (≈ 450k of these at 16k latents)
        "bin_min": a["bin_min"],
        "bin_max": a["bin_max"],
        "bin_contains": a["bin_contains"],
        "prompt_index": a["prompt_index"],
        "start": a.start,
        "qualifying_token_index": a["qualifying_token_index"],
        "values": a.site_values,
    }
    if a.site_pred is not None:
        out["pred_values"] = a.site_pred
    return out


def site_record(record: dict[str, Any]) -> dict[str, Any]:
    """The site form of a feature record: the same fields, activations in their :func:`site_activation` form."""
    out = dict(record)
    out["activations"] = [site_activation(a) for a in record["activations"]]
    return out


_JS_CALL = re.compile(r"([A-Za-z]+)\((?:(\d+),)?(.*)\);\n?", re.S)


def read_js_data(path: Path, function: str) -> tuple[int | None, Any]:
    """``(first argument or None, data)`` of a site data file ``function(<c>,<json>);`` or ``function(<json>);``
    (parsed as JSON, never executed); ``ValueError`` when the file is not such a call."""
    m = _JS_CALL.fullmatch(Path(path).read_text(encoding="utf-8"))
    if m is None or m.group(1) != function:
        raise ValueError(f"{path} is not a {function}(...) data file")
    return (int(m.group(2)) if m.group(2) is not None else None), json.loads(m.group(3))


def read_site_records(site: Path | str) -> dict[int, dict[str, Any]]:
    """Every feature record of a site folder with its activations decoded to the full form the viewer
    shows: ``tokens`` (strings), dense ``values``, ``pred_values`` and ``pred_share`` per window token
    (the layout's reader in Python, for checks and comparisons; the viewer decodes the same way)."""
    data = Path(site) / "data"
    _, meta = read_js_data(data / "meta.js", "tempolensMeta")
    _, strings = read_js_data(data / "tokens.js", "tempolensTokens")
    prompts: dict[str, Any] = {}
    for p in (data / "prompts").glob("prompts-*.js"):
        prompts.update(read_js_data(p, "tempolensPrompts")[1])
    length = int(meta["window_len"])
    out: dict[int, dict[str, Any]] = {}
    for path in sorted((data / "features").glob("chunk-*.js")):
        for key, rec in read_js_data(path, "tempolensFeatures")[1].items():
            rec["activations"] = [decode_activation(a, prompts, strings, length) for a in rec["activations"]]
            out[int(key)] = rec
    return out


def decode_activation(a: dict[str, Any], prompts: dict[str, Any], strings: list[str], length: int) -> dict[str, Any]:
    """One site activation (window of its ``length``, else ``length`` tokens) with its window's ``tokens``
    (strings), dense ``values`` (0 where not listed),
    ``pred_values`` (its ``fill`` where not listed) and the prompt's ``pred_share`` over the window."""
    prompt = prompts[str(a["prompt_index"])]
    lo, hi = a["start"], a["start"] + int(a.get("length", length))
    out = {k: a[k] for k in ("bin_min", "bin_max", "bin_contains", "qualifying_token_index", "prompt_index")}
    out["tokens"] = [strings[t] for t in prompt["tokens"][lo:hi]]
    values = [0.0] * len(out["tokens"])
    for pos, v in a["values"]:
        values[pos] = v
    out["values"] = values
    if "pred_values" in a:
        pred = [a["pred_values"]["fill"]] * len(out["tokens"])
        for pos, v in a["pred_values"]["at"]:
            pred[pos] = v
        out["pred_values"] = pred
    if "pred_share" in prompt:
        out["pred_share"] = prompt["pred_share"][lo:hi]
    return out


def load_autointerp(path: Path) -> dict[int, dict[str, Any]]:
    """Read an autointerp results file: JSON ``{"<latent>": {"explanation": str, "scores": {name: number}}}``.

    Parsed strictly (untrusted input stays data); raises ``ConfigError`` naming what is wrong.
    """
    from tempolens.errors import ConfigError

    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(
            f"--autointerp {path} is not a readable JSON file ({e}); pass a JSON object "
            f"{{latent: {{explanation, scores}}}}"
        ) from e
    if not isinstance(raw, dict):
        raise ConfigError(f"--autointerp {path} must hold a JSON object mapping latent ids to {{explanation, scores}}")
    out: dict[int, dict[str, Any]] = {}
    for key, val in raw.items():
        try:
            latent = int(key)
        except ValueError:
            raise ConfigError(f"--autointerp {path}: key {key!r} is not a latent id (an integer)") from None
        if not isinstance(val, dict):
            raise ConfigError(
                f"--autointerp {path}: the entry of latent {latent} must be an object with 'explanation' and 'scores'"
            )
        expl = val.get("explanation")
        if expl is not None and not isinstance(expl, str):
            raise ConfigError(f"--autointerp {path}: the explanation of latent {latent} must be a string")
        scores = val.get("scores") or {}
        if not isinstance(scores, dict) or not all(
            isinstance(k, str)
            and isinstance(v, (int, float))
            and not isinstance(v, bool)
            and v == v
            and abs(v) != float("inf")
            for k, v in scores.items()
        ):
            raise ConfigError(
                f"--autointerp {path}: the scores of latent {latent} must map scorer names to finite numbers"
            )
        out[latent] = {"explanation": expl, "scores": {k: float(v) for k, v in scores.items()}}
    return out
