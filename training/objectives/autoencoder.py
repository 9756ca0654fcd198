"""The reconstruction objectives: VAE (Kingma & Welling 2014: negative ELBO, --kl-weight β) and the
plain autoencoder (mean squared error). The second network is the encoder; one optimiser trains
both with --lr-g. Families: vae (``vae``), ae and conv-ae (``ae``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from training import losses
from training.data import ImageData
from training.objectives.base import Objective, register_objective, wrap

if TYPE_CHECKING:
    from training.options import TrainOptions


class AutoEncoder(nn.Module):
    """Encoder + decoder as one module, so DDP wraps one forward/backward per step."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.z_dim: int = decoder.z_dim  # type: ignore[assignment]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, C, H, W) → (reconstruction (B, C, H, W), mu (B, z), log σ² (B, z); zeros for a plain AE)."""
        h = self.encoder(x)
        z_dim = self.z_dim
        if h.shape[1] == 2 * z_dim:  # VAE: (mu, log σ²), reparameterised sample
            mu, logvar = h[:, :z_dim], h[:, z_dim:].clamp(-10, 10)
            z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
            return self.decoder(z, None), mu, logvar
        return self.decoder(h, None), h, torch.zeros_like(h)


class Reconstruction(Objective):
    def __init__(self, opts: TrainOptions, g: nn.Module, d: nn.Module, data: ImageData, conditional: bool,
                 world: int, device: torch.device) -> None:
        super().__init__(opts, g, d, data, conditional, world, device)
        self.frozen = opts.freeze_generator  # only the encoder learns; the decoder runs in eval mode
        if self.frozen:
            g.requires_grad_(False)
        self.opt = self.adam("g", list(d.parameters()) if self.frozen else [*g.parameters(), *d.parameters()],
                             opts.lr_g)
        self.pair = wrap(AutoEncoder(d, g), world, device)

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def step(self, x: torch.Tensor, y: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        if self.frozen:
            self.g_raw.eval()  # its batch-norm statistics are the decoder's own, not this batch's
        self.opt.zero_grad(set_to_none=True)
        out = self.loss(x)
        out["loss"].backward()
        self.opt.step()
        return {k: v.detach() for k, v in out.items()}


@register_objective("vae")
class VaeObjective(Reconstruction):
    options = ("kl_weight", "expost_gmm", "freeze_generator")

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        recon, mu, logvar = self.pair(x)
        loss, rec, kl = losses.vae_elbo(recon, x, mu, logvar, self.opts.kl_weight)
        return {"loss": loss, "recon": rec, "kl": kl}


@register_objective("ae")
class AeObjective(Reconstruction):
    options = ("freeze_generator",)

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        recon, _, _ = self.pair(x)
        return {"loss": losses.reconstruction(recon, x)}
