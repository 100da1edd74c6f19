"""``conf.yaml`` of a Temporal SAE: read what the forward pass reads, refuse only what would change it.

The authors' training code dumps its whole run configuration next to the checkpoint: besides the
fields that shape the forward pass it carries the architecture name (``sae.sae_type``), training
knobs (``gamma_reg``, ``encoder_reg``, optimizer, logging, hydra ...) and data settings. This module
sorts every key into one of four groups (docs/checkpoints.md lists them with reasons):

* ``READ``: validated and used to build the SAE (``llm.dimin``, ``sae.exp_factor`` ...);
* ``CHECKED``: validated against the one value tempolens implements, refused otherwise
  (``sae.sae_type`` must name the temporal architecture, ``sae.use_pos_encoding`` must be false);
* ``KNOWN_IGNORED``: known training or run settings that do not change inference; recorded in the
  SAE's metadata under ``conf_ignored`` (so a store's ``meta.json`` carries them), silently;
* anything else is *unknown*: recorded the same way and mentioned once on stderr as a note; refused
  with ``strict=True`` (``--sae-strict`` on the command line).

``llm`` keys other than ``dimin`` describe the subject model and are kept under ``metadata.llm``;
the optional ``tempolens`` section is tempolens's own provenance (``save_temporal_sae`` writes it).
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from tempolens.errors import ConfigError, SourceError
from tempolens.saes.temporal import TemporalConfig

TEMPORAL_CONF = "conf.yaml"

READ: dict[str, frozenset[str]] = {
    "llm": frozenset({"dimin", "scaling_factor"}),
    "sae": frozenset(
        {
            "exp_factor",
            "n_heads",
            "sae_diff_type",
            "kval_topk",
            "tied_weights",
            "n_attn_layers",
            "bottleneck_factor",
            "scaling_factor",
        }
    ),
    "data": frozenset({"dtype", "scaling_factor"}),
}
"""Keys whose values build the SAE (``scaling_factor`` is read from ``sae``, else ``data``, else ``llm``)."""

CHECKED: dict[str, frozenset[str]] = {"sae": frozenset({"sae_type", "use_pos_encoding"})}
"""Keys accepted only with the value tempolens implements; any other value is a one-line error."""

KNOWN_IGNORED: dict[str, frozenset[str]] = {
    "": frozenset(
        {
            "deploy",
            "tag",
            "seed",
            "device_id",
            "device",
            "device_ids",
            "num_gpus",
            "epochs",
            "defaults",
            "hydra",
            "optimizer",
            "eval",
            "log",
        }
    ),
    "llm": frozenset({"model_hf_name", "tokenizer_hf_name", "layer"}),
    "sae": frozenset(
        {
            "block_id",
            "gamma_reg",
            "encoder_reg",
            "inference_mode_batchtopk",
            "min_act_regularizer_batchtopk",
            "max_seq_len",
        }
    ),
    "data": frozenset(
        {
            "epochs",
            "num_total_steps",
            "context_length",
            "batch_size",
            "per_gpu_batch_size",
            "hf_name",
            "num_workers",
            "cache_dir",
        }
    ),
}
"""Training and run settings of the authors' configs that the forward pass never reads
(top level: ``""``). ``max_seq_len`` only sizes positional encodings, which must be off."""

OWN_SECTIONS = frozenset({"tempolens"})
"""Sections tempolens itself writes (provenance)."""

TEMPORAL_SAE_TYPES = frozenset({"temporal", "temporalsae"})
"""``sae.sae_type`` values (lower-cased, without ``-``, ``_`` or spaces) that name the temporal architecture."""

IGNORED_METADATA_KEY = "conf_ignored"
"""Metadata key under which ignored conf.yaml keys (dotted path → value) are recorded."""

_noted: set[tuple[str, tuple[str, ...]]] = set()


def is_int(v: Any) -> bool:
    """Whether ``v`` is an integer (a ``bool`` is not)."""
    return isinstance(v, int) and not isinstance(v, bool)


def _as_float(v: Any) -> float | None:
    """A YAML number as float (PyYAML reads ``1e-3`` without a dot as a string: accept that too)."""
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            f = float(v)
        except ValueError:
            return None
        return f if math.isfinite(f) else None
    return None


def json_safe(v: Any) -> Any:
    """``v`` with mappings/lists kept and every other non-scalar turned into its ``str``."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v if not (isinstance(v, float) and not math.isfinite(v)) else str(v)
    if isinstance(v, Mapping):
        return {str(k): json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    return str(v)


def is_temporal_sae_type(value: Any) -> bool:
    """Whether a ``sae.sae_type`` value names the temporal architecture (case and ``-``/``_`` ignored)."""
    return isinstance(value, str) and re.sub(r"[\s_\-]", "", value).lower() in TEMPORAL_SAE_TYPES


def sort_keys(conf: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``(ignored, unknown)``: every key the forward pass does not read (dotted path → value) and the
    dotted paths among them that are not in ``KNOWN_IGNORED``."""
    ignored: dict[str, Any] = {}
    unknown: list[str] = []
    for key, value in conf.items():
        k = str(key)
        if k in OWN_SECTIONS or k in ("llm",):
            continue
        if k in READ or k in CHECKED:
            if not isinstance(value, Mapping):
                continue  # the parser reports a section of the wrong type
            for sub, v in value.items():
                s = str(sub)
                if s in READ.get(k, ()) or s in CHECKED.get(k, ()):
                    continue
                ignored[f"{k}.{s}"] = v
                if s not in KNOWN_IGNORED.get(k, ()):
                    unknown.append(f"{k}.{s}")
            continue
        ignored[k] = value
        if k not in KNOWN_IGNORED[""]:
            unknown.append(k)
    llm = conf.get("llm")
    if isinstance(llm, Mapping):
        for sub, v in llm.items():
            s = str(sub)
            if s not in READ["llm"] and s not in KNOWN_IGNORED["llm"]:
                ignored[f"llm.{s}"] = v
                unknown.append(f"llm.{s}")
    return ignored, unknown


def _note(source: str, unknown: list[str]) -> None:
    """Say once per process and file which unknown keys were ignored (stderr; never an error)."""
    key = (source, tuple(unknown))
    if key in _noted:
        return
    _noted.add(key)
    shown = ", ".join(unknown[:8]) + (f" (+{len(unknown) - 8} more)" if len(unknown) > 8 else "")
    print(
        f"tempolens: note: {source}: ignoring keys tempolens does not know: {shown}; the forward pass does not read "
        f"them, they are recorded in the SAE metadata ({IGNORED_METADATA_KEY}); --sae-strict refuses them",
        file=sys.stderr,
    )


class _ConfReader:
    """Typed field access to the sections of one ``conf.yaml``; every error names the field and the file."""

    def __init__(self, sections: dict[str, Mapping[str, Any]], source: str) -> None:
        self.sections = sections
        self.source = source

    def fail(self, msg: str) -> ConfigError:
        return ConfigError(f"{self.source}: {msg}")

    def get(self, sec_name: str, key: str) -> Any:
        sec = self.sections[sec_name]
        if key not in sec:
            raise self.fail(f"missing field {sec_name}.{key}")
        return sec[key]

    def get_int(self, sec_name: str, key: str, minimum: int = 1) -> int:
        v = self.get(sec_name, key)
        if not is_int(v) or v < minimum:
            raise self.fail(f"{sec_name}.{key} must be an integer ≥ {minimum}; got {v!r}")
        return int(v)

    def get_pos_float(self, sec_name: str, key: str) -> float:
        v = self.get(sec_name, key)
        f = _as_float(v)
        if f is None or f <= 0:
            raise self.fail(f"{sec_name}.{key} must be a positive number; got {v!r}")
        return f


def _read_sections(conf: Mapping[str, Any], source: str) -> _ConfReader:
    """The ``llm`` and ``sae`` sections (both required mappings); ``data``, when present, must be a mapping."""

    def fail(msg: str) -> ConfigError:
        return ConfigError(f"{source}: {msg}")

    if not isinstance(conf, Mapping):
        raise fail("must be a YAML mapping with sections llm and sae")
    sections = {}
    for name in ("llm", "sae"):
        sec = conf.get(name)
        if sec is None:
            raise fail(f"missing section '{name}'")
        if not isinstance(sec, Mapping):
            raise fail(f"section '{name}' must be a mapping; got {type(sec).__name__}")
        sections[name] = sec
    data = conf.get("data")
    if data is not None and not isinstance(data, Mapping):
        raise fail("section 'data' must be a mapping")
    return _ConfReader(sections, source)


def _check_keys(conf: Mapping[str, Any], r: _ConfReader, strict: bool) -> tuple[dict[str, Any], list[str]]:
    """Refuse the keys whose value would change inference (and, when ``strict``, unknown keys);
    return ``sort_keys(conf)``: the ignored keys and the unknown ones among them."""
    sae = r.sections["sae"]
    if "sae_type" in sae and not is_temporal_sae_type(sae["sae_type"]):
        raise r.fail(
            f"sae.sae_type is {sae['sae_type']!r}, not a Temporal SAE; give a folder of a Temporal SAE "
            "(sae_type: temporal), or a SAELens folder (cfg.json) for a standard SAE"
        )
    if sae.get("use_pos_encoding"):
        raise r.fail("sae.use_pos_encoding is true; Temporal SAEs with positional encodings are not supported")
    ignored, unknown = sort_keys(conf)
    if unknown and strict:
        more = f" (and {', '.join(unknown[1:4])}{' ...' if len(unknown) > 4 else ''})" if len(unknown) > 1 else ""
        raise r.fail(
            f"unknown field {unknown[0]}{more}; strict mode refuses keys tempolens does not know — remove it if it is "
            "training-only, or load without strict (--no-sae-strict, strict_config=False)"
        )
    return ignored, unknown


def _forward_fields(conf: Mapping[str, Any], r: _ConfReader) -> dict[str, Any]:
    """The validated fields that shape the forward pass, as ``TemporalConfig`` keyword arguments."""
    d_in = r.get_int("llm", "dimin")
    exp = r.get_pos_float("sae", "exp_factor")
    width = int(d_in * exp)
    diff = r.get("sae", "sae_diff_type")
    if diff not in ("topk", "relu"):
        raise r.fail(f"sae.sae_diff_type must be topk or relu (the types tempolens reads); got {diff!r}")
    k_raw = r.get("sae", "kval_topk")
    if diff == "topk":
        if not is_int(k_raw) or not 1 <= k_raw <= width:
            raise r.fail(f"sae.kval_topk must be an integer in [1, {width}] for sae_diff_type topk; got {k_raw!r}")
        k: int | None = int(k_raw)
    else:
        if k_raw is not None and not is_int(k_raw):
            raise r.fail(f"sae.kval_topk must be an integer or null; got {k_raw!r}")
        k = None
    tied = r.get("sae", "tied_weights")
    if not isinstance(tied, bool):
        raise r.fail(f"sae.tied_weights must be true or false; got {tied!r}")
    n_heads = r.get_int("sae", "n_heads")
    n_layers = r.get_int("sae", "n_attn_layers")
    bottleneck = r.get_int("sae", "bottleneck_factor")
    scale = _scaling_factor(conf, r)
    data = conf.get("data")
    if isinstance(data, Mapping) and "dtype" in data and not isinstance(data["dtype"], str):
        raise r.fail(f"data.dtype must be a string such as float32 or bfloat16; got {data['dtype']!r}")
    return dict(
        d_in=d_in,
        width=width,
        k=k,
        sae_diff_type=diff,
        n_heads=n_heads,
        n_attn_layers=n_layers,
        bottleneck_factor=bottleneck,
        tied=tied,
        scaling_factor=scale,
    )


def _scaling_factor(conf: Mapping[str, Any], r: _ConfReader) -> float:
    """``scaling_factor`` from ``sae``, else ``data``, else ``llm`` (some training dumps keep it there)."""
    scale_section = "sae"
    if "scaling_factor" not in r.sections["sae"]:
        for name in ("data", "llm"):
            sec = conf.get(name)
            if isinstance(sec, Mapping) and "scaling_factor" in sec:
                r.sections[name], scale_section = sec, name
                break
        else:
            raise r.fail(
                "missing field sae.scaling_factor (the activation scaling factor s = 1/mean‖x‖, "
                "e.g. 0.00666666667 for Gemma-2-2B layer 12); add it to the file"
            )
    return r.get_pos_float(scale_section, "scaling_factor")


def _conf_metadata(conf: Mapping[str, Any], r: _ConfReader, ignored: Mapping[str, Any]) -> dict[str, Any]:
    """The SAE metadata a ``conf.yaml`` carries: tempolens provenance, the subject model's ``llm`` keys,
    the trained dtype and ``sae_type``, and the ignored keys under ``IGNORED_METADATA_KEY``."""
    llm, sae, data = r.sections["llm"], r.sections["sae"], conf.get("data")
    metadata: dict[str, Any] = {}
    extra = conf.get("tempolens")
    if isinstance(extra, Mapping):
        metadata.update({str(kk): v for kk, v in extra.items()})
    llm_info = {str(kk): v for kk, v in llm.items() if kk != "dimin" and isinstance(v, (str, int, float, bool))}
    if llm_info:
        metadata.setdefault("llm", llm_info)
    if isinstance(data, Mapping) and isinstance(data.get("dtype"), str):
        metadata.setdefault("trained_dtype", data["dtype"])
    if "sae_type" in sae:
        metadata.setdefault("sae_type", str(sae["sae_type"]))
    if ignored:
        metadata[IGNORED_METADATA_KEY] = json_safe(ignored)
    return metadata


def parse_temporal_conf(conf: Mapping[str, Any], source: str = TEMPORAL_CONF, strict: bool = False) -> TemporalConfig:
    """Validate a Temporal SAE ``conf.yaml`` mapping and return its ``TemporalConfig``.

    Missing or wrongly typed forward-pass fields, a ``sae.sae_type`` other than the temporal one and
    keys known to change inference raise ``ConfigError`` naming the field and ``source``. Keys the
    forward pass does not read are recorded in ``metadata["conf_ignored"]``; unknown ones are noted
    on stderr, or refused when ``strict``.
    """
    r = _read_sections(conf, source)
    ignored, unknown = _check_keys(conf, r, strict)
    fields = _forward_fields(conf, r)
    metadata = _conf_metadata(conf, r, ignored)
    try:
        cfg = TemporalConfig(**fields, metadata=metadata)
    except ConfigError as e:
        raise r.fail(str(e)) from None
    if unknown:
        _note(source, unknown)
    return cfg


def read_temporal_conf(path: str | Path, strict: bool = False) -> TemporalConfig:
    """Read and validate ``conf.yaml`` (``yaml.safe_load``: no Python tags)."""
    path = Path(path)
    try:
        conf = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        text = str(e).strip()
        raise ConfigError(f"{path}: not valid YAML ({text.splitlines()[0] if text else type(e).__name__})") from None
    except OSError as e:
        raise SourceError(f"cannot read {path} ({e.strerror})") from None
    return parse_temporal_conf(conf, source=str(path), strict=strict)
