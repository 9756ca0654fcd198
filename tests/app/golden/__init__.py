"""Recorded responses of a fixed list of seeded requests over every route (``responses.json``).

``tests/app/test_golden.py`` checks that the service still gives them byte for byte, with and
without its fast path. Re-record (only when a change of the bytes is intended, and say why in the
commit) with ``PYTHONPATH=. python -m tests.app.golden``.

The checkpoints are tiny networks whose weights come from ``numpy.random.RandomState`` (not from
torch's initialisation, which may change between torch versions), so they are the same files on
every machine. Image bytes also depend on the CPU's float32 kernels: the file records, per model,
the sha256 of a fixed batch of generated uint8 images; where this machine makes different ones, the
image bodies (and their lengths) are not compared — everything else still is.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi.testclient import TestClient
from httpx import Response

from app.main import create_app
from tests.app.conftest import (
    AE,
    CLASSES,
    COND,
    UNCOND,
    cgan_kwargs,
    config_dict,
    make_settings,
    mlp_kwargs,
    wait_ready,
)
from training.checkpoint import load_generator, read_config, save_checkpoint
from training.images import to_uint8
from training.latent import SEED_MAX, latents
from training.models import build_generator

FILE = Path(__file__).with_name("responses.json")
MODELS = (COND, UNCOND, AE)
# Headers whose values are compared (in the order sent); content-length only where the body is.
HEADERS = ("content-type", "content-disposition", "etag", "cache-control", "x-model", "x-model-version", "x-seed",
           "x-label", "x-label-name", "retry-after", "x-content-type-options")
VOLATILE = ("loaded_at", "batch_invariant", "exact_products")  # card fields that depend on when or where
V = "{version}"  # replaced by the default model's loaded version

# (method, path with query, request headers). Seeded only: a drawn seed is random.
REQUESTS: list[tuple[str, dict[str, str]]] = [
    # /generate: single images, labels by index / name / case, grids, truncation, scale, versions
    ("/generate?seed=7&label=1", {}),
    ("/generate?seed=7&label=square", {}),
    ("/generate?seed=3&label=T-Shirt%2FTop", {}),
    (f"/generate?seed=7&label=1&version={V}", {}),
    ("/generate?model=tiny-mlp&seed=3&n=5&scale=2&truncation=0.5", {}),
    ("/generate?model=tiny-cgan&seed=40&n=4&label=2", {}),
    ("/generate?seed=100&label=circle&n=16", {}),
    ("/generate?model=tiny-mlp&seed=11&n=9", {}),
    ("/generate?seed=60&label=2&n=64", {}),
    (f"/generate?model=tiny-mlp&seed={SEED_MAX - 3}&n=4", {}),
    ("/generate?seed=9&label=0&truncation=0.25&scale=4", {}),
    ("/generate?seed=9&label=0&truncation=1", {}),
    ("/generate?seed=21&label=0", {"If-None-Match": "*"}),
    ("/generate?seed=1&label=0&bogus=1", {}),  # unknown parameters are ignored
    ("/generate?seed=1&seed=2&label=0", {}),
    # permalinks
    ("/models/tiny-cgan/seeds/12.png?label=square&scale=2&truncation=0.5", {}),
    (f"/models/tiny-cgan/seeds/12.png?label=1&version={V}", {}),
    (f"/models/tiny-mlp/seeds/{SEED_MAX}.png", {}),
    ("/models/tiny-mlp/seeds/0.png?scale=3", {}),
    # /interpolate: gif, png strip, key seeds, lerp, loops, class morphs
    ("/interpolate?label=1&from_seed=3&to_seed=9&frames=8&fps=10&scale=2", {}),
    ("/interpolate?model=tiny-mlp&seeds=1,5,9&frames=7&format=png&method=lerp", {}),
    ("/interpolate?model=tiny-mlp&from_seed=4&to_seed=9&frames=6&truncation=0.7&loop=true", {}),
    ("/interpolate?from_label=0&to_label=2&from_seed=5&frames=5", {}),
    ("/interpolate?from_label=circle&to_label=square&from_seed=5&to_seed=6&frames=6&loop=true&format=png", {}),
    (f"/interpolate?label=0&from_seed=1&to_seed=2&frames=4&version={V}", {}),
    ("/interpolate?label=0&from_seed=1&to_seed=2&frames=4", {"If-None-Match": "*"}),
    # model cards and operations
    ("/models", {}),
    ("/models/tiny-cgan", {}),
    ("/models/tiny-ae", {}),
    ("/healthz", {}),
    ("/readyz", {}),
    # errors
    ("/generate?seed=1&label=3", {}),
    ("/generate?seed=-1&label=0", {}),
    ("/generate?seed=1&label=0&n=65", {}),
    ("/generate?seed=1&label=0&truncation=nan", {}),
    ("/generate?seed=1&label=0&scale=9", {}),
    ("/generate?model=nope&seed=1", {}),
    ("/generate?model=tiny-ae&seed=1", {}),
    ("/generate?model=tiny-mlp&seed=1&label=0", {}),
    ("/generate?model=UPPER", {}),
    (f"/generate?model=tiny-mlp&seed={SEED_MAX - 2}&n=4", {}),
    ("/generate?seed=1&label=0&version=0123456789ab", {}),
    ("/generate?seed=1&label=0&version=ABC", {}),
    ("/models/nope", {}),
    ("/models/nope/seeds/1.png", {}),
    ("/models/tiny-cgan/seeds/abc.png", {}),
    ("/models/tiny-cgan/seeds/1.png?label=7", {}),
    ("/interpolate?seeds=1&frames=2", {}),
    ("/interpolate?frames=121&from_seed=1&to_seed=2&label=0", {}),
    ("/interpolate?label=0&from_label=1&to_label=2", {}),
    ("/interpolate?from_label=0&from_seed=1", {}),
    ("/interpolate?seeds=1,2&from_seed=1&label=0", {}),
    ("/interpolate?label=0&from_seed=1&to_seed=2&method=cubic", {}),
    ("/interpolate?label=0&from_seed=1&to_seed=2&format=jpeg", {}),
    ("/interpolate?model=tiny-mlp&from_seed=1&to_seed=2&frames=120&scale=8&format=png", {}),
    ("/generate?seed=1&label=" + "x" * 9000, {}),
]


def _fill(gen: torch.nn.Module, seed: int) -> None:
    """Deterministic weights from numpy (wide enough that seeds give visibly different images)."""
    rs = np.random.RandomState(seed)
    with torch.no_grad():
        for name, t in gen.state_dict().items():
            if not t.is_floating_point():
                continue
            noise = torch.from_numpy(rs.standard_normal(tuple(t.shape)).astype(np.float32))
            if name.endswith("running_var"):
                t.copy_(0.75 + 0.5 * noise.abs().clamp(max=1))
            elif name.endswith("running_mean") or name.endswith("bias"):
                t.copy_(0.1 * noise)
            elif t.dim() == 1:  # a norm's gain
                t.copy_(1 + 0.1 * noise)
            else:
                fan_in = max(1, t.numel() // t.shape[0])
                t.copy_(noise * (2.0 / fan_in**0.5))


def write_checkpoints(root: Path) -> None:
    specs = [
        (COND, "DCGenerator", cgan_kwargs(), "cgan", True, CLASSES, 0),
        (UNCOND, "MLPGenerator", mlp_kwargs(), "mlp-gan", True, None, 1),
        (AE, "MLPGenerator", {"z_dim": 4, "num_classes": 0, "channels": 1, "resolution": 28, "hidden": [8]}, "ae",
         False, None, 2),
    ]
    for name, cls, kwargs, family, sampleable, names, seed in specs:
        gen = build_generator(cls, kwargs)
        _fill(gen, seed)
        save_checkpoint(root / name, gen, config_dict(name, cls, kwargs, family=family, sampleable=sampleable,
                                                      class_names=names))


def environment(root: Path) -> dict[str, Any]:
    """Per model: its weights' sha256, and the sha256 of a fixed batch of its uint8 images on this CPU."""
    out: dict[str, Any] = {}
    for name in MODELS:
        gen, cfg = load_generator(root / name, "cpu")
        z = latents(range(8), cfg.z_dim)
        labels = torch.arange(8) % cfg.num_classes if cfg.conditional else None
        with torch.inference_mode():
            images = to_uint8(gen(z, labels))
        out[name] = {"weights": read_config(root / name).generator_sha256,
                     "images": hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()}
    return out


