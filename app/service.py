"""Per-app state (settings, metrics, registry, image cache) and the typed dependencies routes use."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Annotated, Any

import torch
from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from app.metrics import Metrics
from app.podready import PodReadiness
from app.projection import ProjectionPool
from app.registry import Registry
from app.settings import Settings


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str


class ErrorOut(BaseModel):
    """Every error the service answers: ``detail`` says what was wrong and what is allowed."""

    detail: str
    allowed: list[str] | None = None
    errors: list[FieldError] | None = None


class ApiError(Exception):
    """An error answered as JSON ``{"detail": ...}`` with its status and headers."""

    def __init__(self, status: int, detail: str, *, allowed: list[str] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.allowed, self.headers = status, detail, allowed, headers or {}

    def response(self) -> JSONResponse:
        body = ErrorOut(detail=self.detail, allowed=self.allowed).model_dump(exclude_none=True)
        return JSONResponse(body, status_code=self.status, headers=self.headers)


class ImageCache:
    """LRU of encoded images of seeded requests, keyed by ETag (the event loop is its only user)."""

    def __init__(self, size: int, metrics: Metrics) -> None:
        self.size = size
        self._hit, self._miss = metrics.cache.labels("hit"), metrics.cache.labels("miss")
        self._items: OrderedDict[str, bytes] = OrderedDict()

    def get(self, key: str) -> bytes | None:
        data = self._items.get(key)
        (self._hit if data is not None else self._miss).inc()
        if data is not None:
            self._items.move_to_end(key)
        return data

    def put(self, key: str, data: bytes) -> None:
        if self.size <= 0:
            return
        self._items[key] = data
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class Service:
    settings: Settings
    metrics: Metrics
    device: torch.device | None = None
    registry: Registry | None = None
    cache: ImageCache | None = None
    projection: ProjectionPool | None = None  # POST /models/{model}/encode on GAN generators
    pod: PodReadiness | None = None  # the other processes of python -m app --processes N (N > 1)

    def require_registry(self) -> Registry:
        if self.registry is None:
            raise ApiError(503, "not ready: the service is starting", headers={"Retry-After": "1"})
        return self.registry


async def get_service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "unknown model (the known ones are listed)"},
    422: {"model": ErrorOut, "description": "a value out of range or unknown (the allowed ones are named)"},
    503: {"model": ErrorOut, "description": "not ready, queue full or deadline passed; retry after Retry-After",
          "headers": {"Retry-After": {"schema": {"type": "string"}, "description": "seconds"}}},
}

# Every route can answer these before it runs (app.main.LimitsMiddleware); documented on all of them.
LIMIT_RESPONSES: dict[int | str, dict[str, Any]] = {
    414: {"model": ErrorOut, "description": "path + query string longer than GANSERVE_MAX_URL_BYTES"},
    431: {"model": ErrorOut, "description": "request headers larger than GANSERVE_MAX_HEADER_BYTES"},
}
