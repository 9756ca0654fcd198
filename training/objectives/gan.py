"""The GAN objective (Goodfellow et al. 2014) with its variants: ACGAN's class head, InfoGAN's Q head
and the self-conditioned GAN's clusters. Families: mlp-gan, dcgan, cgan (``gan``) and acgan (``acgan``).

D and G each take one step per batch; D judges real and fake images in separate forwards (as
pytorch/examples dcgan), with the non-saturating BCE or the hinge loss, optional label smoothing, noisy
labels, R1 penalty and DiffAugment.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

from training import losses
from training.augment import diff_augment, parse_policy
from training.data import ImageData, to_float
from training.models.dcgan import latent_code
from training.objectives.base import Objective, no_sync, register_objective, wrap

if TYPE_CHECKING:
    from training.options import TrainOptions

log = logging.getLogger("training")

# The options of the latent-code variants (InfoGAN, self-conditioning): read by both GAN objectives and WGAN-GP.
CODE_OPTIONS = ("latent_categories", "info_weight", "self_condition", "recluster_every", "diffaugment", "lr_d")


class Discriminated(Objective):
    """What every objective with a discriminator shares: D's optimiser, DiffAugment, the latent code of
    InfoGAN / a self-conditioned GAN, and the training images' clusters of the latter."""

    def __init__(self, opts: TrainOptions, g: nn.Module, d: nn.Module, data: ImageData, conditional: bool,
                 world: int, device: torch.device) -> None:
        super().__init__(opts, g, d, data, conditional, world, device)
        self.opt_g = self.adam("g", g.parameters(), opts.lr_g)
        self.opt_d = self.adam("d", d.parameters(), opts.lr_d)
        self.g, self.d = wrap(g, world, device), wrap(d, world, device)
        self.augment = parse_policy(opts.diffaugment)  # --diffaugment: transforms of every D input
        # --self-condition: each training image's cluster, D's label for it (kept in the resume state).
        self.clusters: torch.Tensor | None = None
        if opts.self_condition:
            from training.clusters import cluster_labels

            self.clusters = cluster_labels(data.images, opts.latent_categories, opts.seed)

    def code(self, z: torch.Tensor) -> torch.Tensor | None:
        """--latent-categories: the categorical code G reads from each latent (B,); else None."""
        return latent_code(z, self.opts.latent_categories) if self.opts.latent_categories else None

    def real_labels(self, labels: torch.Tensor) -> torch.Tensor:
        return labels if self.clusters is None else self.clusters

    def start_epoch(self, epoch: int, images: torch.Tensor) -> dict[str, float]:
        every = self.opts.recluster_every
        if not (every and epoch and epoch % every == 0):
            return {}
        moved = self.recluster(images)
        log.info("re-clustered the training images on D's features: %.1f %% moved", 100 * moved)
        return {"recluster_moved": moved}

    @torch.no_grad()
    def recluster(self, images: torch.Tensor, batch: int = 500) -> float:
        """--recluster-every: the training images' clusters found again on D's pooled features (k-means
        started from the current clusters, so each keeps its code); returns the fraction that moved.
        D judges each batch with its own batch statistics, as in training, and its buffers (batch-norm
        running statistics, spectral-norm vectors) are put back as they were: measuring changes nothing.
        Every rank computes the same clusters; rank 0's are sent to all the same."""
        from training.clusters import recluster

        assert self.clusters is not None
        d = self.d_raw
        saved = [(b, b.clone()) for b in d.buffers()]
        feats = torch.cat([d.pooled_features(to_float(images[i:i + batch])).float().cpu()  # type: ignore[operator]
                           for i in range(0, images.shape[0], batch)])
        for b, was in saved:
            b.copy_(was)
        new = torch.from_numpy(recluster(feats.double().numpy(), self.clusters.numpy(),
                                         self.opts.latent_categories)).long()
        if self.world > 1:
            synced = new.to(self.device)
            dist.broadcast(synced, 0)
            new = synced.cpu()
        moved = float((new != self.clusters).float().mean())
        self.clusters = new
        return moved

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), **({"clusters": self.clusters} if self.clusters is not None else {})}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if self.clusters is not None and "clusters" in state:
            self.clusters = state["clusters"].cpu()


