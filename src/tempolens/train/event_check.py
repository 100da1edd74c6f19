"""Does a Temporal SAE's predicted code carry event structure? Kernel statistics over many sequences.

For sequences with known event labels, compute the similarity kernel
(``tempolens.temporal.kernels.similarity_kernel``) of the predicted codes, the novel codes, a
contrast SAE's codes and the raw activations, and score each with the event statistics of
``tempolens.temporal.events``: block contrast (mean over sequences, with a percentile bootstrap CI
over sequences), the within- vs across-event AUROC of the kernel entries, and the boundary AUROC of
Foote novelty (pooled over sequences, bootstrap CI). Also the predicted share of the tokens inside
events (from their third token on) and at event starts, and the z_pred top-1 variance share.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from tempolens.saes.base import SAE
from tempolens.stats.estimators import bootstrap_units_ci
from tempolens.temporal.events import auroc, block_contrast, bootstrap_auroc_ci, novelty_samples, pooled_auroc
from tempolens.temporal.kernels import similarity_kernel

KINDS = ("pred", "novel", "twin", "raw")


@dataclass
class EventSequence:
    """One sequence: activations ``[L, d]`` in model units (position 0 = BOS) and event labels ``[L]``."""

    acts: Tensor
    labels: Tensor


def bootstrap_mean_ci(
    values: Sequence[float], n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile CI of the mean of ``values`` resampled with replacement (NaNs dropped; NaNs below two values)."""
    v = torch.tensor([x for x in values if not math.isnan(x)], dtype=torch.float64)
    return bootstrap_units_ci(v.numel(), lambda pick: float(v[pick].mean()), n_boot=n_boot, level=level, seed=seed)


def _pair_samples(S: Tensor, labels: Tensor, n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Up to ``n`` within-event and ``n`` across-event kernel entries (upper triangle, seeded draw).
    (Pooled over sequences, the entries are subsampled again to ``n`` each: ``auroc`` is O(n²).)"""
    iu = torch.triu_indices(len(labels), len(labels), 1)
    vals = S[iu[0], iu[1]]
    same = labels[iu[0]] == labels[iu[1]]
    w, a = vals[same], vals[~same]
    if w.numel() > n:
        w = w[torch.randperm(w.numel(), generator=g)[:n]]
    if a.numel() > n:
        a = a[torch.randperm(a.numel(), generator=g)[:n]]
    return w, a


@torch.no_grad()
def sequence_codes(sae: SAE, twin: SAE | None, acts: Tensor) -> tuple[dict[str, Tensor], Tensor]:
    """Dense codes ``[L, W]`` per kind for one sequence ``acts [L, d]``, and the per-token predicted share."""
    x = acts[None].to(sae.device if hasattr(sae, "device") else "cpu")
    det = sae.forward_details(x)  # type: ignore[attr-defined]
    out = {"pred": det.z_pred[0].float().cpu(), "novel": det.z_novel[0].float().cpu(), "raw": acts.float()}
    if twin is not None:
        out["twin"] = twin.encode(x).codes.to_dense(twin.width)[0].float().cpu()
    return out, det.pred_share[0].float().cpu()


def event_check(
    sae: SAE,
    twin: SAE | None,
    seqs: Sequence[EventSequence],
    half_width: int = 8,
    pair_samples: int = 3000,
    seed: int = 0,
) -> dict:
    """Event statistics of the predicted, novel, twin and raw kernels over ``seqs`` (see module doc)."""
    from tempolens.train.evaluation import zpred_top1_share

    g = torch.Generator().manual_seed(seed)
    per: dict[str, dict[str, list]] = {k: {"contrast": [], "within": [], "across": [], "novelty": []} for k in KINDS}
    share_in, share_start, zpred_rows = [], [], []
    for s in seqs:
        codes, share = sequence_codes(sae, twin, s.acts)
        lab = s.labels[1:]
        for kind, c in codes.items():
            S = similarity_kernel(c)
            per[kind]["contrast"].append(block_contrast(S, lab))
            w, a = _pair_samples(S, lab, pair_samples, g)
            per[kind]["within"].append(w)
            per[kind]["across"].append(a)
            per[kind]["novelty"].append(novelty_samples(S, lab, half_width))
        # position in event: 0 at each event start
        pos = torch.zeros_like(lab)
        for t in range(1, len(lab)):
            pos[t] = pos[t - 1] + 1 if lab[t] == lab[t - 1] else 0
        sh = share[1:]
        share_in.append(sh[pos >= 2])
        share_start.append(sh[pos == 0])
        zpred_rows.append(codes["pred"][1:])
    out: dict = {"n_sequences": len(seqs), "half_width": half_width}
    for kind in KINDS:
        p = per[kind]
        if not p["contrast"]:
            continue
        vals = [v for v in p["contrast"] if not math.isnan(v)]
        w_all, a_all = torch.cat(p["within"]), torch.cat(p["across"])
        w_all = w_all[torch.randperm(w_all.numel(), generator=g)[:pair_samples]]
        a_all = a_all[torch.randperm(a_all.numel(), generator=g)[:pair_samples]]
        wa = auroc(w_all, a_all)
        b_au, n_pos, n_neg = pooled_auroc(p["novelty"])
        out[kind] = {
            "block_contrast": sum(vals) / len(vals) if vals else math.nan,
            "block_contrast_ci95": list(bootstrap_mean_ci(vals, seed=seed)),
            "within_across_auroc": wa,
            "boundary_auroc": b_au,
            "boundary_auroc_ci95": list(bootstrap_auroc_ci(p["novelty"], seed=seed)),
            "n_boundaries": n_pos,
        }
    out["pred_share_inside_events"] = float(torch.cat(share_in).mean())
    out["pred_share_event_starts"] = float(torch.cat(share_start).mean())
    out["zpred_top1_share"] = zpred_top1_share(torch.cat(zpred_rows))
    return out


def kernel_images(sae: SAE, twin: SAE | None, seq: EventSequence, png, title: str = "") -> None:
    """One PNG with the predicted, novel, twin and raw kernels of ``seq`` side by side (magma, 0→1
    colour scale as on the kernel pages; dashed lines at the true event boundaries)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tempolens.temporal.events import boundary_positions
    from tempolens.temporal.figures import save_png

    codes, _ = sequence_codes(sae, twin, seq.acts)
    lab = seq.labels[1:]
    names = {
        "pred": "predicted codes (z_pred)",
        "novel": "novel codes (z_novel)",
        "twin": "TopK twin codes",
        "raw": "raw activations",
    }
    kinds = [k for k in KINDS if k in codes]
    fig, axes = plt.subplots(1, len(kinds), figsize=(3.3 * len(kinds), 3.5))
    for ax, k in zip(axes, kinds):
        S = similarity_kernel(codes[k])
        ax.imshow(S.clamp_min(0).numpy(), cmap="magma", vmin=0, vmax=1, interpolation="nearest")
        for b in boundary_positions(lab).tolist():
            ax.axhline(b - 0.5, color="#22d3ee", lw=0.8, ls="--")
            ax.axvline(b - 0.5, color="#22d3ee", lw=0.8, ls="--")
        ax.set_title(f"{names[k]}\ncontrast {block_contrast(S, lab):.3f}", fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_png(fig, png, dpi=80)
