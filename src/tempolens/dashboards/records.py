"""Feature records: the Neuronpedia/SAEDashboard feature object (docs/site-data.md) built from statistics
and the example windows of :mod:`tempolens.stats.examples`.

:func:`feature_records` builds, for a group of latents, the full *site* records (Neuronpedia keys plus
a ``tempolens`` block and per-activation extras); :func:`neuronpedia_feature` strips them to exactly
the keys of SAEDashboard's batch files. Everything is ready for :func:`dumps_bytes` (orjson): plain
lists and finite floats, except each example's ``tokens``/``values``/``pred_values``/``pred_share``,
which are pre-encoded JSON arrays (:class:`orjson.Fragment`) written as they are into every export.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import orjson
import torch
from torch import Tensor

from tempolens.stats.examples import Windows
from tempolens.stats.features import FeatureStats
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
    """Compact UTF-8 JSON (``orjson``: several times faster than the standard library on these large
    exports, and it writes the pre-encoded :class:`orjson.Fragment` rows of the records). Every float
    reaching here was checked finite (NaN only where a field is nullable, written as ``null``)."""
    return orjson.dumps(obj)


_POW10 = torch.tensor([float(10**i) for i in range(301)], dtype=torch.float64)
"""``10**i`` for ``i`` in 0..300, each the float nearest the exact power."""


def round_sig(x: Tensor, sig: int = SIG_DIGITS) -> Tensor:
    """Round to ``sig`` significant digits (float64), so that each value prints as a short decimal.

    Large mostly-zero tensors (example windows: a latent fires on a few of 128 tokens) are rounded on
    their nonzero entries only; the result is the same."""
    x = x.detach().to(torch.float64)
    if x.numel() > (1 << 16):
        nz = x != 0  # NaN included
        if int(nz.sum()) < x.numel() // 4:
            out = x.clone()
            out[nz] = _round_sig_dense(x[nz], sig)
            return out
    return _round_sig_dense(x, sig)


def _round_sig_dense(x: Tensor, sig: int) -> Tensor:
    mag = torch.floor(torch.log10(x.abs().clamp(min=1e-300)))
    k = torch.nan_to_num(sig - 1 - mag, nan=0.0).clamp(-300, 300)  # NaN stays NaN through x * p
    up = k >= 0  # divide by an exact power of ten on both branches
    # powers of ten from a table: torch.pow's vectorised path is not exact for integer exponents, so
    # the same value could round differently alone and inside a longer tensor
    p_up = _POW10[k.clamp(min=0).to(torch.int64)]
    p_dn = _POW10[(-k).clamp(min=0).to(torch.int64)]
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


class TokenTable:
    """Token id → display string and its JSON encoding, each decoded and encoded once per export.

    Grows on demand (:meth:`add`) with the ids the examples use; rows of ids become JSON-array
    fragments by table lookups and one ``join`` per row."""

    def __init__(self, token_strings: Callable[[Sequence[int]], list[str]]):
        self._decode = token_strings
        self.strings = np.empty(0, dtype=object)
        self.encoded = np.empty(0, dtype=object)
        self._known = torch.zeros(0, dtype=torch.bool)

    def add(self, ids: Tensor) -> None:
        """Decode the ids of ``ids`` (any shape) not seen before, all in one call."""
        if ids.numel() == 0:
            return
        top = int(ids.max()) + 1
        if top > self._known.numel():
            grow = top - self._known.numel()
            self._known = torch.cat([self._known, torch.zeros(grow, dtype=torch.bool)])
            self.strings = np.concatenate([self.strings, np.empty(grow, dtype=object)])
            self.encoded = np.concatenate([self.encoded, np.empty(grow, dtype=object)])
        present = torch.zeros_like(self._known)
        present[ids.reshape(-1).to(torch.int64)] = True
        new = (present & ~self._known).nonzero().squeeze(1)
        if new.numel():
            idx = new.numpy()
            strs = self._decode(new.tolist())
            self.strings[idx] = strs
            self.encoded[idx] = [orjson.dumps(t) for t in strs]
            self._known[new] = True

    def row_fragments(self, ids: Tensor) -> list[Any]:
        """Each row of ``ids [E, L]`` as a JSON array of its token strings (a fragment)."""
        self.add(ids)
        rows = self.encoded[ids.to(torch.int64).numpy()].tolist()
        return [orjson.Fragment(b"[" + b",".join(r) + b"]") for r in rows]


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
    decoder_norm: Tensor | None = None
    """``[W]`` decoder row norms in model units, written as ``tempolens.decoder_norm`` (``None``: omitted)."""
    act_units: str = "code"
    """Units of the statistics and windows passed in (``norm``: contribution norms; ``code``: raw codes)."""
    tokens: TokenTable | None = None
    """Decoded and JSON-encoded token strings, shared by every group of one export (made on first use)."""

    def token_table(self) -> TokenTable:
        if self.tokens is None:
            self.tokens = TokenTable(self.token_strings)
        return self.tokens


class Activation(dict):
    """One example of a record. A plain JSON object to every writer (orjson writes dict subclasses as
    objects); its ``tokens``/``values``/``pred_values``/``pred_share`` are pre-encoded
    :class:`orjson.Fragment` arrays. The attributes carry what the exporters need without parsing them."""

    __slots__ = ("qualifying_token", "max_value", "max_index", "min_value")
    qualifying_token: str
    """The token string at ``qualifying_token_index``."""
    max_value: float
    """Largest (rounded) value, and the first position holding it."""
    max_index: int
    min_value: float


def row_fragments(x: Tensor) -> list[Any]:
    """Each row of a 2-D float tensor as a JSON-array fragment, encoded in one pass (NaN → ``null``).

    Equal to encoding ``x[i].tolist()`` row by row: the rows are split out of the encoding of the whole
    array (numbers never contain brackets)."""
    if x.shape[0] == 0:
        return []
    body = orjson.dumps(np.ascontiguousarray(x.detach().to(torch.float64).numpy()), option=orjson.OPT_SERIALIZE_NUMPY)
    return [orjson.Fragment(b"[" + part + b"]") for part in body[2:-2].split(b"],[")]


def feature_records(ctx: RecordContext, latents: Sequence[int], windows: Windows) -> list[dict[str, Any]]:
    """Site records (Neuronpedia feature objects + ``tempolens`` block) of ``latents``.

    ``windows`` are the examples of exactly these latents, in display order, with the group each is
    shown in (:func:`tempolens.stats.examples.example_windows`).
    """
    if windows.group is None:
        raise ValueError("feature_records needs windows with their example groups (stats.examples.example_windows)")
    groups = windows.group
    s = ctx.stats
    wl = windows.latent
    # The per-example lists (tokens, values, predicted codes, shares) are most of every export. They are
    # encoded to JSON once here, as whole arrays, and spliced as fragments into the batch files, the
    # bulk import and the site (never converted to Python floats or encoded three times).
    table = ctx.token_table()
    tok_rows = table.row_fragments(windows.tokens)
    values_r = round_sig(windows.values)
    if not bool(torch.isfinite(values_r).all()):
        raise ValueError("non-finite value in an export field")
    values = row_fragments(values_r)
    preds = row_fragments(round_sig(windows.pred)) if windows.pred is not None else None  # NaN → null
    if windows.pred_share is not None:
        share_r = round_sig(windows.pred_share)
        if not bool(torch.isfinite(share_r).all()):
            raise ValueError("non-finite value in an export field")
        shares = row_fragments(share_r)
    else:
        shares = None
    E = values_r.shape[0]
    if E:
        vmax, vargmax = values_r.max(1)
        vmin = values_r.amin(1)
        vmax_l, vargmax_l, vmin_l = vmax.tolist(), vargmax.tolist(), vmin.tolist()
    else:
        vmax_l = vargmax_l = vmin_l = []
    qual = windows.qualifying.tolist()
    q_tok = table.strings[windows.tokens.gather(1, windows.qualifying.to(torch.int64).unsqueeze(1)).squeeze(1).numpy()].tolist() if E else []
    prompts = windows.prompt.tolist()
    grp = groups.tolist()
    lat_list = wl.tolist()
    by_latent: dict[int, list[int]] = {}
    for e, l in enumerate(lat_list):
        by_latent.setdefault(l, []).append(e)
    int_edges = round_sig(s.int_edges, 7)
    int_share = s.int_share
    # every per-latent field is rounded and converted for the whole group at once (no per-latent tensor ops)
    lat = torch.as_tensor([int(x) for x in latents], dtype=torch.int64)
    G = lat.numel()
    max_act, mean_act = s.max_act[lat].double(), s.mean_act[lat].double()
    frac = s.frac_nonzero[lat]
    bad = ~(torch.isfinite(max_act) & torch.isfinite(mean_act) & torch.isfinite(frac))
    if bool(bad.any()):
        raise ValueError(f"non-finite statistics for latent {int(lat[bad.nonzero()[0, 0]])}")
    max_list, mean_list, frac_list = round_sig(max_act, 7).tolist(), round_sig(mean_act, 7).tolist(), frac.tolist()
    pst_list = rounded(s.pred_share_top[lat], SIG_DIGITS, nullable=True)
    n_active = s.n_active[lat].tolist()
    hist_centres = rounded((s.hist_edges[lat, :-1] + s.hist_edges[lat, 1:]) / 2, 6)
    hist_counts = s.hist_counts[lat].tolist()
    int_edges_l = int_edges[lat].tolist()
    int_share_l = int_share[lat].tolist()
    ci = s.corr_indices[lat]
    ok = ci >= 0
    corr_idx, corr_ok = ci.tolist(), ok.tolist()
    corr_p = rounded(torch.where(ok, s.corr_pearson[lat], 0.0))
    corr_c = rounded(torch.where(ok, s.corr_cosine[lat], 0.0))
    if ctx.alignment is not None:
        al_idx = ctx.alignment["indices"][lat].tolist()
        al_val, al_l1 = rounded(ctx.alignment["values"][lat]), rounded(ctx.alignment["l1"][lat])
    if ctx.logits is not None:
        lg = ctx.logits
        nl = lg.top_ids.shape[1]
        neg_flat = ctx.token_strings(lg.bottom_ids[lat].reshape(-1).tolist())
        pos_flat = ctx.token_strings(lg.top_ids[lat].reshape(-1).tolist())
        neg_str = [neg_flat[i * nl : (i + 1) * nl] for i in range(G)]
        pos_str = [pos_flat[i * nl : (i + 1) * nl] for i in range(G)]
        neg_val, pos_val = rounded(lg.bottom_values[lat]), rounded(lg.top_values[lat])
        lhist_c, lhist_h = rounded(lg.hist_centres[lat]), lg.hist_counts[lat].tolist()
    vectors = rounded(ctx.vectors[lat], 6) if ctx.vectors is not None else None
    dec_norm = ctx.decoder_norm[lat].double().tolist() if ctx.decoder_norm is not None else None
    out = []
    for j, l in enumerate(lat.tolist()):
        mx = max_list[j]
        acts = []
        for e in by_latent.get(l, []):
            g = grp[e]
            if g < 0:
                bmin, bmax, bcont = -1.0, mx, -1.0
            else:
                bmin, bmax, bcont = int_edges_l[j][g], int_edges_l[j][g + 1], int_share_l[j][g]
            a = Activation(
                bin_min=bmin, bin_max=bmax, bin_contains=bcont,
                tokens=tok_rows[e], values=values[e], qualifying_token_index=qual[e],
                prompt_index=prompts[e],
            )
            if preds is not None:
                a["pred_values"] = preds[e]
            if shares is not None:
                a["pred_share"] = shares[e]
            a.qualifying_token, a.max_value, a.max_index, a.min_value = q_tok[e], vmax_l[e], vargmax_l[e], vmin_l[e]
            acts.append(a)
        rec: dict[str, Any] = {"feature_index": l}
        if ctx.alignment is not None:
            rec["neuron_alignment_indices"], rec["neuron_alignment_values"], rec["neuron_alignment_l1"] = al_idx[j], al_val[j], al_l1[j]
        else:
            rec["neuron_alignment_indices"], rec["neuron_alignment_values"], rec["neuron_alignment_l1"] = [], [], []
        # neuron correlations need the LM's activations, which the code store does not keep
        rec["correlated_neurons_indices"], rec["correlated_neurons_pearson"], rec["correlated_neurons_l1"] = [], [], []
        keep = corr_ok[j]
        rec["correlated_features_indices"] = [x for x, k in zip(corr_idx[j], keep) if k]
        rec["correlated_features_pearson"] = [x for x, k in zip(corr_p[j], keep) if k]
        rec["correlated_features_l1"] = [x for x, k in zip(corr_c[j], keep) if k]  # SAEDashboard writes cosine similarity here
        if ctx.logits is not None:
            rec["neg_str"], rec["neg_values"], rec["pos_str"], rec["pos_values"] = neg_str[j], neg_val[j], pos_str[j], pos_val[j]
        else:
            rec["neg_str"], rec["neg_values"], rec["pos_str"], rec["pos_values"] = [], [], [], []
        rec["frac_nonzero"] = frac_list[j]
        rec["freq_hist_data_bar_values"] = hist_centres[j]
        rec["freq_hist_data_bar_heights"] = hist_counts[j]
        if ctx.logits is not None:
            rec["logits_hist_data_bar_values"], rec["logits_hist_data_bar_heights"] = lhist_c[j], lhist_h[j]
        else:
            rec["logits_hist_data_bar_values"], rec["logits_hist_data_bar_heights"] = [], []
        rec["n_prompts_total"] = int(ctx.n_prompts_total)
        rec["n_tokens_in_prompt"] = int(s.prompt_len)
        rec["dataset"] = ctx.dataset
        rec["decoder_weights_dist"] = []
        rec["vector"] = vectors[j] if vectors is not None else []
        rec["activations"] = acts
        ai = ctx.autointerp.get(l, {})
        rec["tempolens"] = {
            "max_act": mx,
            "mean_act": mean_list[j],
            "n_active": int(n_active[j]),
            "pred_share_top": pst_list[j],
            "act_units": ctx.act_units,
            "decoder_norm": dec_norm[j] if dec_norm is not None else None,
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
    c = Counter(a.qualifying_token for a in record["activations"] if a["bin_min"] == -1)
    return " | ".join((t.strip() or t) for t, _ in c.most_common(n))


def index_row(record: dict[str, Any]) -> list[Any]:
    """One row of ``data/index.js`` (columns: see ``tempolens.dashboards.site.INDEX_COLUMNS``)."""
    t = record["tempolens"]
    scores = t.get("scores") or {}
    score = scores[sorted(scores)[0]] if scores else None
    return [record["feature_index"], record["frac_nonzero"], t["max_act"], t["mean_act"], top_tokens(record), t.get("explanation"), score, t.get("pred_share_top")]
