"""The Temporal SAE (Lubana, Rager et al., arXiv 2511.01836), as docs/temporal-sae.md states it.

For a sequence of activations ``x [B, L, d_in]`` (model units) and weights ``D [width, d_in]``,
``b [d_in]``, ``lam = 1/(4·d_in)``, encoder ``E = Dᵀ`` (tied) or ``E [d_in, width]`` (untied):

1. ``x ← x·s − b`` (``s`` = the activation scaling factor of ``conf.yaml``).
2. For every attention layer: ``z_in = ReLU(lam·x·E)``; the context is ``z_in`` shifted right by
   one position with a zero vector at position 0; causal multi-head attention (queries from
   ``z_in``, keys/values from the shifted context, scale ``1/√(q/k head size)``, contiguous heads)
   and a ReLU give ``z``; ``d = z·D``; ``p = <d, x>/(‖d‖ + 1e-6)²``; ``z_pred += p·z``;
   ``x ← x − p·d``. Each layer recomputes ``z_in`` from the updated residual.
3. Novel codes ``z_novel = TopK_k(ReLU(lam·x·E))`` (fewer than ``k`` when fewer are positive);
   ``relu`` keeps all positive codes.
4. Reconstruction ``((z_novel + z_pred)·D + b) / s``.

Parameter names equal the checkpoint keys (``D``, ``b``, ``E``,
``attn_layers.{i}.{k_ctx,q_target,v_ctx,c_proj}.{weight,bias}``), so published state dicts load
directly; ``b`` may be stored as ``[d_in]`` or ``[1, d_in]``.

Units: ``D`` and ``b`` live in *scaled* units (activations multiplied by ``s``). ``W_dec`` returns
``D / s`` — the model-unit vector that one unit of a latent's code adds to the reconstruction
(ARCHITECTURE contract); its rows have the same directions as ``D``'s. ``D`` itself stays
available for callers that want the raw checkpoint weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tempolens.errors import ConfigError
from tempolens.options import check
from tempolens.saes.base import SAE, EncodeOutput, SparseCodes, token_extras

PROJ_EPS = 1e-6
"""Added to ‖d‖ before squaring in the projection denominator (as the reference implementation)."""


@dataclass(frozen=True)
class TemporalConfig:
    """Hyperparameters of a Temporal SAE (the ``conf.yaml`` fields that shape the forward pass)."""

    d_in: int
    """Input (residual stream) dimension (conf.yaml ``llm.dimin``)."""
    width: int
    """Number of latents (``int(dimin · sae.exp_factor)``)."""
    k: int | None = None
    """Novel codes kept per token for ``topk`` (conf.yaml ``sae.kval_topk``); None for ``relu``."""
    sae_diff_type: Literal["topk", "relu"] = "topk"
    """Sparsifier of the novel codes (conf.yaml ``sae.sae_diff_type``)."""
    n_heads: int = 4
    """Attention heads per attention layer (conf.yaml ``sae.n_heads``)."""
    n_attn_layers: int = 1
    """Number of attention layers (conf.yaml ``sae.n_attn_layers``)."""
    bottleneck_factor: int = 1
    """Query/key projections map width → width / bottleneck_factor (conf.yaml ``sae.bottleneck_factor``)."""
    tied: bool = True
    """Encoder is Dᵀ (conf.yaml ``sae.tied_weights``); otherwise a separate ``E [d_in, width]``."""
    scaling_factor: float = 1.0
    """Activation scaling factor s: the SAE sees x·s (conf.yaml ``sae.scaling_factor``)."""
    metadata: dict = field(default_factory=dict, compare=False)
    """Free-form provenance (model name, hook, layer ...) carried into ``describe()``."""

    def __post_init__(self) -> None:
        check(isinstance(self.d_in, int) and self.d_in > 0, f"d_in must be a positive integer; got {self.d_in!r}")
        check(isinstance(self.width, int) and self.width > 0, f"width must be a positive integer; got {self.width!r}")
        check(self.sae_diff_type in ("topk", "relu"), f"sae_diff_type must be topk or relu; got {self.sae_diff_type!r}")
        if self.sae_diff_type == "topk":
            check(
                isinstance(self.k, int) and 1 <= self.k <= self.width,
                f"k must be an integer in [1, width={self.width}] for a topk Temporal SAE; got {self.k!r}",
            )
        check(isinstance(self.n_heads, int) and self.n_heads >= 1, f"n_heads must be ≥ 1; got {self.n_heads!r}")
        check(
            isinstance(self.n_attn_layers, int) and self.n_attn_layers >= 1,
            f"n_attn_layers must be ≥ 1; got {self.n_attn_layers!r}",
        )
        check(
            isinstance(self.bottleneck_factor, int) and self.bottleneck_factor >= 1,
            f"bottleneck_factor must be a positive integer; got {self.bottleneck_factor!r}",
        )
        check(
            self.width % (self.bottleneck_factor * self.n_heads) == 0,
            f"width {self.width} must be divisible by bottleneck_factor·n_heads = "
            f"{self.bottleneck_factor * self.n_heads}",
        )
        check(
            isinstance(self.scaling_factor, (int, float))
            and math.isfinite(self.scaling_factor)
            and self.scaling_factor > 0,
            f"scaling_factor must be a positive finite number; got {self.scaling_factor!r}",
        )

    @property
    def qk_dim(self) -> int:
        """Width of the query/key projections (width / bottleneck_factor)."""
        return self.width // self.bottleneck_factor


class TemporalAttention(nn.Module):
    """One attention layer over codes: ``k_ctx``/``q_target`` width → width/bottleneck,
    ``v_ctx``/``c_proj`` width → width, all with biases (checkpoint key names)."""

    def __init__(self, width: int, n_heads: int, bottleneck_factor: int) -> None:
        super().__init__()
        self.width = width
        self.n_heads = n_heads
        self.qk_dim = width // bottleneck_factor
        self.k_ctx = nn.Linear(width, self.qk_dim)
        self.q_target = nn.Linear(width, self.qk_dim)
        self.v_ctx = nn.Linear(width, width)
        self.c_proj = nn.Linear(width, width)

    def forward(self, z_in: Tensor, return_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """Attention output ``[B, L, width]`` (before the ReLU) and, when asked, the weights ``[B, H, L, L]``.

        Queries come from ``z_in`` at the current position; keys and values from the context
        ``z_in`` shifted right by one with a zero vector at position 0 (so position 0 attends to
        the zero vector and still receives the k/v biases).
        """
        B, L, W = z_in.shape
        H = self.n_heads
        ctx = F.pad(z_in[:, :-1, :], (0, 0, 1, 0))  # zero vector at position 0
        q = self.q_target(z_in).view(B, L, H, self.qk_dim // H).transpose(1, 2)
        k = self.k_ctx(ctx).view(B, L, H, self.qk_dim // H).transpose(1, 2)
        v = self.v_ctx(ctx).view(B, L, H, W // H).transpose(1, 2)
        weights = None
        if return_weights:
            scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
            causal = torch.ones(L, L, dtype=torch.bool, device=z_in.device).tril()
            scores = scores.masked_fill(~causal, float("-inf"))
            weights = torch.softmax(scores, dim=-1)
            out = weights @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        out = out.transpose(1, 2).reshape(B, L, W)
        return self.c_proj(out), weights


@dataclass
class TemporalDetails:
    """Everything one Temporal SAE forward pass computes (dense; for small batches and figures)."""

    z_novel: Tensor
    """``[B, L, width]`` novel codes (TopK/ReLU of the residual after prediction)."""
    z_pred: Tensor
    """``[B, L, width]`` predicted codes (dense, signed: projections can be negative)."""
    attn: list[Tensor]
    """Attention weights ``[B, H, L, L]`` per attention layer (row = query position)."""
    recon: Tensor
    """``[B, L, d_in]`` full reconstruction in model units."""
    recon_novel: Tensor
    """``[B, L, d_in]`` ``z_novel·D / s`` (model units, bias excluded)."""
    recon_pred: Tensor
    """``[B, L, d_in]`` ``z_pred·D / s`` (model units, bias excluded)."""
    pred_share: Tensor
    """``[B, L]`` ‖r_pred‖² / (‖r_pred‖² + ‖r_novel‖²), 0 where both are 0."""
    codes: SparseCodes
    """The novel codes in the sparse layout ``encode`` returns."""


@dataclass
class TemporalTrainOutput:
    """What :meth:`TemporalSAE.forward_train` returns (all differentiable, scaled units)."""

    recon: Tensor
    """``[B, L, d_in]`` reconstruction ``(z_novel + z_pred)·D + b`` in scaled units (``x·s``)."""
    codes: SparseCodes
    """The novel codes (TopK/ReLU of the residual after prediction)."""
    z_pred: Tensor
    """``[B, L, width]`` dense predicted codes, summed over the attention layers."""
    z_in: list[Tensor]
    """Per attention layer, the codes ``ReLU(lam·x·E)`` its queries (and shifted keys/values) read."""
    directions: list[Tensor]
    """Per attention layer, the predicted direction ``d = ReLU(attention output)·D`` before the scale ``p``."""
    p: list[Tensor]
    """Per attention layer, the projection scale ``p = <d, x>/(‖d‖ + 1e-6)²`` ``[B, L, 1]``."""
    attn: list[Tensor]
    """Attention weights ``[B, H, L, L]`` per layer when asked for (else empty)."""


def predicted_share(r_pred: Tensor, r_novel: Tensor) -> Tensor:
    """Per-token ‖r_pred‖² / (‖r_pred‖² + ‖r_novel‖²) in fp32, defined as 0 where both norms are 0."""
    a = r_pred.float().pow(2).sum(-1)
    c = r_novel.float().pow(2).sum(-1)
    tot = a + c
    return torch.where(tot > 0, a / tot.clamp_min(torch.finfo(torch.float32).tiny), torch.zeros_like(tot))


def projection_scale(d: Tensor, x: Tensor) -> Tensor:
    """``<d, x> / (‖d‖ + 1e-6)²`` per token ``[..., 1]``, computed in fp32 (in fp16 the squared
    epsilon would underflow and turn an all-zero prediction into 0/0), returned in ``x``'s dtype."""
    d32, x32 = d.float(), x.float()
    num = (d32 * x32).sum(-1, keepdim=True)
    den = (d32.norm(dim=-1, keepdim=True) + PROJ_EPS).pow(2)
    return (num / den).to(x.dtype)


