"""What /generate, the permalinks and /interpolate share: model, label and version lookup,
limits, and one path (:func:`render`) for the ETag, 304, the image cache, the batcher call and
the response headers. A route describes its image as an :class:`ImageJob` — how to draw its
latents and labels and how to encode its images, all run in the model's worker thread — and
gets an :class:`ImageResult` that FastAPI (``ImageResult.response``) or the fast path
(``ImageResult.send``) answers with the same bytes."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from fastapi import Request, Response
from starlette.types import Send

from app.batcher import Batcher, BatcherClosed, Encoder, GenerationFailed, Labels, Latents, QueueFull
from app.inference import DeviceOutOfMemory, NonFiniteOutput
from app.registry import LoadedModel, UnknownModel
from app.service import ApiError, Service
from training.labels import UnknownLabel, parse_label
from training.latent import SEED_MAX

ENCODING_VERSION = "5"  # part of every ETag: bump when the encoded bytes change for the same request
IMMUTABLE = "public, max-age=31536000, immutable"


def lookup_model(service: Service, request: Request, name: str | None, explicit: bool = False) -> LoadedModel:
    """The sampleable model a request names (or the default one), else a clear 4xx / 503. ``explicit``: the
    request gives its latents (``z``, ``from_z``/``to_z``), which an autoencoder's decoder draws too."""
    model = find_model(service, request, name)
    if model.batcher is None or not (model.config.sampleable or explicit):
        registry = service.require_registry()
        sampleable = [n for n in registry.names() if registry.models[n].config.sampleable
                      and registry.models[n].batcher is not None]
        what = describe(model)
        raise ApiError(422, f"model {model.name!r} ({model.config.family}) is not sampleable: {what}",
                       allowed=sampleable)
    return model


def describe(model: LoadedModel) -> str:
    """What a model that cannot be sampled from seeds does instead (the 422 of /generate and /interpolate)."""
    if model.config.input is not None:
        return f"it translates images (POST /models/{model.name}/translate)"
    if model.batcher is not None:
        return (f"it reconstructs images (POST /models/{model.name}/reconstruct) and has no distribution to draw "
                f"seeds from; its decoder draws an explicit latent z (from POST /models/{model.name}/encode)")
    return "it reconstructs images but has no distribution to draw from"


def find_model(service: Service, request: Request, name: str | None) -> LoadedModel:
    """The loaded model a request names (or the default one), sampleable or not, else a 404 / 503."""
    registry = service.require_registry()
    if not registry.initial_load_done:
        raise ApiError(503, "not ready: checkpoints are still loading", headers={"Retry-After": "1"})
    if name is None:
        name = registry.default_name
        if name is None:
            raise ApiError(503, f"no sampleable model is loaded from {registry.root.name}/",
                           headers={"Retry-After": "5"})
    try:
        model = registry.get(name)
    except UnknownModel:
        known = registry.names()
        refusal = registry.refused.get(name)
        if refusal is not None:
            raise ApiError(404, f"model {name!r} was refused: {refusal.reason}", allowed=known) from None
        raise ApiError(404, f"unknown model {name!r}; known models: {', '.join(known) or 'none'}",
                       allowed=known) from None
    request.state.metrics_model = name
    return model


def resolve_label(model: LoadedModel, raw: str | None, param: str = "label") -> int | None:
    """A class index from an index or a class name; None when not given. 422 when it is not a class."""
    cfg = model.config
    if raw is None:
        return None
    if not cfg.conditional:
        raise ApiError(422, f"{param}: model {model.name!r} is unconditional and takes no label")
    try:
        return parse_label(raw, cfg.class_names, model.name)
    except UnknownLabel as e:
        raise ApiError(422, f"{param}: {e}", allowed=list(cfg.class_names)) from None


def check_version(model: LoadedModel, version: str | None) -> bool:
    """Whether the URL names the loaded version of the model (None: it names none); a 404 naming
    the loaded version when it names another (the weights were replaced since the URL was made)."""
    if version is None:
        return False
    loaded = model.config.version
    if version != loaded:
        raise ApiError(404, f"model {model.name!r} is not at version {version} any more: the loaded version is "
                            f"{loaded} (version={loaded}, or no version for whichever is loaded)", allowed=[loaded])
    return True


def cache_control(service: Service, fixed: bool, versioned: bool) -> str:
    """``no-store`` when a seed or label was drawn; immutable when the URL names the loaded version;
    else cacheable but revalidated (``GANSERVE_UNVERSIONED_MAX_AGE_S``): the weights behind an
    unversioned URL can be replaced while the service runs."""
    if not fixed:
        return "no-store"
    return IMMUTABLE if versioned else service.settings.unversioned_cache_control


def draw_label(model: LoadedModel) -> int:
    return secrets.randbelow(model.config.num_classes)


def draw_seed(count: int = 1) -> int:
    """A random first seed such that seed + count − 1 is still a valid seed."""
    return secrets.randbelow(SEED_MAX + 2 - count)


def check_budget(pixels: int, limit: int, what: str) -> None:
    if pixels > limit:
        raise ApiError(422, f"{what} would have {pixels:,} pixels; at most {limit:,} per request: "
                            "lower n, frames or scale")


