"""Device choice: CUDA, then MPS, then CPU, unless the user names one. Never at import time."""

from __future__ import annotations

import torch

from facemtl.errors import ConfigError


def pick_device(requested: str | None = "auto") -> torch.device:
    if requested in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(requested)
    except RuntimeError:
        raise ConfigError(f"Invalid device '{requested}'. Use auto, cpu, cuda, cuda:N or mps.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{requested}' asked for, but CUDA is not available here; use --device cpu.")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"device '{requested}' asked for, but MPS is not available here; use --device cpu.")
    return dev
