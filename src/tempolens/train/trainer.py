"""Training Temporal SAEs and TopK SAEs (`tempolens train`).

Recipe (the paper's, docs/training.md, unless an option says otherwise): summed-MSE per token on
*scaled* activations (``x·s`` with ``s = 1/mean‖x‖`` estimated on the first batches, BOS/EOS/pad
excluded; written into ``conf.yaml`` as ``sae.scaling_factor`` / used to fold the TopK weights),
AdamW (lr 1e-3, betas 0.9/0.95, weight decay 1e-4), gradient clipping at 1.0, 200 linear
warm-up steps then a cosine decay to ``min_lr_fraction·lr`` (the paper's code decays to
``min_lr`` 9e-4 = 0.9·lr). Whole prompts are the batch unit, so the Temporal SAE sees every
sequence as context; special positions stay in the context and are left out of the loss.

Temporal SAEs by default also get per-tensor learning rates (``--lr-rule rms``) and a data-dependent
attention init (``--attn-init data``); ``--loss-norm-cap`` and ``--direction-penalty`` are opt-in.
docs/training.md explains each choice and the synthetic ground-truth check (``--model synthetic``).

- **Temporal** (``--arch temporal``): ``tempolens.saes.temporal.TemporalSAE``, initialised like
  the paper's code (``D`` ~ N(0, σ²), attention projections with rows rescaled to norm
  1/√(head size) for q/k, 1/√(width/heads) for v, 1/√width for the output), no auxiliary loss.
  Deviations: σ = 2 (``--temporal-init-std``; unit gain, the paper's σ = 1 starts at gain 1/4 and
  has 200k steps to grow out of it); ``b`` starts at the mean activation instead of 0; on Gemma 3 the
  mean vector's norm is ≈ the median token norm on Gemma 3 270M, and a zero bias would leave that
  constant direction to be "predicted" by the attention and dominate the predicted share.
- **TopK** (``--arch topk``): ``z = TopK_k(ReLU((x·s − b_dec)·W_enc + b_enc))``, reconstruction
  ``z·W_dec + b_dec``; decoder rows unit-norm (renormalised after every step, the gradient
  component parallel to each row removed before the step, as SAELens does), ``W_enc = W_decᵀ`` at
  init (Gao et al. 2024), ``b_dec`` = mean activation. Dead latents: the AuxK loss of Gao et al.
  2024 — the residual ``x − x̂`` is reconstructed from the top ``k_aux`` (default d_in/2) dead
  latents' pre-activations (dead = not fired in the last ``--dead-window-tokens`` training tokens),
  summed-MSE per token, weight ``--aux-coef`` (1/32 as in the paper) times ``min(n_dead/k_aux, 1)``
  (SAELens's scaling).

Outputs in ``--out``: the SAE in its published layout (Temporal: ``conf.yaml`` +
``latest_ckpt.safetensors``; TopK: SAELens ``cfg.json`` + ``sae_weights.safetensors``),
``training_state.pt`` (weights, optimizer, step, RNG, dead-latent counters; loaded with
``weights_only=True``), ``train_config.json``, ``train_log.jsonl`` and ``eval.json`` (held-out
evaluation, ``evaluate_sae``). Everything is written atomically; ``--resume`` continues from the
saved step exactly (the batch of step ``j`` is a pure function of the seed and ``j``).
"""

from __future__ import annotations

import io
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tempolens.errors import ConfigError, SourceError, TempolensError
from tempolens.fsutil import atomic_write_bytes, atomic_write_json
from tempolens.options import check
from tempolens.saes.base import SAE, EncodeOutput, SparseCodes, token_extras
from tempolens.sources.open import resolve_dtype
from tempolens.sources.options import ModelOptions
from tempolens.train.activations_cache import (
    ActivationSource,
    ActivationSpec,
    batches_per_epoch,
    build_cache,
    iter_batches,
    open_lm_source,
    plan_prompts,
)
from tempolens.train.evaluation import (  # noqa: F401 - some re-exported: evaluation lives there
    attention_entropy,
    curve_batch,
    curve_metrics,
    decoder_matrix,
    evaluate_sae,
    loss_mask,
    median_row_cosine,
    plot_learning_curves,
    read_log,
    summed_mse,
    zpred_top1_share,
)

STATE_FILE = "training_state.pt"
STATE_FORMAT = 1


