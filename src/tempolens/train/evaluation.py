"""Evaluating SAEs during and after training: held-out reconstruction, learning curves, diagnostics.

``evaluate_sae`` measures a finished SAE on a split of an activation source (NMSE against the
mean-centred variance, the same over the typical tokens — ``trimmed_`` — L0, dead latents, and for a
Temporal SAE the predicted share and the novel-only / predicted-only NMSE). ``curve_metrics`` gives
the learning-curve numbers on a fixed held-out batch; ``read_log`` / ``plot_learning_curves`` read
and draw ``train_log.jsonl``. ``summed_mse`` and ``loss_mask`` define the training loss, which the
held-out curve reports too.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tempolens.errors import SourceError
from tempolens.saes.base import SAE, SparseCodes
from tempolens.train.activations_cache import ActivationSource, iter_split


def summed_mse(recon: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean over unmasked tokens of ‖recon − target‖² (summed over the feature dimension)."""
    err = (recon.float() - target.float()).pow(2).sum(-1)
    m = mask.to(err.dtype)
    return (err * m).sum() / m.sum().clamp_min(1.0)


def loss_mask(x: Tensor, special: Tensor, norm_cap: float | None) -> Tensor:
    """Tokens in the loss: regular (not BOS/EOS/pad) and, with a cap, ``‖x‖ ≤ norm_cap``."""
    m = ~special
    if norm_cap is not None:
        m = m & (x.norm(dim=-1) <= norm_cap)
    return m


def zpred_top1_share(z_pred: Tensor) -> float:
    """Share of the mean-centred variance of ``z_pred [n, width]`` on its first principal direction."""
    x = z_pred.double()
    if x.shape[0] < 2:
        return math.nan
    x = x - x.mean(0)
    sv = torch.linalg.svdvals(x).pow(2)
    tot = float(sv.sum())
    return float(sv[0] / tot) if tot > 0 else math.nan


def attention_entropy(maps: list[Tensor], mask: Tensor) -> tuple[float, float]:
    """``(mean entropy in nats, mean entropy of uniform causal attention)`` over heads, layers and the
    query tokens in ``mask [B, L]`` (a query at position t sees t + 1 keys)."""
    ents, unif = [], []
    L = mask.shape[1]
    log_n = torch.log(torch.arange(1, L + 1, dtype=torch.float64, device=mask.device))
    for w in maps:
        e = -(w.double().clamp_min(1e-30).log() * w.double()).sum(-1).mean(1)  # [B, L]
        ents.append(float(e[mask].mean()))
        unif.append(float(log_n.expand_as(e)[mask].mean()))
    return sum(ents) / len(ents), sum(unif) / len(unif)


def median_row_cosine(W: Tensor, W0: Tensor) -> float:
    """Median over rows of cos(W_j, W0_j)."""
    c = F.cosine_similarity(W.float(), W0.float().to(W.device), dim=-1)
    return float(c.median())


def decoder_matrix(sae: nn.Module) -> Tensor:
    """The decoder matrix ``[width, d_in]`` whose rows are the latents' directions (D or W_dec)."""
    return sae.D if getattr(sae, "is_temporal", False) else sae.W_dec  # type: ignore[return-value]


def curve_batch(source: ActivationSource, curve_prompts: int) -> tuple[Tensor, Tensor] | None:
    """The fixed held-out batch of the learning curves (None without a held-out split)."""
    ids = source.spec.split_ids("heldout")[:curve_prompts]
    return source.fetch(ids) if len(ids) else None


@torch.no_grad()
def curve_metrics(
    sae: nn.Module,
    batch: tuple[Tensor, Tensor],
    scale: float,
    norm_threshold: float | None,
    dec_init: Tensor,
    device: torch.device,
) -> dict[str, float]:
    """Learning-curve numbers on a fixed held-out batch: summed-MSE loss (scaled units, in-loss tokens),
    the median cosine of the decoder rows to their init, and for a Temporal SAE the mean attention
    entropy (and its uniform reference) and the z_pred top-1 variance share."""
    acts, special = batch
    x = acts.to(device)
    mask = loss_mask(x, special.to(device), norm_threshold)
    out: dict[str, float] = {"d_cos_init_median": median_row_cosine(decoder_matrix(sae), dec_init)}
    if getattr(sae, "is_temporal", False):
        fo = sae.forward_train(x, return_attn=True)  # type: ignore[operator]
        out["loss"] = float(summed_mse(fo.recon, x * scale, mask))
        out["attn_entropy"], out["attn_entropy_uniform"] = attention_entropy(fo.attn, mask)
        out["zpred_top1_share"] = zpred_top1_share(fo.z_pred[mask])
        r_pred = fo.z_pred @ sae.D  # type: ignore[operator]
        r_nov = fo.recon - r_pred - sae.b.reshape(-1)  # type: ignore[operator]
        from tempolens.saes.temporal import predicted_share

        out["pred_share_token_mean"] = float(predicted_share(r_pred, r_nov)[mask].mean())
    else:
        xs = x * scale
        recon, _, _ = sae.forward_scaled(xs.reshape(-1, xs.shape[-1]))  # type: ignore[operator]
        out["loss"] = float(summed_mse(recon, xs.reshape(-1, xs.shape[-1]), mask.reshape(-1)))
    return out


