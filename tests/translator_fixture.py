"""A tiny random-weight translator checkpoint (pix2pix U-Net), written with save_checkpoint, for tests.

``write_translator(root)`` → ``root/tiny-edges2shapes``: edges (1 channel) → 32×32 RGB by default; its
weights are widened from the std-0.02 init so that different inputs give visibly different outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from training.checkpoint import save_checkpoint
from training.models import build_generator

TRANSLATOR = "tiny-edges2shapes"


def translator_kwargs(channels: int = 3, resolution: int = 32, ngf: int = 4, in_channels: int = 1) -> dict[str, Any]:
    return {"in_channels": in_channels, "channels": channels, "resolution": resolution, "ngf": ngf}


def translator_config(name: str, kwargs: dict[str, Any], transform: str = "edges") -> dict[str, Any]:
    """A complete, valid config.json body of a translator (all but the weights' sha256 and dtype)."""
    res = kwargs["resolution"]
    return {
        "name": name,
        "family": "pix2pix",
        "description": "a tiny random pix2pix translator for tests",
        "generator": {"class": "UNetGenerator", "kwargs": kwargs},
        "z_dim": 0,
        "num_classes": 0,
        "class_names": [],
        "image": {"channels": kwargs["channels"], "height": res, "width": res},
        "input": {"channels": kwargs["in_channels"], "height": res, "width": res, "transform": transform},
        "sampleable": False,
        "dataset": {"name": "synthetic", "num_images": 0, "class_names": []},
        "training": {"command": "tests", "epochs": 0, "seconds": 0.0, "seed": 0, "git_commit": None},
        "metrics": {},
    }


def write_translator(root: Path, name: str = TRANSLATOR, *, channels: int = 3, resolution: int = 32, ngf: int = 4,
                     transform: str = "edges", seed: int = 0, dataset: str = "synthetic",
                     class_names: list[str] | None = None) -> Path:
    """Write a random-weight translator checkpoint into ``root/name`` and return its folder."""
    torch.manual_seed(seed)
    kwargs = translator_kwargs(channels, resolution, ngf)
    gen = build_generator("UNetGenerator", kwargs)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in gen.modules():  # trained-looking batch-norm statistics, and weights wide enough to see
            if isinstance(m, torch.nn.BatchNorm2d):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
        for p in gen.parameters():
            if p.dim() > 1:
                p.mul_(25)
    config = translator_config(name, kwargs, transform)
    config["dataset"] = {"name": dataset, "num_images": 0, "class_names": class_names or []}
    save_checkpoint(root / name, gen, config)
    return root / name