async def run(service: Service, model: LoadedModel, z: Latents, labels: Labels,
              encode: Encoder | None = None, batcher: Batcher | None = None) -> Any:
    """Queue a block of latents on the model's batcher (or ``batcher``: one of its image-in ones, whose
    inputs are images) → (k, H, W, C) uint8, or ``encode`` of them (computed in the model's worker thread,
    right after its batch), or a 503."""
    batcher = batcher or model.batcher
    assert batcher is not None
    timeout = service.settings.request_timeout_s
    try:
        return await batcher.generate(z, labels, timeout, encode)
    except QueueFull:
        raise ApiError(503, f"model {model.name!r} is busy (queue full); retry shortly",
                       headers={"Retry-After": "1"}) from None
    except TimeoutError:
        raise ApiError(503, f"generation did not finish within {timeout:g} s; retry shortly",
                       headers={"Retry-After": "2"}) from None
    except BatcherClosed:
        raise ApiError(503, f"model {model.name!r} was just reloaded or removed; retry",
                       headers={"Retry-After": "1"}) from None
    except GenerationFailed as e:
        # The batcher logged the traceback; the client learns the kind of failure, never the details.
        kind = str(e)
        if kind == NonFiniteOutput.__name__:
            raise ApiError(503, "generation failed: non-finite output", headers={"Retry-After": "1"}) from None
        if kind == DeviceOutOfMemory.__name__:
            raise ApiError(503, "generation failed: device out of memory; retry shortly",
                           headers={"Retry-After": "2"}) from None
        raise ApiError(503, "generation failed", headers={"Retry-After": "1"}) from None


def make_etag(model: LoadedModel, kind: str, params: dict[str, Any]) -> str:
    """An ETag from the weights' sha256 and the canonical request values (sorted ``name=repr``
    pairs: ints, floats at their shortest exact repr, strings quoted, None): strong, unless the
    model failed the batch-invariance check at load (``LoadedModel.batch_invariant``) — then its
    bytes may differ by a rounding step from one request to the next, and the tag says so (weak)."""
    values = "&".join(f"{k}={params[k]!r}" for k in sorted(params))
    canonical = f"{ENCODING_VERSION}|{model.config.generator_sha256}|{kind}|{values}"
    tag = '"' + hashlib.sha256(canonical.encode()).hexdigest()[:32] + '"'
    return tag if model.batch_invariant else "W/" + tag


def etag_matches(request: Request, etag: str) -> bool:
    header = request.headers.get("if-none-match")
    if not header:
        return False
    for tag in header.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == etag.removeprefix("W/"):  # weak comparison (RFC 9110)
            return True
    return False


def image_headers(model: LoadedModel, etag: str, cache: str, seed: str | None, label: str | None,
                  label_name: str | None) -> dict[str, str]:
    headers = {
        "ETag": etag,
        "Cache-Control": cache,
        "X-Model": model.name,
        "X-Model-Version": model.config.version,
    }
    if seed is not None:  # None: an explicit latent (z) has no seed
        headers["X-Seed"] = seed
    if label is not None:
        headers["X-Label"] = label
    if label_name is not None:
        headers["X-Label-Name"] = quote(label_name, safe="")
    return headers


@dataclass
class ImageJob:
    """One image response to make: what identifies it (ETag, headers) and how to make it (in the
    model's worker thread: draw ``z`` and ``labels``, run the batch, ``encode`` the images)."""

    model: LoadedModel
    kind: str  # part of the ETag: "png" (a grid or one image) or "interpolate"
    values: dict[str, Any]  # the canonical request values the bytes depend on (the ETag's)
    fixed: bool  # nothing was drawn at random: cacheable, answers If-None-Match
    versioned: bool  # the URL names the loaded version: immutable
    seed: str | None  # X-Seed; None for an explicit latent
    classes: list[int]  # X-Label / X-Label-Name (comma-separated); empty: none
    media_type: str
    z: Latents
    labels: Labels
    encode: Encoder
    extra_headers: dict[str, str] = field(default_factory=dict)  # after the common ones (Content-Disposition)


@dataclass(frozen=True)
class ImageResult:
    status: int  # 200 or 304
    body: bytes  # b"" for a 304
    headers: dict[str, str]
    media_type: str

    def response(self) -> Response:
        if self.status == 304:
            return Response(status_code=304, headers=self.headers)
        return Response(self.body, media_type=self.media_type, headers=self.headers)

    async def send(self, send: Send) -> None:
        """The messages ``self.response()`` sends (304: no length, no type), without building it."""
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()]
        if self.status != 304:
            raw += [(b"content-length", str(len(self.body)).encode()), (b"content-type", self.media_type.encode())]
        await send({"type": "http.response.start", "status": self.status, "headers": raw})
        await send({"type": "http.response.body", "body": self.body})


async def render(service: Service, request: Request, job: ImageJob) -> ImageResult:
    """The one path of every seeded-image route: ETag and headers, 304 without a forward pass, the
    image cache, else the batcher (latents, forward pass and encode in the worker thread)."""
    model, cfg = job.model, job.model.config
    etag = make_etag(model, job.kind, job.values)
    label = ",".join(map(str, job.classes)) if job.classes else None
    label_name = ",".join(cfg.class_names[c] for c in job.classes) if job.classes else None
    headers = image_headers(model, etag, cache_control(service, job.fixed, job.versioned), job.seed, label,
                            label_name)
    headers.update(job.extra_headers)
    if job.fixed and etag_matches(request, etag):
        return ImageResult(304, b"", headers, job.media_type)
    cache = service.cache
    if job.fixed and cache is not None and (body := cache.get(etag)) is not None:
        return ImageResult(200, body, headers, job.media_type)
    body = await run(service, model, job.z, job.labels, encode=job.encode)
    if job.fixed and cache is not None:
        cache.put(etag, body)
    return ImageResult(200, body, headers, job.media_type)
