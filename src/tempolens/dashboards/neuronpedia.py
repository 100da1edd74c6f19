"""Neuronpedia exports.

(a) SAEDashboard's Neuronpedia-runner output: ``batch-<k>.json`` files
    ``{model_id, layer, sae_set, sae_id_suffix, features: [...]}`` (feature keys exactly as
    :data:`tempolens.dashboards.schema.FEATURE_KEYS`) plus ``run_settings.json``.
(b) Neuronpedia's bulk-import layout (as written by Neuronpedia's ``neuronpedia-utils`` exporters)::

        <model_id>/<source_id>/release.jsonl  model.jsonl  sourceset.jsonl  source.jsonl
        <model_id>/<source_id>/features/batch-<k>.jsonl.gz
        <model_id>/<source_id>/activations/batch-<k>.jsonl.gz

    with ``source_id = <layer>-<sae_set>`` (e.g. ``9-temporal-res``).

Every file is written atomically and the output is deterministic: timestamps come from the store
(``meta.json``'s ``created``), activation ids are hashes of their content's position, gzip headers
carry no time.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

from tempolens.dashboards.schema import Activation, dumps_bytes, neuronpedia_feature
from tempolens.store.codestore import atomic_write_bytes


@dataclass(frozen=True)
class ExportIds:
    """Names that identify the export on Neuronpedia."""

    model_id: str
    """Neuronpedia model id, e.g. ``gemma-2-2b``."""
    layer: int
    sae_set: str
    """Neuronpedia source-set name without the layer, e.g. ``temporal-res``."""
    dataset: str
    n_prompts: int
    prompt_len: int
    creator_id: str = "tempolens"
    creator_name: str = "tempolens"
    release_id: str = ""
    release_title: str = ""
    sae_id_suffix: str | None = None
    hook_name: str = ""
    created_at: str = "1970-01-01T00:00:00Z"
    d_model: int = 0
    n_layers: int = 0
    width: int = 0
    description: str = ""
    source: str | None = None
    """Explicit source id (overrides ``<layer>-<sae_set>``)."""

    @property
    def source_id(self) -> str:
        """Neuronpedia source id: ``<layer>-<sae_set>`` (``__<suffix>`` appended when there is one),
        unless ``source`` is given."""
        if self.source:
            return self.source
        return f"{self.layer}-{self.sae_set}" + (f"__{self.sae_id_suffix}" if self.sae_id_suffix else "")


def dumps(obj: Any) -> str:
    """Compact, deterministic JSON text."""
    return dumps_bytes(obj).decode()


def write_batch(out_dir: Path, k: int, records: Iterable[dict[str, Any]], ids: ExportIds) -> Path:
    """Write SAEDashboard's ``batch-<k>.json`` for these feature records."""
    batch = {
        "model_id": ids.model_id,
        "layer": ids.layer,
        "sae_set": ids.sae_set,
        "sae_id_suffix": ids.sae_id_suffix,
        "features": [neuronpedia_feature(r) for r in records],
    }
    path = Path(out_dir) / f"batch-{k}.json"
    atomic_write_bytes(path, dumps_bytes(batch))
    return path


def write_run_settings(out_dir: Path, settings: dict[str, Any]) -> Path:
    path = Path(out_dir) / "run_settings.json"
    atomic_write_bytes(path, (json.dumps(settings, indent=2, sort_keys=True, allow_nan=False) + "\n").encode())
    return path


def _gz(lines: list[bytes]) -> bytes:
    """gzip at level 1 (Neuronpedia uses 5; every level reads the same): with ISA-L (``isal``, ≈6×
    faster than zlib here, and smaller) when installed, else the standard library."""
    data = b"\n".join(lines) + (b"\n" if lines else b"")
    if _igzip is not None:
        return _igzip.compress(data, compresslevel=1, mtime=0)
    return gzip.compress(data, compresslevel=1, mtime=0)


