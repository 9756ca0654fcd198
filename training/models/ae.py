"""Plain autoencoders (``ae``: fully connected; ``conv-ae``: convolutional).

Reconstruction only: their latent space is not a distribution one can sample from, so
their checkpoints say ``"sampleable": false`` and the service does not draw from them.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from training.models.encoders import ConvEncoder, MLPEncoder
from training.models.registry import ArchOptions, Family, register_family


def _build_ae(o: ArchOptions) -> tuple[str, dict[str, Any], nn.Module]:
    hidden = [o.width * 4, o.width * 8]
    kwargs = {"z_dim": o.z_dim, "num_classes": 0, "channels": o.channels, "resolution": o.resolution,
              "hidden": hidden}
    return "MLPGenerator", kwargs, MLPEncoder(o.channels, o.resolution, hidden[::-1], o.z_dim)


def _build_conv_ae(o: ArchOptions) -> tuple[str, dict[str, Any], nn.Module]:
    kwargs = {"z_dim": o.z_dim, "num_classes": 0, "channels": o.channels, "resolution": o.resolution,
              "ngf": o.width, "upsample": o.upsample, "bn": o.bn}
    return "DCGenerator", kwargs, ConvEncoder(o.channels, o.resolution, o.width, o.z_dim)


register_family(Family("ae", "ae", False, False, _build_ae, "fully connected autoencoder (reconstruction only)"))
register_family(Family("conv-ae", "ae", False, False, _build_conv_ae,
                       "convolutional autoencoder (reconstruction only)"))