@dataclass
class TrainConfig(ModelOptions):
    """Options of `tempolens train` (`--model`, `--layer` and `--device` come from
    :class:`~tempolens.sources.options.ModelOptions`; `--model` here also accepts `synthetic`)."""

    arch: Literal["temporal", "topk"] = "temporal"
    """SAE to train: `temporal` (Temporal SAE, novel codes TopK) or `topk` (standard TopK SAE)."""
    out: Path = Path("runs/train/temporal")
    """Output folder: the SAE in its published layout, training state, logs and eval.json."""
    model: str = "embedded"
    """Subject model: `embedded` (Gemma 3 270M), an HF hub id, a local HF folder, a `.gguf` file, or `synthetic` /
    `synthetic:dominant` (generated event sequences with a known ground truth, d 64; --layer, --corpus and --cache-dir
    are then ignored).
    """
    corpus: str = "embedded"
    """Text source (see `tempolens collect --help`): `embedded`, a file/folder, or `hf:NAME:SPLIT`."""
    n_tokens: int = 1_000_000
    """Training tokens per epoch (BOS excluded); the held-out prompts come on top."""
    prompt_len: int = 256
    """Tokens per prompt including BOS: the Temporal SAE's context length (the paper used 500)."""
    heldout_fraction: float = 0.05
    """Fraction of all prompts kept out of training for evaluation (the last prompts of the seeded stream)."""
    epochs: int = 1
    """Passes over the training prompts (a fresh seeded permutation per epoch)."""
    max_steps: int = 0
    """Stop after this many optimizer steps in total (0: epochs × batches per epoch)."""
    batch_prompts: int = 16
    """Prompts per optimizer step (batch tokens = batch_prompts × prompt_len)."""
    width: int = 1920
    """Number of latents."""
    k: int = 32
    """Active latents per token (TopK; the Temporal SAE's novel codes)."""
    n_heads: int = 4
    """Temporal: attention heads."""
    n_attn_layers: int = 1
    """Temporal: attention layers."""
    bottleneck_factor: int = 8
    """Temporal: query/key projections map width → width / bottleneck_factor."""
    tied_weights: bool = True
    """Temporal: encoder = decoderᵀ (as the published checkpoints)."""
    temporal_init_std: float = 2.0
    """Temporal: std of the N(0, σ²) init of D. 2 gives unit gain (lam·‖D_j‖² ≈ 1 with lam = 1/(4·d_in)), so a tied code
    reconstructs its own direction at scale 1 from the start; the paper's code uses 1 (gain 1/4), which its 200k steps
    have time to grow out of.
    """
    init_bias: Literal["mean", "zero"] = "mean"
    """Initial decoder bias: the mean training activation (default) or zero (the paper's Temporal init)."""
    lr: float = 1e-3
    """Peak learning rate (AdamW); with --lr-rule rms the base of every Temporal tensor's rate."""
    lr_rule: Literal["rms", "single"] = "rms"
    """Temporal: `rms` gives each tensor t its own AdamW rate lr·gain·max(RMS(t) at init, floor), because Adam moves
    every weight by about its rate per step whatever the weight's scale (D's entries are ≈2, attention weights ≈0.01);
    `single` uses --lr for every tensor (the paper's code). TopK always uses --lr (its unit-norm rows move at the rate
    they need).
    """
    lr_rms_gain: float = 10.0
    """Temporal, --lr-rule rms: the gain in lr·gain·max(RMS_init, floor) (10 with --lr 1e-3: 1e-2 per unit of RMS)."""
    lr_rms_floor: float = 1e-2
    """Temporal, --lr-rule rms: the RMS floor (zero-initialised biases and tiny tensors still move)."""
    attn_init: Literal["data", "paper"] = "data"
    """Temporal: `data` (on the first batch, zero the q/k/v/output biases and rescale each projection so that its
    weight-only output has unit RMS: q from the codes, k/v from the shifted context, the output from the actual
    attention output) or `paper` (rows rescaled to fixed norms, as the paper's code). At init the codes are
    ≈1e-3, so with `paper` the biases dominate q/k/v, the value path outputs a constant and the predictor
    collapses to it.
    """
    loss_norm_cap: float = 0.0
    """Leave tokens whose norm exceeds this many times the median token norm (of the first batches) out of the
    loss; they stay in the context (0: keep all). BOS/EOS/pad are always out of the loss.
    """
    direction_penalty: float = 0.0
    """Temporal: weight λ of λ·mean cos²(d_t, v₁), d_t = ReLU(attention output)·D the predicted direction before its
    scale and v₁ the top principal direction of the first batch (in-loss tokens); keeps the predictor off a dominant
    direction (0: off).
    """
    curve_every: int = 50
    """Every N steps (and at the end), log held-out learning-curve metrics (loss, D's median cosine to init, attention
    entropy, z_pred top-1 variance share) into train_log.jsonl.
    """
    curve_prompts: int = 4
    """Held-out prompts in the learning-curve batch (the first prompts of the held-out split)."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value (0: no clipping)."""
    warmup_steps: int = 200
    """Linear learning-rate warm-up steps."""
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    """After warm-up: cosine decay to min_lr_fraction·lr (the paper's code), or constant."""
    min_lr_fraction: float = 0.9
    """Final learning rate as a fraction of --lr for the cosine schedule (paper: 9e-4 / 1e-3)."""
    aux_k: int = 0
    """TopK: latents in the AuxK dead-latent loss (0: d_in / 2, as SAELens)."""
    aux_coef: float = 1 / 32
    """TopK: weight of the AuxK loss (Gao et al. 2024 use 1/32; 0 turns it off)."""
    dead_window_tokens: int = 200_000
    """TopK: a latent that has not fired in this many training tokens counts as dead for AuxK."""
    init_batches: int = 8
    """Batches used to estimate the scaling factor (1/mean‖x‖) and the mean activation."""
    seed: int = 0
    """Seed of the prompts, the batch order and the initialisation."""
    cache_dir: str = "auto"
    """Activation cache folder (fp16 safetensors shards, built once and shared by runs of the same data); `auto`: under
    the tempolens cache; `none`: stream from the model every step.
    """
    lm_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Dtype of the subject model: `auto` = bfloat16 on CUDA, float32 on CPU."""
    lm_batch_size: int = 8
    """Prompts per subject-model forward."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """SAE training precision: `auto` = bf16 autocast on CUDA, fp32 on CPU (weights and optimizer always fp32)."""
    threads: int = 0
    """torch CPU threads (0: leave torch's default)."""
    checkpoint_every: int = 100
    """Write the training state and the SAE every N steps (and at the end)."""
    log_every: int = 10
    """Append a line to train_log.jsonl every N steps."""
    weights_dtype: Literal["float32", "float16"] = "float32"
    """Dtype of the saved SAE weights (`float16` halves the files; loaders run them in float32)."""
    eval_batch_prompts: int = 8
    """Prompts per batch in the held-out evaluation."""
    resume: bool = False
    """Continue the run in --out from its last checkpoint (same options required)."""
    overwrite: bool = False
    """Start over even if --out already holds a run."""
    progress: bool = True
    """Show progress bars."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.out = Path(self.out)
        if isinstance(self.betas, list):
            self.betas = tuple(self.betas)  # type: ignore[assignment]
        check(self.arch in ("temporal", "topk"), f"--arch must be temporal or topk; got {self.arch!r}")
        check(self.n_tokens >= 1, f"--n-tokens must be >= 1; got {self.n_tokens}")
        check(self.prompt_len >= 2, f"--prompt-len must be >= 2 (BOS plus one token); got {self.prompt_len}")
        check(0 <= self.heldout_fraction < 0.5, f"--heldout-fraction must be in [0, 0.5); got {self.heldout_fraction}")
        check(self.epochs >= 1, f"--epochs must be >= 1; got {self.epochs}")
        check(self.max_steps >= 0, f"--max-steps must be >= 0; got {self.max_steps}")
        check(self.batch_prompts >= 1, f"--batch-prompts must be >= 1; got {self.batch_prompts}")
        check(self.width >= 1, f"--width must be >= 1; got {self.width}")
        check(1 <= self.k <= self.width, f"--k must be in [1, width={self.width}]; got {self.k}")
        if self.arch == "temporal":
            check(
                self.n_heads >= 1 and self.n_attn_layers >= 1 and self.bottleneck_factor >= 1,
                "--n-heads, --n-attn-layers and --bottleneck-factor must be >= 1",
            )
            check(
                self.width % (self.n_heads * self.bottleneck_factor) == 0,
                f"--width {self.width} must be divisible by n_heads·bottleneck_factor = "
                f"{self.n_heads * self.bottleneck_factor}",
            )
        check(self.lr > 0 and math.isfinite(self.lr), f"--lr must be a positive number; got {self.lr}")
        check(self.lr_rule in ("rms", "single"), f"--lr-rule must be rms or single; got {self.lr_rule!r}")
        check(self.lr_rms_gain > 0 and self.lr_rms_floor > 0, "--lr-rms-gain and --lr-rms-floor must be > 0")
        check(self.attn_init in ("data", "paper"), f"--attn-init must be data or paper; got {self.attn_init!r}")
        check(
            self.loss_norm_cap == 0 or self.loss_norm_cap > 1,
            f"--loss-norm-cap must be 0 (off) or a factor above 1 (e.g. 3); got {self.loss_norm_cap}",
        )
        check(self.direction_penalty >= 0, f"--direction-penalty must be >= 0; got {self.direction_penalty}")
        check(self.curve_every >= 1 and self.curve_prompts >= 1, "--curve-every and --curve-prompts must be >= 1")
        check(
            len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
            f"--betas must be two numbers in [0, 1); got {self.betas}",
        )
        check(self.weight_decay >= 0, f"--weight-decay must be >= 0; got {self.weight_decay}")
        check(self.grad_clip >= 0, f"--grad-clip must be >= 0; got {self.grad_clip}")
        check(self.warmup_steps >= 0, f"--warmup-steps must be >= 0; got {self.warmup_steps}")
        check(0 < self.min_lr_fraction <= 1, f"--min-lr-fraction must be in (0, 1]; got {self.min_lr_fraction}")
        check(self.aux_k >= 0, f"--aux-k must be >= 0; got {self.aux_k}")
        check(self.aux_coef >= 0, f"--aux-coef must be >= 0; got {self.aux_coef}")
        check(self.dead_window_tokens >= 1, f"--dead-window-tokens must be >= 1; got {self.dead_window_tokens}")
        check(self.temporal_init_std > 0, f"--temporal-init-std must be > 0; got {self.temporal_init_std}")
        check(self.init_batches >= 1, f"--init-batches must be >= 1; got {self.init_batches}")
        check(
            self.lm_batch_size >= 1 and self.eval_batch_prompts >= 1,
            "--lm-batch-size and --eval-batch-prompts must be >= 1",
        )
        check(self.threads >= 0, f"--threads must be >= 0; got {self.threads}")
        check(self.checkpoint_every >= 1 and self.log_every >= 1, "--checkpoint-every and --log-every must be >= 1")
        check(not (self.resume and self.overwrite), "--resume and --overwrite contradict each other; pick one")

    # what must not change between a run and its resumption
    def identity(self) -> dict:
        keep = (
            "arch",
            "model",
            "layer",
            "corpus",
            "n_tokens",
            "prompt_len",
            "heldout_fraction",
            "batch_prompts",
            "width",
            "k",
            "n_heads",
            "n_attn_layers",
            "bottleneck_factor",
            "tied_weights",
            "temporal_init_std",
            "init_bias",
            "seed",
            "init_batches",
            "lr_rule",
            "lr_rms_gain",
            "lr_rms_floor",
            "attn_init",
            "loss_norm_cap",
            "direction_penalty",
        )
        d = asdict(self)
        return {k: d[k] for k in keep}


@dataclass
class TrainResult:
    """What ``train`` did."""

    out: Path
    steps: int
    tokens_seen: int
    seconds: float
    final_loss: float
    eval: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# Small pure functions


def lr_at(step: int, cfg: TrainConfig, total_steps: int) -> float:
    """Learning rate of (0-based) ``step``: linear warm-up, then cosine to ``min_lr_fraction·lr`` or constant."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    span = max(total_steps - cfg.warmup_steps, 1)
    t = min(max(step - cfg.warmup_steps, 0) / span, 1.0)
    lo = cfg.lr * cfg.min_lr_fraction
    return lo + 0.5 * (cfg.lr - lo) * (1 + math.cos(math.pi * t))


def activation_stats(acts: Tensor, mask: Tensor) -> tuple[float, Tensor]:
    """``(mean ‖x‖, mean x)`` over the unmasked tokens of ``acts [.., d]`` (float64 sums)."""
    x = acts[mask].double()
    if x.shape[0] == 0:
        raise SourceError("no regular (non-BOS/EOS/pad) tokens in the first batches; use a longer --prompt-len")
    return float(x.norm(dim=-1).mean()), x.mean(0).float()


def remove_parallel_grad(W_dec: nn.Parameter) -> None:
    """Project out of ``W_dec.grad`` the component parallel to each (unit) decoder row."""
    if W_dec.grad is None:
        return
    w = W_dec.data
    W_dec.grad -= (W_dec.grad * w).sum(-1, keepdim=True) * w


@torch.no_grad()
def normalize_rows_(W: Tensor, eps: float = 1e-8) -> None:
    W.div_(W.norm(dim=-1, keepdim=True).clamp_min(eps))


# ----------------------------------------------------------------------------------------------
# TopK SAE (training form, in scaled units)


class TopKTrainSAE(SAE):
    """A TopK SAE in *scaled* units (the input is ``x·s``); ``export_saelens`` folds ``s`` away.

    ``encode`` follows the base interface (model units in, model units out), so the same
    evaluation code reads it and the exported checkpoint.
    """

    architecture = "topk"

    def __init__(self, d_in: int, width: int, k: int, scaling_factor: float = 1.0):
        super().__init__()
        self.d_in, self.width, self.k = d_in, width, k
        self.scaling_factor = float(scaling_factor)
        self.W_enc = nn.Parameter(torch.empty(d_in, width))
        self.b_enc = nn.Parameter(torch.zeros(width))
        self.W_dec = nn.Parameter(torch.empty(width, d_in))  # type: ignore[assignment]
        self.b_dec = nn.Parameter(torch.zeros(d_in))

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator, mean: Tensor | None = None) -> None:
        """Unit-norm random decoder rows, ``W_enc = W_decᵀ``, ``b_enc = 0``, ``b_dec`` = ``mean`` (scaled)."""
        w = torch.empty(self.width, self.d_in)
        bound = 1.0 / math.sqrt(self.d_in)
        w.uniform_(-bound, bound, generator=generator)
        normalize_rows_(w)
        self.W_dec.copy_(w)
        self.W_enc.copy_(w.T)
        self.b_enc.zero_()
        self.b_dec.copy_(mean if mean is not None else torch.zeros(self.d_in))

    @property
    def W_dec(self) -> Tensor:  # noqa: N802 - SAELens naming; the parameter registered under this name
        """Unit-norm decoder rows ``[width, d_in]``: with codes in model units (``encode``) these are
        also the model-unit decoder vectors."""
        p = self._parameters.get("W_dec")
        if p is None:
            raise AttributeError("W_dec")
        return p

    def pre_acts(self, xs: Tensor) -> Tensor:
        return (xs - self.b_dec) @ self.W_enc + self.b_enc

    def forward_scaled(self, xs: Tensor) -> tuple[Tensor, SparseCodes, Tensor]:
        """``(recon_scaled, codes, pre_acts)`` of scaled input ``xs [.., d_in]`` (differentiable)."""
        from tempolens.saes.temporal import sparse_decode, topk_codes

        pre = self.pre_acts(xs)
        codes = topk_codes(pre, self.k)
        recon = sparse_decode(codes, self.W_dec.to(pre.dtype)) + self.b_dec
        return recon, codes, pre

    @torch.no_grad()
    def encode(self, x: Tensor) -> EncodeOutput:
        s = self.scaling_factor
        recon_s, codes, _ = self.forward_scaled(x.float() * s)
        codes = SparseCodes(indices=codes.indices, values=codes.values / s)
        recon = recon_s / s
        return EncodeOutput(codes=codes, recon=recon, extras=token_extras(x, recon))

    def describe(self) -> dict:
        return {
            "architecture": "topk",
            "d_in": self.d_in,
            "width": self.width,
            "k": self.k,
            "scaling_factor": self.scaling_factor,
        }

    @torch.no_grad()
    def export_saelens(self) -> dict[str, Tensor]:
        """SAELens TopK weights in model units with unit-norm decoder rows (codes in model units).

        With ``z' = z/s``: ``W_enc' = W_enc``, ``b_enc' = b_enc/s``, ``W_dec' = W_dec``,
        ``b_dec' = b_dec/s`` give ``TopK(ReLU((x − b_dec')·W_enc' + b_enc')) = z/s`` and
        ``z'·W_dec' + b_dec' = x̂/s`` — the same latents, and the reconstruction in model units.
        """
        s = self.scaling_factor
        return {
            "W_enc": self.W_enc.detach().clone(),
            "b_enc": self.b_enc.detach() / s,
            "W_dec": self.W_dec.detach().clone(),
            "b_dec": self.b_dec.detach() / s,
        }


