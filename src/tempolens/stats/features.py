"""Feature statistics of every latent of a code store.

:func:`compute_feature_stats` reads the store in passes (reading is cheap; the LM never runs):

1. counts, sums, max, top-k examples (:class:`CountsAccumulator`, :class:`TopKAccumulator`) and how many
   co-activation pairs each latent's row produces (:class:`PairLoad`);
2. 50-bin histograms and interval samples over ``(0, max]`` (both need the max from pass 1) and
   the co-activation sums of the first block of latent rows (:class:`PairSums`);
3. one more pass per further block, when the pairs of all rows exceed ``corr_memory_mb`` (exact at any width;
   see :mod:`tempolens.stats.correlations`).

The examples dashboards show and their token windows are chosen and read in :mod:`tempolens.stats.examples`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from tempolens.fsutil import atomic_write_bytes
from tempolens.stats.accumulators import (
    CodeBatch,
    CountsAccumulator,
    HistogramAccumulator,
    IntervalSampler,
    TopKAccumulator,
    bin_edges,
)
from tempolens.stats.correlations import PairLoad, PairSums, correlations_of_sums, pair_blocks
from tempolens.store.codestore import CodeStore, Shard, StoreError

STATS_VERSION = 1

_TENSOR_FIELDS = (
    "n_active",
    "sum",
    "sum_sq",
    "max_act",
    "top_value",
    "top_gpos",
    "top_pred",
    "top_pred_share",
    "hist_counts",
    "int_counts",
    "int_value",
    "int_gpos",
    "int_pred",
    "int_pred_share",
    "corr_indices",
    "corr_pearson",
    "corr_cosine",
)


@dataclass
class FeatureStats:
    """Statistics of every latent (index = latent id). Example positions are global (``prompt·T + t``)."""

    width: int
    prompt_len: int
    n_tokens: int
    """Counted tokens (BOS/EOS/pad excluded)."""
    is_temporal: bool
    settings: dict[str, Any]
    n_active: Tensor
    sum: Tensor
    sum_sq: Tensor
    max_act: Tensor
    top_value: Tensor
    """``[W, n_top]`` largest activations, descending (0 in empty slots)."""
    top_gpos: Tensor
    """``[W, n_top]`` their global positions (−1 in empty slots); ties: lower position first."""
    top_pred: Tensor
    top_pred_share: Tensor
    hist_counts: Tensor
    """``[W, n_bins]`` counts of nonzero activations in equal-width bins of ``(0, max]``."""
    int_counts: Tensor
    """``[W, n_intervals]`` active tokens per interval of ``(0, max]`` (zeros never counted)."""
    int_value: Tensor
    int_gpos: Tensor
    int_pred: Tensor
    int_pred_share: Tensor
    corr_indices: Tensor
    """``[W, n_correlated]`` most Pearson-correlated latents (−1 = none)."""
    corr_pearson: Tensor
    corr_cosine: Tensor
    timings: dict[str, float] = field(default_factory=dict)

    # -- derived ----------------------------------------------------------------------------------
    @property
    def frac_nonzero(self) -> Tensor:
        """``n_active / n_tokens`` at full (float64) precision."""
        return self.n_active.to(torch.float64) / max(self.n_tokens, 1)

    @property
    def mean_act(self) -> Tensor:
        """Mean activation over the tokens where the latent is active."""
        return torch.where(self.n_active > 0, self.sum / self.n_active.clamp(min=1), torch.zeros_like(self.sum))

    @property
    def hist_edges(self) -> Tensor:
        return bin_edges(self.max_act, self.hist_counts.shape[1])

    @property
    def int_edges(self) -> Tensor:
        return bin_edges(self.max_act, self.int_counts.shape[1])

    @property
    def int_share(self) -> Tensor:
        """Share of the latent's *active* tokens in each interval."""
        return self.int_counts.to(torch.float64) / self.n_active.clamp(min=1).to(torch.float64).unsqueeze(1)

    @property
    def pred_share_top(self) -> Tensor:
        """Mean predicted share of the tokens of each latent's top examples (NaN if not Temporal or dead)."""
        v = self.top_pred_share
        ok = (self.top_gpos >= 0) & torch.isfinite(v)
        return torch.where(
            ok.any(1), (v.nan_to_num(0) * ok).sum(1) / ok.sum(1).clamp(min=1), torch.full((self.width,), float("nan"))
        )

    def scaled(self, scale: Tensor) -> FeatureStats:
        """These statistics with every latent's activations multiplied by ``scale[latent]`` (> 0), e.g. the
        decoder row norms, turning codes into contribution norms in model units.

        Everything scales exactly: sums by ``s``, squared sums by ``s²``, maxima, examples and predicted
        codes by ``s``; counts, histogram and interval counts (bins of ``(0, max]`` scale with the max),
        positions, shares and correlations (Pearson and cosine are invariant to a positive scale per
        latent) are unchanged. The cached statistics stay in code units; this is applied as they are read."""
        s = scale.detach().to(torch.float64).reshape(-1)
        if s.numel() != self.width:
            raise ValueError(f"scale has {s.numel()} entries but the statistics have {self.width} latents")
        if not bool(torch.isfinite(s).all()) or bool((s < 0).any()):
            raise ValueError("scale must be finite and >= 0")
        s32 = s.to(torch.float32)
        col = s32.unsqueeze(1)
        return replace(
            self,
            sum=self.sum * s,
            sum_sq=self.sum_sq * s * s,
            max_act=self.max_act * s32,
            top_value=self.top_value * col,
            top_pred=self.top_pred * col,
            int_value=self.int_value * col.unsqueeze(2),
            int_pred=self.int_pred * col.unsqueeze(2),
        )

    # -- persistence ------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Write to one safetensors file atomically (scalars in its metadata)."""
        path = Path(path)
        tensors = {name: getattr(self, name).contiguous() for name in _TENSOR_FIELDS}
        meta = {
            "stats_version": str(STATS_VERSION),
            "scalars": json.dumps(
                {
                    "width": self.width,
                    "prompt_len": self.prompt_len,
                    "n_tokens": self.n_tokens,
                    "is_temporal": self.is_temporal,
                    "settings": self.settings,
                    "timings": self.timings,
                },
                sort_keys=True,
            ),
        }
        from safetensors.torch import save

        atomic_write_bytes(path, save(tensors, metadata=meta))

    @classmethod
    def load(cls, path: Path) -> FeatureStats:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if meta.get("stats_version") != str(STATS_VERSION):
            raise StoreError(f"{path} holds statistics of another version; delete it to recompute")
        s = json.loads(meta["scalars"])
        return cls(
            width=s["width"],
            prompt_len=s["prompt_len"],
            n_tokens=s["n_tokens"],
            is_temporal=s["is_temporal"],
            settings=s["settings"],
            timings=s.get("timings", {}),
            **tensors,
        )


