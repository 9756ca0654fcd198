"""The hot routes without FastAPI's per-request machinery, for the requests that need none of it.

FastAPI spends more CPU on a ``GET /generate`` than the rest of the request together: routing
over every route's regex, then for each of the seven parameters an inspection of its annotation
and a pydantic validation, then a second dependency pass for the service (docs/performance.md
has the profile). On 2 cores that event-loop time, not the forward pass, is what limits
throughput.

:class:`FastPath` is a pure-ASGI layer in front of the router. A ``GET /generate`` whose query
string is *plainly* valid — known parameters, each at most once, digits for the integers, a
``0.x``/``1`` truncation, a model name of the checkpoint pattern, all in range — is parsed here
with a few string checks and handed to the very function the FastAPI route calls
(:func:`app.routes.images.render_png_parts`): same model lookup, labels, ETags, cache, batcher,
headers and error answers. Every other request — anything unusual, out of range or malformed
— goes on to FastAPI unchanged, so every 422 and its message still come from the one
validation the OpenAPI schema documents. ``GET /healthz`` is answered here too (static bytes):
it is the no-op against which the benchmark measures the HTTP cost of the server.

``GANSERVE_FAST_PATH=false`` turns it off (every request then goes through FastAPI); the
tests check that both ways give the same status, headers and bytes.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from app.generation import VERSION_PATTERN
from app.routes.images import MAX_LABEL, MAX_N, MAX_SCALE, render_png_parts
from app.service import ApiError, Service
from training.checkpoint import NAME_PATTERN
from training.latent import SEED_MAX

# Only the plain spellings; anything else (signs, spaces, exponents, "1_000", "0x10"…) is left to FastAPI.
_DIGITS = re.compile(r"[0-9]{1,10}")
_TRUNCATION = re.compile(r"(?:0|1)(?:\.[0-9]{1,16})?|\.[0-9]{1,16}")
_MODEL = re.compile(NAME_PATTERN.removeprefix("^").removesuffix("$"))  # fully matched: no "$" before a newline
_VERSION = re.compile(VERSION_PATTERN.removeprefix("^").removesuffix("$"))
_INT_RANGES = {"seed": (0, SEED_MAX), "n": (1, MAX_N), "scale": (1, MAX_SCALE)}
_GENERATE_DEFAULTS: dict[str, Any] = {"model": None, "label": None, "seed": None, "n": 1, "truncation": None,
                                      "scale": 1, "version": None}
_HEALTH_BODY = b'{"status":"ok"}'
_HEALTH_START = {"type": "http.response.start", "status": 200,
                 "headers": [(b"content-length", str(len(_HEALTH_BODY)).encode()),
                             (b"content-type", b"application/json")]}
_HEALTH_BODY_MESSAGE = {"type": "http.response.body", "body": _HEALTH_BODY}


def _int_in(text: str, lo: int, hi: int) -> int | None:
    if not _DIGITS.fullmatch(text):
        return None
    value = int(text)
    return value if lo <= value <= hi else None


def _pairs(query: str) -> list[tuple[str, str]]:
    """``parse_qsl(query, keep_blank_values=True)``, without its unquoting when there is nothing to unquote."""
    if "%" in query or "+" in query:
        return parse_qsl(query, keep_blank_values=True)
    out = []
    for field in query.split("&"):
        if field:
            name, _, value = field.partition("=")
            out.append((name, value))
    return out


def parse_generate_query(query_string: bytes) -> dict[str, Any] | None:
    """The parameters of a plainly valid ``/generate`` query, or None to let FastAPI judge it.

    Parsed as Starlette parses it (latin-1, then ``parse_qsl`` with blank values kept); unknown
    parameters are ignored as FastAPI ignores them; a repeated known one is left to FastAPI.
    """
    out = dict(_GENERATE_DEFAULTS)
    if not query_string:
        return out
    seen: set[str] = set()
    for key, value in _pairs(query_string.decode("latin-1")):
        if key not in out:
            continue
        if key in seen:
            return None
        seen.add(key)
        if key == "model":
            if not _MODEL.fullmatch(value):
                return None
            out[key] = value
        elif key == "version":
            if not _VERSION.fullmatch(value):
                return None
            out[key] = value
        elif key == "label":
            if len(value) > MAX_LABEL:
                return None
            out[key] = value
        elif key in _INT_RANGES:
            lo, hi = _INT_RANGES[key]
            number = _int_in(value, lo, hi)
            if number is None:
                return None
            out[key] = number
        else:  # truncation in (0, 1]
            if not _TRUNCATION.fullmatch(value):
                return None
            t = float(value)
            if not 0.0 < t <= 1.0:
                return None
            out[key] = t
    return out


class FastPath:
    """Pure-ASGI answers of ``GET /generate`` (plainly valid queries) and ``GET /healthz``; the rest
    passes through. Sits inside the metrics, limits, CORS and catch-all middleware, so those apply
    alike; it marks the request with the FastAPI route it stands in for, for the metrics' route label."""

    def __init__(self, app: ASGIApp, service: Service, routes: dict[str, Any]) -> None:
        self.app = app
        self.service = service
        self.generate_route = routes["/generate"]
        self.health_route = routes["/healthz"]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            path = scope["path"]
            if path == "/generate":
                params = parse_generate_query(scope["query_string"])
                if params is not None:
                    await self._generate(scope, receive, send, params)
                    return
            elif path == "/healthz":
                scope["route"] = self.health_route
                await send(_HEALTH_START)
                await send(_HEALTH_BODY_MESSAGE)
                return
        await self.app(scope, receive, send)

    async def _generate(self, scope: Scope, receive: Receive, send: Send, p: dict[str, Any]) -> None:
        scope["route"] = self.generate_route
        request = Request(scope, receive)
        try:
            status, body, headers = await render_png_parts(self.service, request, p["model"], p["label"], p["seed"],
                                                           p["n"], p["truncation"], p["scale"], p["version"])
        except ApiError as e:
            await e.response()(scope, receive, send)
            return
        # The messages starlette's Response(body, media_type="image/png", headers=headers) sends (304: no
        # length, no type), without building one.
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        if status != 304:
            raw += [(b"content-length", str(len(body)).encode()), (b"content-type", b"image/png")]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})
