"""The image routes without FastAPI's per-request machinery, for the requests that need none of it.

FastAPI spends more CPU on a ``GET /generate`` than the rest of the request together: routing
over every route's regex, then for each parameter an inspection of its annotation and a pydantic
validation, then a second dependency pass for the service (docs/performance.md has the profile).
On 2 cores that event-loop time, not the forward pass, is what limits throughput.

:class:`FastPath` is a pure-ASGI layer in front of the router. A ``GET`` of ``/generate``, a
permalink or ``/interpolate`` whose parameters are all *plainly* valid is parsed here by the
route's own specification (``app.params.RouteSpec.parse_plain``: the same names, ranges and
defaults the FastAPI signature is built from) and handed to the very function the FastAPI
endpoint calls: same model lookup, labels, ETags, cache, batcher, headers and error answers.
Every other request — anything unusual, out of range or malformed — goes on to FastAPI
unchanged, so every validation 422 and its message still come from the one validation the
OpenAPI schema documents. ``GET /healthz`` is answered here too (static bytes): it is the no-op
against which the benchmark measures the HTTP cost of the server.

``GANSERVE_FAST_PATH=false`` turns it off (every request then goes through FastAPI); the
tests check that both ways give the same status, headers and bytes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from app import params as P
from app.generation import ImageResult
from app.routes.images import render_png
from app.routes.interpolate import render_interpolation
from app.service import ApiError, Service

Render = Callable[[Service, Request, dict[str, Any]], Awaitable[ImageResult]]

# (specification, the function its FastAPI endpoint calls), tried in this order.
ROUTES: tuple[tuple[P.RouteSpec, Render], ...] = (
    (P.GENERATE, render_png),
    (P.SEED_PNG, render_png),
    (P.INTERPOLATE, render_interpolation),
)

_HEALTH_BODY = b'{"status":"ok"}'
_HEALTH_START = {"type": "http.response.start", "status": 200,
                 "headers": [(b"content-length", str(len(_HEALTH_BODY)).encode()),
                             (b"content-type", b"application/json")]}
_HEALTH_BODY_MESSAGE = {"type": "http.response.body", "body": _HEALTH_BODY}


class FastPath:
    """Pure-ASGI answers of the image routes (plainly valid requests) and ``GET /healthz``; the rest
    passes through. Sits inside the metrics, limits, CORS and catch-all middleware, so those apply
    alike; it marks the request with the FastAPI route it stands in for, for the metrics' route label."""

    def __init__(self, app: ASGIApp, service: Service, routes: dict[str, Any]) -> None:
        self.app = app
        self.service = service
        self.health_route = routes["/healthz"]
        self.routes = [(spec, render, routes[spec.path]) for spec, render in ROUTES]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            path = scope["path"]
            if path == "/healthz":
                scope["route"] = self.health_route
                await send(_HEALTH_START)
                await send(_HEALTH_BODY_MESSAGE)
                return
            for spec, render, route in self.routes:
                values = spec.parse_plain(path, scope["query_string"])
                if values is not None:
                    scope["route"] = route
                    try:
                        result = await render(self.service, Request(scope, receive), values)
                    except ApiError as e:
                        await e.response()(scope, receive, send)
                        return
                    await result.send(send)
                    return
        await self.app(scope, receive, send)
