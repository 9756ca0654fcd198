"""Images in, measured: what an autoencoder reconstructs and what an encode of a real image recovers.

``evaluate_encoding`` measures a checkpoint on held-out images of its dataset's test split:

* ``reconstruction`` (checkpoints with an encoder: ae, conv-ae, vae): every test image encoded and
  decoded as the service's ``POST /models/{model}/reconstruct`` does (``load_encoder``'s latent
  drawn by the generator), rounded to 8 bits as served; its PSNR to the original (mean and
  median over images) and its pixel MSE in [-1, 1] units.
* ``encoding``: on ``images`` test images (a seeded pick), the image the encoded latent draws — by
  the encoder, or for a GAN generator by projection (``training.projection``, ``steps`` Adam steps,
  the true class given as the label on conditional models) — judged by the dataset's evaluator:
  how often it gives the reconstruction the original's class (``class_accuracy``), how often it
  agrees with its own verdict on the original (``agrees_with_original``; ``evaluator_on_originals`` is
  that verdict's accuracy, the ceiling), and the reconstruction's PSNR.

PSNR = 10·log10(255² / MSE) of the 8-bit images (the same as 10·log10(4 / MSE) in [-1, 1] units).
``python -m training evaluate-encoding CHECKPOINT`` writes both into config.json's metrics.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.checkpoint import load_encoder, load_generator
from training.data import load_dataset, to_float
from training.evaluation.evaluator import evaluator_for, features_and_logits
from training.images import to_uint8
from training.projection import PROJECTABLE, RESTARTS, project


class EncodingError(ValueError):
    """A checkpoint that has neither an encoder nor a generator projection works on."""


def psnr(reconstructions: torch.Tensor, originals: torch.Tensor) -> np.ndarray:
    """(N,) PSNR in dB of uint8 images (N, C, H, W) against uint8 originals of the same shape."""
    mse = (reconstructions.double() - originals.double()).pow(2).mean(dim=(1, 2, 3)).numpy()
    return 10 * np.log10(255.0**2 / np.maximum(mse, 1e-12))


def _uint8(images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) in [-1, 1] → (B, C, H, W) uint8, rounded as the service rounds."""
    return torch.from_numpy(to_uint8(images)).permute(0, 3, 1, 2)


@torch.inference_mode()
def reconstruct(generator: torch.nn.Module, encoder: torch.nn.Module, images: torch.Tensor, batch_size: int,
                device: str | torch.device) -> torch.Tensor:
    """uint8 images (N, C, H, W) → their uint8 reconstructions generator(encoder(x))."""
    out = [_uint8(generator(encoder(to_float(chunk).to(device)), None)) for chunk in images.split(batch_size)]
    return torch.cat(out)


def project_all(generator: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor | None, z_dim: int,
                steps: int, log: Any = None) -> torch.Tensor:
    """uint8 images (N, C, H, W) → the uint8 images of their projections (one at a time, as the service)."""
    out = []
    t0 = time.perf_counter()
    for i, image in enumerate(images):
        label = None if labels is None else int(labels[i])
        found = project(generator, to_float(image[None]), label, z_dim, steps)
        with torch.inference_mode():
            z = torch.from_numpy(found.z)[None].repeat(RESTARTS, 1)  # as in its batch of starts
            y = None if label is None else torch.full((RESTARTS,), label, dtype=torch.long)
            out.append(_uint8(generator(z, y))[:1])
        if log is not None and (i + 1) % 50 == 0:
            log.info("projected %d/%d images (%.0f s)", i + 1, len(images), time.perf_counter() - t0)
    return torch.cat(out)


def evaluate_encoding(path: str | Path, images: int = 200, steps: int = 100, batch_size: int = 500, seed: int = 0,
                      evaluator_root: str | Path | None = None, device: str | torch.device = "cpu",
                      log: Any = None) -> tuple[dict[str, Any], str]:
    """→ (metrics {"reconstruction"?: …, "encoding": …}, evaluator sha256) of the checkpoint at ``path``."""
    t_start = time.perf_counter()
    generator, cfg = load_generator(path, device)
    has_encoder = cfg.encoder is not None
    if not has_encoder and cfg.family not in PROJECTABLE:
        raise EncodingError(f"{cfg.name} ({cfg.family}) has no encoder (encoder.safetensors), and projection is "
                            f"for GAN generators ({', '.join(PROJECTABLE)})")
    net, ecfg = evaluator_for(cfg.dataset.name, evaluator_root, device)
    names = list(cfg.dataset.class_names)
    missing = [n for n in names if n not in ecfg.class_names]
    if missing:
        raise EncodingError(f"the {ecfg.dataset} evaluator has no class(es) {', '.join(missing)}")
    cols = [ecfg.class_names.index(n) for n in names]  # evaluator logit column of each dataset class
    opts = cfg.training.options
    test = load_dataset(cfg.dataset.name, "test", cfg.image.height, cfg.image.channels, opts.get("data_dir"),
                        opts.get("synthetic_size", 1000), opts.get("classes"))
    if not 1 <= images <= len(test):
        raise EncodingError(f"--images must be in 1…{len(test)} (the test split), got {images}")
    out: dict[str, Any] = {}
    encoder = load_encoder(path, generator, cfg, device) if has_encoder else None
    everything: torch.Tensor | None = None
    if encoder is not None:
        everything = reconstruct(generator, encoder, test.images, batch_size, device)  # (N, C, H, W) uint8
        p = psnr(everything, test.images)
        mse = ((everything.double() - test.images.double()) / 127.5).pow(2).mean().item()
        out["reconstruction"] = {"images": len(test), "split": "test", "psnr": round(float(p.mean()), 3),
                                 "psnr_median": round(float(np.median(p)), 3), "mse": round(mse, 6)}
        if log is not None:
            log.info("reconstruction of %d test images: PSNR %.2f dB", len(test), p.mean())
    pick = torch.from_numpy(np.sort(np.random.RandomState(seed).choice(len(test), images, replace=False)))
    originals, labels = test.images[pick], test.labels[pick]
    if everything is not None:
        recons = everything[pick]
    else:
        given = labels if cfg.conditional else None
        recons = project_all(generator, originals, given, cfg.z_dim, steps, log)
    _, logits_rec = features_and_logits(net, recons, batch_size, device)
    _, logits_orig = features_and_logits(net, originals, batch_size, device)
    pred_rec, pred_orig = logits_rec[:, cols].argmax(1), logits_orig[:, cols].argmax(1)
    y = labels.numpy()
    p = psnr(recons, originals)
    out["encoding"] = {
        "method": "encoder" if encoder is not None else "projection",
        "images": images, "split": "test", "seed": seed,
        "steps": 0 if encoder is not None else steps,
        "label_given": encoder is None and cfg.conditional,
        "class_accuracy": round(float((pred_rec == y).mean()), 4),
        "agrees_with_original": round(float((pred_rec == pred_orig).mean()), 4),
        "evaluator_on_originals": round(float((pred_orig == y).mean()), 4),
        "psnr": round(float(p.mean()), 3),
        "evaluator_sha256": ecfg.weights_sha256,
        "evaluated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    return out, ecfg.weights_sha256
