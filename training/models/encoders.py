"""Encoders for the VAE and the autoencoders (never served: only decoders ship)."""

from __future__ import annotations

import torch
from torch import nn

from training.models.common import dcgan_init, upsampling_plan


class ConvEncoder(nn.Module):
    """images (B, C, H, W) → (B, out_dim), mirroring the DCGAN discriminator's stages."""

    def __init__(self, channels: int, resolution: int, width: int, out_dim: int) -> None:
        super().__init__()
        base, stages = upsampling_plan(resolution)
        layers: list[nn.Module] = []
        ch_in, ch = channels, width
        for _ in range(stages):
            layers += [nn.Conv2d(ch_in, ch, 4, 2, 1, bias=False), nn.BatchNorm2d(ch), nn.LeakyReLU(0.2, True)]
            ch_in, ch = ch, ch * 2
        layers += [nn.Flatten(), nn.Linear(ch_in * base * base, out_dim)]
        self.net = nn.Sequential(*layers)
        dcgan_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MLPEncoder(nn.Module):
    """images (B, C, H, W) → (B, out_dim) through fully connected layers."""

    def __init__(self, channels: int, resolution: int, hidden: list[int], out_dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        d = channels * resolution * resolution
        for h in hidden:
            layers += [nn.Linear(d, h), nn.LeakyReLU(0.2, True)]
            d = h
        layers.append(nn.Linear(d, out_dim))
        self.net = nn.Sequential(*layers)
        dcgan_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
