"""Feature records: the Neuronpedia/SAEDashboard feature object (DESIGN §4) built from statistics.

:func:`feature_records` builds, for a group of latents, the full *site* records (Neuronpedia keys plus
a ``tempolens`` block and per-activation extras); :func:`neuronpedia_feature` strips them to exactly
the keys of SAEDashboard's batch files. Everything is JSON-ready (plain lists, finite floats).
"""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from tempolens.stats.features import FeatureStats, Windows
from tempolens.stats.logits import LogitEffects

FEATURE_KEYS: tuple[str, ...] = (
    "feature_index",
    "neuron_alignment_indices", "neuron_alignment_values", "neuron_alignment_l1",
    "correlated_neurons_indices", "correlated_neurons_pearson", "correlated_neurons_l1",
    "correlated_features_indices", "correlated_features_pearson", "correlated_features_l1",
    "neg_str", "neg_values", "pos_str", "pos_values",
    "frac_nonzero",
    "freq_hist_data_bar_values", "freq_hist_data_bar_heights",
    "logits_hist_data_bar_values", "logits_hist_data_bar_heights",
    "n_prompts_total", "n_tokens_in_prompt", "dataset",
    "decoder_weights_dist", "vector",
    "activations",
)
"""Keys of a feature in a SAEDashboard/Neuronpedia batch file, in SAEDashboard's order."""

ACTIVATION_KEYS: tuple[str, ...] = ("bin_min", "bin_max", "bin_contains", "tokens", "values", "qualifying_token_index")
"""Keys of an activation record in a batch file."""

SITE_ACTIVATION_EXTRAS: tuple[str, ...] = ("prompt_index", "pred_values", "pred_share")

SIG_DIGITS = 5
"""Significant digits kept for activation values, logit effects and histogram positions (relative,
so latents with tiny activations keep their precision; SAEDashboard keeps 3 decimals)."""


def dumps_bytes(obj: Any) -> bytes:
    """Compact UTF-8 JSON. Uses ``orjson`` when installed (several times faster on these large
    exports), else the standard library; both refuse nothing silently because every float reaching
    here was checked finite by :func:`rounded` (NaN only where a field is nullable, as ``None``)."""
    if _orjson is not None:
        return _orjson.dumps(obj)
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


try:  # optional speed-up
    import orjson as _orjson
except ImportError:  # pragma: no cover
    _orjson = None


def round_sig(x: Tensor, sig: int = SIG_DIGITS) -> Tensor:
    """Round to ``sig`` significant digits (float64), so that each value prints as a short decimal."""
    x = x.detach().to(torch.float64)
    mag = torch.floor(torch.log10(x.abs().clamp(min=1e-300)))
    k = (sig - 1 - mag).clamp(-300, 300)
    up = k >= 0  # divide by an exact power of ten on both branches
    p_up = torch.pow(10.0, k.clamp(min=0))
    p_dn = torch.pow(10.0, (-k).clamp(min=0))
    out = torch.where(up, torch.round(x * p_up) / p_up, torch.round(x / p_dn) * p_dn)
    return torch.where(x == 0, x, out)


def rounded(x: Tensor, sig: int = SIG_DIGITS, nullable: bool = False) -> list:
    """Round to ``sig`` significant digits and convert to (nested) lists of floats. NaN becomes
    ``None`` when ``nullable``; otherwise any non-finite value raises ``ValueError`` (JSON has no NaN)."""
    r = round_sig(x, sig)
    nan = torch.isnan(r)
    if bool(torch.isinf(r).any()) or (bool(nan.any()) and not nullable):
        raise ValueError("non-finite value in an export field")
    if bool(nan.any()):
        arr = r.numpy().astype(object)
        arr[nan.numpy()] = None
        return arr.tolist()
    return r.tolist()


def _f(x: Any, sig: int = 7) -> float:
    """One float rounded to ``sig`` significant digits (float32 statistics print short)."""
    return float(round_sig(torch.as_tensor(float(x)).reshape(1), sig)[0])


