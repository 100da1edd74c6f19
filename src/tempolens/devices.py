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
