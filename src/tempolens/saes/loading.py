"""Load any SAE from a spec string, safely; save SAEs in the published layouts.

``load_sae(spec)`` accepts:

* a local folder (or a file inside it) holding either a **Temporal SAE** — ``conf.yaml`` plus
  ``latest_ckpt.safetensors`` or ``latest_ckpt.pt`` (weights under the key ``sae`` or at the top
  level; ``b`` as ``[d_in]`` or ``[1, d_in]``) — or a **SAELens SAE** — ``cfg.json`` plus
  ``sae_weights.safetensors``;
* ``hf://owner/repo[@revision][/sub/folder]``: ``huggingface_hub.snapshot_download`` of only that
  sub-folder (works offline once cached), then the folder loader;
* ``saelens://release/sae_id``: ``sae_lens.SAE.from_pretrained`` (needs ``sae-lens``), converted
  into tempolens classes (``from_saelens``);
* ``random:temporal?...`` / ``random:topk?...``: freshly initialised SAEs (see
  ``tempolens.saes.random_init``; pass ``activation_sample`` when ``needs_activation_stats(spec)``);
* ``embedded``, ``embedded:temporal``, ``embedded:topk``: the SAEs shipped with the package.

Trust boundary (docs/temporal-sae.md). Weights are read with safetensors or ``torch.load(weights_only=True)``.
The published ``latest_ckpt.pt`` also pickles an OmegaConf config object. Before unpickling, the
checkpoint's globals are listed statically (``torch.serialization.get_unsafe_globals_in_checkpoint``):
if anything beyond the OmegaConf globals (``OMEGACONF_GLOBALS``; by default any ``omegaconf.*``
class) appears (``os.system``, ``builtins.eval`` ...), loading stops with ``UnsafeCheckpointError``
and nothing is executed.
Otherwise the weights-only unpickler runs with those names mapped to *inert stand-ins* that accept
and discard the config's state — no OmegaConf code runs and omegaconf need not be installed (the
config that counts is ``conf.yaml``). ``allow_pickled_config=True`` maps them to the real OmegaConf
classes instead (``read_checkpoint`` then returns the real config object; omegaconf must be
installed) — still inside the weights-only unpickler, which can build nothing else.

``conf.yaml`` is read as SAELens reads it — the fields that shape the forward pass, validated — and
everything else is sorted by ``tempolens.saes.temporal_conf``: ``sae.sae_type`` must name the
temporal architecture and keys that would change inference (``use_pos_encoding: true``) are refused;
every other key is recorded in the SAE's metadata (``conf_ignored``), and keys tempolens does not
know are also noted once on stderr, or refused with ``strict_config=True`` (``--sae-strict``).
``sae.scaling_factor`` is looked up in ``data``/``llm`` when the ``sae`` section lacks it.

``hf://`` specs answer offline from the local cache; a folder the cache lacks is reported as not
downloaded, with the ``huggingface-cli download`` command that fetches it (``tempolens.sources.hub``).
"""

from __future__ import annotations

import json
import math
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor

from tempolens.errors import ConfigError, SourceError, UnsafeCheckpointError
from tempolens.saes.base import SAE
from tempolens.saes.standard import NORMALIZATIONS, StandardConfig, StandardSAE
from tempolens.saes.temporal import TemporalConfig, TemporalSAE
from tempolens.saes.temporal_conf import (  # noqa: F401 - re-exported: the conf.yaml parser lives there
    IGNORED_METADATA_KEY,
    TEMPORAL_CONF,
    _is_int,
    parse_temporal_conf,
    read_temporal_conf,
)

TEMPORAL_CKPT_ST = "latest_ckpt.safetensors"
TEMPORAL_CKPT_PT = "latest_ckpt.pt"
SAELENS_CFG = "cfg.json"
SAELENS_WEIGHTS = "sae_weights.safetensors"
SAELENS_FORMAT_VERSION = "6.0.0"
"""Written as ``metadata.sae_lens_version`` so SAELens reads our ``cfg.json`` in its ≥6 format."""

OMEGACONF_GLOBALS: frozenset[str] = frozenset(
    {
        "omegaconf.dictconfig.DictConfig",
        "omegaconf.listconfig.ListConfig",
        "omegaconf.base.ContainerMetadata",
        "omegaconf.base.Metadata",
        "omegaconf.nodes.AnyNode",
        "omegaconf.nodes.StringNode",
        "omegaconf.nodes.IntegerNode",
        "omegaconf.nodes.FloatNode",
        "omegaconf.nodes.BooleanNode",
        "omegaconf.nodes.BytesNode",
        "omegaconf.nodes.PathNode",
        "typing.Any",
        "collections.defaultdict",
        "builtins.dict",
        "builtins.list",
        "builtins.int",
        "builtins.float",
        "builtins.str",
        "builtins.bool",
    }
)
"""Every global a pickled OmegaConf ``DictConfig`` references (omegaconf 2.x): its container,
node and metadata classes, ``typing.Any`` and the builtin types used as ``ref_type``/``object_type``."""

