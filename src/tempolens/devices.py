"""Turning a user's ``--device`` into a torch device, with one-line errors."""

from __future__ import annotations

import torch

from tempolens.errors import DeviceError


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` → CUDA if available, else CPU; otherwise the named device, checked to exist here."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise DeviceError(f"--device {str(device)!r} is not a torch device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"--device {str(device)!r} was requested but CUDA is not available here; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise DeviceError(
            f"--device {str(device)!r} does not exist: {torch.cuda.device_count()} CUDA device(s) visible"
        )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError("--device mps was requested but MPS is not available here; use --device cpu")
    return dev


def native_bf16_cpu() -> bool:
    """Whether this CPU runs bfloat16 matmuls natively (AMX or AVX512-BF16, which oneDNN uses); plain AVX2 CPUs
    emulate bf16 and are slower than float32."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    try:
        return any(bool(getattr(cpu, name)()) for name in checks if hasattr(cpu, name))
    except RuntimeError:
        return False


def matmul_precision(option: str, device: torch.device, flag: str) -> str:
    """The precision a bfloat16-capable stage runs at for option ``flag`` (``auto``, ``fp32`` or ``bf16``) on
    ``device``: ``auto`` → ``bf16`` on a CPU with native bfloat16 matmuls, else ``fp32``. ``bf16`` is for CPUs (its
    error bounds assume float32 accumulation, which GPU libraries may skip; GPUs run float32 fast)."""
    if option == "auto":
        return "bf16" if device.type == "cpu" and native_bf16_cpu() else "fp32"
    if option == "bf16" and device.type != "cpu":
        raise DeviceError(
            f"{flag} bf16 runs on CPUs (AMX or AVX512-BF16); on {device.type} float32 is already fast: "
            f"use {flag} auto or fp32"
        )
    return option


def logit_precision(option: str, device: torch.device) -> str:
    """The logit-effect matmul precision for ``--logit-precision`` on ``device`` (:func:`matmul_precision`)."""
    return matmul_precision(option, device, "--logit-precision")
