"""``GET /generate`` and the permalinks ``GET /models/{model}/seeds/{seed}.png``.

Their parameters are specified in ``app.params`` (``GENERATE``, ``SEED_PNG``); the endpoints are
built from those specifications, and ``app.fastpath`` parses the same ones.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from fastapi import APIRouter, Request, Response

from app import generation as gen
from app import params as P
from app.batcher import SeededLatents
from app.imaging import encode_grid, grid_shape
from app.service import ERROR_RESPONSES, ServiceDep
from app.zlatent import ExplicitLatents, decode_z, z_digest
from training.latent import SEED_MAX

router = APIRouter(tags=["images"])

_IMAGE_HEADERS = {
    "ETag": {"schema": {"type": "string"}, "description": "hash of the model's weights and the request"},
    "Cache-Control": {"schema": {"type": "string"}, "description": "no-store when a seed or label was drawn; "
                      "else immutable when the URL names the loaded version, revalidated when it names none"},
    "X-Model-Version": {"schema": {"type": "string"}, "description": "the version of the model's weights"},
    "X-Seed": {"schema": {"type": "string"}, "description": "the (first) seed used"},
    "X-Model": {"schema": {"type": "string"}, "description": "the model used"},
    "X-Label": {"schema": {"type": "string"}, "description": "the class index used (conditional models)"},
}
PNG_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
          "description": "a PNG image (grey or RGB)", "headers": _IMAGE_HEADERS},
    304: {"description": "not modified (If-None-Match matched the ETag)"},
    **ERROR_RESPONSES,
}


async def png_job(service: gen.Service, request: Request, v: dict[str, Any]) -> gen.ImageJob:
    """The image (or ``n``-image grid) a ``/generate`` or permalink request names; 4xx / 503 as ApiError."""
    model = gen.lookup_model(service, request, v["model"], explicit=v.get("z") is not None)
    versioned = gen.check_version(model, v["version"])
    cfg = model.config
    label = gen.resolve_label(model, v["label"])
    n, seed, scale = v.get("n", 1), v.get("seed"), v["scale"]
    text_z = v.get("z")
    if text_z is not None:
        if seed is not None:
            raise gen.ApiError(422, "give either seed or z (an explicit latent), not both")
        if n != 1:
            raise gen.ApiError(422, f"z is one latent, one image: n must be 1 with z (got n={n}); use seeds for grids")
        raw = decode_z(text_z, cfg.z_dim)
        return z_job(service, model, versioned, label, raw, v["truncation"], scale)
    truncation = cfg.truncation if v["truncation"] is None else v["truncation"]
    if seed is not None and seed + n - 1 > SEED_MAX:
        raise gen.ApiError(422, f"seed + n − 1 must be ≤ {SEED_MAX}: with n={n}, seed ≤ {SEED_MAX - n + 1}")
    h, w = grid_shape(n, cfg.image.height, cfg.image.width, scale)
    gen.check_budget(h * w, service.settings.max_image_pixels, f"a {n}-image grid at scale {scale}")

    fixed = seed is not None and (label is not None or not cfg.conditional)
    if seed is None:
        seed = gen.draw_seed(n)
    if label is None and cfg.conditional:
        label = gen.draw_label(model)
    return gen.ImageJob(
        model=model, kind="png", fixed=fixed, versioned=versioned, seed=str(seed),
        values={"seed": seed, "n": n, "label": label, "truncation": float(truncation), "scale": scale},
        classes=[] if label is None else [label], media_type="image/png",
        # Drawn, run and encoded in the model's worker thread; the label goes as an int.
        z=SeededLatents(seed, n, cfg.z_dim, float(truncation)), labels=label,
        encode=partial(encode_grid, scale=scale),
    )


def z_job(service: gen.Service, model: gen.LoadedModel, versioned: bool, label: int | None, raw: bytes,
          truncation: float | None, scale: int) -> gen.ImageJob:
    """The image of an explicit latent (``decode_z``'s bytes): as a seed's, but identified by the
    latent's bytes, and scaled by ``truncation`` only when the request gives one (the latent as it is)."""
    cfg = model.config
    psi = 1.0 if truncation is None else float(truncation)
    h, w = grid_shape(1, cfg.image.height, cfg.image.width, scale)
    gen.check_budget(h * w, service.settings.max_image_pixels, f"an image at scale {scale}")
    fixed = label is not None or not cfg.conditional
    if label is None and cfg.conditional:
        label = gen.draw_label(model)
    return gen.ImageJob(
        model=model, kind="png", fixed=fixed, versioned=versioned, seed=None,
        values={"z": z_digest(raw), "label": label, "truncation": psi, "scale": scale},
        classes=[] if label is None else [label], media_type="image/png",
        z=ExplicitLatents(raw, psi), labels=label, encode=partial(encode_grid, scale=scale),
    )


async def render_png(service: gen.Service, request: Request, values: dict[str, Any]) -> gen.ImageResult:
    return await gen.render(service, request, await png_job(service, request, values))


async def _answer(service: gen.Service, request: Request, values: dict[str, Any]) -> Response:
    return (await render_png(service, request, values)).response()


GENERATE_DOC = """One PNG: the image of ``seed`` (and ``label``), or a grid of ``n`` images of seeds seed…seed+n−1.

The same values give the same bytes; responses whose seed (and label, for conditional models)
were given carry an ETag (``If-None-Match`` → 304), and are immutable when the URL names the
model's ``version``.
"""
generate = P.GENERATE.endpoint("generate", _answer, ServiceDep, GENERATE_DOC)
router.get("/generate", response_class=Response, responses=PNG_RESPONSES,
           summary="Generate an image or an n-image grid")(generate)

seed_png = P.SEED_PNG.endpoint("seed_png", _answer, ServiceDep, "The same bytes as ``/generate?model=…&seed=…`` "
                               "with the same label, truncation, scale and version.")
router.get("/models/{model}/seeds/{seed}.png", response_class=Response, responses=PNG_RESPONSES,
           summary="Permalink of one seed's image")(seed_png)

z_png = P.Z_PNG.endpoint("z_png", _answer, ServiceDep, "The same bytes as ``/generate?model=…&z=…`` with the same "
                         "label, truncation, scale and version: the permalink of an explicit latent (``encode``'s).")
router.get("/models/{model}/z/{z}.png", response_class=Response, responses=PNG_RESPONSES,
           summary="Permalink of an explicit latent's image")(z_png)