_BUILTIN_TYPES = {"builtins.dict": dict, "builtins.list": list, "builtins.int": int, "builtins.float": float,
                  "builtins.str": str, "builtins.bool": bool}


# ------------------------------------------------------------------------------------------------
# Safe reading of torch checkpoints


class InertPickledObject:
    """Stand-in for a pickled config object: takes any constructor arguments and state, keeps
    nothing and runs no code."""

    __slots__ = ()

    def __new__(cls, *args: Any, **kwargs: Any) -> "InertPickledObject":
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __repr__(self) -> str:
        return "<pickled config (ignored)>"


_INERT_ANY = InertPickledObject()


def _inert_defaultdict(*args: Any) -> dict:
    return {}


def _config_globals(names: set[str], real: bool) -> list[tuple[Any, str]]:
    """(object, name) pairs for ``torch.serialization.safe_globals`` covering ``names``."""
    out: list[tuple[Any, str]] = []
    for name in sorted(names):
        if name in _BUILTIN_TYPES:
            out.append((_BUILTIN_TYPES[name], name))
        elif not real:  # every omegaconf.* class → InertPickledObject
            obj: Any = {"typing.Any": _INERT_ANY, "collections.defaultdict": _inert_defaultdict}.get(name, InertPickledObject)
            out.append((obj, name))
        else:
            module, _, attr = name.rpartition(".")
            if module.startswith("omegaconf"):
                try:
                    import importlib

                    obj = getattr(importlib.import_module(module), attr)
                except ImportError:
                    raise SourceError(
                        "allow_pickled_config=True needs omegaconf to rebuild the pickled config: pip install omegaconf "
                        "(or leave allow_pickled_config off: the config is then skipped and conf.yaml is used)"
                    ) from None
            elif name == "typing.Any":
                obj = Any
            else:
                import collections

                obj = collections.defaultdict
            out.append((obj, name))
    return out


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def pickle_globals(data: bytes, max_pickles: int = 8) -> list[str]:
    """``module.name`` of every global that the pickle(s) at the start of ``data`` import, in order,
    found by reading the opcodes (nothing is executed). A legacy torch file is several pickles in a
    row followed by raw storage bytes: reading stops at the first byte that is no pickle."""
    import _compat_pickle
    import io
    import pickletools

    found: list[str] = []
    stream = io.BytesIO(data)
    text_ops = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"}
    for _ in range(max_pickles):
        strings: list[str] = []  # recent string pushes: STACK_GLOBAL takes the last two (module, name)
        memo: dict[int, str | None] = {}
        last_str: str | None = None
        try:
            for op, arg, _pos in pickletools.genops(stream):
                pushed: str | None = None
                if op.name in ("GLOBAL", "INST") and isinstance(arg, str):
                    module, _, name = arg.partition(" ")
                    py3 = (_compat_pickle.IMPORT_MAPPING.get(module, module), name)
                    module, name = _compat_pickle.NAME_MAPPING.get((module, name), py3)
                    found.append(f"{module}.{name}")  # Python 2 names (protocols 0-2) as Python 3 loads them
                elif op.name in text_ops:
                    pushed = arg.decode("latin-1") if isinstance(arg, bytes) else str(arg)
                elif op.name == "MEMOIZE":
                    memo[len(memo)] = last_str
                elif op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
                    memo[int(arg)] = last_str
                elif op.name in ("GET", "BINGET", "LONG_BINGET"):
                    pushed = memo.get(int(arg))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(f"{strings[-2]}.{strings[-1]}")
                if pushed is not None:
                    strings.append(pushed)
                if op.name not in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):
                    last_str = pushed
        except Exception:  # noqa: BLE001 - not (or no longer) a pickle: the storage bytes
            break
        if stream.tell() >= len(data):
            break
    return list(dict.fromkeys(found))


