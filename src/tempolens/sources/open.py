"""Opening the sources: the one place that turns model specs into a subject model and a tokenizer.

Every command goes through these functions (and :func:`tempolens.saes.fit.load_sae_for_model` for
the SAE read at the model's hook), so a spec means the same everywhere and each check is written once:

- ``load_subject_model(spec, layer)``: ``embedded`` (prepared on first use), an HF hub id, a local
  HF folder or a ``.gguf`` file; ``device``/``dtype`` may be ``auto``.
- ``load_tokenizer(spec)``: the tokenizer of the same specs, without loading the weights.
- ``check_prompt_len`` / ``configured_context`` / ``model_context``: prompts fit the model's context.
- ``check_activations``: refuse NaN/inf activations before they become codes;
  ``prompt_activation_sample``: hook activations of the first prompts (random-init SAEs need them).

The embedded spec is dispatched here (``sources.embedded`` prepares the folder; ``sources.models``
loads HF folders, hub ids and GGUF files), so neither of those modules imports the other's loader.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from tempolens.devices import resolve_device
from tempolens.errors import ConfigError, TempolensError
from tempolens.sources import models
from tempolens.sources.embedded import EMBEDDED_MODEL_ID, embedded_model_dir, ensure_embedded_model
from tempolens.sources.models import SubjectModel

EMBEDDED = "embedded"
"""The model spec of the embedded default (Gemma 3 270M)."""


def resolve_dtype(dtype: str, device: torch.device) -> str:
    """The model dtype for ``--dtype``: ``auto`` is bfloat16 on CUDA and float32 elsewhere."""
    if dtype == "auto":
        return "bfloat16" if device.type == "cuda" else "float32"
    return dtype


def load_subject_model(
    spec: str | Path,
    layer: int,
    device: str | torch.device = "cpu",
    dtype: str = "float32",
    model_id: str | None = None,
    progress: Callable[[str], None] | None = print,
) -> SubjectModel:
    """Load a subject model read up to decoder block ``layer`` (``blocks.{layer}.hook_resid_post``).

    ``spec``: ``embedded`` (Gemma 3 270M from PyPI, converted and cached on first use), an HF hub id
    (``google/gemma-2-2b``; offline it must already be in the HF cache), a local HF folder, or a
    ``.gguf`` file (converted once and cached). ``device``: a torch device or ``auto``. ``dtype``:
    float32, bfloat16, float16 or ``auto`` (bfloat16 on CUDA, float32 elsewhere). ``model_id``
    overrides the Neuronpedia-style id derived from the spec.
    """
    dev = resolve_device(device)
    dtype = resolve_dtype(dtype, dev)
    if str(spec) == EMBEDDED:
        folder = ensure_embedded_model(progress=progress)
        return models.load_hf_model(
            folder,
            layer,
            device=dev,
            dtype=dtype,
            model_id=model_id or EMBEDDED_MODEL_ID,
            progress=progress,
            source=EMBEDDED,
        )
    return models.load_hf_model(spec, layer, device=dev, dtype=dtype, model_id=model_id, progress=progress)


def load_tokenizer(spec: str | Path, progress: Callable[[str], None] | None = None) -> Any:
    """The tokenizer of a model spec (same forms as ``load_subject_model``) without loading the weights.

    ``embedded`` prepares the embedded model if needed; a ``.gguf`` file uses its cached conversion
    when there is one and otherwise reads the tokenizer from the GGUF (slow for large vocabularies).
    """
    if str(spec) == EMBEDDED:
        return models.load_hf_tokenizer(ensure_embedded_model(progress=progress))
    return models.load_hf_tokenizer(spec)


# ------------------------------------------------------------------------------------- context


def model_context(cfg: Any) -> int | None:
    """``max_position_embeddings`` of a model config (a ``config.json`` dict or an HF config object;
    a multimodal model's ``text_config`` first); None when it has none."""
    get = cfg.get if isinstance(cfg, dict) else (lambda k: getattr(cfg, k, None))
    text = get("text_config")
    for src in (text, cfg) if text is not None else (cfg,):
        key = "max_position_embeddings"
        v = src.get(key) if isinstance(src, dict) else getattr(src, key, None)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return None


def configured_context(spec: str) -> int | None:
    """``max_position_embeddings`` from the model's ``config.json`` when it is on disk (local folder,
    converted embedded model, HF cache) — read without loading the model; None when unknown."""
    candidates: list[Path] = []
    if spec == EMBEDDED:
        candidates.append(embedded_model_dir() / "config.json")
    elif Path(spec).expanduser().is_dir():
        candidates.append(Path(spec).expanduser() / "config.json")
    elif "/" in spec and not spec.lower().endswith(".gguf"):
        from tempolens.sources.hub import cached_file

        hit = cached_file(spec, "config.json")  # None (not cached, odd id): checked after loading instead
        if hit is not None:
            candidates.append(hit)
    for path in candidates:
        try:
            cfg = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(cfg, dict):
            return model_context(cfg)
    return None


def check_prompt_len(prompt_len: int, context: int | None, spec: str) -> None:
    """Refuse prompts longer than the model's context (its ``max_position_embeddings``)."""
    if context is not None and prompt_len > context:
        raise ConfigError(
            f"--prompt-len {prompt_len} is longer than the context of {spec} ({context} tokens, "
            f"max_position_embeddings in its config.json); pass --prompt-len {context} or less"
        )


# ------------------------------------------------------------------------------------- activations


def check_activations(acts: torch.Tensor, where: str) -> None:
    """Refuse NaN/inf activations with a message instead of writing garbage codes."""
    if not torch.isfinite(acts).all():
        bad = (~torch.isfinite(acts)).any(-1).nonzero()[:3].tolist()
        raise TempolensError(
            f"the subject model produced NaN/inf activations at {where} (first [prompt, position]: {bad}); "
            "try --dtype float32, or check the model weights"
        )


def prompt_activation_sample(model: Any, tokens: torch.Tensor, device: torch.device, batch_size: int) -> torch.Tensor:
    """Activations ``[N, d]`` (float32) of the first prompts (at least one batch, up to 32 prompts)
    at the model's hook, BOS position dropped (its norm dwarfs the rest)."""
    sample = tokens[: max(batch_size, min(32, len(tokens)))].to(device)
    acts = torch.cat([model.hidden_at(sample[i : i + batch_size]) for i in range(0, len(sample), batch_size)])
    return acts[:, 1:].reshape(-1, acts.shape[-1]).float()