try:  # optional speed-up (a dependency of the package; absent only on platforms without its wheels)
    from isal import igzip as _igzip
except ImportError:  # pragma: no cover
    _igzip = None


def activation_id(ids: ExportIds, index: int, k: int) -> str:
    """A deterministic 25-character id (Neuronpedia uses cuid-like ids of that length)."""
    h = hashlib.sha256(f"{ids.model_id}/{ids.source_id}/{index}/{k}".encode()).hexdigest()
    return "tl" + h[:23]


def bulk_activation(ids: ExportIds, feature_index: int, k: int, a: Activation) -> dict[str, Any]:
    """One activation row of the bulk import (Neuronpedia ``Activation``) from a record's example
    (its extremes come from the :class:`~tempolens.dashboards.schema.Activation` attributes)."""
    return {
        "id": activation_id(ids, feature_index, k),
        "tokens": a["tokens"],
        "index": str(feature_index),
        "layer": ids.source_id,
        "modelId": ids.model_id,
        "maxValue": a.max_value,
        "maxValueTokenIndex": a.max_index,
        "minValue": a.min_value,
        "values": a["values"],
        "creatorId": ids.creator_id,
        "dataSource": None,
        "dataIndex": None,
        "dfaValues": [],
        "dfaTargetIndex": None,
        "dfaMaxValue": None,
        "createdAt": ids.created_at,
        "lossValues": [],
        "logitContributions": None,
        "binMin": a["bin_min"],
        "binMax": a["bin_max"],
        "binContains": a["bin_contains"],
        "qualifyingTokenIndex": a["qualifying_token_index"],
    }


def bulk_feature(ids: ExportIds, record: dict[str, Any]) -> dict[str, Any]:
    """One feature row of the bulk import (Neuronpedia ``Feature``)."""
    f = neuronpedia_feature(record, activations=False)
    vector = f["vector"]
    max_act = max((a.max_value for a in record["activations"]), default=0.0)
    out = {
        "modelId": ids.model_id,
        "layer": ids.source_id,
        "index": str(f["feature_index"]),
        "creatorId": ids.creator_id,
        "createdAt": ids.created_at,
        "maxActApprox": max_act,
        "hasVector": bool(vector),
        "vector": vector,
        "vectorLabel": None,
        "vectorDefaultSteerStrength": max_act if vector else 10,
        "hookName": ids.hook_name if vector else None,
        "topkCosSimIndices": [],
        "topkCosSimValues": [],
    }
    for k in (
        "neuron_alignment_indices", "neuron_alignment_values", "neuron_alignment_l1",
        "correlated_neurons_indices", "correlated_neurons_pearson", "correlated_neurons_l1",
        "correlated_features_indices", "correlated_features_pearson", "correlated_features_l1",
        "neg_str", "neg_values", "pos_str", "pos_values", "frac_nonzero",
        "freq_hist_data_bar_heights", "freq_hist_data_bar_values",
        "logits_hist_data_bar_heights", "logits_hist_data_bar_values", "decoder_weights_dist",
    ):
        out[k] = f[k]
    return out


def bulk_dir(root: Path, ids: ExportIds) -> Path:
    return Path(root) / ids.model_id / ids.source_id


def jsonl_line(obj: Any) -> bytes:
    """One JSON-lines record. U+2028/U+2029 (valid raw inside JSON strings) are escaped too, so
    readers that split on every Unicode line break (Python's ``str.splitlines``) see one record."""
    return dumps_bytes(obj).replace("\u2028".encode(), b"\\u2028").replace("\u2029".encode(), b"\\u2029")


