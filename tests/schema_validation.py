"""Strict validators of the exported formats (a test utility).

- SAEDashboard/Neuronpedia batch files: exact keys, types, lengths (50 histogram bins,
  10 top/bottom logits), activation records, ``bin_min = -1`` only (and first) for the top group,
  every number finite;
- Neuronpedia bulk-import rows (features, activations, release/model/sourceset/source).

Each validator raises ``SchemaError`` with the JSON path of the first problem.
"""

from __future__ import annotations

import math
from typing import Any

FEATURE_KEYS = {
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
}
ACTIVATION_KEYS = {"bin_min", "bin_max", "bin_contains", "tokens", "values", "qualifying_token_index"}
SITE_ACTIVATION_EXTRAS = {"prompt_index", "pred_values", "pred_share"}
TEMPOLENS_KEYS = {
    "max_act",
    "mean_act",
    "n_active",
    "pred_share_top",
    "explanation",
    "scores",
    "act_units",
    "decoder_norm",
}


class SchemaError(AssertionError):
    pass


def _fail(path: str, msg: str) -> None:
    raise SchemaError(f"{path}: {msg}")


def is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _num_list(path: str, x: Any, n: int | None = None, nullable: bool = False) -> None:
    if not isinstance(x, list):
        _fail(path, f"expected a list, got {type(x).__name__}")
    if n is not None and len(x) != n:
        _fail(path, f"expected {n} entries, got {len(x)}")
    for i, v in enumerate(x):
        if not (is_num(v) or (nullable and v is None)):
            _fail(f"{path}[{i}]", f"expected a finite number, got {v!r}")


def _int_list(path: str, x: Any, n: int | None = None) -> None:
    if not isinstance(x, list) or (n is not None and len(x) != n):
        _fail(path, f"expected a list of {n} ints" if n is not None else "expected a list of ints")
    for i, v in enumerate(x):
        if not is_int(v):
            _fail(f"{path}[{i}]", f"expected an int, got {v!r}")


def _str_list(path: str, x: Any, n: int | None = None) -> None:
    if not isinstance(x, list) or (n is not None and len(x) != n):
        _fail(path, f"expected a list of {n} strings" if n is not None else "expected a list of strings")
    for i, v in enumerate(x):
        if not isinstance(v, str):
            _fail(f"{path}[{i}]", f"expected a string, got {v!r}")


def validate_activation(path: str, a: Any, *, site: bool = False, temporal: bool = False) -> None:
    if not isinstance(a, dict):
        _fail(path, "expected an object")
    allowed = ACTIVATION_KEYS | (SITE_ACTIVATION_EXTRAS if site else set())
    missing, extra = ACTIVATION_KEYS - a.keys(), a.keys() - allowed
    if missing or extra:
        _fail(path, f"keys differ: missing {sorted(missing)}, unexpected {sorted(extra)}")
    for k in ("bin_min", "bin_max", "bin_contains"):
        if not is_num(a[k]):
            _fail(f"{path}.{k}", f"expected a finite number, got {a[k]!r}")
    _str_list(f"{path}.tokens", a["tokens"])
    n = len(a["tokens"])
    if not 1 <= n <= 1024:
        _fail(f"{path}.tokens", f"expected 1..1024 tokens, got {n}")
    _num_list(f"{path}.values", a["values"], n)
    q = a["qualifying_token_index"]
    if not is_int(q) or not 0 <= q < n:
        _fail(f"{path}.qualifying_token_index", f"expected an index in 0..{n - 1}, got {q!r}")
    if any(v < 0 for v in a["values"]):
        _fail(f"{path}.values", "activations must be >= 0")
    if a["bin_min"] == -1:
        if a["bin_contains"] != -1:
            _fail(path, "the top group (bin_min -1) must have bin_contains -1")
        if a["values"][q] <= 0:
            _fail(path, "a top example's qualifying token must be active")
    else:
        if not (0 <= a["bin_min"] < a["bin_max"]):
            _fail(path, f"interval bounds must satisfy 0 <= bin_min < bin_max; got {a['bin_min']}, {a['bin_max']}")
        if not 0 < a["bin_contains"] <= 1:
            _fail(f"{path}.bin_contains", f"an interval with examples holds a share in (0, 1]; got {a['bin_contains']}")
        v = a["values"][q]
        tol = 1e-3 * max(1.0, a["bin_max"])
        if not (a["bin_min"] - tol < v <= a["bin_max"] + tol) or v <= 0:
            _fail(path, f"qualifying value {v} is outside its interval ({a['bin_min']}, {a['bin_max']}] or zero")
    if site:
        if not is_int(a.get("prompt_index")) or a["prompt_index"] < 0:
            _fail(f"{path}.prompt_index", "expected a prompt index >= 0")
        if temporal:
            _num_list(f"{path}.pred_values", a.get("pred_values"), n, nullable=True)
            _num_list(f"{path}.pred_share", a.get("pred_share"), n)
            if any(not 0 <= s <= 1 for s in a["pred_share"]):
                _fail(f"{path}.pred_share", "shares must lie in [0, 1]")


