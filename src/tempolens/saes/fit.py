"""An SAE for a subject model: loaded by spec and checked to fit it, the one version every command calls.

``load_sae_for_model(spec, model)`` returns the SAE on the requested device in float32, in eval mode,
after checking that its ``d_in`` equals the hidden size at the model's hook block and that every
weight is finite; random-init specs get activation statistics from a sample the caller supplies.
``check_sae_fits`` is the ``d_in`` and block check alone, for SAEs handed over as objects (Python API).

It lives in ``saes`` (not ``sources.open``) because SAEs come after sources in the data flow:
``saes.loading`` itself reads ``sources`` (embedded SAEs, the hub cache).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import torch

from tempolens.devices import resolve_device
from tempolens.errors import SourceError


def check_sae_fits(sae: Any, model: Any, name: str = "the SAE") -> None:
    """Refuse an SAE whose ``d_in`` differs from the hidden size at the model's hook block, or whose metadata
    names another block than the one the model reads."""
    if sae.d_in != model.hidden_size:
        raise SourceError(
            f"{name} expects d_in={sae.d_in} but {getattr(model, 'model_id', 'the model')} block "
            f"{getattr(model, 'layer', '?')} has hidden size {model.hidden_size}; "
            "pick the SAE trained for this model and layer"
        )
    check_sae_layer(sae, model, name)


def recorded_hook_layer(sae: Any) -> int | None:
    """The decoder block an SAE says it was trained on (``hook_layer``, or ``blocks.N.`` in ``hook_name``, of
    its metadata); None when it records neither."""
    meta = getattr(getattr(sae, "cfg", None), "metadata", None) or {}
    layer = meta.get("hook_layer")
    if isinstance(layer, int) and not isinstance(layer, bool):
        return layer
    match = re.match(r"blocks\.(\d+)\.", str(meta.get("hook_name", "")))
    return int(match.group(1)) if match else None


def check_sae_layer(sae: Any, model: Any, name: str = "the SAE") -> None:
    """Refuse an SAE whose metadata names another block than the one the model reads: its codes would be
    computed from activations it never saw, with no error anywhere else."""
    trained, reading = recorded_hook_layer(sae), getattr(model, "layer", None)
    if trained is not None and isinstance(reading, int) and trained != reading:
        raise SourceError(
            f"{name} was trained on blocks.{trained} (its metadata says so) but the model is read at block "
            f"{reading}; pass --layer {trained} (Python: layer={trained})"
        )


def load_sae_for_model(
    spec: str,
    model: Any,
    device: str | torch.device = "cpu",
    *,
    activation_sample: Callable[[], torch.Tensor] | None = None,
    strict_config: bool = False,
) -> Any:
    """Load the SAE ``spec`` for ``model`` and check it fits: ``d_in`` equals the hook's hidden size and
    every weight is finite. Returns it on ``device`` in float32, in eval mode.

    ``activation_sample``: called (once, only for random-init specs that need activation statistics)
    for activations ``[N, d_in]`` at the hook, BOS excluded. ``strict_config``: refuse unknown
    ``conf.yaml`` keys (``--sae-strict``).
    """
    from tempolens.saes.loading import load_sae
    from tempolens.saes.random_init import needs_activation_stats

    sample = activation_sample() if activation_sample is not None and needs_activation_stats(spec) else None
    sae = load_sae(spec, device="cpu", activation_sample=sample, strict_config=strict_config)
    check_sae_fits(sae, model, f"SAE {spec!r}")
    params = [*sae.named_parameters(), *sae.named_buffers()]
    nonfinite = [name for name, t in params if t.is_floating_point() and not torch.isfinite(t).all()]
    if nonfinite:
        raise SourceError(
            f"SAE {spec!r} has NaN/inf weights in {', '.join(nonfinite[:5])}; the checkpoint is damaged — "
            "download or export it again"
        )
    return sae.to(resolve_device(device)).float().eval()