def read_log(path: Path) -> tuple[list[dict], list[dict]]:
    """``(step lines, curve lines)`` of a ``train_log.jsonl``."""
    steps, curves = [], []
    if Path(path).exists():
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            (curves if "curve" in rec else steps).append(rec)
    return steps, curves


def plot_learning_curves(log_path: Path, png: Path, title: str = "") -> Path:
    """A PNG of the training loss and the held-out curve metrics of ``log_path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tempolens.temporal.figures import save_png

    steps, curves = read_log(log_path)
    panels = [
        ("training loss (summed MSE, scaled)", [(steps, "mse", "train"), (curves, "loss", "held-out")], True),
        ("D rows: median cos to init", [(curves, "d_cos_init_median", "")], False),
        (
            "attention entropy (nats)",
            [(curves, "attn_entropy", "SAE"), (curves, "attn_entropy_uniform", "uniform")],
            False,
        ),
        ("z_pred top-1 variance share", [(curves, "zpred_top1_share", "")], False),
    ]
    panels = [p for p in panels if any(any(k in (r.get("curve", r)) for r in rows) for rows, k, _ in p[1])]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
    axes = [axes] if len(panels) == 1 else list(axes)
    for ax, (name, series, logy) in zip(axes, panels):
        for rows, key, label in series:
            pts = [(r["step"], r.get("curve", r)[key]) for r in rows if r.get("curve", r).get(key) is not None]
            if pts:
                ax.plot(*zip(*pts), label=label or None, marker="." if rows is curves else None)
        if logy:
            ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step")
        if any(lbl for _, _, lbl in series):
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_png(fig, png, dpi=90)
    return Path(png)


class _ReconSums:
    """Float64 sums over a set of tokens from which the evaluation ratios are read."""

    def __init__(self, d: int) -> None:
        self.n = 0
        self.sum_x = torch.zeros(d, dtype=torch.float64)
        self.sum_sq = 0.0
        self.err = 0.0
        self.err_novel = 0.0
        self.err_pred = 0.0
        self.pred_sq = 0.0
        self.novel_sq = 0.0
        self.share_sum = 0.0

    def update(
        self,
        x: Tensor,
        recon: Tensor,
        novel: Tensor | None = None,
        pred: Tensor | None = None,
        bias: Tensor | None = None,
        share: Tensor | None = None,
    ) -> None:
        """``x``/``recon`` ``[n, d]`` (model units); Temporal: ``novel``/``pred`` reconstructions without bias."""
        x = x.double()
        self.n += x.shape[0]
        self.sum_x += x.sum(0).cpu()
        self.sum_sq += float(x.pow(2).sum())
        self.err += float((x - recon.double()).pow(2).sum())
        if novel is not None and pred is not None and bias is not None and share is not None:
            b = bias.double()
            self.err_novel += float((x - novel.double() - b).pow(2).sum())
            self.err_pred += float((x - pred.double() - b).pow(2).sum())
            self.pred_sq += float(pred.double().pow(2).sum())
            self.novel_sq += float(novel.double().pow(2).sum())
            self.share_sum += float(share.double().sum())

    def result(self, temporal: bool, prefix: str = "") -> dict[str, float]:
        if self.n == 0:
            return {}
        mu = self.sum_x / self.n
        centred = self.sum_sq - self.n * float(mu.pow(2).sum())
        out = {"nmse": self.err / centred, "fve": 1.0 - self.err / centred, "nmse_plain": self.err / self.sum_sq}
        if temporal:
            out |= {
                "pred_share": self.pred_sq / max(self.pred_sq + self.novel_sq, 1e-300),
                "pred_share_token_mean": self.share_sum / self.n,
                "nmse_novel_only": self.err_novel / centred,
                "nmse_pred_only": self.err_pred / centred,
            }
        return {prefix + k: v for k, v in out.items()}


def _trim_threshold(source: ActivationSource, split: str, batch_prompts: int, trim_quantile: float) -> float:
    """Pass 1 (activations only): the ``trim_quantile`` quantile of the regular tokens' norms ‖x‖ on ``split``."""
    norms = torch.cat([acts[~special].norm(dim=-1) for acts, special in iter_split(source, split, batch_prompts)])
    if norms.numel() == 0:
        raise SourceError(f"the {split} split has no regular tokens to evaluate on")
    return float(torch.quantile(norms.double(), trim_quantile))


def _add_batch(sae: SAE, x: Tensor, m: Tensor, keep: Tensor, every: _ReconSums, trimmed: _ReconSums) -> SparseCodes:
    """Encode one batch ``x`` and add its reconstruction sums: the regular tokens ``m`` to ``every``, those
    also in ``keep`` to ``trimmed`` (Temporal SAEs: also the novel-only/predicted-only sums). Returns its codes."""
    if getattr(sae, "is_temporal", False):
        det = sae.forward_details(x)  # type: ignore[attr-defined]
        b = sae.b_dec.to(x.dtype)  # type: ignore[attr-defined]
        for sums, sel in ((every, m), (trimmed, keep)):
            sums.update(x[sel], det.recon[sel], det.recon_novel[sel], det.recon_pred[sel], b, det.pred_share[sel])
        return det.codes
    enc = sae.encode(x)
    for sums, sel in ((every, m), (trimmed, keep)):
        sums.update(x[sel], enc.recon[sel])
    return enc.codes


