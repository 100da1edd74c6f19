"""The Temporal SAE layout: ``conf.yaml`` plus ``latest_ckpt.safetensors`` or ``latest_ckpt.pt``.

Weights sit under the key ``sae`` or at the top level of the checkpoint; ``b`` as ``[d_in]`` or
``[1, d_in]``. ``conf.yaml`` is read as SAELens reads it — the fields that shape the forward pass,
validated — and everything else is sorted by ``tempolens.saes.temporal_conf``: ``sae.sae_type`` must
name the temporal architecture and keys that would change inference (``use_pos_encoding: true``) are
refused; every other key is recorded in the SAE's metadata (``conf_ignored``), and keys tempolens does
not know are also noted once on stderr, or refused with ``strict_config=True`` (``--sae-strict``).
``sae.scaling_factor`` is looked up in ``data``/``llm`` when the ``sae`` section lacks it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor

from tempolens.errors import SourceError
from tempolens.saes.checkpoint import check_weights, dtype_name, read_checkpoint, read_safetensors, yaml_safe
from tempolens.saes.temporal import TemporalConfig, TemporalSAE
from tempolens.saes.temporal_conf import IGNORED_METADATA_KEY, TEMPORAL_CONF, read_temporal_conf

TEMPORAL_CKPT_ST = "latest_ckpt.safetensors"
TEMPORAL_CKPT_PT = "latest_ckpt.pt"


def temporal_expected_shapes(cfg: TemporalConfig) -> dict[str, tuple[int, ...]]:
    """Weight name → shape of a Temporal SAE with ``cfg`` (``b`` as ``[d_in]``)."""
    W, d, qk = cfg.width, cfg.d_in, cfg.qk_dim
    shapes: dict[str, tuple[int, ...]] = {"D": (W, d), "b": (d,)}
    if not cfg.tied:
        shapes["E"] = (d, W)
    for i in range(cfg.n_attn_layers):
        p = f"attn_layers.{i}."
        shapes.update(
            {
                p + "k_ctx.weight": (qk, W),
                p + "k_ctx.bias": (qk,),
                p + "q_target.weight": (qk, W),
                p + "q_target.bias": (qk,),
                p + "v_ctx.weight": (W, W),
                p + "v_ctx.bias": (W,),
                p + "c_proj.weight": (W, W),
                p + "c_proj.bias": (W,),
            }
        )
    return shapes


def _temporal_weights(
    folder: Path, allow_pickled_config: bool, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> tuple[dict[str, Tensor], Path]:
    """The checkpoint's tensors (the safetensors file if present, else the weights-only ``.pt``) and its path."""
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


def build_temporal_sae(
    cfg: TemporalConfig,
    weights: Mapping[str, Tensor],
    where: str,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    conf_hint: str = TEMPORAL_CONF,
) -> TemporalSAE:
    """A ``TemporalSAE`` from a config and checkpoint weights (validated against each other)."""
    hint = (
        f"{conf_hint} (llm.dimin={cfg.d_in}, width={cfg.width}, tied={cfg.tied}, "
        f"n_attn_layers={cfg.n_attn_layers}, bottleneck_factor={cfg.bottleneck_factor})"
    )
    check_weights(weights, temporal_expected_shapes(cfg), where, hint)
    with torch.device("meta"):
        sae = TemporalSAE(cfg)
    sd = {k: v.to(device=device, dtype=dtype) for k, v in weights.items()}
    sae.load_state_dict(sd, strict=True, assign=True)
    return sae.eval()


def load_temporal_folder(
    folder: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    allow_pickled_config: bool = False,
    strict_config: bool = False,
) -> TemporalSAE:
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


def save_temporal_sae(
    sae: TemporalSAE, folder: str | Path, dtype: torch.dtype | None = None, metadata: Mapping[str, Any] | None = None
) -> Path:
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
        "data": {"dtype": dtype_name(dtype)},
    }
    llm_meta = meta.pop("llm", None)
    if isinstance(llm_meta, Mapping):
        conf["llm"].update({str(k): v for k, v in llm_meta.items() if k != "dimin"})
    if meta:
        conf["tempolens"] = yaml_safe(meta)
    atomic_write_bytes(folder / TEMPORAL_CKPT_ST, st_save(weights))
    atomic_write_bytes(folder / TEMPORAL_CONF, yaml.safe_dump(yaml_safe(conf), sort_keys=False).encode())
    return folder
