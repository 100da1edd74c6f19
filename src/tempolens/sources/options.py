"""The options that name and place the sources (model, layer, SAE, device, dtype), defined once.

Every command's config inherits the bases it needs, so each option has one docstring (its
``--help``), one default and one validation:

- ``DeviceOptions``: ``--device`` (``auto`` everywhere: CUDA when available, else CPU).
- ``SAELoadOptions``: ``--sae-strict``.
- ``ModelOptions``: ``--model``, ``--layer`` and ``--device`` (``train``, which reads no SAE).
- ``SourceOptions``: ``ModelOptions`` plus ``--sae``, ``--dtype`` and ``--sae-strict``
  (``collect``, ``kernel``, ``events``, ``serve``).

The bases are cooperative: each ``__post_init__`` checks its own fields and calls
``super().__post_init__()``, so a config may inherit several of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tempolens.options import check

DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class _Options:
    """The end of the ``__post_init__`` chain of the option bases."""

    def __post_init__(self) -> None:
        """Nothing to check here; subclasses check their own fields and call this last."""


@dataclass
class DeviceOptions(_Options):
    """Where the work runs (a base of every config with a ``--device`` option)."""

    device: str = "auto"
    """Torch device: `auto` (CUDA if available, else CPU), `cpu`, `cuda`, `cuda:1`, `mps`, ..."""

    def __post_init__(self) -> None:
        check(
            isinstance(self.device, str) and bool(self.device.strip()),
            f"--device must name a device (auto, cpu, cuda, cuda:N, mps); got {self.device!r}",
        )
        super().__post_init__()


@dataclass
class SAELoadOptions(_Options):
    """How SAE checkpoints are read (a base of every config that has an ``--sae`` option)."""

    sae_strict: bool = False
    """Refuse keys of a Temporal SAE's conf.yaml that tempolens does not know, instead of ignoring them
    with a note (either way they are recorded in the store's meta.json). Keys that would change the
    forward pass (a sae_type other than temporal, use_pos_encoding: true) are always refused; the full
    list is in docs/checkpoints.md."""

    def __post_init__(self) -> None:
        check(isinstance(self.sae_strict, bool), f"--sae-strict is a switch (true or false); got {self.sae_strict!r}")
        super().__post_init__()


@dataclass
class ModelOptions(DeviceOptions):
    """The subject model and its hook block, with the device (``tempolens train`` has these and no SAE)."""

    model: str = "embedded"
    """Subject model: `embedded` (Gemma 3 270M, offline), an HF hub id such as `google/gemma-2-2b`, a local HF
    folder, or a `.gguf` file."""
    layer: int = 12
    """Decoder block whose output is read (`blocks.L.hook_resid_post`); the forward stops after it."""

    def __post_init__(self) -> None:
        check(
            isinstance(self.layer, int) and not isinstance(self.layer, bool) and self.layer >= 0,
            f"--layer must be >= 0; got {self.layer!r}",
        )
        check(isinstance(self.model, str) and bool(self.model.strip()), "--model must name a subject model")
        super().__post_init__()


@dataclass
class SourceOptions(ModelOptions, SAELoadOptions):
    """The subject model, its hook block and the SAE read there, with device and dtype."""

    sae: str = "embedded:temporal"
    """SAE to encode with: `embedded:temporal`, `embedded:topk`, a local folder (Temporal `conf.yaml` +
    `latest_ckpt.*`, or SAELens `cfg.json` + `sae_weights.safetensors`), `hf://owner/repo/subfolder`,
    `saelens://release/sae_id`, or `random:temporal?width=2560&k=32&seed=0`."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Model dtype: `auto` = bfloat16 on CUDA, float32 on CPU. SAEs always run in float32."""

    def __post_init__(self) -> None:
        check(
            isinstance(self.sae, str) and bool(self.sae.strip()),
            "--sae must name an SAE (e.g. embedded:temporal or random:temporal)",
        )
        check(self.dtype in DTYPE_CHOICES, f"--dtype must be auto, float32, bfloat16 or float16; got {self.dtype!r}")
        super().__post_init__()
