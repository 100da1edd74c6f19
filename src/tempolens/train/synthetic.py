"""Synthetic activations with known event structure: a ground truth for Temporal SAE training.

``tempolens train --model synthetic`` (or ``synthetic:dominant``) trains on these instead of a
language model's activations. Each sequence (``prompt_len`` positions, position 0 a BOS token that is
context only) is cut into 3–5 *events*. Every event draws a few "topic" atoms from a fixed
dictionary; they stay active, with per-event amplitudes and a little per-token jitter, for the
whole event. Every token adds a few "token" atoms drawn independently per token, plus small noise.
A Temporal SAE should predict the topic part from the context (its predicted codes carry the events)
and leave the token atoms to its novel codes.

``synthetic:dominant`` adds what real language models have: one axis-aligned direction ``u`` that
holds ≈39% of the regular tokens' centred variance, and "massive" tokens (≈1.4% of tokens, and
BOS) at 12× the median token norm along ``u``. A predictor trained naively collapses onto ``u``.

Everything is a pure function of ``(seed, prompt id)``: the dictionary from the seed, each sequence
from the seed and its prompt id, so batches are reproducible and resumable like a cache.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from tempolens.errors import ConfigError
from tempolens.train.activations_cache import ActivationSpec

VARIANTS = ("plain", "dominant")
MEMO_PROMPTS = 4096
"""Sequences kept in memory once generated (≈32 KB each at d 64, length 128)."""


@dataclass(frozen=True)
class SyntheticConfig:
    """Shape of the synthetic event data."""

    variant: str = "plain"
    """`plain` (events only) or `dominant` (plus a dominant direction and massive tokens)."""
    d_in: int = 64
    """Activation dimension."""
    n_topic_atoms: int = 64
    """Dictionary atoms that persist over an event."""
    n_token_atoms: int = 192
    """Dictionary atoms drawn independently per token."""
    topics_per_event: int = 3
    """Topic atoms active during one event."""
    token_atoms: tuple[int, int] = (2, 3)
    """Range (inclusive) of token atoms per token."""
    events: tuple[int, int] = (3, 5)
    """Range (inclusive) of events per sequence."""
    min_event_len: int = 12
    """Shortest event, in tokens."""
    noise: float = 0.05
    """Std of the isotropic noise (total, not per dimension)."""
    dominant_share: float = 0.39
    """`dominant`: share of the regular tokens' centred variance along the dominant direction."""
    massive_rate: float = 0.014
    """`dominant`: fraction of regular tokens that are massive."""
    massive_factor: float = 12.0
    """`dominant`: massive tokens (and BOS) reach this many times the median token norm along u."""

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ConfigError(f"unknown synthetic variant {self.variant!r}; use synthetic:plain or synthetic:dominant")


def parse_synthetic(model: str) -> SyntheticConfig | None:
    """The config of a ``synthetic`` / ``synthetic:VARIANT`` model spec, None for anything else."""
    if model != "synthetic" and not model.startswith("synthetic:"):
        return None
    variant = model.split(":", 1)[1] if ":" in model else "plain"
    return SyntheticConfig(variant=variant)


