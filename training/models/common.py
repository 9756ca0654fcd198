"""Pieces shared by the network families: init, label handling, resolution plans."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

RESOLUTIONS = (28, 32, 64, 96)


def upsampling_plan(resolution: int) -> tuple[int, int]:
    """(base, stages): the generator starts at ``base``×``base`` and doubles ``stages`` times.

    28 = 7·2², 32 = 4·2³, 64 = 4·2⁴ (the PyTorch DCGAN tutorial), 96 = 6·2⁴.
    """
    plans = {28: (7, 2), 32: (4, 3), 64: (4, 4), 96: (6, 4)}
    try:
        return plans[resolution]
    except KeyError:
        raise ValueError(f"resolution must be one of {RESOLUTIONS}, got {resolution}") from None


def dcgan_init(module: nn.Module) -> None:
    """DCGAN init: conv/linear weights N(0, 0.02), norm weights N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear | nn.Embedding):
            nn.init.normal_(m.weight, 0.0, 0.02)
            bias = getattr(m, "bias", None)  # nn.Embedding has none
            if isinstance(bias, torch.Tensor):
                nn.init.zeros_(bias)
        elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d | nn.LayerNorm | nn.GroupNorm) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def one_hot(labels: torch.Tensor | None, num_classes: int, batch: int) -> torch.Tensor | None:
    """One-hot labels (B, K) as float, or None for an unconditional network.

    ``labels`` is (B,) class indices, or (B, K) float class weights ("soft" labels, used
    by the service's class morphs), passed through as they are. A conditional network
    called without labels, or with labels out of range, raises ValueError rather than
    producing garbage.
    """
    if num_classes == 0:
        return None
    if labels is None:
        raise ValueError(f"this network is conditional on {num_classes} classes: pass labels")
    if labels.is_floating_point() and labels.shape == (batch, num_classes):
        return labels.float()
    if labels.shape != (batch,):
        raise ValueError(f"labels must have shape ({batch},), got {tuple(labels.shape)}")
    return F.one_hot(labels.long(), num_classes).float()


def join_labels(z: torch.Tensor, labels: torch.Tensor | None, num_classes: int) -> torch.Tensor:
    """z (B, z_dim) → (B, z_dim + K) with the one-hot (or soft) labels appended; z itself when unconditional."""
    y = one_hot(labels, num_classes, z.shape[0])
    return z if y is None else torch.cat([z, y.to(z.dtype)], dim=1)


def act_block(channels: int, bn: str, act: nn.Module, norm: bool = True) -> list[nn.Module]:
    """Normalisation and activation in the order the seed article compared."""
    if not norm:
        return [act]
    if bn == "before-act":
        return [nn.BatchNorm2d(channels), act]
    if bn == "after-act":
        return [act, nn.BatchNorm2d(channels)]
    raise ValueError(f"bn must be 'before-act' or 'after-act', got {bn!r}")
