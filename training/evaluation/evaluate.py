"""``python -m training evaluate CKPT``: measure a generator checkpoint with its dataset's evaluator.

N samples come from seeds SEED..SEED+N−1 through the seed → latent rule (conditional
models: label i mod K for sample i, so every class gets N/K), quantised to uint8 as
the service serves them. They are compared with the dataset's test split (the
training split for memorisation and for the real-vs-real floors). The result is one
flat JSON object, written into config.json's ``metrics`` by the CLI:

=========================  ================================================================
key                        meaning
=========================  ================================================================
fid, fid_floor             FID in evaluator-feature space of samples vs test; the floor is a
                           random training subset (same count, at most the split's size) vs test
kid, kid_std, kid_floor    KID (cubic polynomial kernel, unbiased, 100 subsets of ≤ 1000)
precision, recall,         Naeem et al. 2020, k = 5, samples vs test features; ``*_floor``:
density, coverage          the same training subset vs test
coverage_per_class,        {class name: coverage of that class's real test images}: which part of
coverage_per_class_floor   the data the samples miss (unconditional models too); floor as above
accuracy                   conditional models: share of samples the evaluator puts in the class
                           they were drawn for (None for unconditional models)
accuracy_per_class         {class name: accuracy} (conditional models)
sample_accuracy_real       the evaluator's accuracy on the real test images of these classes,
accuracy_per_class_real    the ceiling that ``accuracy`` is read against
class_histogram            {class name: share of samples the evaluator assigns to it}
modes_covered, num_modes   classes holding ≥ 10 % of their uniform share; number of classes
kl_to_uniform              KL(histogram ‖ uniform) in nats (0 balanced, log K one class)
memorization_fraction      share of samples nearer (pixels, [0, 1], at the evaluator's size) to a
memorization_threshold     training image than the 1st percentile of test→nearest-training
                           distances (real unseen data: ≈ 0.01; copies: 1)
checkerboard_ratio         share of spectral energy at the Nyquist frequencies, samples / test
num_samples, num_real      generated images; real test images compared against
seed                       first seed of the samples
evaluator                  {dataset, sha256, test_accuracy, feature_dim}
evaluated_at, seconds      when (UTC, ISO 8601) and how long
=========================  ================================================================

Compare numbers only between runs with the same evaluator sha256 and sample counts.
Classes are restricted to the checkpoint's (a ``--classes`` subset model is judged on
its own classes: the evaluator's argmax runs over those classes only).
"""

from __future__ import annotations

import datetime as dt
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.checkpoint import load_generator
from training.data import ImageData, load_dataset
from training.evaluation import metrics as M
from training.evaluation.evaluator import EvaluatorNet, evaluator_for, features_and_logits, to_evaluator_input
from training.images import to_uint8
from training.latent import latents

METRICS_VERSION = 1


class EvaluationError(ValueError):
    """A checkpoint that cannot be evaluated (e.g. reconstruction-only); the message says why."""


@torch.inference_mode()
def generate_uint8(generator: torch.nn.Module, z_dim: int, num_classes: int, num_samples: int, seed: int = 0,
                   batch_size: int = 500, device: str | torch.device = "cpu",
                   truncation: float = 1.0) -> tuple[torch.Tensor, np.ndarray]:
    """Samples for seeds seed..seed+N−1 (labels i mod K; z scaled by ``truncation``) → (uint8 images
    (N, C, H, W), labels (N,) or -1)."""
    labels = np.arange(num_samples) % num_classes if num_classes else np.full(num_samples, -1)
    out = []
    for start in range(0, num_samples, batch_size):
        seeds = list(range(seed + start, seed + min(start + batch_size, num_samples)))
        z = latents(seeds, z_dim, truncation).to(device)
        y = torch.as_tensor(labels[start:start + len(seeds)], device=device) if num_classes else None
        x = generator(z, y)  # (B, C, H, W) in [-1, 1]
        out.append(torch.from_numpy(to_uint8(x)).permute(0, 3, 1, 2))  # (B, C, H, W) uint8 on the CPU
    return torch.cat(out), labels