def neuron_alignment(W_dec: Tensor, k: int = 3) -> dict[str, Tensor]:
    """SAEDashboard's neuron-alignment table: the ``k`` largest (signed) decoder weights of each latent,
    their indices, and each one's share of the row's L1 norm (``|w| / Σ|w|``)."""
    W = W_dec.detach().to(torch.float32)
    v, i = torch.topk(W, min(k, W.shape[1]), dim=1)
    l1 = W.abs().sum(1, keepdim=True).clamp(min=1e-30)
    return {"indices": i, "values": v, "l1": v.abs() / l1}


def _iter(
    store: CodeStore, desc: str, progress: bool, shard_ids: list[int] | None = None, codes: str = "novel"
) -> Iterator[tuple[Shard, CodeBatch]]:
    ids = list(range(store.n_shards)) if shard_ids is None else shard_ids
    for i in tqdm(ids, desc=desc, unit="shard", disable=not progress, leave=False):
        shard = store.load_shard(i, verify=False)
        yield shard, CodeBatch.from_shard(shard, codes, store.pred_sign if codes == "pred" else 1.0)


def check_pred_codes(store: CodeStore) -> None:
    """Raise a :class:`StoreError` that says how to fix it when ``store`` keeps no predicted codes."""
    if not store.meta.get("pred_codes"):
        raise StoreError(
            f"{store.root} keeps no predicted codes (collected with a standard SAE, --pred-k 0 or an "
            "older tempolens); collect again with a Temporal SAE and --pred-k > 0 for --codes pred"
        )


def _merge_ranks(dist: Any, acc: Any) -> Any:
    """Merge one accumulator across all ranks (in rank order); every rank gets the merged result."""
    if dist is None or not dist.active:
        return acc
    import torch.distributed as tdist

    parts: list[Any] = [None] * dist.world
    tdist.all_gather_object(parts, acc)
    merged = parts[0]
    for other in parts[1:]:
        merged.merge(other)
    return merged


