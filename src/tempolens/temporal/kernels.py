"""Similarity kernels, attention maps and the predicted/novel split: pure functions on tensors.

The similarity kernel of one sequence of codes ``X [L, W]`` (docs/temporal-sae.md, as Neuronpedia's
``/util/similarity-matrix-pred`` computes it for a Temporal SAE's predicted codes):

1. subtract the mean over positions: ``P = X − mean_t X_t`` (the mean includes the BOS row);
2. L2-normalise each row of ``P`` (a row whose norm is zero stays a zero row: no NaN);
3. ``S = P·Pᵀ`` — the cosine similarity of the mean-centred codes, ``[L, L]`` in ``[−1, 1]``;
4. drop the BOS row and column *after* computing (so BOS still shifts the mean).

The same function serves the novel codes and a standard SAE's codes (the paper's contrast).
Memory is ``L×L`` for the result plus one block of ``block_rows×W`` dense rows at a time, so
sparse codes of long texts are never densified in full; texts longer than ``max_tokens``
(default :data:`MAX_KERNEL_TOKENS`) are refused with a clear error, since the result and every
figure/page built from it grow as ``L²``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from tempolens.errors import TempolensError
from tempolens.saes.base import SparseCodes

MAX_KERNEL_TOKENS = 8192
"""Hard cap on the sequence length of one kernel: ``8192² × 4`` bytes = 256 MiB for ``S``."""

DEFAULT_BLOCK_ROWS = 1024
"""Rows densified at a time; a block is ``block_rows × W`` floats."""

ZERO_NORM_RTOL = 1e-6
"""A centred row whose norm is at most this fraction of the largest centred-row norm is treated as
zero (it equals the mean up to rounding, so its direction is noise); its kernel row is zero."""


class KernelInputError(TempolensError):
    """The codes given to a kernel have the wrong shape or are too long."""


Codes = Tensor | SparseCodes
"""Codes of one sequence: dense ``[L, W]``, or sparse ``SparseCodes`` with ``indices/values [L, K]``."""


def _row_reader(codes: Codes, width: int | None) -> tuple[int, int, Callable[[int, int], Tensor]]:
    """``(L, W, rows(a, b) -> dense float32 [b-a, W])`` for dense or sparse codes of one sequence."""
    if isinstance(codes, SparseCodes):
        idx, val = codes.indices, codes.values
        if idx.dim() == 3 and idx.shape[0] == 1:
            idx, val = idx[0], val[0]
        if idx.dim() != 2 or idx.shape != val.shape:
            raise KernelInputError(
                f"sparse codes of one sequence must have indices/values [L, K]; got {tuple(idx.shape)}"
            )
        if width is None:
            raise KernelInputError("sparse codes need the SAE width (pass width=...)")
        if idx.numel() and int(idx.max()) >= width:
            raise KernelInputError(f"a latent index ({int(idx.max())}) is not below the SAE width {width}")
        W = int(width)

        def rows(a: int, b: int) -> Tensor:
            return SparseCodes(idx[a:b].unsqueeze(0), val[a:b].float().unsqueeze(0)).to_dense(W)[0]

        return int(idx.shape[0]), W, rows
    if not isinstance(codes, Tensor):
        raise KernelInputError(f"codes must be a tensor [L, W] or SparseCodes; got {type(codes).__name__}")
    x = codes[0] if codes.dim() == 3 and codes.shape[0] == 1 else codes
    if x.dim() != 2:
        raise KernelInputError(f"codes of one sequence must be [L, W]; got shape {tuple(codes.shape)}")
    return int(x.shape[0]), int(x.shape[1]), lambda a, b: x[a:b].float()


def similarity_kernel(
    codes: Codes,
    drop_first: bool = True,
    *,
    width: int | None = None,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    max_tokens: int = MAX_KERNEL_TOKENS,
) -> Tensor:
    """Mean-centred cosine similarity kernel ``[L', L']`` of one sequence's codes (float32, CPU).

    ``codes``: dense ``[L, W]`` (or ``[1, L, W]``) or :class:`SparseCodes` of one sequence (then
    ``width`` is required). ``drop_first`` removes row/column 0 (BOS) *after* the mean and the
    normalisation, as Neuronpedia does, so ``L' = L − 1``. Computed in blocks of ``block_rows``
    rows; refuses ``L > max_tokens``.
    """
    L, W, rows = _row_reader(codes, width)
    if L > max_tokens:
        raise KernelInputError(
            f"the text has {L} tokens, above the kernel limit of {max_tokens}; split it or raise --max-tokens "
            f"(the kernel needs {L * L * 4 / 2**20:.0f} MiB)"
        )
    if L == 0:
        return torch.zeros(0, 0)
    if block_rows < 1:
        raise KernelInputError("block_rows must be at least 1")
    starts = list(range(0, L, block_rows))
    # 1. mean over positions (fp64 accumulation, one block at a time)
    total = torch.zeros(W, dtype=torch.float64)
    for a in starts:
        total += rows(a, min(a + block_rows, L)).double().sum(0)
    mean = (total / L).float()
    # 2. row norms of the centred codes
    norms = torch.empty(L)
    for a in starts:
        b = min(a + block_rows, L)
        norms[a:b] = (rows(a, b) - mean).norm(dim=-1)
    tol = ZERO_NORM_RTOL * float(norms.max()) if L else 0.0
    inv = torch.where(norms > tol, 1.0 / norms.clamp_min(1e-30), torch.zeros_like(norms))
    # 3. S = P Pᵀ block by block; S is symmetric, so only the upper blocks are multiplied
    S = torch.empty(L, L)
    for i, a in enumerate(starts):
        b = min(a + block_rows, L)
        Pa = (rows(a, b) - mean) * inv[a:b, None]
        for c in starts[i:]:
            d = min(c + block_rows, L)
            Pc = Pa if c == a else (rows(c, d) - mean) * inv[c:d, None]
            blk = Pa @ Pc.T
            S[a:b, c:d] = blk
            if c != a:
                S[c:d, a:b] = blk.T
    S.clamp_(-1.0, 1.0)
    # 4. drop BOS after computing
    return S[1:, 1:].contiguous() if drop_first else S


def predicted_share(recon_pred: Tensor, recon_novel: Tensor) -> Tensor:
    """Per-token predicted share ``‖r_pred‖² / (‖r_pred‖² + ‖r_novel‖²)`` in ``[0, 1]`` (ARCHITECTURE).

    ``recon_pred = z_pred·D`` and ``recon_novel = z_novel·D`` without the bias, ``[..., d]``.
    A token with both parts zero gets share 0.
    """
    p = recon_pred.float().pow(2).sum(-1)
    n = recon_novel.float().pow(2).sum(-1)
    den = p + n
    return torch.where(den > 0, p / den.clamp_min(1e-30), torch.zeros_like(den))


@dataclass
class AttentionByToken:
    """Attention of one Temporal-SAE attention layer, re-indexed by the context token it reads.

    The SAE's keys are the codes shifted right by one with a zero slot at position 0, so raw
    column ``j`` of ``attn[t, j]`` is token ``j − 1``. Here ``maps[h, t, s]`` is the weight query
    token ``t`` puts on context token ``s`` (``s < t``, strictly lower-triangular) and
    ``start[h, t]`` is the weight on the empty start slot; each row of ``maps`` plus ``start``
    sums to 1.
    """

    maps: Tensor
    """``[H, L, L]`` attention from query token (rows) to context token (columns)."""
    start: Tensor
    """``[H, L]`` attention on the empty start slot."""


def attention_by_token(attn: Tensor) -> AttentionByToken:
    """Re-index raw attention ``[H, L, L]`` (or ``[1, H, L, L]``) of one layer by context token."""
    a = attn[0] if attn.dim() == 4 and attn.shape[0] == 1 else attn
    if a.dim() != 3 or a.shape[-1] != a.shape[-2]:
        raise KernelInputError(f"attention of one sequence must be [H, L, L]; got {tuple(attn.shape)}")
    a = a.float()
    maps = torch.zeros_like(a)
    maps[:, :, :-1] = a[:, :, 1:]
    return AttentionByToken(maps=maps, start=a[:, :, 0].clone())


def attention_vmax(layers: Sequence[Tensor], q: float = 0.995) -> float:
    """Top of the attention colour scale: the ``q`` quantile of all causal (below-diagonal) weights."""
    vals = [
        m[:, torch.ones(m.shape[-1], m.shape[-1], dtype=torch.bool).tril(-1)].flatten()
        for m in layers
        if m.shape[-1] > 1
    ]
    if not vals:
        return 1.0
    v = torch.cat(vals).float()
    if v.numel() > 1_000_000:
        v = v[torch.randperm(v.numel(), generator=torch.Generator().manual_seed(0))[:1_000_000]]
    return float(min(1.0, max(1e-3, torch.quantile(v, q).item())))


def top_latents(codes: Codes, k: int = 5, *, width: int | None = None) -> tuple[Tensor, Tensor]:
    """The ``k`` largest codes per token: ``(indices [L, k], values [L, k])``; unused slots are −1/0."""
    if isinstance(codes, SparseCodes):
        idx, val = codes.indices, codes.values
        if idx.dim() == 3:
            idx, val = idx[0], val[0]
        kk = min(k, idx.shape[-1])
        v, order = val.float().topk(kk, dim=-1)
        i = idx.gather(-1, order)
    else:
        x = codes[0] if codes.dim() == 3 else codes
        kk = min(k, x.shape[-1])
        v, i = x.float().topk(kk, dim=-1)
    keep = v > 0
    i = torch.where(keep, i, torch.full_like(i, -1))
    v = torch.where(keep, v, torch.zeros_like(v))
    if kk < k:
        pad = k - kk
        i = torch.cat([i, torch.full((i.shape[0], pad), -1, dtype=i.dtype)], -1)
        v = torch.cat([v, torch.zeros(v.shape[0], pad)], -1)
    return i, v
