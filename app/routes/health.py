"""``/healthz`` (alive), ``/readyz`` (models loaded and warmed up) and ``/metrics`` (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel

from app.service import ERROR_RESPONSES, ApiError, ServiceDep

router = APIRouter(tags=["operations"])


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    models: int
    refused: int
    default: str | None
    device: str | None


@router.get("/healthz", response_model=Health, summary="Liveness")
async def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, summary="Readiness: every checkpoint loaded and warmed up",
            responses={503: {"model": Readiness, "description": "still loading, or no model to serve",
                             "headers": ERROR_RESPONSES[503]["headers"]}})
async def readyz(service: ServiceDep) -> Response:
    registry = service.registry
    if registry is None:
        body = Readiness(status="starting", models=0, refused=0, default=None, device=None)
        return JSONResponse(body.model_dump(), status_code=503, headers={"Retry-After": "1"})
    body = Readiness(
        status="ready" if registry.ready else ("loading" if not registry.initial_load_done else "no models"),
        models=len(registry.models), refused=len(registry.refused), default=registry.default_name,
        device=str(registry.device),
    )
    if not registry.ready:
        return JSONResponse(body.model_dump(), status_code=503, headers={"Retry-After": "1"})
    return JSONResponse(body.model_dump())


@router.get("/metrics", response_class=Response, summary="Prometheus metrics",
            responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
                             "description": "Prometheus text format"},
                       404: ERROR_RESPONSES[404]})
async def metrics(service: ServiceDep) -> Response:
    if not service.settings.enable_metrics:
        raise ApiError(404, "metrics are disabled (GANSERVE_ENABLE_METRICS=false)")
    return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)
