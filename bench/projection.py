"""Projection (``POST /models/{model}/encode`` on GAN generators): latency and what it recovers.

For each model, held-out test images of its dataset are uploaded one after the other (1
connection) to a ganserve started with uvicorn on the shipped checkpoint, with the true class as
``label`` on conditional models; the latency of each encode is recorded, the reconstruction is
fetched from the ``reconstruction_url`` it answers, and the dataset's evaluator
(``training.evaluation``) judges it: how often it gives the reconstruction the original's class, how
often it agrees with its own verdict on the original (and that verdict's accuracy, the ceiling), and
the reconstruction's PSNR.

    python -m bench.projection                      # every shipped GAN generator, 100 images each
    python -m bench.projection --models fashion-cgan --images 200
    python -m bench.projection --models fashion-cgan --images 5 --quick
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, before bench/ (bench/training.py)

import numpy as np
import torch
from PIL import Image

from app.projection import PROJECTABLE
from bench.common import ROOT, command_line, load_average, machine_lines, markdown_table, publish
from bench.serving import Server
from training.checkpoint import load_generator
from training.data import load_dataset
from training.evaluation.evaluator import evaluator_for, features_and_logits


def post_png(base: str, path: str, image: np.ndarray) -> tuple[float, dict[str, object]]:
    """POST ``image`` (H, W) grey or (H, W, 3) RGB uint8 as a PNG; (seconds, the JSON answer)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    req = urllib.request.Request(base + path, data=buf.getvalue(), headers={"Content-Type": "image/png"},
                                 method="POST")
    start = time.perf_counter()
    with urllib.request.urlopen(req, timeout=120) as r:
        body = json.loads(r.read())
    return time.perf_counter() - start, body


def fetch_png(base: str, path: str) -> np.ndarray:
    with urllib.request.urlopen(base + path, timeout=30) as r:
        return np.asarray(Image.open(io.BytesIO(r.read())), np.uint8)


def shipped_gans(root: Path = ROOT / "checkpoints") -> list[str]:
    """The shipped checkpoints that are projected (GAN generators: no encoder), by name."""
    out = []
    for config in sorted(root.glob("*/config.json")):
        family = json.loads(config.read_text()).get("family")
        if family in PROJECTABLE:
            out.append(config.parent.name)
    return out


def measure(server: Server, name: str, images: int) -> dict[str, object]:
    _, cfg = load_generator(ROOT / "checkpoints" / name)
    data = load_dataset(cfg.dataset.name, "test", resolution=cfg.image.height, channels=cfg.image.channels)
    pick = np.random.RandomState(0).choice(len(data.labels), images, replace=False)
    originals = data.images[pick]  # (N, C, H, W) uint8
    labels = data.labels[pick].numpy()
    latencies, recons, steps = [], [], 0
    for img, y in zip(originals, labels, strict=True):
        pixels = img[0].numpy() if img.shape[0] == 1 else img.permute(1, 2, 0).numpy()  # (H, W) or (H, W, 3)
        query = f"?label={int(y)}" if cfg.conditional else ""
        seconds, out = post_png(server.base, f"/models/{name}/encode{query}", pixels)
        latencies.append(seconds)
        steps = int(str(out["steps"]))
        recons.append(fetch_png(server.base, str(out["reconstruction_url"])))
    rec = torch.from_numpy(np.stack(recons))
    rec = rec[:, None] if rec.dim() == 3 else rec.permute(0, 3, 1, 2)  # (N, C, H, W) uint8
    net, _ = evaluator_for(cfg.dataset.name)
    _, logits_rec = features_and_logits(net, rec)
    _, logits_orig = features_and_logits(net, originals)
    pred_rec, pred_orig = logits_rec.argmax(1), logits_orig.argmax(1)
    mse = ((rec.double() / 127.5 - 1) - (originals.double() / 127.5 - 1)).pow(2).mean(dim=(1, 2, 3)).numpy()
    psnr = 10 * np.log10(4.0 / np.maximum(mse, 1e-12))
    return {
        "model": name, "family": cfg.family, "conditional": cfg.conditional,
        "size": f"{cfg.image.width}×{cfg.image.height}×{cfg.image.channels}", "images": images, "steps": steps,
        "p50_ms": float(np.percentile(latencies, 50) * 1000), "p99_ms": float(np.percentile(latencies, 99) * 1000),
        "class_of_original": float((pred_rec == labels).mean()),
        "agrees_with_original": float((pred_rec == pred_orig).mean()),
        "evaluator_on_originals": float((pred_orig == labels).mean()), "psnr": float(psnr.mean()),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=None, help="default: every shipped GAN generator")
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--steps", type=int, default=0, help="GANSERVE_PROJECTION_STEPS; 0: the service's default")
    p.add_argument("--quick", action="store_true", help="do not write docs/performance.md")
    p.add_argument("--write", action=argparse.BooleanOptionalAction, default=None)
    args = p.parse_args(argv)
    args.models = args.models or shipped_gans()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "checkpoints"
        folder.mkdir()
        for name in args.models:
            (folder / name).symlink_to(ROOT / "checkpoints" / name)
        env = {"GANSERVE_CHECKPOINTS": str(folder), "GANSERVE_DEVICE": "cpu", "GANSERVE_RELOAD_INTERVAL_S": "0",
               "GANSERVE_DEFAULT_MODEL": args.models[0]}
        if args.steps:
            env["GANSERVE_PROJECTION_STEPS"] = str(args.steps)
        header = machine_lines()  # the load before the run
        server = Server("ganserve", "app.main:app", env, "/readyz")
        server.start(Path(tmp))
        try:
            server.wait_ready()
            rows = []
            for name in args.models:
                r = measure(server, name, args.images)
                rows.append(r)
                print(json.dumps(r), flush=True)
        finally:
            server.stop()
    table = markdown_table(
        ["model", "family", "image", "images", "p50 ms", "p99 ms", "evaluator: original's class",
         "agrees with its verdict on the original", "its accuracy on the originals", "PSNR dB"],
        [[str(r["model"]), f"{r['family']}{'' if r['conditional'] else ' (no label)'}", str(r["size"]),
          str(r["images"]), f"{r['p50_ms']:.0f}", f"{r['p99_ms']:.0f}", f"{r['class_of_original']:.3f}",
          f"{r['agrees_with_original']:.3f}", f"{r['evaluator_on_originals']:.3f}", f"{r['psnr']:.1f}"]
         for r in rows])
    text = "\n".join([
        f"`{command_line()}` — {rows[0]['steps']} Adam steps (`GANSERVE_PROJECTION_STEPS`), 1 connection, uvicorn, one "
        "projection worker (single-threaded), held-out test images, with their true class as `label` on the "
        "conditional models (an unconditional model is projected without one, so its class agreement is what the "
        "latent alone recovers):",
        "", table, "", *header, f"- load average after the run: {load_average()}", ""])
    publish("projection", text, args.write, args.quick)
    return 0 if all(math.isfinite(float(str(r["psnr"]))) for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