class SyntheticSource:
    """An activation source (``fetch(prompt_ids) → (acts, special)``) of synthetic event sequences."""

    def __init__(self, spec: ActivationSpec, cfg: SyntheticConfig | None = None) -> None:
        self.spec = spec
        self.cfg = cfg or parse_synthetic(spec.model) or SyntheticConfig()
        c = self.cfg
        if spec.prompt_len < 1 + c.events[1] * c.min_event_len:
            raise ConfigError(
                f"--prompt-len {spec.prompt_len} is too short for {c.events[1]} events of at least "
                f"{c.min_event_len} tokens; "
                f"use --prompt-len {1 + c.events[1] * c.min_event_len} or more"
            )
        self.d_in = c.d_in
        self._memo: dict[int, tuple[Tensor, Tensor]] = {}
        self.meta = {"model_id": f"synthetic:{c.variant}"}
        g = torch.Generator().manual_seed(int(spec.seed) * 7919 + 17)
        atoms = torch.randn(c.n_topic_atoms + c.n_token_atoms, c.d_in, generator=g)
        if c.variant == "dominant":
            atoms[:, 0] = 0.0  # u = e_0 carries only the dominant component
        atoms = atoms / atoms.norm(dim=-1, keepdim=True)
        self.topic_atoms = atoms[: c.n_topic_atoms]
        self.token_atoms = atoms[c.n_topic_atoms :]
        self.bos = torch.randn(c.d_in, generator=g)
        self.bos = self.bos / self.bos.norm() * 3.0
        self.u = torch.zeros(c.d_in)
        self.u[0] = 1.0
        self.u_std = 0.0
        self.median_norm = 0.0
        if c.variant == "dominant":
            base = torch.cat([self._sequence(10**9 + i)[0][1:] for i in range(16)])
            var = float((base - base.mean(0)).pow(2).sum(-1).mean())
            self.u_std = math.sqrt(c.dominant_share / (1 - c.dominant_share) * var)
            ref = torch.cat([self._sequence(10**9 + i, dominant=True)[0][1:] for i in range(16)])
            self.median_norm = float(ref.norm(dim=-1).median())

    def _sequence(self, pid: int, dominant: bool = False) -> tuple[Tensor, Tensor]:
        """``(acts [T, d], labels [T])`` of prompt ``pid`` (label −1 at BOS)."""
        c, T = self.cfg, self.spec.prompt_len
        g = torch.Generator().manual_seed(int(self.spec.seed) * 1_000_003 + int(pid) * 31 + 5)
        n_ev = int(torch.randint(c.events[0], c.events[1] + 1, (1,), generator=g))
        n_tok = T - 1
        slack = n_tok - n_ev * c.min_event_len
        cuts = torch.sort(torch.randint(0, slack + 1, (n_ev - 1,), generator=g)).values
        lengths = (
            torch.diff(torch.cat([torch.zeros(1, dtype=torch.long), cuts, torch.tensor([slack])])) + c.min_event_len
        )
        labels = torch.full((T,), -1, dtype=torch.long)
        acts = torch.zeros(T, c.d_in)
        acts[0] = self.bos
        pos = 1
        for e, n in enumerate(lengths.tolist()):
            topics = torch.randperm(c.n_topic_atoms, generator=g)[: c.topics_per_event]
            amp = 1.0 + torch.rand(c.topics_per_event, generator=g)
            jitter = 1.0 + 0.1 * torch.randn(n, c.topics_per_event, generator=g)
            acts[pos : pos + n] += (amp * jitter) @ self.topic_atoms[topics]
            # token atoms: m ∈ token_atoms per token, distinct atoms (the first m of a random order)
            m = torch.randint(c.token_atoms[0], c.token_atoms[1] + 1, (n, 1), generator=g)
            idx = torch.rand(n, c.n_token_atoms, generator=g).topk(c.token_atoms[1], dim=-1).indices
            coef = (0.5 + torch.rand(n, c.token_atoms[1], generator=g)) * (torch.arange(c.token_atoms[1]) < m)
            acts[pos : pos + n] += torch.einsum("nj,njd->nd", coef, self.token_atoms[idx])
            labels[pos : pos + n] = e
            pos += n
        acts[1:] += torch.randn(n_tok, c.d_in, generator=g) * (c.noise / math.sqrt(c.d_in))
        if dominant:
            acts[1:] += (self.u_std * (1.0 + torch.randn(n_tok, generator=g)))[:, None] * self.u
            if self.median_norm > 0:
                massive = torch.rand(n_tok, generator=g) < c.massive_rate
                acts[1:][massive] += c.massive_factor * self.median_norm * self.u
                acts[0] = self.bos + c.massive_factor * self.median_norm * self.u
        return acts, labels

    def sequence(self, pid: int) -> tuple[Tensor, Tensor]:
        """``(acts [T, d], event labels [T])`` of prompt ``pid``; label −1 marks BOS (memoised)."""
        hit = self._memo.get(pid)
        if hit is None:
            hit = self._sequence(pid, dominant=self.cfg.variant == "dominant")
            if len(self._memo) < MEMO_PROMPTS:
                self._memo[pid] = hit
        return hit

    def fetch(self, prompt_ids: Tensor) -> tuple[Tensor, Tensor]:
        """``(acts [n, T, d] float32, special [n, T] bool)``: BOS is the only special position."""
        seqs = [self.sequence(int(p))[0].clone() for p in prompt_ids.long().tolist()]
        acts = torch.stack(seqs) if seqs else torch.zeros(0, self.spec.prompt_len, self.d_in)
        special = torch.zeros(acts.shape[0], self.spec.prompt_len, dtype=torch.bool)
        special[:, 0] = True
        return acts, special

    def labels(self, prompt_ids: Tensor) -> Tensor:
        """``[n, T]`` event labels (−1 at BOS)."""
        return torch.stack([self.sequence(int(p))[1] for p in prompt_ids.long().tolist()])
