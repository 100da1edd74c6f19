"""The one interface every SAE in tempolens implements.

An SAE encodes *whole sequences*: ``encode(x)`` takes activations ``[B, L, d_in]`` and
returns sparse codes per token. Per-token SAEs (TopK, ReLU, ...) simply ignore the
sequence axis; the Temporal SAE uses it as context for its attention.

Sparse codes are returned padded to a fixed number of slots ``K`` per token:
``indices[b, t, j]`` is a latent id (``-1`` for an empty slot) and ``values[b, t, j]`` its
activation (``0`` for an empty slot). A TopK SAE has ``K = k``; a ReLU/JumpReLU SAE has
``K`` = the largest number of active latents of any token in the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn


@dataclass
class SparseCodes:
    """Padded sparse codes of a batch of sequences."""

    indices: Tensor
    """``[B, L, K]`` int64 latent ids; ``-1`` marks an empty slot."""
    values: Tensor
    """``[B, L, K]`` float activations; ``0`` in empty slots."""

    @property
    def n_slots(self) -> int:
        return int(self.indices.shape[-1])

    def to_dense(self, width: int) -> Tensor:
        """Dense ``[B, L, width]`` codes (only for small batches and tests)."""
        dense = torch.zeros(*self.indices.shape[:-1], width, dtype=self.values.dtype, device=self.values.device)
        valid = self.indices >= 0
        idx = self.indices.clamp(min=0)
        dense.scatter_add_(-1, idx, torch.where(valid, self.values, torch.zeros_like(self.values)))
        return dense

    @staticmethod
    def from_dense(dense: Tensor, k: int | None = None) -> SparseCodes:
        """Sparsify dense ``[B, L, width]`` codes, keeping the positive entries.

        ``k`` bounds the slots (TopK SAEs); otherwise the slot count is the largest
        number of positive entries of any token.
        """
        positive = dense > 0
        n_active = positive.sum(-1)
        slots = int(n_active.max().item()) if dense.numel() else 0
        if k is not None:
            slots = min(slots, k) if slots else 0
        slots = max(slots, 1)
        vals, idx = dense.topk(min(slots, dense.shape[-1]), dim=-1, sorted=True)
        keep = vals > 0
        return SparseCodes(
            indices=torch.where(keep, idx, torch.full_like(idx, -1)),
            values=torch.where(keep, vals, torch.zeros_like(vals)),
        )


@dataclass
class EncodeOutput:
    """What ``SAE.encode`` returns for a batch of sequences."""

    codes: SparseCodes
    """The sparse codes that dashboards read (for a Temporal SAE: the *novel* codes)."""
    recon: Tensor
    """``[B, L, d_in]`` reconstruction in model units."""
    extras: dict[str, Tensor] = field(default_factory=dict)
    """Per-token ``[B, L]`` extras: always ``sq_err`` and ``sq_norm`` (see ``token_extras``);
    for a Temporal SAE also ``pred_share``."""
    slot_extras: dict[str, Tensor] = field(default_factory=dict)
    """Per-code ``[B, L, K]`` extras aligned with ``codes``; for a Temporal SAE ``pred`` is the
    predicted code ``z_pred`` of the same latent at the same token."""
    pred_codes: SparseCodes | None = None
    """Temporal SAE with ``pred_slots > 0``: the predicted codes ``z_pred`` kept sparsely, the
    ``pred_slots`` largest ``|z_pred|`` of each token (signed values; index −1 / value 0 = empty)."""


class SAE(nn.Module):
    """Base class: an SAE with decoder directions ``W_dec [width, d_in]``."""

    d_in: int
    width: int
    architecture: str = "sae"
    is_temporal: bool = False
    encode_precision: str = "fp32"
    """Matmul precision of ``encode`` on a CPU: ``fp32``, or ``bf16`` — TopK SAEs of at least 8,192 latents take the
    exact top ``k`` from a bfloat16 screen (:mod:`tempolens.saes.bf16_encode`); other SAEs ignore it."""

    @property
    def W_dec(self) -> Tensor:  # noqa: N802 - SAELens naming
        raise NotImplementedError

    def encode(self, x: Tensor) -> EncodeOutput:
        """Encode activations ``[B, L, d_in]`` (model units) into sparse codes."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def describe(self) -> dict:
        """Metadata written into stores and dashboards."""
        return {"architecture": self.architecture, "d_in": self.d_in, "width": self.width}


def token_extras(x: Tensor, recon: Tensor) -> dict[str, Tensor]:
    """Per-token reconstruction statistics shared by all SAEs.

    ``sq_err``: ‖x − x̂‖², ``sq_norm``: ‖x‖² (both in model units, fp32). NMSE over a set of
    tokens is ``sum(sq_err) / sum(‖x − mean‖²)``; the store keeps both so either can be read.
    """
    x32, r32 = x.float(), recon.float()
    return {"sq_err": (x32 - r32).pow(2).sum(-1), "sq_norm": x32.pow(2).sum(-1)}