def _feature_stats(
    store: CodeStore,
    counts: Any,
    c: dict[str, Tensor],
    topk: Any,
    hist: Any,
    intervals: Any,
    corr: dict[str, Tensor],
    is_temporal: bool,
    settings: dict[str, Any],
    timings: dict[str, float],
) -> FeatureStats:
    """The passes' accumulators (``c``: the counts pass's result), read out into one :class:`FeatureStats`."""
    tk, h, iv = topk.result(), hist.result(), intervals.result()
    return FeatureStats(
        width=store.width,
        prompt_len=store.prompt_len,
        n_tokens=counts.n_tokens,
        is_temporal=is_temporal,
        settings=settings,
        n_active=c["n_active"],
        sum=c["sum"],
        sum_sq=c["sum_sq"],
        max_act=c["max"],
        top_value=tk["value"],
        top_gpos=tk["gpos"],
        top_pred=tk["pred"],
        top_pred_share=tk["pred_share"],
        hist_counts=h["counts"],
        int_counts=iv["counts"],
        int_value=iv["value"],
        int_gpos=iv["gpos"],
        int_pred=iv["pred"],
        int_pred_share=iv["pred_share"],
        corr_indices=corr["indices"],
        corr_pearson=corr["pearson"],
        corr_cosine=corr["cosine"],
        timings=timings,
    )


def compute_feature_stats(
    store: CodeStore | str | Path,
    *,
    n_top: int = 20,
    n_bins: int = 50,
    n_intervals: int = 5,
    n_per_interval: int = 5,
    n_correlated: int = 3,
    seed: int = 0,
    corr_memory_mb: float = 1024,
    progress: bool = True,
    verify: bool = True,
    dist: Any = None,
    codes: str = "novel",
) -> FeatureStats:
    """Every latent's statistics from a code store (see the module docstring for the passes).

    ``dist`` (a :class:`tempolens.distributed.Dist`, under ``torchrun``): each rank reads only its
    shards and the accumulators are merged across ranks after each pass, so every rank returns the
    same statistics as a single process (counts, maxima, top-k, histograms and samples exactly;
    float64 sums up to summation order).

    ``codes="pred"``: those of the stored predicted codes, ``sign · z_pred > 0`` (:meth:`CodeBatch.from_shard`).
    """
    if not isinstance(store, CodeStore):
        store = CodeStore(store)
    if codes == "pred":
        check_pred_codes(store)
    if verify:
        store.done_shards(verify=True)
    reader = _Reader(
        store,
        dist.split(list(range(store.n_shards))) if dist is not None and dist.active else None,
        progress,
        codes,
        dist,
    )
    t0 = time.perf_counter()
    counts, topk, load, is_temporal = _counts_pass(reader, n_top, n_correlated > 0)
    t1 = time.perf_counter()
    c = counts.result()
    blocks, entries = _pair_plan(load, corr_memory_mb)
    hist, intervals, coact = _distributions_pass(
        reader, counts, n_bins, n_intervals, n_per_interval, seed, blocks, entries, corr_memory_mb
    )
    t2 = time.perf_counter()
    corr = _correlations(reader, counts, blocks, entries, coact, n_correlated, corr_memory_mb)
    t3 = time.perf_counter()
    settings = {
        "n_top": n_top,
        "n_bins": n_bins,
        "n_intervals": n_intervals,
        "n_per_interval": n_per_interval,
        "n_correlated": n_correlated,
        "seed": seed,
        "correlation_blocks": len(blocks),
        "codes": codes,
    }
    timings = {"pass1": t1 - t0, "pass2": t2 - t1, "correlations_extra": t3 - t2, "total": t3 - t0}
    return _feature_stats(store, counts, c, topk, hist, intervals, corr, is_temporal, settings, timings)


def _pair_plan(load: PairLoad | None, memory_mb: float) -> tuple[list[tuple[int, int]], list[int]]:
    """The correlation blocks of rows (:func:`pair_blocks`) and the co-activation entries each produces."""
    if load is None:
        return [], []
    loads = load.result()
    blocks = pair_blocks(loads, memory_mb)
    return blocks, [int(loads[a:b].sum()) for a, b in blocks]


