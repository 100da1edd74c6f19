"""Freshly initialised SAEs: the floor for autointerp and a stand-in when no trained SAE exists.

A random SAE is only a fair floor when it is centred on the data: on Gemma 3 270M block 9 the mean
residual has norm ≈6.2e3 against a median token norm ≈6.3e3, so a random TopK SAE with a small
bias lets only ≈180 of 2,560 latents ever fire (measured on Gemma 3 270M block 9). Both constructors therefore take the
mean activation (model units) as the decoder bias, and the Temporal one a scaling factor
``s = 1/mean‖x‖`` ("unit expected norm", as the published checkpoints use).

Python API::

    acts = ...                                   # [N, d_in] sample activations, BOS excluded
    sae = random_temporal_sae(d_in, width, k, mean=activation_mean(acts), scaling_factor=estimate_scaling(acts))
    sae = random_topk_sae(d_in, width, k, seed=0, mean=activation_mean(acts))

Spec strings (used by ``load_sae`` and the CLI)::

    random:temporal?width=2560&k=32&seed=0&n_heads=4&n_attn_layers=1&bottleneck_factor=1&mean=auto&scale=auto
    random:topk?width=2560&k=32&seed=0&mean=auto

``width`` defaults to 4·d_in, ``k`` to 32, ``seed`` to 0; ``d_in`` may be given explicitly;
``mean`` is ``auto`` (mean of the sample, the default) or ``zero``; ``scale`` (Temporal only) is
``auto`` (1/mean‖x‖ of the sample, the default) or a positive number.

Contract with the collect pipeline: call ``needs_activation_stats(spec)``; when it is true, run
the subject model on a few prompts, drop BOS/pad positions, and pass the activations ``[N, d_in]``
to ``sae_from_spec_with_stats(spec, acts)`` (or ``load_sae(spec, activation_sample=acts)``). The
statistics are computed once here (``activation_mean``, ``estimate_scaling``) and the resulting SAE
is deterministic for a seed and a sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl

import torch
from torch import Tensor

from tempolens.errors import ConfigError
from tempolens.options import check
from tempolens.saes.base import SAE
from tempolens.saes.standard import StandardConfig, StandardSAE
from tempolens.saes.temporal import TemporalConfig, TemporalSAE


def activation_mean(acts: Tensor) -> Tensor:
    """Mean activation ``[d_in]`` (fp32) over all leading dimensions of ``acts [..., d_in]``."""
    return acts.reshape(-1, acts.shape[-1]).double().mean(0).float()


def estimate_scaling(acts: Tensor) -> float:
    """Activation scaling factor ``1 / mean‖x‖`` over the tokens of ``acts [..., d_in]``."""
    norms = acts.reshape(-1, acts.shape[-1]).double().norm(dim=-1)
    mean = float(norms.mean()) if norms.numel() else 0.0
    if not math.isfinite(mean) or mean <= 0:
        raise ConfigError("cannot estimate a scaling factor: the sample activations are empty, zero or not finite")
    return 1.0 / mean


def _unit_rows(shape: tuple[int, int], g: torch.Generator) -> Tensor:
    w = torch.randn(shape, generator=g)
    return w / w.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _init_attention(sae: TemporalSAE, g: torch.Generator) -> None:
    """Row-normalised attention weights as the reference implementation initialises them: q/k rows
    scaled 1/√(q/k head size), v rows 1/√(value head size), output rows 1/√width; biases
    uniform ±1/√width (``nn.Linear``'s default range)."""
    c = sae.cfg
    qk_head, v_head = c.qk_dim // c.n_heads, c.width // c.n_heads
    bound = 1.0 / math.sqrt(c.width)
    for layer in sae.attn_layers:
        for lin, scale in (
            (layer.k_ctx, qk_head),
            (layer.q_target, qk_head),
            (layer.v_ctx, v_head),
            (layer.c_proj, c.width),
        ):
            lin.weight.copy_(_unit_rows(tuple(lin.weight.shape), g) / math.sqrt(scale))  # type: ignore[arg-type]
            lin.bias.copy_((torch.rand(lin.bias.shape, generator=g) * 2 - 1) * bound)


@torch.no_grad()
def random_temporal_sae(
    d_in: int,
    width: int,
    k: int,
    n_heads: int = 4,
    n_attn_layers: int = 1,
    bottleneck_factor: int = 1,
    seed: int = 0,
    mean: Tensor | None = None,
    scaling_factor: float = 1.0,
) -> TemporalSAE:
    """A random tied TopK Temporal SAE: unit-norm decoder rows ``D``, encoder ``Dᵀ``, reference-style
    attention init; ``b = mean · s`` (``mean`` in model units) so the SAE sees centred activations."""
    cfg = TemporalConfig(
        d_in=d_in,
        width=width,
        k=k,
        sae_diff_type="topk",
        n_heads=n_heads,
        n_attn_layers=n_attn_layers,
        bottleneck_factor=bottleneck_factor,
        tied=True,
        scaling_factor=float(scaling_factor),
        metadata={"init": "random", "seed": seed},
    )
    g = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        sae = TemporalSAE(cfg)
    sae.to_empty(device="cpu")
    sae.D.copy_(_unit_rows((width, d_in), g))
    sae.b.copy_(_bias(mean, d_in) * float(scaling_factor))
    _init_attention(sae, g)
    return sae.eval()


@torch.no_grad()
def random_topk_sae(d_in: int, width: int, k: int, seed: int = 0, mean: Tensor | None = None) -> StandardSAE:
    """A random TopK SAE: unit-norm decoder rows, tied encoder ``W_enc = W_decᵀ``, ``b_enc = 0`` and
    ``b_dec = mean`` (subtracted from the input before encoding)."""
    cfg = StandardConfig(architecture="topk", d_in=d_in, width=width, k=k, metadata={"init": "random", "seed": seed})
    g = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        sae = StandardSAE(cfg)
    sae.to_empty(device="cpu")
    sae.W_dec.copy_(_unit_rows((width, d_in), g))
    sae.W_enc.copy_(sae.W_dec.T)
    sae.b_enc.zero_()
    sae.b_dec.copy_(_bias(mean, d_in))
    return sae.eval()


def _bias(mean: Tensor | None, d_in: int) -> Tensor:
    if mean is None:
        return torch.zeros(d_in)
    mean = mean.detach().float().cpu().reshape(-1)
    if mean.numel() != d_in:
        raise ConfigError(f"mean activation has {mean.numel()} entries but the SAE has d_in={d_in}")
    return mean


# ------------------------------------------------------------------------------------------------
# Spec strings

_COMMON = {"width", "k", "seed", "d_in", "mean"}
_TEMPORAL = _COMMON | {"n_heads", "n_attn_layers", "bottleneck_factor", "scale"}


@dataclass(frozen=True)
class RandomSpec:
    """A parsed ``random:<kind>?key=value&...`` spec."""

    kind: Literal["temporal", "topk"]
    """Which SAE to initialise."""
    width: int | None = None
    """Number of latents (default 4·d_in)."""
    k: int = 32
    """Latents kept per token (clamped to width)."""
    seed: int = 0
    """Seed of the initialisation."""
    d_in: int | None = None
    """Input dimension (default: from the sample activations)."""
    mean: Literal["auto", "zero"] = "auto"
    """Decoder bias: the sample's mean activation (auto) or zero."""
    scale: float | None = None
    """Temporal only: the scaling factor s; None = auto (1/mean‖x‖ of the sample)."""
    n_heads: int = 4
    """Temporal only: attention heads."""
    n_attn_layers: int = 1
    """Temporal only: attention layers."""
    bottleneck_factor: int = 1
    """Temporal only: q/k bottleneck factor."""

    def __post_init__(self) -> None:
        check(self.kind in ("temporal", "topk"), f"random SAE kind must be temporal or topk; got {self.kind!r}")
        check(self.mean in ("auto", "zero"), f"random SAE mean must be auto or zero; got {self.mean!r}")
        check(
            self.scale is None or (math.isfinite(self.scale) and self.scale > 0),
            f"random SAE scale must be positive; got {self.scale!r}",
        )

    @property
    def needs_stats(self) -> bool:
        return self.d_in is None or self.mean == "auto" or (self.kind == "temporal" and self.scale is None)


def parse_random_spec(spec: str) -> RandomSpec:
    """Parse ``random:temporal?width=...&k=...`` (see the module docstring) with strict checking."""
    if not spec.startswith("random:"):
        raise ConfigError(f"not a random-init spec: {spec!r}")
    kind, _, query = spec[len("random:") :].partition("?")
    kind = kind or "temporal"
    if kind not in ("temporal", "topk"):
        raise ConfigError(f"random SAE kind must be temporal or topk; got {kind!r} in {spec!r}")
    allowed = _TEMPORAL if kind == "temporal" else _COMMON
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ConfigError(f"cannot parse {spec!r}; write random:{kind}?width=2560&k=32&seed=0") from None
    kw: dict = {}
    for key, value in pairs:
        if key not in allowed:
            raise ConfigError(f"unknown option {key!r} in {spec!r}; random:{kind} takes {', '.join(sorted(allowed))}")
        if key in kw:
            raise ConfigError(f"option {key!r} given twice in {spec!r}")
        if key == "mean":
            kw[key] = value
        elif key == "scale":
            if value == "auto":
                kw[key] = None
            else:
                try:
                    kw[key] = float(value)
                except ValueError:
                    raise ConfigError(f"scale must be auto or a positive number in {spec!r}; got {value!r}") from None
        else:
            try:
                n = int(value)
            except ValueError:
                raise ConfigError(f"{key} must be an integer in {spec!r}; got {value!r}") from None
            if n < (0 if key == "seed" else 1):
                raise ConfigError(f"{key} must be {'≥ 0' if key == 'seed' else 'positive'} in {spec!r}; got {n}")
            kw[key] = n
    return RandomSpec(kind=kind, **kw)  # type: ignore[arg-type]


def needs_activation_stats(spec: str) -> bool:
    """True when ``spec`` is a random-init spec that must be given sample activations
    (mean, scaling factor or d_in come from them); False for every other spec."""
    s = str(spec).strip()
    return s.startswith("random:") and parse_random_spec(s).needs_stats


def sae_from_spec_with_stats(spec: str, acts: Tensor | None = None) -> SAE:
    """Build the random SAE of ``spec``; ``acts [N, d_in]`` (model units, BOS/pad excluded)
    supplies d_in, the mean and the scaling factor where the spec asks for them."""
    rs = parse_random_spec(str(spec).strip())
    if rs.needs_stats and acts is None:
        raise ConfigError(
            f"{spec!r} needs sample activations (for d_in, mean or scale): pass activation_sample, "
            "or give d_in, mean=zero and scale explicitly"
        )
    if acts is not None:
        acts = acts.reshape(-1, acts.shape[-1]).float()
        if not torch.isfinite(acts).all():
            raise ConfigError("the sample activations contain NaN/inf; cannot initialise a random SAE from them")
    d_in = rs.d_in if rs.d_in is not None else int(acts.shape[-1])  # type: ignore[union-attr]
    if acts is not None and acts.shape[-1] != d_in:
        raise ConfigError(f"{spec!r} says d_in={d_in} but the sample activations have {acts.shape[-1]} dimensions")
    width = rs.width or 4 * d_in
    k = min(rs.k, width)
    mean = activation_mean(acts) if rs.mean == "auto" else None  # type: ignore[arg-type]
    if rs.kind == "topk":
        return random_topk_sae(d_in, width, k, seed=rs.seed, mean=mean)
    scale = rs.scale if rs.scale is not None else estimate_scaling(acts)  # type: ignore[arg-type]
    return random_temporal_sae(
        d_in,
        width,
        k,
        n_heads=rs.n_heads,
        n_attn_layers=rs.n_attn_layers,
        bottleneck_factor=rs.bottleneck_factor,
        seed=rs.seed,
        mean=mean,
        scaling_factor=scale,
    )


def random_sae_from_spec(spec: str, acts: Tensor | None = None) -> SAE:
    """Alias of ``sae_from_spec_with_stats``."""
    return sae_from_spec_with_stats(spec, acts)


__all__ = [
    "RandomSpec",
    "activation_mean",
    "estimate_scaling",
    "needs_activation_stats",
    "parse_random_spec",
    "random_sae_from_spec",
    "random_temporal_sae",
    "random_topk_sae",
    "sae_from_spec_with_stats",
]
