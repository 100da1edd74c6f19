"""Mergeable per-latent accumulators over a code store.

Every accumulator has ``update(shard)``, ``merge(other)`` and ``result()``; all work is vectorised
over latents with torch (scatter / segment ops, sort-based per-latent selection), and nothing ever
holds ``[tokens × width]`` dense.

Positions are *global*: ``gpos = prompt_id * prompt_len + t``. Everything an accumulator keeps is
keyed by ``gpos`` (never by shard-local offsets), and every choice it makes (top-k ties, random
samples) is a function of ``(seed, gpos, latent)`` only, so merging the accumulators of any split of
the store into shards gives exactly the result of one pass.

Pass 1 (:class:`CountsAccumulator`, :class:`TopKAccumulator`) needs nothing; pass 2
(:class:`HistogramAccumulator`, :class:`IntervalSampler`) needs each latent's maximum from pass 1;
the co-activation sums for correlations are in :mod:`tempolens.stats.correlations`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from tempolens.store.codestore import Shard

_I64_MAX = (1 << 63) - 1


# ----------------------------------------------------------------------------------------- inputs
@dataclass
class CodeBatch:
    """The statistics view of one shard: the codes at counted (non-special) tokens, flattened.

    ``gpos`` is the global token position ``prompt_id * prompt_len + t`` of every code.
    """

    latent: Tensor
    """``[n]`` int64 latent ids."""
    value: Tensor
    """``[n]`` float32 activations (> 0)."""
    gpos: Tensor
    """``[n]`` int64 global token positions."""
    n_tokens: int
    """Counted tokens in the shard (BOS/EOS/pad excluded)."""
    pred: Tensor | None = None
    """``[n]`` float32 predicted code of the same latent at the same token (Temporal SAEs)."""
    pred_share: Tensor | None = None
    """``[n]`` float32 predicted share of the code's token (Temporal SAEs)."""

    @classmethod
    def from_shard(cls, shard: Shard, codes: str = "novel", pred_sign: float = 1.0) -> CodeBatch:
        """``codes="novel"``: the shard's codes (a Temporal SAE's novel codes). ``codes="pred"``: its
        stored predicted codes read in the store's orientation (``pred_sign``, :attr:`CodeStore.pred_sign`),
        ``pred_sign · z_pred > 0`` only (the latent is predicted along its oriented direction; predictions
        of the other sign are never ranked or counted), with ``pred = None``."""
        T = shard.prompt_len
        valid_tok = shard.valid_mask().reshape(-1)
        gtok = shard.prompt_ids.to(torch.int64).repeat_interleave(T) * T + torch.arange(T, dtype=torch.int64).repeat(
            shard.n_prompts
        )
        share = shard.extras.get("pred_share")
        if codes == "pred":
            tok = shard.pred_token()
            assert shard.pred_latent is not None and shard.pred_value is not None
            if pred_sign not in (1.0, -1.0):
                raise ValueError(f"pred_sign must be 1 or -1; got {pred_sign!r}")
            oriented = shard.pred_value.to(torch.float32) * pred_sign
            keep = valid_tok[tok] & (oriented > 0)
            tok = tok[keep]
            return cls(
                latent=shard.pred_latent[keep].to(torch.int64),
                value=oriented[keep],
                gpos=gtok[tok],
                n_tokens=int(valid_tok.sum()),
                pred=None,
                pred_share=share.reshape(-1).to(torch.float32)[tok] if share is not None else None,
            )
        if codes != "novel":
            raise ValueError(f"codes must be 'novel' or 'pred'; got {codes!r}")
        tok = shard.code_token()
        keep = valid_tok[tok]
        tok = tok[keep]
        pred = shard.code_extras.get("pred")
        return cls(
            latent=shard.code_latent[keep].to(torch.int64),
            value=shard.code_value[keep].to(torch.float32),
            gpos=gtok[tok],
            n_tokens=int(valid_tok.sum()),
            pred=pred[keep].to(torch.float32) if pred is not None else None,
            pred_share=share.reshape(-1).to(torch.float32)[tok] if share is not None else None,
        )


ShardLike = Shard | CodeBatch


def as_batch(x: ShardLike) -> CodeBatch:
    return x if isinstance(x, CodeBatch) else CodeBatch.from_shard(x)


