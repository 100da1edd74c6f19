"""One text through the subject model and the SAEs → everything the temporal views show.

:func:`analyze_text` tokenizes (BOS prepended), reads the residual stream at the hook block,
runs the Temporal SAE's :meth:`forward_details`, optionally a standard SAE for contrast, and
returns a :class:`TextAnalysis`: similarity kernels (predicted codes, novel codes, the standard
SAE's codes and, as a baseline, the raw activations), attention per layer re-indexed by context
token, the per-token predicted share, the top novel latents per token and the event labels.
Kernels and attention maps have the BOS row/column dropped after computing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from tempolens.errors import ConfigError, SourceError
from tempolens.saes.base import SAE, SparseCodes
from tempolens.saes.fit import check_sae_fits
from tempolens.temporal.events import boundary_positions, event_labels, sentence_starts, tokens_at_chars
from tempolens.temporal.kernels import (
    MAX_KERNEL_TOKENS,
    KernelInputError,
    attention_by_token,
    similarity_kernel,
    top_latents,
)

KERNEL_LABELS = {
    "predicted": "Predicted codes (z_pred)",
    "novel": "Novel codes (z_novel)",
    "sae": "Standard SAE codes",
    "activations": "Raw activations",
}
"""Display names of the kernels, in display order."""


@dataclass
class TextAnalysis:
    """The temporal views of one text. Position 0 of ``tokens`` is BOS; every ``[L', …]`` tensor
    below has BOS dropped (``L' = L − 1``) and index ``i`` refers to ``tokens[i + 1]``."""

    name: str
    text: str
    tokens: list[str]
    """Token strings including BOS (untrusted text: escape when shown)."""
    token_ids: list[int]
    kernels: dict[str, Tensor]
    """``[L', L']`` kernels by kind (``predicted``, ``novel``, ``sae``, ``activations``)."""
    attention: list[Tensor]
    """Per attention layer ``[H, L', L']``: weight of query token (row) on context token (column)."""
    attention_sink: list[Tensor]
    """Per attention layer ``[H, L']``: weight on the empty start slot plus the BOS token."""
    pred_share: Tensor
    """``[L']`` predicted share per token."""
    top_novel: tuple[Tensor, Tensor]
    """``(indices [L', k], values [L', k])`` largest novel codes per token (−1/0 where fewer)."""
    top_sae: tuple[Tensor, Tensor] | None
    """The same for the standard SAE, if one was given."""
    labels: Tensor | None = None
    """``[L']`` event id per token, when the text has marked events."""
    sentence_tokens: list[int] = field(default_factory=list)
    """Indices (BOS dropped) of the first token of each sentence after the first."""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def shown_tokens(self) -> list[str]:
        """Token strings without BOS (the kernel axes)."""
        return self.tokens[1:]

    @property
    def boundaries(self) -> list[int]:
        """Indices (BOS dropped) of the first token of each new event."""
        return [] if self.labels is None else boundary_positions(self.labels).tolist()


def tokenize(tokenizer: Any, text: str, bos_id: int | None) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids with BOS first and each token's character span ``(start, end)`` in ``text``.

    Uses the fast tokenizer's offset mapping; BOS gets ``(0, 0)``.
    """
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        offsets = [tuple(map(int, o)) for o in enc["offset_mapping"]]
    except (NotImplementedError, TypeError, KeyError, ValueError):
        raise SourceError(
            "the model's tokenizer gives no character offsets (a 'fast' tokenizer is needed for event labels)"
        ) from None
    if bos_id is not None:
        ids = [int(bos_id)] + ids
        offsets = [(0, 0)] + offsets
    return ids, offsets  # type: ignore[return-value]


def _top(codes: Any, k: int, width: int) -> tuple[Tensor, Tensor]:
    i, v = top_latents(codes, k, width=width)
    return i[1:].cpu(), v[1:].cpu()


def top_direction_share(codes: Tensor) -> float:
    """Share of the mean-centred codes' variance along their first principal direction
    (σ₁² / Σσ²; 1.0 = every token's centred code is a multiple of one vector), via the ``L×L`` Gram."""
    x = codes.double().cpu()
    if x.shape[0] < 2:
        return float("nan")
    p = x - x.mean(0)
    ev = torch.linalg.eigvalsh(p @ p.T).clamp_min(0)
    total = float(ev.sum())
    return float(ev[-1] / total) if total > 0 else float("nan")


@torch.no_grad()
def _start_token(model: Any, sae: SAE, text: str, max_tokens: int) -> int:
    """Check what can be checked before tokenising; the id that starts the text (BOS, else EOS)."""
    if not getattr(sae, "is_temporal", False) or not hasattr(sae, "forward_details"):
        raise ConfigError(
            f"--sae must be a Temporal SAE (got a {getattr(sae, 'architecture', type(sae).__name__)} SAE); "
            "pass standard SAEs as --contrast-sae"
        )
    if not text.strip():
        raise ConfigError("the text is empty; give some words")
    if max_tokens > MAX_KERNEL_TOKENS:
        raise ConfigError(f"max_tokens is at most {MAX_KERNEL_TOKENS}")
    bos = getattr(model, "bos_id", None)
    bos = bos if bos is not None else getattr(model, "eos_id", None)  # GPT-2 style: <|endoftext|> starts a text
    if bos is None:
        raise ConfigError(
            f"{getattr(model, 'model_id', 'the model')}'s tokenizer has no BOS or EOS token to start the text with"
        )
    return bos


def _tokenized(model: Any, text: str, bos: int, name: str, max_tokens: int) -> tuple[list[int], list[Any]]:
    """Token ids (BOS first) and character offsets of ``text``, within ``2 .. max_tokens`` tokens."""
    ids, offsets = tokenize(model.tokenizer, text, bos)
    if len(ids) > max_tokens:
        raise KernelInputError(
            f"the text {name!r} has {len(ids)} tokens, above the limit of {max_tokens}; shorten it or raise "
            f"--max-tokens (≤ {MAX_KERNEL_TOKENS})"
        )
    if len(ids) < 3:
        raise ConfigError(f"the text {name!r} has fewer than 2 tokens; a kernel needs at least 2")
    return ids, offsets


def _kernels(
    hidden: Tensor, det: Any, sae: SAE, contrast: SAE | None, max_tokens: int, top_k: int, with_activations: bool
) -> tuple[dict[str, Tensor], SparseCodes, Any]:
    """The similarity kernels (predicted, novel, contrast SAE, raw activations), the novel codes, and the
    contrast SAE's top latents (None without one)."""
    nov_codes = SparseCodes(det.codes.indices[0].cpu(), det.codes.values[0].cpu())
    kernels: dict[str, Tensor] = {
        "predicted": similarity_kernel(det.z_pred[0].cpu(), max_tokens=max_tokens),
        "novel": similarity_kernel(nov_codes, width=sae.width, max_tokens=max_tokens),
    }
    top_sae = None
    if contrast is not None:
        enc = contrast.encode(hidden.to(contrast.device, contrast.dtype))
        codes = SparseCodes(enc.codes.indices[0].cpu(), enc.codes.values[0].cpu())
        kernels["sae"] = similarity_kernel(codes, width=contrast.width, max_tokens=max_tokens)
        top_sae = _top(codes, top_k, contrast.width)
    if with_activations:
        kernels["activations"] = similarity_kernel(hidden[0].float().cpu(), max_tokens=max_tokens)
    return kernels, nov_codes, top_sae


def _attention_views(det: Any) -> tuple[list[Tensor], list[Tensor]]:
    """Per attention layer: the token-to-token maps without BOS, and the mass each query puts on the
    start (BOS and the attention sink)."""
    attention, sink = [], []
    for raw in det.attn:
        a = attention_by_token(raw[0].cpu())
        attention.append(a.maps[:, 1:, 1:].contiguous())
        sink.append((a.start + a.maps[:, :, 0])[:, 1:].contiguous())
    return attention, sink


def _analysis_meta(model: Any, sae: SAE, contrast: SAE | None, n_tokens: int, det: Any) -> dict[str, Any]:
    return {
        "model_id": getattr(model, "model_id", ""),
        "hook_name": getattr(model, "hook_name", ""),
        "layer": getattr(model, "layer", None),
        "sae": sae.describe(),
        "contrast_sae": contrast.describe() if contrast is not None else None,
        "n_tokens": n_tokens,
        "pred_top_direction_share": top_direction_share(det.z_pred[0, 1:]),
        "novel_top_direction_share": top_direction_share(det.z_novel[0, 1:]),
    }


def analyze_text(
    model: Any,
    sae: SAE,
    text: str,
    *,
    contrast: SAE | None = None,
    name: str = "text",
    boundaries: Sequence[int] | None = None,
    max_tokens: int = 1024,
    top_k: int = 5,
    with_activations: bool = True,
) -> TextAnalysis:
    """Run ``text`` through ``model`` (a :class:`tempolens.sources.models.SubjectModel`) and the
    Temporal SAE ``sae`` (plus the standard SAE ``contrast``) and compute its temporal views.

    ``boundaries``: character offsets where events 2, 3, ... start (from :func:`parse_marked`).
    Texts longer than ``max_tokens`` tokens (BOS included) are refused with a clear error.
    """
    bos = _start_token(model, sae, text, max_tokens)
    ids, offsets = _tokenized(model, text, bos, name, max_tokens)
    check_sae_fits(sae, model, "the Temporal SAE")
    if contrast is not None:
        check_sae_fits(contrast, model, "the contrast SAE")
    hidden = model.hidden_at(torch.tensor([ids]))
    det = sae.forward_details(hidden.to(sae.device, sae.dtype))
    kernels, nov_codes, top_sae = _kernels(hidden, det, sae, contrast, max_tokens, top_k, with_activations)
    attention, sink = _attention_views(det)
    return TextAnalysis(
        name=name,
        text=text,
        tokens=model.token_strings(ids),
        token_ids=ids,
        kernels=kernels,
        attention=attention,
        attention_sink=sink,
        pred_share=det.pred_share[0, 1:].float().cpu(),
        top_novel=_top(nov_codes, top_k, sae.width),
        top_sae=top_sae,
        labels=event_labels(offsets, boundaries)[1:] if boundaries else None,
        sentence_tokens=[i - 1 for i in tokens_at_chars(offsets, sentence_starts(text)) if i >= 1],
        meta=_analysis_meta(model, sae, contrast, len(ids), det),
    )