@dataclass(frozen=True)
class _Reader:
    """How the passes of :func:`compute_feature_stats` read the store: this rank's shards (``None``: all),
    progress bars, which codes, and the distributed context their accumulators are merged over."""

    store: CodeStore
    shards: list[int] | None
    progress: bool
    codes: str
    dist: Any

    def batches(self, desc: str) -> Iterator[tuple[Shard, CodeBatch]]:
        """Every shard of this rank with its codes, under a progress bar labelled ``desc``."""
        return _iter(self.store, desc, self.progress, self.shards, self.codes)

    @property
    def distributed(self) -> bool:
        return self.dist is not None and self.dist.active


def _counts_pass(
    reader: _Reader, n_top: int, pair_load: bool
) -> tuple[CountsAccumulator, TopKAccumulator, PairLoad | None, bool]:
    """Pass 1: counts, sums, maxima, top-k examples and (``pair_load``) the co-activation load per latent
    (merged over ranks), and whether the store is of a Temporal SAE (its shards keep the predicted share)."""
    W = reader.store.width
    counts, topk = CountsAccumulator(W), TopKAccumulator(W, n_top)
    load = PairLoad(W) if pair_load else None
    is_temporal = False
    for shard, b in reader.batches("stats 1/2 (counts, top-k)"):
        is_temporal = is_temporal or "pred_share" in shard.extras
        counts.update(b)
        topk.update(b)
        if load is not None:
            load.update(b)
    counts, topk = _merge_ranks(reader.dist, counts), _merge_ranks(reader.dist, topk)
    if load is not None:
        load = _merge_ranks(reader.dist, load)
    if reader.distributed:
        is_temporal = any(_merge_flags(reader.dist, is_temporal))
    return counts, topk, load, is_temporal


def _distributions_pass(
    reader: _Reader,
    counts: CountsAccumulator,
    n_bins: int,
    n_intervals: int,
    n_per_interval: int,
    seed: int,
    blocks: list[tuple[int, int]],
    entries: list[int],
    memory_mb: float,
) -> tuple[HistogramAccumulator, IntervalSampler, PairSums | None]:
    """Pass 2 (needs the maxima of pass 1): histograms and interval samples (merged over ranks), and the
    co-activation sums of the first correlation block (``None`` when no correlations are computed; ``entries``: the
    co-activation entries of each block)."""
    hist = HistogramAccumulator(counts.max, n_bins)
    intervals = IntervalSampler(counts.max, n_intervals, n_per_interval, seed)
    W = reader.store.width
    coact = PairSums(W, *blocks[0], memory_mb=memory_mb, entries=entries[0]) if blocks else None
    for _, b in reader.batches("stats 2/2 (histograms, intervals, correlations)"):
        hist.update(b)
        intervals.update(b)
        if coact is not None:
            coact.update(b)
    return _merge_ranks(reader.dist, hist), _merge_ranks(reader.dist, intervals), coact


def _correlations(
    reader: _Reader,
    counts: CountsAccumulator,
    blocks: list[tuple[int, int]],
    entries: list[int],
    first: PairSums | None,
    n_correlated: int,
    memory_mb: float,
) -> dict[str, Tensor]:
    """The ``n_correlated`` most correlated latents of every latent: ``indices``, ``pearson``, ``cosine``
    (``[W, n_correlated]``), block by block of rows; ``first`` holds the sums of the first block (pass 2),
    every further block is one more pass."""
    W = reader.store.width
    corr_parts: list[dict[str, Tensor]] = []
    coact = first
    for bi, (start, stop) in enumerate(blocks):
        if bi > 0:
            coact = PairSums(W, start, stop, memory_mb=memory_mb, entries=entries[bi])
            for _, b in reader.batches(f"correlations block {bi + 1}/{len(blocks)}"):
                coact.update(b)
        assert coact is not None
        coact = _merge_ranks(reader.dist, coact)  # every rank's pairs, in rank order
        corr_parts.append(
            correlations_of_sums(coact, counts.n_tokens, counts.sum, counts.sum_sq, counts.n_active, n_correlated)
        )
        coact = None
    if corr_parts:
        return {k: torch.cat([p[k] for p in corr_parts]) for k in ("indices", "pearson", "cosine")}
    return {"indices": torch.zeros(W, 0, dtype=torch.int64), "pearson": torch.zeros(W, 0), "cosine": torch.zeros(W, 0)}


def _merge_flags(dist: Any, flag: bool) -> list[bool]:
    import torch.distributed as tdist

    flags: list[Any] = [None] * dist.world
    tdist.all_gather_object(flags, bool(flag))
    return [bool(f) for f in flags]