def validate_feature(
    path: str, f: Any, *, n_bins: int = 50, n_logits: int = 10, site: bool = False, temporal: bool = False
) -> None:
    if not isinstance(f, dict):
        _fail(path, "expected an object")
    allowed = FEATURE_KEYS | ({"tempolens"} if site else set())
    missing, extra = FEATURE_KEYS - f.keys(), f.keys() - allowed
    if missing or extra:
        _fail(path, f"keys differ: missing {sorted(missing)}, unexpected {sorted(extra)}")
    if not is_int(f["feature_index"]) or f["feature_index"] < 0:
        _fail(f"{path}.feature_index", "expected an int >= 0")
    for group in ("neuron_alignment", "correlated_neurons", "correlated_features"):
        _int_list(f"{path}.{group}_indices", f[f"{group}_indices"])
        n = len(f[f"{group}_indices"])
        for suffix in ("values", "l1") if group == "neuron_alignment" else ("pearson", "l1"):
            _num_list(f"{path}.{group}_{suffix}", f[f"{group}_{suffix}"], n)
    if f["feature_index"] in f["correlated_features_indices"]:
        _fail(f"{path}.correlated_features_indices", "a latent is listed as correlated with itself")
    if any(not -1 - 1e-6 <= p <= 1 + 1e-6 for p in f["correlated_features_pearson"]):
        _fail(f"{path}.correlated_features_pearson", "Pearson correlations lie in [-1, 1]")
    _str_list(f"{path}.pos_str", f["pos_str"], n_logits)
    _str_list(f"{path}.neg_str", f["neg_str"], n_logits)
    _num_list(f"{path}.pos_values", f["pos_values"], n_logits)
    _num_list(f"{path}.neg_values", f["neg_values"], n_logits)
    if f["pos_values"] != sorted(f["pos_values"], reverse=True) or f["neg_values"] != sorted(f["neg_values"]):
        _fail(path, "pos_values must be descending and neg_values ascending")
    if not is_num(f["frac_nonzero"]) or not 0 <= f["frac_nonzero"] <= 1:
        _fail(f"{path}.frac_nonzero", f"expected a fraction in [0, 1], got {f['frac_nonzero']!r}")
    _num_list(f"{path}.freq_hist_data_bar_values", f["freq_hist_data_bar_values"], n_bins)
    _num_list(f"{path}.freq_hist_data_bar_heights", f["freq_hist_data_bar_heights"], n_bins)
    _num_list(f"{path}.logits_hist_data_bar_values", f["logits_hist_data_bar_values"], n_bins)
    _num_list(f"{path}.logits_hist_data_bar_heights", f["logits_hist_data_bar_heights"], n_bins)
    if any(h < 0 for h in f["freq_hist_data_bar_heights"] + f["logits_hist_data_bar_heights"]):
        _fail(path, "histogram heights are counts >= 0")
    for k in ("n_prompts_total", "n_tokens_in_prompt"):
        if not is_int(f[k]) or f[k] < 1:
            _fail(f"{path}.{k}", "expected an int >= 1")
    if not isinstance(f["dataset"], str):
        _fail(f"{path}.dataset", "expected a string")
    _num_list(f"{path}.decoder_weights_dist", f["decoder_weights_dist"])
    _num_list(f"{path}.vector", f["vector"])
    if not isinstance(f["activations"], list):
        _fail(f"{path}.activations", "expected a list")
    seen_interval = False
    for i, a in enumerate(f["activations"]):
        validate_activation(f"{path}.activations[{i}]", a, site=site, temporal=temporal)
        if a["bin_min"] == -1:
            if seen_interval:
                _fail(f"{path}.activations[{i}]", "top examples (bin_min -1) must come before the interval groups")
        else:
            seen_interval = True
    mins = [a["bin_min"] for a in f["activations"] if a["bin_min"] != -1]
    if mins != sorted(mins):
        _fail(f"{path}.activations", "interval groups must be ordered lowest first")
    if site:
        t = f.get("tempolens")
        if not isinstance(t, dict) or t.keys() != TEMPOLENS_KEYS:
            _fail(f"{path}.tempolens", f"expected keys {sorted(TEMPOLENS_KEYS)}")
        for k in ("max_act", "mean_act"):
            if not is_num(t[k]) or t[k] < 0:
                _fail(f"{path}.tempolens.{k}", "expected a finite number >= 0")
        if t["act_units"] not in ("norm", "code"):
            _fail(f"{path}.tempolens.act_units", "expected 'norm' or 'code'")
        if t["decoder_norm"] is not None and not (is_num(t["decoder_norm"]) and t["decoder_norm"] >= 0):
            _fail(f"{path}.tempolens.decoder_norm", "expected null or a finite number >= 0")
        if not is_int(t["n_active"]) or t["n_active"] < 0:
            _fail(f"{path}.tempolens.n_active", "expected an int >= 0")
        if t["pred_share_top"] is not None and not (is_num(t["pred_share_top"]) and 0 <= t["pred_share_top"] <= 1):
            _fail(f"{path}.tempolens.pred_share_top", "expected null or a share in [0, 1]")
        if t["explanation"] is not None and not isinstance(t["explanation"], str):
            _fail(f"{path}.tempolens.explanation", "expected null or a string")
        if not isinstance(t["scores"], dict) or not all(
            isinstance(k, str) and is_num(v) for k, v in t["scores"].items()
        ):
            _fail(f"{path}.tempolens.scores", "expected an object of finite numbers")


