"""The static site's data files (contract: ``docs/site-data.md``) and the copy of the viewer assets.

Every data file is a small script that calls a global function with a JSON literal, so the site opens
from ``file://`` with no server. :func:`js_literal` escapes ``<``, ``>``, ``&``, U+2028 and U+2029 so
no string from the data (token strings are untrusted) can end the script or break its parsing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tempolens.store.codestore import atomic_write_bytes

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


def viewer_assets_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "viewer" / "assets"


class SiteWriter:
    """Writes one site folder: ``index.html``, ``assets/``, ``data/meta.js``, ``data/index.js``,
    ``data/features/chunk-<c>.js``, optional ``data/autointerp.js``."""

    def __init__(self, root: Path, chunk_size: int):
        self.root = Path(root)
        self.chunk_size = int(chunk_size)
        self.data = self.root / "data"
        (self.data / "features").mkdir(parents=True, exist_ok=True)

    def copy_assets(self, src: Path | None = None) -> list[Path]:
        """Copy the viewer (whatever is in ``tempolens/viewer/assets``): ``index.html`` to the site root,
        everything else to ``assets/``."""
        src = Path(src) if src is not None else viewer_assets_dir()
        written: list[Path] = []
        if not src.is_dir():
            return written
        (self.root / "assets").mkdir(parents=True, exist_ok=True)
        for p in sorted(src.rglob("*")):
            if not p.is_file() or p.name.startswith("."):
                continue
            rel = p.relative_to(src)
            dest = self.root / rel.name if rel.as_posix() == "index.html" else self.root / "assets" / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(dest, p.read_bytes())
            written.append(dest)
        return written

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