def sparse_decode(codes: SparseCodes, weight: Tensor) -> Tensor:
    """``Σ_j values[..., j] · weight[indices[..., j]]`` without building dense codes (empty slots add 0)."""
    shape = codes.indices.shape
    idx = codes.indices.reshape(-1, shape[-1])
    vals = codes.values.reshape(-1, shape[-1]).to(weight.dtype)
    if idx.shape[-1] == 0 or idx.shape[0] == 0:
        return torch.zeros(*shape[:-1], weight.shape[-1], dtype=weight.dtype, device=weight.device)
    vals = torch.where(idx >= 0, vals, torch.zeros_like(vals))
    out = F.embedding_bag(idx.clamp(min=0), weight, per_sample_weights=vals, mode="sum")
    return out.reshape(*shape[:-1], weight.shape[-1])


def topk_codes(pre: Tensor, k: int) -> SparseCodes:
    """TopK of ``ReLU(pre)`` as sparse codes: the ``k`` largest entries, minus any that are ≤ 0."""
    vals, idx = pre.topk(min(k, pre.shape[-1]), dim=-1, sorted=True)
    return relu_codes(vals, idx)


def relu_codes(vals: Tensor, idx: Tensor) -> SparseCodes:
    """Sparse codes from the top values and their latents, minus any value ≤ 0 (index −1, value 0)."""
    keep = vals > 0
    return SparseCodes(
        indices=torch.where(keep, idx, torch.full_like(idx, -1)),
        values=torch.where(keep, vals, torch.zeros_like(vals)),
    )


