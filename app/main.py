"""The FastAPI app: ``create_app(settings)`` builds it; ``uvicorn app.main:app`` serves it.

Nothing is loaded at import time. The lifespan resolves the device and starts loading the
checkpoints in the background, so ``/healthz`` answers at once while ``/readyz`` says 503
until every checkpoint is loaded and warmed up; then a watcher rescans the folder for hot
reloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.fastpath import FastPath
from app.metrics import Metrics, MetricsMiddleware, process_exiting
from app.podready import PodReadiness
from app.projection import ProjectionPool
from app.registry import Registry
from app.routes import frontend, health, images, imagesin, interpolate, models
from app.service import LIMIT_RESPONSES, ApiError, ErrorOut, FieldError, ImageCache, Service
from app.settings import Settings, warn_unknown_variables
from training.devices import resolve_device

log = logging.getLogger("app")


def configure_logging(level: str) -> None:
    """Give the service's loggers a handler when nobody configured logging (plain ``uvicorn app.main:app``)."""
    logger = logging.getLogger("app")
    logger.setLevel(level.upper())
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    service: Service = app.state.service
    settings = service.settings
    configure_logging(settings.log_level)
    warn_unknown_variables(log)
    service.device = resolve_device(settings.device)
    service.cache = ImageCache(settings.cache_size, service.metrics)
    service.projection = ProjectionPool(settings.projection_workers, settings.projection_queue)
    registry = Registry(settings, service.device, service.metrics)
    service.registry = registry
    log.info("ganserve: device %s, checkpoints %s", service.device, settings.checkpoints)

    async def load_then_watch() -> None:
        await registry.run_initial_load()
        freeze_startup_objects()
        if settings.reload_interval_s > 0:
            await registry.watch()

    tasks = [asyncio.create_task(load_then_watch(), name="registry")]
    service.pod = PodReadiness.from_env()
    if service.pod is not None:  # one of several processes: /readyz waits for all of them
        tasks.append(asyncio.create_task(service.pod.keep_marked(lambda: registry.ready), name="pod-readiness"))
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await registry.close()
        service.registry = None
        service.projection.close()
        service.projection = None
        gc.unfreeze()
        process_exiting()


def freeze_startup_objects() -> None:
    """Move the objects alive after start-up (the imported modules, torch, the loaded models —
    hundreds of thousands of them) out of the garbage collector's sight: Python's full collections
    would otherwise walk all of them again and again, pausing every request in flight for tens of
    milliseconds each time (the tail of the latency; docs/performance.md). Garbage is collected
    first so that none of it is kept; ``gc.unfreeze()`` at shutdown gives them back."""
    gc.collect()
    gc.freeze()


class CatchAllMiddleware:
    """Any exception a route lets through becomes a JSON 503 "generation failed" (logged with its
    traceback here, never sent to the client): the service answers no 500."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            response = JSONResponse({"detail": "generation failed"}, status_code=503, headers={"Retry-After": "1"})
            await response(scope, receive, send)


class LimitsMiddleware:
    """Refuses oversized requests before any route runs, and marks every response ``nosniff``.

    A path + query string longer than ``max_url_bytes`` gets 414, request headers larger than
    ``max_header_bytes`` in all get 431 (JSON ``{"detail": …}`` naming the limit). The ASGI server
    has already parsed the request; the front end should enforce the same limits earlier
    (docs/security.md).
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.max_url = settings.max_url_bytes
        self.max_headers = settings.max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        url_bytes = len(scope.get("raw_path") or scope["path"].encode()) + len(scope.get("query_string", b""))
        header_bytes = sum(len(k) + len(v) + 4 for k, v in scope.get("headers", []))
        error: tuple[int, str] | None = None
        if url_bytes > self.max_url:
            error = (414, f"request URL too long: {url_bytes} bytes, at most {self.max_url}")
        elif header_bytes > self.max_headers:
            error = (431, f"request headers too large: {header_bytes} bytes, at most {self.max_headers}")
        if error is not None:
            response = JSONResponse({"detail": error[1]}, status_code=error[0], headers={"Connection": "close"})
            await response(scope, receive, self._nosniff(send))
            return
        await self.app(scope, receive, self._nosniff(send))

    @staticmethod
    def _nosniff(send: Send) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-content-type-options", b"nosniff"))
                message = {**message, "headers": headers}
            await send(message)

        return wrapped


def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 with one readable sentence naming each bad value and what is allowed."""
    assert isinstance(exc, RequestValidationError)
    errors: list[FieldError] = []
    parts: list[str] = []
    for err in exc.errors():
        loc = [x for x in err.get("loc", ()) if isinstance(x, str | int)]
        where = ".".join(str(x) for x in loc[1:]) or ".".join(str(x) for x in loc) or "request"
        msg = str(err.get("msg", "invalid value"))
        given = err.get("input")
        if isinstance(given, str | int | float) and not isinstance(given, bool):
            shown = str(given) if len(str(given)) <= 40 else str(given)[:40] + "…"
            msg = f"{msg} (got {shown!r})"
        errors.append(FieldError(loc=loc, msg=msg))
        parts.append(f"{where}: {msg}")
    body = ErrorOut(detail="; ".join(parts) or "invalid request", errors=errors)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=422)


def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return exc.response()


def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = 503 if exc.status_code >= 500 else exc.status_code
    return JSONResponse({"detail": str(exc.detail)}, status_code=status, headers=exc.headers)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    service = Service(settings=settings, metrics=Metrics())
    app = FastAPI(
        title="ganserve",
        version="0.1.0",
        summary="Class-conditional samples, seed permalinks and latent-interpolation GIFs from GAN checkpoints",
        lifespan=lifespan,
        responses=LIMIT_RESPONSES,
        docs_url="/docs" if settings.enable_docs else None,
        redoc_url="/redoc" if settings.enable_docs else None,
        openapi_url="/openapi.json" if settings.enable_docs else None,
    )
    app.state.service = service
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for router in (images.router, interpolate.router, imagesin.router, models.router, health.router, frontend.router):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=frontend.STATIC), name="static")
    if settings.fast_path:
        routes = {r.path: r for r in (*images.router.routes, *interpolate.router.routes, *health.router.routes)
                  if isinstance(r, APIRoute)}
        app.add_middleware(FastPath, service=service, routes=routes)
    app.add_middleware(CatchAllMiddleware)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET"],
                           allow_headers=["If-None-Match"],
                           expose_headers=["ETag", "X-Seed", "X-Label", "X-Label-Name", "X-Model", "X-Model-Version",
                                           "Content-Disposition", "Retry-After"])
    app.add_middleware(LimitsMiddleware, settings=settings)
    app.add_middleware(MetricsMiddleware, metrics=service.metrics)
    return app


app = create_app()
