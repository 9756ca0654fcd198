"""Variational autoencoder: a conv encoder and a DCGAN-shaped decoder.

The decoder is the shipped "generator": sampling z ~ N(0, I) and interpolating work as
for a GAN. The encoder outputs (mu, log σ²) concatenated, shape (B, 2·z_dim).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from training.models.encoders import ConvEncoder
from training.models.registry import ArchOptions, Family, register_family


def _build(o: ArchOptions) -> tuple[str, dict[str, Any], nn.Module]:
    kwargs = {"z_dim": o.z_dim, "num_classes": 0, "channels": o.channels, "resolution": o.resolution,
              "ngf": o.width, "upsample": o.upsample, "bn": o.bn}
    return "DCGenerator", kwargs, ConvEncoder(o.channels, o.resolution, o.width, 2 * o.z_dim)


register_family(Family("vae", "vae", False, True, _build,
                       "variational autoencoder; the decoder samples like a generator"))