def validate_batch(obj: Any, *, n_bins: int = 50, n_logits: int = 10) -> None:
    """A SAEDashboard/Neuronpedia ``batch-<k>.json`` document."""
    if not isinstance(obj, dict) or obj.keys() != {"model_id", "layer", "sae_set", "sae_id_suffix", "features"}:
        _fail("$", "expected exactly the keys model_id, layer, sae_set, sae_id_suffix, features")
    if not isinstance(obj["model_id"], str) or not obj["model_id"]:
        _fail("$.model_id", "expected a non-empty string")
    if not is_int(obj["layer"]) or obj["layer"] < 0:
        _fail("$.layer", "expected an int >= 0")
    if not isinstance(obj["sae_set"], str) or not obj["sae_set"]:
        _fail("$.sae_set", "expected a non-empty string")
    if obj["sae_id_suffix"] is not None and not isinstance(obj["sae_id_suffix"], str):
        _fail("$.sae_id_suffix", "expected null or a string")
    if not isinstance(obj["features"], list) or not 1 <= len(obj["features"]) <= 128:
        _fail("$.features", "expected 1..128 features")
    idx = [f.get("feature_index") if isinstance(f, dict) else None for f in obj["features"]]
    if len(set(idx)) != len(idx):
        _fail("$.features", "duplicate feature_index")
    for i, f in enumerate(obj["features"]):
        validate_feature(f"$.features[{i}]", f, n_bins=n_bins, n_logits=n_logits)


