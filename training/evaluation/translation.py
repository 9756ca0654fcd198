"""``python -m training evaluate CKPT`` for translators (pix2pix): measured on held-out pairs.

The pairs are the dataset's test split: each test image is a target, its input is made by the
checkpoint's transform (``training/pairs.py``), exactly as the training pairs were. The translator's
outputs, quantised to uint8 as the service serves them, are compared with the true targets:

=========================  ================================================================
key                        meaning
=========================  ================================================================
l1                         mean absolute pixel difference of outputs and targets, in [0, 1]
fid, fid_floor             FID in evaluator-feature space of the outputs vs the targets; the floor is
                           as many training images vs the same targets (real vs real)
accuracy                   share of outputs the evaluator puts in their target's class
accuracy_per_class         {class name: accuracy}
sample_accuracy_real       the evaluator's accuracy on the targets themselves (the ceiling), and
accuracy_per_class_real    per class
checkerboard_ratio         share of spectral energy at the Nyquist frequencies, outputs / targets
num_pairs, transform       held-out pairs measured (num_samples: the same), the input transform
baseline                   with ``--baseline CKPT``: these numbers of another translator of the same
                           input and dataset on the same pairs (e.g. the L1-only baseline), with its
                           name, weights' sha256 and training command, epochs and seconds
evaluator                  {dataset, sha256, test_accuracy, feature_dim}
evaluated_at, seconds      when (UTC, ISO 8601) and how long
=========================  ================================================================
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from training.checkpoint import CheckpointConfig, load_generator
from training.data import ImageData, load_dataset, to_float
from training.evaluation import metrics as M
from training.evaluation.evaluator import EvaluatorNet, evaluator_for, features_and_logits
from training.images import to_uint8
from training.pairs import make_inputs

METRICS_VERSION = 1
# What a baseline entry keeps of its own measurement.
BASELINE_KEYS = ("l1", "fid", "accuracy", "checkerboard_ratio")


class TranslationError(ValueError):
    """A translator that cannot be measured as asked (e.g. a baseline of another input); says why."""


@torch.inference_mode()
def translate_uint8(generator: nn.Module, inputs: torch.Tensor, batch_size: int = 500,
                    device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 inputs (N, C_in, H, W) → uint8 outputs (N, C, H, W) on the CPU, as the service quantises them."""
    out = []
    for chunk in inputs.split(batch_size):
        y = generator(to_float(chunk).to(device))  # (B, C, H, W) in [-1, 1]
        out.append(torch.from_numpy(to_uint8(y)).permute(0, 3, 1, 2))
    return torch.cat(out)


def held_out_pairs(cfg: CheckpointConfig, num_pairs: int, seed: int) -> tuple[ImageData, torch.Tensor, np.ndarray]:
    """(the test split, the inputs (n, C_in, H, W) uint8 of the n pairs, their indices in the split): all of
    the split when it has at most ``num_pairs`` images, else a seeded random subset of that many."""
    assert cfg.input is not None
    opts = cfg.training.options
    res, ch = cfg.image.height, cfg.image.channels
    test = load_dataset(cfg.dataset.name, "test", res, ch, opts.get("data_dir"), opts.get("synthetic_size", 1000),
                        opts.get("classes"))
    n = len(test)
    idx = np.arange(n) if n <= num_pairs else np.sort(np.random.RandomState(seed).choice(n, num_pairs, replace=False))
    inputs = make_inputs(test.images[torch.as_tensor(idx)], cfg.input.transform)
    return test, inputs, idx


def _r(v: float | None, digits: int = 6) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v), digits)


def measure(generator: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, labels: np.ndarray,
            net: EvaluatorNet, cols: list[int], names: list[str], f_targets: np.ndarray, batch_size: int,
            device: str | torch.device) -> dict[str, Any]:
    """The numbers of one translator on the pairs (inputs, targets) with the targets' labels and features."""
    outputs = translate_uint8(generator, inputs, batch_size, device)
    f_out, l_out = features_and_logits(net, outputs, batch_size, device)
    acc, per = M.class_accuracy(l_out[:, cols].argmax(1), labels, len(names))
    return {
        "l1": _r(float((outputs.float() - targets.float()).abs().mean()) / 255.0),
        "fid": _r(M.fid(f_out, f_targets), 4),
        "accuracy": _r(acc),
        "accuracy_per_class": M.named(per, names),
        "checkerboard_ratio": _r(M.nyquist_energy_fraction(outputs) / max(M.nyquist_energy_fraction(targets), 1e-12),
                                 4),
    }