@register_objective("gan")
class GanObjective(Discriminated):
    options: tuple[str, ...] = ("loss", "label_smoothing", "noisy_labels", "r1_gamma", *CODE_OPTIONS)

    def judge(self, images: torch.Tensor, labels: torch.Tensor | None,
              adv_loss: Callable[[torch.Tensor], torch.Tensor], class_weight: float = 1.0,
              targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One D forward of the (--diffaugment'ed) images → (adversarial loss [+ class_weight × the second
        head's cross-entropy against ``targets``: the labels for ACGAN's class head, the latent codes for
        InfoGAN's Q head], real/fake logits (B,)). Without targets (InfoGAN's real images) only the first."""
        out = self.d(diff_augment(images, self.augment), labels)
        if not isinstance(out, tuple):
            return adv_loss(out), out
        adv, cls = out
        targets = labels if targets is None else targets
        if class_weight == 0 or targets is None:
            return adv_loss(adv), adv
        return adv_loss(adv) + class_weight * losses.class_loss(cls, targets), adv

    def head_weights(self) -> tuple[float, float]:
        """The weights of D's second head's loss on fakes, in D's step and in G's (InfoGAN's Q head)."""
        return self.opts.info_weight, self.opts.info_weight

    def step(self, x: torch.Tensor, y: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        o, b = self.opts, x.shape[0]
        y_real = y if self.conditional or o.self_condition else None  # self-conditioned: y is the cluster
        y_fake = self.fake_labels(b)
        z = self.latent(b)
        code = self.code(z)
        fake = self.g(z, y_fake)  # (B, C, H, W), one G forward per step (DDP-safe)
        w_fake, w_g = self.head_weights()
        if o.self_condition:  # D is told each fake's code as its label; there is no Q head to train
            y_fake, code = code, None
        hinge = o.loss == "hinge"
        t_real, t_fake = losses.d_targets(b, self.device, o.label_smoothing, o.noisy_labels)
        # D step: real and fake each get their own forward and backward (as pytorch/examples dcgan).
        self.d_raw.requires_grad_(True)
        self.opt_d.zero_grad(set_to_none=True)
        x_in = x.detach().requires_grad_(True) if o.r1_gamma else x
        loss_r, adv_r = self.judge(x_in, y_real, losses.d_hinge_real if hinge else lambda a: losses.bce(a, t_real))
        if o.r1_gamma:
            r1 = losses.r1_penalty(adv_r, x_in)
            loss_r = loss_r + o.r1_gamma / 2 * r1
        loss_r.backward()
        loss_f, adv_f = self.judge(fake.detach(), y_fake,
                                   losses.d_hinge_fake if hinge else lambda a: losses.bce(a, t_fake), w_fake, code)
        loss_f.backward()
        self.opt_d.step()
        # G step: D frozen and out of DDP's gradient sync.
        self.d_raw.requires_grad_(False)
        self.opt_g.zero_grad(set_to_none=True)
        with no_sync(self.d):
            loss_g, _ = self.judge(fake, y_fake, losses.g_hinge if hinge else losses.g_nonsaturating, w_g, code)
        loss_g.backward()
        self.opt_g.step()
        out = {"loss_d": (loss_r + loss_f).detach(), "loss_g": loss_g.detach(),
               "d_real": torch.sigmoid(adv_r.detach()).mean(), "d_fake": torch.sigmoid(adv_f.detach()).mean()}
        if o.r1_gamma:
            out["r1"] = r1.detach()
        return out


@register_objective("acgan")
class AcganObjective(GanObjective):
    """ACGAN (Odena et al. 2017): D's second head classifies every image, real and fake; G is trained to
    make its class recognisable. --pretrain-d-epochs fits the class head on real images first."""

    options = (*GanObjective.options, "pretrain_d_epochs", "acgan_fake_class_weight", "acgan_g_class_weight",
               "acgan_projection")

    def __init__(self, opts: TrainOptions, g: nn.Module, d: nn.Module, data: ImageData, conditional: bool,
                 world: int, device: torch.device) -> None:
        super().__init__(opts, g, d, data, conditional, world, device)
        self.pretrain_epochs = opts.pretrain_d_epochs

    def head_weights(self) -> tuple[float, float]:
        return self.opts.acgan_fake_class_weight, self.opts.acgan_g_class_weight

    def pretrain_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """ACGAN trick from the seed article: fit D's class head on real images before the GAN game."""
        self.d_raw.requires_grad_(True)
        self.opt_d.zero_grad(set_to_none=True)
        _, cls = self.d(diff_augment(x, self.augment), y)
        loss = losses.class_loss(cls, y)
        loss.backward()
        self.opt_d.step()
        return {"loss_cls": loss.detach(), "acc": (cls.argmax(1) == y).float().mean()}
