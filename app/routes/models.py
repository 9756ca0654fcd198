"""``GET /models`` and ``GET /models/{model}``: the model cards, and the refused checkpoints with why."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from app import params as P
from app.generation import lookup_model
from app.imagein import ENCODE, RECONSTRUCT, TRANSLATE
from app.projection import PROJECTABLE
from app.registry import LoadedModel, Refusal, UnknownModel
from app.service import ERROR_RESPONSES, ApiError, Service, ServiceDep
from training.bars import check as check_bars

router = APIRouter(tags=["models"])
CAPABILITIES = ("sample", TRANSLATE, RECONSTRUCT, ENCODE)


class ImageInfo(BaseModel):
    channels: int
    height: int
    width: int


class ModelCard(BaseModel):
    name: str
    family: str
    description: str
    conditional: bool
    sampleable: bool
    num_classes: int
    class_names: list[str]
    z_dim: int
    image: ImageInfo
    dataset: dict[str, Any]
    training: dict[str, Any]
    metrics: dict[str, Any]
    bars: dict[str, bool | None] = Field(
        description="the project's quality bars (`python -m training bars`) against these metrics: true cleared, "
                    "false missed, null not judged (the metric is missing or was measured on fewer than 10,000 "
                    "samples); empty for a model that cannot be sampled or was never evaluated")
    evaluator_sha256: str | None
    generator_sha256: str
    version: str = Field(description="the first 12 hex digits of generator_sha256: a URL with version=… is "
                         "immutable while this version is loaded, and 404 once it is replaced")
    weights_dtype: str
    truncation: float = Field(description="the truncation ψ images are drawn at when a request gives none; the "
                              "metrics were measured at it")
    capabilities: list[str] = Field(description="what the model answers: sample (GET /generate from seeds), "
                                    "translate, reconstruct and encode (POST /models/{model}/…)")
    takes: dict[str, str] = Field(description="for each capability, what it takes and what it answers")
    encoder_sha256: str | None = Field(default=None, description="sha256 of encoder.safetensors (ae, conv-ae, vae)")
    input: dict[str, Any] | None = Field(default=None, description="what a translator takes: channels, height, "
                                         "width and the transform of the target its inputs are (e.g. edges)")
    device: str
    batch_invariant: bool = Field(description="a seeded image has the same bytes however its request is batched "
                                  "(checked at load); false: this device's kernels depend on the batch size, and "
                                  "the model's images get weak ETags")
    exact_products: bool = Field(description="served with float64 matrix products rounded to float32, because "
                                 "this CPU's float32 ones depend on the batch size (the check at load)")
    loaded_at: str
    default: bool
    links: dict[str, str]


class RefusedEntry(BaseModel):
    name: str
    reason: str
    since: str
    still_serving: bool


class ModelList(BaseModel):
    default: str | None
    ready: bool
    models: list[ModelCard]
    refused: list[RefusedEntry]


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


def capabilities(model: LoadedModel) -> dict[str, str]:
    """What the model answers (sample, translate, reconstruct, encode) → what each takes and answers."""
    c = model.config
    size = f"{c.image.channels}×{c.image.height}×{c.image.width}"
    out: dict[str, str] = {}
    if model.sampleable:
        out["sample"] = "a seed (or an explicit latent z) and, on conditional models, a label → image/png"
    if TRANSLATE in model.image_modules and c.input is not None:
        out[TRANSLATE] = (f"one image ({c.input.transform} of the target: {c.input.channels}×{c.input.height}×"
                          f"{c.input.width}, resized to it) → its translation, {size}, image/png")
    if RECONSTRUCT in model.image_modules:
        out[RECONSTRUCT] = f"one image, resized to {size} → its reconstruction, image/png"
    if ENCODE in model.image_modules:
        how = "its encoder's latent z (JSON)"
        if c.generator.class_name == "ExPostGenerator":
            how = ("its encoder's mean mapped back through the ex-post mixture (z's first entry picks the mean's most "
                   "likely component, the rest is its whitened offset from it): a z (JSON)")
        out[ENCODE] = (f"one image, resized to {size} → {how}, which GET /generate?z=… draws"
                       + ("" if model.sampleable else " (this model's decoder draws explicit latents only)"))
    elif c.family in PROJECTABLE and model.batcher is not None:
        out[ENCODE] = (f"one image, resized to {size}" + (", and a label" if c.conditional else "")
                       + " → the latent z a projection finds (JSON)")
    return out


def card(model: LoadedModel, default: str | None) -> ModelCard:
    c = model.config
    links = {"self": f"/models/{model.name}"}
    if c.sampleable:
        links["generate"] = f"/generate?model={model.name}"
        links["seed_0"] = f"/models/{model.name}/seeds/0.png?version={c.version}"
    can = capabilities(model)
    for kind in (TRANSLATE, RECONSTRUCT, ENCODE):
        if kind in can:
            links[kind] = f"/models/{model.name}/{kind}"
    if model.samples_png is not None:
        links["samples"] = f"/models/{model.name}/samples.png"
    return ModelCard(
        name=model.name, family=c.family, description=c.description, conditional=c.conditional,
        sampleable=c.sampleable, num_classes=c.num_classes, class_names=list(c.class_names), z_dim=c.z_dim,
        image=ImageInfo(channels=c.image.channels, height=c.image.height, width=c.image.width),
        dataset=c.dataset.model_dump(mode="json"), training=c.training.model_dump(mode="json"),
        metrics=dict(c.metrics), bars=check_bars(c.metrics, c.conditional) if c.sampleable and c.metrics else {},
        evaluator_sha256=c.evaluator_sha256, generator_sha256=c.generator_sha256, version=c.version,
        weights_dtype=c.weights_dtype, truncation=c.truncation, capabilities=[k for k in CAPABILITIES if k in can],
        takes=can, encoder_sha256=None if c.encoder is None else c.encoder.sha256,
        input=None if c.input is None else c.input.model_dump(mode="json"), device=str(model.device),
        batch_invariant=model.batch_invariant, exact_products=model.exact_products, loaded_at=_iso(model.loaded_at),
        default=model.name == default, links=links,
    )


def refused_entry(r: Refusal) -> RefusedEntry:
    return RefusedEntry(name=r.name, reason=r.reason, since=_iso(r.since), still_serving=r.still_serving)


@router.get("/models", response_model=ModelList, summary="Model cards of every served model, and refused ones")
async def list_models(service: ServiceDep) -> ModelList:
    registry = service.require_registry()
    default = registry.default_name
    return ModelList(
        default=default, ready=registry.ready,
        models=[card(registry.models[n], default) for n in registry.names()],
        refused=[refused_entry(r) for _, r in sorted(registry.refused.items())],
    )


async def _card(service: Service, request: Request, values: dict[str, Any]) -> ModelCard:
    model: str = values["model"]
    registry = service.require_registry()
    try:
        loaded = registry.get(model)
    except UnknownModel:
        if not registry.initial_load_done:
            raise ApiError(503, "not ready: checkpoints are still loading", headers={"Retry-After": "1"}) from None
        refusal = registry.refused.get(model)
        known = registry.names()
        if refusal is not None:
            raise ApiError(404, f"model {model!r} was refused: {refusal.reason}", allowed=known) from None
        raise ApiError(404, f"unknown model {model!r}; known models: {', '.join(known) or 'none'}",
                       allowed=known) from None
    request.state.metrics_model = model
    return card(loaded, registry.default_name)


async def _samples(service: Service, request: Request, values: dict[str, Any]) -> Response:
    model: str = values["model"]
    registry = service.require_registry()
    loaded = registry.models.get(model)
    if loaded is None:
        lookup_model(service, request, model)  # raises the right 404 / 503
    if loaded is None or loaded.samples_png is None:
        raise ApiError(404, f"model {model!r} has no samples.png")
    return Response(loaded.samples_png, media_type="image/png", headers={"Cache-Control": "no-cache"})


get_model = P.MODEL_CARD.endpoint("get_model", _card, ServiceDep, "")
router.get("/models/{model}", response_model=ModelCard, responses={404: ERROR_RESPONSES[404],
           422: ERROR_RESPONSES[422], 503: ERROR_RESPONSES[503]}, summary="One model's card")(get_model)

samples_png = P.SAMPLES_PNG.endpoint("samples_png", _samples, ServiceDep, "")
router.get("/models/{model}/samples.png", response_class=Response, summary="The checkpoint's samples.png",
           responses={200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
                            "description": "the sample grid written at training time (one row per class)"},
                      **{k: ERROR_RESPONSES[k] for k in (404, 422, 503)}})(samples_png)
