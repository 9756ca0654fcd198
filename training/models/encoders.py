"""Encoders of the VAE and the autoencoders, shipped beside their decoders as ``encoder.safetensors``.

Each records its own ``spec`` (class name and JSON kwargs) so that config.json can rebuild it, as it
does the generator. :class:`LatentEncoder` turns an encoder's output into the latent ``z`` the served
generator takes (the one rule the service, ``evaluate`` and scripts share).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from training.models.common import dcgan_init, upsampling_plan
from training.models.registry import register_encoder

# What an encoder's output is: the code itself (ae, conv-ae) or a VAE's (mean, log σ²) concatenated.
EncoderOutput = Literal["code", "mean-logvar"]


@register_encoder
class ConvEncoder(nn.Module):
    """images (B, C, H, W) → (B, out_dim), mirroring the DCGAN discriminator's stages."""

    def __init__(self, channels: int, resolution: int, width: int, out_dim: int) -> None:
        super().__init__()
        self.spec: dict[str, Any] = {"class": type(self).__name__, "kwargs": {
            "channels": channels, "resolution": resolution, "width": width, "out_dim": out_dim}}
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


@register_encoder
class MLPEncoder(nn.Module):
    """images (B, C, H, W) → (B, out_dim) through fully connected layers."""

    def __init__(self, channels: int, resolution: int, hidden: list[int], out_dim: int) -> None:
        super().__init__()
        self.spec: dict[str, Any] = {"class": type(self).__name__, "kwargs": {
            "channels": channels, "resolution": resolution, "hidden": list(hidden), "out_dim": out_dim}}
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


class LatentEncoder(nn.Module):
    """images (B, C, H, W) in [-1, 1] → the served generator's z (B, z_dim), deterministically.

    A plain autoencoder's code is its z. A VAE's z is its encoder's mean μ(x) (no sampling: the same
    image gives the same z). A VAE served through an ex-post mixture (``ExPostGenerator``) takes a z one
    entry longer than the code: μ(x) is mapped back through the mixture (``ExPostGenerator.latents_of``),
    so the generator decodes exactly μ(x).
    """

    def __init__(self, encoder: nn.Module, output: EncoderOutput, generator: nn.Module) -> None:
        super().__init__()
        self.encoder, self.output = encoder, output
        self.mixture = generator if hasattr(generator, "latents_of") else None
        self.code_dim = int(getattr(generator, "latent_dim", getattr(generator, "z_dim", 0)))

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) → (B, code_dim): what the decoder itself takes."""
        h = self.encoder(x)
        return h[:, : self.code_dim] if self.output == "mean-logvar" else h

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, H, W) → (B, z_dim); ``labels`` is unused (the encoders are unconditional: the signature is
        a generator's, so that the service runs and checks it as it does a generator)."""
        code = self.codes(x)
        return code if self.mixture is None else self.mixture.latents_of(code)  # type: ignore[operator]
