"""Logit effects of decoder directions: what each latent's direction writes into the vocabulary logits.

For latent ``i`` with decoder direction ``w_i`` the logit effect is ``W_U · (m ⊙ w_i)`` where ``m`` is
the final norm's per-dimension multiplier when folded in (``fold_norm``), else ``1``. Per latent we
keep the top and bottom ``k`` tokens and a histogram over the whole vocabulary.

Streaming: latents go in blocks, the vocabulary in chunks, so at most ``block × chunk`` logits exist at
once (never ``width × vocab``; Gemma's vocabulary has 262k tokens). The top/bottom-k and the min/max are
merged over vocab chunks in a first sweep; the histogram (whose bins span each latent's min..max)
needs a second sweep over the same chunks: when a block's ``block × vocab`` logits fit in
``memory_mb`` the chunks of the first sweep are kept for it (one matmul per chunk), otherwise they are
recomputed (two matmuls per chunk, less memory).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm


@dataclass
class LogitEffects:
    """Top/bottom logit effects and vocabulary histograms of every latent."""

    top_ids: Tensor
    """``[W, k]`` token ids with the largest effects, descending."""
    top_values: Tensor
    bottom_ids: Tensor
    """``[W, k]`` token ids with the smallest (most negative) effects, ascending."""
    bottom_values: Tensor
    hist_counts: Tensor
    """``[W, n_bins]`` number of vocabulary tokens per equal-width bin of ``[min, max]``."""
    hist_centres: Tensor
    """``[W, n_bins]`` bin centres."""
    folded_norm: bool
    """Whether the final norm's multiplier was folded into the directions."""


def _merge_topk(vals: Tensor, ids: Tensor, new_vals: Tensor, new_ids: Tensor, k: int, largest: bool) -> tuple[Tensor, Tensor]:
    v = torch.cat([vals, new_vals], 1)
    i = torch.cat([ids, new_ids], 1)
    # deterministic under ties: order by token id first, then a stable sort by value
    o = torch.argsort(i, dim=1, stable=True)
    v, i = v.gather(1, o), i.gather(1, o)
    o = torch.argsort(v, dim=1, stable=True, descending=largest)[:, :k]
    return v.gather(1, o), i.gather(1, o)


def logit_effects(
    W_dec: Tensor,
    W_U: Tensor,
    norm_multiplier: Tensor | None = None,
    *,
    k: int = 10,
    n_bins: int = 50,
    block: int | None = None,
    vocab_chunk: int = 32768,
    memory_mb: float = 256,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> LogitEffects:
    """Logit effects of every row of ``W_dec [width, d]`` through ``W_U [vocab, d]``.

    ``norm_multiplier [d]`` (the final norm's effective multiplier, e.g. Gemma's ``1 + w``) is folded
    into the directions when given. Histogram bins are equal-width over each latent's ``[min, max]``
    logit effect (right-closed, the first bin includes the min); matmuls run in float32 on ``device``.
    ``block`` latents per block (default: as many as keep ``block × vocab`` float32 logits within
    ``memory_mb``, between 16 and 1024).
    """
    dev = torch.device(device)
    Wd = W_dec.detach().to(dev, torch.float32)
    if norm_multiplier is not None:
        Wd = Wd * norm_multiplier.detach().to(dev, torch.float32).unsqueeze(0)
    U = W_U.detach().to(dev, torch.float32)
    width, V = Wd.shape[0], U.shape[0]
    kk = min(k, V)
    budget = int(memory_mb * 2**20)
    if block is None:
        block = max(16, min(1024, budget // max(1, V * 4)))
    keep_chunks = block * V * 4 <= budget
    chunks = [(s, min(V, s + vocab_chunk)) for s in range(0, V, vocab_chunk)]
    out = {name: [] for name in ("tv", "ti", "bv", "bi", "hc", "hm")}
    for b0 in tqdm(range(0, width, block), desc="logit effects", unit="block", disable=not progress, leave=False):
        w = Wd[b0 : b0 + block]
        B = w.shape[0]
        tv = torch.full((B, 0), 0.0, device=dev)
        ti = torch.zeros((B, 0), dtype=torch.int64, device=dev)
        bv, bi = tv.clone(), ti.clone()
        lo = torch.full((B,), float("inf"), device=dev)
        hi = torch.full((B,), float("-inf"), device=dev)
        kept: list[Tensor] = []
        for s, e in chunks:
            logits = w @ U[s:e].T  # [B, chunk]
            if keep_chunks:
                kept.append(logits)
            cv, ci = torch.topk(logits, min(kk, e - s), dim=1, largest=True)
            tv, ti = _merge_topk(tv, ti, cv, ci + s, kk, largest=True)
            cv, ci = torch.topk(logits, min(kk, e - s), dim=1, largest=False)
            bv, bi = _merge_topk(bv, bi, cv, ci + s, kk, largest=False)
            cmin, cmax = torch.aminmax(logits, dim=1)
            lo = torch.minimum(lo, cmin)
            hi = torch.maximum(hi, cmax)
        scale = (n_bins / (hi - lo).clamp(min=1e-30)).unsqueeze(1)
        counts = torch.zeros(B * n_bins, dtype=torch.int64, device=dev)
        row = (torch.arange(B, device=dev, dtype=torch.float32) * n_bins).unsqueeze(1)
        for ci_, (s, e) in enumerate(chunks):
            x = kept[ci_] if keep_chunks else w @ U[s:e].T
            # bin j = ceil((x - lo)·n/(hi - lo)) - 1, clamped (the min goes to bin 0); in place, chunk is ours
            x.sub_(lo.unsqueeze(1)).mul_(scale).ceil_().sub_(1).clamp_(0, n_bins - 1).add_(row)
            counts += torch.bincount(x.reshape(-1).to(torch.int64), minlength=B * n_bins)
        kept = []
        edges = lo.unsqueeze(1) + (hi - lo).unsqueeze(1) * (torch.arange(n_bins + 1, device=dev, dtype=torch.float32) / n_bins)
        out["tv"].append(tv.cpu()), out["ti"].append(ti.cpu()), out["bv"].append(bv.cpu()), out["bi"].append(bi.cpu())
        out["hc"].append(counts.view(B, n_bins).cpu()), out["hm"].append(((edges[:, :-1] + edges[:, 1:]) / 2).cpu())
    cat = {name: torch.cat(v) if v else torch.zeros(0) for name, v in out.items()}
    return LogitEffects(
        top_ids=cat["ti"], top_values=cat["tv"], bottom_ids=cat["bi"], bottom_values=cat["bv"],
        hist_counts=cat["hc"], hist_centres=cat["hm"], folded_norm=norm_multiplier is not None,
    )
