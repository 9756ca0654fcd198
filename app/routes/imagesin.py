"""Images in: ``POST /models/{model}/encode``, ``/translate`` and ``/reconstruct``.

The body is one image (``image/png``, ``image/jpeg``, ``image/webp``; or ``multipart/form-data``
with a field ``image``), taken in by ``app.uploads``. ``encode`` on a GAN generator is a
projection (``app.projection``: bounded Adam steps on the pixel error from seeded starts, in its
own bounded pool) and answers the latent as a ``z`` with the ``GET /generate`` URL that draws it.
Translation (pix2pix) and reconstruction (autoencoders) need checkpoints the service does not
load yet: those routes answer 422 naming the models that can (none so far), after the 404 of an
unknown model. Nothing of the upload is read before the model, its label and the pool's room
are known to be good.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode

import torch
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from app import generation as gen
from app import params as P
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

class Encoded(BaseModel):
    model: str
    version: str = Field(description="the model version the latent belongs to")
    z: str = Field(description="the latent: base64url of z_dim little-endian float32 values")
    label: int | None = Field(default=None, description="the class index (conditional models)")
    reconstruction_url: str = Field(description="the versioned GET /generate URL that draws the latent's image")
    method: str = Field(description="projection (Adam steps on the pixel error) or encoder")
    steps: int = Field(description="Adam steps of the projection")
    mse: float = Field(description="mean squared error of the reconstruction to the uploaded image, in [-1, 1] "
                                   "units (PSNR = 10·log10(4 / mse))")


def _able(service: gen.Service, families: tuple[str, ...]) -> list[str]:
    registry = service.require_registry()
    return [n for n in registry.names() if registry.models[n].config.family in families
            and registry.models[n].batcher is not None]


def _cannot(model: LoadedModel, verb: str, what: str, able: list[str]) -> ApiError:
    who = ", ".join(able) if able else f"no loaded model can {verb}"
    return ApiError(422, f"model {model.name!r} ({model.config.family}) cannot {verb}: {what}; models that can: "
                         f"{who}", allowed=able)


async def _encode(service: gen.Service, request: Request, values: dict[str, Any]) -> Encoded:
    """The latent ``z`` whose image is closest to the uploaded one, and the ``GET /generate`` URL that
    draws it — so a real image can be addressed, cached and interpolated like a seed.

    GAN generators are projected: ``GANSERVE_PROJECTION_STEPS`` Adam steps on the pixel error
    from seeded starts (the same image gives the same ``z``), with the class given by ``label``
    (query or multipart field; required on conditional models). The explicit latent is drawn as
    it is (truncation 1)."""
    m = gen.find_model(service, request, values["model"])
    label = values["label"]
    able = _able(service, PROJECTABLE)
    if m.config.family not in PROJECTABLE or m.batcher is None:
        raise _cannot(m, "encode", f"projection is for GAN generators ({', '.join(PROJECTABLE)}), and the service "
                                   "loads no encoder for it", able)
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
        target = torch.from_numpy(pixels).permute(2, 0, 1)[None].float().div(127.5).sub(1.0)  # (1, C, H, W)
        return project(differentiable_copy(served), target, cls, cfg.z_dim, steps, cancelled=cancelled)

    try:
        result = await pool.run(work)
    except PoolFull:
        raise _busy() from None
    except Cancelled:  # the client went away; nobody reads this
        raise ApiError(503, "projection cancelled", headers={"Retry-After": "1"}) from None
    z = encode_z(result.z)
    query = {"model": m.name, "z": z, **({"label": str(cls)} if cls is not None else {}), "version": cfg.version}
    return Encoded(model=m.name, version=cfg.version, z=z, label=cls,
                   reconstruction_url=f"/generate?{urlencode(query)}", method="projection", steps=result.steps,
                   mse=round(result.mse, 6))


def _busy() -> ApiError:
    return ApiError(503, "every projection worker is busy and the queue is full (GANSERVE_PROJECTION_WORKERS, "
                         "GANSERVE_PROJECTION_QUEUE); retry shortly", headers={"Retry-After": "2"})


TRANSLATORS = ("pix2pix",)
RECONSTRUCTORS = ("ae", "conv-ae", "vae")


async def _translate(service: gen.Service, request: Request, values: dict[str, Any]) -> None:
    m = gen.find_model(service, request, values["model"])
    raise _cannot(m, "translate", "it is not an image-to-image translator (pix2pix)", [])


async def _reconstruct(service: gen.Service, request: Request, values: dict[str, Any]) -> None:
    m = gen.find_model(service, request, values["model"])
    raise _cannot(m, "reconstruct", "it has no encoder (encoder.safetensors) to reconstruct with", [])


encode = P.ENCODE.endpoint("encode", _encode, ServiceDep, _encode.__doc__ or "")
router.post("/models/{model}/encode", response_model=Encoded, responses=UPLOAD_ERRORS, openapi_extra=UPLOAD_BODY,
            summary="The latent of an uploaded image (projection for GAN generators)")(encode)

translate = P.TRANSLATE.endpoint(
    "translate", _translate, ServiceDep, "Image-to-image translation by a pix2pix checkpoint: the uploaded image "
    "resized to its input → ``image/png``. No loaded checkpoint is a translator yet: 422 naming the models that can.")
router.post("/models/{model}/translate", response_model=None, responses=UPLOAD_ERRORS, openapi_extra=UPLOAD_BODY,
            summary="Translate an uploaded image (pix2pix translators)")(translate)

reconstruct = P.RECONSTRUCT.endpoint(
    "reconstruct", _reconstruct, ServiceDep, "An autoencoder's reconstruction of the uploaded image → ``image/png``. "
    "It needs the checkpoint's encoder (``encoder.safetensors``), which no loaded checkpoint ships yet: 422 naming "
    "the models that can.")
router.post("/models/{model}/reconstruct", response_model=None, responses=UPLOAD_ERRORS, openapi_extra=UPLOAD_BODY,
            summary="Reconstruct an uploaded image (autoencoders with an encoder)")(reconstruct)
