"""The training loop, top to bottom in the order it runs:
config → distributed setup → data → build → resume → loop (step, EMA, log) → save.

DDP is a few lines keyed on the ``WORLD_SIZE``/``RANK`` variables that torchrun sets
(gloo on CPU, NCCL on CUDA); only rank 0 logs and writes.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DistributedSampler

from training import losses
from training.augment import diff_augment, parse_policy
from training.checkpoint import (
    CheckpointConfig,
    GeneratorSource,
    atomic_write_bytes,
    read_config,
    save_checkpoint,
    update_metrics,
)
from training.config import KEEP_BEST, ConfigError, TrainConfig, keep_best_value
from training.data import DATASET_CREDITS, ImageData, load_dataset, to_float
from training.devices import pick_device
from training.images import make_grid, png_bytes, to_uint8
from training.latent import latents
from training.models import ArchOptions, Family, build_generator, get_family
from training.models.dcgan import latent_code, with_code

log = logging.getLogger("training")
STATE = "state.pt"
# The options that change what a training step computes (besides the architecture, which --resume
# refuses to change): a resumed run with other values of these is another recipe.
RECIPE_KEYS = ("batch_size", "lr_g", "lr_d", "lr_decay_epochs", "beta1", "beta2", "loss", "label_smoothing",
               "noisy_labels", "pretrain_d_epochs", "acgan_fake_class_weight", "acgan_g_class_weight", "n_critic",
               "gp_weight", "kl_weight", "ema_decay", "diffaugment", "r1_gamma", "info_weight")
# The options that make the networks: --resume refuses to change them.
ARCH_KEYS = ("family", "dataset", "resolution", "channels", "z_dim", "width", "upsample", "bn", "classes",
             "minibatch_std", "spectral_norm", "acgan_projection", "cgan_projection", "latent_categories",
             "self_condition", "recluster_every")


# --- setup -------------------------------------------------------------------------------


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_setting: str) -> tuple[Dist, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    d = Dist(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))
    device = pick_device(device_setting, d.local_rank)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return d, device


def git_commit(root: Path | None = None) -> str | None:
    """The commit the code runs from, "-dirty" when tracked files differ from it.

    `checkpoints/` is left out of the check: it holds the outputs of runs (a `--keep-best` run rewrites its
    own `--out` there), not the code that made them.
    """
    root = root or Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "diff", "--quiet", "HEAD", "--", ".", ":(exclude)checkpoints"], cwd=root, timeout=5
        )
        return sha.stdout.strip() + ("-dirty" if dirty.returncode else "")
    except (OSError, subprocess.SubprocessError):
        return None


# --- the pieces of one run -----------------------------------------------------------------


# Prior samples that re-estimate the averaged generator's batch-norm statistics before it is saved.
STANDING_STATS_BATCHES, STANDING_STATS_BATCH_SIZE = 32, 128


class EMA:
    """Exponential moving average of the generator (the copy that is served).

    Parameters are averaged with a decay that warms up from 0 so early checkpoints are not
    dominated by the random init; buffers (batch-norm statistics) are copied at every step and
    re-estimated for the averaged weights by ``standing_stats`` before the average is used.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        ema_p: list[torch.Tensor] = list(self.model.parameters())
        torch._foreach_lerp_(ema_p, [p.detach() for p in model.parameters()], 1 - d)
        for b_ema, b in zip(self.model.buffers(), model.buffers(), strict=True):
            b_ema.copy_(b)

    def standing_stats(self, z_dim: int, num_classes: int, device: torch.device, seed: int = 0) -> None:
        """Re-estimate the average's batch-norm statistics from its own forward passes (``standing_stats``).

        ``update`` copies the training generator's running statistics, which describe *its* weights'
        activations. The average's weights lag behind them; while the generator moves fast the two
        disagree and the served (eval-mode) average normalises with the wrong statistics — in one
        64×64 run that alone was the difference between FID 69 and FID 3 for the same weights. So before
        the average is saved, measured or drawn, its statistics are recomputed."""
        standing_stats(self.model, z_dim, num_classes, device, seed)


@torch.no_grad()
def standing_stats(model: nn.Module, z_dim: int, num_classes: int, device: torch.device, seed: int = 0) -> None:
    """A generator's batch-norm statistics recomputed for its own inputs (BigGAN's "standing statistics"):
    batches of prior samples (and uniform labels) through it in train mode, averaged with equal weight;
    it is left in eval mode. Seeded, and the global RNG is left alone (resume stays exact)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    gen = torch.Generator().manual_seed(seed)
    model.train()
    try:
        for _ in range(STANDING_STATS_BATCHES):
            z = torch.randn(STANDING_STATS_BATCH_SIZE, z_dim, generator=gen).to(device)
            y = (torch.randint(0, num_classes, (STANDING_STATS_BATCH_SIZE,), generator=gen).to(device)
                 if num_classes else None)
            model(z, y)
    finally:
        model.eval()
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum


def batches(data: ImageData, sampler: DistributedSampler[int], batch_size: int) -> Iterator[torch.Tensor]:
    """Index batches of this rank's shard; the last short batch is dropped (BN needs > 1)."""
    idx = torch.tensor(list(iter(sampler)), dtype=torch.long)
    for start in range(0, len(idx) - batch_size + 1, batch_size):
        yield idx[start : start + batch_size]


