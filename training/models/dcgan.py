"""DCGAN and the families built on its networks: dcgan, cgan, acgan, wgan-gp.

The generator follows the PyTorch DCGAN tutorial (a transposed conv lifts z to a
``base``×``base`` map, then stages that double the size), with the two switches the
seed article compared: ``upsample`` (transposed conv vs nearest-upsample + 3×3 conv)
and ``bn`` (batch-norm before vs after the ReLU).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from training.models.common import act_block, dcgan_init, join_labels, one_hot, upsampling_plan
from training.models.registry import ArchOptions, Family, register_family, register_generator


@register_generator
class DCGenerator(nn.Module):
    """z (B, z_dim) [+ labels (B,)] → images (B, C, H, W) in [-1, 1]."""

    def __init__(
        self,
        z_dim: int = 100,
        num_classes: int = 0,
        channels: int = 1,
        resolution: int = 28,
        ngf: int = 64,
        upsample: str = "convT",
        bn: str = "before-act",
        categories: int = 0,
    ) -> None:
        super().__init__()
        if upsample not in ("convT", "nearest-conv"):
            raise ValueError(f"upsample must be 'convT' or 'nearest-conv', got {upsample!r}")
        if not 0 <= categories <= z_dim or categories == 1:
            raise ValueError(f"categories must be 0 or 2–z_dim ({z_dim}), got {categories}")
        self.z_dim, self.num_classes, self.categories = z_dim, num_classes, categories
        base, stages = upsampling_plan(resolution)
        ch = ngf * 2 ** (stages - 1)
        # (B, z+K, 1, 1) → (B, ch, base, base): a transposed conv with kernel=base is a linear map.
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(z_dim + num_classes + categories, ch, base, 1, 0, bias=False),
            *act_block(ch, bn, nn.ReLU(True)),
        ]
        for stage in range(stages):
            last = stage == stages - 1
            out = channels if last else ch // 2
            if upsample == "convT":
                layers.append(nn.ConvTranspose2d(ch, out, 4, 2, 1, bias=False))
            else:
                layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, out, 3, 1, 1, bias=False)]
            layers += [nn.Tanh()] if last else act_block(out, bn, nn.ReLU(True))
            ch = out
        self.net = nn.Sequential(*layers)
        dcgan_init(self)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.categories:  # the latent's categorical code, one-hot, as K more inputs
            z = torch.cat([z, latent_code_one_hot(z, self.categories)], 1)
        return self.net(join_labels(z, labels, self.num_classes)[:, :, None, None])  # (B, C, H, W)


def latent_code(z: torch.Tensor, categories: int) -> torch.Tensor:
    """(B, z_dim) → (B,) the categorical code of a generator with ``categories`` = K: the index of the
    largest of z's first K entries. For z ~ N(0, I) it is uniform over the K values, and it is a
    function of z alone — so the seed → latent rule stays the one rule, and a seed fixes the code."""
    return z[:, :categories].argmax(1)


def with_code(z: torch.Tensor, code: torch.Tensor, categories: int) -> torch.Tensor:
    """(B, z_dim) latents and (B,) codes → the latents with, in each row, the largest of the first K
    entries swapped with the entry at the row's code, so that ``latent_code`` gives ``code``. For
    z ~ N(0, I) the result is distributed as z given its code: swapping two of the K independent,
    identically distributed entries changes nothing about their joint law, and it maps the latents whose
    largest entry is at i one to one onto those whose largest is at the code. (A self-conditioned
    WGAN-GP draws its fakes' codes from the real batch's clusters this way.)"""
    z = z.clone()
    rows = torch.arange(z.shape[0], device=z.device)
    top = latent_code(z, categories)
    at_top, at_code = z[rows, top], z[rows, code]  # advanced indexing copies
    z[rows, code] = at_top
    z[rows, top] = torch.where(top == code, at_top, at_code)
    return z


def latent_code_one_hot(z: torch.Tensor, categories: int) -> torch.Tensor:
    return nn.functional.one_hot(latent_code(z, categories), categories).to(z.dtype)


class DCDiscriminator(nn.Module):
    """images (B, C, H, W) [+ labels] → real/fake logits (B,) [, class logits (B, K)].

    ``cond``: "none"; "concat" (cGAN: one-hot label maps join the image channels); "projection" (the
    real/fake logit gets the inner product of the image features with a learned embedding of the label —
    Miyato & Koyama 2018 — so the features themselves do not see the label: a self-conditioned GAN
    re-clusters the training images on them);
    "class-head" (ACGAN: a second head classifies the image; InfoGAN: the same head, Q, recovers the
    generator's categorical latent code); "projection+class-head" (the ACGAN
    head and the projection: D judges image and label together while the class head sees the image alone).
    ``norm``: "batch" (DCGAN), "layer" (WGAN-GP critics must not batch-normalise), "none".
    ``spectral_norm``: every conv is spectrally normalised (SNGAN, Miyato et al. 2018), which
    bounds D's Lipschitz constant; ``norm`` is then "none".
    """

    def __init__(
        self,
        channels: int = 1,
        resolution: int = 28,
        ndf: int = 64,
        num_classes: int = 0,
        cond: str = "none",
        norm: str = "batch",
        minibatch_std: bool = False,
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        base, stages = upsampling_plan(resolution)
        if spectral_norm:
            norm = "none"  # SNGAN: the spectral norm takes the place of batch-/layer-norm
        self.num_classes, self.cond = num_classes, cond
        if cond not in ("none", "concat", "projection", "class-head", "projection+class-head"):
            raise ValueError(f"cond must be none, concat, projection, class-head or projection+class-head, "
                             f"not {cond!r}")
        ch_in = channels + (num_classes if cond == "concat" else 0)
        layers: list[nn.Module] = []
        ch = ndf
        for stage in range(stages):
            layers.append(nn.Conv2d(ch_in, ch, 4, 2, 1, bias=norm == "none" or stage == 0))
            if stage > 0 and norm == "batch":
                layers.append(nn.BatchNorm2d(ch))
            elif stage > 0 and norm == "layer":
                layers.append(nn.GroupNorm(1, ch))  # LayerNorm over (C, H, W)
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            ch_in, ch = ch, ch * 2
        self.features = nn.Sequential(*layers)  # (B, ch_in, base, base)
        self.factored_concat = True  # "concat": the label maps' part of the first conv computed per class, once
        self.minibatch_std = minibatch_std
        self.adv = nn.Conv2d(ch_in + int(minibatch_std), 1, base, 1, 0)
        self.cls = nn.Conv2d(ch_in, num_classes, base, 1, 0) if cond.endswith("class-head") else None
        self.embed = nn.Embedding(num_classes, ch_in) if cond.startswith("projection") else None
        dcgan_init(self)
        if spectral_norm:  # every layer's weight divided by its largest singular value (one power iteration a step)
            for m in list(self.modules()):
                if isinstance(m, nn.Conv2d):
                    nn.utils.parametrizations.spectral_norm(m)

    def forward(
        self, x: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if self.cond == "concat":
            y = one_hot(labels, self.num_classes, x.shape[0])
            assert y is not None
            if self.factored_concat:
                h = self.features[1:](self._first_conv_concat(x, y.to(x.dtype)))
            else:
                x = torch.cat([x, y[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3]).to(x.dtype)], 1)
                h = self.features(x)
        else:
            h = self.features(x)  # (B, C, base, base)
        adv = self.adv(with_minibatch_std(h) if self.minibatch_std else h).flatten()
        if self.embed is not None:  # projection: + <embedding of the label, spatially pooled features>
            y = one_hot(labels, self.num_classes, x.shape[0])
            assert y is not None
            adv = adv + ((y.to(h.dtype) @ self.embed.weight) * h.mean((2, 3))).sum(1)
        if self.cls is not None:
            return adv, self.cls(h).flatten(1)
        return adv

    def _first_conv_concat(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The first conv of a "concat" D without building the (B, C + K, H, W) input: a label map is the
        same at every position, so its part of the conv is, per class, one fixed (ndf, H', W') map — that
        class's kernels run over an all-ones image (zero padding included, so the borders come out as in
        the concatenated conv). Those K maps cost K × ndf × H' × W' once per call; the batch then takes its
        labels' (weighted) sum of them and adds the image part. Same function and weights as concatenating
        (float rounding aside): the concatenated input made D's first conv (C + K)/C times the work — 51×
        for a self-conditioned D with K = 50 clusters."""
        conv = self.features[0]
        assert isinstance(conv, nn.Conv2d)
        weight, c = conv.weight, x.shape[1]  # (ndf, C + K, kh, kw); the spectrally normalised one if SN
        k, ndf = weight.shape[1] - c, weight.shape[0]
        image = nn.functional.conv2d(x, weight[:, :c], conv.bias, conv.stride, conv.padding)
        ones = torch.ones(1, k, x.shape[2], x.shape[3], dtype=x.dtype, device=x.device)
        per_class = nn.functional.conv2d(ones, weight[:, c:].transpose(0, 1).reshape(k * ndf, 1, *weight.shape[2:]),
                                         None, conv.stride, conv.padding, groups=k)  # (1, K·ndf, H', W')
        return image + (y @ per_class.reshape(k, -1)).reshape(image.shape)

    def pooled_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) → (B, F): the spatially pooled features the projection reads (no label; not with
        "concat", whose features see it)."""
        if self.cond == "concat":
            raise ValueError("a concat-conditioned discriminator's features depend on the label")
        return self.features(x).mean((2, 3))


def with_minibatch_std(h: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) → (B, C + 1, H, W): the standard deviation of each feature at each position over
    the batch, averaged into one number, as a constant extra channel (ProGAN's minibatch standard
    deviation). Fakes that look alike give a small number that D can learn to spot, which pushes G
    toward the data's variety. A batch of one gives 0."""
    std = h.float().var(dim=0, unbiased=False).add(1e-8).sqrt().mean().to(h.dtype)
    return torch.cat([h, std.expand(h.shape[0], 1, h.shape[2], h.shape[3])], 1)


