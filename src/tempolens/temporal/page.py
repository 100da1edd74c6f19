"""The kernel pages, the kernel index and the events page of a site (``<site>/kernels/``): data for the viewer.

Each page is a thin HTML shell (:func:`tempolens.dashboards.site.html_shell`, the site's one
Content-Security-Policy, no inline script or style) that loads the viewer's ``assets/temporal.js`` and
one data file ``kernels/data/*.js`` written through the site's one ``js_literal``; the viewer renders
every string from data with ``textContent`` or DOM properties, never ``innerHTML``, and the pages open
from disk (``file://``). PNG figures stay files, referenced by the data. Matrices travel as base64 of
little-endian uint16 (``value = lo + q·(hi − lo)/65535``, error ≤ 1.5e-5 on the kernel's [−1, 1] range),
so a 400-token text with a dozen matrices stays a few MB.

The same viewer (``TempolensKernels.render(root, data)`` in ``temporal.js``, ``data`` =
:func:`analysis_payload`) draws the static pages and the live page of :mod:`tempolens.serve`.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import Tensor

from tempolens.dashboards.site import html_shell, install_viewer, js_call
from tempolens.fsutil import atomic_write_bytes
from tempolens.temporal.analysis import KERNEL_LABELS, TextAnalysis
from tempolens.temporal.kernels import attention_vmax


def encode_matrix(m: Tensor, lo: float, hi: float) -> str:
    """Base64 of the matrix quantised to little-endian uint16 over ``[lo, hi]`` (values clipped)."""
    a = m.detach().float().cpu().numpy().astype(np.float64)
    q = np.rint((np.clip(a, lo, hi) - lo) / (hi - lo) * 65535.0).astype("<u2")
    return base64.b64encode(q.tobytes()).decode("ascii")


def decode_matrix(data: str, n: int, lo: float, hi: float) -> np.ndarray:
    """Inverse of :func:`encode_matrix` (for tests)."""
    q = np.frombuffer(base64.b64decode(data), dtype="<u2").astype(np.float64)
    return (lo + q * (hi - lo) / 65535.0).reshape(n, n)


def _cmap_hex(name: str = "magma") -> str:
    """256 colours of a matplotlib colour map as one hex string (``temporal.js`` holds those of magma and RdBu_r)."""
    from matplotlib import colormaps

    rgb = (colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(int)
    return "".join(f"{r:02x}{g:02x}{b:02x}" for r, g, b in rgb)


def _round(xs: Tensor | Sequence[float], nd: int = 4) -> list[float]:
    return [round(float(x), nd) for x in (xs.tolist() if isinstance(xs, Tensor) else xs)]


def _tops(top: tuple[Tensor, Tensor] | None) -> list[list[list[float]]] | None:
    if top is None:
        return None
    idx, val = top
    return [
        [[int(i), float(f"{float(v):.4g}")] for i, v in zip(ri, rv) if int(i) >= 0]
        for ri, rv in zip(idx.tolist(), val.tolist())
    ]


def analysis_payload(
    a: TextAnalysis, scores: dict[str, dict] | None = None, figures: dict[str, str] | None = None, title: str = ""
) -> dict:
    """The JSON object the viewer script draws: tokens, matrices, shares, top latents, scores."""
    mats: list[dict] = []
    n = len(a.shown_tokens)
    for kind in [k for k in KERNEL_LABELS if k in a.kernels] + [k for k in a.kernels if k not in KERNEL_LABELS]:
        mats.append(
            {
                "id": kind,
                "label": KERNEL_LABELS.get(kind, kind),
                "kind": "kernel",
                "lo": -1.0,
                "hi": 1.0,
                "data": encode_matrix(a.kernels[kind], -1.0, 1.0),
            }
        )
    vmax = attention_vmax(a.attention) if a.attention else 1.0
    for li, maps in enumerate(a.attention):
        for h in range(maps.shape[0]):
            mats.append(
                {
                    "id": f"attn-{li}-{h}",
                    "label": f"Attention layer {li} head {h}",
                    "kind": "attention",
                    "lo": 0.0,
                    "hi": 1.0,
                    "vmax": round(vmax, 5),
                    "data": encode_matrix(maps[h], 0.0, 1.0),
                    "sink": _round(a.attention_sink[li][h], 3),
                }
            )
    return {
        "name": a.name,
        "title": title or a.name,
        "n": n,
        "bos": a.tokens[0] if a.tokens else "",
        "tokens": a.shown_tokens,
        "boundaries": a.boundaries,
        "labels": a.labels.tolist() if a.labels is not None else None,
        "pred_share": _round(a.pred_share),
        "top_novel": _tops(a.top_novel),
        "top_sae": _tops(a.top_sae),
        "matrices": mats,
        "meta": a.meta,
        "scores": scores or {},
        "figures": figures or {},
    }


def slugify(name: str) -> str:
    """A file-name-safe slug (letters, digits, ``-``, ``_``)."""
    s = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")[:80]
    return s or "text"


def _meta_line(meta: dict) -> str:
    sae = meta.get("sae") or {}
    con = meta.get("contrast_sae") or {}
    parts = [
        f"model {meta.get('model_id', '?')}",
        str(meta.get("hook_name", "")),
        f"Temporal SAE width {sae.get('width', '?')} k {sae.get('k', '?')}",
    ]
    if con:
        parts.append(f"contrast {con.get('architecture', '?')} width {con.get('width', '?')} k {con.get('k', '?')}")
    parts.append(f"{meta.get('n_tokens', '?')} tokens incl. BOS")
    return " · ".join(p for p in parts if p)


COLLAPSE_SHARE = 0.9
"""At or above this top-1 variance share of the predicted codes, a kernel page says the predictor collapsed."""


def predictor_note(meta: dict) -> str:
    """One sentence on the predicted codes' top-1 variance share (empty when it is unknown): what the
    reader sees in the predicted-code kernel, said plainly when the predictor collapsed to one direction."""
    share = meta.get("pred_top_direction_share")
    if not isinstance(share, (int, float)) or share != share:
        return ""
    text = (
        f"The predicted codes of this text put {share:.1%} of their variance on one direction "
        f"(z_pred top-1 share {share:.3f}). "
    )
    if share >= COLLAPSE_SHARE:
        text += (
            "This predictor has collapsed to one direction: after removing their mean, every token's predicted "
            "code is that vector times a scalar, "
            "so the predicted-code kernel is mostly ±1 (a checkerboard of signs), not event blocks, and it says "
            "nothing about events in this text."
        )
    else:
        text += "Below 0.9 the predicted codes use several directions, so their kernel can show event blocks."
    return text


def _write_view(site: Path, name: str, page: str, title: str, function: str, data: dict) -> Path:
    """Write ``<site>/kernels/<name>.html`` (a shell of the viewer's ``page`` view) and its data file
    ``kernels/data/<name>.js`` (``page-<name>.js`` for a text's page) holding ``function(data);``; install
    the viewer assets into ``<site>/assets/``; return the page's path."""
    out = Path(site) / "kernels"
    (out / "data").mkdir(parents=True, exist_ok=True)
    install_viewer(site, pages=())
    data_name = name if page != "kernel" else f"page-{name}"
    atomic_write_bytes(out / "data" / f"{data_name}.js", js_call(function, data))
    path = out / f"{name}.html"
    shell = html_shell(title, page, assets="../assets/", scripts=[f"data/{data_name}.js"])
    atomic_write_bytes(path, shell.encode("utf-8"))
    return path


def write_kernel_page(site: Path, payload: dict) -> Path:
    """Write ``<site>/kernels/<slug>.html`` for one analysed text (data: ``kernels/data/page-<slug>.js``,
    the payload plus its meta line and predictor note); return the page's path."""
    meta = payload.get("meta", {})
    data = {**payload, "meta_line": _meta_line(meta), "predictor_note": predictor_note(meta)}
    return _write_view(site, slugify(payload["name"]), "kernel", "tempolens kernel page", "tempolensKernelPage", data)


def write_kernel_index(site: Path, entries: list[dict], events_summary: dict | None = None) -> Path:
    """Write ``<site>/kernels/index.html`` listing the texts (``entries``: name, title, n_tokens, scores)
    with their block contrast and boundary AUROC per kernel; it links the events page when there is one."""
    out = Path(site) / "kernels"
    kinds = [k for k in KERNEL_LABELS if any(k in (e.get("scores") or {}) for e in entries)]
    data = {
        "kinds": [{"id": k, "label": KERNEL_LABELS[k]} for k in kinds],
        "entries": [
            {
                "href": f"{slugify(e['name'])}.html",
                "title": e.get("title") or e["name"],
                "n_tokens": int(e.get("n_tokens", 0)),
                "scores": {k: v for k, v in (e.get("scores") or {}).items() if k in kinds},
            }
            for e in entries
        ],
        "events": bool(events_summary) or (out / "events.html").exists(),
    }
    return _write_view(site, "index", "kernel-index", "tempolens kernels", "tempolensKernelIndex", data)


def write_events_page(site: Path, data: dict) -> Path:
    """Write ``<site>/kernels/events.html``, the event-boundary check. ``data``: ``header`` (a sentence),
    ``summary`` and ``texts`` tables (``{"columns": [str], "rows": [[cell]]}``, a cell a string or
    ``{"text", "href"}`` for a link to a kernel page)."""
    return _write_view(site, "events", "events", "tempolens event-boundary check", "tempolensEvents", data)