def evaluate_translator(path: str | Path, num_pairs: int = 10_000, batch_size: int = 500, seed: int = 0,
                        evaluator_root: str | Path | None = None, device: str | torch.device = "cpu",
                        log: Any = None, baseline: str | Path | None = None) -> tuple[dict[str, Any], str]:
    """All metrics of the translator at ``path`` on held-out pairs (and of ``baseline`` on the same pairs)
    → (metrics, evaluator sha256). Writes nothing."""
    t_start = time.perf_counter()

    def step(msg: str, *a: Any) -> None:
        if log is not None:
            log.info("[%5.1f s] " + msg, time.perf_counter() - t_start, *a)

    generator, cfg = load_generator(path, device)
    if cfg.input is None:
        raise TranslationError(f"{cfg.name} is a {cfg.family}, not a translator")
    base = None
    if baseline is not None:
        base = load_generator(baseline, device)
        bcfg = base[1]
        same = (bcfg.input, bcfg.image, bcfg.dataset.name, bcfg.dataset.class_names)
        if same != (cfg.input, cfg.image, cfg.dataset.name, cfg.dataset.class_names):
            raise TranslationError(f"--baseline {baseline}: {bcfg.name} does not translate the same inputs of the "
                                   f"same dataset into the same images as {cfg.name}")
    net, ecfg = evaluator_for(cfg.dataset.name, evaluator_root, device)
    names = list(cfg.dataset.class_names)
    missing = [n for n in names if n not in ecfg.class_names]
    if missing:
        raise TranslationError(f"the {ecfg.dataset} evaluator has no class(es) {', '.join(missing)}")
    cols = [ecfg.class_names.index(n) for n in names]

    test, inputs, idx = held_out_pairs(cfg, num_pairs, seed)
    targets, labels = test.images[torch.as_tensor(idx)], test.labels.numpy()[idx]
    step("%d held-out pairs (%s) of %d test images", len(idx), cfg.input.transform, len(test))
    f_targets, l_targets = features_and_logits(net, targets, batch_size, device)
    acc_real, per_real = M.class_accuracy(l_targets[:, cols].argmax(1), labels, len(names))
    opts = cfg.training.options
    train = load_dataset(cfg.dataset.name, "train", cfg.image.height, cfg.image.channels, opts.get("data_dir"),
                         opts.get("synthetic_size", 1000), opts.get("classes"))
    rng = np.random.RandomState(seed)
    floor_idx = np.sort(rng.choice(len(train), min(len(idx), len(train)), replace=False))
    f_floor, _ = features_and_logits(net, train.images[torch.as_tensor(floor_idx)], batch_size, device)
    step("targets and floor: evaluator features")

    out: dict[str, Any] = {"metrics_version": METRICS_VERSION}
    out.update(measure(generator, inputs, targets, labels, net, cols, names, f_targets, batch_size, device))
    out["fid_floor"] = _r(M.fid(f_floor, f_targets), 4)
    out["sample_accuracy_real"] = _r(acc_real)
    out["accuracy_per_class_real"] = M.named(per_real, names)
    out.update(num_pairs=len(idx), num_samples=len(idx), num_real=len(idx), num_floor=len(floor_idx), seed=seed,
               transform=cfg.input.transform)
    step("translated and measured")
    if base is not None:
        bgen, bcfg = base
        measured = measure(bgen, inputs, targets, labels, net, cols, names, f_targets, batch_size, device)
        out["baseline"] = {
            "name": bcfg.name, "generator_sha256": bcfg.generator_sha256,
            "l1_only": bool(bcfg.training.options.get("l1_only", False)),
            "training": {"command": bcfg.training.command, "epochs": bcfg.training.epochs,
                         "seconds": bcfg.training.seconds},
            **{k: measured[k] for k in BASELINE_KEYS},
        }
        step("baseline %s measured on the same pairs", bcfg.name)
    out["evaluator"] = {"dataset": ecfg.dataset, "sha256": ecfg.weights_sha256,
                        "test_accuracy": ecfg.test_accuracy, "feature_dim": ecfg.feature_dim}
    out["evaluated_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    out["seconds"] = round(time.perf_counter() - t_start, 1)
    return out, ecfg.weights_sha256


def _fmt(v: Any, digits: int = 4) -> str:
    return "—" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def format_table(m: dict[str, Any]) -> str:
    """A translator's metrics as a plain-text table: each number beside its reference (and the baseline's)."""
    b = m.get("baseline") or {}
    ev = m["evaluator"]
    head = (f"{m['num_pairs']} held-out pairs ({m['transform']} → image) of the test split; floor: "
            f"{m['num_floor']} training images; evaluator {ev['dataset']} {ev['sha256'][:12]} "
            f"(test accuracy {ev['test_accuracy']:.4f})")
    cols = ("metric", "outputs", "real / floor") + ((f"baseline {b['name']}",) if b else ())
    rows = [("L1 to the targets", _fmt(m["l1"]), "0"), ("FID (evaluator features)", _fmt(m["fid"], 3),
                                                       _fmt(m["fid_floor"], 3)),
            ("class accuracy", _fmt(m["accuracy"]), _fmt(m["sample_accuracy_real"])),
            ("checkerboard ratio", _fmt(m["checkerboard_ratio"], 3), "1")]
    keys = ("l1", "fid", "accuracy", "checkerboard_ratio")
    table = [r + ((_fmt(b.get(k), 3 if k in ("fid", "checkerboard_ratio") else 4),) if b else ())
             for r, k in zip(rows, keys, strict=True)]
    w = [max(len(c), *(len(r[i]) for r in table)) for i, c in enumerate(cols)]
    lines = [head, "  ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(cols))]
    lines += ["  ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(r)) for r in table]
    per, real = m.get("accuracy_per_class") or {}, m.get("accuracy_per_class_real") or {}
    if per:
        cw = max(len(n) for n in per)
        lines += ["", f"{'class':<{cw}}  {'accuracy':>8}  {'real acc':>8}"]
        lines += [f"{n:<{cw}}  {_fmt(per[n], 3):>8}  {_fmt(real.get(n), 3):>8}" for n in per]
    lines.append(f"({m['seconds']:.0f} s)")
    return "\n".join(lines)