def _generator_kwargs(o: ArchOptions, conditional: bool) -> dict[str, Any]:
    kwargs = {
        "z_dim": o.z_dim,
        "num_classes": o.num_classes if conditional else 0,
        "channels": o.channels,
        "resolution": o.resolution,
        "ngf": o.width,
        "upsample": o.upsample,
        "bn": o.bn,
    }
    if o.categories:  # only then: older checkpoints' kwargs stay what a run of theirs builds
        kwargs["categories"] = o.categories
    return kwargs


def _family(name: str, objective: Any, conditional: bool, cond: str, norm: str, doc: str) -> Family:
    def build(o: ArchOptions) -> tuple[str, dict[str, Any], nn.Module]:
        d_cond = cond  # with o.projection: a cGAN's D takes the label by projection, an ACGAN's by both
        if o.projection:
            d_cond = {"class-head": "projection+class-head", "concat": "projection"}.get(cond, cond)
        d_classes = o.num_classes if conditional else 0
        if o.categories:  # InfoGAN: D's second head (Q) recovers the generator's categorical code from its image;
            # self-conditioned: D takes the code (of fakes) or the cluster (of reals) as a cGAN's D takes the label
            # (by projection when it is re-clustered on D's features, which must then not see the label)
            d_cond = ("projection" if o.recluster else "concat") if o.self_condition else "class-head"
            d_classes = o.categories
        d = DCDiscriminator(o.channels, o.resolution, o.width, d_classes, d_cond, norm,
                            o.minibatch_std, o.spectral_norm)
        return "DCGenerator", _generator_kwargs(o, conditional), d

    return register_family(Family(name, objective, conditional, True, build, doc, conv_discriminator=True))


_family("dcgan", "gan", False, "none", "batch", "unconditional DCGAN (BCE or hinge loss)")
_family("cgan", "gan", True, "concat", "batch", "conditional GAN: the label joins z in G and the image in D")
_family("acgan", "acgan", True, "class-head", "batch", "auxiliary-classifier GAN: D has a real/fake and a class head")
_family("wgan-gp", "wgan-gp", False, "none", "layer",
        "Wasserstein GAN with gradient penalty; critic without batch-norm")
