"""The dense reference for top-k correlations: co-activation sums in a float64 ``rows × width`` block and the
Pearson ranking over it (what tempolens computed before the sparse path in ``tempolens.stats.correlations``).
Tests only: ``W × W`` memory."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from tempolens.stats.accumulators import ShardLike, as_batch
from tempolens.stats.correlations import _csr


class CoactAccumulator:
    """Exact co-activation sums ``S[i, j] = Σ_t x_i(t)·x_j(t)`` for latent rows ``[start, stop)`` × all latents.

    Accumulated per shard with a sparse ``Aᵀ·A`` product (``A`` = the shard's sparse codes), into a
    dense float64 block of ``(stop - start) × width`` — that block is the memory bound
    (8 bytes × rows × width: 16k×16k in one block is 2 GiB, so larger widths go in row blocks,
    see :func:`tempolens.stats.features.correlation_blocks`). Merge = addition.
    """

    def __init__(self, width: int, start: int = 0, stop: int | None = None):
        self.width = int(width)
        self.start, self.stop = int(start), int(width if stop is None else stop)
        self.sum_xy = torch.zeros(self.stop - self.start, self.width, dtype=torch.float64)

    def update(self, shard: ShardLike) -> None:
        b = as_batch(shard)
        if b.latent.numel() == 0:
            return
        # the codes of one token are contiguous (CSR, token-major), so consecutive ids number the tokens
        _, inv = torch.unique_consecutive(b.gpos, return_inverse=True)
        n_tok = int(inv[-1]) + 1
        rows = (b.latent >= self.start) & (b.latent < self.stop)
        if not bool(rows.any()):
            return
        R = self.stop - self.start
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
            left = _csr(b.latent[rows] - self.start, inv[rows], b.value[rows], R, n_tok)
            right = _csr(inv, b.latent, b.value, n_tok, self.width)
            prod = torch.sparse.mm(left, right)
        crow, col = prod.crow_indices(), prod.col_indices()
        r = torch.repeat_interleave(torch.arange(R, dtype=torch.int64), crow[1:] - crow[:-1])
        # (row, col) pairs of a CSR product are unique, so index_put_ with accumulate is exact
        self.sum_xy.view(-1).index_put_(
            (r * self.width + col.to(torch.int64),), prod.values().to(torch.float64), accumulate=True
        )

    def merge(self, other: CoactAccumulator) -> None:
        if (self.start, self.stop, self.width) != (other.start, other.stop, other.width):
            raise ValueError("co-activation blocks over different rows cannot be merged")
        self.sum_xy += other.sum_xy

    def result(self) -> Tensor:
        return self.sum_xy.clone()


def correlations_from_sums(
    sum_xy: Tensor, start: int, n_tokens: int, sum_x: Tensor, sum_sq: Tensor, n_active: Tensor, k: int
) -> dict[str, Tensor]:
    """Top-``k`` correlated latents of rows ``[start, start + R)`` by Pearson, with cosine similarity.

    Over all counted tokens (zeros included): ``pearson = (n·Sxy − Sx·Sy) / sqrt((n·Sxx − Sx²)(n·Syy − Sy²))``,
    ``cosine = Sxy / sqrt(Sxx·Syy)``. The latent itself and dead latents are never listed; a dead row
    gets no entries (index −1). Ties broken by the lower index.
    """
    R, W = sum_xy.shape
    n = float(max(n_tokens, 1))
    sx = sum_x.to(torch.float64)
    sxx = sum_sq.to(torch.float64)
    var = (n * sxx - sx * sx).clamp(min=0)
    inv_std = torch.where(var > 0, 1.0 / torch.sqrt(var.clamp(min=1e-300)), torch.zeros_like(var))
    rows = torch.arange(start, start + R)
    # pearson = (n·Sxy − Sx_i·Sx_j) / (std_i·std_j), computed in place in float64, ranked in float32
    work = torch.mul(sum_xy, n)
    work.addr_(sx[rows], sx, alpha=-1.0)
    work.mul_(inv_std[rows].unsqueeze(1)).mul_(inv_std.unsqueeze(0))
    pearson = work.to(torch.float32)
    del work
    alive = n_active > 0
    pearson[:, ~alive] = float("-inf")
    pearson[torch.arange(R), rows] = float("-inf")
    kk = min(k, W)
    cand = min(W, kk + 8)
    top_v, top_i = torch.topk(pearson, cand, dim=1)
    # deterministic order: value descending, then index ascending
    o1 = torch.argsort(top_i, dim=1, stable=True)
    top_v, top_i = top_v.gather(1, o1), top_i.gather(1, o1)
    o2 = torch.argsort(top_v, dim=1, stable=True, descending=True)
    top_v, top_i = top_v.gather(1, o2)[:, :kk], top_i.gather(1, o2)[:, :kk]
    cos_den = torch.sqrt(sxx[rows].unsqueeze(1) * sxx[top_i])
    cosine = torch.where(cos_den > 0, sum_xy.gather(1, top_i) / cos_den.clamp(min=1e-300), torch.zeros_like(cos_den))
    # exact float64 Pearson of the chosen pairs (the ranking used float32)
    top_p = (
        (n * sum_xy.gather(1, top_i) - sx[rows].unsqueeze(1) * sx[top_i]) * inv_std[rows].unsqueeze(1) * inv_std[top_i]
    )
    top_v = torch.where(torch.isfinite(top_v), top_p, top_v)
    valid = torch.isfinite(top_v) & alive[rows].unsqueeze(1)
    return {
        "indices": torch.where(valid, top_i, torch.full_like(top_i, -1)),
        "pearson": torch.where(valid, top_v, torch.zeros_like(top_v)).to(torch.float32),
        "cosine": torch.where(valid, cosine, torch.zeros_like(cosine)).to(torch.float32),
    }
