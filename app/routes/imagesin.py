"""Images in: ``POST /models/{model}/encode``, ``/translate`` and ``/reconstruct``.

The body is one image (``image/png``, ``image/jpeg``, ``image/webp``; or ``multipart/form-data``
with a field ``image``), taken in by ``app.uploads`` and decoded and resized off the event loop.
A checkpoint with an encoder (ae, conv-ae, vae) reconstructs and encodes by its image-in batchers
(``app.imagein``: concurrent uploads to one model share one forward pass); ``encode`` on a GAN
generator is a projection (``app.projection``: bounded Adam steps on the pixel error from seeded
starts, in its own bounded pool). ``encode`` answers the latent as a ``z`` with the ``GET /generate``
URL that draws it. A model that cannot do what a route asks: 422 naming the models that can, after
the 404 of an unknown model. Nothing of the upload is read before the model, its label and the
pool's room are known to be good.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from app import generation as gen
from app import params as P
from app.imagein import ENCODE, RECONSTRUCT, TRANSLATE, ImageRows
from app.imaging import encode_grid, grid_shape
from app.projection import PROJECTABLE, Cancelled, PoolFull, differentiable_copy, project
from app.registry import LoadedModel
from app.service import ERROR_RESPONSES, ApiError, ErrorOut, ServiceDep
from app.uploads import ALLOWED_TYPES, MULTIPART, decode_upload, receive_upload
from app.zlatent import encode_z

router = APIRouter(tags=["images in"])

_BINARY = {"schema": {"type": "string", "format": "binary"}}
UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "one image: its bytes as the body, or the field `image` of a multipart form",
        "content": {
            **{t: _BINARY for t in ALLOWED_TYPES},
            MULTIPART: {"schema": {"type": "object", "required": ["image"], "properties": {
                "image": {"type": "string", "format": "binary", "description": "the image file"},
                "label": {"type": "string", "description": "class index or name (instead of the query's)"},
            }}},
        },
    },
}
UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    404: ERROR_RESPONSES[404],
    413: {"model": ErrorOut, "description": "the body is larger than GANSERVE_MAX_UPLOAD_BYTES, or the image has "
                                            "more pixels than GANSERVE_MAX_UPLOAD_PIXELS (judged from its header)"},
    415: {"model": ErrorOut, "description": "not a PNG, JPEG or WebP image (judged from its bytes)"},
    422: {"model": ErrorOut, "description": "a bad value, an empty, undecodable or truncated image, a multipart "
                                            "body without `image`, or a model that cannot do this"},
    503: ERROR_RESPONSES[503],
}
PNG_OUT: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
          "description": "a PNG image at the model's size (× scale)",
          "headers": {"X-Model": {"schema": {"type": "string"}, "description": "the model used"},
                      "X-Model-Version": {"schema": {"type": "string"}, "description": "its version"}}},
    **UPLOAD_ERRORS,
}


class Encoded(BaseModel):
    model: str
    version: str = Field(description="the model version the latent belongs to")
    z: str = Field(description="the latent: base64url of z_dim little-endian float32 values")
    label: int | None = Field(default=None, description="the class index (conditional models)")
    reconstruction_url: str = Field(description="the versioned GET /generate URL that draws the latent's image")
    method: str = Field(description="projection (Adam steps on the pixel error) or encoder")
    steps: int = Field(description="Adam steps of the projection (0 for an encoder)")
    mse: float = Field(description="mean squared error of the reconstruction to the uploaded image, in [-1, 1] "
                                   "units (PSNR = 10·log10(4 / mse))")


def _able(service: gen.Service, kind: str) -> list[str]:
    """The loaded models that answer ``kind`` (ENCODE: by an encoder or by projection)."""
    registry = service.require_registry()
    return [n for n in registry.names() if kind in registry.models[n].image_modules
            or (kind == ENCODE and _projectable(registry.models[n]))]


def _projectable(model: LoadedModel) -> bool:
    return model.config.family in PROJECTABLE and model.batcher is not None


def _cannot(model: LoadedModel, verb: str, what: str, able: list[str]) -> ApiError:
    who = ", ".join(able) if able else f"no loaded model can {verb}"
    return ApiError(422, f"model {model.name!r} ({model.config.family}) cannot {verb}: {what}; models that can: "
                         f"{who}", allowed=able)


async def _upload_pixels(service: gen.Service, request: Request, model: LoadedModel) -> tuple[Any, dict[str, str]]:
    """The request's image decoded and resized to the model's input off the event loop → ((H, W, C) uint8,
    the multipart body's text fields)."""
    settings, cfg = service.settings, model.config
    takes = cfg.input or cfg.image  # a translator's input, else the model's own images
    upload = await receive_upload(request, settings.max_upload_bytes)
    pixels = await asyncio.to_thread(decode_upload, upload.image, (takes.height, takes.width), takes.channels,
                                     settings.max_upload_pixels)  # (H, W, C) uint8
    return pixels, upload.fields


def _reconstruction_url(model: LoadedModel, z: str, cls: int | None) -> str:
    query = {"model": model.name, "z": z, **({"label": str(cls)} if cls is not None else {}),
             "version": model.config.version}
    return f"/generate?{urlencode(query)}"


async def _encode(service: gen.Service, request: Request, values: dict[str, Any]) -> Encoded:
    """The latent ``z`` of the uploaded image, and the ``GET /generate`` URL that draws it — so a real
    image can be addressed, cached and interpolated like a seed.

    Autoencoders and VAEs encode it with their encoder (``encoder.safetensors``): the code, or the VAE's
    mean (a VAE sampled through an ex-post mixture: the mean mapped back through the mixture, so its
    image is the decoder's image of the mean); uploads to one model are batched like ``/generate``.
    GAN generators are projected: ``GANSERVE_PROJECTION_STEPS`` Adam steps on the pixel error
    from seeded starts, with the class given by ``label`` (query or multipart field; required on
    conditional models). Either way the same image gives the same ``z``, which is drawn as it is
    (truncation 1)."""
    m = gen.find_model(service, request, values["model"])
    if ENCODE in m.image_modules:
        return await _encode_by_encoder(service, request, m, values["label"])
    label = values["label"]
    if not _projectable(m):
        raise _cannot(m, "encode", f"it has no encoder (encoder.safetensors), and projection is for GAN generators "
                                   f"({', '.join(PROJECTABLE)})", _able(service, ENCODE))
    pool = service.projection
    if pool is None:
        raise ApiError(503, "not ready: the service is starting", headers={"Retry-After": "1"})
    settings = service.settings
    cls = gen.resolve_label(m, label)
    if pool.full:
        raise _busy()
    upload = await receive_upload(request, settings.max_upload_bytes)
    if "label" in upload.fields:
        form_label = gen.resolve_label(m, upload.fields["label"])
        if cls is not None and form_label != cls:
            raise ApiError(422, "label: the query and the form give different classes; give it once")
        cls = form_label
    cfg = m.config
    if cfg.conditional and cls is None:
        raise ApiError(422, f"label: model {m.name!r} is conditional: name the class to project into "
                            f"(index 0…{cfg.num_classes - 1} or name)", allowed=list(cfg.class_names))
    pixels = await asyncio.to_thread(decode_upload, upload.image, (cfg.image.height, cfg.image.width),
                                     cfg.image.channels, settings.max_upload_pixels)  # (H, W, C) uint8
    steps = settings.projection_steps
    served = m.generator

    def work(cancelled: Any) -> Any:
        target = ImageRows(pixels)()  # (1, C, H, W) in [-1, 1]
        return project(differentiable_copy(served), target, cls, cfg.z_dim, steps, cancelled=cancelled)

    try:
        result = await pool.run(work)
    except PoolFull:
        raise _busy() from None
    except Cancelled:  # the client went away; nobody reads this
        raise ApiError(503, "projection cancelled", headers={"Retry-After": "1"}) from None
    z = encode_z(result.z)
    return Encoded(model=m.name, version=cfg.version, z=z, label=cls, reconstruction_url=_reconstruction_url(m, z, cls),
                   method="projection", steps=result.steps, mse=round(result.mse, 6))


async def _encode_by_encoder(service: gen.Service, request: Request, m: LoadedModel, label: str | None) -> Encoded:
    gen.resolve_label(m, label)  # an autoencoder is unconditional: a label is a 422
    pixels, fields = await _upload_pixels(service, request, m)
    if "label" in fields:
        gen.resolve_label(m, fields["label"])
    row = await gen.run(service, m, ImageRows(pixels), None, batcher=m.image_batchers[ENCODE])  # (1, z_dim + 1)
    z = encode_z(row[0, :-1])
    return Encoded(model=m.name, version=m.config.version, z=z, label=None,
                   reconstruction_url=_reconstruction_url(m, z, None), method="encoder", steps=0,
                   mse=round(float(row[0, -1]), 6))


def _busy() -> ApiError:
    return ApiError(503, "every projection worker is busy and the queue is full (GANSERVE_PROJECTION_WORKERS, "
                         "GANSERVE_PROJECTION_QUEUE); retry shortly", headers={"Retry-After": "2"})


def _png_response(m: LoadedModel, body: bytes) -> Response:
    return Response(body, media_type="image/png", headers={
        "X-Model": m.name, "X-Model-Version": m.config.version, "Cache-Control": "no-store"})


async def _image_to_image(service: gen.Service, request: Request, values: dict[str, Any], kind: str,
                          what: str) -> Response:
    m = gen.find_model(service, request, values["model"])
    if kind not in m.image_modules:
        raise _cannot(m, kind, what, _able(service, kind))
    cfg, scale = m.config, values["scale"]
    h, w = grid_shape(1, cfg.image.height, cfg.image.width, scale)
    gen.check_budget(h * w, service.settings.max_image_pixels, f"an image at scale {scale}")
    pixels, _ = await _upload_pixels(service, request, m)
    body = await gen.run(service, m, ImageRows(pixels), None, encode=partial(encode_grid, scale=scale),
                         batcher=m.image_batchers[kind])
    return _png_response(m, body)


async def _translate(service: gen.Service, request: Request, values: dict[str, Any]) -> Response:
    return await _image_to_image(service, request, values, TRANSLATE,
                                 "it is not an image-to-image translator (pix2pix)")


async def _reconstruct(service: gen.Service, request: Request, values: dict[str, Any]) -> Response:
    return await _image_to_image(service, request, values, RECONSTRUCT,
                                 "it has no encoder (encoder.safetensors) to reconstruct with")


encode = P.ENCODE.endpoint("encode", _encode, ServiceDep, _encode.__doc__ or "")
router.post("/models/{model}/encode", response_model=Encoded, responses=UPLOAD_ERRORS, openapi_extra=UPLOAD_BODY,
            summary="The latent of an uploaded image (projection for GAN generators)")(encode)

translate = P.TRANSLATE.endpoint(
    "translate", _translate, ServiceDep, "Image-to-image translation by a pix2pix checkpoint: the uploaded image "
    "resized to its input → ``image/png`` (``scale``× nearest-neighbour). Other models: 422 naming the ones that can.")
router.post("/models/{model}/translate", response_class=Response, responses=PNG_OUT, openapi_extra=UPLOAD_BODY,
            summary="Translate an uploaded image (pix2pix translators)")(translate)

reconstruct = P.RECONSTRUCT.endpoint(
    "reconstruct", _reconstruct, ServiceDep, "An autoencoder's or VAE's reconstruction of the uploaded image → "
    "``image/png`` (``scale``× nearest-neighbour): its encoder's latent drawn by its generator, the image "
    "``encode``'s ``reconstruction_url`` draws. Uploads to one model are batched like ``/generate``. Models "
    "without an encoder (``encoder.safetensors``): 422 naming the ones that can.")
router.post("/models/{model}/reconstruct", response_class=Response, responses=PNG_OUT, openapi_extra=UPLOAD_BODY,
            summary="Reconstruct an uploaded image (autoencoders and VAEs with an encoder)")(reconstruct)
