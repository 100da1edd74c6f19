"""Temporal views of a Temporal SAE: similarity kernels of predicted/novel codes, attention maps,
the predicted/novel split, and the event-boundary check (paper §6).

- :mod:`tempolens.temporal.kernels` — pure tensor functions (``similarity_kernel``, ``attention_by_token``,
  ``predicted_share``, ``top_latents``);
- :mod:`tempolens.temporal.events` — demo multi-event stories, event labels, block contrast, Foote-novelty AUROC;
- :mod:`tempolens.temporal.analysis` — ``analyze_text(model, sae, text, contrast=...)`` → ``TextAnalysis``;
- :mod:`tempolens.temporal.figures` — PNG figures; :mod:`tempolens.temporal.page` — kernel/events pages (data);
- :mod:`tempolens.temporal.command` — ``tempolens kernel`` / ``tempolens events`` (``run_kernel``, ``run_events``).
"""

from tempolens.temporal.events import block_contrast, boundary_auroc, foote_novelty, load_demo_texts, parse_marked
from tempolens.temporal.kernels import attention_by_token, predicted_share, similarity_kernel, top_latents

__all__ = [
    "attention_by_token",
    "block_contrast",
    "boundary_auroc",
    "foote_novelty",
    "load_demo_texts",
    "parse_marked",
    "predicted_share",
    "similarity_kernel",
    "top_latents",
]
