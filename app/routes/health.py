"""``/healthz`` (alive), ``/readyz`` (models loaded and warmed up) and ``/metrics`` (Prometheus)."""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel

from app.service import ERROR_RESPONSES, ApiError, ErrorOut, ServiceDep

router = APIRouter(tags=["operations"])


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    models: int
    refused: int
    default: str | None
    device: str | None
    failing: list[str] = []  # models whose recent forward passes all failed (NaN output, device errors)
    # python -m app --processes N (N > 1): how many of the N processes are ready (each loads the checkpoints)
    processes: int | None = None
    processes_ready: int | None = None


@router.get("/healthz", response_model=Health, summary="Liveness")
async def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, summary="Readiness: every checkpoint loaded and warmed up",
            responses={503: {"model": Readiness, "description": "still loading (this process, or another of "
                                                                 "python -m app --processes N), or no model to serve",
                             "headers": ERROR_RESPONSES[503]["headers"]}})
async def readyz(service: ServiceDep) -> Response:
    registry, pod = service.registry, service.pod
    processes, processes_ready = (None, None) if pod is None else (pod.processes, pod.ready_count())
    pod_ready = processes is None or (processes_ready or 0) >= processes  # every process of the pod, not only this
    unlisted = {"processes", "processes_ready"} if pod is None else set()  # one process: not in the body
    if registry is None:
        body = Readiness(status="starting", models=0, refused=0, default=None, device=None,
                         processes=processes, processes_ready=processes_ready)
        return JSONResponse(body.model_dump(exclude=unlisted), status_code=503, headers={"Retry-After": "1"})
    failing = registry.failing()
    sampleable = [n for n, m in registry.models.items() if m.sampleable]
    all_failing = bool(sampleable) and len(failing) == len(sampleable)
    if not registry.ready:
        status = "loading" if not registry.initial_load_done else "no models"
    elif not pod_ready:
        status = "loading"  # this process is ready, another one is still loading
    else:
        status = "failing" if all_failing else ("degraded" if failing else "ready")
    body = Readiness(status=status, models=len(registry.models), refused=len(registry.refused),
                     default=registry.default_name, device=str(registry.device), failing=failing,
                     processes=processes, processes_ready=processes_ready)
    content = body.model_dump(exclude=unlisted | (set() if failing else {"failing"}))  # failing: when there is one
    if not registry.ready or not pod_ready or all_failing:
        return JSONResponse(content, status_code=503, headers={"Retry-After": "1"})
    return JSONResponse(content)


@router.get("/metrics", response_class=Response, summary="Prometheus metrics",
            responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
                             "description": "Prometheus text format"},
                       401: {"model": ErrorOut, "description": "GANSERVE_METRICS_TOKEN is set and the request "
                                                               "lacks the right bearer token"},
                       404: ERROR_RESPONSES[404]})
async def metrics(service: ServiceDep, request: Request) -> Response:
    settings = service.settings
    if not settings.enable_metrics:
        raise ApiError(404, "metrics are disabled (GANSERVE_ENABLE_METRICS=false)")
    if settings.metrics_token is not None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        expected = settings.metrics_token.get_secret_value().encode()
        if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), expected):
            raise ApiError(401, "metrics need 'Authorization: Bearer <token>' (GANSERVE_METRICS_TOKEN)",
                           headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)
