"""Standard (per-token) SAEs with SAELens semantics: TopK, BatchTopK, ReLU and JumpReLU.

Weights are SAELens's: ``W_enc [d_in, width]``, ``b_enc [width]``, ``W_dec [width, d_in]``,
``b_dec [d_in]`` and, for JumpReLU (and BatchTopK run with a threshold), ``threshold``. Encoding:

* input normalisation (``normalize_activations``): ``none`` / ``expected_average_only_in``
  (identity at inference, SAELens folds its factor into the weights when it knows it),
  ``constant_norm_rescale`` (x·√d_in/‖x‖ per token, undone on the output) or ``layer_norm``;
* ``x − b_dec`` when ``apply_b_dec_to_input``; ``pre = x·W_enc + b_enc``;
* ``topk``: keep the ``k`` largest of ``pre`` (times ‖W_dec‖ per latent when
  ``rescale_acts_by_decoder_norm``), ReLU; ``relu``: ReLU(pre); ``jumprelu``: ReLU(pre) where
  ``pre > threshold``; ``batchtopk``: at inference either per-token TopK with ``k`` or a threshold
  (per latent, or one global value broadcast) — option ``batchtopk_mode``;
* reconstruction: ``codes·W_dec + b_dec`` (with ``rescale_acts_by_decoder_norm`` the codes are
  divided by ‖W_dec‖ first), then the output normalisation.

``encode`` returns sparse codes: TopK indices directly, ReLU/JumpReLU/threshold codes padded to
the largest active count of any token in the batch. ``W_dec`` is the SAELens parameter; the
loader folds ``rescale_acts_by_decoder_norm`` into the weights (``fold_decoder_norm``) so that
``W_dec`` rows are always the per-code decoder vectors of the ARCHITECTURE contract.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tempolens.errors import ConfigError
from tempolens.options import check, check_choice
from tempolens.saes import bf16_encode
from tempolens.saes.base import SAE, EncodeOutput, SparseCodes, token_extras
from tempolens.saes.temporal import relu_codes, sparse_decode, topk_codes

Architecture = Literal["topk", "batchtopk", "relu", "jumprelu"]
NORMALIZATIONS = ("none", "expected_average_only_in", "constant_norm_rescale", "layer_norm")


@dataclass(frozen=True)
class StandardConfig:
    """Hyperparameters of a standard SAE (the SAELens ``cfg.json`` fields that shape inference)."""

    architecture: Architecture
    """Activation: topk, batchtopk, relu (SAELens ``standard``) or jumprelu."""
    d_in: int
    """Input dimension (SAELens ``d_in``)."""
    width: int
    """Number of latents (SAELens ``d_sae``)."""
    k: int | None = None
    """Latents kept per token for topk (and batchtopk run as topk)."""
    apply_b_dec_to_input: bool = True
    """Subtract b_dec from the input before encoding (SAELens ``apply_b_dec_to_input``)."""
    normalize_activations: str = "none"
    """SAELens ``normalize_activations``: none, expected_average_only_in, constant_norm_rescale or layer_norm."""
    rescale_acts_by_decoder_norm: bool = False
    """TopK only: rank pre-activations times ‖W_dec‖ and divide codes by ‖W_dec‖ when decoding (SAELens)."""
    batchtopk_mode: Literal["auto", "topk", "threshold"] = "auto"
    """BatchTopK inference: per-token TopK with k, or the learned threshold; auto = threshold when the checkpoint has
    one."""
    has_threshold: bool = False
    """Whether the weights include a ``threshold`` (set by the loader; required for jumprelu)."""
    metadata: dict = field(default_factory=dict, compare=False)
    """Free-form provenance (SAELens ``metadata``: model_name, hook_name, ...)."""

    def __post_init__(self) -> None:
        check_choice("architecture", self.architecture, ("topk", "batchtopk", "relu", "jumprelu"))
        check(isinstance(self.d_in, int) and self.d_in > 0, f"d_in must be a positive integer; got {self.d_in!r}")
        check(isinstance(self.width, int) and self.width > 0, f"width must be a positive integer; got {self.width!r}")
        check_choice("normalize_activations", self.normalize_activations, NORMALIZATIONS)
        check_choice("batchtopk_mode", self.batchtopk_mode, ("auto", "topk", "threshold"))
        if self.uses_topk:
            check(
                isinstance(self.k, int) and 1 <= self.k <= self.width,
                f"k must be an integer in [1, width={self.width}] for a {self.architecture} SAE; got {self.k!r}",
            )
        if self.architecture == "jumprelu":
            check(self.has_threshold, "a jumprelu SAE needs a threshold [width] in its weights")
        if self.architecture == "batchtopk" and self.batchtopk_mode == "threshold":
            check(self.has_threshold, "batchtopk_mode=threshold needs a threshold in the checkpoint; use topk")
        if self.rescale_acts_by_decoder_norm:
            check(self.architecture in ("topk", "batchtopk"), "rescale_acts_by_decoder_norm is a TopK/BatchTopK option")

    @property
    def uses_threshold(self) -> bool:
        """Whether inference thresholds pre-activations (jumprelu, or batchtopk with a threshold)."""
        if self.architecture == "jumprelu":
            return True
        if self.architecture == "batchtopk":
            return self.batchtopk_mode == "threshold" or (self.batchtopk_mode == "auto" and self.has_threshold)
        return False

    @property
    def uses_topk(self) -> bool:
        """Whether inference keeps the k largest codes per token."""
        return self.architecture == "topk" or (self.architecture == "batchtopk" and not self.uses_threshold)


class StandardSAE(SAE):
    """A per-token SAE (TopK, BatchTopK, ReLU, JumpReLU) with SAELens's weights and semantics."""

    is_temporal = False

    def __init__(self, cfg: StandardConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.architecture = cfg.architecture
        self.d_in = cfg.d_in
        self.width = cfg.width
        self.W_enc = nn.Parameter(torch.empty(cfg.d_in, cfg.width))
        self.b_enc = nn.Parameter(torch.zeros(cfg.width))
        self.W_dec = nn.Parameter(torch.empty(cfg.width, cfg.d_in))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in))
        if cfg.has_threshold:
            self.threshold = nn.Parameter(torch.zeros(cfg.width))
        self._bf16: bf16_encode.Bf16Encoder | None = None  # built on the first bf16 encode
        nn.init.kaiming_uniform_(self.W_dec)
        with torch.no_grad():
            self.W_enc.copy_(self.W_dec.T)

    # a scalar/[1] threshold (BatchTopK's global threshold) is broadcast to [width]
    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        tkey = prefix + "threshold"
        if tkey in state_dict and state_dict[tkey].numel() == 1 and self.width != 1:
            state_dict[tkey] = state_dict[tkey].reshape(()).expand(self.width).clone()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @classmethod
    def from_saelens_weights(
        cls, weights: dict[str, Tensor], architecture: str, k: int | None = None, **config: object
    ) -> StandardSAE:
        """Build an SAE from SAELens-named weights (``W_enc``, ``b_enc``, ``W_dec``, ``b_dec`` and
        optionally ``threshold``); sizes come from the weights, other options from ``config``."""
        missing = [key for key in ("W_enc", "b_enc", "W_dec", "b_dec") if key not in weights]
        if missing:
            raise ConfigError(f"SAE weights lack {', '.join(missing)}")
        d_in, width = (int(n) for n in weights["W_enc"].shape)
        cfg = StandardConfig(
            architecture=architecture,  # type: ignore[arg-type]
            d_in=d_in,
            width=width,
            k=k,
            has_threshold="threshold" in weights,
            **config,  # type: ignore[arg-type]
        )
        with torch.device("meta"):
            sae = cls(cfg)
        sae.load_state_dict({key: value.detach().clone() for key, value in weights.items()}, assign=True)
        return sae

    @torch.no_grad()
    def fold_decoder_norm(self) -> StandardSAE:
        """Turn ``rescale_acts_by_decoder_norm`` into plain weights (as SAELens's ``fold_W_dec_norm``):
        ``W_enc·n``, ``b_enc·n``, ``W_dec/n`` (n = ‖W_dec‖ per latent; threshold·n). Codes and
        reconstructions stay the same up to rounding and ``W_dec`` becomes the per-code decoder vector."""
        if not self.cfg.rescale_acts_by_decoder_norm:
            return self
        n = self.W_dec.norm(dim=-1)
        self.W_enc.mul_(n)
        self.b_enc.mul_(n)
        self.W_dec.div_(n[:, None])
        if self.cfg.has_threshold:
            self.threshold.mul_(n)
        self.cfg = replace(self.cfg, rescale_acts_by_decoder_norm=False)
        return self

    @property
    def k(self) -> int | None:
        return self.cfg.k if self.cfg.uses_topk else None

    @property
    def W_dec(self) -> Tensor:  # noqa: N802 - the SAELens parameter, registered under this name
        """Decoder ``[width, d_in]`` (SAELens ``W_dec``): per-code decoder vectors once folded."""
        p = self._parameters.get("W_dec")
        if p is None:
            raise AttributeError("W_dec")
        return p

    def decoder_vectors(self) -> Tensor:
        """What one unit of each latent's code adds to the reconstruction, ``[width, d_in]``: ``W_dec``,
        or ``W_dec/‖W_dec‖`` while ``rescale_acts_by_decoder_norm`` is unfolded."""
        if self.cfg.rescale_acts_by_decoder_norm:
            return self.W_dec / self.W_dec.norm(dim=-1, keepdim=True)
        return self.W_dec

    def describe(self) -> dict:
        c = self.cfg
        out = {
            "architecture": c.architecture,
            "d_in": c.d_in,
            "width": c.width,
            "k": self.k,
            "inference": "threshold" if c.uses_threshold else ("topk" if c.uses_topk else "relu"),
            "apply_b_dec_to_input": c.apply_b_dec_to_input,
            "normalize_activations": c.normalize_activations,
            "rescale_acts_by_decoder_norm": c.rescale_acts_by_decoder_norm,
        }
        if c.metadata:
            out["metadata"] = dict(c.metadata)
        return out

    # -- normalisation ----------------------------------------------------------------------------
    def _norm_in(self, x: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        mode = self.cfg.normalize_activations
        if mode == "constant_norm_rescale":
            coeff = (self.d_in**0.5) / x.norm(dim=-1, keepdim=True)
            return x * coeff, (coeff, torch.zeros_like(coeff))
        if mode == "layer_norm":
            mu = x.mean(dim=-1, keepdim=True)
            xc = x - mu
            std = xc.std(dim=-1, keepdim=True)
            return xc / (std + 1e-5), (std, mu)
        return x, None

    def _norm_out(self, y: Tensor, state: tuple[Tensor, Tensor] | None) -> Tensor:
        mode = self.cfg.normalize_activations
        if state is None:
            return y
        if mode == "constant_norm_rescale":
            return y / state[0]
        return y * state[0] + state[1]

    # -- encoding -----------------------------------------------------------------------------------
    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 3 or x.shape[-1] != self.d_in:
            raise ConfigError(
                f"SAE expects activations [batch, length, {self.d_in}]; got shape {tuple(x.shape)} "
                "(check that the hook layer/model matches the SAE)"
            )

    def _centred(self, x: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        """The encoder's input: ``x`` normalised, minus ``b_dec`` when applied; and the normalisation state."""
        x = x.to(self.W_enc.dtype)
        x, state = self._norm_in(x)
        if self.cfg.apply_b_dec_to_input:
            x = x - self.b_dec
        return x, state

    def pre_activations(self, x: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        """``x·W_enc + b_enc`` after normalisation and b_dec subtraction, and the normalisation state."""
        xc, state = self._centred(x)
        return xc @ self.W_enc + self.b_enc, state

    def _screens(self, xc: Tensor) -> bool:
        """Whether this encode takes the top k from a bfloat16 screen (``encode_precision`` bf16, TopK, CPU, wide)."""
        c = self.cfg
        return self.encode_precision == "bf16" and c.uses_topk and bf16_encode.available(xc, self.W_enc, int(c.k or 0))

    def _screened_codes(self, xc: Tensor) -> SparseCodes:
        """TopK codes with the exact top k from a bfloat16 screen; rows it cannot take (a non-finite score, too many
        candidates) are redone in float32."""
        k = int(self.cfg.k or 0)
        key = tuple((p.data_ptr(), p._version) for p in (self.W_enc, self.b_enc, self.W_dec))
        if self._bf16 is None or self._bf16.key != key:
            mult = self.W_dec.norm(dim=-1) if self.cfg.rescale_acts_by_decoder_norm else None
            self._bf16 = bf16_encode.Bf16Encoder.of(self.W_enc, self.b_enc, mult, key)
        flat = xc.reshape(-1, self.d_in).contiguous()
        vals, idx, n_cand = bf16_encode.topk_scores(flat, self._bf16, k)
        codes = relu_codes(vals, idx)
        redo = (n_cand < 0).nonzero().squeeze(1)
        if redo.numel():  # the float32 encode of those rows
            fp32 = self.codes_from_pre(flat[redo] @ self.W_enc + self.b_enc)
            codes.indices[redo], codes.values[redo] = fp32.indices, fp32.values
        shape = (*xc.shape[:-1], k)
        return SparseCodes(indices=codes.indices.view(shape), values=codes.values.view(shape))

    def codes_from_pre(self, pre: Tensor) -> SparseCodes:
        """Sparse codes from pre-activations (the activation function of the architecture)."""
        c = self.cfg
        if c.uses_topk:
            if c.rescale_acts_by_decoder_norm:
                pre = pre * self.W_dec.norm(dim=-1)
            return topk_codes(pre, int(c.k))  # type: ignore[arg-type]
        acts = F.relu(pre)
        if c.uses_threshold:
            acts = acts * (pre > self.threshold).to(acts.dtype)
        return SparseCodes.from_dense(acts)

    @torch.no_grad()
    def encode(self, x: Tensor) -> EncodeOutput:
        """Sparse codes, reconstruction (model units) and ``sq_err``/``sq_norm`` of ``x [B, L, d_in]``."""
        self._check_input(x)
        xc, state = self._centred(x)
        codes = self._screened_codes(xc) if self._screens(xc) else self.codes_from_pre(xc @ self.W_enc + self.b_enc)
        recon = self._norm_out(sparse_decode(codes, self.decoder_vectors()) + self.b_dec, state).to(x.dtype)
        return EncodeOutput(codes=codes, recon=recon, extras=token_extras(x, recon))

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruction ``[B, L, d_in]`` in model units (differentiable)."""
        pre, state = self.pre_activations(x)
        codes = self.codes_from_pre(pre)
        return self._norm_out(sparse_decode(codes, self.decoder_vectors()) + self.b_dec, state)