BULK_ACTIVATION_TYPES = {
    "id": str,
    "tokens": list,
    "index": str,
    "layer": str,
    "modelId": str,
    "maxValue": "num",
    "maxValueTokenIndex": int,
    "minValue": "num",
    "values": list,
    "creatorId": str,
    "createdAt": str,
    "binMin": "num",
    "binMax": "num",
    "binContains": "num",
    "qualifyingTokenIndex": int,
    "dfaValues": list,
    "lossValues": list,
}
BULK_FEATURE_TYPES = {
    "modelId": str,
    "layer": str,
    "index": str,
    "creatorId": str,
    "createdAt": str,
    "maxActApprox": "num",
    "hasVector": bool,
    "vector": list,
}


def _typed(path: str, row: Any, types: dict[str, Any]) -> None:
    if not isinstance(row, dict):
        _fail(path, "expected an object")
    for k, tp in types.items():
        if k not in row:
            _fail(path, f"missing {k}")
        v = row[k]
        ok = is_num(v) if tp == "num" else (is_int(v) if tp is int else isinstance(v, tp))
        if not ok:
            _fail(f"{path}.{k}", f"expected {tp if isinstance(tp, str) else tp.__name__}, got {v!r}")


def validate_bulk_activation(path: str, a: Any, source_id: str, model_id: str) -> None:
    _typed(path, a, BULK_ACTIVATION_TYPES)
    if a["layer"] != source_id or a["modelId"] != model_id:
        _fail(path, f"layer/modelId must be {source_id}/{model_id}")
    if not a["index"].isdigit():
        _fail(f"{path}.index", "expected a decimal feature index")
    _str_list(f"{path}.tokens", a["tokens"])
    _num_list(f"{path}.values", a["values"], len(a["tokens"]))
    if a["values"]:
        if (
            a["maxValue"] != max(a["values"])
            or a["minValue"] != min(a["values"])
            or a["values"][a["maxValueTokenIndex"]] != a["maxValue"]
        ):
            _fail(path, "maxValue/minValue/maxValueTokenIndex do not match values")
    if not 0 <= a["qualifyingTokenIndex"] < len(a["tokens"]):
        _fail(f"{path}.qualifyingTokenIndex", "out of range")
    if len(a["id"]) != 25:
        _fail(f"{path}.id", "expected a 25-character id")


def validate_bulk_feature(
    path: str, f: Any, source_id: str, model_id: str, *, n_bins: int = 50, n_logits: int = 10
) -> None:
    _typed(path, f, BULK_FEATURE_TYPES)
    if f["layer"] != source_id or f["modelId"] != model_id:
        _fail(path, f"layer/modelId must be {source_id}/{model_id}")
    dash = {k: v for k, v in f.items() if k in FEATURE_KEYS}
    dash.update(
        {
            "feature_index": int(f["index"]),
            "n_prompts_total": 1,
            "n_tokens_in_prompt": 1,
            "dataset": "",
            "activations": [],
        }
    )
    validate_feature(path, dash, n_bins=n_bins, n_logits=n_logits)


BULK_EXPLANATION_TYPES = {
    "id": str,
    "modelId": str,
    "layer": str,
    "index": str,
    "description": str,
    "authorId": str,
    "typeName": str,
    "explanationModelName": str,
    "createdAt": str,
    "updatedAt": str,
}
BULK_EXPLANATION_KEYS = set(BULK_EXPLANATION_TYPES) | {"notes"}
"""Neuronpedia ``Explanation`` columns of an explanations export row (``notes`` may be null)."""


