"""The baseline: what a user would write first to serve a checkpoint.

A FastAPI app whose sync endpoints run one forward pass and one PNG encode per request
(FastAPI runs sync endpoints in its thread pool; torch keeps its default thread count).
It uses the same checkpoint reader, seed rule and image helpers as ganserve, so the two
servers make the same pictures and differ only in how they serve them. A translator
checkpoint (pix2pix) is served by ``POST /models/{model}/translate``: the PNG body decoded
with Pillow, resized to the input, one forward pass, the PNG of the answer.

    NAIVE_CHECKPOINT=checkpoints/mnist-cgan python -m uvicorn bench.naive_server:app --port 8001
"""

from __future__ import annotations

import io
import os
import random

import numpy as np
import torch
from fastapi import Body, FastAPI, Response
from PIL import Image

from training.checkpoint import load_generator
from training.images import png_bytes, to_uint8
from training.latent import latents

device = "cuda" if torch.cuda.is_available() else "cpu"
generator, config = load_generator(os.environ.get("NAIVE_CHECKPOINT", "checkpoints/mnist-cgan"), device)
app = FastAPI()


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/generate")
def generate(label: int | None = None, seed: int | None = None) -> Response:
    if seed is None:
        seed = random.randrange(2**32)
    if label is None and config.num_classes:
        label = random.randrange(config.num_classes)
    z = latents([seed], config.z_dim).to(device)
    labels = torch.tensor([label], device=device) if config.num_classes else None
    with torch.no_grad():
        image = to_uint8(generator(z, labels))[0]
    return Response(png_bytes(image), media_type="image/png")


@app.post("/models/{model}/translate")
def translate(model: str, body: bytes = Body(media_type="image/png")) -> Response:
    spec = config.input
    assert spec is not None, "not a translator checkpoint"
    image = Image.open(io.BytesIO(body)).convert("L" if spec.channels == 1 else "RGB")
    image = image.resize((spec.width, spec.height), Image.Resampling.BILINEAR)
    x = torch.from_numpy(np.asarray(image, np.float32)).div(127.5).sub(1.0)  # (H, W) or (H, W, C) in [-1, 1]
    x = (x[None] if x.dim() == 2 else x.permute(2, 0, 1))[None].to(device)  # (1, C, H, W)
    with torch.no_grad():
        out = to_uint8(generator(x))[0]
    return Response(png_bytes(out), media_type="image/png")