def auxk_loss(sae: TopKTrainSAE, pre: Tensor, residual: Tensor, dead: Tensor, mask: Tensor, k_aux: int) -> Tensor:
    """AuxK loss (Gao et al. 2024): reconstruct ``residual`` from the top ``k_aux`` dead latents.

    ``pre`` are the pre-activations ``[N, width]``, ``residual`` = (x − x̂) detached, ``dead [width]``
    bool. Summed-MSE per token over unmasked tokens, times ``min(n_dead / k_aux, 1)``.
    """
    from tempolens.saes.temporal import sparse_decode, topk_codes

    n_dead = int(dead.sum())
    if n_dead == 0 or k_aux == 0:
        return pre.new_zeros(())
    scale = min(n_dead / k_aux, 1.0)
    masked = torch.where(dead, pre, torch.full_like(pre, -torch.inf))
    codes = topk_codes(masked, min(k_aux, n_dead))
    recon = sparse_decode(codes, sae.W_dec.to(pre.dtype))
    return scale * summed_mse(recon, residual, mask)


# ----------------------------------------------------------------------------------------------
# Temporal SAE construction


def paper_attention_init_(sae: nn.Module) -> None:
    """Rescale the attention projections' rows as the paper's code does (SAELens ManualAttention).

    q/k rows → norm 1/√(q/k head size); v rows → 1/√(width/heads); output rows → 1/√width.
    """
    with torch.no_grad():
        for layer in sae.attn_layers:  # type: ignore[attr-defined]
            H = layer.n_heads
            for lin, size in (
                (layer.k_ctx, layer.qk_dim // H),
                (layer.q_target, layer.qk_dim // H),
                (layer.v_ctx, layer.width // H),
                (layer.c_proj, layer.width),
            ):
                w = lin.weight
                w.copy_(w / (1e-6 + w.norm(dim=1, keepdim=True)) / math.sqrt(size))


def make_sae(
    cfg: TrainConfig,
    d_in: int,
    scaling_factor: float,
    mean_scaled: Tensor | None,
    generator: torch.Generator | None = None,
) -> nn.Module:
    """A freshly initialised SAE of ``cfg.arch`` (``mean_scaled``: the mean activation times ``s``)."""
    bias = mean_scaled if cfg.init_bias == "mean" else None
    if cfg.arch == "topk":
        sae = TopKTrainSAE(d_in, cfg.width, cfg.k, scaling_factor)
        sae.init_weights(generator or torch.Generator().manual_seed(cfg.seed), bias)
        return sae
    from tempolens.saes.temporal import TemporalConfig, TemporalSAE

    tcfg = TemporalConfig(
        d_in=d_in,
        width=cfg.width,
        k=cfg.k,
        sae_diff_type="topk",
        n_heads=cfg.n_heads,
        n_attn_layers=cfg.n_attn_layers,
        bottleneck_factor=cfg.bottleneck_factor,
        tied=cfg.tied_weights,
        scaling_factor=float(scaling_factor),
    )
    sae = TemporalSAE(tcfg)
    with torch.no_grad():
        g = generator or torch.Generator().manual_seed(cfg.seed)
        sae.D.copy_(torch.randn(sae.D.shape, generator=g) * cfg.temporal_init_std)
        if not cfg.tied_weights:
            sae.E.copy_(torch.randn(sae.E.shape, generator=g) * cfg.temporal_init_std)
        for layer in sae.attn_layers:
            for lin in (layer.k_ctx, layer.q_target, layer.v_ctx, layer.c_proj):
                bound = 1.0 / math.sqrt(lin.in_features)  # nn.Linear's default init, seeded
                lin.weight.uniform_(-bound, bound, generator=g)
                lin.bias.uniform_(-bound, bound, generator=g)
    paper_attention_init_(sae)
    if bias is not None:
        with torch.no_grad():
            sae.b.copy_(bias.reshape(sae.b.shape))
    return sae


@torch.no_grad()
def data_attention_init_(sae: nn.Module, x: Tensor) -> dict[str, float]:
    """Data-dependent attention init on one batch ``x [B, L, d_in]`` (model units), layer by layer.

    Zero the q/k/v/output biases, then rescale each projection's weight so that its weight-only
    output has RMS 1 over the batch: ``q_target`` on the layer's codes ``z_in``, ``k_ctx`` and
    ``v_ctx`` on the context (``z_in`` shifted right by one), ``c_proj`` on the attention output it
    actually receives after the q/k/v rescaling. Returns the scale applied to each weight.
    Why: at init the codes ``z_in`` are tiny (≈1e-3 per entry), so the biases dominate q/k/v; the
    value path then outputs a constant and ``p·d`` turns that constant into a free dense code.
    """
    scales: dict[str, float] = {}

    def rms(t: Tensor) -> float:
        return float(t.float().pow(2).mean().sqrt())

    for i, layer in enumerate(sae.attn_layers):  # type: ignore[attr-defined]
        for lin in (layer.q_target, layer.k_ctx, layer.v_ctx, layer.c_proj):
            lin.bias.zero_()
        z_in = sae.forward_train(x).z_in[i]  # type: ignore[attr-defined]
        ctx = F.pad(z_in[:, :-1, :], (0, 0, 1, 0))
        for name, lin, inp in (
            ("q_target", layer.q_target, z_in),
            ("k_ctx", layer.k_ctx, ctx),
            ("v_ctx", layer.v_ctx, ctx),
        ):
            r = rms(inp @ lin.weight.T)
            f = 1.0 / r if r > 0 else 1.0
            lin.weight.mul_(f)
            scales[f"attn_layers.{i}.{name}"] = f
        seen: list[Tensor] = []
        hook = layer.c_proj.register_forward_pre_hook(lambda _m, args, seen=seen: seen.append(args[0].detach()))
        try:
            sae.forward_train(x)  # type: ignore[attr-defined]
        finally:
            hook.remove()
        r = rms(seen[0] @ layer.c_proj.weight.T)
        f = 1.0 / r if r > 0 else 1.0
        layer.c_proj.weight.mul_(f)
        scales[f"attn_layers.{i}.c_proj"] = f
    return scales


def lr_multipliers(sae: nn.Module, cfg: TrainConfig) -> dict[str, float]:
    """Per-parameter learning-rate multipliers (of the scheduled --lr) at the current weights.

    ``rms``: ``gain · max(RMS(t), floor)`` — AdamW's update is ≈ lr per weight per step whatever the
    weight's scale, so a rate proportional to the tensor's own scale moves every tensor by about the
    same *relative* amount per step (D, with entries ≈2, would otherwise move ≈50× slower than the
    TopK twin's unit-norm rows). ``single`` (and TopK): 1 for every tensor.
    """
    names = [n for n, _ in sae.named_parameters()]
    if cfg.arch != "temporal" or cfg.lr_rule == "single":
        return {n: 1.0 for n in names}
    return {
        n: cfg.lr_rms_gain * max(float(p.detach().float().pow(2).mean().sqrt()), cfg.lr_rms_floor)
        for n, p in sae.named_parameters()
    }


def make_optimizer(sae: nn.Module, cfg: TrainConfig, mults: dict[str, float]) -> torch.optim.Optimizer:
    """AdamW with one parameter group per tensor (group order = ``named_parameters`` order); each
    group carries its ``lr_mult``."""
    groups = [
        {"params": [p], "lr": cfg.lr * mults[n], "lr_mult": mults[n], "name": n} for n, p in sae.named_parameters()
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def top_direction(xs: Tensor) -> Tensor:
    """Unit top principal direction ``[d]`` of the rows of ``xs [n, d]`` (mean-centred, float64 SVD)."""
    x = xs.double()
    x = x - x.mean(0)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    return vh[0].float()


def direction_penalty(directions: list[Tensor], v1: Tensor, mask: Tensor) -> Tensor:
    """Mean over layers and in-loss tokens of cos²(d_t, v₁) (``directions`` ``[B, L, d]`` per layer)."""
    m = mask.to(directions[0].dtype)
    total = directions[0].new_zeros(())
    for d in directions:
        d32 = d.float()
        cos = (d32 @ v1.to(d32.device)) / d32.norm(dim=-1).clamp_min(1e-12)
        total = total + (cos.pow(2) * m).sum() / m.sum().clamp_min(1.0)
    return total / len(directions)


# ----------------------------------------------------------------------------------------------
# Data


def activation_spec(cfg: TrainConfig, lm_dtype: str) -> ActivationSpec:
    n_prompts, n_heldout = plan_prompts(cfg.n_tokens, cfg.prompt_len, cfg.heldout_fraction)
    return ActivationSpec(
        model=cfg.model,
        layer=cfg.layer,
        corpus=cfg.corpus,
        prompt_len=cfg.prompt_len,
        n_prompts=n_prompts,
        n_heldout=n_heldout,
        seed=cfg.seed,
        lm_dtype=lm_dtype,
    )


def open_source(cfg: TrainConfig, device: torch.device) -> ActivationSource:
    """The activation source of a run: an (auto-built) on-disk cache, or the model itself (`--cache-dir none`)."""
    from tempolens.train.synthetic import SyntheticSource, parse_synthetic

    synthetic = parse_synthetic(cfg.model)
    if synthetic is not None:
        return SyntheticSource(activation_spec(cfg, "float32"), synthetic)
    spec = activation_spec(cfg, resolve_dtype(cfg.lm_dtype, device))
    if cfg.cache_dir == "none":
        return open_lm_source(spec, device=str(device), batch_size=cfg.lm_batch_size)
    if cfg.cache_dir == "auto":
        from tempolens.sources.cache import cache_dir

        root = cache_dir() / "activations" / spec.key()
    else:
        root = Path(cfg.cache_dir).expanduser()
    return build_cache(root, spec, device=str(device), batch_size=cfg.lm_batch_size, progress=cfg.progress)


# ----------------------------------------------------------------------------------------------
# Checkpoints


def _state_bytes(obj: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def load_training_state(out: Path) -> dict | None:
    """The saved training state of a run folder, or None (weights-only unpickling: no code runs)."""
    path = Path(out) / STATE_FILE
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for bad files
        raise TempolensError(
            f"cannot read {path} ({str(e).splitlines()[0] if str(e) else type(e).__name__}); delete it and rerun with "
            "--overwrite"
        ) from None
    if state.get("format") != STATE_FORMAT:
        raise TempolensError(
            f"{path} has training-state format {state.get('format')}, this tempolens writes {STATE_FORMAT}; rerun "
            "with --overwrite"
        )
    return state


def save_sae_files(sae: nn.Module, out: Path, cfg: TrainConfig, meta: dict) -> None:
    """Write the SAE in its published layout into ``out`` (atomic files)."""
    from tempolens.saes import loading

    dtype = torch.float16 if cfg.weights_dtype == "float16" else torch.float32
    if cfg.arch == "temporal":
        loading.save_temporal_sae(sae, out, dtype=dtype, metadata=meta)
    else:
        loading.save_standard_sae(_standard_from_train(sae), out, dtype=dtype, metadata=meta)


def _standard_from_train(sae: TopKTrainSAE) -> SAE:
    """The inference ``StandardSAE`` holding ``sae``'s exported (model-unit) weights."""
    from tempolens.saes.standard import StandardSAE

    return StandardSAE.from_saelens_weights(sae.export_saelens(), architecture="topk", k=sae.k)


# ----------------------------------------------------------------------------------------------
# The training loop


def _rng_state() -> dict:
    out = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class _Start:
    """The trainable state: built fresh from the first batches, or restored from ``training_state.pt``."""

    sae: nn.Module
    scale: float
    step: int
    since_fired: Tensor
    norm_threshold: float | None
    median_norm: float
    v1: Tensor | None
    mults: dict[str, float]
    dec_init: Tensor


@dataclass
class _Run:
    """Everything one training run carries from stage to stage (``step``, ``loss_ema`` ... advance)."""

    cfg: TrainConfig
    device: torch.device
    source: ActivationSource
    t0: float
    total: int
    per_epoch: int
    s: _Start
    opt: torch.optim.Optimizer
    prior_seconds: float
    loss_ema: float
    meta: dict = field(default_factory=dict)
    curve_batch: tuple[Tensor, Tensor] | None = None
    last_loss: float = float("nan")

    @property
    def out(self) -> Path:
        return self.cfg.out

    @property
    def d_in(self) -> int:
        return int(self.source.d_in)


@dataclass
class _StepStats:
    """What one optimizer step reports to the progress bar and the log."""

    loss: float
    mse: Tensor
    aux: Tensor
    nmse: float
    l0: float
    lr: float


def _saved_state(cfg: TrainConfig) -> dict | None:
    """The state to resume from (None: start fresh), after checking ``--resume``/``--overwrite`` and that the
    options match the saved run; creates ``out`` and drops log lines written after the last checkpoint."""
    out = cfg.out
    state = load_training_state(out) if out.exists() else None
    if state is not None and not (cfg.resume or cfg.overwrite):
        raise ConfigError(
            f"{out} already holds a run at step {state['step']}; pass --resume to continue it "
            "or --overwrite to start over"
        )
    if state is not None and cfg.overwrite:
        state = None
    if state is not None:
        saved = json.loads(state["identity"])
        diff = {k: (saved.get(k), v) for k, v in cfg.identity().items() if saved.get(k) != v}
        if diff:
            k0, (a, b) = next(iter(diff.items()))
            raise ConfigError(
                f"--resume with different options: {k0} was {a!r}, now {b!r}; use the original options or --overwrite"
            )
    out.mkdir(parents=True, exist_ok=True)
    _truncate_log(out / "train_log.jsonl", int(state["step"]) if state is not None else -1)
    return state


def _fresh_start(cfg: TrainConfig, source: ActivationSource, total: int) -> _Start:
    """Seed, estimate the scaling factor, mean and median token norm on the first batches, and build the SAE."""
    d_in = int(source.d_in)
    torch.manual_seed(cfg.seed)
    norms, means, counts, tok_norms = [], [], [], []
    first = None
    for b in iter_batches(source, cfg.batch_prompts, cfg.seed, 0, min(cfg.init_batches, total)):
        mask = ~b.special
        nrm, mu = activation_stats(b.acts, mask)
        n = int(mask.sum())
        norms.append(nrm * n), means.append(mu * n), counts.append(n)
        tok_norms.append(b.acts[mask].norm(dim=-1))
        first = first if first is not None else b
    mean_norm = sum(norms) / sum(counts)
    scale = 1.0 / mean_norm
    mean = torch.stack(means).sum(0) / sum(counts)
    median_norm = float(torch.cat(tok_norms).double().median())
    norm_threshold = cfg.loss_norm_cap * median_norm if cfg.loss_norm_cap > 0 else None
    gen = torch.Generator().manual_seed(cfg.seed)
    sae = make_sae(cfg, d_in, scale, mean * scale, gen)
    v1 = None
    if first is not None and cfg.arch == "temporal":
        fm = loss_mask(first.acts, first.special, norm_threshold)
        if cfg.attn_init == "data":
            data_attention_init_(sae, first.acts)
        v1 = top_direction(first.acts[fm] * scale)
    since_fired = torch.zeros(cfg.width, dtype=torch.int64)
    mults = lr_multipliers(sae, cfg)
    dec_init = decoder_matrix(sae).detach().clone()
    return _Start(sae, scale, 0, since_fired, norm_threshold, median_norm, v1, mults, dec_init)


def _resumed_start(cfg: TrainConfig, state: dict, d_in: int) -> _Start:
    """The SAE and counters of a saved training state."""
    scale = float(state["scaling_factor"])
    sae = make_sae(cfg, d_in, scale, None)
    sae.load_state_dict(state["sae"])
    norm_threshold = state.get("norm_threshold")
    norm_threshold = float(norm_threshold) if norm_threshold is not None else None
    mults = dict(json.loads(state["lr_mult"])) if "lr_mult" in state else lr_multipliers(sae, cfg)
    dec_init = state["decoder_init"] if "decoder_init" in state else decoder_matrix(sae).detach().clone()
    return _Start(
        sae,
        scale,
        int(state["step"]),
        state["since_fired"].clone(),
        norm_threshold,
        float(state.get("median_norm", math.nan)),
        state.get("v1"),
        mults,
        dec_init,
    )


def _open_run(cfg: TrainConfig, device: torch.device, source: ActivationSource, state: dict | None, t0: float) -> _Run:
    """Build or restore the SAE, its optimizer and the RNG, and write ``train_config.json``."""
    per_epoch = batches_per_epoch(source.spec.n_train, cfg.batch_prompts)
    total = cfg.max_steps or cfg.epochs * per_epoch
    s = _fresh_start(cfg, source, total) if state is None else _resumed_start(cfg, state, int(source.d_in))
    s.sae = s.sae.to(device).float().train()
    opt = make_optimizer(s.sae, cfg, s.mults)
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        _set_rng_state(state["rng"])
    run = _Run(
        cfg=cfg,
        device=device,
        source=source,
        t0=t0,
        total=total,
        per_epoch=per_epoch,
        s=s,
        opt=opt,
        prior_seconds=float(state.get("train_seconds", 0.0)) if state is not None else 0.0,
        loss_ema=float(state.get("loss_ema", float("nan"))) if state is not None else float("nan"),
    )
    run.curve_batch = curve_batch(source, cfg.curve_prompts)
    run.meta = run_metadata(cfg, source) | {
        "loss_norm_cap": cfg.loss_norm_cap,
        "loss_norm_threshold": s.norm_threshold,
        "median_token_norm": s.median_norm,
        "lr_rule": cfg.lr_rule if cfg.arch == "temporal" else "single",
        "attn_init": cfg.attn_init if cfg.arch == "temporal" else None,
        "direction_penalty": cfg.direction_penalty if cfg.arch == "temporal" else 0.0,
    }
    atomic_write_json(
        run.out / "train_config.json",
        {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
        | {
            "total_steps": total,
            "n_train_prompts": source.spec.n_train,
            "n_heldout_prompts": source.spec.n_heldout,
            "scaling_factor": s.scale,
            "median_token_norm": s.median_norm,
            "loss_norm_threshold": s.norm_threshold,
            "lr_multipliers": s.mults,
        },
    )
    return run


def _save_checkpoint(run: _Run) -> None:
    """Write ``training_state.pt`` and the SAE files of the current step (atomic files)."""
    cfg, s, step = run.cfg, run.s, run.s.step
    payload = {
        "format": STATE_FORMAT,
        "step": step,
        "identity": json.dumps(cfg.identity(), sort_keys=True),
        "scaling_factor": s.scale,
        "sae": {k: v.detach().cpu() for k, v in s.sae.state_dict().items()},
        "optimizer": run.opt.state_dict(),
        "rng": _rng_state(),
        "since_fired": s.since_fired.clone(),
        "data_position": {
            "epoch": step // run.per_epoch,
            "batch_in_epoch": step % run.per_epoch,
            "batch_prompts": cfg.batch_prompts,
            "seed": cfg.seed,
        },
        "loss_ema": run.loss_ema,
        "train_seconds": run.prior_seconds + time.perf_counter() - run.t0,
        "norm_threshold": s.norm_threshold,
        "median_norm": s.median_norm,
        "lr_mult": json.dumps(sorted(s.mults.items())),
        "decoder_init": s.dec_init.cpu(),
    }
    if s.v1 is not None:
        payload["v1"] = s.v1.cpu()
    atomic_write_bytes(run.out / STATE_FILE, _state_bytes(payload))
    tokens = step * cfg.batch_prompts * cfg.prompt_len
    save_sae_files(_cpu_copy(s.sae), run.out, cfg, run.meta | {"step": step, "tokens_seen": tokens})


def _log_curve(run: _Run) -> None:
    """Append the held-out learning-curve numbers of the current step to ``train_log.jsonl``."""
    if run.curve_batch is None:
        return
    s = run.s
    s.sae.eval()
    c = curve_metrics(s.sae, run.curve_batch, s.scale, s.norm_threshold, s.dec_init, run.device)
    s.sae.train()
    _append_log(run.out / "train_log.jsonl", [json.dumps({"step": s.step, "curve": c})])


def _forward_loss(run: _Run, x: Tensor, xs: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(loss, mse, aux, code indices, in-loss token mask)`` of one batch (raw ``x``, scaled ``xs``)."""
    cfg, s, d_in = run.cfg, run.s, run.d_in
    if cfg.arch == "topk":
        flat_x, flat_m = xs.reshape(-1, d_in), mask.reshape(-1)
        recon, codes, pre = s.sae.forward_scaled(flat_x)
        mse = summed_mse(recon, flat_x, flat_m)
        dead = s.since_fired.to(run.device) >= cfg.dead_window_tokens
        k_aux = cfg.aux_k or d_in // 2
        residual = (flat_x - recon.float()).detach()
        aux = auxk_loss(s.sae, pre, residual, dead, flat_m, k_aux) if cfg.aux_coef > 0 else mse.new_zeros(())
        return mse + cfg.aux_coef * aux, mse, aux, codes.indices, flat_m
    fo = s.sae.forward_train(x)
    mse = summed_mse(fo.recon, xs, mask)
    if cfg.direction_penalty > 0 and s.v1 is not None:
        aux = direction_penalty(fo.directions, s.v1.to(run.device), mask)
    else:
        aux = mse.new_zeros(())
    idx = fo.codes.indices.reshape(-1, fo.codes.indices.shape[-1])
    return mse + cfg.direction_penalty * aux, mse, aux, idx, mask.reshape(-1)


def _train_step(run: _Run, batch: Any) -> _StepStats:
    """One optimizer step on ``batch``; updates the dead-latent counters and the loss EMA."""
    cfg, s, device = run.cfg, run.s, run.device
    x = batch.acts.to(device, non_blocking=True)
    mask = loss_mask(x, batch.special.to(device), s.norm_threshold)
    lr = lr_at(s.step, cfg, run.total)
    for g in run.opt.param_groups:
        g["lr"] = lr * g.get("lr_mult", 1.0)
    xs = x * s.scale
    use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
        loss, mse, aux, idx, m_tok = _forward_loss(run, x, xs, mask)
    if not torch.isfinite(loss):
        raise TempolensError(
            f"the loss became {float(loss)} at step {s.step}; lower --lr or use --precision fp32 "
            "(finished checkpoints are kept)"
        )
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.arch == "topk":
        remove_parallel_grad(s.sae.W_dec)
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(s.sae.parameters(), cfg.grad_clip)
    run.opt.step()
    if cfg.arch == "topk":
        normalize_rows_(s.sae.W_dec.data)
    # bookkeeping: which latents fired on this batch's in-loss tokens
    with torch.no_grad():
        valid = idx[m_tok]
        fired = torch.zeros(cfg.width, dtype=torch.bool, device=device)
        fired[valid[valid >= 0]] = True
        n_tok = int(m_tok.sum())
        s.since_fired += n_tok
        s.since_fired[fired.cpu()] = 0
        xm = xs.reshape(-1, run.d_in)[m_tok].float()
        var = (xm - xm.mean(0)).pow(2).sum(-1).mean() if xm.shape[0] else xm.new_ones(())
        nmse = float(mse.detach() / var.clamp_min(1e-12))
        l0 = float((valid >= 0).sum(-1).float().mean()) if valid.shape[0] else 0.0
    run.last_loss = float(loss.detach())
    run.loss_ema = run.last_loss if math.isnan(run.loss_ema) else 0.98 * run.loss_ema + 0.02 * run.last_loss
    return _StepStats(run.last_loss, mse, aux, nmse, l0, lr)


def _train_loop(run: _Run) -> None:
    """Step from the saved step to the last one, logging, drawing curve points and checkpointing on schedule."""
    from tqdm.auto import tqdm

    cfg, s, total = run.cfg, run.s, run.total
    bar = tqdm(total=total, initial=s.step, desc=f"train {cfg.arch}", unit="step", disable=not cfg.progress)
    if s.step == 0:
        _log_curve(run)
    try:
        for batch in iter_batches(run.source, cfg.batch_prompts, cfg.seed, s.step, max(total - s.step, 0)):
            st = _train_step(run, batch)
            s.step += 1
            bar.update(1)
            bar.set_postfix(
                loss=f"{st.loss:.4g}", nmse=f"{st.nmse:.3f}", L0=f"{st.l0:.1f}", lr=f"{st.lr:.2e}", refresh=False
            )
            if s.step % cfg.log_every == 0 or s.step == total:
                n_dead = int((s.since_fired >= cfg.dead_window_tokens).sum())
                line = {
                    "step": s.step,
                    "epoch": batch.epoch,
                    "loss": st.loss,
                    "mse": float(st.mse.detach()),
                    "aux": float(st.aux.detach()),
                    "nmse_batch_centred": st.nmse,
                    "l0": st.l0,
                    "lr": st.lr,
                    "dead_window": n_dead,
                    "seconds": round(time.perf_counter() - run.t0, 1),
                }
                _append_log(run.out / "train_log.jsonl", [json.dumps(line)])
            if s.step % cfg.curve_every == 0 or s.step == total:
                _log_curve(run)
            if s.step % cfg.checkpoint_every == 0 or s.step == total:
                _save_checkpoint(run)
    finally:
        bar.close()
    if s.step == 0 and total == 0:
        _save_checkpoint(run)


def _finish(run: _Run) -> TrainResult:
    """Draw the learning curves, evaluate the saved SAE on the held-out split and write ``eval.json``."""
    cfg, out, step = run.cfg, run.out, run.s.step
    train_seconds = run.prior_seconds + time.perf_counter() - run.t0
    run.s.sae.eval()
    try:
        plot_learning_curves(
            out / "train_log.jsonl", out / "learning_curves.png", title=f"{cfg.arch} SAE, {cfg.out.name}"
        )
    except (OSError, ValueError) as e:  # a figure must never lose a finished run
        print(f"warning: learning-curve figure not written ({e})")
    ev = evaluate_run(cfg, out, run.source, run.s.sae, run.device)
    ev["train_seconds"] = round(train_seconds, 1)
    ev["steps"] = step
    ev["tokens_seen"] = step * cfg.batch_prompts * cfg.prompt_len
    atomic_write_json(out / "eval.json", ev)
    if cfg.progress:
        print(_summary(cfg, ev))
    return TrainResult(
        out=out,
        steps=step,
        tokens_seen=ev["tokens_seen"],
        seconds=time.perf_counter() - run.t0,
        final_loss=run.last_loss,
        eval=ev,
    )


def train(cfg: TrainConfig) -> TrainResult:
    """Train the SAE of ``cfg`` (resuming with ``--resume``), save it and evaluate it on the held-out split."""
    from tempolens.devices import resolve_device

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    state = _saved_state(cfg)
    t0 = time.perf_counter()
    source = open_source(cfg, device)
    run = _open_run(cfg, device, source, state, t0)
    _train_loop(run)
    return _finish(run)


def run_metadata(cfg: TrainConfig, source: ActivationSource) -> dict:
    """Provenance written into the checkpoint (SAELens ``metadata`` keys where they exist)."""
    model_id = (
        getattr(source, "meta", {}).get("model_id")
        or getattr(getattr(source, "model", None), "model_id", None)
        or cfg.model
    )
    return {
        "model_name": model_id,
        "hook_name": f"blocks.{cfg.layer}.hook_resid_post",
        "hook_layer": cfg.layer,
        "context_size": cfg.prompt_len,
        "prepend_bos": True,
        "dataset_path": cfg.corpus,
        "trained_with": "tempolens train",
        "train_arch": cfg.arch,
        "train_seed": cfg.seed,
        "lm_dtype": source.spec.lm_dtype,
    }


def _cpu_copy(sae: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(sae).cpu().float().eval()


def _truncate_log(path: Path, step: int) -> None:
    """Keep only the log lines of steps ≤ ``step`` (lines written after the last checkpoint are redone)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except ValueError:
            continue
    atomic_write_bytes(path, ("\n".join(keep) + "\n" if keep else "").encode())


def _append_log(path: Path, lines: list[str]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")


def _summary(cfg: TrainConfig, ev: dict) -> str:
    s = (
        f"{cfg.arch} SAE → {cfg.out}: held-out NMSE {ev['nmse']:.4f} (mean-centred; FVE {ev['fve']:.4f}), "
        f"plain NMSE {ev['nmse_plain']:.4f}, L0 {ev['l0']:.1f}, dead {ev['dead_fraction']:.3f}"
    )
    if "trimmed_nmse" in ev:
        s += f"; without the top {1 - ev['trim_quantile']:.0%} token norms: NMSE {ev['trimmed_nmse']:.4f}"
    if "pred_share" in ev:
        s += (
            f", predicted share {ev['pred_share']:.3f}, novel-only NMSE {ev['nmse_novel_only']:.4f}, "
            f"pred-only NMSE {ev['nmse_pred_only']:.4f}"
        )
    return s


def evaluate_run(cfg: TrainConfig, out: Path, source: ActivationSource, sae: nn.Module, device: torch.device) -> dict:
    """Evaluate the SAE as saved (reloaded through ``load_sae``, so fp16 weights count) on the held-out split."""
    if source.spec.n_heldout == 0:
        return {"note": "no held-out split (--heldout-fraction 0)"}
    try:
        from tempolens.saes.loading import load_sae

        model = load_sae(str(out), device="cpu")
        where = "saved checkpoint (reloaded)"
    except (ImportError, TempolensError):
        model = _cpu_copy(sae)
        where = "in-memory model"
    ev = evaluate_sae(
        model.to(device).float().eval(),
        source,
        split="heldout",
        batch_prompts=cfg.eval_batch_prompts,
        progress=cfg.progress,
    )
    ev["evaluated"] = where
    return ev
