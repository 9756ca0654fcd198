"""pix2pix (Isola et al. 2017): a U-Net generator with skip connections and a PatchGAN discriminator.

The generator translates an image: ``generator(x)`` with x (B, C_in, H, W) in [-1, 1] (e.g. an edge map,
``training/pairs.py``) → (B, C, H, W) in [-1, 1]. It has no latent: as in the paper, dropout in the
decoder's first layers is its noise while it trains; in eval mode (served, evaluated) it is off, so one
input always gives the same output. The discriminator judges (input, image) pairs patch by patch.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from training.models.common import dcgan_init
from training.models.registry import ArchOptions, Family, register_family, register_generator

# The U-Net halves the image down to 1×1, so its side must be a power of two.
UNET_RESOLUTIONS = (32, 64, 128, 256)


def unet_depth(resolution: int) -> int:
    """Down-sampling stages to 1×1: log2(resolution) (5 at 32, 6 at 64, 8 at the paper's 256)."""
    if resolution not in UNET_RESOLUTIONS:
        raise ValueError(f"a U-Net needs a power-of-two resolution, one of {UNET_RESOLUTIONS}, got {resolution}")
    return int(math.log2(resolution))


def patch_layers(resolution: int) -> int:
    """Stride-2 layers of the PatchGAN: 3 at 256 (the paper's 70×70 patches, about a quarter of the image),
    2 at 64 (34×34 patches), 1 at 32 (16×16 patches, half the image)."""
    return {32: 1, 64: 2, 128: 2, 256: 3}.get(resolution, 1)


def receptive_field(n_layers: int) -> int:
    """The side of the patch one PatchGAN output sees: 16, 34, 70, … for 1, 2, 3, … stride-2 layers."""
    field = 1
    for k, s in [(4, 1), (4, 1)] + [(4, 2)] * n_layers:  # from the output back: two stride-1 convs, then the rest
        field = (field - 1) * s + k
    return field


@register_generator
class UNetGenerator(nn.Module):
    """x (B, in_channels, R, R) in [-1, 1] → images (B, channels, R, R) in [-1, 1].

    Encoder: log2(R) convs 4×4 stride 2 (LeakyReLU 0.2; batch-norm but on the first and the innermost),
    widths ngf, 2ngf, 4ngf, 8ngf, 8ngf, … down to 1×1. Decoder: transposed convs 4×4 stride 2 (ReLU,
    batch-norm; ``upsample="nearest-conv"``: nearest-neighbour doubling + 3×3 conv instead), each fed the
    previous decoder output joined with the encoder map of the same size (the skip connections); dropout
    ``dropout`` in the first ``dropout_layers`` decoder layers; tanh at the end.
    """

    def __init__(self, in_channels: int = 1, channels: int = 1, resolution: int = 32, ngf: int = 64,
                 dropout: float = 0.5, dropout_layers: int = 3, upsample: str = "convT") -> None:
        super().__init__()
        depth = unet_depth(resolution)
        if upsample not in ("convT", "nearest-conv"):
            raise ValueError(f"upsample must be 'convT' or 'nearest-conv', got {upsample!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if not 0 <= dropout_layers < depth:
            raise ValueError(f"dropout_layers must be in 0..{depth - 1} at resolution {resolution}, "
                             f"got {dropout_layers}")
        self.in_channels, self.channels, self.resolution = in_channels, channels, resolution
        widths = [ngf * min(2**i, 8) for i in range(depth)]  # encoder outputs, outermost first
        self.down = nn.ModuleList()
        ch_in = in_channels
        for i, w in enumerate(widths):
            layers: list[nn.Module] = [] if i == 0 else [nn.LeakyReLU(0.2, True)]
            norm = 0 < i < depth - 1  # no norm on the image side nor on the 1×1 bottleneck
            layers.append(nn.Conv2d(ch_in, w, 4, 2, 1, bias=not norm))
            if norm:
                layers.append(nn.BatchNorm2d(w))
            self.down.append(nn.Sequential(*layers))
            ch_in = w
        self.up = nn.ModuleList()
        for j in range(depth):  # innermost first: decoder layer j mirrors encoder layer depth − 1 − j
            i = depth - 1 - j
            ch_in = widths[i] if j == 0 else 2 * widths[i]  # the bottleneck alone, then [decoder, skip]
            last = i == 0
            out = channels if last else widths[i - 1]
            layers = [nn.ReLU(True)]
            if upsample == "convT":
                layers.append(nn.ConvTranspose2d(ch_in, out, 4, 2, 1, bias=last))
            else:  # nearest-neighbour doubling, then a 3×3 conv: no uneven overlap, no checkerboard (Odena et al.)
                layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch_in, out, 3, 1, 1, bias=last)]
            if last:
                layers.append(nn.Tanh())
            else:
                layers.append(nn.BatchNorm2d(out))
                if j < dropout_layers and dropout > 0:
                    layers.append(nn.Dropout(dropout))
            self.up.append(nn.Sequential(*layers))
        dcgan_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1:] != (self.in_channels, self.resolution, self.resolution):
            raise ValueError(f"expected input (B, {self.in_channels}, {self.resolution}, {self.resolution}), "
                             f"got {tuple(x.shape)}")
        skips = []
        h = x
        for down in self.down:  # (B, ngf, R/2, R/2) … (B, 8ngf, 1, 1)
            h = down(h)
            skips.append(h)
        h = self.up[0](skips[-1])  # (B, 8ngf, 2, 2)
        for up, skip in zip(self.up[1:], reversed(skips[:-1]), strict=True):
            h = up(torch.cat([h, skip], 1))  # the skip connection: (B, 2w, r, r) → (B, w', 2r, 2r)
        return h  # (B, channels, R, R)