class _Indices(torch.utils.data.Dataset[int]):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def fixed_grid_inputs(cfg: TrainConfig, num_classes: int, conditional: bool,
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The fixed noise of the per-epoch grids: seeds 0…cols−1 in every row, one row per class."""
    cols = cfg.grid_cols
    rows = num_classes if conditional else cols
    seeds = [c for _ in range(rows) for c in range(cols)] if conditional else list(range(rows * cols))
    z = latents(seeds, cfg.z_dim)
    labels = torch.arange(rows).repeat_interleave(cols) if conditional else None
    return z, labels


@torch.no_grad()
def render_grid(g: nn.Module, z: torch.Tensor, labels: torch.Tensor | None, cols: int, device: torch.device) -> bytes:
    was_training = g.training
    g.eval()
    imgs = g(z.to(device), None if labels is None else labels.to(device))
    g.train(was_training)
    return png_bytes(make_grid(to_uint8(imgs), cols))


# --- training ------------------------------------------------------------------------------


def check_discriminator_options(opts: Any, fam: Family) -> None:
    """The options that change the discriminator or its loss, against the family that has to take them;
    ``opts`` is a TrainConfig or the command line's namespace (the CLI checks before loading data).
    Raises ConfigError naming the flag."""
    for flag in ("minibatch_std", "spectral_norm"):
        if getattr(opts, flag) and not fam.conv_discriminator:
            raise ConfigError(f"--{flag.replace('_', '-')} needs a convolutional discriminator (dcgan, cgan, acgan, "
                              f"wgan-gp), not --family {fam.name}")
    if opts.r1_gamma and fam.objective not in ("gan", "acgan"):
        raise ConfigError(f"--r1-gamma applies to the gan and acgan objectives, not to --family {fam.name} (wgan-gp "
                          "has its own gradient penalty, --gp-weight)")
    if opts.diffaugment and fam.objective in ("vae", "ae"):
        raise ConfigError(f"--diffaugment augments a discriminator's inputs; --family {fam.name} has none")
    if opts.cgan_projection and fam.name != "cgan":
        raise ConfigError(f"--cgan-projection changes a cGAN's discriminator (--family cgan), not --family {fam.name}"
                          + (" (its own flag: --acgan-projection)" if fam.name == "acgan" else ""))
    k = opts.latent_categories
    if k and (fam.conditional or not fam.conv_discriminator):
        raise ConfigError(f"--latent-categories needs an unconditional family with a convolutional discriminator "
                          f"(dcgan, wgan-gp), not --family {fam.name}")
    if k and not 2 <= k <= opts.z_dim:
        raise ConfigError(f"--latent-categories must be 0 (none) or 2–{opts.z_dim} (--z-dim), got {k}")
    if opts.self_condition and not (k and fam.objective in ("gan", "wgan-gp")):
        raise ConfigError(f"--self-condition needs --latent-categories K and an unconditional GAN (--family dcgan "
                          f"or wgan-gp), not --family {fam.name}" + ("" if k else " without --latent-categories"))
    if opts.recluster_every and not opts.self_condition:
        raise ConfigError("--recluster-every re-clusters a self-conditioned GAN's training images: it needs "
                          "--self-condition")


class Trainer:
    """Holds the networks and optimisers of one run; ``step`` does one optimisation step."""

    def __init__(self, cfg: TrainConfig, fam: Family, data: ImageData, d: Dist, device: torch.device) -> None:
        self.cfg, self.fam, self.data, self.dist, self.device = cfg, fam, data, d, device
        self.num_classes = len(data.class_names)
        check_discriminator_options(cfg, fam)
        opts = ArchOptions(cfg.z_dim, self.num_classes, cfg.channels, cfg.resolution, cfg.width, cfg.upsample, cfg.bn,
                           cfg.minibatch_std, cfg.spectral_norm, cfg.acgan_projection or cfg.cgan_projection,
                           cfg.latent_categories, cfg.self_condition, cfg.recluster_every > 0)
        self.g_class, self.g_kwargs, aux = fam.build(opts)
        torch.manual_seed(cfg.seed)  # identical init on every rank
        self.g_raw = build_generator(self.g_class, self.g_kwargs).to(device)
        self.d_raw = aux.to(device)
        if cfg.channels_last:
            self.g_raw = self.g_raw.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            self.d_raw = self.d_raw.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.augment = parse_policy(cfg.diffaugment)  # --diffaugment: transforms of every D input
        self.g_source: GeneratorSource | None = None  # --init-g-from: the checkpoint G started from
        self.ema = EMA(self.g_raw, cfg.ema_decay)
        betas = (cfg.beta1, cfg.beta2)
        if fam.objective in ("vae", "ae"):
            params = list(self.g_raw.parameters()) + list(self.d_raw.parameters())
            self.opt_g = torch.optim.Adam(params, lr=cfg.lr_g, betas=betas)
            self.opt_d = None
        else:
            self.opt_g = torch.optim.Adam(self.g_raw.parameters(), lr=cfg.lr_g, betas=betas)
            self.opt_d = torch.optim.Adam(self.d_raw.parameters(), lr=cfg.lr_d, betas=betas)
        self.g: nn.Module = self.g_raw
        self.d: nn.Module = self.d_raw
        if d.world > 1:
            ids = [device.index] if device.type == "cuda" else None
            if fam.objective in ("vae", "ae"):
                self.pair: nn.Module = DDP(_AutoEncoder(self.d_raw, self.g_raw), device_ids=ids)
            else:
                self.g, self.d = DDP(self.g_raw, device_ids=ids), DDP(self.d_raw, device_ids=ids)
        elif fam.objective in ("vae", "ae"):
            self.pair = _AutoEncoder(self.d_raw, self.g_raw)
        self.step_count = 0
        # --self-condition: each training image's cluster, D's label for it (kept in the resume state).
        self.clusters: torch.Tensor | None = None
        if cfg.self_condition:
            from training.clusters import cluster_labels

            self.clusters = cluster_labels(data.images, cfg.latent_categories, cfg.seed)

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
                                         self.cfg.latent_categories)).long()
        if self.dist.world > 1:
            synced = new.to(self.device)
            dist.broadcast(synced, 0)
            new = synced.cpu()
        moved = float((new != self.clusters).float().mean())
        self.clusters = new
        return moved

    def init_g_from(self, folder: Path, class_names: list[str]) -> None:
        """Start G (and its average) from a checkpoint's generator: a fine-tune; D starts afresh. The
        checkpoint must have this run's generator architecture and, for a conditional G, its classes (its
        label k must mean this dataset's class k; an unconditional checkpoint records none). Every rank
        loads the same file, so DDP replicas start equal."""
        from training.checkpoint import load_generator

        try:
            source, scfg = load_generator(folder)
        except (OSError, ValueError) as e:  # CheckpointError is a ValueError
            raise ConfigError(f"--init-g-from {folder}: {e}") from e
        if (scfg.generator.class_name, scfg.generator.kwargs) != (self.g_class, self.g_kwargs):
            raise ConfigError(f"--init-g-from {folder}: its generator is {scfg.generator.class_name} "
                              f"{scfg.generator.kwargs}, this run's is {self.g_class} {self.g_kwargs}")
        if self.fam.conditional and scfg.class_names != class_names:
            raise ConfigError(f"--init-g-from {folder}: its classes {scfg.class_names} are not this dataset's "
                              f"{class_names}")
        self.g_raw.load_state_dict(source.state_dict())  # copy_ casts float16 weights to this G's dtype
        self.ema.model.load_state_dict(self.g_raw.state_dict())
        self.g_source = GeneratorSource(folder=str(folder), name=scfg.name, generator_sha256=scfg.generator_sha256,
                                        command=scfg.training.command, epochs=scfg.training.epochs,
                                        seconds=scfg.training.seconds)

    # -- state for --resume -------------------------------------------------------------

    def state(self, epoch: int, seconds: float, images_seen: int,
              evaluations: list[dict[str, Any]] | None = None,
              parts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        return {
            "epoch": epoch, "step": self.step_count, "seconds": seconds, "images_seen": images_seen,
            "evaluations": json.dumps(evaluations or []), "parts": json.dumps(parts or []),
            "config": json.dumps(self.cfg.to_json(), sort_keys=True),
            "G": self.g_raw.state_dict(), "D": self.d_raw.state_dict(), "G_ema": self.ema.model.state_dict(),
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict() if self.opt_d else {},
            "rng": torch.get_rng_state(), "g_source": self.g_source.model_dump_json() if self.g_source else "",
            **({"clusters": self.clusters} if self.clusters is not None else {}),
        }

    def load_state(self, st: dict[str, Any]) -> None:
        saved = st.get("g_source")  # where the run's G started, as it was then
        self.g_source = GeneratorSource.model_validate_json(saved) if saved and saved != "null" else None
        self.g_raw.load_state_dict(st["G"])
        self.d_raw.load_state_dict(st["D"])
        self.ema.model.load_state_dict(st["G_ema"])
        self.opt_g.load_state_dict(st["opt_g"])
        if self.opt_d is not None:
            self.opt_d.load_state_dict(st["opt_d"])
        # Adam's moments carry over; its settings are this command line's (load_state_dict brings back the
        # saved lr and betas, which would silently ignore e.g. `--resume --lr-g 5e-5` to anneal a run).
        for group, lr in self._param_groups():
            group["lr"], group["betas"] = lr, (self.cfg.beta1, self.cfg.beta2)
        torch.set_rng_state(st["rng"])
        self.step_count = int(st["step"])
        if self.clusters is not None and "clusters" in st:
            self.clusters = st["clusters"].cpu()

    def set_epoch_rates(self, epoch: int) -> float:
        """Both optimisers' learning rates for epoch ``epoch`` (0-based) under --lr-decay-epochs; returns
        the factor applied to --lr-g and --lr-d. Set at every epoch's start, so a resumed run (even one
        resumed with another --epochs or --lr-decay-epochs) is on the schedule its command line says."""
        factor = lr_factor(epoch, self.cfg.epochs, self.cfg.lr_decay_epochs)
        for group, lr in self._param_groups():
            group["lr"] = lr * factor
        return factor

    def _param_groups(self) -> Iterator[tuple[dict[str, Any], float]]:
        """Every optimiser parameter group with its command line's rate (--lr-g for G's, --lr-d for D's)."""
        for opt, lr in ((self.opt_g, self.cfg.lr_g), (self.opt_d, self.cfg.lr_d)):
            for group in opt.param_groups if opt is not None else ():
                yield group, lr

    # -- one step -------------------------------------------------------------------------

    def _labels(self, b: int) -> torch.Tensor | None:
        if not self.fam.conditional:
            return None
        return torch.randint(0, self.num_classes, (b,), device=self.device)

    def _z(self, b: int) -> torch.Tensor:
        return torch.randn(b, self.cfg.z_dim, device=self.device)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """One optimisation step on a real batch x (B, C, H, W) in [-1, 1] with labels y (B,)."""
        obj = self.fam.objective
        out = {"gan": self._step_gan, "acgan": self._step_gan, "wgan-gp": self._step_wgan,
               "vae": self._step_vae, "ae": self._step_ae}[obj](x, y)
        self.step_count += 1
        self.ema.update(self.g_raw, self.step_count)
        return out

    def _judge(self, images: torch.Tensor, labels: torch.Tensor | None,
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

    def _code(self, z: torch.Tensor) -> torch.Tensor | None:
        """--latent-categories: the categorical code G reads from each latent (B,); else None."""
        return latent_code(z, self.cfg.latent_categories) if self.cfg.latent_categories else None

    def _step_gan(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg, b = self.cfg, x.shape[0]
        y_real = y if self.fam.conditional or cfg.self_condition else None  # self-conditioned: y is the cluster
        y_fake = self._labels(b)
        z = self._z(b)
        code = self._code(z)
        fake = self.g(z, y_fake)  # (B, C, H, W), one G forward per step (DDP-safe)
        acgan = self.fam.objective == "acgan"
        w_fake = cfg.acgan_fake_class_weight if acgan else cfg.info_weight  # D's (Q's) second-head weights
        w_g = cfg.acgan_g_class_weight if acgan else cfg.info_weight
        if cfg.self_condition:  # D is told each fake's code as its label; there is no Q head to train
            y_fake, code = code, None
        assert self.opt_d is not None
        hinge = cfg.loss == "hinge"
        t_real, t_fake = losses.d_targets(b, self.device, cfg.label_smoothing, cfg.noisy_labels)
        # D step: real and fake each get their own forward and backward (as pytorch/examples dcgan).
        self.d_raw.requires_grad_(True)
        self.opt_d.zero_grad(set_to_none=True)
        x_in = x.detach().requires_grad_(True) if cfg.r1_gamma else x
        loss_r, adv_r = self._judge(x_in, y_real, losses.d_hinge_real if hinge else lambda a: losses.bce(a, t_real))
        if cfg.r1_gamma:
            r1 = losses.r1_penalty(adv_r, x_in)
            loss_r = loss_r + cfg.r1_gamma / 2 * r1
        loss_r.backward()
        loss_f, adv_f = self._judge(fake.detach(), y_fake,
                                    losses.d_hinge_fake if hinge else lambda a: losses.bce(a, t_fake), w_fake, code)
        loss_f.backward()
        self.opt_d.step()
        # G step: D frozen and out of DDP's gradient sync.
        self.d_raw.requires_grad_(False)
        self.opt_g.zero_grad(set_to_none=True)
        with self.d.no_sync() if isinstance(self.d, DDP) else contextlib.nullcontext():
            loss_g, _ = self._judge(fake, y_fake, losses.g_hinge if hinge else losses.g_nonsaturating, w_g, code)
        loss_g.backward()
        self.opt_g.step()
        out = {"loss_d": (loss_r + loss_f).detach(), "loss_g": loss_g.detach(),
               "d_real": torch.sigmoid(adv_r.detach()).mean(), "d_fake": torch.sigmoid(adv_f.detach()).mean()}
        if cfg.r1_gamma:
            out["r1"] = r1.detach()
        return out

    def _step_wgan(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg, b = self.cfg, x.shape[0]
        assert self.opt_d is not None
        self.d_raw.requires_grad_(True)
        sc = cfg.self_condition  # y is each real image's cluster
        with torch.no_grad():
            z = self._z(b)
            if sc:  # each fake gets its real partner's cluster as its code, so that the penalty's
                # interpolate between the two is judged with the one label both share
                z = with_code(z, y, cfg.latent_categories)
            fake = self.g_raw(z, None)
        code = self._code(z)
        self.opt_d.zero_grad(set_to_none=True)
        # With --diffaugment the penalty is taken between the augmented images, the ones the critic judges.
        labels = y.repeat(3) if sc else None  # real, fake, interpolate: one critic pass (gradient_penalty)
        real_s, fake_s, gp = losses.gradient_penalty(lambda t: _scores(self.d(t, labels)),
                                                     diff_augment(x, self.augment), diff_augment(fake, self.augment))
        loss_d = losses.critic_wasserstein(real_s, fake_s) + cfg.gp_weight * gp
        if code is not None and not sc:  # InfoGAN: Q (the critic's second head) learns to recover the code
            loss_d = loss_d + self._info_loss(fake, code)
        loss_d.backward()
        self.opt_d.step()
        out = {"loss_d": loss_d.detach(), "gp": gp.detach(), "w_dist": (real_s.mean() - fake_s.mean()).detach()}
        # One generator step every n_critic critic steps.
        if (self.step_count + 1) % cfg.n_critic == 0:
            self.d_raw.requires_grad_(False)
            self.opt_g.zero_grad(set_to_none=True)
            sync = self.d.no_sync() if isinstance(self.d, DDP) else contextlib.nullcontext()
            with sync:
                z = self._z(b)
                code = self._code(z)
                # one critic forward: score [, Q]; self-conditioned, the critic is told each fake's code
                judged = self.d(diff_augment(self.g(z, None), self.augment), code if sc else None)
                loss_g = losses.g_wasserstein(_scores(judged))
                if code is not None and not sc:
                    loss_g = loss_g + self.cfg.info_weight * losses.class_loss(judged[1], code)
            loss_g.backward()
            self.opt_g.step()
            out["loss_g"] = loss_g.detach()
        return out

    def _info_loss(self, fake: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """λ × the cross-entropy of Q's guess of each generated image's latent code (InfoGAN)."""
        _, q = self.d(diff_augment(fake, self.augment))
        return self.cfg.info_weight * losses.class_loss(q, code)

    def _step_vae(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        self.opt_g.zero_grad(set_to_none=True)
        recon, mu, logvar = self.pair(x)
        loss, rec, kl = losses.vae_elbo(recon, x, mu, logvar, self.cfg.kl_weight)
        loss.backward()
        self.opt_g.step()
        return {"loss": loss.detach(), "recon": rec.detach(), "kl": kl.detach()}

    def _step_ae(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        self.opt_g.zero_grad(set_to_none=True)
        recon, _, _ = self.pair(x)
        loss = losses.reconstruction(recon, x)
        loss.backward()
        self.opt_g.step()
        return {"loss": loss.detach()}

    def pretrain_classifier_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """ACGAN trick from the seed article: fit D's class head on real images before the GAN game."""
        assert self.opt_d is not None
        self.d_raw.requires_grad_(True)
        self.opt_d.zero_grad(set_to_none=True)
        _, cls = self.d(diff_augment(x, self.augment), y)
        loss = losses.class_loss(cls, y)
        loss.backward()
        self.opt_d.step()
        return {"loss_cls": loss.detach(), "acc": (cls.argmax(1) == y).float().mean()}


def lr_factor(epoch: int, epochs: int, decay_epochs: int) -> float:
    """--lr-decay-epochs N (CycleGAN's schedule): the rates hold for the first ``epochs − N`` epochs, then
    fall linearly, N/(N+1), (N−1)/(N+1), … 1/(N+1) of the set rate in the last N — towards 0, never 0."""
    into = epoch - (epochs - decay_epochs) + 1  # 1 in the first decaying epoch
    return 1.0 if decay_epochs <= 0 or into <= 0 else 1.0 - into / (decay_epochs + 1)


def _scores(out: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """A discriminator's real/fake logits or critic scores (B,), without its second head's output."""
    return out[0] if isinstance(out, tuple) else out


class _AutoEncoder(nn.Module):
    """Encoder + decoder as one module, so DDP wraps one forward/backward per step."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.z_dim: int = decoder.z_dim  # type: ignore[assignment]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        z_dim = self.z_dim
        if h.shape[1] == 2 * z_dim:  # VAE: (mu, log σ²), reparameterised sample
            mu, logvar = h[:, :z_dim], h[:, z_dim:].clamp(-10, 10)
            z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
            return self.decoder(z, None), mu, logvar
        return self.decoder(h, None), h, torch.zeros_like(h)


# --- the run -------------------------------------------------------------------------------


def checkpoint_config(cfg: TrainConfig, trainer: Trainer, data: ImageData, epochs_done: int, seconds: float,
                      images_seen: int, world: int, commit: str | None,
                      evaluations: list[dict[str, Any]] | None = None,
                      parts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """config.json of the weights after ``epochs_done`` epochs. ``parts``: the run's command lines so far, each
    with the epoch it took over at; those that trained these weights are recorded (a resumed run that had
    nothing left to train writes the weights its earlier commands made)."""
    fam = trainer.fam
    conditional = fam.conditional
    generator: dict[str, Any] = {"class": trainer.g_class, "kwargs": trainer.g_kwargs}
    description, z_dim = fam.description, cfg.z_dim
    credit = DATASET_CREDITS.get(cfg.dataset)
    if cfg.expost_gmm:  # the decoder inside the mixture sampler (training/models/expost.py)
        generator = {"class": "ExPostGenerator", "kwargs": {"decoder": generator, "components": cfg.expost_gmm}}
        description += (f", sampled through a {cfg.expost_gmm}-component Gaussian mixture fitted to its encoder's "
                        "codes (ex-post density estimation)")
        z_dim += 1
    if credit:  # the images' licences ask for it (docs/emoji.md)
        description += f". {credit}"
    return {
        "name": cfg.name,
        "family": cfg.family,
        "description": description,
        "generator": generator,
        "z_dim": z_dim,
        "num_classes": len(data.class_names) if conditional else 0,
        "class_names": data.class_names if conditional else [],
        "image": {"channels": cfg.channels, "height": cfg.resolution, "width": cfg.resolution},
        "sampleable": fam.sampleable,
        "dataset": {"name": cfg.dataset, "num_images": len(data), "class_names": data.class_names},
        "training": {
            "command": cfg.command, "epochs": epochs_done, "seconds": round(seconds, 3), "seed": cfg.seed,
            "git_commit": commit, "images_seen": images_seen, "world_size": world,
            "options": {k: v for k, v in cfg.to_json().items() if k not in ("command", "extra")},
            "evaluations": list(evaluations or []),
            "init_g_from": trainer.g_source.model_dump() if trainer.g_source else None,
            "parts": [p for p in parts or [] if p["from_epoch"] is None or p["from_epoch"] < epochs_done],
        },
    }


# Metrics kept per evaluation in training.evaluations (the full set of the last one goes to "metrics").
EVAL_KEYS = ("fid", "fid_floor", "accuracy", "coverage", "memorization_fraction", "modes_covered",
             "kl_to_uniform", "checkerboard_ratio")


def evaluate_during_training(cfg: TrainConfig, out_dir: Path, epochs_done: int, seconds: float, images_seen: int,
                             device: torch.device, conditional: bool, evaluations: list[dict[str, Any]],
                             writer: Any) -> None:
    """``--eval-every``: measure the checkpoint just written, append to ``evaluations`` and config.json."""
    from training.checkpoint import update_metrics
    from training.evaluation.bars import MIN_SAMPLES, check
    from training.evaluation.evaluate import evaluate_checkpoint

    t0 = time.perf_counter()
    metrics, evaluator_sha = evaluate_checkpoint(out_dir, num_samples=cfg.eval_samples, seed=0, device=device)
    per_class = metrics.get("accuracy_per_class") or {}
    bars = check(metrics, conditional)
    entry: dict[str, Any] = {"epoch": epochs_done, "seconds": round(seconds, 1), "images_seen": images_seen,
                             **{k: metrics.get(k) for k in EVAL_KEYS if metrics.get(k) is not None}}
    if per_class:
        entry["min_class_accuracy"] = min(v for v in per_class.values() if v is not None)
    entry["bars"] = bars
    entry["bars_cleared"] = bool(bars) and all(v is True for v in bars.values())
    evaluations.append(entry)
    update_metrics(out_dir, metrics, evaluator_sha, evaluations)
    if writer is not None:
        for k, v in entry.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("epoch", "seconds"):
                writer.add_scalar(f"eval/{k}", v, epochs_done)
    log.info("evaluation at epoch %d (%.0f s, %d samples): %s; bars %s", epochs_done, time.perf_counter() - t0,
             cfg.eval_samples, ", ".join(f"{k} {v:.3f}" for k, v in entry.items()
                                         if k in ("fid", "accuracy", "min_class_accuracy", "coverage",
                                                  "kl_to_uniform") and v is not None),
             "all cleared" if entry["bars_cleared"] else
             f"not judged (fewer than {MIN_SAMPLES} samples)" if all(v is None for v in bars.values()) else
             "missed: " + ", ".join(k for k, v in bars.items() if v is not True))


def train(cfg: TrainConfig) -> CheckpointConfig | None:
    """Train ``cfg.family`` on ``cfg.dataset``; rank 0 returns the written checkpoint's config."""
    cfg = cfg.resolved()
    d, device = setup_distributed(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    fam = get_family(cfg.family)
    data = load_dataset(cfg.dataset, "train", cfg.resolution, cfg.channels, cfg.data_dir, cfg.synthetic_size,
                        list(cfg.classes) if cfg.classes is not None else None)
    if len(data) < cfg.batch_size * d.world:
        raise ConfigError(f"--batch-size {cfg.batch_size} × {d.world} process(es) is larger than the dataset "
                         f"({len(data)} images)")
    if cfg.expost_gmm > len(data):  # found now, not after an epoch when the first checkpoint is written
        raise ConfigError(f"--expost-gmm {cfg.expost_gmm} is more mixture components than the dataset's "
                          f"{len(data)} images, whose codes it is fitted to: use at most {len(data)}")
    trainer = Trainer(cfg, fam, data, d, device)
    commit = git_commit()  # the code this run started from, even if HEAD moves while it trains
    run_dir, out_dir = Path(cfg.run_dir), Path(cfg.out)
    start_epoch, seconds, images_seen = 0, 0.0, 0
    evaluations: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []  # the command lines of this run, one more per --resume with another one
    state_path = run_dir / STATE
    if cfg.extra.get("resume") and state_path.exists():
        st = torch.load(state_path, map_location=device, weights_only=True)
        saved = json.loads(st["config"])
        defaults = TrainConfig(family="", dataset="", out="").to_json()  # for keys older runs did not save
        for key in ARCH_KEYS:
            was = saved.get(key, defaults[key])
            if was != cfg.to_json().get(key):
                raise ConfigError(f"--resume: run folder {run_dir} was trained with {key}={was!r}, "
                                 f"not {cfg.to_json().get(key)!r}")
        trainer.load_state(st)
        start_epoch, seconds, images_seen = int(st["epoch"]), float(st["seconds"]), int(st["images_seen"])
        evaluations = json.loads(st.get("evaluations", "[]"))
        # (a state saved before the parts were recorded: its last command, from an unknown epoch)
        parts = json.loads(st["parts"]) if "parts" in st else [{"command": saved.get("command", ""),
                                                                  "from_epoch": None}]
        if d.main:
            log.info("resumed from %s at epoch %d (step %d)", state_path, start_epoch, trainer.step_count)
    elif cfg.extra.get("resume") and d.main:
        log.info("--resume: no %s yet, starting from scratch", state_path)
    if not parts or parts[-1]["command"] != cfg.command:  # a resume with the same command line goes on with it
        parts.append({"command": cfg.command, "from_epoch": start_epoch})
    if cfg.init_g_from and start_epoch == 0 and trainer.step_count == 0:  # a resumed run's G is in its state
        trainer.init_g_from(Path(cfg.init_g_from), data.class_names)

    writer = None
    if d.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "grids").mkdir(exist_ok=True)
        (run_dir / "options.json").write_text(json.dumps(cfg.to_json(), indent=2) + "\n")
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(run_dir / "tb"))
    grid_z, grid_y = fixed_grid_inputs(cfg, len(data.class_names), fam.conditional)
    sampler: DistributedSampler[int] = DistributedSampler(
        _Indices(len(data)), num_replicas=d.world, rank=d.rank, shuffle=True, seed=cfg.seed)
    images = data.images.to(device)
    labels = (data.labels if trainer.clusters is None else trainer.clusters).to(device)
    steps_per_epoch = len(sampler) // cfg.batch_size

    def save_state(epoch: int) -> None:
        if not d.main:
            return
        buf = io.BytesIO()
        torch.save(trainer.state(epoch, seconds, images_seen, evaluations, parts), buf)
        atomic_write_bytes(state_path, buf.getvalue())

    def epoch_grid(epochs_done: int, generator: nn.Module | None = None) -> bytes:
        """The fixed-latent sample grid of the EMA generator (or of ``generator``, the checkpoint's when it is
        not the EMA decoder itself): into runs/…/grids and TensorBoard."""
        if generator is None or generator is trainer.ema.model:
            grid = render_grid(trainer.ema.model, grid_z, grid_y, cfg.grid_cols, device)
        else:  # the same seeds through the served generator's own latent size
            z = latents(list(range(grid_z.shape[0])), int(generator.z_dim))  # type: ignore[arg-type]
            grid = render_grid(generator, z, grid_y, cfg.grid_cols, device)
        atomic_write_bytes(run_dir / "grids" / f"epoch_{epochs_done:04d}.png", grid)
        if writer is not None:
            arr = np.asarray(Image.open(io.BytesIO(grid)).convert("RGB"))
            writer.add_image("samples_ema", arr, epochs_done, dataformats="HWC")
        return grid

    def settle_average() -> None:
        """The averaged generator's batch-norm statistics, re-estimated for its own weights: before it is
        drawn, saved or measured (a sampled model's only; an autoencoder's decoder is fed encodings)."""
        if d.main and fam.sampleable:
            trainer.ema.standing_stats(cfg.z_dim, len(data.class_names) if fam.conditional else 0, device, cfg.seed)

    fitted: dict[int, nn.Module] = {}  # --expost-gmm: the step count → the mixture sampler fitted then

    def served() -> nn.Module:
        """The generator a checkpoint holds: the EMA generator, or with --expost-gmm the EMA decoder inside
        the mixture fitted to the encoder's codes now (once per step count: a --keep-best candidate and the
        --out copy of the same weights share one fit), with batch-norm statistics for the mixture's codes."""
        if not cfg.expost_gmm:
            return trainer.ema.model
        if trainer.step_count not in fitted:
            from training.expost import expost_generator

            t0 = time.perf_counter()
            g = expost_generator(trainer.ema.model, {"class": trainer.g_class, "kwargs": trainer.g_kwargs},
                                 trainer.d_raw, data.images, cfg.expost_gmm, cfg.seed, device)
            standing_stats(g, g.z_dim, 0, device, cfg.seed)
            fitted.clear()
            fitted[trainer.step_count] = g
            log.info("--expost-gmm: a %d-component mixture fitted to the encoder's codes in %.0f s", cfg.expost_gmm,
                     time.perf_counter() - t0)
        return fitted[trainer.step_count]

    def save_outputs(epochs_done: int, folder: Path = out_dir) -> CheckpointConfig | None:
        if not d.main:
            return None
        generator = served()
        grid = epoch_grid(epochs_done, generator)
        config = checkpoint_config(cfg, trainer, data, epochs_done, seconds, images_seen, d.world, commit,
                                   evaluations, parts)
        return save_checkpoint(folder, generator, config, grid, cfg.save_dtype)

    def keep_if_best(epochs_done: int) -> CheckpointConfig:
        """``--keep-best``: write and measure this epoch's weights beside the run; they replace the --out
        checkpoint only if they measure better. When --out holds this run's weights and the run goes on
        with the recipe that made them, its config gets the run's whole evaluation history either way;
        a checkpoint of another run (e.g. a new recipe trying to beat the shipped one), or of this run
        before a resume with other rates or losses, is left exactly as it was until it is beaten — its
        history must not list evaluations of a recipe its config does not record."""
        candidate = run_dir / "candidate"
        save_outputs(epochs_done, candidate)
        evaluate_during_training(cfg, candidate, epochs_done, seconds, images_seen, device, fam.conditional,
                                 evaluations, writer)
        measured = read_config(candidate)
        new = keep_best_value(measured.metrics, cfg.keep_best)
        old = read_config(out_dir) if (out_dir / "config.json").exists() else None
        kept = None if old is None else keep_best_value(old.metrics, cfg.keep_best)
        higher = KEEP_BEST[cfg.keep_best]
        if old is None or kept is None or (new is not None and (new > kept if higher else new < kept)):
            save_outputs(epochs_done)  # the same weights as the candidate's
            was = "nothing" if old is None else f"epoch {old.training.epochs}" + (
                "" if kept is None else f" ({kept:.4g})")
            log.info("--keep-best %s: epoch %d (%s) replaces %s", cfg.keep_best, epochs_done,
                     "—" if new is None else f"{new:.4g}", was)
            return update_metrics(out_dir, measured.metrics, measured.evaluator_sha256, evaluations)
        log.info("--keep-best %s: epoch %d (%s) does not beat epoch %d (%.4g): kept", cfg.keep_best, epochs_done,
                 "—" if new is None else f"{new:.4g}", old.training.epochs, kept)
        history = old.training.evaluations
        if not history or evaluations[: len(history)] != history:  # another run's weights: not our history
            return old
        now = cfg.to_json()
        defaults = TrainConfig.__dataclass_fields__
        # (an option the old config predates counts as its default)
        changed = [k for k in RECIPE_KEYS if old.training.options.get(k, defaults[k].default) != now.get(k)]
        if changed:
            log.info("--keep-best: %s's config is left as it is: this run was resumed with another %s",
                     out_dir, ", ".join(changed))
            return old
        return update_metrics(out_dir, {}, old.evaluator_sha256, evaluations)

    if cfg.pretrain_d_epochs and start_epoch == 0 and trainer.step_count == 0:
        if fam.objective != "acgan":
            raise ConfigError("--pretrain-d-epochs needs a discriminator with a class head (--family acgan)")
        for epoch in range(cfg.pretrain_d_epochs):
            sampler.set_epoch(10_000 + epoch)
            for idx in batches(data, sampler, cfg.batch_size):
                m = trainer.pretrain_classifier_step(to_float(images[idx]), labels[idx])
            if d.main:
                log.info("D-classifier pretraining epoch %d: loss %.3f, acc %.3f", epoch + 1,
                         m["loss_cls"].item(), m["acc"].item())

    result: CheckpointConfig | None = None
    epoch = completed = start_epoch
    try:
        for epoch in range(start_epoch, cfg.epochs):
            sampler.set_epoch(epoch)
            rate_factor = trainer.set_epoch_rates(epoch)
            if cfg.recluster_every and epoch and epoch % cfg.recluster_every == 0:
                moved = trainer.recluster(images)
                labels = trainer.clusters.to(device)  # type: ignore[union-attr]
                if d.main:
                    log.info("re-clustered the training images on D's features: %.1f %% moved", 100 * moved)
                if writer is not None:
                    writer.add_scalar("train/recluster_moved", moved, trainer.step_count)
            if writer is not None and cfg.lr_decay_epochs:
                writer.add_scalar("train/lr_factor", rate_factor, trainer.step_count)
            t0 = time.perf_counter()
            bar = None
            if d.main and cfg.progress:
                from tqdm import tqdm

                bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step",
                           leave=False, dynamic_ncols=True)
            for i, idx in enumerate(batches(data, sampler, cfg.batch_size)):
                x = to_float(images[idx])
                if data.flip:  # random horizontal flip of half the batch
                    flip = torch.rand(x.shape[0], device=device) < 0.5
                    x = torch.where(flip[:, None, None, None], x.flip(3), x)
                if cfg.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                metrics = trainer.step(x, labels[idx])
                images_seen += x.shape[0] * d.world
                if (i + 1) % cfg.log_every == 0 or i + 1 == steps_per_epoch:
                    vals = {k: float(v) for k, v in metrics.items()}  # one sync per log_every steps
                    rate = (i + 1) * x.shape[0] * d.world / (time.perf_counter() - t0)
                    if bar is not None:
                        bar.set_postfix({**{k: f"{v:.3f}" for k, v in vals.items()}, "img/s": f"{rate:.0f}"})
                    if writer is not None:
                        for k, v in vals.items():
                            writer.add_scalar(f"train/{k}", v, trainer.step_count)
                        writer.add_scalar("train/images_per_s", rate, trainer.step_count)
                if bar is not None:
                    bar.update(1)
                if cfg.max_steps and trainer.step_count >= cfg.max_steps:
                    break
            if bar is not None:
                bar.close()
            seconds += time.perf_counter() - t0
            completed = epoch + 1
            settle_average()
            if d.main:
                log.info("epoch %d/%d done in %.1fs (%s)", epoch + 1, cfg.epochs, time.perf_counter() - t0,
                         ", ".join(f"{k} {float(v):.3f}" for k, v in metrics.items()))
            measure = cfg.eval_every and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs)
            if cfg.keep_best:  # --out changes only when an evaluation says the new weights are better
                if d.main and measure:
                    result = keep_if_best(epoch + 1)
                elif d.main:
                    epoch_grid(epoch + 1)
            else:
                result = save_outputs(epoch + 1)
                if d.main and measure:
                    evaluate_during_training(cfg, out_dir, epoch + 1, seconds, images_seen, device, fam.conditional,
                                             evaluations, writer)
                    result = read_config(out_dir)
            save_state(epoch + 1)
            if cfg.max_steps and trainer.step_count >= cfg.max_steps:
                break
        if result is None and cfg.keep_best and d.main and (out_dir / "config.json").exists():
            result = read_config(out_dir)  # the best so far stays
        if result is None:  # nothing left to train (resumed a finished run): still write outputs
            before = read_config(out_dir) if d.main and (out_dir / "config.json").exists() else None
            settle_average()
            result = save_outputs(max(epoch, start_epoch))
            if (result is not None and before is not None and before.metrics
                    and before.generator_sha256 == result.generator_sha256):  # the same weights: same measurements
                result = update_metrics(out_dir, before.metrics, before.evaluator_sha256)
        if d.world > 1:
            dist.barrier()  # no rank tears the group down while rank 0 is still writing
    except KeyboardInterrupt:
        # Keep the work: an epoch in progress restarts on --resume, from the current weights.
        save_state(completed)
        if d.main:
            log.warning("interrupted: resume state saved to %s; continue with --resume", state_path)
        raise
    finally:
        if writer is not None:
            writer.close()
        if d.world > 1 and dist.is_initialized():
            dist.destroy_process_group()
    if d.main and result is not None:
        log.info("checkpoint written to %s", out_dir)
    return result if d.main else None