def refused_globals(path: Path, message: str = "") -> list[str]:
    """The globals of a non-zip checkpoint that torch's weights-only unpickler does not allow (it
    names only the first, deep inside a long message); read from the opcodes, torch's message as fallback."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        safe = torch.serialization.get_safe_globals()
        allowed = set(_get_allowed_globals())
        allowed |= {f"{g.__module__}.{g.__qualname__}" for g in safe if hasattr(g, "__qualname__")}
    except Exception:  # noqa: BLE001 - private torch API: fall back to torch's message
        allowed = None
    names: list[str] = []
    if allowed is not None:
        try:
            with open(path, "rb") as f:
                data = f.read(64 << 20)
            names = [g for g in pickle_globals(data) if g not in allowed]
        except OSError:
            names = []
    if not names:
        import re

        names = re.findall(r"GLOBAL ([A-Za-z_][\w.]*)", message)
    return list(dict.fromkeys(names))


def read_checkpoint(path: str | Path, allow_pickled_config: bool = False) -> Any:
    """Read a torch checkpoint without executing code (see the module docstring).

    Raises ``UnsafeCheckpointError`` when the pickle references any global outside
    ``OMEGACONF_GLOBALS`` and torch's own weights-only allow-list.
    """
    path = Path(path)
    hint = "convert it to safetensors in a trusted environment (safetensors.torch.save_file(state_dict, ...))"
    zipped = True
    try:
        unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except ValueError:
        zipped = False  # not a zip checkpoint (legacy format): the weights-only unpickler still guards it
        unsafe = set()
    except Exception as e:  # noqa: BLE001 - torch raises many types for corrupt files
        raise SourceError(f"cannot read checkpoint {path} ({_first_line(e)}); is the download complete?") from None
    # inert stand-ins run no code whatever class they replace, so any omegaconf.* name may be
    # stood in for; real OmegaConf classes are admitted only from the exact list
    bad = sorted(g for g in unsafe - OMEGACONF_GLOBALS if allow_pickled_config or not g.startswith("omegaconf."))
    if bad:
        raise UnsafeCheckpointError(
            f"{path} would execute code when loaded (it references {', '.join(bad[:4])}{' ...' if len(bad) > 4 else ''}); "
            f"tempolens loads weights only — {hint}"
        )
    allowed = _config_globals(unsafe, real=allow_pickled_config)
    try:
        with torch.serialization.safe_globals(allowed):
            # mmap (zip checkpoints only) keeps a multi-GB checkpoint out of RAM until converted
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=zipped)
    except pickle.UnpicklingError as e:
        names = refused_globals(path, str(e))
        if names:
            raise UnsafeCheckpointError(
                f"{path} would execute code when loaded (it references {', '.join(names[:4])}"
                f"{' ...' if len(names) > 4 else ''}); tempolens loads weights only — {hint}"
            ) from None
        raise UnsafeCheckpointError(
            f"{path} cannot be loaded as weights only ({_first_line(e)[:200]}); {hint}"
        ) from None
    except Exception as e:  # noqa: BLE001
        raise SourceError(f"cannot read checkpoint {path} ({_first_line(e)[:200]}); is the download complete?") from None


def read_safetensors(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> dict[str, Tensor]:
    """All tensors of a safetensors file, converted one at a time to ``device``/``dtype`` (peak
    memory ≈ the result plus one tensor), with a clear error for a bad file."""
    from safetensors import safe_open

    try:
        out: dict[str, Tensor] = {}
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for key in f.keys():
                t = f.get_tensor(key)
                out[key] = t.to(device=device, dtype=dtype if dtype is not None and t.is_floating_point() else t.dtype)
        return out
    except Exception as e:  # noqa: BLE001 - safetensors raises several types
        raise SourceError(f"cannot read {path} ({_first_line(e)[:200]}); is the download complete?") from None


# ------------------------------------------------------------------------------------------------
# Temporal SAEs (conf.yaml itself: tempolens.saes.temporal_conf)


def temporal_expected_shapes(cfg: TemporalConfig) -> dict[str, tuple[int, ...]]:
    """Weight name → shape of a Temporal SAE with ``cfg`` (``b`` as ``[d_in]``)."""
    W, d, qk = cfg.width, cfg.d_in, cfg.qk_dim
    shapes: dict[str, tuple[int, ...]] = {"D": (W, d), "b": (d,)}
    if not cfg.tied:
        shapes["E"] = (d, W)
    for i in range(cfg.n_attn_layers):
        p = f"attn_layers.{i}."
        shapes.update({
            p + "k_ctx.weight": (qk, W), p + "k_ctx.bias": (qk,),
            p + "q_target.weight": (qk, W), p + "q_target.bias": (qk,),
            p + "v_ctx.weight": (W, W), p + "v_ctx.bias": (W,),
            p + "c_proj.weight": (W, W), p + "c_proj.bias": (W,),
        })
    return shapes


def _check_weights(weights: Mapping[str, Tensor], expected: Mapping[str, tuple[int, ...]], where: str, conf_hint: str) -> None:
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append("missing " + ", ".join(missing[:4]) + (" ..." if len(missing) > 4 else ""))
        if unexpected:
            parts.append("unexpected " + ", ".join(unexpected[:4]) + (" ..." if len(unexpected) > 4 else ""))
        raise SourceError(f"{where}: weights do not match {conf_hint}: {'; '.join(parts)}")
    for key, shape in expected.items():
        got = tuple(weights[key].shape)
        if got != shape and not (key == "b" and got == (1, *shape)):
            raise SourceError(f"{where}: {key} has shape {list(got)} but {conf_hint} implies {list(shape)}")


def _temporal_weights(folder: Path, allow_pickled_config: bool, device: str | torch.device = "cpu",
                      dtype: torch.dtype | None = None) -> tuple[dict[str, Tensor], Path]:
    st, pt = folder / TEMPORAL_CKPT_ST, folder / TEMPORAL_CKPT_PT
    if st.is_file():
        return read_safetensors(st, device, dtype), st
    obj = read_checkpoint(pt, allow_pickled_config=allow_pickled_config)
    if not isinstance(obj, Mapping):
        raise SourceError(f"{pt}: expected a dict of weights (or one under 'sae'); got {type(obj).__name__}")
    inner = obj.get("sae")
    source = inner if isinstance(inner, Mapping) else obj
    weights = {str(k): v for k, v in source.items() if isinstance(v, Tensor)}
    return weights, pt


def build_temporal_sae(cfg: TemporalConfig, weights: Mapping[str, Tensor], where: str, device: str | torch.device = "cpu",
                       dtype: torch.dtype = torch.float32, conf_hint: str = TEMPORAL_CONF) -> TemporalSAE:
    """A ``TemporalSAE`` from a config and checkpoint weights (validated against each other)."""
    hint = f"{conf_hint} (llm.dimin={cfg.d_in}, width={cfg.width}, tied={cfg.tied}, n_attn_layers={cfg.n_attn_layers}, bottleneck_factor={cfg.bottleneck_factor})"
    _check_weights(weights, temporal_expected_shapes(cfg), where, hint)
    with torch.device("meta"):
        sae = TemporalSAE(cfg)
    sd = {k: v.to(device=device, dtype=dtype) for k, v in weights.items()}
    sae.load_state_dict(sd, strict=True, assign=True)
    return sae.eval()


def load_temporal_folder(folder: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                         allow_pickled_config: bool = False, strict_config: bool = False) -> TemporalSAE:
    """Load a Temporal SAE folder: ``conf.yaml`` + ``latest_ckpt.safetensors`` (preferred) or ``latest_ckpt.pt``."""
    folder = Path(folder)
    cfg = read_temporal_conf(folder / TEMPORAL_CONF, strict=strict_config)
    weights, where = _temporal_weights(folder, allow_pickled_config, device, dtype)
    return build_temporal_sae(cfg, weights, str(where), device, dtype, conf_hint=str(folder / TEMPORAL_CONF))


def _exp_factor(d_in: int, width: int) -> float | int:
    """An ``exp_factor`` with ``int(d_in · exp_factor) == width`` (the reference loader's rule)."""
    if width % d_in == 0:
        return width // d_in
    e = width / d_in
    while int(d_in * e) < width:
        e = math.nextafter(e, math.inf)
    while int(d_in * e) > width:
        e = math.nextafter(e, -math.inf)
    return e


def _yaml_safe(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, Mapping):
        return {str(k): _yaml_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_yaml_safe(x) for x in v]
    return str(v)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def save_temporal_sae(sae: TemporalSAE, folder: str | Path, dtype: torch.dtype | None = None,
                      metadata: Mapping[str, Any] | None = None) -> Path:
    """Write ``conf.yaml`` + ``latest_ckpt.safetensors`` (the canrager/SAELens layout, with
    ``sae.scaling_factor``; extra provenance under ``tempolens``). Atomic files; returns the folder.

    ``dtype`` (default: the SAE's) is the stored weight dtype; load → save → load is bit-exact.
    """
    from safetensors.torch import save as st_save

    from tempolens.fsutil import atomic_write_bytes

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    c = sae.cfg
    dtype = dtype or sae.D.dtype
    weights = {k: v.detach().to("cpu", dtype).contiguous() for k, v in sae.state_dict().items()}
    weights["b"] = weights["b"].reshape(-1)
    meta = dict(c.metadata)
    for own in ("trained_dtype", "sae_type", IGNORED_METADATA_KEY):  # described the file it was read from
        meta.pop(own, None)
    meta.update(metadata or {})
    conf: dict[str, Any] = {
        "llm": {"dimin": c.d_in},
        "sae": {
            "exp_factor": _exp_factor(c.d_in, c.width),
            "n_heads": c.n_heads,
            "sae_diff_type": c.sae_diff_type,
            "kval_topk": c.k,
            "tied_weights": c.tied,
            "n_attn_layers": c.n_attn_layers,
            "bottleneck_factor": c.bottleneck_factor,
            "scaling_factor": float(c.scaling_factor),
        },
        "data": {"dtype": _dtype_name(dtype)},
    }
    llm_meta = meta.pop("llm", None)
    if isinstance(llm_meta, Mapping):
        conf["llm"].update({str(k): v for k, v in llm_meta.items() if k != "dimin"})
    if meta:
        conf["tempolens"] = _yaml_safe(meta)
    atomic_write_bytes(folder / TEMPORAL_CKPT_ST, st_save(weights))
    atomic_write_bytes(folder / TEMPORAL_CONF, yaml.safe_dump(_yaml_safe(conf), sort_keys=False).encode())
    return folder


# ------------------------------------------------------------------------------------------------
# SAELens layout (standard SAEs)

_SAELENS_ARCH = {"standard": "relu", "relu": "relu", "topk": "topk", "jumprelu": "jumprelu", "batchtopk": "batchtopk"}
_META_KEYS = ("model_name", "hook_name", "hook_layer", "hook_head_index", "context_size", "prepend_bos",
              "dataset_path", "neuronpedia_id", "model_class_name")


def parse_saelens_cfg(cfg: Mapping[str, Any], source: str = SAELENS_CFG) -> StandardConfig:
    """A ``StandardConfig`` from a SAELens ``cfg.json`` mapping (≥6 layout and the older flat one)."""

    def fail(msg: str) -> ConfigError:
        return ConfigError(f"{source}: {msg}")

    if not isinstance(cfg, Mapping):
        raise fail("must be a JSON object")
    meta_in = cfg.get("metadata") if isinstance(cfg.get("metadata"), Mapping) else {}
    arch_raw = cfg.get("architecture")
    act_fn = cfg.get("activation_fn", cfg.get("activation_fn_str"))
    k = cfg.get("k")
    if arch_raw is None:  # pre-6 SAELens layout
        arch_raw = "standard"
        if act_fn == "topk":
            arch_raw, k = "topk", (cfg.get("activation_fn_kwargs") or {}).get("k")
    if arch_raw not in _SAELENS_ARCH:
        raise SourceError(f"{source}: architecture {arch_raw!r} is not supported (tempolens reads standard/relu, topk, batchtopk, jumprelu and temporal SAEs)")
    arch = _SAELENS_ARCH[arch_raw]
    if arch == "relu" and act_fn not in (None, "relu"):
        raise SourceError(f"{source}: activation function {act_fn!r} is not supported for a standard SAE")
    for key in ("d_in", "d_sae"):
        if not _is_int(cfg.get(key)) or cfg[key] < 1:
            raise fail(f"{key} must be a positive integer; got {cfg.get(key)!r}")
    norm = cfg.get("normalize_activations", "none")
    if isinstance(norm, bool):
        norm = "expected_average_only_in" if norm else "none"
    if norm not in NORMALIZATIONS:
        raise SourceError(f"{source}: normalize_activations={norm!r} is not supported (supported: {', '.join(NORMALIZATIONS)})")
    if cfg.get("reshape_activations", "none") not in ("none", None):
        raise SourceError(f"{source}: reshape_activations={cfg['reshape_activations']!r} is not supported (tempolens reads residual-stream SAEs)")
    apply_b = cfg.get("apply_b_dec_to_input", True)
    rescale = cfg.get("rescale_acts_by_decoder_norm", False)
    for key, v in (("apply_b_dec_to_input", apply_b), ("rescale_acts_by_decoder_norm", rescale)):
        if not isinstance(v, bool):
            raise fail(f"{key} must be true or false; got {v!r}")
    mode = "auto"
    has_threshold = arch == "jumprelu"
    if meta_in.get("tempolens_architecture") == "batchtopk":
        mode = meta_in.get("tempolens_batchtopk_mode", "threshold" if arch == "jumprelu" else "topk")
        arch, k = "batchtopk", meta_in.get("tempolens_k", k)
    if arch in ("topk", "batchtopk") and not _is_int(k):
        raise fail(f"k must be an integer for a {arch} SAE; got {k!r}")
    metadata = {str(kk): v for kk, v in meta_in.items() if not str(kk).startswith("tempolens_") and kk != "sae_lens_version"}
    for kk in _META_KEYS:
        if kk in cfg and kk not in metadata:
            metadata[kk] = cfg[kk]
    try:
        return StandardConfig(
            architecture=arch,  # type: ignore[arg-type]
            d_in=int(cfg["d_in"]),
            width=int(cfg["d_sae"]),
            k=int(k) if arch in ("topk", "batchtopk") else None,
            apply_b_dec_to_input=apply_b,
            normalize_activations=norm,
            rescale_acts_by_decoder_norm=rescale if arch in ("topk", "batchtopk") else False,
            batchtopk_mode=mode,  # type: ignore[arg-type]
            has_threshold=has_threshold,
            metadata=metadata,
        )
    except ConfigError as e:
        raise fail(str(e)) from None


def build_standard_sae(cfg: StandardConfig, weights: Mapping[str, Tensor], where: str, device: str | torch.device = "cpu",
                       dtype: torch.dtype = torch.float32) -> StandardSAE:
    """A ``StandardSAE`` from a config and SAELens-named weights; folds decoder-norm rescaling."""
    weights = dict(weights)
    if "log_threshold" in weights and "threshold" not in weights:
        weights["threshold"] = weights.pop("log_threshold").exp()
    if "topk_threshold" in weights:
        t = weights.pop("topk_threshold")
        if cfg.has_threshold and "threshold" not in weights:
            weights["threshold"] = t
    if "scaling_factor" in weights:  # SAELens finetuning scaling factor: only all-ones is a no-op
        sf = weights.pop("scaling_factor")
        if not torch.all(sf == 1):
            raise SourceError(f"{where}: a finetuning scaling_factor is not supported; fold it into W_dec with SAELens first")
    d, W = cfg.d_in, cfg.width
    expected: dict[str, tuple[int, ...]] = {"W_enc": (d, W), "b_enc": (W,), "W_dec": (W, d), "b_dec": (d,)}
    if cfg.has_threshold:
        expected["threshold"] = (W,)
        if "threshold" in weights and weights["threshold"].numel() == 1:
            weights["threshold"] = weights["threshold"].reshape(()).expand(W).clone()
    _check_weights(weights, expected, where, f"cfg.json (d_in={d}, d_sae={W}, architecture={cfg.architecture})")
    with torch.device("meta"):
        sae = StandardSAE(cfg)
    sae.load_state_dict({k: v.to(device=device, dtype=dtype) for k, v in weights.items()}, strict=True, assign=True)
    if cfg.rescale_acts_by_decoder_norm:
        sae.fold_decoder_norm()
    return sae.eval()


def load_standard_folder(folder: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> StandardSAE:
    """Load a SAELens folder: ``cfg.json`` + ``sae_weights.safetensors``."""
    folder = Path(folder)
    path = folder / SAELENS_CFG
    try:
        cfg_dict = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except OSError as e:
        raise SourceError(f"cannot read {path} ({e.strerror})") from None
    if cfg_dict.get("architecture") == "temporal":
        raise SourceError(f"{path}: a SAELens Temporal SAE folder; use the saelens:// spec or the conf.yaml layout")
    cfg = parse_saelens_cfg(cfg_dict, source=str(path))
    weights_path = folder / SAELENS_WEIGHTS
    return build_standard_sae(cfg, read_safetensors(weights_path, device, dtype), str(weights_path), device, dtype)


def save_standard_sae(sae: StandardSAE, folder: str | Path, dtype: torch.dtype | None = None,
                      metadata: Mapping[str, Any] | None = None) -> Path:
    """Write the SAELens layout (``cfg.json`` + ``sae_weights.safetensors``) that
    ``sae_lens.SAE.load_from_disk`` reads; relu → ``standard``; batchtopk → ``jumprelu`` (threshold)
    or ``topk``, restored as batchtopk by ``load_sae``. Atomic files; returns the folder."""
    from safetensors.torch import save as st_save

    from tempolens.fsutil import atomic_write_bytes

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    c = sae.cfg
    dtype = dtype or sae.W_dec.dtype
    weights = {k: v.detach().to("cpu", dtype).contiguous() for k, v in sae.state_dict().items()}
    meta: dict[str, Any] = {**c.metadata, **(metadata or {}), "sae_lens_version": SAELENS_FORMAT_VERSION}
    if c.architecture == "batchtopk":
        arch = "jumprelu" if c.has_threshold else "topk"
        meta["tempolens_architecture"] = "batchtopk"
        meta["tempolens_k"] = c.k
        meta["tempolens_batchtopk_mode"] = c.batchtopk_mode
    else:
        arch = {"relu": "standard", "topk": "topk", "jumprelu": "jumprelu"}[c.architecture]
    cfg: dict[str, Any] = {
        "architecture": arch,
        "d_in": c.d_in,
        "d_sae": c.width,
        "dtype": _dtype_name(dtype),
        "device": "cpu",
        "apply_b_dec_to_input": c.apply_b_dec_to_input,
        "normalize_activations": c.normalize_activations,
        "reshape_activations": "none",
        "metadata": _yaml_safe(meta),
    }
    if arch == "topk":
        cfg["k"] = c.k
        cfg["rescale_acts_by_decoder_norm"] = c.rescale_acts_by_decoder_norm
    atomic_write_bytes(folder / SAELENS_WEIGHTS, st_save(weights))
    atomic_write_bytes(folder / SAELENS_CFG, (json.dumps(cfg, indent=2) + "\n").encode())
    return folder


# ------------------------------------------------------------------------------------------------
# SAELens objects → tempolens


def from_saelens(sl_sae: Any, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> SAE:
    """Convert a loaded ``sae_lens`` SAE (standard, topk, jumprelu or temporal) into a tempolens SAE."""
    cfg_dict = sl_sae.cfg.to_dict()
    state = {k: v.detach().cpu() for k, v in sl_sae.state_dict().items()}
    arch = cfg_dict.get("architecture")
    where = f"SAELens {arch} SAE"
    if arch == "temporal":
        norm = cfg_dict.get("normalize_activations", "none")
        if norm == "constant_scalar_rescale":
            scale = float(cfg_dict.get("activation_normalization_factor", 1.0))
        elif norm == "none":
            scale = 1.0
        else:
            raise SourceError(f"{where}: normalize_activations={norm!r} is not supported for Temporal SAEs")
        if not cfg_dict.get("apply_b_dec_to_input", True) and bool(state["b_dec"].abs().sum() > 0):
            raise SourceError(f"{where}: apply_b_dec_to_input=False with a nonzero b is not the published Temporal SAE forward pass")
        tcfg = TemporalConfig(
            d_in=int(cfg_dict["d_in"]), width=int(cfg_dict["d_sae"]), k=cfg_dict.get("kval_topk") if cfg_dict.get("sae_diff_type") == "topk" else None,
            sae_diff_type=cfg_dict.get("sae_diff_type", "topk"), n_heads=int(cfg_dict["n_heads"]),
            n_attn_layers=int(cfg_dict["n_attn_layers"]), bottleneck_factor=int(cfg_dict["bottleneck_factor"]),
            tied=bool(cfg_dict.get("tied_weights", True)), scaling_factor=scale,
            metadata={k: v for k, v in (cfg_dict.get("metadata") or {}).items() if isinstance(v, (str, int, float, bool))},
        )
        weights = {k: v for k, v in state.items() if k.startswith("attn_layers.")}
        weights["D"], weights["b"] = state["W_dec"], state["b_dec"]
        if not tcfg.tied:
            weights["E"] = state["W_enc"]
        return build_temporal_sae(tcfg, weights, where, device, dtype, conf_hint="the SAELens config")
    cfg = parse_saelens_cfg(cfg_dict, source=where)
    return build_standard_sae(cfg, state, where, device, dtype)


# ------------------------------------------------------------------------------------------------
# Specs

_HF_RE = re.compile(r"^hf://(?P<owner>[\w.\-]+)/(?P<repo>[\w.\-]+)(?:@(?P<rev>[^/]+))?(?:/(?P<sub>.+?))?/?$")


def _sae_file_missing(folder: Path) -> str | None:
    """The first file an SAE folder still lacks (None: a complete SAE folder, or one SAE sub-folder)."""
    if _holds_sae(folder) or len(_sae_subfolders(folder)) == 1:
        return None
    if (folder / TEMPORAL_CONF).is_file():
        return f"{TEMPORAL_CKPT_ST} (or {TEMPORAL_CKPT_PT})"
    if (folder / SAELENS_CFG).is_file():
        return SAELENS_WEIGHTS
    return f"{TEMPORAL_CONF} and its checkpoint"


def _download_hf(spec: str) -> Path:
    """The local folder of ``hf://owner/repo[@rev][/sub]``: downloaded, or from the local cache
    offline. A folder the cache lacks is reported as not downloaded (with the command that fetches
    it); "no such folder" is said only when the hub itself answered so."""
    m = _HF_RE.match(spec)
    if not m:
        raise ConfigError(f"bad hub spec {spec!r}; write hf://owner/repo[@revision][/sub/folder]")
    repo_id = f"{m['owner']}/{m['repo']}"
    sub, rev = m["sub"] or "", m["rev"]
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
    except ImportError:  # pragma: no cover - a core dependency
        raise SourceError("hf:// specs need huggingface_hub: pip install huggingface_hub") from None
    from tempolens.sources.hub import hub_cache_dir, hub_offline, is_connection_error, not_cached_message

    include = f"{sub}/*" if sub else None
    where = f"the folder {sub}" if sub else "the repository"

    def not_cached(missing: str) -> SourceError:
        return SourceError(f"{spec}: " + not_cached_message(where, repo_id, missing, include, rev))

    try:
        local = snapshot_download(repo_id, revision=rev, allow_patterns=[include] if include else None,
                                  cache_dir=hub_cache_dir())
    except LocalEntryNotFoundError:  # offline or unreachable, and not (completely) cached
        raise not_cached(f"{sub + '/' if sub else ''}{TEMPORAL_CONF}") from None
    except (RepositoryNotFoundError, RevisionNotFoundError) as e:
        raise SourceError(
            f"{spec}: the hub has no repository {repo_id}{'@' + rev if rev else ''} you can read "
            f"({type(e).__name__}); check the name, or run `hf auth login` for a private or gated one"
        ) from None
    except Exception as e:  # noqa: BLE001 - hub errors: gated, HTTP
        if is_connection_error(e):
            raise not_cached(f"{sub + '/' if sub else ''}{TEMPORAL_CONF}") from None
        raise SourceError(f"cannot fetch {spec} from the Hugging Face hub ({type(e).__name__}: {_first_line(e)[:200]})") from None
    folder = Path(local) / sub
    missing = _sae_file_missing(folder) if folder.is_dir() else f"{sub}/{TEMPORAL_CONF}"
    if missing is None:
        return folder
    if hub_offline() or not folder.is_dir() and _hub_has_folder(repo_id, sub, rev) is not False:
        raise not_cached(missing if folder.is_dir() else f"{sub}/{TEMPORAL_CONF}")
    if not folder.is_dir():
        raise SourceError(f"{spec}: the hub says the repository {repo_id} has no folder {sub!r}")
    return folder  # downloaded, but no SAE in it: load_folder says what it found


def _hub_has_folder(repo_id: str, sub: str, rev: str | None) -> bool | None:
    """Ask the hub whether ``sub`` exists in the repo: True/False, or None when it cannot be reached."""
    from huggingface_hub import HfApi

    from tempolens.sources.hub import is_connection_error

    try:
        next(iter(HfApi().list_repo_tree(repo_id, path_in_repo=sub, revision=rev)), None)
    except Exception as e:  # noqa: BLE001 - not found, or no connection
        return None if is_connection_error(e) else False
    return True


def _load_saelens_release(spec: str, device: str | torch.device, dtype: torch.dtype) -> SAE:
    rest = spec[len("saelens://"):]
    release, _, sae_id = rest.partition("/")
    if not release or not sae_id:
        raise ConfigError(f"bad SAELens spec {spec!r}; write saelens://<release>/<sae_id>")
    try:
        import sae_lens
    except ImportError:
        raise SourceError("saelens:// specs need sae-lens: pip install 'tempolens[saelens]' (or sae-lens>=6.20)") from None
    try:
        sl = sae_lens.SAE.from_pretrained(release, sae_id, device="cpu")
    except Exception as e:  # noqa: BLE001 - SAELens raises ValueError/HTTP/OSError
        raise SourceError(f"SAELens could not load {release}/{sae_id} ({type(e).__name__}: {_first_line(e)[:200]})") from None
    return from_saelens(sl, device=device, dtype=dtype)


def _holds_sae(path: Path) -> bool:
    ckpt = (path / TEMPORAL_CKPT_ST).is_file() or (path / TEMPORAL_CKPT_PT).is_file()
    temporal = (path / TEMPORAL_CONF).is_file() and ckpt
    return temporal or ((path / SAELENS_CFG).is_file() and (path / SAELENS_WEIGHTS).is_file())


def _sae_subfolders(path: Path) -> list[Path]:
    """Immediate sub-folders of ``path`` that hold an SAE (a repo folder with one run folder inside)."""
    try:
        return sorted(p for p in path.iterdir() if p.is_dir() and _holds_sae(p))
    except OSError:
        return []


def load_folder(folder: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                allow_pickled_config: bool = False, strict_config: bool = False) -> SAE:
    """Load an SAE folder of either layout (a file inside the folder works too).

    A folder without SAE files but with exactly one sub-folder that holds an SAE (the authors'
    training code writes one folder per run) loads that sub-folder; with several, the error lists them.
    """
    path = Path(folder).expanduser()
    if path.is_file():
        path = path.parent
    if not path.is_dir():
        raise SourceError(
            f"no SAE at {folder!s}: not a folder. Give a folder with conf.yaml + latest_ckpt.(safetensors|pt) or "
            "cfg.json + sae_weights.safetensors, or a spec hf://owner/repo/folder, saelens://release/id, random:temporal, embedded"
        )
    if not _holds_sae(path):
        subs = _sae_subfolders(path)
        if len(subs) == 1:
            path = subs[0]
        elif subs:
            names = ", ".join(p.name for p in subs[:6]) + (" ..." if len(subs) > 6 else "")
            raise SourceError(f"{path} holds several SAEs in sub-folders ({names}); name one of them")
    if (path / TEMPORAL_CONF).is_file() and ((path / TEMPORAL_CKPT_ST).is_file() or (path / TEMPORAL_CKPT_PT).is_file()):
        return load_temporal_folder(path, device, dtype, allow_pickled_config, strict_config)
    if (path / SAELENS_CFG).is_file() and (path / SAELENS_WEIGHTS).is_file():
        return load_standard_folder(path, device, dtype)
    present = ", ".join(sorted(p.name for p in path.iterdir())[:8]) or "nothing"
    raise SourceError(
        f"{path} holds no SAE (found: {present}); expected conf.yaml + latest_ckpt.(safetensors|pt) "
        "or cfg.json + sae_weights.safetensors"
    )


def load_sae(spec: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
             allow_pickled_config: bool = False, *, activation_sample: Tensor | None = None,
             strict_config: bool = False) -> SAE:
    """Load the SAE named by ``spec`` (see the module docstring) onto ``device`` in ``dtype``, in eval mode.

    ``activation_sample`` ``[N, d_in]`` (model units, BOS excluded) feeds random-init specs that
    need the mean activation or the scaling factor (``random_init.needs_activation_stats``).
    """
    s = str(spec).strip()
    if s.startswith("random:"):
        from tempolens.saes.random_init import sae_from_spec_with_stats

        sae: SAE = sae_from_spec_with_stats(s, activation_sample)
        return sae.to(device=device, dtype=dtype).eval()
    if s == "embedded" or s.startswith("embedded:"):
        kind = s.partition(":")[2] or "temporal"
        if kind not in ("temporal", "topk"):
            raise ConfigError(f"unknown embedded SAE {kind!r}; use embedded:temporal or embedded:topk")
        try:
            from tempolens.sources.embedded import embedded_sae_path
        except ImportError as e:
            raise SourceError(f"the embedded SAEs are not available in this installation ({_first_line(e)})") from None
        return load_folder(embedded_sae_path(kind), device, dtype, allow_pickled_config, strict_config)  # type: ignore[arg-type]
    if s.startswith("hf://"):
        return load_folder(_download_hf(s), device, dtype, allow_pickled_config, strict_config)
    if s.startswith("saelens://"):
        return _load_saelens_release(s, device, dtype)
    if re.match(r"^[a-z][a-z0-9+]*://", s):
        raise ConfigError(f"unknown SAE spec scheme in {s!r}; use a folder, hf://, saelens://, random: or embedded")
    return load_folder(s, device, dtype, allow_pickled_config, strict_config)
