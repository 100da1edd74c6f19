"""Neuronpedia exports.

(a) SAEDashboard's Neuronpedia-runner output: ``batch-<k>.json`` files
    ``{model_id, layer, sae_set, sae_id_suffix, features: [...]}`` (feature keys exactly as
    :data:`tempolens.dashboards.records.FEATURE_KEYS`) plus ``run_settings.json``.
(b) Neuronpedia's bulk-import layout (as written by Neuronpedia's ``neuronpedia-utils`` exporters)::

        <model_id>/<source_id>/release.jsonl  model.jsonl  sourceset.jsonl  source.jsonl
        <model_id>/<source_id>/features/batch-<k>.jsonl.gz
        <model_id>/<source_id>/activations/batch-<k>.jsonl.gz
        <model_id>/<source_id>/explanations/batch-<k>.jsonl.gz   (with ``dashboards --autointerp``)

    with ``source_id = <layer>-<sae_set>`` (e.g. ``9-temporal-res``). Explanation rows are
    Neuronpedia ``Explanation`` rows (``id, modelId, layer, index, description, authorId, typeName,
    explanationModelName, notes, createdAt, updatedAt``); batch ``k`` holds the explanations of the
    features of ``features/batch-<k>`` (a batch without explanations is not written: Neuronpedia's
    importer reads every file's first line). Neuronpedia keeps detection/fuzzing/embedding scores in
    ``ExplanationScore`` rows, which its dataset import does not read, and the ``Explanation`` row's own
    ``scoreV1``/``scoreV2`` are its simulation scores; so tempolens's scores (and the answer mode each
    came from) go into ``notes`` as text, and ``scoreV1``/``scoreV2`` are left to Neuronpedia's
    defaults. On import, ``typeName`` and ``explanationModelName`` must name ``ExplanationType`` and
    ``ExplanationModelType`` rows, and ``authorId`` a user (the ``--creator-id``).

Every file is written atomically and the output is deterministic: timestamps come from the store
(``meta.json``'s ``created``), activation ids are hashes of their content's position, gzip headers
carry no time.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tempolens.dashboards.records import Activation, dumps_bytes, neuronpedia_feature
from tempolens.fsutil import atomic_write_bytes


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


def _gz(data: bytes) -> bytes:
    """gzip at level 1 (Neuronpedia uses 5; every level reads the same): with ISA-L (``isal``, ≈6×
    faster than zlib here, and smaller) when installed, else the standard library."""
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
    (its extremes come from the :class:`~tempolens.dashboards.records.Activation` attributes)."""
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
        "freq_hist_data_bar_heights",
        "freq_hist_data_bar_values",
        "logits_hist_data_bar_heights",
        "logits_hist_data_bar_values",
        "decoder_weights_dist",
    ):
        out[k] = f[k]
    return out


def bulk_dir(root: Path, ids: ExportIds) -> Path:
    return Path(root) / ids.model_id / ids.source_id


def jsonl_lines(objs: Iterable[Any]) -> bytes:
    """JSON-lines records, each line ended by a newline. U+2028/U+2029 (valid raw inside JSON strings) are escaped
    too, so readers that split on every Unicode line break (Python's ``str.splitlines``) see one record per line
    (one pass over the joined bytes: UTF-8 never forms these sequences across characters)."""
    body = b"".join(dumps_bytes(o) + b"\n" for o in objs)
    return body.replace("\u2028".encode(), b"\\u2028").replace("\u2029".encode(), b"\\u2029")


def write_bulk_batch(root: Path, k: int, records: list[dict[str, Any]], ids: ExportIds) -> tuple[Path, Path]:
    """Write ``features/batch-<k>.jsonl.gz`` and ``activations/batch-<k>.jsonl.gz``."""
    d = bulk_dir(root, ids)
    (d / "features").mkdir(parents=True, exist_ok=True)
    (d / "activations").mkdir(parents=True, exist_ok=True)
    feats = jsonl_lines(bulk_feature(ids, r) for r in records)
    acts = jsonl_lines(
        bulk_activation(ids, r["feature_index"], j, a) for r in records for j, a in enumerate(r["activations"])
    )
    fp, ap = d / "features" / f"batch-{k}.jsonl.gz", d / "activations" / f"batch-{k}.jsonl.gz"
    atomic_write_bytes(fp, _gz(feats))
    atomic_write_bytes(ap, _gz(acts))
    return fp, ap


def _release_row(ids: ExportIds, release_id: str, title: str) -> dict[str, Any]:
    """The bulk import's ``release.jsonl`` row."""
    return {
        "name": release_id,
        "description": title,
        "descriptionShort": title,
        "creatorName": ids.creator_name,
        "creatorNameShort": ids.creator_name,
        "creatorId": ids.creator_id,
        "creatorEmail": None,
        "visibility": "PUBLIC",
        "isNewUi": False,
        "featured": False,
        "urls": [],
        "defaultSourceSetName": ids.sae_set,
        "defaultSourceId": ids.source_id,
        "defaultUmapSourceIds": [],
        "createdAt": ids.created_at,
    }


