"""The SAELens layout (``cfg.json`` + ``sae_weights.safetensors``) and SAELens objects and releases.

Standard SAEs (relu, topk, batchtopk, jumprelu) are read from and written to the folder layout that
``sae_lens.SAE.load_from_disk`` reads; ``from_saelens`` converts a loaded ``sae_lens`` SAE (the
temporal one included) into tempolens classes, and ``load_saelens_release`` serves ``saelens://`` specs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tempolens.errors import ConfigError, SourceError
from tempolens.saes.base import SAE
from tempolens.saes.checkpoint import check_weights, dtype_name, first_line, read_safetensors, yaml_safe
from tempolens.saes.standard import NORMALIZATIONS, StandardConfig, StandardSAE
from tempolens.saes.temporal import TemporalConfig
from tempolens.saes.temporal_conf import is_int
from tempolens.saes.temporal_format import build_temporal_sae

SAELENS_CFG = "cfg.json"
SAELENS_WEIGHTS = "sae_weights.safetensors"
SAELENS_FORMAT_VERSION = "6.0.0"
"""Written as ``metadata.sae_lens_version`` so SAELens reads our ``cfg.json`` in its ≥6 format."""

_SAELENS_ARCH = {"standard": "relu", "relu": "relu", "topk": "topk", "jumprelu": "jumprelu", "batchtopk": "batchtopk"}
_META_KEYS = (
    "model_name",
    "hook_name",
    "hook_layer",
    "hook_head_index",
    "context_size",
    "prepend_bos",
    "dataset_path",
    "neuronpedia_id",
    "model_class_name",
)


def _saelens_arch(cfg: Mapping[str, Any], source: str) -> tuple[str, Any]:
    """``(tempolens architecture, k)`` of a SAELens config: the ≥6 ``architecture`` key, or the pre-6 layout
    (``activation_fn`` ``topk`` with ``activation_fn_kwargs.k``, otherwise a standard ReLU SAE)."""
    arch_raw = cfg.get("architecture")
    act_fn = cfg.get("activation_fn", cfg.get("activation_fn_str"))
    k = cfg.get("k")
    if arch_raw is None:  # pre-6 SAELens layout
        arch_raw = "standard"
        if act_fn == "topk":
            arch_raw, k = "topk", (cfg.get("activation_fn_kwargs") or {}).get("k")
    if arch_raw not in _SAELENS_ARCH:
        raise SourceError(
            f"{source}: architecture {arch_raw!r} is not supported (tempolens reads standard/relu, topk, batchtopk, "
            "jumprelu and temporal SAEs)"
        )
    arch = _SAELENS_ARCH[arch_raw]
    if arch == "relu" and act_fn not in (None, "relu"):
        raise SourceError(f"{source}: activation function {act_fn!r} is not supported for a standard SAE")
    return arch, k


def _saelens_input_handling(cfg: Mapping[str, Any], source: str) -> tuple[str, bool, bool]:
    """``(normalize_activations, apply_b_dec_to_input, rescale_acts_by_decoder_norm)``, checked."""
    norm = cfg.get("normalize_activations", "none")
    if isinstance(norm, bool):
        norm = "expected_average_only_in" if norm else "none"
    if norm not in NORMALIZATIONS:
        raise SourceError(
            f"{source}: normalize_activations={norm!r} is not supported (supported: {', '.join(NORMALIZATIONS)})"
        )
    if cfg.get("reshape_activations", "none") not in ("none", None):
        raise SourceError(
            f"{source}: reshape_activations={cfg['reshape_activations']!r} is not supported (tempolens reads "
            "residual-stream SAEs)"
        )
    apply_b = cfg.get("apply_b_dec_to_input", True)
    rescale = cfg.get("rescale_acts_by_decoder_norm", False)
    for key, v in (("apply_b_dec_to_input", apply_b), ("rescale_acts_by_decoder_norm", rescale)):
        if not isinstance(v, bool):
            raise ConfigError(f"{source}: {key} must be true or false; got {v!r}")
    return norm, apply_b, rescale


def _saelens_metadata(cfg: Mapping[str, Any], meta_in: Mapping[str, Any]) -> dict[str, Any]:
    """The config's metadata without tempolens' own keys, plus the known top-level keys it lacks."""
    metadata = {
        str(kk): v for kk, v in meta_in.items() if not str(kk).startswith("tempolens_") and kk != "sae_lens_version"
    }
    for kk in _META_KEYS:
        if kk in cfg and kk not in metadata:
            metadata[kk] = cfg[kk]
    return metadata


def parse_saelens_cfg(cfg: Mapping[str, Any], source: str = SAELENS_CFG) -> StandardConfig:
    """A ``StandardConfig`` from a SAELens ``cfg.json`` mapping (≥6 layout and the older flat one)."""

    def fail(msg: str) -> ConfigError:
        return ConfigError(f"{source}: {msg}")

    if not isinstance(cfg, Mapping):
        raise fail("must be a JSON object")
    meta_in = cfg.get("metadata") if isinstance(cfg.get("metadata"), Mapping) else {}
    arch, k = _saelens_arch(cfg, source)
    for key in ("d_in", "d_sae"):
        if not is_int(cfg.get(key)) or cfg[key] < 1:
            raise fail(f"{key} must be a positive integer; got {cfg.get(key)!r}")
    norm, apply_b, rescale = _saelens_input_handling(cfg, source)
    mode = "auto"
    has_threshold = arch == "jumprelu"
    if meta_in.get("tempolens_architecture") == "batchtopk":
        mode = meta_in.get("tempolens_batchtopk_mode", "threshold" if arch == "jumprelu" else "topk")
        arch, k = "batchtopk", meta_in.get("tempolens_k", k)
    if arch in ("topk", "batchtopk") and not is_int(k):
        raise fail(f"k must be an integer for a {arch} SAE; got {k!r}")
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
            metadata=_saelens_metadata(cfg, meta_in),
        )
    except ConfigError as e:
        raise fail(str(e)) from None


def build_standard_sae(
    cfg: StandardConfig,
    weights: Mapping[str, Tensor],
    where: str,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> StandardSAE:
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
            raise SourceError(
                f"{where}: a finetuning scaling_factor is not supported; fold it into W_dec with SAELens first"
            )
    d, W = cfg.d_in, cfg.width
    expected: dict[str, tuple[int, ...]] = {"W_enc": (d, W), "b_enc": (W,), "W_dec": (W, d), "b_dec": (d,)}
    if cfg.has_threshold:
        expected["threshold"] = (W,)
        if "threshold" in weights and weights["threshold"].numel() == 1:
            weights["threshold"] = weights["threshold"].reshape(()).expand(W).clone()
    check_weights(weights, expected, where, f"cfg.json (d_in={d}, d_sae={W}, architecture={cfg.architecture})")
    with torch.device("meta"):
        sae = StandardSAE(cfg)
    sae.load_state_dict({k: v.to(device=device, dtype=dtype) for k, v in weights.items()}, strict=True, assign=True)
    if cfg.rescale_acts_by_decoder_norm:
        sae.fold_decoder_norm()
    return sae.eval()


def load_standard_folder(
    folder: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> StandardSAE:
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


def save_standard_sae(
    sae: StandardSAE, folder: str | Path, dtype: torch.dtype | None = None, metadata: Mapping[str, Any] | None = None
) -> Path:
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
        "dtype": dtype_name(dtype),
        "device": "cpu",
        "apply_b_dec_to_input": c.apply_b_dec_to_input,
        "normalize_activations": c.normalize_activations,
        "reshape_activations": "none",
        "metadata": yaml_safe(meta),
    }
    if arch == "topk":
        cfg["k"] = c.k
        cfg["rescale_acts_by_decoder_norm"] = c.rescale_acts_by_decoder_norm
    atomic_write_bytes(folder / SAELENS_WEIGHTS, st_save(weights))
    atomic_write_bytes(folder / SAELENS_CFG, (json.dumps(cfg, indent=2) + "\n").encode())
    return folder


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
            raise SourceError(
                f"{where}: apply_b_dec_to_input=False with a nonzero b is not the published Temporal SAE forward pass"
            )
        tcfg = TemporalConfig(
            d_in=int(cfg_dict["d_in"]),
            width=int(cfg_dict["d_sae"]),
            k=cfg_dict.get("kval_topk") if cfg_dict.get("sae_diff_type") == "topk" else None,
            sae_diff_type=cfg_dict.get("sae_diff_type", "topk"),
            n_heads=int(cfg_dict["n_heads"]),
            n_attn_layers=int(cfg_dict["n_attn_layers"]),
            bottleneck_factor=int(cfg_dict["bottleneck_factor"]),
            tied=bool(cfg_dict.get("tied_weights", True)),
            scaling_factor=scale,
            metadata={
                k: v for k, v in (cfg_dict.get("metadata") or {}).items() if isinstance(v, (str, int, float, bool))
            },
        )
        weights = {k: v for k, v in state.items() if k.startswith("attn_layers.")}
        weights["D"], weights["b"] = state["W_dec"], state["b_dec"]
        if not tcfg.tied:
            weights["E"] = state["W_enc"]
        return build_temporal_sae(tcfg, weights, where, device, dtype, conf_hint="the SAELens config")
    cfg = parse_saelens_cfg(cfg_dict, source=where)
    return build_standard_sae(cfg, state, where, device, dtype)


def load_saelens_release(spec: str, device: str | torch.device, dtype: torch.dtype) -> SAE:
    """The SAE of a ``saelens://release/sae_id`` spec, via ``sae_lens.SAE.from_pretrained`` (needs sae-lens)."""
    rest = spec[len("saelens://") :]
    release, _, sae_id = rest.partition("/")
    if not release or not sae_id:
        raise ConfigError(f"bad SAELens spec {spec!r}; write saelens://<release>/<sae_id>")
    try:
        import sae_lens
    except ImportError:
        raise SourceError(
            "saelens:// specs need sae-lens: pip install 'tempolens[saelens]' (or sae-lens>=6.20)"
        ) from None
    try:
        sl = sae_lens.SAE.from_pretrained(release, sae_id, device="cpu")
    except Exception as e:  # noqa: BLE001 - SAELens raises ValueError/HTTP/OSError
        raise SourceError(
            f"SAELens could not load {release}/{sae_id} ({type(e).__name__}: {first_line(e)[:200]})"
        ) from None
    return from_saelens(sl, device=device, dtype=dtype)