def top_abs_codes(z: Tensor, k: int, center: Tensor | None = None, scale: Tensor | None = None) -> SparseCodes:
    """The ``k`` entries of largest ``|z − center| / scale`` (per-latent ``[width]``; default 0 and 1)
    of every token of dense signed codes ``z [B, L, width]`` (ties: ``torch.topk``'s choice), with
    their raw values ``z``; exact zeros are left out (index −1, value 0)."""
    score = z
    if center is not None:
        score = score - center.to(z)
    if scale is not None:
        score = score / scale.to(z)
    vals, idx = score.abs().topk(min(int(k), z.shape[-1]), dim=-1, sorted=True)
    signed = z.gather(-1, idx)
    keep = signed != 0
    return SparseCodes(
        indices=torch.where(keep, idx, torch.full_like(idx, -1)),
        values=torch.where(keep, signed, torch.zeros_like(signed)),
    )


class TemporalSAE(SAE):
    """A Temporal SAE: attention over past codes predicts part of each activation; the novel
    remainder goes through a TopK (or ReLU) SAE. ``encode`` returns the novel codes."""

    architecture = "temporal"
    is_temporal = True

    def __init__(self, cfg: TemporalConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.d_in = cfg.d_in
        self.width = cfg.width
        self.lam = 1.0 / (4 * cfg.d_in)
        self.D = nn.Parameter(torch.empty(cfg.width, cfg.d_in))
        self.b = nn.Parameter(torch.zeros(cfg.d_in))
        if not cfg.tied:
            self.E = nn.Parameter(torch.empty(cfg.d_in, cfg.width))
        self.attn_layers = nn.ModuleList(
            TemporalAttention(cfg.width, cfg.n_heads, cfg.bottleneck_factor) for _ in range(cfg.n_attn_layers)
        )
        nn.init.normal_(self.D)
        if not cfg.tied:
            nn.init.normal_(self.E)
        self.pred_slots = 0
        """``encode`` also returns ``pred_codes``: the top ``pred_slots`` latents per token by
        ``|z_pred − pred_center| / pred_scale`` (0: not computed; `collect --pred-k` sets it)."""
        self.pred_center: Tensor | None = None
        """``[width]`` per-latent centre of the ranking (see :meth:`pred_calibration`)."""
        self.pred_scale: Tensor | None = None
        """``[width]`` per-latent scale of the ranking."""

    # -- state dict compatibility: the original .pt stores b as [1, d_in] -----------------------
    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        key = prefix + "b"
        if key in state_dict and state_dict[key].dim() == 2 and state_dict[key].shape[0] == 1:
            state_dict[key] = state_dict[key].reshape(-1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -- properties --------------------------------------------------------------------------
    @property
    def scaling_factor(self) -> float:
        return float(self.cfg.scaling_factor)

    @property
    def k(self) -> int | None:
        return self.cfg.k if self.cfg.sae_diff_type == "topk" else None

    @property
    def encoder(self) -> Tensor:
        """``E [d_in, width]`` (``Dᵀ`` when tied), in scaled units."""
        return self.D.T if self.cfg.tied else self.E

    @property
    def W_dec(self) -> Tensor:  # noqa: N802
        """Decoder vectors in model units, ``D / s`` ``[width, d_in]`` (same directions as ``D``)."""
        return self.D / self.cfg.scaling_factor

    @property
    def b_dec(self) -> Tensor:
        """Decoder bias in model units, ``b / s`` ``[d_in]``."""
        return self.b.reshape(-1) / self.cfg.scaling_factor

    def describe(self) -> dict:
        c = self.cfg
        out = {
            "architecture": "temporal",
            "d_in": c.d_in,
            "width": c.width,
            "k": self.k,
            "sae_diff_type": c.sae_diff_type,
            "n_heads": c.n_heads,
            "n_attn_layers": c.n_attn_layers,
            "bottleneck_factor": c.bottleneck_factor,
            "tied": c.tied,
            "scaling_factor": c.scaling_factor,
        }
        if c.metadata:
            out["metadata"] = dict(c.metadata)
        return out

    # -- the forward pass ------------------------------------------------------------------------
    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 3 or x.shape[-1] != self.d_in:
            raise ConfigError(
                f"Temporal SAE expects activations [batch, length, {self.d_in}]; got shape {tuple(x.shape)} "
                "(check that the hook layer/model matches the SAE)"
            )

    def _predict(
        self, x: Tensor, return_attn: bool, trace: dict[str, list[Tensor]] | None = None
    ) -> tuple[Tensor, Tensor, list[Tensor]]:
        """Steps 1–2: returns the final residual (scaled units), dense ``z_pred`` and attention maps.

        ``trace`` (optional) collects per layer ``z_in``, the direction ``d`` before ``p`` and ``p``.
        """
        E = self.encoder
        x = x.to(self.D.dtype) * self.cfg.scaling_factor - self.b.reshape(-1)
        z_pred = torch.zeros(*x.shape[:-1], self.width, dtype=x.dtype, device=x.device)
        maps: list[Tensor] = []
        for layer in self.attn_layers:
            z_in = F.relu((x * self.lam) @ E)
            out, w = layer(z_in, return_weights=return_attn)
            z = F.relu(out)
            d = z @ self.D
            p = projection_scale(d, x)
            z_pred = z_pred + p * z
            x = x - p * d
            if w is not None:
                maps.append(w)
            if trace is not None:
                trace.setdefault("z_in", []).append(z_in)
                trace.setdefault("d", []).append(d)
                trace.setdefault("p", []).append(p)
        return x, z_pred, maps

    def _novel(self, residual: Tensor) -> SparseCodes:
        pre = (residual * self.lam) @ self.encoder
        if self.cfg.sae_diff_type == "topk":
            return topk_codes(pre, int(self.cfg.k))  # type: ignore[arg-type]
        return SparseCodes.from_dense(F.relu(pre))

    def forward_train(self, x: Tensor, return_attn: bool = False) -> TemporalTrainOutput:
        """The differentiable forward pass for training: the same computation as :meth:`forward`,
        with the reconstruction left in *scaled* units and the intermediate tensors a loss needs."""
        self._check_input(x)
        trace: dict[str, list[Tensor]] = {}
        residual, z_pred, maps = self._predict(x, return_attn=return_attn, trace=trace)
        codes = self._novel(residual)
        D = self.D.to(z_pred.dtype)
        recon = sparse_decode(codes, D) + z_pred @ D + self.b.reshape(-1)
        return TemporalTrainOutput(
            recon=recon, codes=codes, z_pred=z_pred, z_in=trace["z_in"], directions=trace["d"], p=trace["p"], attn=maps
        )

    def forward(self, x: Tensor) -> Tensor:
        """Differentiable reconstruction ``[B, L, d_in]`` in model units (for training and tests)."""
        residual, z_pred, _ = self._predict(x, return_attn=False)
        codes = self._novel(residual)
        recon = sparse_decode(codes, self.D) + z_pred @ self.D + self.b.reshape(-1)
        return recon / self.cfg.scaling_factor

    @torch.no_grad()
    def pred_calibration(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Per-latent mean and standard deviation of ``z_pred`` over the tokens of ``x [B, L, d_in]``
        (``mask [B, L]``: the tokens to count). A latent that the context predicts at every token has a
        large mean: ranking by ``|z_pred − mean| / std`` keeps, per token, the latents whose prediction is
        unusual for them, rather than the same few always-predicted latents. Zero or undefined standard
        deviations are raised to the median positive one."""
        _, z, _ = self._predict(x, return_attn=False)
        z = z.reshape(-1, self.width).double()
        if mask is not None:
            z = z[mask.reshape(-1).to(z.device)]
        mean = z.mean(0) if z.shape[0] else torch.zeros(self.width, dtype=torch.float64, device=z.device)
        std = z.std(0, correction=0) if z.shape[0] > 1 else torch.zeros_like(mean)
        pos = std[std > 0]
        floor = pos.median() if pos.numel() else torch.ones((), dtype=std.dtype, device=std.device)
        return mean.float().cpu(), torch.where(std > 0, std, floor).float().cpu()

    @torch.no_grad()
    def encode(self, x: Tensor) -> EncodeOutput:
        """Novel codes of ``x [B, L, d_in]`` (model units) plus reconstruction and extras.

        ``extras``: ``sq_err``, ``sq_norm`` (model units) and ``pred_share``; ``slot_extras['pred']``
        is ``z_pred`` of the same latent at the same token (0 in empty slots).
        """
        self._check_input(x)
        residual, z_pred, _ = self._predict(x, return_attn=False)
        codes = self._novel(residual)
        s = self.cfg.scaling_factor
        r_novel = sparse_decode(codes, self.D)
        r_pred = z_pred @ self.D
        recon = ((r_novel + r_pred + self.b.reshape(-1)) / s).to(x.dtype)
        extras = token_extras(x, recon)
        extras["pred_share"] = predicted_share(r_pred, r_novel)
        valid = codes.indices >= 0
        pred = z_pred.gather(-1, codes.indices.clamp(min=0))
        slot_extras = {"pred": torch.where(valid, pred, torch.zeros_like(pred))}
        pred_codes = (
            top_abs_codes(z_pred, self.pred_slots, self.pred_center, self.pred_scale) if self.pred_slots > 0 else None
        )
        return EncodeOutput(codes=codes, recon=recon, extras=extras, slot_extras=slot_extras, pred_codes=pred_codes)

    @torch.no_grad()
    def forward_details(self, x: Tensor) -> TemporalDetails:
        """Dense novel/predicted codes, attention maps per layer and the novel/pred split of ``x``."""
        self._check_input(x)
        residual, z_pred, maps = self._predict(x, return_attn=True)
        codes = self._novel(residual)
        s = self.cfg.scaling_factor
        z_novel = codes.to_dense(self.width).to(z_pred.dtype)
        r_novel = z_novel @ self.D
        r_pred = z_pred @ self.D
        recon = (r_novel + r_pred + self.b.reshape(-1)) / s
        return TemporalDetails(
            z_novel=z_novel,
            z_pred=z_pred,
            attn=maps,
            recon=recon,
            recon_novel=r_novel / s,
            recon_pred=r_pred / s,
            pred_share=predicted_share(r_pred, r_novel),
            codes=codes,
        )
