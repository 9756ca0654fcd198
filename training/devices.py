"""Which torch device to use: one rule for training, evaluation and sampling (the service has its own
setting, ``GANSERVE_DEVICE``, resolved the same way). Nothing here touches CUDA at import time."""

from __future__ import annotations

import torch


def pick_device(setting: str, local_rank: int = 0) -> torch.device:
    """``auto``: CUDA (one GPU per local rank), else MPS, else CPU; or an explicit device string."""
    if setting == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(setting)


def device_available(name: str) -> bool:
    """True when ``name`` (cpu, cuda, cuda:N, mps) names a device this machine has."""
    try:
        dev = torch.device(name)
    except RuntimeError:
        return False
    if dev.type == "cuda":
        return torch.cuda.is_available() and (dev.index or 0) < torch.cuda.device_count()
    if dev.type == "mps":
        return torch.backends.mps.is_available()
    return dev.type == "cpu"
