"""``GET /interpolate``: latent walks (slerp or lerp) and class morphs as a GIF or a PNG strip."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

import torch
from fastapi import APIRouter, Query, Request, Response

from app import generation as gen
from app.imaging import encode_gif, encode_grid, grid_shape
from app.interpolation import frame_latents, morph_labels
from app.routes.images import LabelQuery, ModelQuery, ScaleQuery, TruncationQuery, VersionQuery
from app.service import ERROR_RESPONSES, ApiError, ServiceDep
from training.latent import SEED_MAX, latents

router = APIRouter(tags=["images"])

MAX_FRAMES = 120
MAX_KEYS = 16
MAX_FPS = 50

OptSeed = Annotated[int | None, Query(ge=0, le=SEED_MAX, description=f"seed 0…{SEED_MAX}; random when omitted")]

INTERPOLATE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            "image/gif": {"schema": {"type": "string", "format": "binary"}},
            "image/png": {"schema": {"type": "string", "format": "binary"}},
        },
        "description": "a GIF animation (format=gif, a download) or a PNG strip of the frames (format=png)",
        "headers": {
            "Content-Disposition": {"schema": {"type": "string"}, "description": 'attachment; filename="….gif"'},
            "ETag": {"schema": {"type": "string"}, "description": "hash of the model's weights and the request"},
            "X-Seed": {"schema": {"type": "string"}, "description": "the key seeds, comma-separated"},
            "X-Model": {"schema": {"type": "string"}, "description": "the model used"},
            "X-Model-Version": {"schema": {"type": "string"}, "description": "the version of the model's weights"},
        },
    },
    304: {"description": "not modified (If-None-Match matched the ETag)"},
    **ERROR_RESPONSES,
}


def parse_seeds(text: str) -> list[int]:
    parts = [p.strip() for p in text.split(",")]
    if not all(p.isdecimal() and p.isascii() for p in parts):
        raise ApiError(422, f"seeds: comma-separated integers in 0…{SEED_MAX}, e.g. seeds=1,5,9")
    keys = [int(p) for p in parts]
    if not 2 <= len(keys) <= MAX_KEYS:
        raise ApiError(422, f"seeds: between 2 and {MAX_KEYS} key seeds, got {len(keys)}")
    if any(k > SEED_MAX for k in keys):
        raise ApiError(422, f"seeds: each seed must be in 0…{SEED_MAX}")
    return keys


@router.get("/interpolate", response_class=Response, responses=INTERPOLATE_RESPONSES,
            summary="Interpolate between seeds (and classes) as a GIF or a PNG strip")
async def interpolate(
    request: Request,
    service: ServiceDep,
    model: ModelQuery = None,
    label: LabelQuery = None,
    from_label: Annotated[str | None, Query(max_length=200, description="class morph: start class")] = None,
    to_label: Annotated[str | None, Query(max_length=200, description="class morph: end class")] = None,
    from_seed: OptSeed = None,
    to_seed: OptSeed = None,
    seeds: Annotated[str | None, Query(max_length=200, pattern=r"^\s*\d+(\s*,\s*\d+)*\s*$",
                                       description=f"2–{MAX_KEYS} key seeds, e.g. 1,5,9 (instead of "
                                                   "from_seed/to_seed)")] = None,
    frames: Annotated[int, Query(ge=2, le=MAX_FRAMES, description="frames in all")] = 24,
    fps: Annotated[int, Query(ge=1, le=MAX_FPS, description="GIF frames per second")] = 12,
    method: Annotated[Literal["slerp", "lerp"], Query(description="spherical or linear interpolation")] = "slerp",
    loop: Annotated[bool, Query(description="come back to the first key (and class): a seamless loop")] = False,
    format: Annotated[Literal["gif", "png"], Query(description="gif: animation download; png: one strip")] = "gif",
    scale: ScaleQuery = 1,
    truncation: TruncationQuery = None,
    version: VersionQuery = None,
) -> Response:
    """Frames along a path through key latents: ``from_seed`` → ``to_seed`` or ``seeds=1,5,9``.

    On conditional models ``label`` fixes the class, or ``from_label``/``to_label`` morph from one
    class to another (soft labels; the latent stays put unless seeds move it too).
    """
    m = gen.lookup_model(service, request, model)
    versioned = gen.check_version(m, version)
    cfg = m.config
    if truncation is None:
        truncation = cfg.truncation
    morph = from_label is not None or to_label is not None
    if morph and label is not None:
        raise ApiError(422, "give either label or from_label/to_label (a class morph), not both")
    if morph and (from_label is None or to_label is None):
        raise ApiError(422, "a class morph needs both from_label and to_label")
    if seeds is not None and (from_seed is not None or to_seed is not None):
        raise ApiError(422, "give either seeds=… (key frames) or from_seed/to_seed, not both")

    fixed = True
    if morph:
        a = gen.resolve_label(m, from_label, "from_label")
        b = gen.resolve_label(m, to_label, "to_label")
        assert a is not None and b is not None
        classes: list[int] = [a, b]
    else:
        one = gen.resolve_label(m, label)
        if one is None and cfg.conditional:
            one, fixed = gen.draw_label(m), False
        classes = [] if one is None else [one]

    if seeds is not None:
        keys = parse_seeds(seeds)
    else:
        if from_seed is None:
            from_seed, fixed = gen.draw_seed(), False
        if to_seed is None:
            # A morph keeps the latent still by default; a walk needs a second point.
            to_seed, fixed = (from_seed, fixed) if morph else (gen.draw_seed(), False)
        keys = [from_seed, to_seed]

    h, w = cfg.image.height * scale, cfg.image.width * scale
    if format == "gif":
        gen.check_budget(frames * h * w, service.settings.max_animation_pixels,
                         f"{frames} frames at scale {scale}")
    else:
        sh, sw = grid_shape(frames, cfg.image.height, cfg.image.width, scale, nrow=frames)
        gen.check_budget(sh * sw, service.settings.max_image_pixels, f"a strip of {frames} frames at scale {scale}")

    params = {"keys": keys, "classes": classes, "morph": morph, "frames": frames, "fps": fps, "method": method,
              "loop": loop, "format": format, "scale": scale, "truncation": float(truncation)}
    etag = gen.make_etag(m, "interpolate", params)
    label_header = ",".join(map(str, classes)) if classes else None
    label_names = ",".join(cfg.class_names[c] for c in classes) if classes else None
    cache_control = gen.cache_control(service, fixed, versioned)
    headers = gen.image_headers(m, etag, cache_control, ",".join(map(str, keys)), label_header, label_names)
    stem = f"{m.name}-{'-'.join(map(str, keys))}" + (f"-class{classes[0]}to{classes[1]}" if morph else "")
    disposition = "attachment" if format == "gif" else "inline"
    headers["Content-Disposition"] = f'{disposition}; filename="{stem}.{format}"'
    media_type = f"image/{format}"
    if fixed and gen.etag_matches(request, etag):
        return gen.not_modified(headers)
    cache = service.cache
    if fixed and cache is not None and (body := cache.get(etag)) is not None:
        return Response(body, media_type=media_type, headers=headers)

    key_z = latents(keys, cfg.z_dim, truncation)  # (K, z_dim) on the CPU
    z = frame_latents(key_z, frames, loop, method)  # (T, z_dim)
    labels: torch.Tensor | None = None
    if morph:
        labels = morph_labels(classes[0], classes[1], cfg.num_classes, frames, loop)  # (T, K) soft
    elif classes:
        labels = torch.full((frames,), classes[0], dtype=torch.long)
    images = await gen.run(service, m, z, labels)
    if format == "gif":
        body = await asyncio.to_thread(encode_gif, images, scale, fps)
    else:
        body = await asyncio.to_thread(encode_grid, images, scale, frames)
    if fixed and cache is not None:
        cache.put(etag, body)
    return Response(body, media_type=media_type, headers=headers)