def record(r: Response) -> dict[str, Any]:
    """What is compared of one response."""
    ctype = r.headers.get("content-type", "")
    body: Any
    if ctype.startswith("application/json"):
        data = r.json()
        if isinstance(data, dict):
            cards = data["models"] if isinstance(data.get("models"), list) else [data]
            for card in cards:
                for key in VOLATILE:
                    card.pop(key, None)
        body = {"json": data}
    else:
        body = {"base64": base64.b64encode(r.content).decode(), "length": r.headers.get("content-length")}
    headers = [[k, v] for k, v in r.headers.items() if k in HEADERS]
    return {"status": r.status_code, "headers": headers, "body": body}


def clients(root: Path) -> Iterator[tuple[str, TestClient]]:
    for fast in (True, False):
        app = create_app(make_settings(root, fast_path=fast, cache_size=0))
        with TestClient(app) as client:
            wait_ready(client)
            yield ("fast path" if fast else "FastAPI"), client


def run_one(client: TestClient, root: Path, path: str, headers: dict[str, str]) -> dict[str, Any]:
    url = path.replace(V, read_config(root / COND).version)
    return {"request": url if len(url) < 200 else url[:200] + "…", **record(client.get(url, headers=headers))}


def run(client: TestClient, root: Path) -> list[dict[str, Any]]:
    return [run_one(client, root, path, headers) for path, headers in REQUESTS]


def main() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_checkpoints(root)
        runs = [run(client, root) for _, client in clients(root)]
        assert runs[0] == runs[1], "the fast path and FastAPI disagree: fix that before recording"
        FILE.write_text(json.dumps({"environment": environment(root), "responses": runs[0]}, indent=1) + "\n")
    print(f"wrote {FILE} ({len(runs[0])} responses)")