# ---------------------------------------------------------------------------------- small helpers
def _srl(x: Tensor, s: int) -> Tensor:
    """Logical right shift of int64."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def _signed(c: int) -> int:
    return c - (1 << 64) if c >= 1 << 63 else c


_M1 = _signed(0xBF58476D1CE4E5B9)
_M2 = _signed(0x94D049BB133111EB)
_GOLDEN = _signed(0x9E3779B97F4A7C15)


def mix64(x: Tensor) -> Tensor:
    """SplitMix64 finaliser on int64 tensors (wrap-around arithmetic): a fixed pseudo-random bijection."""
    x = x.to(torch.int64)
    x = x ^ _srl(x, 30)
    x = x * _M1
    x = x ^ _srl(x, 27)
    x = x * _M2
    return x ^ _srl(x, 31)


def sample_keys(seed: int, gpos: Tensor, latent: Tensor, width: int) -> Tensor:
    """Reservoir keys: a hash of ``(seed, global position, latent)``; smallest keys are kept.

    A function of the code alone, so the selected samples do not depend on sharding or order.
    """
    s = mix64(torch.tensor([int(seed) & _I64_MAX], dtype=torch.int64) + _GOLDEN)
    return mix64(gpos.to(torch.int64) * int(width) + latent.to(torch.int64) + s)


def select_per_group(
    group: Tensor, primary: Tensor, secondary: Tensor, k: int, n_groups: int, descending: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """The ``k`` best entries of every group, deterministic under ties.

    Order within a group: ``primary`` (descending or ascending), then ``secondary`` ascending.
    Returns ``(idx, group, rank)`` of the kept entries (indices into the inputs), sorted by group then rank.
    """
    if group.numel() == 0:
        e = torch.zeros(0, dtype=torch.int64)
        return e, e, e
    order = torch.argsort(secondary, stable=True)
    p = primary[order]
    order = order[torch.argsort(p, stable=True, descending=descending)]
    order = order[torch.argsort(group[order], stable=True)]
    g = group[order]
    counts = torch.bincount(g, minlength=n_groups)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(g.numel(), dtype=torch.int64) - starts[g]
    keep = rank < k
    return order[keep], g[keep], rank[keep]


def bin_index(value: Tensor, hi: Tensor, n_bins: int) -> Tensor:
    """Equal-width bin of ``value`` in ``(0, hi]`` split into ``n_bins``: bin ``i`` is ``(hi·i/n, hi·(i+1)/n]``.

    ``hi`` is the per-entry upper end (the latent's max). Values above ``hi`` go to the last bin.
    Edges are computed exactly as :func:`bin_edges` does, so a value on an edge falls into the lower bin.
    """
    hi = hi.to(torch.float32)
    v = value.to(torch.float32)
    safe = torch.where(hi > 0, hi, torch.ones_like(hi))
    j = (torch.ceil(v * n_bins / safe) - 1).clamp(0, n_bins - 1).to(torch.int64)
    lo_edge = safe * (j.to(torch.float32) / n_bins)
    hi_edge = safe * ((j + 1).to(torch.float32) / n_bins)
    j = torch.where((v <= lo_edge) & (j > 0), j - 1, j)
    j = torch.where((v > hi_edge) & (j < n_bins - 1), j + 1, j)
    return j


def bin_edges(hi: Tensor, n_bins: int) -> Tensor:
    """``[..., n_bins + 1]`` equal-width edges of ``(0, hi]``."""
    steps = torch.arange(n_bins + 1, dtype=torch.float32) / n_bins
    return hi.to(torch.float32).unsqueeze(-1) * steps


# ------------------------------------------------------------------------------------ pass 1
class CountsAccumulator:
    """Per latent: ``n_active``, ``sum``, ``sum_sq``, ``max`` (over counted tokens), and ``n_tokens``."""

    def __init__(self, width: int):
        self.width = int(width)
        self.n_tokens = 0
        self.n_active = torch.zeros(width, dtype=torch.int64)
        self.sum = torch.zeros(width, dtype=torch.float64)
        self.sum_sq = torch.zeros(width, dtype=torch.float64)
        self.max = torch.zeros(width, dtype=torch.float32)

    def update(self, shard: ShardLike) -> None:
        b = as_batch(shard)
        self.n_tokens += b.n_tokens
        self.n_active += torch.bincount(b.latent, minlength=self.width)
        v = b.value.to(torch.float64)
        self.sum.index_add_(0, b.latent, v)
        self.sum_sq.index_add_(0, b.latent, v * v)
        self.max.scatter_reduce_(0, b.latent, b.value, reduce="amax")

    def merge(self, other: CountsAccumulator) -> None:
        self.n_tokens += other.n_tokens
        self.n_active += other.n_active
        self.sum += other.sum
        self.sum_sq += other.sum_sq
        self.max = torch.maximum(self.max, other.max)

    def result(self) -> dict[str, Tensor | int]:
        n = max(self.n_tokens, 1)
        return {
            "n_tokens": self.n_tokens,
            "n_active": self.n_active.clone(),
            "sum": self.sum.clone(),
            "sum_sq": self.sum_sq.clone(),
            "max": self.max.clone(),
            "frac_nonzero": self.n_active.to(torch.float64) / n,
            "mean_active": torch.where(
                self.n_active > 0, self.sum / self.n_active.clamp(min=1), torch.zeros_like(self.sum)
            ),
        }


class TopKAccumulator:
    """The ``k`` largest activations of every latent (value descending, then global position ascending).

    Keeps, per kept example, the value, the global position, and (Temporal SAEs) the code's predicted
    value and the token's predicted share. Empty slots have ``gpos = -1`` and ``value = 0``.
    """

    def __init__(self, width: int, k: int = 20):
        self.width, self.k = int(width), int(k)
        self.value = torch.zeros(width, k, dtype=torch.float32)
        self.gpos = torch.full((width, k), -1, dtype=torch.int64)
        self.pred = torch.full((width, k), float("nan"), dtype=torch.float32)
        self.pred_share = torch.full((width, k), float("nan"), dtype=torch.float32)

    def _threshold(self) -> Tensor:
        """Per latent: the k-th kept value (0 while fewer than k are kept)."""
        return torch.where(self.gpos[:, -1] >= 0, self.value[:, -1], torch.zeros(self.width))

    def _absorb(self, latent: Tensor, value: Tensor, gpos: Tensor, pred: Tensor, share: Tensor) -> None:
        filled = self.gpos >= 0
        rows = torch.arange(self.width).unsqueeze(1).expand(-1, self.k)[filled]
        lat = torch.cat([rows, latent])
        val = torch.cat([self.value[filled], value])
        gp = torch.cat([self.gpos[filled], gpos])
        pr = torch.cat([self.pred[filled], pred])
        sh = torch.cat([self.pred_share[filled], share])
        idx, g, r = select_per_group(lat, val, gp, self.k, self.width, descending=True)
        self.value.zero_()
        self.gpos.fill_(-1)
        self.pred.fill_(float("nan"))
        self.pred_share.fill_(float("nan"))
        self.value[g, r] = val[idx]
        self.gpos[g, r] = gp[idx]
        self.pred[g, r] = pr[idx]
        self.pred_share[g, r] = sh[idx]

    def update(self, shard: ShardLike) -> None:
        b = as_batch(shard)
        keep = b.value >= self._threshold()[b.latent]  # candidates only: ties kept for the position tiebreak
        nan = torch.full((int(keep.sum()),), float("nan"))
        self._absorb(
            b.latent[keep],
            b.value[keep],
            b.gpos[keep],
            b.pred[keep] if b.pred is not None else nan,
            b.pred_share[keep] if b.pred_share is not None else nan,
        )

    def merge(self, other: TopKAccumulator) -> None:
        m = other.gpos >= 0
        rows = torch.arange(self.width).unsqueeze(1).expand(-1, self.k)[m]
        self._absorb(rows, other.value[m], other.gpos[m], other.pred[m], other.pred_share[m])

    def result(self) -> dict[str, Tensor]:
        return {
            "value": self.value.clone(),
            "gpos": self.gpos.clone(),
            "pred": self.pred.clone(),
            "pred_share": self.pred_share.clone(),
        }


# ------------------------------------------------------------------------------------ pass 2
class HistogramAccumulator:
    """``n_bins`` equal-width bins over ``(0, max]`` of every latent's nonzero activations."""

    def __init__(self, max_act: Tensor, n_bins: int = 50):
        self.max_act = max_act.to(torch.float32).clone()
        self.width, self.n_bins = int(max_act.numel()), int(n_bins)
        self.counts = torch.zeros(self.width * self.n_bins, dtype=torch.int64)

    def update(self, shard: ShardLike) -> None:
        b = as_batch(shard)
        j = bin_index(b.value, self.max_act[b.latent], self.n_bins)
        self.counts += torch.bincount(b.latent * self.n_bins + j, minlength=self.width * self.n_bins)

    def merge(self, other: HistogramAccumulator) -> None:
        if not torch.equal(self.max_act, other.max_act):
            raise ValueError("histograms over different ranges cannot be merged")
        self.counts += other.counts

    def result(self) -> dict[str, Tensor]:
        edges = bin_edges(self.max_act, self.n_bins)
        return {
            "counts": self.counts.view(self.width, self.n_bins).clone(),
            "edges": edges,
            "centres": (edges[:, :-1] + edges[:, 1:]) / 2,
        }


class IntervalSampler:
    """Equal-width activation intervals over ``(0, max]`` with seeded random examples in each.

    Only nonzero activations are binned (the lowest interval never holds zeros), and ``counts``
    are numbers of active tokens, so ``counts / n_active`` is the share of *active* tokens in each
    interval. Samples are the ``n_per`` codes with the smallest :func:`sample_keys` per
    ``(latent, interval)``: deterministic for a seed and independent of sharding.
    """

    def __init__(self, max_act: Tensor, n_intervals: int = 5, n_per: int = 5, seed: int = 0):
        self.max_act = max_act.to(torch.float32).clone()
        self.width = int(max_act.numel())
        self.n_int, self.n_per, self.seed = int(n_intervals), int(n_per), int(seed)
        G = self.width * self.n_int
        self.counts = torch.zeros(G, dtype=torch.int64)
        self.key = torch.full((G, self.n_per), _I64_MAX, dtype=torch.int64)
        self.value = torch.zeros(G, self.n_per, dtype=torch.float32)
        self.gpos = torch.full((G, self.n_per), -1, dtype=torch.int64)
        self.pred = torch.full((G, self.n_per), float("nan"), dtype=torch.float32)
        self.pred_share = torch.full((G, self.n_per), float("nan"), dtype=torch.float32)

    def _absorb(self, group: Tensor, key: Tensor, value: Tensor, gpos: Tensor, pred: Tensor, share: Tensor) -> None:
        filled = self.gpos >= 0
        rows = torch.arange(self.key.shape[0]).unsqueeze(1).expand(-1, self.n_per)[filled]
        g_all = torch.cat([rows, group])
        k_all = torch.cat([self.key[filled], key])
        v_all = torch.cat([self.value[filled], value])
        p_all = torch.cat([self.gpos[filled], gpos])
        pr_all = torch.cat([self.pred[filled], pred])
        sh_all = torch.cat([self.pred_share[filled], share])
        idx, g, r = select_per_group(g_all, k_all, p_all, self.n_per, self.key.shape[0], descending=False)
        self.key.fill_(_I64_MAX)
        self.value.zero_()
        self.gpos.fill_(-1)
        self.pred.fill_(float("nan"))
        self.pred_share.fill_(float("nan"))
        self.key[g, r] = k_all[idx]
        self.value[g, r] = v_all[idx]
        self.gpos[g, r] = p_all[idx]
        self.pred[g, r] = pr_all[idx]
        self.pred_share[g, r] = sh_all[idx]

    def update(self, shard: ShardLike) -> None:
        b = as_batch(shard)
        j = bin_index(b.value, self.max_act[b.latent], self.n_int)
        group = b.latent * self.n_int + j
        self.counts += torch.bincount(group, minlength=self.counts.numel())
        key = sample_keys(self.seed, b.gpos, b.latent, self.width)
        keep = key <= self.key[group, -1]  # only codes that can enter the reservoir
        n = int(keep.sum())
        nan = torch.full((n,), float("nan"))
        self._absorb(
            group[keep],
            key[keep],
            b.value[keep],
            b.gpos[keep],
            b.pred[keep] if b.pred is not None else nan,
            b.pred_share[keep] if b.pred_share is not None else nan,
        )

    def merge(self, other: IntervalSampler) -> None:
        if not torch.equal(self.max_act, other.max_act) or self.seed != other.seed:
            raise ValueError("interval samplers with different ranges or seeds cannot be merged")
        self.counts += other.counts
        m = other.gpos >= 0
        rows = torch.arange(self.key.shape[0]).unsqueeze(1).expand(-1, self.n_per)[m]
        self._absorb(rows, other.key[m], other.value[m], other.gpos[m], other.pred[m], other.pred_share[m])

    def result(self) -> dict[str, Tensor]:
        W, n, m = self.width, self.n_int, self.n_per
        edges = bin_edges(self.max_act, n)
        return {
            "counts": self.counts.view(W, n).clone(),
            "edges": edges,
            "value": self.value.view(W, n, m).clone(),
            "gpos": self.gpos.view(W, n, m).clone(),
            "pred": self.pred.view(W, n, m).clone(),
            "pred_share": self.pred_share.view(W, n, m).clone(),
        }
