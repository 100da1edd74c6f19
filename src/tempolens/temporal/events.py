"""Texts with marked event boundaries, and how block-structured a kernel is along them.

Demo texts (``demo_texts/stories.json``, written for tempolens) are short stories whose scenes
change abruptly; the marker ``||`` separates events and is removed before tokenization
(:func:`parse_marked`). Token ``t`` belongs to the event that contains its *last* character
(:func:`event_labels`), so a token such as ``" The"`` that starts with the space before a new
scene belongs to the new scene.

Two statistics per kernel ``S [L, L]`` (BOS already dropped) and per-token event labels:

- **block contrast** (:func:`block_contrast`): mean ``S[i, j]`` over pairs ``i ≠ j`` in the same
  event minus the mean over pairs in different events. 0 for a kernel that ignores events; for an
  ideal block-diagonal kernel (1 within, 0 across) it is 1.
- **boundary AUROC** (:func:`boundary_auroc`): Foote's novelty (J. Foote, "Automatic audio
  segmentation using a measure of audio novelty", ICME 2000) — a checkerboard kernel slid
  along the diagonal of the self-similarity matrix. At position ``t`` with half-width ``w``,
  ``A = [t−w, t)``, ``B = [t, t+w)``::

      novelty(t) = ½ (mean_{i≠j∈A} S_ij + mean_{i≠j∈B} S_ij) − mean_{i∈A, j∈B} S_ij

  (unit checkerboard weights, diagonal excluded so every window is scored alike). Only positions
  with full windows on both sides (``w ≤ t ≤ L − w``) are scored. The AUROC (Mann–Whitney, ties
  count ½) compares novelty at the true boundary tokens (first token of each new event) with all
  other scored positions; 0.5 is chance.
- **sentence-matched boundary AUROC** (``boundary_auroc_sentences``): every event boundary in the
  demo stories is also a sentence start, and sentence starts are distinctive on their own, so the
  plain AUROC rewards any kernel that marks sentences. This control compares novelty at the
  boundary tokens with novelty at the *other sentence starts* only (:func:`sentence_starts`): above
  0.5 means the kernel separates events, not just sentences.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources

import torch
from torch import Tensor

from tempolens.errors import TempolensError
from tempolens.stats.estimators import auroc, bootstrap_units_ci

MARKER = "||"


class EventTextError(TempolensError):
    """A text with event markers or its boundary labels is malformed."""


@dataclass
class EventText:
    """A text with its event boundaries (character offsets where events 2, 3, ... start)."""

    name: str
    text: str
    boundaries: list[int] = field(default_factory=list)
    title: str = ""

    @property
    def n_events(self) -> int:
        return len(self.boundaries) + 1


def parse_marked(marked: str, marker: str = MARKER) -> tuple[str, list[int]]:
    """Remove ``marker`` from ``marked``; return the clean text and the character offsets of the
    first non-space character after each marker. Whitespace around a marker collapses to one space."""
    if not marker:
        raise EventTextError("the event marker must be a non-empty string")
    parts = marked.split(marker)
    clean = parts[0].strip()
    bounds: list[int] = []
    for part in parts[1:]:
        seg = part.strip()
        if not seg:
            raise EventTextError(f"an event marker {marker!r} is followed by an empty event; remove the extra marker")
        if not clean:
            raise EventTextError(f"the text starts with the event marker {marker!r}; remove it")
        clean += " "
        bounds.append(len(clean))
        clean += seg
    return clean, bounds


def load_demo_texts() -> list[EventText]:
    """The built-in multi-event stories (8 stories of 4 events, ≈230–270 Gemma tokens each)."""
    raw = resources.files("tempolens.temporal").joinpath("demo_texts/stories.json").read_text(encoding="utf-8")
    data = json.loads(raw)
    out = []
    for s in data["stories"]:
        text, bounds = parse_marked(s["text"], data.get("marker", MARKER))
        out.append(EventText(name=s["name"], text=text, boundaries=bounds, title=s.get("title", "")))
    return out


def event_labels(offsets: Sequence[tuple[int, int]], boundaries: Sequence[int]) -> Tensor:
    """Event id per token from its character span ``(start, end)`` (``end`` exclusive).

    A token belongs to the event containing its last character: its label is the number of
    boundaries ``b`` with ``end > b``. Special tokens with the span ``(0, 0)`` (BOS) get event 0.
    """
    b = sorted(boundaries)
    labels = [sum(1 for x in b if end > x) for _, end in offsets]
    return torch.tensor(labels, dtype=torch.long)


_SENTENCE_START = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")


def sentence_starts(text: str) -> list[int]:
    """Character offsets of the first character of each sentence after the first (after ``.``, ``!``
    or ``?``, optional closing quotes/brackets, whitespace, and an upper-case letter or digit)."""
    return [m.end() for m in _SENTENCE_START.finditer(text)]


def tokens_at_chars(offsets: Sequence[tuple[int, int]], chars: Sequence[int]) -> list[int]:
    """For each character offset, the index of the token that contains it (first token with
    ``end > c``, skipping empty special spans); sorted and unique."""
    out = set()
    for c in chars:
        for i, (a, b) in enumerate(offsets):
            if b > a and b > c:
                out.add(i)
                break
    return sorted(out)


def boundary_positions(labels: Tensor) -> Tensor:
    """Token positions where a new event starts (``labels[t] != labels[t-1]``)."""
    if labels.numel() < 2:
        return torch.zeros(0, dtype=torch.long)
    return (torch.nonzero(labels[1:] != labels[:-1]).flatten() + 1).long()


def _check(S: Tensor, labels: Tensor) -> None:
    if S.dim() != 2 or S.shape[0] != S.shape[1] or S.shape[0] != labels.shape[0]:
        raise EventTextError(f"kernel {tuple(S.shape)} and labels {tuple(labels.shape)} do not match")


def block_contrast(S: Tensor, labels: Tensor) -> float:
    """Mean within-event similarity minus mean across-event similarity, diagonal excluded.

    NaN if there is only one event or an event has a single token and no other pairs exist.
    """
    _check(S, labels)
    S = S.double()
    same = labels[:, None] == labels[None, :]
    offdiag = ~torch.eye(len(labels), dtype=torch.bool)
    within = same & offdiag
    across = ~same
    if not within.any() or not across.any():
        return math.nan
    return float(S[within].mean() - S[across].mean())


def foote_novelty(S: Tensor, half_width: int) -> Tensor:
    """Foote novelty per position ``[L]`` (NaN where a full window does not fit); see module doc."""
    if half_width < 2:
        raise EventTextError("the novelty half-width must be at least 2 tokens")
    L = S.shape[0]
    S = S.double()
    w = half_width
    out = torch.full((L,), math.nan, dtype=torch.float64)
    # prefix sums make every window mean O(1)
    C = torch.zeros(L + 1, L + 1, dtype=torch.float64)
    C[1:, 1:] = S.cumsum(0).cumsum(1)
    diag = torch.zeros(L + 1, dtype=torch.float64)
    diag[1:] = torch.diagonal(S).cumsum(0)

    def rect(r0: int, r1: int, c0: int, c1: int) -> float:
        return float(C[r1, c1] - C[r0, c1] - C[r1, c0] + C[r0, c0])

    pairs = w * (w - 1)
    for t in range(w, L - w + 1):
        a0, b1 = t - w, t + w
        within_a = (rect(a0, t, a0, t) - float(diag[t] - diag[a0])) / pairs
        within_b = (rect(t, b1, t, b1) - float(diag[b1] - diag[t])) / pairs
        across = rect(a0, t, t, b1) / (w * w)
        out[t] = 0.5 * (within_a + within_b) - across
    return out.float()


def boundary_auroc(S: Tensor, labels: Tensor, half_width: int = 8, candidates: Sequence[int] | None = None) -> float:
    """AUROC of Foote novelty at true boundary tokens vs the other scored positions — all of them,
    or only those in ``candidates`` (e.g. the other sentence starts)."""
    _check(S, labels)
    nov = foote_novelty(S, half_width)
    scored = ~torch.isnan(nov)
    is_b = torch.zeros(len(labels), dtype=torch.bool)
    is_b[boundary_positions(labels)] = True
    neg = scored & ~is_b
    if candidates is not None:
        allowed = torch.zeros(len(labels), dtype=torch.bool)
        idx = torch.tensor([c for c in candidates if 0 <= c < len(labels)], dtype=torch.long)
        allowed[idx] = True
        neg = neg & allowed
    return auroc(nov[scored & is_b], nov[neg])


def novelty_samples(
    S: Tensor, labels: Tensor, half_width: int = 8, candidates: Sequence[int] | None = None
) -> tuple[Tensor, Tensor]:
    """Foote novelty at boundary tokens and at the negatives (all other scored tokens, or the other
    ``candidates``), z-scored over all scored tokens of this text so that texts can be pooled."""
    _check(S, labels)
    nov = foote_novelty(S, half_width).double()
    scored = ~torch.isnan(nov)
    if scored.sum() < 2:
        return torch.zeros(0), torch.zeros(0)
    v = nov[scored]
    z = (nov - v.mean()) / v.std().clamp_min(1e-12)
    is_b = torch.zeros(len(labels), dtype=torch.bool)
    is_b[boundary_positions(labels)] = True
    neg = scored & ~is_b
    if candidates is not None:
        allowed = torch.zeros(len(labels), dtype=torch.bool)
        allowed[torch.tensor([c for c in candidates if 0 <= c < len(labels)], dtype=torch.long)] = True
        neg = neg & allowed
    return z[scored & is_b], z[neg]


def pooled_auroc(samples: Sequence[tuple[Tensor, Tensor]]) -> tuple[float, int, int]:
    """AUROC of all texts' boundary vs negative samples pooled: ``(auroc, n_pos, n_neg)``."""
    pos = torch.cat([p for p, _ in samples]) if samples else torch.zeros(0)
    neg = torch.cat([n for _, n in samples]) if samples else torch.zeros(0)
    return auroc(pos, neg), int(pos.numel()), int(neg.numel())