@dataclass
class RecordContext:
    """What every record of one export shares."""

    stats: FeatureStats
    token_strings: Callable[[Sequence[int]], list[str]]
    """Token id → string, decoded individually with leading spaces kept (e.g. ``SubjectModel.token_strings``)."""
    logits: LogitEffects | None
    """Logit effects of all latents (row = latent id), or ``None`` (empty logit fields)."""
    alignment: dict[str, Tensor] | None
    """:func:`tempolens.stats.features.neuron_alignment` of all latents, or ``None``."""
    dataset: str
    n_prompts_total: int
    vectors: Tensor | None = None
    """``[W, d]`` decoder directions to include as ``vector`` (``None``: empty lists)."""
    autointerp: dict[int, dict[str, Any]] = field(default_factory=dict)
    """latent → ``{"explanation": str, "scores": {scorer: float}}``."""


def examples_of(stats: FeatureStats, latents: Sequence[int]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The examples shown for ``latents``, in display order: per latent the top group (rank order), then
    each interval lowest first (samples by value descending). Returns ``(latent, gpos, group, value)``
    with ``group = -1`` for the top group and the interval index otherwise."""
    lat = torch.as_tensor(list(latents), dtype=torch.int64)
    n_top = stats.top_gpos.shape[1]
    n_int, n_per = stats.int_gpos.shape[1], stats.int_gpos.shape[2]
    tg, tv = stats.top_gpos[lat], stats.top_value[lat]
    ig, iv = stats.int_gpos[lat], stats.int_value[lat]
    # order interval samples by value descending (empty slots last), stable by position
    key = torch.where(ig >= 0, iv, torch.full_like(iv, float("-inf")))
    o = torch.argsort(ig, dim=2, stable=True)
    key, ig, iv = key.gather(2, o), ig.gather(2, o), iv.gather(2, o)
    o = torch.argsort(key, dim=2, stable=True, descending=True)
    ig, iv = ig.gather(2, o), iv.gather(2, o)
    G = len(lat)
    gpos = torch.cat([tg, ig.reshape(G, -1)], 1)
    value = torch.cat([tv, iv.reshape(G, -1)], 1)
    group = torch.cat([torch.full((n_top,), -1), torch.arange(n_int).repeat_interleave(n_per)]).unsqueeze(0).expand(G, -1)
    latent = lat.unsqueeze(1).expand_as(gpos)
    keep = gpos >= 0
    return latent[keep], gpos[keep], group[keep], value[keep]


def feature_records(ctx: RecordContext, latents: Sequence[int], windows: Windows, groups: Tensor) -> list[dict[str, Any]]:
    """Site records (Neuronpedia feature objects + ``tempolens`` block) of ``latents``.

    ``windows``/``groups`` are the examples of :func:`examples_of` for exactly these latents, in its order.
    """
    s = ctx.stats
    wl = windows.latent
    # token strings for every id in these windows, decoded once
    uniq, inv = torch.unique(windows.tokens, return_inverse=True)
    strs = np.empty(uniq.numel(), dtype=object)
    strs[:] = ctx.token_strings(uniq.tolist())
    tok_strs = strs[inv.numpy()].tolist()
    values = rounded(windows.values)
    preds = rounded(windows.pred, nullable=True) if windows.pred is not None else None
    shares = rounded(windows.pred_share) if windows.pred_share is not None else None
    qual = windows.qualifying.tolist()
    prompts = windows.prompt.tolist()
    grp = groups.tolist()
    lat_list = wl.tolist()
    by_latent: dict[int, list[int]] = {}
    for e, l in enumerate(lat_list):
        by_latent.setdefault(l, []).append(e)
    int_edges = round_sig(s.int_edges, 7)
    int_share = s.int_share
    hist_centres = (s.hist_edges[:, :-1] + s.hist_edges[:, 1:]) / 2
    mean_act = s.mean_act
    pst = s.pred_share_top
    out = []
    for l in latents:
        l = int(l)
        max_act = _f(s.max_act[l])
        acts = []
        for e in by_latent.get(l, []):
            g = grp[e]
            if g < 0:
                bmin, bmax, bcont = -1.0, max_act, -1.0
            else:
                bmin, bmax, bcont = float(int_edges[l, g]), float(int_edges[l, g + 1]), float(int_share[l, g])
            a: dict[str, Any] = {
                "bin_min": bmin, "bin_max": bmax, "bin_contains": bcont,
                "tokens": tok_strs[e], "values": values[e], "qualifying_token_index": qual[e],
                "prompt_index": prompts[e],
            }
            if preds is not None:
                a["pred_values"] = preds[e]
            if shares is not None:
                a["pred_share"] = shares[e]
            acts.append(a)
        rec: dict[str, Any] = {"feature_index": l}
        if ctx.alignment is not None:
            rec["neuron_alignment_indices"] = ctx.alignment["indices"][l].tolist()
            rec["neuron_alignment_values"] = rounded(ctx.alignment["values"][l])
            rec["neuron_alignment_l1"] = rounded(ctx.alignment["l1"][l])
        else:
            rec["neuron_alignment_indices"], rec["neuron_alignment_values"], rec["neuron_alignment_l1"] = [], [], []
        # neuron correlations need the LM's activations, which the code store does not keep
        rec["correlated_neurons_indices"], rec["correlated_neurons_pearson"], rec["correlated_neurons_l1"] = [], [], []
        ci = s.corr_indices[l]
        ok = ci >= 0
        rec["correlated_features_indices"] = ci[ok].tolist()
        rec["correlated_features_pearson"] = rounded(s.corr_pearson[l][ok])
        rec["correlated_features_l1"] = rounded(s.corr_cosine[l][ok])  # SAEDashboard writes cosine similarity here
        if ctx.logits is not None:
            lg = ctx.logits
            rec["neg_str"] = ctx.token_strings(lg.bottom_ids[l].tolist())
            rec["neg_values"] = rounded(lg.bottom_values[l])
            rec["pos_str"] = ctx.token_strings(lg.top_ids[l].tolist())
            rec["pos_values"] = rounded(lg.top_values[l])
        else:
            rec["neg_str"], rec["neg_values"], rec["pos_str"], rec["pos_values"] = [], [], [], []
        rec["frac_nonzero"] = float(s.frac_nonzero[l])
        rec["freq_hist_data_bar_values"] = rounded(hist_centres[l], 6)
        rec["freq_hist_data_bar_heights"] = s.hist_counts[l].tolist()
        if ctx.logits is not None:
            rec["logits_hist_data_bar_values"] = rounded(ctx.logits.hist_centres[l])
            rec["logits_hist_data_bar_heights"] = ctx.logits.hist_counts[l].tolist()
        else:
            rec["logits_hist_data_bar_values"], rec["logits_hist_data_bar_heights"] = [], []
        rec["n_prompts_total"] = int(ctx.n_prompts_total)
        rec["n_tokens_in_prompt"] = int(s.prompt_len)
        rec["dataset"] = ctx.dataset
        rec["decoder_weights_dist"] = []
        rec["vector"] = rounded(ctx.vectors[l], 6) if ctx.vectors is not None else []
        rec["activations"] = acts
        ai = ctx.autointerp.get(l, {})
        p = float(pst[l])
        p = _f(p, SIG_DIGITS) if p == p else p
        if not all(math.isfinite(v) for v in (max_act, float(mean_act[l]), rec["frac_nonzero"])):
            raise ValueError(f"non-finite statistics for latent {l}")
        rec["tempolens"] = {
            "max_act": max_act,
            "mean_act": _f(mean_act[l]),
            "n_active": int(s.n_active[l]),
            "pred_share_top": p if p == p else None,
            "explanation": ai.get("explanation"),
            "scores": dict(ai.get("scores") or {}),
        }
        out.append(rec)
    return out


def neuronpedia_feature(record: dict[str, Any], activations: bool = True) -> dict[str, Any]:
    """The batch-file feature object: exactly :data:`FEATURE_KEYS`, activations with :data:`ACTIVATION_KEYS`
    (``activations=False``: an empty list, for callers that only need the feature fields)."""
    f = {k: record[k] for k in FEATURE_KEYS if k != "activations"}
    f["activations"] = [{k: a[k] for k in ACTIVATION_KEYS} for a in record["activations"]] if activations else []
    return f


def top_tokens(record: dict[str, Any], n: int = 3) -> str:
    """The most frequent tokens at the top examples' qualifying positions, as a short string."""
    c = Counter(a["tokens"][a["qualifying_token_index"]] for a in record["activations"] if a["bin_min"] == -1)
    return " | ".join((t.strip() or t) for t, _ in c.most_common(n))


def index_row(record: dict[str, Any]) -> list[Any]:
    """One row of ``data/index.js`` (columns: see ``tempolens.dashboards.site.INDEX_COLUMNS``)."""
    t = record["tempolens"]
    scores = t.get("scores") or {}
    score = scores[sorted(scores)[0]] if scores else None
    return [record["feature_index"], record["frac_nonzero"], t["max_act"], t["mean_act"], top_tokens(record), t.get("explanation"), score, t.get("pred_share_top")]