class PatchDiscriminator(nn.Module):
    """(input (B, C_in, R, R), image (B, C, R, R)) → real/fake logits (B, P, P), one per overlapping patch.

    The paper's PatchGAN: C64 (no norm) then ``n_layers − 1`` more stride-2 convs doubling the width
    (capped at 8·ndf), one stride-1 conv, and a stride-1 conv to one logit a patch; LeakyReLU 0.2,
    batch-norm. ``n_layers`` sets the patch size (``receptive_field``).
    """

    def __init__(self, in_channels: int = 1, channels: int = 1, ndf: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be ≥ 1, got {n_layers}")
        layers: list[nn.Module] = [nn.Conv2d(in_channels + channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        w = ndf
        for i in range(1, n_layers + 1):
            out = ndf * min(2**i, 8)
            stride = 2 if i < n_layers else 1
            layers += [nn.Conv2d(w, out, 4, stride, 1, bias=False), nn.BatchNorm2d(out), nn.LeakyReLU(0.2, True)]
            w = out
        layers.append(nn.Conv2d(w, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)
        dcgan_init(self)

    def forward(self, inp: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([inp, image], 1)).squeeze(1)  # (B, P, P)


def _build(o: ArchOptions) -> tuple[str, dict[str, Any], nn.Module]:
    if o.input_channels < 1:
        raise ValueError("pix2pix needs the input's channels (the transform's)")
    kwargs: dict[str, Any] = {"in_channels": o.input_channels, "channels": o.channels, "resolution": o.resolution,
                              "ngf": o.width}
    if o.upsample != "convT":  # (only then: the kwargs of convT checkpoints stay what they were)
        kwargs["upsample"] = o.upsample
    unet_depth(o.resolution)  # a clear error for 28 or 96
    d = PatchDiscriminator(o.input_channels, o.channels, o.width, patch_layers(o.resolution))
    return "UNetGenerator", kwargs, d


register_family(Family("pix2pix", "pix2pix", False, False, _build,
                       "pix2pix image-to-image translator: U-Net generator, PatchGAN discriminator, cGAN + L1 loss",
                       translator=True))