def _pixels(images: torch.Tensor, channels: int, resolution: int) -> torch.Tensor:
    """uint8 (N, C, H, W) → float pixels in [0, 1] at the evaluator's size and channels.

    Memorisation is measured here: identical to the native pixels for 28×28 grey models and
    bounded in cost for 64×64 RGB ones; a copy of a training image stays a copy.
    """
    return torch.cat([(to_evaluator_input(c, channels, resolution) + 1) / 2 for c in images.split(4096)])


def _r(v: float | None, digits: int = 6) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v), digits)


@dataclass
class RealSide:
    """Everything an evaluation computes from real images alone: the same for every checkpoint of a
    dataset (and class subset) measured with the same evaluator, sample count and seed."""

    test: ImageData
    train: ImageData
    f_test: np.ndarray
    l_test: np.ndarray
    floor: dict[str, float | None]  # fid, kid, precision, recall, density, coverage of the training subset
    num_floor: int
    train_pixels: torch.Tensor
    memorization_threshold: float
    test_nyquist: float
    coverage_per_class_floor: list[float | None]
    hits: int = 0


# A few entries: the experiments and `train --eval-every` measure many checkpoints of one dataset in a process.
_REAL_CACHE: OrderedDict[tuple[Any, ...], RealSide] = OrderedDict()
_REAL_CACHE_SIZE = 2


def _real_side(dataset: str, data_args: tuple[Any, ...], net: EvaluatorNet, evaluator_sha: str, num_samples: int,
               seed: int, batch_size: int, device: str | torch.device, kid_subsets: int,
               background: str = "white") -> RealSide:
    classes = data_args[-1]
    key = (dataset, *data_args[:-1], None if classes is None else tuple(classes), background, evaluator_sha,
           num_samples, seed, str(device), kid_subsets)
    if key in _REAL_CACHE:
        _REAL_CACHE.move_to_end(key)
        return _REAL_CACHE[key]
    res, ch, data_dir, synthetic_size, _ = data_args
    test = load_dataset(dataset, "test", res, ch, data_dir, synthetic_size, classes, background=background)
    train = load_dataset(dataset, "train", res, ch, data_dir, synthetic_size, classes, background=background)
    rng = np.random.RandomState(seed)
    floor_idx = np.sort(rng.choice(len(train), min(num_samples, len(train)), replace=False))
    f_test, l_test = features_and_logits(net, test.images, batch_size, device)
    f_floor, _ = features_and_logits(net, train.images[torch.as_tensor(floor_idx)], batch_size, device)
    floor: dict[str, float | None] = {"fid": _r(M.fid(f_floor, f_test), 4),
                                      "kid": _r(M.kid(f_floor, f_test, kid_subsets, seed=seed)[0])}
    floor_prdc, floor_covered = M.prdc_and_covered(f_test, f_floor)
    floor.update({k: _r(v) for k, v in floor_prdc.items()})
    c, r = net.channels, net.resolution
    train_pixels, test_pixels = _pixels(train.images, c, r), _pixels(test.images, c, r)
    threshold = M.memorization_threshold(train_pixels, test_pixels)
    real = RealSide(test, train, f_test, l_test, floor, len(floor_idx), train_pixels, threshold,
                    M.nyquist_energy_fraction(test.images),
                    M.coverage_by_class(floor_covered, test.labels.numpy(), len(test.class_names)))
    _REAL_CACHE[key] = real
    while len(_REAL_CACHE) > _REAL_CACHE_SIZE:
        _REAL_CACHE.popitem(last=False)
    return real


