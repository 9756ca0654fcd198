"""``GET /generate`` and the permalinks ``GET /models/{model}/seeds/{seed}.png``."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response

from app import generation as gen
from app.batcher import SeededLatents
from app.imaging import encode_grid, grid_shape
from app.service import ERROR_RESPONSES, ServiceDep
from training.checkpoint import NAME_PATTERN
from training.latent import SEED_MAX

router = APIRouter(tags=["images"])

MAX_N = 64
MAX_LABEL = 200  # characters of a label query
MAX_SCALE = 8

ModelQuery = Annotated[str | None, Query(pattern=NAME_PATTERN, max_length=64,
                                         description="model name (default: the service's default model)")]
ModelPath = Annotated[str, Path(pattern=NAME_PATTERN, max_length=64, description="model name")]
LabelQuery = Annotated[str | None, Query(max_length=MAX_LABEL, description=(
    "class index (0…K−1) or class name of a conditional model; drawn at random when omitted; "
    "not allowed on unconditional models"))]
SeedQuery = Annotated[int | None, Query(ge=0, le=SEED_MAX, description=(
    f"latent seed 0…{SEED_MAX}; drawn at random when omitted (then the response is not cacheable)"))]
TruncationQuery = Annotated[float | None, Query(gt=0.0, le=1.0, allow_inf_nan=False, description=(
    "truncation ψ in (0, 1]: z is scaled by ψ (default: the model's own, `truncation` on its card; 1 unless its "
    "metrics were measured at another)"))]
ScaleQuery = Annotated[int, Query(ge=1, le=MAX_SCALE, description="nearest-neighbour upscaling factor")]
VersionQuery = Annotated[str | None, Query(pattern=gen.VERSION_PATTERN, description=(
    "the model version the URL was made for (`version` on its card, `X-Model-Version`): the response is then "
    "immutable; another version than the loaded one → 404 naming it. Without it the response is revalidated"))]

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


async def render_png_parts(
    service: gen.Service, request: Request, model_name: str | None, label_raw: str | None, seed: int | None,
    n: int, truncation: float | None, scale: int, version: str | None,
) -> tuple[int, bytes, dict[str, str]]:
    """(status 200 or 304, PNG bytes or b"", headers) of a PNG request; ApiError for a 4xx / 503."""
    model = gen.lookup_model(service, request, model_name)
    versioned = gen.check_version(model, version)
    cfg = model.config
    label = gen.resolve_label(model, label_raw)
    if truncation is None:
        truncation = cfg.truncation
    if seed is not None and seed + n - 1 > SEED_MAX:
        raise gen.ApiError(422, f"seed + n − 1 must be ≤ {SEED_MAX}: with n={n}, seed ≤ {SEED_MAX - n + 1}")
    h, w = grid_shape(n, cfg.image.height, cfg.image.width, scale)
    gen.check_budget(h * w, service.settings.max_image_pixels, f"a {n}-image grid at scale {scale}")

    fixed = seed is not None and (label is not None or not cfg.conditional)
    if seed is None:
        seed = gen.draw_seed(n)
    if label is None and cfg.conditional:
        label = gen.draw_label(model)
    params = {"seed": seed, "n": n, "label": label, "truncation": float(truncation), "scale": scale}
    etag = gen.make_etag(model, "png", params)
    cache_control = gen.cache_control(service, fixed, versioned)
    headers = gen.image_headers(model, etag, cache_control, str(seed), None if label is None else str(label),
                                None if label is None else cfg.class_names[label])
    if fixed and gen.etag_matches(request, etag):
        return 304, b"", headers
    cache = service.cache
    if fixed and cache is not None and (body := cache.get(etag)) is not None:
        return 200, body, headers

    z = SeededLatents(seed, n, cfg.z_dim, float(truncation))  # drawn in the model's worker thread
    # The label goes as an int (the worker makes the tensor), the image is encoded in the worker too.
    body = await gen.run(service, model, z, label, encode=partial(encode_grid, scale=scale))
    if fixed and cache is not None:
        cache.put(etag, body)
    return 200, body, headers


async def render_png(
    service: gen.Service, request: Request, model_name: str | None, label_raw: str | None, seed: int | None,
    n: int, truncation: float | None, scale: int, version: str | None,
) -> Response:
    status, body, headers = await render_png_parts(service, request, model_name, label_raw, seed, n, truncation,
                                                   scale, version)
    if status == 304:
        return gen.not_modified(headers)
    return Response(body, media_type="image/png", headers=headers)


@router.get("/generate", response_class=Response, responses=PNG_RESPONSES,
            summary="Generate an image or an n-image grid")
async def generate(
    request: Request,
    service: ServiceDep,
    model: ModelQuery = None,
    label: LabelQuery = None,
    seed: SeedQuery = None,
    n: Annotated[int, Query(ge=1, le=MAX_N, description="images in the grid: seeds seed…seed+n−1")] = 1,
    truncation: TruncationQuery = None,
    scale: ScaleQuery = 1,
    version: VersionQuery = None,
) -> Response:
    """One PNG: the image of ``seed`` (and ``label``), or a grid of ``n`` images of seeds seed…seed+n−1.

    The same values give the same bytes; responses whose seed (and label, for conditional models)
    were given carry an ETag (``If-None-Match`` → 304), and are immutable when the URL names the
    model's ``version``.
    """
    return await render_png(service, request, model, label, seed, n, truncation, scale, version)


@router.get("/models/{model}/seeds/{seed}.png", response_class=Response, responses=PNG_RESPONSES,
            summary="Permalink of one seed's image")
async def seed_png(
    request: Request,
    service: ServiceDep,
    model: ModelPath,
    seed: Annotated[int, Path(ge=0, le=SEED_MAX, description=f"latent seed 0…{SEED_MAX}")],
    label: LabelQuery = None,
    truncation: TruncationQuery = None,
    scale: ScaleQuery = 1,
    version: VersionQuery = None,
) -> Response:
    """The same bytes as ``/generate?model=…&seed=…`` with the same label, truncation, scale and version."""
    return await render_png(service, request, model, label, seed, 1, truncation, scale, version)