def write_bulk_batch(root: Path, k: int, records: list[dict[str, Any]], ids: ExportIds) -> tuple[Path, Path]:
    """Write ``features/batch-<k>.jsonl.gz`` and ``activations/batch-<k>.jsonl.gz``."""
    d = bulk_dir(root, ids)
    (d / "features").mkdir(parents=True, exist_ok=True)
    (d / "activations").mkdir(parents=True, exist_ok=True)
    feats = [jsonl_line(bulk_feature(ids, r)) for r in records]
    acts = []
    for r in records:
        for j, a in enumerate(r["activations"]):
            acts.append(jsonl_line(bulk_activation(ids, r["feature_index"], j, a)))
    fp, ap = d / "features" / f"batch-{k}.jsonl.gz", d / "activations" / f"batch-{k}.jsonl.gz"
    atomic_write_bytes(fp, _gz(feats))
    atomic_write_bytes(ap, _gz(acts))
    return fp, ap


def write_bulk_headers(root: Path, ids: ExportIds) -> list[Path]:
    """Write ``release.jsonl``, ``model.jsonl``, ``sourceset.jsonl`` and ``source.jsonl``."""
    d = bulk_dir(root, ids)
    d.mkdir(parents=True, exist_ok=True)
    release_id = ids.release_id or ids.sae_set
    title = ids.release_title or f"tempolens dashboards: {ids.model_id} {ids.source_id}"
    rows = {
        "release.jsonl": {
            "name": release_id, "description": title, "descriptionShort": title, "creatorName": ids.creator_name,
            "creatorNameShort": ids.creator_name, "creatorId": ids.creator_id, "creatorEmail": None, "visibility": "PUBLIC",
            "isNewUi": False, "featured": False, "urls": [], "defaultSourceSetName": ids.sae_set, "defaultSourceId": ids.source_id,
            "defaultUmapSourceIds": [], "createdAt": ids.created_at,
        },
        "model.jsonl": {
            "id": ids.model_id, "instruct": ids.model_id.endswith("-it"), "creatorId": ids.creator_id,
            "displayNameShort": ids.model_id, "displayName": ids.model_id, "tlensId": None, "dimension": ids.d_model or None,
            "visibility": "PUBLIC", "defaultSourceSetName": None, "defaultSourceId": None, "inferenceEnabled": False,
            "layers": ids.n_layers, "neuronsPerLayer": ids.d_model, "createdAt": ids.created_at, "owner": "", "updatedAt": ids.created_at, "website": None,
        },
        "sourceset.jsonl": {
            "modelId": ids.model_id, "name": ids.sae_set, "creatorId": ids.creator_id, "hasDashboards": True, "visibility": "PUBLIC",
            "description": ids.description or f"{ids.sae_set} ({ids.width} latents)", "type": "", "creatorName": ids.creator_name,
            "urls": [], "creatorEmail": None, "releaseName": release_id, "defaultOfModelId": None, "defaultRange": 1,
            "defaultShowBreaks": True, "showDfa": False, "showCorrelated": True, "showHeadAttribution": False, "showUmap": False,
            "createdAt": ids.created_at,
        },
        "source.jsonl": {
            "id": ids.source_id, "modelId": ids.model_id, "setName": ids.sae_set, "creatorId": ids.creator_id, "hasDashboards": True,
            "inferenceEnabled": False, "inferenceHosts": [], "saelensConfig": None, "saelensRelease": None, "saelensSaeId": None,
            "hfRepoId": None, "hfFolderId": None, "visibility": "PUBLIC", "defaultOfModelId": None, "hasUmap": False,
            "hasUmapLogSparsity": False, "hasUmapClusters": False, "num_prompts": ids.n_prompts, "num_tokens_in_prompt": ids.prompt_len,
            "dataset": ids.dataset, "notes": ids.description or None, "createdAt": ids.created_at,
        },
    }
    paths = []
    for name, row in rows.items():
        p = d / name
        atomic_write_bytes(p, dumps_bytes(row) + b"\n")
        paths.append(p)
    return paths


def ids_dict(ids: ExportIds) -> dict[str, Any]:
    return {**asdict(ids), "source_id": ids.source_id}