def _model_row(ids: ExportIds) -> dict[str, Any]:
    """The bulk import's ``model.jsonl`` row."""
    return {
        "id": ids.model_id,
        "instruct": ids.model_id.endswith("-it"),
        "creatorId": ids.creator_id,
        "displayNameShort": ids.model_id,
        "displayName": ids.model_id,
        "tlensId": None,
        "dimension": ids.d_model or None,
        "visibility": "PUBLIC",
        "defaultSourceSetName": None,
        "defaultSourceId": None,
        "inferenceEnabled": False,
        "layers": ids.n_layers,
        "neuronsPerLayer": ids.d_model,
        "createdAt": ids.created_at,
        "owner": "",
        "updatedAt": ids.created_at,
        "website": None,
    }


def _sourceset_row(ids: ExportIds, release_id: str) -> dict[str, Any]:
    """The bulk import's ``sourceset.jsonl`` row."""
    return {
        "modelId": ids.model_id,
        "name": ids.sae_set,
        "creatorId": ids.creator_id,
        "hasDashboards": True,
        "visibility": "PUBLIC",
        "description": ids.description or f"{ids.sae_set} ({ids.width} latents)",
        "type": "",
        "creatorName": ids.creator_name,
        "urls": [],
        "creatorEmail": None,
        "releaseName": release_id,
        "defaultOfModelId": None,
        "defaultRange": 1,
        "defaultShowBreaks": True,
        "showDfa": False,
        "showCorrelated": True,
        "showHeadAttribution": False,
        "showUmap": False,
        "createdAt": ids.created_at,
    }


def _source_row(ids: ExportIds) -> dict[str, Any]:
    """The bulk import's ``source.jsonl`` row."""
    return {
        "id": ids.source_id,
        "modelId": ids.model_id,
        "setName": ids.sae_set,
        "creatorId": ids.creator_id,
        "hasDashboards": True,
        "inferenceEnabled": False,
        "inferenceHosts": [],
        "saelensConfig": None,
        "saelensRelease": None,
        "saelensSaeId": None,
        "hfRepoId": None,
        "hfFolderId": None,
        "visibility": "PUBLIC",
        "defaultOfModelId": None,
        "hasUmap": False,
        "hasUmapLogSparsity": False,
        "hasUmapClusters": False,
        "num_prompts": ids.n_prompts,
        "num_tokens_in_prompt": ids.prompt_len,
        "dataset": ids.dataset,
        "notes": ids.description or None,
        "createdAt": ids.created_at,
    }


def write_bulk_headers(root: Path, ids: ExportIds) -> list[Path]:
    """Write ``release.jsonl``, ``model.jsonl``, ``sourceset.jsonl`` and ``source.jsonl``."""
    d = bulk_dir(root, ids)
    d.mkdir(parents=True, exist_ok=True)
    release_id = ids.release_id or ids.sae_set
    title = ids.release_title or f"tempolens dashboards: {ids.model_id} {ids.source_id}"
    rows = {
        "release.jsonl": _release_row(ids, release_id, title),
        "model.jsonl": _model_row(ids),
        "sourceset.jsonl": _sourceset_row(ids, release_id),
        "source.jsonl": _source_row(ids),
    }
    paths = []
    for name, row in rows.items():
        p = d / name
        atomic_write_bytes(p, dumps_bytes(row) + b"\n")
        paths.append(p)
    return paths


def ids_dict(ids: ExportIds) -> dict[str, Any]:
    return {**asdict(ids), "source_id": ids.source_id}


# ------------------------------------------------------------------------------------- explanations

EXPLANATION_TYPES = {"saebench": "tempolens-saebench", "delphi": "tempolens-delphi"}
"""Neuronpedia ``typeName`` per explainer protocol of ``tempolens autointerp``."""
SCORER_PROTOCOL = {
    "saebench": "saebench",
    "embedding": "saebench",
    "delphi-detection": "delphi",
    "delphi-fuzzing": "delphi",
}
"""Which protocol's explanation a scorer judged (with a shared explanation, the SAEBench one)."""


@dataclass
class LatentExplanations:
    """One latent's explanations (per explainer protocol), scores and the answer mode of each score."""

    explanations: dict[str, str]
    scores: dict[str, float] = field(default_factory=dict)
    modes: dict[str, str] = field(default_factory=dict)


@dataclass
class AutointerpExport:
    """What ``tempolens autointerp`` wrote for one SAE, as the explanations export needs it."""

    model_name: str
    """Name of the explainer model (Neuronpedia ``explanationModelName``), e.g. ``gpt-4o-mini``."""
    latents: dict[int, LatentExplanations]


