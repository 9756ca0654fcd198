"""The peer: the same checkpoint served by LitServe (PyPI ``litserve``), configured as fairly as we can.

LitServe is a FastAPI-based model server: its HTTP front end hands each request to worker processes
that batch them dynamically (``max_batch_size``, ``batch_timeout``) and run ``LitAPI.predict``.
Here the worker reads the checkpoint with ganserve's own reader (``load_generator``), draws the
latents with ganserve's seed rule and encodes the PNG with the training package's helper, so the
servers make the same pictures and differ only in how they serve them. One torch thread per
worker, as ganserve's workers on the CPU.

    LITSERVE_CHECKPOINT=checkpoints/mnist-cgan LITSERVE_WORKERS=2 LITSERVE_MAX_BATCH=32 LITSERVE_WAIT_MS=2 \\
        LITSERVE_FAST_QUEUE=1 python bench/litserve_server.py --port 8002   # fast_queue: ZeroMQ, not mp queues
    curl -X POST localhost:8002/predict -H 'content-type: application/json' -d '{"seed": 1, "label": 3}' -o 1.png

Route: ``POST /predict`` with ``{"seed": int, "label": int}`` (label omitted for an unconditional
model); ``GET /health`` says 200 once the workers are up.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import litserve as ls
import torch
from fastapi import HTTPException, Response

from training.checkpoint import load_generator
from training.images import png_bytes, to_uint8
from training.latent import SEED_MAX, latents


class GeneratorAPI(ls.LitAPI):
    """One worker: the generator, run on a dynamic batch of (seed, label) requests."""

    def setup(self, device: str) -> None:
        torch.set_num_threads(int(os.environ.get("LITSERVE_THREADS", "1")))
        self.device = torch.device(device)
        self.generator, self.config = load_generator(os.environ["LITSERVE_CHECKPOINT"], self.device)

    # No annotations on decode_request's `request` and encode_response's result: LitServe reads them
    # to choose the request body and response types (unannotated: a JSON body, a plain Response).
    def decode_request(self, request):
        try:
            seed = int(request["seed"])
            label = int(request["label"]) if self.config.num_classes else None
        except (KeyError, TypeError, ValueError) as e:
            raise HTTPException(422, "the body is {\"seed\": int, \"label\": int}") from e
        if not 0 <= seed <= SEED_MAX or (label is not None and not 0 <= label < self.config.num_classes):
            raise HTTPException(422, f"seed 0…{SEED_MAX}, label 0…{self.config.num_classes - 1}")
        return seed, label

    def batch(self, inputs: list[tuple[int, int | None]]) -> tuple[torch.Tensor, torch.Tensor | None]:
        z = latents([seed for seed, _ in inputs], self.config.z_dim).to(self.device)  # (B, z_dim)
        labels = (torch.tensor([label for _, label in inputs], device=self.device)
                  if self.config.num_classes else None)  # (B,)
        return z, labels

    def predict(self, x: tuple[torch.Tensor, torch.Tensor | None]) -> Any:
        z, labels = x
        with torch.inference_mode():
            return to_uint8(self.generator(z, labels))  # (B, H, W, C) uint8

    def unbatch(self, output: Any) -> list[Any]:
        return list(output)

    def encode_response(self, output):
        return Response(png_bytes(output), media_type="image/png")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8002)
    args = p.parse_args()
    api = GeneratorAPI(max_batch_size=int(os.environ.get("LITSERVE_MAX_BATCH", "32")),
                       batch_timeout=float(os.environ.get("LITSERVE_WAIT_MS", "2")) / 1000)
    server = ls.LitServer(api, accelerator="cpu" if not torch.cuda.is_available() else "auto",
                          workers_per_device=int(os.environ.get("LITSERVE_WORKERS", "1")), timeout=30,
                          fast_queue=os.environ.get("LITSERVE_FAST_QUEUE", "0") == "1")
    server.run(host=args.host, port=args.port, generate_client_file=False, log_level="warning")


if __name__ == "__main__":
    main()