def evaluate_checkpoint(
    path: str | Path, num_samples: int = 10_000, batch_size: int = 500, seed: int = 0,
    evaluator_root: str | Path | None = None, device: str | torch.device = "cpu", log: Any = None,
    kid_subsets: int = 100, truncation: float | None = None,
) -> tuple[dict[str, Any], str]:
    """All metrics of the checkpoint at ``path`` → (metrics, evaluator sha256). Writes nothing.

    The samples are drawn at ``truncation`` ψ, by default the checkpoint's own (what the service serves
    when a request names none); ``metrics["truncation"]`` records it."""
    t_start = time.perf_counter()

    def step(msg: str, *a: Any) -> None:
        if log is not None:
            log.info("[%5.1f s] " + msg, time.perf_counter() - t_start, *a)

    generator, cfg = load_generator(path, device)
    if cfg.translator:
        raise EvaluationError(f"{cfg.name} is a translator: it is measured on held-out pairs "
                              "(training.evaluation.translation.evaluate_translator)")
    if not cfg.sampleable:
        raise EvaluationError(f"{cfg.name} is a {cfg.family} (reconstruction only): it cannot be sampled, so there "
                              "is nothing to evaluate")
    net, ecfg = evaluator_for(cfg.dataset.name, evaluator_root, device)
    names = list(cfg.dataset.class_names)
    missing = [n for n in names if n not in ecfg.class_names]
    if missing:
        raise EvaluationError(f"the {ecfg.dataset} evaluator has no class(es) {', '.join(missing)} "
                              f"(it knows {', '.join(ecfg.class_names)})")
    if cfg.conditional and list(cfg.class_names) != names:
        raise EvaluationError(f"{cfg.name}: class_names differ from dataset.class_names")
    cols = [ecfg.class_names.index(n) for n in names]  # evaluator logit column of each checkpoint class
    k = len(names)

    opts = cfg.training.options
    res, ch = cfg.image.height, cfg.image.channels
    data_args = (res, ch, opts.get("data_dir"), opts.get("synthetic_size", 1000), opts.get("classes"))
    real = _real_side(cfg.dataset.name, data_args, net, ecfg.weights_sha256, num_samples, seed, batch_size, device,
                      kid_subsets, opts.get("background", "white"))
    test, train = real.test, real.train
    if test.class_names != names:
        raise EvaluationError(f"{cfg.name}: the {cfg.dataset.name} test split has classes {test.class_names}, "
                              f"the checkpoint {names}")
    step("real side: %d test, %d train images%s", len(test), len(train), " (cached)" if real.hits else "")
    real.hits += 1

    psi = cfg.truncation if truncation is None else truncation
    fake, intended = generate_uint8(generator, cfg.z_dim, cfg.num_classes, num_samples, seed, batch_size, device,
                                    psi)
    step("generated %d samples", num_samples)
    f_fake, l_fake = features_and_logits(net, fake, batch_size, device)
    f_test, l_test = real.f_test, real.l_test
    step("evaluator features (%d-d)", f_fake.shape[1])

    pred_fake = l_fake[:, cols].argmax(1)  # checkpoint class index
    pred_test = l_test[:, cols].argmax(1)
    acc_real, per_real = M.class_accuracy(pred_test, test.labels.numpy(), k)
    hist = M.class_histogram(pred_fake, k)
    out: dict[str, Any] = {"metrics_version": METRICS_VERSION}
    out["fid"] = _r(M.fid(f_fake, f_test), 4)
    out["fid_floor"] = real.floor["fid"]
    kid_mean, kid_std = M.kid(f_fake, f_test, kid_subsets, seed=seed)
    out.update(kid=_r(kid_mean), kid_std=_r(kid_std), kid_floor=real.floor["kid"])
    step("FID, KID")
    prdc, covered = M.prdc_and_covered(f_test, f_fake)
    out.update({key: _r(v) for key, v in prdc.items()})
    out.update({f"{key}_floor": real.floor[key] for key in M.PRDC_KEYS})
    # Coverage of each class's real test images: where a generator misses part of the data (for an
    # unconditional one, the only per-class view of its diversity), beside the same for real images.
    out["coverage_per_class"] = M.named(M.coverage_by_class(covered, test.labels.numpy(), k), names)
    out["coverage_per_class_floor"] = M.named(real.coverage_per_class_floor, names)
    step("precision/recall/density/coverage")
    if cfg.conditional:
        acc, per = M.class_accuracy(pred_fake, intended, k)
        out["accuracy"] = _r(acc)
        out["accuracy_per_class"] = M.named(per, names)
    else:
        out["accuracy"], out["accuracy_per_class"] = None, None
    out["sample_accuracy_real"] = _r(acc_real)
    out["accuracy_per_class_real"] = M.named(per_real, names)
    out["class_histogram"] = M.named(list(hist), names)
    out["modes_covered"] = M.modes_covered(hist)
    out["num_modes"] = k
    out["kl_to_uniform"] = _r(M.kl_to_uniform(hist))
    c, r = net.channels, net.resolution
    out["memorization_fraction"] = _r(M.memorized_fraction(_pixels(fake, c, r), real.train_pixels,
                                                           real.memorization_threshold))
    out["memorization_threshold"] = _r(real.memorization_threshold, 4)
    step("memorisation")
    out["checkerboard_ratio"] = _r(M.nyquist_energy_fraction(fake) / max(real.test_nyquist, 1e-12), 4)
    out.update(num_samples=num_samples, num_real=len(test), num_floor=real.num_floor, seed=seed, truncation=psi)
    out["evaluator"] = {"dataset": ecfg.dataset, "sha256": ecfg.weights_sha256,
                        "test_accuracy": ecfg.test_accuracy, "feature_dim": ecfg.feature_dim}
    out["evaluated_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    out["seconds"] = round(time.perf_counter() - t_start, 1)
    step("done")
    return out, ecfg.weights_sha256


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def format_table(m: dict[str, Any], title: str = "") -> str:
    """The metrics as a plain-text table: each number beside its real-data reference."""
    rows: list[tuple[str, str, str]] = [
        ("FID (evaluator features)", _fmt(m["fid"], 3), _fmt(m["fid_floor"], 3)),
        ("KID", f"{_fmt(m['kid'], 5)} ± {_fmt(m['kid_std'], 5)}", _fmt(m["kid_floor"], 5)),
        ("precision", _fmt(m["precision"]), _fmt(m["precision_floor"])),
        ("recall", _fmt(m["recall"]), _fmt(m["recall_floor"])),
        ("density", _fmt(m["density"]), _fmt(m["density_floor"])),
        ("coverage", _fmt(m["coverage"]), _fmt(m["coverage_floor"])),
        ("class accuracy", _fmt(m["accuracy"]), _fmt(m["sample_accuracy_real"])),
        ("modes covered", f"{m['modes_covered']}/{m['num_modes']}", f"{m['num_modes']}/{m['num_modes']}"),
        ("KL to uniform (nats)", _fmt(m["kl_to_uniform"]), "0"),
        ("memorisation fraction", _fmt(m["memorization_fraction"]), "0.01"),
        ("checkerboard ratio", _fmt(m["checkerboard_ratio"], 3), "1"),
    ]
    ev = m["evaluator"]
    psi = m.get("truncation", 1.0)
    drawn = f"seeds {m['seed']}…" + (f", truncation ψ {psi:g}" if psi != 1 else "")
    head = (f"{m['num_samples']} samples ({drawn}) vs {m['num_real']} real test images; floor: "
            f"{m['num_floor']} training images; evaluator {ev['dataset']} {ev['sha256'][:12]} "
            f"(test accuracy {ev['test_accuracy']:.4f})")
    w = max(len(r[0]) for r in rows)
    lines = [title, head] if title else [head]
    lines.append(f"{'metric':<{w}}  {'samples':>18}  {'real / floor':>12}")
    lines += [f"{a:<{w}}  {b:>18}  {c:>12}" for a, b, c in rows]
    names = list(m["class_histogram"])
    per = m["accuracy_per_class"] or {}
    per_real = m["accuracy_per_class_real"] or {}
    cw = max(len(n) for n in names) if names else 5
    lines.append("")
    cov = m.get("coverage_per_class") or {}
    cov_floor = m.get("coverage_per_class_floor") or {}
    lines.append(f"{'class':<{cw}}  {'share':>7}  {'accuracy':>8}  {'real acc':>8}  {'coverage':>8}  {'floor':>6}")
    for n in names:
        lines.append(f"{n:<{cw}}  {_fmt(m['class_histogram'][n], 3):>7}  {_fmt(per.get(n), 3):>8}  "
                     f"{_fmt(per_real.get(n), 3):>8}  {_fmt(cov.get(n), 3):>8}  {_fmt(cov_floor.get(n), 3):>6}")
    lines.append(f"({m['seconds']:.0f} s)")
    return "\n".join(lines)
