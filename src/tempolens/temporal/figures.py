"""Static figures of the temporal views (matplotlib, Agg backend, PNG).

- :func:`kernel_figure`: the kernels side by side on a diverging colour map centred at 0
  (:data:`KERNEL_CMAP`, fixed symmetric limits −1…+1: a mean-centred cosine is signed), event
  boundaries as dashed lines, tokens on the axes when the text is short;
- :func:`attention_figure`: one panel per attention layer and head (query token → context token);
- :func:`share_figure`: per-token stacked bars of the predicted and novel shares.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import PowerNorm  # noqa: E402

from tempolens.fsutil import atomic_write_bytes  # noqa: E402
from tempolens.temporal.analysis import KERNEL_LABELS, TextAnalysis  # noqa: E402
from tempolens.temporal.kernels import attention_vmax  # noqa: E402

TOKEN_LABEL_LIMIT = 48
"""Tokens are written along the axes when the text (BOS dropped) has at most this many tokens."""

PRED_COLOR = "#d9480f"
NOVEL_COLOR = "#1c7ed6"
BOUNDARY_COLOR = "#22d3ee"
"""Event boundaries: cyan stays visible on magma and on both ends of the diverging kernel map."""
KERNEL_CMAP = "RdBu_r"
"""Colour map of the similarity kernels: diverging, white at 0, red positive, blue negative."""
KERNEL_LIMITS = (-1.0, 1.0)
"""Symmetric colour limits of the kernels (cosine similarity), so 0 is the map's centre."""


def _label(tok: str, width: int = 12) -> str:
    t = tok.replace("\n", "⏎").replace("\t", "⇥")
    t = t if t.strip() else repr(t)[1:-1] or "·"
    t = t.replace("$", r"\$")  # matplotlib mathtext
    return t if len(t) <= width else t[: width - 1] + "…"


