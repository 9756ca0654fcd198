"""The training loop, top to bottom in the order it runs:
options → process group → data → networks and objective → resume → epochs (steps, EMA, logs) → save.

What a step computes is the family's objective (``training/objectives/``); what is written is
``training/outputs.py``; the resume state is ``training/resume.py``. DDP is ``training/distributed.py``:
only rank 0 logs and writes.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DistributedSampler

from training import resume
from training.checkpoint import CheckpointConfig, GeneratorSource
from training.data import ImageData, load_dataset, to_float
from training.distributed import Dist, process_group
from training.ema import EMA
from training.models import ArchOptions, Family, build_generator, get_family
from training.objectives import objective_of
from training.options import ConfigError, TrainOptions, check_environment
from training.outputs import Outputs
from training.resume import Progress

log = logging.getLogger("training")


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


def arch_options(opts: TrainOptions, num_classes: int) -> ArchOptions:
    """The options that make the networks, as every family's builder takes them."""
    from training.pairs import input_channels

    in_channels = input_channels(opts.transform) if get_family(opts.family).translator else 0
    return ArchOptions(opts.z_dim, num_classes, opts.channels, opts.resolution, opts.width, opts.upsample, opts.bn,
                       opts.minibatch_std, opts.spectral_norm, opts.acgan_projection or opts.cgan_projection,
                       opts.latent_categories, opts.self_condition, opts.recluster_every > 0, in_channels)


class Trainer:
    """The networks of one run (G, its second network D — discriminator, critic or encoder — and G's moving
    average), the family's objective that trains them, and the step count; ``step`` trains one batch."""

    def __init__(self, opts: TrainOptions, fam: Family, data: ImageData, d: Dist, device: torch.device) -> None:
        self.opts, self.fam, self.class_names = opts, fam, data.class_names
        torch.manual_seed(opts.seed)  # identical init of G and D on every rank, the same for a seed in every process
        self.g_class, self.g_kwargs, second = fam.build(arch_options(opts, len(data.class_names)))
        self.g_raw: nn.Module = build_generator(self.g_class, self.g_kwargs).to(device)
        self.d_raw: nn.Module = second.to(device)
        if opts.channels_last:
            self.g_raw = self.g_raw.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            self.d_raw = self.d_raw.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.ema = EMA(self.g_raw, opts.ema_decay)
        self.objective = objective_of(fam.name)(opts, self.g_raw, self.d_raw, data, fam.conditional, d.world, device)
        self.g_source: GeneratorSource | None = None  # --init-g-from: the checkpoint G started from
        self.g_frozen: nn.Module | None = None  # --freeze-generator: that checkpoint's generator, shipped as it is
        self.step_count = 0

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """One optimisation step on a real batch x (B, C, H, W) in [-1, 1] with labels y (B,)."""
        out = self.objective.step(x, y, self.step_count)
        self.step_count += 1
        self.ema.update(self.g_raw, self.step_count)
        return out


class _Indices(torch.utils.data.Dataset[int]):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def batches(sampler: DistributedSampler[int], batch_size: int) -> Iterator[torch.Tensor]:
    """Index batches of this rank's shard; the last short batch is dropped (BN needs > 1)."""
    idx = torch.tensor(list(iter(sampler)), dtype=torch.long)
    for start in range(0, len(idx) - batch_size + 1, batch_size):
        yield idx[start : start + batch_size]


def load_data(opts: TrainOptions, d: Dist) -> ImageData:
    data = load_dataset(opts.dataset, "train", opts.resolution, opts.channels, opts.data_dir, opts.synthetic_size,
                        list(opts.classes) if opts.classes is not None else None, background=opts.background)
    if len(data) < opts.batch_size * d.world:
        raise ConfigError(f"--batch-size {opts.batch_size} × {d.world} process(es) is larger than the dataset "
                          f"({len(data)} images)")
    if opts.expost_gmm > len(data):  # found now, not after an epoch when the first checkpoint is written
        raise ConfigError(f"--expost-gmm {opts.expost_gmm} is more mixture components than the dataset's "
                          f"{len(data)} images, whose codes it is fitted to: use at most {len(data)}")
    return data


def pretrain(trainer: Trainer, data: ImageData, sampler: DistributedSampler[int], device: torch.device,
             main: bool) -> None:
    """The objective's pretraining epochs (ACGAN's D classifier), before a fresh run's first epoch."""
    images, labels = data.images.to(device), data.labels.to(device)
    for epoch in range(trainer.objective.pretrain_epochs):
        sampler.set_epoch(10_000 + epoch)
        for idx in batches(sampler, trainer.opts.batch_size):
            m = trainer.objective.pretrain_step(to_float(images[idx]), labels[idx])
        if main:
            log.info("D pretraining epoch %d: %s", epoch + 1, ", ".join(f"{k} {float(v):.3f}" for k, v in m.items()))


