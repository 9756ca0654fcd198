"""WGAN-GP (Gulrajani et al. 2017): a critic without batch-norm scores real and fake images, with a
gradient penalty at their interpolates; G takes one step every --n-critic critic steps. With
--latent-categories the critic's second head recovers G's code (InfoGAN); with --self-condition the
critic judges every image with its cluster (reals) or code (fakes). Family: wgan-gp."""

from __future__ import annotations

import torch

from training import losses
from training.augment import diff_augment
from training.models.dcgan import with_code
from training.objectives.base import no_sync, register_objective
from training.objectives.gan import CODE_OPTIONS, Discriminated


def scores(out: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """A critic's scores (B,), without its second head's output."""
    return out[0] if isinstance(out, tuple) else out


@register_objective("wgan-gp")
class WganGpObjective(Discriminated):
    options = ("n_critic", "gp_weight", *CODE_OPTIONS)

    def step(self, x: torch.Tensor, y: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        o, b = self.opts, x.shape[0]
        self.d_raw.requires_grad_(True)
        sc = o.self_condition  # y is each real image's cluster
        with torch.no_grad():
            z = self.latent(b)
            if sc:  # each fake gets its real partner's cluster as its code, so that the penalty's
                # interpolate between the two is judged with the one label both share
                z = with_code(z, y, o.latent_categories)
            fake = self.g_raw(z, None)
        code = self.code(z)
        self.opt_d.zero_grad(set_to_none=True)
        # With --diffaugment the penalty is taken between the augmented images, the ones the critic judges.
        labels = y.repeat(3) if sc else None  # real, fake, interpolate: one critic pass (gradient_penalty)
        real_s, fake_s, gp = losses.gradient_penalty(lambda t: scores(self.d(t, labels)),
                                                     diff_augment(x, self.augment), diff_augment(fake, self.augment))
        loss_d = losses.critic_wasserstein(real_s, fake_s) + o.gp_weight * gp
        if code is not None and not sc:  # InfoGAN: Q (the critic's second head) learns to recover the code
            _, q = self.d(diff_augment(fake, self.augment))
            loss_d = loss_d + o.info_weight * losses.class_loss(q, code)
        loss_d.backward()
        self.opt_d.step()
        out = {"loss_d": loss_d.detach(), "gp": gp.detach(), "w_dist": (real_s.mean() - fake_s.mean()).detach()}
        if (step + 1) % o.n_critic == 0:  # one generator step every n_critic critic steps
            out["loss_g"] = self.generator_step(b)
        return out

    def generator_step(self, b: int) -> torch.Tensor:
        o = self.opts
        self.d_raw.requires_grad_(False)
        self.opt_g.zero_grad(set_to_none=True)
        with no_sync(self.d):
            z = self.latent(b)
            code = self.code(z)
            # one critic forward: score [, Q]; self-conditioned, the critic is told each fake's code
            judged = self.d(diff_augment(self.g(z, None), self.augment), code if o.self_condition else None)
            loss_g = losses.g_wasserstein(scores(judged))
            if code is not None and not o.self_condition:
                loss_g = loss_g + o.info_weight * losses.class_loss(judged[1], code)
        loss_g.backward()
        self.opt_g.step()
        return loss_g.detach()
