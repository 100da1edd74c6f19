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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import torch
from torch import Tensor

from tempolens.stats.examples import Windows, first_of_each
from tempolens.stats.features import FeatureStats
from tempolens.stats.logits import LogitEffects

FEATURE_KEYS: tuple[str, ...] = (
    "feature_index",
    "neuron_alignment_indices",
    "neuron_alignment_values",
    "neuron_alignment_l1",
    "correlated_neurons_indices",
    "correlated_neurons_pearson",
    "correlated_neurons_l1",
    "correlated_features_indices",
    "correlated_features_pearson",
    "correlated_features_l1",
    "neg_str",
    "neg_values",
    "pos_str",
    "pos_values",
    "frac_nonzero",
    "freq_hist_data_bar_values",
    "freq_hist_data_bar_heights",
    "logits_hist_data_bar_values",
    "logits_hist_data_bar_heights",
    "n_prompts_total",
    "n_tokens_in_prompt",
    "dataset",
    "decoder_weights_dist",
    "vector",
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

    def row_fragments(self, ids: Tensor, same: Tensor | None = None) -> list[Any]:
        """Each row of ``ids [E, L]`` as a JSON array of its token strings (a fragment). ``same`` (``[E]`` int64,
        optional): rows with equal keys hold equal ids (an example window's prompt and start), so each distinct
        row is encoded once and its fragment shared — many examples of a run show the same window."""
        if same is not None and ids.shape[0]:
            first, inverse = first_of_each(same)
            unique_rows = self.row_fragments(ids[first])
            return [unique_rows[i] for i in inverse.tolist()]
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
    dense: bool = True
    """Give every activation its dense ``tokens`` and ``values`` (and ``pred_values``, ``pred_share``): what the
    Neuronpedia formats write. ``False`` when only the site is written: it reads the sparse values and references
    the window (most of the records' encoding time at 16k latents is the dense rows)."""

    def token_table(self) -> TokenTable:
        if self.tokens is None:
            self.tokens = TokenTable(self.token_strings)
        return self.tokens


class Activation(dict):
    """One example of a record. A plain JSON object to every writer (orjson writes dict subclasses as
    objects); its ``tokens``/``values``/``pred_values``/``pred_share`` are pre-encoded
    :class:`orjson.Fragment` arrays. The attributes carry what the exporters need without parsing them."""

    __slots__ = ("qualifying_token", "max_value", "max_index", "min_value", "start", "site_values", "site_pred")
    qualifying_token: str
    """The token string at ``qualifying_token_index``."""
    max_value: float
    """Largest (rounded) value, and the first position holding it."""
    max_index: int
    min_value: float
    start: int
    """First position of the window in its prompt (the site references the window instead of copying it)."""
    site_values: Any
    """The site's sparse ``values``: a JSON-array fragment of ``[position, value]`` pairs (zeros left out)."""
    site_pred: Any
    """The site's sparse ``pred_values`` (``{"fill": null | 0, "at": [[position, value], ...]}`` as a
    fragment), or ``None`` when the windows have no predicted codes."""


def row_fragments(x: Tensor) -> list[Any]:
    """Each row of a 2-D float tensor as a JSON-array fragment, encoded in one pass (NaN → ``null``).

    Equal to encoding ``x[i].tolist()`` row by row: the rows are split out of the encoding of the whole
    array (numbers never contain brackets)."""
    if x.shape[0] == 0:
        return []
    body = orjson.dumps(np.ascontiguousarray(x.detach().to(torch.float64).numpy()), option=orjson.OPT_SERIALIZE_NUMPY)
    return [orjson.Fragment(b"[" + part + b"]") for part in body[2:-2].split(b"],[")]


def sparse_rows(x: Tensor, fill: Tensor) -> list[bytes]:
    """Each row of a 2-D float64 tensor as the JSON array of its ``[position, value]`` pairs whose value
    differs from the row's ``fill`` (``[E]``, NaN = null; NaN entries are written as ``null``).

    Decoding (``docs/site-data.md``): start from ``fill`` at every position, then set each pair."""
    E = x.shape[0]
    if E == 0:
        return []
    f = fill.unsqueeze(1)
    keep = ~((x == f) | (torch.isnan(x) & torch.isnan(f)))
    rows, cols = keep.nonzero(as_tuple=True)
    pairs = list(zip(cols.tolist(), x[rows, cols].tolist()))  # orjson writes NaN as null
    ends = torch.cumsum(keep.sum(1), 0).tolist()
    out, a = [], 0
    for b in ends:
        out.append(orjson.dumps(pairs[a:b]))
        a = b
    return out


def _pred_fill(pred: Tensor) -> Tensor:
    """Per row of predicted codes, the value most entries hold: NaN (null: novel codes, where the store
    keeps no prediction for the latent; also on a tie) or 0 (predicted-code windows)."""
    return torch.where(torch.isnan(pred).sum(1) >= (pred == 0).sum(1), float("nan"), 0.0).to(torch.float64)


def feature_records(
    ctx: RecordContext,
    latents: Sequence[int],
    windows: Windows,
    before_logits: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    """Site records (Neuronpedia feature objects + ``tempolens`` block) of ``latents``.

    ``windows`` are the examples of exactly these latents, in display order, with the group each is
    shown in (:func:`tempolens.stats.examples.example_windows`). ``before_logits`` runs before ``ctx.logits`` is
    first read, after everything else is computed (e.g. to wait for logit effects computed in the background).
    """
    if windows.group is None:
        raise ValueError("feature_records needs windows with their example groups (stats.examples.example_windows)")
    rows = _example_rows(ctx, windows, windows.group)
    # every per-latent field is rounded and converted for the whole group at once (no per-latent tensor ops)
    lat = torch.as_tensor([int(x) for x in latents], dtype=torch.int64)
    stats = _statistic_columns(ctx.stats, lat)
    correlations = _correlation_columns(ctx.stats, lat)
    acts = [_activations(rows, rows.by_latent.get(l, []), stats, j) for j, l in enumerate(lat.tolist())]
    if before_logits is not None:
        before_logits()
    columns = {  # in the order they are computed; each record takes them in SAEDashboard's order
        **correlations,
        **_alignment_columns(ctx, lat),
        **_logit_columns(ctx, lat),
        "frac_nonzero": stats.frac_nonzero,
        "freq_hist_data_bar_values": stats.hist_centres,
        "freq_hist_data_bar_heights": stats.hist_counts,
        "n_prompts_total": [int(ctx.n_prompts_total)] * lat.numel(),
        "n_tokens_in_prompt": [int(ctx.stats.prompt_len)] * lat.numel(),
        "dataset": [ctx.dataset] * lat.numel(),
        "decoder_weights_dist": [[] for _ in range(lat.numel())],
        "vector": rounded(ctx.vectors[lat], 6) if ctx.vectors is not None else [[] for _ in range(lat.numel())],
    }
    dec_norm = ctx.decoder_norm[lat].double().tolist() if ctx.decoder_norm is not None else None
    out = []
    for j, l in enumerate(lat.tolist()):
        rec: dict[str, Any] = {"feature_index": l}
        rec.update((k, columns[k][j]) for k in FEATURE_KEYS[1:-1])  # SAEDashboard's order
        rec["activations"] = acts[j]
        ai = ctx.autointerp.get(l, {})
        rec["tempolens"] = {
            "max_act": stats.max_act[j],
            "mean_act": stats.mean_act[j],
            "n_active": int(stats.n_active[j]),
            "pred_share_top": stats.pred_share_top[j],
            "act_units": ctx.act_units,
            "decoder_norm": dec_norm[j] if dec_norm is not None else None,
            "explanation": ai.get("explanation"),
            "scores": dict(ai.get("scores") or {}),
        }
        out.append(rec)
    return out


@dataclass(frozen=True)
class _ExampleRows:
    """The examples of one group of latents, encoded once (index = example).

    The per-example lists (tokens, values, predicted codes, shares) are most of every export. They are
    encoded to JSON once, as whole arrays, and spliced as fragments into the batch files, the bulk import
    and the site (never converted to Python floats or encoded three times)."""

    tokens: list[Any] | None
    """Token-string rows, or ``None`` when the records are not dense (:attr:`RecordContext.dense`)."""
    values: list[Any] | None
    preds: list[Any] | None
    """Predicted codes (NaN → ``null``), or ``None`` when the windows have none or the records are not dense."""
    shares: list[Any] | None
    """Predicted shares, or ``None`` when the windows have none."""
    site_values: list[Any]
    """The site's sparse values (:func:`sparse_rows` fragments, fill 0)."""
    site_preds: list[Any] | None
    """The site's sparse predicted codes (``{"fill", "at"}`` fragments), or ``None``."""
    starts: list[int]
    max_value: list[float]
    max_index: list[int]
    min_value: list[float]
    qualifying: list[int]
    qualifying_token: list[str]
    prompt: list[int]
    group: list[int]
    by_latent: dict[int, list[int]]
    """latent → its examples, in order."""


def _finite_rounded(x: Tensor) -> Tensor:
    """``round_sig(x)``; ``ValueError`` when any value is not finite (JSON has no NaN)."""
    r = round_sig(x)
    if not bool(torch.isfinite(r).all()):
        raise ValueError("non-finite value in an export field")
    return r


def _example_rows(ctx: RecordContext, windows: Windows, groups: Tensor) -> _ExampleRows:
    """Encode the example windows of one group of latents (:class:`_ExampleRows`)."""
    table = ctx.token_table()
    dense = ctx.dense
    window_key = windows.prompt.to(torch.int64) * (1 << 32) + windows.start.to(torch.int64)
    tok_rows = table.row_fragments(windows.tokens, same=window_key) if dense else None
    values_r = _finite_rounded(windows.values)
    values = row_fragments(values_r) if dense else None
    zeros = torch.zeros(values_r.shape[0], dtype=torch.float64)
    site_values = [orjson.Fragment(r) for r in sparse_rows(values_r, zeros)]
    preds = site_preds = None
    if windows.pred is not None:
        pred_r = round_sig(windows.pred)
        preds = row_fragments(pred_r) if dense else None  # NaN → null
        fill = _pred_fill(pred_r)
        site_preds = [
            orjson.Fragment(b'{"fill":' + (b"null" if f != f else orjson.dumps(f)) + b',"at":' + at + b"}")
            for f, at in zip(fill.tolist(), sparse_rows(pred_r, fill))
        ]
    shares = row_fragments(_finite_rounded(windows.pred_share)) if dense and windows.pred_share is not None else None
    if not dense:  # the site's token table and the qualifying tokens read the strings (each distinct window once)
        table.add(windows.tokens[first_of_each(window_key)[0]] if windows.tokens.shape[0] else windows.tokens)
    E = values_r.shape[0]
    if E:
        vmax, vargmax = values_r.max(1)
        vmax_l, vargmax_l, vmin_l = vmax.tolist(), vargmax.tolist(), values_r.amin(1).tolist()
        q_ids = windows.tokens.gather(1, windows.qualifying.to(torch.int64).unsqueeze(1)).squeeze(1)
        q_tok = table.strings[q_ids.numpy()].tolist()
    else:
        vmax_l = vargmax_l = vmin_l = q_tok = []
    by_latent: dict[int, list[int]] = {}
    for e, l in enumerate(windows.latent.tolist()):
        by_latent.setdefault(l, []).append(e)
    return _ExampleRows(
        tokens=tok_rows,
        values=values,
        preds=preds,
        shares=shares,
        site_values=site_values,
        site_preds=site_preds,
        starts=windows.start.tolist(),
        max_value=vmax_l,
        max_index=vargmax_l,
        min_value=vmin_l,
        qualifying=windows.qualifying.tolist(),
        qualifying_token=q_tok,
        prompt=windows.prompt.tolist(),
        group=groups.tolist(),
        by_latent=by_latent,
    )


@dataclass(frozen=True)
class _StatisticColumns:
    """The statistics of one group of latents, rounded and converted to lists (index = position in the group)."""

    max_act: list[float]
    mean_act: list[float]
    frac_nonzero: list[float]
    pred_share_top: list[Any]
    n_active: list[int]
    hist_centres: list[Any]
    hist_counts: list[Any]
    int_edges: list[Any]
    int_share: list[Any]


def _statistic_columns(s: FeatureStats, lat: Tensor) -> _StatisticColumns:
    """:class:`_StatisticColumns` of ``lat``; ``ValueError`` on non-finite statistics."""
    int_edges = round_sig(s.int_edges, 7)
    max_act, mean_act = s.max_act[lat].double(), s.mean_act[lat].double()
    frac = s.frac_nonzero[lat]
    bad = ~(torch.isfinite(max_act) & torch.isfinite(mean_act) & torch.isfinite(frac))
    if bool(bad.any()):
        raise ValueError(f"non-finite statistics for latent {int(lat[bad.nonzero()[0, 0]])}")
    return _StatisticColumns(
        max_act=round_sig(max_act, 7).tolist(),
        mean_act=round_sig(mean_act, 7).tolist(),
        frac_nonzero=frac.tolist(),
        pred_share_top=rounded(s.pred_share_top[lat], SIG_DIGITS, nullable=True),
        n_active=s.n_active[lat].tolist(),
        hist_centres=rounded((s.hist_edges[lat, :-1] + s.hist_edges[lat, 1:]) / 2, 6),
        hist_counts=s.hist_counts[lat].tolist(),
        int_edges=int_edges[lat].tolist(),
        int_share=s.int_share[lat].tolist(),
    )


def _correlation_columns(s: FeatureStats, lat: Tensor) -> dict[str, list[Any]]:
    """The ``correlated_*`` record fields of ``lat`` (one list per latent each)."""
    ci = s.corr_indices[lat]
    ok = ci >= 0
    corr_idx, corr_ok = ci.tolist(), ok.tolist()
    corr_p = rounded(torch.where(ok, s.corr_pearson[lat], 0.0))
    corr_c = rounded(torch.where(ok, s.corr_cosine[lat], 0.0))
    G = lat.numel()

    def kept(values: list[list[Any]]) -> list[list[Any]]:
        return [[x for x, k in zip(values[j], corr_ok[j]) if k] for j in range(G)]

    return {
        # neuron correlations need the LM's activations, which the code store does not keep
        "correlated_neurons_indices": [[] for _ in range(G)],
        "correlated_neurons_pearson": [[] for _ in range(G)],
        "correlated_neurons_l1": [[] for _ in range(G)],
        "correlated_features_indices": kept(corr_idx),
        "correlated_features_pearson": kept(corr_p),
        "correlated_features_l1": kept(corr_c),  # SAEDashboard writes cosine similarity here
    }


def _alignment_columns(ctx: RecordContext, lat: Tensor) -> dict[str, list[Any]]:
    """The ``neuron_alignment_*`` record fields of ``lat`` (empty lists without an alignment table)."""
    G = lat.numel()
    if ctx.alignment is None:
        return {k: [[] for _ in range(G)] for k in FEATURE_KEYS[1:4]}
    return {
        "neuron_alignment_indices": ctx.alignment["indices"][lat].tolist(),
        "neuron_alignment_values": rounded(ctx.alignment["values"][lat]),
        "neuron_alignment_l1": rounded(ctx.alignment["l1"][lat]),
    }


def _logit_columns(ctx: RecordContext, lat: Tensor) -> dict[str, list[Any]]:
    """The logit-effect record fields of ``lat`` (``neg_*``, ``pos_*``, ``logits_hist_*``; empty lists
    without logit effects)."""
    G = lat.numel()
    keys = (
        "neg_str",
        "neg_values",
        "pos_str",
        "pos_values",
        "logits_hist_data_bar_values",
        "logits_hist_data_bar_heights",
    )
    if ctx.logits is None:
        return {k: [[] for _ in range(G)] for k in keys}
    lg, table = ctx.logits, ctx.token_table()
    bottom, top = lg.bottom_ids[lat], lg.top_ids[lat]
    table.add(bottom)  # each distinct token decoded once per export, looked up as arrays
    table.add(top)
    return dict(
        zip(
            keys,
            (
                table.strings[bottom.numpy()].tolist(),
                rounded(lg.bottom_values[lat]),
                table.strings[top.numpy()].tolist(),
                rounded(lg.top_values[lat]),
                rounded(lg.hist_centres[lat]),
                lg.hist_counts[lat].tolist(),
            ),
        )
    )


def _activations(rows: _ExampleRows, examples: list[int], stats: _StatisticColumns, j: int) -> list[Activation]:
    """The activation records of the latent at position ``j`` of the group, from its ``examples``: the
    top group's bin is ``(-1, max_act]`` with ``bin_contains = -1``, an interval's its edges and share."""
    mx, edges, share = stats.max_act[j], stats.int_edges[j], stats.int_share[j]
    group, qualifying, prompt, q_token = rows.group, rows.qualifying, rows.prompt, rows.qualifying_token
    max_value, max_index, min_value, starts = rows.max_value, rows.max_index, rows.min_value, rows.starts
    site_values, site_preds, preds, shares = rows.site_values, rows.site_preds, rows.preds, rows.shares
    tokens, values = rows.tokens, rows.values
    dense = tokens is not None and values is not None  # dense rows: what the Neuronpedia formats write
    acts = []
    for e in examples:
        g = group[e]
        if g < 0:
            bmin, bmax, bcont = -1.0, mx, -1.0
        else:
            bmin, bmax, bcont = edges[g], edges[g + 1], share[g]
        if dense:
            a = Activation(bin_min=bmin, bin_max=bmax, bin_contains=bcont, tokens=tokens[e], values=values[e])
            a["qualifying_token_index"], a["prompt_index"] = qualifying[e], prompt[e]
        else:
            q, p = qualifying[e], prompt[e]
            a = Activation(bin_min=bmin, bin_max=bmax, bin_contains=bcont, qualifying_token_index=q, prompt_index=p)
        if preds is not None:
            a["pred_values"] = preds[e]
        if shares is not None:
            a["pred_share"] = shares[e]
        a.qualifying_token, a.max_value, a.max_index, a.min_value = q_token[e], max_value[e], max_index[e], min_value[e]
        a.start, a.site_values = starts[e], site_values[e]
        a.site_pred = site_preds[e] if site_preds is not None else None
        acts.append(a)
    return acts


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
    return [
        record["feature_index"],
        record["frac_nonzero"],
        t["max_act"],
        t["mean_act"],
        top_tokens(record),
        t.get("explanation"),
        score,
        t.get("pred_share_top"),
    ]
