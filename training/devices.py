"""Which torch device to use: one rule for training, evaluation, sampling and the service
(``GANSERVE_DEVICE`` is resolved by ``resolve_device``). Nothing here touches CUDA at import time."""

from __future__ import annotations

import torch


def pick_device(setting: str, local_rank: int = 0) -> torch.device:
    """``auto``: CUDA (one GPU per local rank), else MPS, else CPU; or an explicit device string."""
    if setting == "auto":
        if torch.cuda.is_available():
            count = torch.cuda.device_count()
            return torch.device("cuda", local_rank % count) if count else torch.device("cuda")
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


def resolve_device(setting: str, local_rank: int = 0) -> torch.device:
    """``pick_device``, refusing an explicit device this machine does not have (RuntimeError saying
    why) rather than failing later at the first tensor moved to it."""
    device = pick_device(setting, local_rank)
    if setting != "auto" and not device_available(setting):
        why = {"cuda": f"CUDA is not available or has only {torch.cuda.device_count()} device(s)",
               "mps": "MPS is not available"}.get(device.type, "no such device")
        if device.type == "cuda" and not torch.cuda.is_available():
            why = "CUDA is not available"
        raise RuntimeError(f"device {setting!r} cannot be used here: {why}")
    return device