def run_epoch(trainer: Trainer, data: ImageData, images: torch.Tensor, labels: torch.Tensor,
              sampler: DistributedSampler[int], epoch: int, d: Dist, outputs: Outputs | None,
              progress: Progress) -> dict[str, torch.Tensor]:
    """One pass over this rank's shard; → the last step's losses. Stops early at --max-steps."""
    o, device = trainer.opts, images.device
    steps_per_epoch = len(sampler) // o.batch_size
    t0 = time.perf_counter()
    bar: Any = None
    if outputs is not None and o.progress:
        from tqdm import tqdm

        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{o.epochs}", unit="step", leave=False,
                   dynamic_ncols=True)
    metrics: dict[str, torch.Tensor] = {}
    for i, idx in enumerate(batches(sampler, o.batch_size)):
        x = to_float(images[idx])  # (B, C, H, W) in [-1, 1]
        if data.flip:  # random horizontal flip of half the batch
            flip = torch.rand(x.shape[0], device=device) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        if o.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        metrics = trainer.step(x, labels[idx])
        progress.images_seen += x.shape[0] * d.world
        if (i + 1) % o.log_every == 0 or i + 1 == steps_per_epoch:
            vals = {k: float(v) for k, v in metrics.items()}  # one sync per log_every steps
            rate = (i + 1) * x.shape[0] * d.world / (time.perf_counter() - t0)
            if bar is not None:
                bar.set_postfix({**{k: f"{v:.3f}" for k, v in vals.items()}, "img/s": f"{rate:.0f}"})
            if outputs is not None:
                outputs.scalars({**vals, "images_per_s": rate}, trainer.step_count)
        if bar is not None:
            bar.update(1)
        if o.max_steps and trainer.step_count >= o.max_steps:
            break
    if bar is not None:
        bar.close()
    progress.seconds += time.perf_counter() - t0
    if d.main:
        log.info("epoch %d/%d done in %.1fs (%s)", epoch + 1, o.epochs, time.perf_counter() - t0,
                 ", ".join(f"{k} {float(v):.3f}" for k, v in metrics.items()))
    return metrics


def train(opts: TrainOptions) -> CheckpointConfig | None:
    """Train ``opts.family`` on ``opts.dataset``; rank 0 returns the written checkpoint's config."""
    check_environment(opts)
    with process_group(opts.device) as (d, device):
        return _train(opts, d, device)


def _train(opts: TrainOptions, d: Dist, device: torch.device) -> CheckpointConfig | None:
    if opts.threads:
        torch.set_num_threads(opts.threads)
    fam = get_family(opts.family)
    data = load_data(opts, d)
    trainer = Trainer(opts, fam, data, d, device)
    commit = git_commit()  # the code this run started from, even if HEAD moves while it trains
    progress = resume.start(opts, trainer, device, d.main)
    state_path = Path(opts.run_dir) / resume.STATE
    outputs = Outputs(opts, trainer, data, d.world, commit, device) if d.main else None
    sampler: DistributedSampler[int] = DistributedSampler(
        _Indices(len(data)), num_replicas=d.world, rank=d.rank, shuffle=True, seed=opts.seed)
    if progress.epoch == 0 and trainer.step_count == 0:
        pretrain(trainer, data, sampler, device, d.main)
    images = data.images.to(device)
    result: CheckpointConfig | None = None
    try:
        for epoch in range(progress.epoch, opts.epochs):
            sampler.set_epoch(epoch)
            rate_factor = trainer.objective.set_epoch_rates(epoch)
            logged = trainer.objective.start_epoch(epoch, images)
            labels = trainer.objective.real_labels(data.labels).to(device)  # (N,): the dataset's, or clusters
            if outputs is not None:
                outputs.scalars({**logged, **({"lr_factor": rate_factor} if opts.lr_decay_epochs else {})},
                                trainer.step_count)
            run_epoch(trainer, data, images, labels, sampler, epoch, d, outputs, progress)
            progress.epoch = epoch + 1
            if outputs is not None:
                result = outputs.end_of_epoch(progress)
                resume.save(state_path, trainer, progress)
            if opts.max_steps and trainer.step_count >= opts.max_steps:
                break
        if outputs is not None:
            result = outputs.final(progress, result)
            log.info("checkpoint written to %s", opts.out)
    except KeyboardInterrupt:
        # Keep the work: an epoch in progress restarts on --resume, from the current weights.
        if d.main:
            resume.save(state_path, trainer, progress)
            log.warning("interrupted: resume state saved to %s; continue with --resume", state_path)
        raise
    finally:
        if outputs is not None:
            outputs.close()
    return result
