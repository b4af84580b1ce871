"""Which torch device a ``--device`` value means."""

from __future__ import annotations

import torch

from isplit.errors import IsplitError


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto``: cuda when available, else cpu; ``cuda`` (``cuda:N``) only when there is one."""
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise IsplitError("--device cuda asked, but PyTorch sees no CUDA GPU; use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise IsplitError(f"unknown device {name!r}; use cpu, cuda or auto") from None
