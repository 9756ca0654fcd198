"""The modules behind the image-in routes, run by batchers like the generators (``app.batcher``).

Each has its own batcher, so that concurrent uploads to one model share one forward pass. A loaded
translator (pix2pix, ``config.input`` set) gets one: ``translate``, images (B, C_in, H, W) in [-1, 1]
resized to its input → its images (B, C, H, W). A loaded autoencoder or VAE (a checkpoint with
``encoder.safetensors``) gets two beside its generator:

* ``reconstruct``: images (B, C, H, W) in [-1, 1] → the served generator's images of their encoded
  latents (B, C, H, W) — the same generator ``GET /generate?z=…`` runs, so a reconstruction and the
  ``reconstruction_url`` of the image's ``encode`` give the same pixels;
* ``encode``: images → (B, z_dim + 1): the latent the encoder gives each image (``LatentEncoder``:
  the code, or a VAE's mean, mapped through an ex-post mixture when there is one) and, in the last
  column, the mean squared error of its reconstruction to the image.

The encoder is served as the generators are: a ``prepare_for_inference`` copy whose matrix products run
at one fixed shape, checked at load to give each image the same latent however it is batched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

RECONSTRUCT, ENCODE, TRANSLATE = "reconstruct", "encode", "translate"


class Reconstructor(nn.Module):
    """images (B, C, H, W) → generator(encoder(images)) (B, C, H, W)."""

    def __init__(self, encoder: nn.Module, generator: nn.Module) -> None:
        super().__init__()
        self.encoder, self.generator = encoder, generator

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        out: torch.Tensor = self.generator(self.encoder(x), None)
        return out


class LatentWithError(nn.Module):
    """images (B, C, H, W) → (B, z_dim + 1): each image's latent and its reconstruction's pixel MSE."""

    def __init__(self, encoder: nn.Module, generator: nn.Module) -> None:
        super().__init__()
        self.encoder, self.generator = encoder, generator

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        z = self.encoder(x)  # (B, z_dim)
        mse = ((self.generator(z, None) - x) ** 2).mean(dim=(1, 2, 3))  # (B,)
        return torch.cat([z, mse[:, None].to(z.dtype)], 1)


class Translator(nn.Module):
    """A translator's generator (pix2pix: ``generator(x)``) with a generator's signature: images (B, C_in, H, W)
    → its images (B, C, H, W)."""

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        out: torch.Tensor = self.generator(x)
        return out


def to_float32(t: torch.Tensor) -> np.ndarray:
    """A batch's latents (with their error column) as float32 on the CPU: the encode batcher's output."""
    return t.detach().to("cpu", torch.float32).numpy()


def check_images(rows: int, channels: int, size: int) -> torch.Tensor:
    """(rows, C, H, W) fixed images in [-1, 1] the load-time batch-invariance check runs an image-in module on:
    smooth random blobs (seeded), not noise, so that they look like the images a model is given."""
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(rows, channels, 4, 4, generator=g) * 2 - 1
    return nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


@dataclass(frozen=True)
class ImageRows:
    """One request's decoded upload, (H, W, C) uint8 → its (1, C, H, W) float input in [-1, 1], converted in
    the worker thread (the batcher's ``LatentSource``)."""

    pixels: np.ndarray

    @property
    def rows(self) -> int:
        return 1

    def __call__(self) -> torch.Tensor:
        return torch.from_numpy(self.pixels).permute(2, 0, 1)[None].float().div(127.5).sub(1.0)