_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def explainer_model_name(judge: str | None) -> str:
    """``openai:MODEL@URL`` / ``local:FILE`` (the report's judge) → a Neuronpedia model-type name."""
    if not judge:
        return "unknown"
    name = judge.split(":", 1)[1] if judge.startswith(("openai:", "local:")) else judge
    name = name.split("@", 1)[0].removesuffix(".gguf")
    return (_NAME.sub("-", name.rsplit("/", 1)[-1]).strip("-") or "unknown")[:128]


def load_autointerp_export(path: Path) -> AutointerpExport:
    """Read ``latents-<label>.json`` (and ``report.json`` beside it for the explainer's name), strictly:
    untrusted files stay data; entries without a string explanation are skipped, scores must be finite."""
    from tempolens.errors import ConfigError

    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"--autointerp {path} is not a readable JSON file ({e})") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"--autointerp {path} must hold a JSON object mapping latent ids to entries")
    judge = None
    rep = path.parent / "report.json"
    if rep.is_file():
        try:
            j = json.loads(rep.read_text()).get("judge")
            judge = j if isinstance(j, str) else None
        except (OSError, json.JSONDecodeError, AttributeError):
            judge = None
    out: dict[int, LatentExplanations] = {}
    for key, val in raw.items():
        if not (isinstance(key, str) and key.isdigit()) or not isinstance(val, dict):
            raise ConfigError(f"--autointerp {path}: entry {key!r} is not latent id → object")
        expl = val.get("explanations") if isinstance(val.get("explanations"), dict) else {}
        expl = {k: v for k, v in expl.items() if k in EXPLANATION_TYPES and isinstance(v, str) and v.strip()}
        if not expl and isinstance(val.get("explanation"), str) and val["explanation"].strip():
            expl = {"saebench": val["explanation"]}
        if not expl:
            continue
        scores_in = val.get("scores") if isinstance(val.get("scores"), dict) else {}
        scores = {
            k: float(v)
            for k, v in scores_in.items()
            if isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        }
        modes_in = val.get("modes") if isinstance(val.get("modes"), dict) else {}
        modes = {k: v for k, v in modes_in.items() if isinstance(k, str) and isinstance(v, str)}
        out[int(key)] = LatentExplanations(explanations=expl, scores=scores, modes=modes)
    return AutointerpExport(model_name=explainer_model_name(judge), latents=out)


def explanation_id(ids: ExportIds, index: int, type_name: str) -> str:
    """A deterministic 25-character id for one explanation row."""
    h = hashlib.sha256(f"{ids.model_id}/{ids.source_id}/{index}/explanation/{type_name}".encode()).hexdigest()
    return "tx" + h[:23]


def _judged(scorer: str, entry: LatentExplanations) -> str:
    """The protocol whose explanation ``scorer`` judged: its own, else the shared SAEBench one."""
    own = SCORER_PROTOCOL[scorer]
    return own if own in entry.explanations else "saebench"


def bulk_explanations(ids: ExportIds, index: int, entry: LatentExplanations, model_name: str) -> list[dict[str, Any]]:
    """Neuronpedia ``Explanation`` rows of one latent (one per explainer protocol)."""
    rows = []
    for protocol, description in sorted(entry.explanations.items()):
        type_name = EXPLANATION_TYPES[protocol]
        judged = [s for s in entry.scores if s in SCORER_PROTOCOL and _judged(s, entry) == protocol]
        notes = "; ".join(
            f"{s} {entry.scores[s]:.4g}" + (f" ({entry.modes[s]})" if s in entry.modes else "") for s in sorted(judged)
        )
        rows.append(
            {
                "id": explanation_id(ids, index, type_name),
                "modelId": ids.model_id,
                "layer": ids.source_id,
                "index": str(index),
                "description": description,
                "authorId": ids.creator_id,
                "typeName": type_name,
                "explanationModelName": model_name,
                "notes": f"tempolens autointerp scores: {notes}" if notes else None,
                "createdAt": ids.created_at,
                "updatedAt": ids.created_at,
            }
        )
    return rows


def write_bulk_explanations(
    root: Path, k: int, indices: Sequence[int], export: AutointerpExport, ids: ExportIds
) -> Path | None:
    """Write ``explanations/batch-<k>.jsonl.gz`` for the latents ``indices`` (None when none has one)."""
    rows = [
        r
        for i in indices
        if i in export.latents
        for r in bulk_explanations(ids, i, export.latents[i], export.model_name)
    ]
    if not rows:
        return None
    d = bulk_dir(root, ids) / "explanations"
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"batch-{k}.jsonl.gz"
    atomic_write_bytes(path, _gz(jsonl_lines(rows)))
    return path