def validate_bulk_explanation(path: str, e: Any, source_id: str, model_id: str) -> None:
    """One row of ``explanations/batch-<k>.jsonl.gz`` (a Neuronpedia ``Explanation``)."""
    _typed(path, e, BULK_EXPLANATION_TYPES)
    if e.keys() != BULK_EXPLANATION_KEYS:
        _fail(
            path,
            f"keys differ: missing {sorted(BULK_EXPLANATION_KEYS - e.keys())}, "
            f"unexpected {sorted(e.keys() - BULK_EXPLANATION_KEYS)}",
        )
    if e["layer"] != source_id or e["modelId"] != model_id:
        _fail(path, f"layer/modelId must be {source_id}/{model_id}")
    if not e["index"].isdigit():
        _fail(f"{path}.index", "expected a decimal feature index")
    if len(e["id"]) != 25:
        _fail(f"{path}.id", "expected a 25-character id")
    if not e["description"].strip() or "\n" in e["description"]:
        _fail(f"{path}.description", "expected a non-empty, one-line description")
    for k in ("typeName", "explanationModelName", "authorId"):
        if not e[k]:
            _fail(f"{path}.{k}", "expected a non-empty string")
    if e["notes"] is not None and not isinstance(e["notes"], str):
        _fail(f"{path}.notes", "expected null or a string")


def validate_explanations_file(
    path: Any, source_id: str, model_id: str, feature_indices: set[int] | None = None
) -> int:
    """A whole ``explanations/batch-<k>.jsonl.gz`` file: at least one row (Neuronpedia's importer reads
    the first line for the columns), every row valid, ids unique; returns the number of rows."""
    import gzip
    import json

    lines = gzip.decompress(open(path, "rb").read()).decode().splitlines()
    if not lines:
        _fail(str(path), "an explanations batch must hold at least one row")
    ids = set()
    for i, line in enumerate(lines):
        row = json.loads(line)
        validate_bulk_explanation(f"{path}:{i + 1}", row, source_id, model_id)
        if row["id"] in ids:
            _fail(f"{path}:{i + 1}", "duplicate explanation id")
        ids.add(row["id"])
        if feature_indices is not None and int(row["index"]) not in feature_indices:
            _fail(f"{path}:{i + 1}", f"explanation of latent {row['index']} has no feature in this export")
    return len(lines)


SITE_CHUNK_ACTIVATION_KEYS = {
    "bin_min",
    "bin_max",
    "bin_contains",
    "prompt_index",
    "start",
    "qualifying_token_index",
    "values",
}


def validate_site_chunk_activation(
    path: str, a: Any, *, window_len: int, prompt_len: int, temporal: bool = False
) -> None:
    """An activation as a site chunk stores it (``docs/site-data.md``): a window reference plus sparse
    ``[position, value]`` pairs (``pred_values``: ``{fill, at}``), before the viewer decodes it."""
    if not isinstance(a, dict):
        _fail(path, "expected an object")
    keys = SITE_CHUNK_ACTIVATION_KEYS | ({"pred_values"} if temporal else set())
    if a.keys() != keys:
        _fail(path, f"keys differ: missing {sorted(keys - a.keys())}, unexpected {sorted(a.keys() - keys)}")
    if not is_int(a["start"]) or not 0 <= a["start"] <= prompt_len - window_len:
        _fail(f"{path}.start", f"expected a window start in 0..{prompt_len - window_len}, got {a['start']!r}")
    if not is_int(a["qualifying_token_index"]) or not 0 <= a["qualifying_token_index"] < window_len:
        _fail(f"{path}.qualifying_token_index", f"expected an index in 0..{window_len - 1}")
    pairs = [("values", a["values"], False)]
    if temporal:
        pv = a["pred_values"]
        if not isinstance(pv, dict) or pv.keys() != {"fill", "at"} or pv["fill"] not in (None, 0):
            _fail(f"{path}.pred_values", "expected {fill: null | 0, at: [[position, value], ...]}")
        pairs.append(("pred_values.at", pv["at"], True))
    for name, at, nullable in pairs:
        if not isinstance(at, list):
            _fail(f"{path}.{name}", "expected a list of [position, value] pairs")
        last = -1
        for i, pair in enumerate(at):
            ok = isinstance(pair, list) and len(pair) == 2 and is_int(pair[0]) and last < pair[0] < window_len
            if not ok or not (is_num(pair[1]) or (nullable and pair[1] is None)):
                _fail(f"{path}.{name}[{i}]", f"expected [position (increasing, < {window_len}), value], got {pair!r}")
            last = pair[0]
        if name == "values" and any(p[1] == 0 for p in at):
            _fail(f"{path}.values", "zeros are left out of the sparse values")
