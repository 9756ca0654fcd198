"""Fixtures for the service tests: tiny real checkpoints written with save_checkpoint, and a running app.

The checkpoints are random-init networks (no training): a conditional DCGenerator with three
named classes, an unconditional MLPGenerator and an unsampleable autoencoder decoder. They
exercise every code path of loading and serving in milliseconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from training.checkpoint import save_checkpoint
from training.models import build_generator
from training.models.encoders import MLPEncoder

COND = "tiny-cgan"
UNCOND = "tiny-mlp"
AE = "tiny-ae"
CLASSES = ["circle", "square", "t-shirt/top"]
# Metrics of an unconditional model as `evaluate` writes them on 10k samples: every bar but coverage cleared.
MEASURED_UNCOND = {"num_samples": 10_000, "fid": 31.4, "coverage": 0.643, "memorization_fraction": 0.0004,
                   "modes_covered": 10, "num_modes": 10, "kl_to_uniform": 0.004}


def config_dict(name: str, cls: str, kwargs: dict[str, Any], *, family: str, sampleable: bool = True,
                class_names: list[str] | None = None) -> dict[str, Any]:
    """A complete, valid config.json body (all but the weights' sha256 and dtype)."""
    names = class_names or []
    return {
        "name": name,
        "family": family,
        "description": f"a tiny random {family} for tests",
        "generator": {"class": cls, "kwargs": kwargs},
        "z_dim": kwargs["z_dim"],
        "num_classes": kwargs["num_classes"],
        "class_names": names,
        "image": {"channels": kwargs["channels"], "height": kwargs["resolution"], "width": kwargs["resolution"]},
        "sampleable": sampleable,
        "dataset": {"name": "synthetic", "num_images": 0, "class_names": names},
        "training": {"command": "tests", "epochs": 0, "seconds": 0.0, "seed": 0, "git_commit": None},
        "metrics": {"fid": 1.5},
    }


def cgan_kwargs(ngf: int = 4) -> dict[str, Any]:
    return {"z_dim": 8, "num_classes": len(CLASSES), "channels": 1, "resolution": 28, "ngf": ngf,
            "upsample": "convT", "bn": "before-act"}


def mlp_kwargs(channels: int = 3) -> dict[str, Any]:
    return {"z_dim": 6, "num_classes": 0, "channels": channels, "resolution": 28, "hidden": [16, 32]}


def _randomise_bn(gen: torch.nn.Module, seed: int) -> None:
    """Give batch-norm non-trivial running statistics, as a trained network has."""
    g = torch.Generator().manual_seed(seed)
    for m in gen.modules():
        if isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
            assert m.running_mean is not None and m.running_var is not None
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)


def _widen(module: torch.nn.Module, factor: float = 25) -> None:
    # Random init at std 0.02 gives near-flat grey images; widen the weights so that seeds differ visibly.
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() > 1:
                p.mul_(factor)


def write_checkpoint(root: Path, name: str, cls: str, kwargs: dict[str, Any], *, family: str, seed: int = 0,
                     sampleable: bool = True, class_names: list[str] | None = None,
                     encoder: tuple[torch.nn.Module, str] | None = None) -> Path:
    torch.manual_seed(seed)
    gen = build_generator(cls, kwargs)
    _randomise_bn(gen, seed)
    _widen(gen)
    if encoder is not None:
        _randomise_bn(encoder[0], seed)
        _widen(encoder[0], 10)
    save_checkpoint(root / name, gen, config_dict(name, cls, kwargs, family=family, sampleable=sampleable,
                                                  class_names=class_names), encoder=encoder)
    return root / name


def write_cgan(root: Path, name: str = COND, seed: int = 0) -> Path:
    return write_checkpoint(root, name, "DCGenerator", cgan_kwargs(), family="cgan", seed=seed,
                            class_names=CLASSES)


def write_mlp(root: Path, name: str = UNCOND, seed: int = 1) -> Path:
    return write_checkpoint(root, name, "MLPGenerator", mlp_kwargs(), family="mlp-gan", seed=seed)


def write_ae(root: Path, name: str = AE, encoder: bool = True) -> Path:
    """An unsampleable fully connected autoencoder (with its encoder unless ``encoder`` is false)."""
    kw = {"z_dim": 4, "num_classes": 0, "channels": 1, "resolution": 28, "hidden": [8]}
    torch.manual_seed(7)
    enc = (MLPEncoder(1, 28, [8], 4), "code") if encoder else None
    return write_checkpoint(root, name, "MLPGenerator", kw, family="ae", sampleable=False, encoder=enc)


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only folder with the three tiny checkpoints (shared by the module-scoped clients)."""
    root = tmp_path_factory.mktemp("checkpoints")
    write_cgan(root)
    write_mlp(root)
    write_ae(root)
    return root


def make_settings(root: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"checkpoints": root, "device": "cpu", "default_model": COND,
                              "reload_interval_s": 0, "warmup_batch": 2, **overrides}
    return Settings(**values)


def wait_ready(client: TestClient, timeout: float = 30.0) -> None:
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        if client.get("/readyz").status_code == 200:
            return
        time.sleep(0.01)
    raise AssertionError(f"not ready after {timeout}s: {client.get('/readyz').json()}")


def wait_for(predicate: Any, timeout: float = 20.0, interval: float = 0.02) -> None:
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def hold_first_pass(batcher: Any, send: Callable[[int], None], n: int) -> list[int]:
    """Send request 0, hold ``batcher``'s worker inside that first forward pass while requests 1…n−1
    queue, then let it go; returns the rows of each forward pass (one shared pass: ``[1, n - 1]``)."""
    gate, entered, sizes = threading.Event(), threading.Event(), []
    real = batcher._forward

    def held(*args: Any) -> Any:
        sizes.append(int(args[1].shape[0]))  # (rows, C, H, W) images
        entered.set()
        assert gate.wait(30)
        return real(*args)

    batcher._forward = held
    threads = [threading.Thread(target=send, args=(i,)) for i in range(n)]
    threads[0].start()
    assert entered.wait(30)
    for t in threads[1:]:
        t.start()
    try:
        wait_for(lambda: batcher._queue.qsize() == n - 1)
    finally:
        gate.set()
    for t in threads:
        t.join(60)
    return sizes


@pytest.fixture(scope="module")
def client(tiny_checkpoints: Path) -> Iterator[TestClient]:
    """A running app (lifespan entered, models loaded and warmed up) over the tiny checkpoints."""
    app = create_app(make_settings(tiny_checkpoints))
    with TestClient(app, raise_server_exceptions=True) as c:
        wait_ready(c)
        yield c
