"""What a run writes (rank 0 only): the per-epoch sample grids, the checkpoint's config.json and files,
--eval-every's evaluations and --keep-best's choice of weights, and TensorBoard's logs."""

from __future__ import annotations

import io
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from training.checkpoint import CheckpointConfig, atomic_write_bytes, read_config, save_checkpoint, update_metrics
from training.data import DATASET_CREDITS, to_float
from training.ema import standing_stats
from training.images import make_grid, png_bytes, to_uint8
from training.latent import latents
from training.options import KEEP_BEST, TrainOptions, keep_best_value
from training.resume import RECIPE_KEYS, Progress

if TYPE_CHECKING:
    from training.data import ImageData
    from training.loop import Trainer

log = logging.getLogger("training")

# How an encoded image addresses a decoder behind an ex-post mixture (training/models/expost.py, latents_of).
EXPOST_ENCODING = ("An encoded image's z is its encoder's mean mapped back through the mixture: z's first entry "
                   "picks the mean's most likely component, the rest is the mean's whitened offset from that "
                   "component (L_k⁻¹(μ − μ_k)), so /generate?z=… draws the decoder's image of the mean")
# Metrics kept per evaluation in training.evaluations (the full set of the last one goes to "metrics").
EVAL_KEYS = ("fid", "fid_floor", "accuracy", "coverage", "memorization_fraction", "modes_covered",
             "kl_to_uniform", "checkerboard_ratio")