@dataclass(frozen=True)
class _SplitSums:
    """What pass 2 accumulates over a split."""

    every: _ReconSums
    """Reconstruction sums over every regular token."""
    trimmed: _ReconSums
    """The same over the regular tokens with ‖x‖ at most the trim threshold."""
    l0_sum: float
    """Active codes summed over the regular tokens."""
    fired: Tensor
    """``[width]`` bool: latents that fired on at least one regular token."""


def _reconstruction_pass(
    sae: SAE, source: ActivationSource, split: str, batch_prompts: int, threshold: float, progress: bool
) -> _SplitSums:
    """Pass 2: encode every prompt of ``split`` and accumulate the reconstruction and sparsity sums."""
    from tqdm.auto import tqdm

    device = sae.device
    every, trimmed = _ReconSums(sae.d_in), _ReconSums(sae.d_in)
    l0_sum = 0.0
    fired = torch.zeros(sae.width, dtype=torch.bool)
    bar = tqdm(
        total=len(source.spec.split_ids(split)),
        desc=f"evaluate on {split}",
        unit="prompt",
        disable=not progress,
        leave=False,
    )
    for acts, special in iter_split(source, split, batch_prompts):
        x = acts.to(device)
        m = ~special.to(device)
        keep = m & (x.norm(dim=-1) <= threshold)
        codes = _add_batch(sae, x, m, keep, every, trimmed)
        idx = codes.indices[m]
        l0_sum += float((idx >= 0).sum())
        fired[idx[idx >= 0].cpu()] = True
        bar.update(acts.shape[0])
    bar.close()
    return _SplitSums(every, trimmed, l0_sum, fired)


@torch.no_grad()
def evaluate_sae(
    sae: SAE,
    source: ActivationSource,
    split: str = "heldout",
    batch_prompts: int = 8,
    progress: bool = False,
    trim_quantile: float = 0.99,
) -> dict:
    """Reconstruction and sparsity of ``sae`` on ``split`` of ``source`` (regular tokens only).

    Returns (all sums in float64, model units):

    - ``nmse`` = Σ‖x − x̂‖² / Σ‖x − μ‖² (μ = mean activation of the split): NMSE against the
      mean-centred variance; ``fve`` = 1 − ``nmse`` (fraction of variance explained);
    - ``nmse_plain`` = Σ‖x − x̂‖² / Σ‖x‖² (against the raw second moment; flattering on Gemma 3,
      whose mean vector is almost as long as a typical token);
    - the same ratios with prefix ``trimmed_`` over the tokens whose norm ‖x‖ is at most the
      ``trim_quantile`` quantile of the split: on Gemma 3 block 9 ≈1% of tokens carry a massive
      activation (one dimension up to ≈8e4) and hold ≈87% of the centred variance, so the pooled
      NMSE mostly measures those few tokens; the trimmed NMSE describes the typical token;
    - ``l0`` mean active codes per token; ``dead_fraction``: latents that never fire on the split;
    - Temporal SAEs also: ``pred_share`` (Σ‖r_pred‖² / Σ(‖r_pred‖² + ‖r_novel‖²), pooled) and
      ``pred_share_token_mean``; ``nmse_novel_only`` (reconstruct from ``z_novel·D + b`` alone) and
      ``nmse_pred_only`` (``z_pred·D + b``), both against the mean-centred variance.
    """
    temporal = bool(getattr(sae, "is_temporal", False))
    ids = source.spec.split_ids(split)
    threshold = _trim_threshold(source, split, batch_prompts, trim_quantile)
    sums = _reconstruction_pass(sae, source, split, batch_prompts, threshold, progress)
    every, trimmed = sums.every, sums.trimmed
    n = every.n
    mu = every.sum_x / n
    out: dict[str, Any] = {
        "split": split,
        "n_prompts": len(ids),
        "n_tokens": n,
        **every.result(temporal),
        "mse_per_token": every.err / n,
        "variance_per_token": (every.sum_sq - n * float(mu.pow(2).sum())) / n,
        "mean_sq_norm_per_token": every.sum_sq / n,
        "mean_vector_sq_norm": float(mu.pow(2).sum()),
        "trim_quantile": trim_quantile,
        "trim_norm_threshold": threshold,
        "trimmed_n_tokens": trimmed.n,
        **trimmed.result(temporal, prefix="trimmed_"),
        "l0": sums.l0_sum / n,
        "dead_fraction": float((~sums.fired).float().mean()),
        "n_dead": int((~sums.fired).sum()),
        "width": sae.width,
        "architecture": getattr(sae, "architecture", "sae"),
    }
    return out
