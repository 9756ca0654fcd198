"""The Goodfellow-style GAN with fully connected G and D (``mlp-gan``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from training.models.common import dcgan_init, join_labels
from training.models.registry import ArchOptions, Family, register_family, register_generator


@register_generator
class MLPGenerator(nn.Module):
    """z (B, z_dim) [+ labels] → images (B, C, H, W) in [-1, 1] through fully connected layers."""

    def __init__(
        self,
        z_dim: int = 100,
        num_classes: int = 0,
        channels: int = 1,
        resolution: int = 28,
        hidden: tuple[int, ...] | list[int] = (256, 512, 1024),
    ) -> None:
        super().__init__()
        self.z_dim, self.num_classes = z_dim, num_classes
        self.shape = (channels, resolution, resolution)
        layers: list[nn.Module] = []
        d = z_dim + num_classes
        for h in hidden:
            layers += [nn.Linear(d, h), nn.BatchNorm1d(h), nn.LeakyReLU(0.2, inplace=True)]
            d = h
        layers += [nn.Linear(d, channels * resolution * resolution), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        dcgan_init(self)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(join_labels(z, labels, self.num_classes)).view(z.shape[0], *self.shape)


class MLPDiscriminator(nn.Module):
    def __init__(self, channels: int = 1, resolution: int = 28, hidden: tuple[int, ...] = (512, 256)) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        d = channels * resolution * resolution
        for h in hidden:
            layers += [nn.Linear(d, h), nn.LeakyReLU(0.2, inplace=True), nn.Dropout(0.3)]
            d = h
        layers.append(nn.Linear(d, 1))
        self.net = nn.Sequential(*layers)
        dcgan_init(self)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x).flatten()


def _hidden(width: int) -> list[int]:
    # width 64 gives the classic 256-512-1024 generator.
    return [width * 4, width * 8, width * 16]


def _build(o: ArchOptions) -> tuple[str, dict[str, Any], nn.Module]:
    kwargs = {"z_dim": o.z_dim, "num_classes": 0, "channels": o.channels, "resolution": o.resolution,
              "hidden": _hidden(o.width)}
    return "MLPGenerator", kwargs, MLPDiscriminator(o.channels, o.resolution, (o.width * 8, o.width * 4))


register_family(Family("mlp-gan", "gan", False, True, _build, "Goodfellow GAN with fully connected G and D"))