def bootstrap_auroc_ci(
    samples: Sequence[tuple[Tensor, Tensor]], n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile confidence interval of :func:`pooled_auroc` resampling *texts* with replacement
    (texts, not tokens, are the independent units). NaNs where it cannot be computed."""
    usable = [(p, n) for p, n in samples if p.numel() or n.numel()]
    return bootstrap_units_ci(
        len(usable),
        lambda pick: pooled_auroc([usable[i] for i in pick.tolist()])[0],
        n_boot=n_boot,
        level=level,
        seed=seed,
    )


@dataclass
class KernelEventScores:
    """Event statistics of one kernel on one text."""

    block_contrast: float
    boundary_auroc: float
    within_mean: float
    across_mean: float
    boundary_auroc_sentences: float = math.nan
    """Boundary tokens vs the other sentence-start tokens (NaN without sentence positions)."""

    def as_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in vars(self).items()}


def score_kernel(
    S: Tensor, labels: Tensor, half_width: int = 8, sentence_tokens: Sequence[int] | None = None
) -> KernelEventScores:
    """The statistics plus the within/across means of one kernel; ``sentence_tokens`` (indices in
    the kernel's axes) enable the sentence-matched AUROC."""
    _check(S, labels)
    same = labels[:, None] == labels[None, :]
    offdiag = ~torch.eye(len(labels), dtype=torch.bool)
    Sd = S.double()
    w = float(Sd[same & offdiag].mean()) if (same & offdiag).any() else math.nan
    a = float(Sd[~same].mean()) if (~same).any() else math.nan
    return KernelEventScores(
        block_contrast=block_contrast(S, labels),
        boundary_auroc=boundary_auroc(S, labels, half_width),
        within_mean=w,
        across_mean=a,
        boundary_auroc_sentences=boundary_auroc(S, labels, half_width, candidates=sentence_tokens)
        if sentence_tokens
        else math.nan,
    )


def summarize(values: Sequence[float]) -> dict:
    """Mean, sample standard deviation, standard error and count of the finite values."""
    v = [x for x in values if x is not None and not math.isnan(x)]
    n = len(v)
    if n == 0:
        return {"mean": None, "std": None, "sem": None, "n": 0}
    mean = sum(v) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in v) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "sem": std / math.sqrt(n) if n > 1 else None, "n": n}