def save_png(fig: plt.Figure, path: Path | str, **savefig_kwargs: Any) -> Path:
    """Render ``fig`` as PNG (``savefig_kwargs`` passed on), close it, and write it atomically (folders
    created): every figure tempolens draws is saved through here."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", **savefig_kwargs)
    plt.close(fig)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _decorate(ax: plt.Axes, tokens: Sequence[str], boundaries: Sequence[int], square: bool = True) -> None:
    n = len(tokens)
    for b in boundaries:
        ax.axhline(b - 0.5, color=BOUNDARY_COLOR, lw=0.9, ls="--", alpha=0.9)
        if square:
            ax.axvline(b - 0.5, color=BOUNDARY_COLOR, lw=0.9, ls="--", alpha=0.9)
    if n <= TOKEN_LABEL_LIMIT:
        labels = [_label(t) for t in tokens]
        ax.set_xticks(range(n))
        ax.set_xticklabels(labels, rotation=90, fontsize=6)
        ax.set_yticks(range(n))
        ax.set_yticklabels(labels, fontsize=6)
    else:
        ax.set_xlabel("token position", fontsize=8)
        ax.set_ylabel("token position", fontsize=8)
        ax.tick_params(labelsize=7)


def kernel_figure(analysis: TextAnalysis, path: Path, kinds: Sequence[str] | None = None, dpi: int = 130) -> Path:
    """The kernels of ``analysis`` side by side as one PNG at ``path``."""
    kinds = [k for k in (kinds or KERNEL_LABELS) if k in analysis.kernels]
    tokens = analysis.shown_tokens
    n = len(tokens)
    size = 4.2 if n > TOKEN_LABEL_LIMIT else max(3.6, 0.11 * n + 1.5)
    fig, axes = plt.subplots(
        1, len(kinds), figsize=(size * len(kinds) + 0.8, size + 0.6), squeeze=False, layout="constrained"
    )
    im = None
    for ax, kind in zip(axes[0], kinds):
        im = ax.imshow(
            analysis.kernels[kind].numpy(),
            cmap=KERNEL_CMAP,
            vmin=KERNEL_LIMITS[0],
            vmax=KERNEL_LIMITS[1],
            interpolation="nearest",
        )
        ax.set_title(KERNEL_LABELS.get(kind, kind), fontsize=10)
        _decorate(ax, tokens, analysis.boundaries)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="cosine similarity of mean-centred codes (−1 … 0 … +1)")
    fig.suptitle(_title(analysis, "similarity kernels"), fontsize=10)
    return save_png(fig, path, dpi=dpi, bbox_inches="tight", facecolor="white")


def attention_figure(analysis: TextAnalysis, path: Path, dpi: int = 110) -> Path:
    """Attention weights per layer (rows) and head (columns); square-root colour scale from 0 to the
    99.5th percentile of the causal weights of all heads (stated on the colour bar)."""
    layers = analysis.attention
    n_layers, n_heads = len(layers), int(layers[0].shape[0]) if layers else 0
    tokens = analysis.shown_tokens
    n = len(tokens)
    size = 3.2 if n > TOKEN_LABEL_LIMIT else max(3.2, 0.1 * n + 1.4)
    fig, axes = plt.subplots(
        max(n_layers, 1),
        max(n_heads, 1),
        figsize=(size * max(n_heads, 1) + 0.8, size * max(n_layers, 1) + 0.6),
        squeeze=False,
        layout="constrained",
    )
    im = None
    vmax = attention_vmax(layers)
    for li, maps in enumerate(layers):
        sink = analysis.attention_sink[li]
        for h in range(n_heads):
            ax = axes[li][h]
            im = ax.imshow(
                maps[h].numpy(), cmap="magma", norm=PowerNorm(0.5, vmin=0.0, vmax=vmax), interpolation="nearest"
            )
            ax.set_title(f"layer {li} head {h} · start/BOS {float(sink[h].mean()):.2f}", fontsize=8)
            _decorate(ax, tokens, analysis.boundaries)
    if im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label=f"attention (√ scale, 0 → {vmax:.3g})")
    fig.suptitle(_title(analysis, "Temporal SAE attention: query token (row) → context token (column)"), fontsize=10)
    return save_png(fig, path, dpi=dpi, bbox_inches="tight", facecolor="white")


SHARE_ROW_TOKENS = 60
"""Tokens per row of the share figure; longer texts wrap onto more rows."""


def share_figure(analysis: TextAnalysis, path: Path, dpi: int = 120) -> Path:
    """Per-token stacked bars: predicted share (bottom) and novel share (top), wrapped into rows of
    :data:`SHARE_ROW_TOKENS` tokens with the tokens written under their bars."""
    tokens = analysis.shown_tokens
    share = analysis.pred_share.numpy()
    n = len(tokens)
    n_rows = max(1, -(-n // SHARE_ROW_TOKENS))
    per_row = min(n, SHARE_ROW_TOKENS) if n else 1
    width = max(6.0, 0.17 * per_row + 1.6)
    fig, axes = plt.subplots(n_rows, 1, figsize=(width, 2.3 * n_rows + 0.5), squeeze=False, layout="constrained")
    bounds = set(analysis.boundaries)
    for r in range(n_rows):
        ax = axes[r][0]
        lo, hi = r * per_row, min(n, (r + 1) * per_row)
        xs = list(range(hi - lo))
        ax.bar(xs, share[lo:hi], width=0.92, color=PRED_COLOR, label="predicted", linewidth=0)
        ax.bar(xs, 1 - share[lo:hi], bottom=share[lo:hi], width=0.92, color=NOVEL_COLOR, label="novel", linewidth=0)
        for b in bounds:
            if lo <= b < hi:
                ax.axvline(b - lo - 0.5, color="black", lw=1.2, ls="--")
        ax.set_xlim(-0.5, per_row - 0.5)
        ax.set_ylim(0, 1)
        ax.set_yticks([0, 0.5, 1])
        ax.tick_params(axis="y", labelsize=7)
        ax.set_xticks(xs)
        ax.set_xticklabels([_label(t) for t in tokens[lo:hi]], rotation=90, fontsize=6.5)
        ax.set_ylabel(f"{lo}–{hi - 1}", fontsize=7)
        if r == 0:
            ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=2, fontsize=7, frameon=False)
    fig.suptitle(
        _title(
            analysis,
            f"predicted vs novel share of the reconstruction (mean predicted {float(share.mean()) if n else 0:.2f})",
        ),
        fontsize=10,
    )
    return save_png(fig, path, dpi=dpi, bbox_inches="tight", facecolor="white")


def _title(analysis: TextAnalysis, what: str) -> str:
    m = analysis.meta
    where = f"{m.get('model_id', '')} {m.get('hook_name', '')}".strip()
    return f"{analysis.name}: {what}" + (f"  ({where}, {len(analysis.shown_tokens)} tokens)" if where else "")
