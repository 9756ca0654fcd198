"""The pix2pix objective (Isola et al. 2017): a conditional GAN on (input, image) pairs plus λ·L1.

D (a PatchGAN) judges each patch of an (input, image) pair real or fake; its loss is halved, as in the
paper, which slows D relative to G. G minimises the non-saturating GAN loss on its pairs plus
``--l1-weight`` λ (100) times the mean absolute difference from the true target. ``--l1-only`` is the
paper's baseline: G trained on λ·L1 alone, D never stepped.

The inputs are made from the targets by ``--transform`` (``training/pairs.py``), once, when the run
starts. The loop hands each step the targets and, in place of labels (a translator judges none), their
indices in the training set, so the step takes each target's own precomputed input.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from training import losses
from training.data import ImageData, load_dataset, to_float
from training.images import make_grid, png_bytes, to_uint8
from training.objectives.base import Objective, no_sync, register_objective, wrap
from training.pairs import make_inputs

if TYPE_CHECKING:
    from training.options import TrainOptions

log = logging.getLogger("training")

GRID_PER_CLASS = 2  # held-out pairs a class gets in samples.png (one row per class: input | output, …)
STANDING_STATS_BATCHES, STANDING_STATS_BATCH_SIZE = 16, 128


@register_objective("pix2pix")
class Pix2PixObjective(Objective):
    options = ("transform", "l1_weight", "l1_only", "lr_d")

    def __init__(self, opts: TrainOptions, g: nn.Module, d: nn.Module, data: ImageData, conditional: bool,
                 world: int, device: torch.device) -> None:
        super().__init__(opts, g, d, data, conditional, world, device)
        self.opt_g = self.adam("g", g.parameters(), opts.lr_g)
        self.g = wrap(g, world, device)
        self.d: nn.Module | None = None
        if not opts.l1_only:  # the baseline has no D to train (it is built, saved and left as initialised)
            self.opt_d = self.adam("d", d.parameters(), opts.lr_d)
            self.d = wrap(d, world, device)
        t0 = time.perf_counter()
        self.inputs = make_inputs(data.images, opts.transform).to(device)  # (N, C_in, H, W) uint8
        log.info("pairs: %s of %d training images in %.1f s", opts.transform, len(data), time.perf_counter() - t0)
        # A dataset trained with random flips (folder:) hands some targets over mirrored: their inputs are
        # mirrored to match, found by comparing with the stored target.
        self.targets = data.images.to(device) if data.flip else None

    def real_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Each training image's index (N,): what ``step`` gets in place of labels, to find its input."""
        return torch.arange(labels.shape[0])

    def pair_inputs(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The inputs (B, C_in, H, W) in [-1, 1] of targets x (B, C, H, W) that are training images ``idx``."""
        inp = to_float(self.inputs[idx])
        if self.targets is not None:
            mirrored = (x != to_float(self.targets[idx])).flatten(1).any(1)  # (B,)
            inp = torch.where(mirrored[:, None, None, None], inp.flip(3), inp)
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            inp = inp.contiguous(memory_format=torch.channels_last)
        return inp

    def step(self, x: torch.Tensor, y: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        o = self.opts
        inp = self.pair_inputs(x, y)  # (B, C_in, H, W)
        fake = self.g(inp)  # (B, C, H, W), one G forward per step (DDP-safe)
        out: dict[str, torch.Tensor] = {}
        if self.d is not None:
            # D step: real and fake pairs, each its own forward; the loss halved (the paper).
            self.d_raw.requires_grad_(True)
            self.opt_d.zero_grad(set_to_none=True)
            real_logits = self.d(inp, x)  # (B, P, P)
            fake_logits = self.d(inp, fake.detach())
            loss_d = 0.5 * (losses.bce(real_logits, torch.ones_like(real_logits))
                            + losses.bce(fake_logits, torch.zeros_like(fake_logits)))
            loss_d.backward()
            self.opt_d.step()
            self.d_raw.requires_grad_(False)
            out.update(loss_d=loss_d.detach(), d_real=torch.sigmoid(real_logits.detach()).mean(),
                       d_fake=torch.sigmoid(fake_logits.detach()).mean())
        # G step: the GAN loss on its pairs (D frozen, out of DDP's sync) + λ·L1 to the true targets.
        self.opt_g.zero_grad(set_to_none=True)
        l1 = (fake - x).abs().mean()
        loss_g = o.l1_weight * l1
        if self.d is not None:
            with no_sync(self.d):
                adv = losses.g_nonsaturating(self.d(inp, fake))
            loss_g = loss_g + adv
            out["loss_g_gan"] = adv.detach()
        loss_g.backward()
        self.opt_g.step()
        out.update(loss_g=loss_g.detach(), l1=l1.detach())
        return out

    # -- what the run writes of a translator (training/outputs.py)

    @torch.no_grad()
    def standing_stats(self, model: nn.Module) -> None:
        """The averaged generator's batch-norm statistics recomputed for its own weights on training inputs
        (as ``training.ema.standing_stats`` does for samplers on latents): train mode, dropout included, as
        the statistics were gathered while it trained. Seeded; the global RNG state is put back."""
        norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not norms:
            return
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches below
        rng = torch.get_rng_state()
        gen = torch.Generator().manual_seed(self.opts.seed)
        model.train()
        try:
            torch.manual_seed(self.opts.seed)  # dropout's masks
            n = self.inputs.shape[0]
            for _ in range(STANDING_STATS_BATCHES):
                idx = torch.randint(0, n, (min(STANDING_STATS_BATCH_SIZE, n),), generator=gen)
                model(to_float(self.inputs[idx.to(self.inputs.device)]))
        finally:
            model.eval()
            torch.set_rng_state(rng)
            for m, momentum in zip(norms, momenta, strict=True):
                m.momentum = momentum

    def held_out_pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The grid's held-out pairs: the first ``GRID_PER_CLASS`` test images of each class → (inputs, targets),
        uint8 (K·n, C_in, H, W) and (K·n, C, H, W)."""
        if not hasattr(self, "_grid_pairs"):
            o = self.opts
            test = load_dataset(o.dataset, "test", o.resolution, o.channels, o.data_dir, o.synthetic_size,
                                list(o.classes) if o.classes is not None else None)
            labels = test.labels.numpy()
            pick = [int(i) for k in range(len(test.class_names))
                    for i in np.flatnonzero(labels == k)[:GRID_PER_CLASS]]
            targets = test.images[torch.as_tensor(pick, dtype=torch.long)]
            self._grid_pairs = (make_inputs(targets, o.transform), targets)
        return self._grid_pairs

    @torch.no_grad()
    def render_grid(self, model: nn.Module) -> bytes:
        """samples.png of a translator: held-out pairs, one row per class, input | output side by side."""
        inputs, _ = self.held_out_pairs()
        was_training = model.training
        model.eval()
        outputs = model(to_float(inputs).to(self.device))
        model.train(was_training)
        return translation_grid(inputs, torch.from_numpy(to_uint8(outputs)).permute(0, 3, 1, 2), GRID_PER_CLASS)


def translation_grid(inputs: torch.Tensor, outputs: torch.Tensor, pairs_per_row: int) -> bytes:
    """uint8 inputs (N, C_in, H, W) and outputs (N, C, H, W) → a PNG grid of input | output pairs."""
    channels = max(inputs.shape[1], outputs.shape[1])

    def hwc(t: torch.Tensor) -> np.ndarray:
        return t.expand(-1, channels, -1, -1).permute(0, 2, 3, 1).numpy()

    tiles = np.stack([hwc(inputs), hwc(outputs)], 1).reshape(-1, *hwc(inputs).shape[1:])  # in, out, in, out, …
    return png_bytes(make_grid(tiles, 2 * pairs_per_row))