def fixed_grid_inputs(opts: TrainOptions, num_classes: int, conditional: bool,
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The fixed noise of the per-epoch grids: seeds 0…cols−1 in every row, one row per class."""
    cols = opts.grid_cols
    rows = num_classes if conditional else cols
    seeds = [c for _ in range(rows) for c in range(cols)] if conditional else list(range(rows * cols))
    z = latents(seeds, opts.z_dim)
    labels = torch.arange(rows).repeat_interleave(cols) if conditional else None
    return z, labels


@torch.no_grad()
def render_grid(g: nn.Module, z: torch.Tensor, labels: torch.Tensor | None, cols: int, device: torch.device) -> bytes:
    was_training = g.training
    g.eval()
    imgs = g(z.to(device), None if labels is None else labels.to(device))
    g.train(was_training)
    return png_bytes(make_grid(to_uint8(imgs), cols))


@torch.no_grad()
def reconstruction_grid(generator: nn.Module, encoder: nn.Module, images: torch.Tensor, cols: int,
                        device: torch.device | str) -> bytes:
    """An autoencoder's sample grid: rows of ``cols`` uint8 images (N, C, H, W), each followed by the row of
    their reconstructions generator(encoder(x)) (both networks in eval mode) → PNG bytes."""
    was_training = generator.training
    generator.eval()
    recon = generator(encoder(to_float(images).to(device)), None)  # (N, C, H, W)
    generator.train(was_training)
    originals = images.permute(0, 2, 3, 1).numpy()  # (N, H, W, C)
    out = to_uint8(recon)
    rows = [block for i in range(0, len(originals), cols) for block in (originals[i:i + cols], out[i:i + cols])]
    return png_bytes(make_grid(np.concatenate(rows), cols))


def checkpoint_config(opts: TrainOptions, trainer: Trainer, data: ImageData, progress: Progress, epochs_done: int,
                      world: int, commit: str | None) -> dict[str, Any]:
    """config.json of the weights after ``epochs_done`` epochs. Of the run's parts (its command lines, each
    with the epoch it took over at), those that trained these weights are recorded (a resumed run that had
    nothing left to train writes the weights its earlier commands made)."""
    fam = trainer.fam
    conditional = fam.conditional
    generator: dict[str, Any] = {"class": trainer.g_class, "kwargs": trainer.g_kwargs}
    description, z_dim = fam.description, opts.z_dim
    if opts.expost_gmm:  # the decoder inside the mixture sampler (training/models/expost.py)
        generator = {"class": "ExPostGenerator", "kwargs": {"decoder": generator, "components": opts.expost_gmm}}
        description += (f", sampled through a {opts.expost_gmm}-component Gaussian mixture fitted to its encoder's "
                        "codes (ex-post density estimation). " + EXPOST_ENCODING)
        z_dim += 1
    translator: dict[str, Any] = {}
    if fam.translator:  # generator(x): what it takes, and no latent
        from training.pairs import input_channels

        z_dim = 0
        translator["input"] = {"channels": input_channels(opts.transform), "height": opts.resolution,
                               "width": opts.resolution, "transform": opts.transform}
        if opts.l1_only:  # no discriminator was trained
            description = (f"pix2pix image-to-image translator: U-Net generator trained on {opts.l1_weight:g}·L1 "
                           "alone (the paper's baseline, no discriminator)")
        description += f"; input: {opts.transform}"
    credit = DATASET_CREDITS.get(opts.dataset)
    if credit:  # the images' licences ask for it (docs/emoji.md)
        description += f". {credit}"
    return {
        "name": opts.name,
        "family": opts.family,
        "description": description,
        "generator": generator,
        "z_dim": z_dim,
        "num_classes": len(data.class_names) if conditional else 0,
        "class_names": data.class_names if conditional else [],
        "image": {"channels": opts.channels, "height": opts.resolution, "width": opts.resolution},
        **translator,
        "sampleable": fam.sampleable,
        "dataset": {"name": opts.dataset, "num_images": len(data), "class_names": data.class_names},
        "training": {
            "command": opts.command, "epochs": epochs_done, "seconds": round(progress.seconds, 3),
            "seed": opts.seed, "git_commit": commit, "images_seen": progress.images_seen, "world_size": world,
            "options": opts.recorded(),
            "evaluations": list(progress.evaluations),
            "init_g_from": trainer.g_source.model_dump() if trainer.g_source else None,
            "parts": [p for p in progress.parts if p["from_epoch"] is None or p["from_epoch"] < epochs_done],
        },
    }


def evaluate_during_training(opts: TrainOptions, out_dir: Path, epochs_done: int, seconds: float,
                             images_seen: int, device: torch.device, conditional: bool,
                             evaluations: list[dict[str, Any]], writer: Any) -> None:
    """``--eval-every``: measure the checkpoint just written, append to ``evaluations`` and config.json."""
    from training.bars import MIN_SAMPLES, check
    from training.evaluation.evaluate import evaluate_checkpoint

    t0 = time.perf_counter()
    metrics, evaluator_sha = evaluate_checkpoint(out_dir, num_samples=opts.eval_samples, seed=0, device=device)
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
             opts.eval_samples, ", ".join(f"{k} {v:.3f}" for k, v in entry.items()
                                          if k in ("fid", "accuracy", "min_class_accuracy", "coverage",
                                                   "kl_to_uniform") and v is not None),
             "all cleared" if entry["bars_cleared"] else
             f"not judged (fewer than {MIN_SAMPLES} samples)" if all(v is None for v in bars.values()) else
             "missed: " + ", ".join(k for k, v in bars.items() if v is not True))


class Outputs:
    """Rank 0's writer of one run: grids into ``runs/<name>/grids`` (and TensorBoard), checkpoints into
    ``--out`` (or, with --keep-best, a candidate beside the run that replaces --out when it measures better)."""

    def __init__(self, opts: TrainOptions, trainer: Trainer, data: ImageData, world: int, commit: str | None,
                 device: torch.device) -> None:
        self.opts, self.trainer, self.data, self.world, self.commit, self.device = (
            opts, trainer, data, world, commit, device)
        self.run_dir, self.out_dir = Path(opts.run_dir), Path(opts.out)
        self.grid_z, self.grid_y = fixed_grid_inputs(opts, len(data.class_names), trainer.fam.conditional)
        self.fitted: dict[int, nn.Module] = {}  # --expost-gmm: the step count → the mixture sampler fitted then
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "grids").mkdir(exist_ok=True)
        (self.run_dir / "options.json").write_text(json.dumps(opts.to_json(), indent=2) + "\n")
        self.writer: Any = None
        if opts.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tb"))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()  # (its thread ends here, before the process group's shutdown)
            self.writer = None

    def scalars(self, values: dict[str, float], step: int, prefix: str = "train") -> None:
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(f"{prefix}/{k}", v, step)

    def grid(self, epochs_done: int, generator: nn.Module | None = None) -> bytes:
        """The fixed-latent sample grid of the EMA generator (or of ``generator``, the checkpoint's when it is
        not the EMA decoder itself): into runs/…/grids and TensorBoard."""
        ema = self.trainer.ema.model
        fam = self.trainer.fam
        if fam.translator:  # held-out pairs, input | output
            grid = self.trainer.objective.render_grid(ema)  # type: ignore[attr-defined]
        elif not fam.sampleable:  # an autoencoder: training images and their reconstructions
            encoder = self.trainer.d_raw
            was_training = encoder.training
            encoder.eval()
            grid = reconstruction_grid(ema, encoder, self.data.images[: 5 * self.opts.grid_cols], self.opts.grid_cols,
                                       self.device)
            encoder.train(was_training)
        elif generator is None or generator is ema:
            grid = render_grid(ema, self.grid_z, self.grid_y, self.opts.grid_cols, self.device)
        else:  # the same seeds through the served generator's own latent size
            z = latents(list(range(self.grid_z.shape[0])), int(generator.z_dim))  # type: ignore[arg-type]
            grid = render_grid(generator, z, self.grid_y, self.opts.grid_cols, self.device)
        atomic_write_bytes(self.run_dir / "grids" / f"epoch_{epochs_done:04d}.png", grid)
        if self.writer is not None:
            arr = np.asarray(Image.open(io.BytesIO(grid)).convert("RGB"))
            self.writer.add_image("samples_ema", arr, epochs_done, dataformats="HWC")
        return grid

    def settle_average(self) -> None:
        """The averaged generator's batch-norm statistics, re-estimated for its own weights: before it is
        drawn, saved or measured (a sampled model's, on latents; a translator's, on training inputs; an
        autoencoder's decoder is fed encodings)."""
        fam, o = self.trainer.fam, self.opts
        if fam.translator:  # on training inputs
            self.trainer.objective.standing_stats(self.trainer.ema.model)  # type: ignore[attr-defined]
        elif fam.sampleable and self.trainer.g_frozen is None:
            self.trainer.ema.standing_stats(o.z_dim, len(self.data.class_names) if fam.conditional else 0,
                                            self.device, o.seed)

    def served(self) -> nn.Module:
        """The generator a checkpoint holds: the EMA generator, or with --expost-gmm the EMA decoder inside
        the mixture fitted to the encoder's codes now (once per step count: a --keep-best candidate and the
        --out copy of the same weights share one fit), with batch-norm statistics for the mixture's codes."""
        t, o = self.trainer, self.opts
        if t.g_frozen is not None:  # --freeze-generator: the given generator, as it was
            return t.g_frozen
        if not o.expost_gmm:
            return t.ema.model
        if t.step_count not in self.fitted:
            from training.expost import expost_generator

            t0 = time.perf_counter()
            g = expost_generator(t.ema.model, {"class": t.g_class, "kwargs": t.g_kwargs}, t.d_raw, self.data.images,
                                 o.expost_gmm, o.seed, self.device)
            standing_stats(g, g.z_dim, 0, self.device, o.seed)
            self.fitted = {t.step_count: g}
            log.info("--expost-gmm: a %d-component mixture fitted to the encoder's codes in %.0f s", o.expost_gmm,
                     time.perf_counter() - t0)
        return self.fitted[t.step_count]

    def save(self, progress: Progress, epochs_done: int, folder: Path | None = None) -> CheckpointConfig:
        generator = self.served()
        grid = self.grid(epochs_done, generator)
        config = checkpoint_config(self.opts, self.trainer, self.data, progress, epochs_done, self.world, self.commit)
        objective = self.trainer.fam.objective  # an autoencoder's or a VAE's second network is its encoder
        encoder = ((self.trainer.d_raw, "mean-logvar" if objective == "vae" else "code")
                   if objective in ("vae", "ae") else None)
        return save_checkpoint(folder or self.out_dir, generator, config, grid, self.opts.save_dtype, encoder)

    def evaluate(self, folder: Path, progress: Progress) -> None:
        evaluate_during_training(self.opts, folder, progress.epoch, progress.seconds, progress.images_seen,
                                 self.device, self.trainer.fam.conditional, progress.evaluations, self.writer)

    def end_of_epoch(self, progress: Progress) -> CheckpointConfig | None:
        """After each epoch: the average settled, then a checkpoint (and an evaluation every --eval-every
        epochs and after the last) — or with --keep-best, the grid, and a candidate at each evaluation."""
        o, done = self.opts, progress.epoch
        self.settle_average()
        measure = o.eval_every and (done % o.eval_every == 0 or done == o.epochs)
        if o.keep_best:  # --out changes only when an evaluation says the new weights are better
            if measure:
                return self.keep_if_best(progress)
            self.grid(done)
            return None
        result = self.save(progress, done)
        if measure:
            self.evaluate(self.out_dir, progress)
            result = read_config(self.out_dir)
        return result

    def keep_if_best(self, progress: Progress) -> CheckpointConfig:
        """``--keep-best``: write and measure this epoch's weights beside the run; they replace the --out
        checkpoint only if they measure better. When --out holds this run's weights and the run goes on
        with the recipe that made them, its config gets the run's whole evaluation history either way;
        a checkpoint of another run (e.g. a new recipe trying to beat the shipped one), or of this run
        before a resume with other rates or losses, is left exactly as it was until it is beaten — its
        history must not list evaluations of a recipe its config does not record."""
        o, out_dir, done, evaluations = self.opts, self.out_dir, progress.epoch, progress.evaluations
        candidate = self.run_dir / "candidate"
        self.save(progress, done, candidate)
        self.evaluate(candidate, progress)
        measured = read_config(candidate)
        new = keep_best_value(measured.metrics, o.keep_best)
        old = read_config(out_dir) if (out_dir / "config.json").exists() else None
        kept = None if old is None else keep_best_value(old.metrics, o.keep_best)
        higher = KEEP_BEST[o.keep_best]
        if old is None or kept is None or (new is not None and (new > kept if higher else new < kept)):
            self.save(progress, done)  # the same weights as the candidate's
            was = "nothing" if old is None else f"epoch {old.training.epochs}" + (
                "" if kept is None else f" ({kept:.4g})")
            log.info("--keep-best %s: epoch %d (%s) replaces %s", o.keep_best, done,
                     "—" if new is None else f"{new:.4g}", was)
            return update_metrics(out_dir, measured.metrics, measured.evaluator_sha256, evaluations)
        log.info("--keep-best %s: epoch %d (%s) does not beat epoch %d (%.4g): kept", o.keep_best, done,
                 "—" if new is None else f"{new:.4g}", old.training.epochs, kept)
        history = old.training.evaluations
        if not history or evaluations[: len(history)] != history:  # another run's weights: not our history
            return old
        now, defaults = o.to_json(), TrainOptions.defaults()
        # (an option the old config predates counts as its default)
        changed = [k for k in RECIPE_KEYS if old.training.options.get(k, defaults[k]) != now.get(k)]
        if changed:
            log.info("--keep-best: %s's config is left as it is: this run was resumed with another %s",
                     out_dir, ", ".join(changed))
            return old
        return update_metrics(out_dir, {}, old.evaluator_sha256, evaluations)

    def final(self, progress: Progress, result: CheckpointConfig | None) -> CheckpointConfig:
        """The checkpoint the run ends with: the last one written, the best so far (--keep-best), or — when
        nothing was left to train (a finished run resumed) — the current weights, written again."""
        if result is None and self.opts.keep_best and (self.out_dir / "config.json").exists():
            result = read_config(self.out_dir)  # the best so far stays
        if result is not None:
            return result
        before = read_config(self.out_dir) if (self.out_dir / "config.json").exists() else None
        self.settle_average()
        result = self.save(progress, progress.epoch)
        if before is not None and before.metrics and before.generator_sha256 == result.generator_sha256:
            result = update_metrics(self.out_dir, before.metrics, before.evaluator_sha256)  # same weights, same numbers
        return result
