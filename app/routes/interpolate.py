"""``GET /interpolate``: latent walks (slerp or lerp) and class morphs as a GIF or a PNG strip.

Its parameters are specified in ``app.params`` (``INTERPOLATE``); the answer takes the same path
as ``/generate`` (``app.generation.render``): the frame latents and labels are drawn, run and
encoded in the model's worker thread.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from fastapi import APIRouter, Request, Response

from app import generation as gen
from app import params as P
from app.batcher import Encoder, Labels
from app.imaging import encode_gif, encode_grid, grid_shape
from app.interpolation import FrameLatents, MorphLabels
from app.service import ERROR_RESPONSES, ApiError, ServiceDep
from app.zlatent import decode_z, z_digest
from training.latent import SEED_MAX

router = APIRouter(tags=["images"])

MAX_KEYS = P.MAX_KEYS

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


async def interpolate_job(service: gen.Service, request: Request, v: dict[str, Any]) -> gen.ImageJob:
    """The frames an ``/interpolate`` request names; 4xx / 503 as ApiError."""
    explicit = v.get("from_z") is not None and v.get("to_z") is not None
    m = gen.lookup_model(service, request, v["model"], explicit=explicit)
    versioned = gen.check_version(m, v["version"])
    cfg = m.config
    truncation = cfg.truncation if v["truncation"] is None else v["truncation"]
    label, from_label, to_label = v["label"], v["from_label"], v["to_label"]
    from_seed, to_seed, seeds = v["from_seed"], v["to_seed"], v["seeds"]
    frames, fps, method, loop, format, scale = v["frames"], v["fps"], v["method"], v["loop"], v["format"], v["scale"]
    morph = from_label is not None or to_label is not None
    if morph and label is not None:
        raise ApiError(422, "give either label or from_label/to_label (a class morph), not both")
    if morph and (from_label is None or to_label is None):
        raise ApiError(422, "a class morph needs both from_label and to_label")
    from_z, to_z = v.get("from_z"), v.get("to_z")
    if seeds is not None and (from_seed is not None or to_seed is not None):
        raise ApiError(422, "give either seeds=… (key frames) or from_seed/to_seed, not both")
    if seeds is not None and (from_z is not None or to_z is not None):
        raise ApiError(422, "give either seeds=… (key frames) or from_z/to_z, not both")
    if from_z is not None and from_seed is not None:
        raise ApiError(422, "give either from_seed or from_z (an explicit latent), not both")
    if to_z is not None and to_seed is not None:
        raise ApiError(422, "give either to_seed or to_z (an explicit latent), not both")
    # Explicit latents are checked (length, alphabet, finite) before anything is drawn.
    z_from = None if from_z is None else decode_z(from_z, cfg.z_dim, "from_z")
    z_to = None if to_z is None else decode_z(to_z, cfg.z_dim, "to_z")

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

    keys: list[int | bytes]
    if seeds is not None:
        keys = list(parse_seeds(seeds))
    else:
        start: int | bytes | None = z_from if z_from is not None else from_seed
        end: int | bytes | None = z_to if z_to is not None else to_seed
        if start is None:
            start, fixed = gen.draw_seed(), False
        if end is None:
            # A morph keeps the latent still by default; a walk needs a second point.
            end, fixed = (start, fixed) if morph else (gen.draw_seed(), False)
        keys = [start, end]

    h, w = cfg.image.height * scale, cfg.image.width * scale
    encode: Encoder
    if format == "gif":
        gen.check_budget(frames * h * w, service.settings.max_animation_pixels,
                         f"{frames} frames at scale {scale}")
        encode = partial(encode_gif, scale=scale, fps=fps)
    else:
        sh, sw = grid_shape(frames, cfg.image.height, cfg.image.width, scale, nrow=frames)
        gen.check_budget(sh * sw, service.settings.max_image_pixels, f"a strip of {frames} frames at scale {scale}")
        encode = partial(encode_grid, scale=scale, nrow=frames)

    labels: Labels = None
    if morph:
        labels = MorphLabels(classes[0], classes[1], cfg.num_classes, frames, loop)  # (T, K) soft, in the worker
    elif classes:
        labels = classes[0]
    # A seed key by its number; an explicit latent (z) by its bytes' digest: "z" + 16 hex digits.
    names = [str(k) if isinstance(k, int) else "z" + z_digest(k) for k in keys]
    stem = f"{m.name}-{'-'.join(names)}" + (f"-class{classes[0]}to{classes[1]}" if morph else "")
    disposition = "attachment" if format == "gif" else "inline"
    values: dict[str, Any] = {"keys": names if z_from is not None or z_to is not None else keys, "classes": classes,
                              "morph": morph, "frames": frames, "fps": fps, "method": method, "loop": loop,
                              "format": format, "scale": scale, "truncation": float(truncation)}
    z_truncation = 1.0
    if z_from is not None or z_to is not None:
        # An explicit latent is taken as it is unless the request names a truncation.
        z_truncation = 1.0 if v["truncation"] is None else float(v["truncation"])
        values["z_truncation"] = z_truncation
    return gen.ImageJob(
        model=m, kind="interpolate", fixed=fixed, versioned=versioned, seed=",".join(names),
        values=values, classes=classes, media_type=f"image/{format}",
        z=FrameLatents(tuple(keys), cfg.z_dim, truncation, frames, loop, method, z_truncation), labels=labels,
        encode=encode,
        extra_headers={"Content-Disposition": f'{disposition}; filename="{stem}.{format}"'},
    )


async def render_interpolation(service: gen.Service, request: Request, values: dict[str, Any]) -> gen.ImageResult:
    return await gen.render(service, request, await interpolate_job(service, request, values))


async def _answer(service: gen.Service, request: Request, values: dict[str, Any]) -> Response:
    return (await render_interpolation(service, request, values)).response()


INTERPOLATE_DOC = """Frames along a path through key latents: ``from_seed`` → ``to_seed`` or ``seeds=1,5,9``.

On conditional models ``label`` fixes the class, or ``from_label``/``to_label`` morph from one
class to another (soft labels; the latent stays put unless seeds move it too).
"""
interpolate = P.INTERPOLATE.endpoint("interpolate", _answer, ServiceDep, INTERPOLATE_DOC)
router.get("/interpolate", response_class=Response, responses=INTERPOLATE_RESPONSES,
           summary="Interpolate between seeds (and classes) as a GIF or a PNG strip")(interpolate)
