"""Each route's parameters, specified once: names, types, ranges, defaults, descriptions.

From one :class:`RouteSpec` come both

* the FastAPI endpoint's signature (``RouteSpec.endpoint``) — so its validation, its 422
  messages and the OpenAPI schema — and
* the fast path's parser (``RouteSpec.parse_plain``, used by ``app.fastpath``), which takes the
  *plain* spellings of the same parameters (digits for integers, a short decimal for floats, the
  exact choices, a value matching the pattern) and leaves everything else to FastAPI.

So a parameter cannot exist in one and not the other. Both ignore unknown query parameters, and
a repeated one is FastAPI's to judge. A new parameter or route is one entry here: an explicit
latent ``z`` (or ``from_z``/``to_z``) is a ``Param("z", "str", pattern=…)`` in the routes that take
it, handled where the route builds its ``ImageJob``; a POST image route is a ``RouteSpec`` of its
query and path parameters whose handler reads the body from the request (the fast path takes GETs
only, so such a route is always FastAPI's).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl

from fastapi import Path, Query, Request

from training.checkpoint import NAME_PATTERN
from training.latent import SEED_MAX

MAX_N = 64
MAX_LABEL = 200  # characters of a label query
MAX_SCALE = 8
MAX_FRAMES = 120
MAX_KEYS = 16
MAX_FPS = 50
VERSION_PATTERN = r"^[0-9a-f]{12}$"  # a model version: the first 12 hex digits of its weights' sha256

# Only the plain spellings; anything else (signs, spaces, exponents, "1_000", "0x10"…) is left to FastAPI.
_DIGITS = re.compile(r"[0-9]{1,10}")
_DECIMAL = re.compile(r"(?:0|[1-9][0-9]{0,2})(?:\.[0-9]{1,16})?|\.[0-9]{1,16}")
_BOOLS = {"true": True, "false": False, "1": True, "0": False}

Kind = Literal["int", "float", "str", "bool", "choice"]


@dataclass(frozen=True)
class Param:
    """One parameter of a route. ``default`` None with ``required`` False: optional, None when
    omitted. Bounds: ``ge``/``le`` (and ``gt`` for floats); strings: ``pattern``, ``max_length``."""

    name: str
    kind: Kind
    description: str
    default: Any = None
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    pattern: str | None = None
    max_length: int | None = None
    choices: tuple[str, ...] = ()
    where: Literal["query", "path"] = "query"

    @property
    def required(self) -> bool:
        return self.where == "path"

    def annotation(self) -> Any:
        """``Annotated[type, Query(...)]`` (or ``Path``) for FastAPI."""
        base: Any = {"int": int, "float": float, "str": str, "bool": bool}.get(self.kind)
        if self.kind == "choice":
            base = Literal.__getitem__(self.choices)
        if self.default is None and not self.required:
            base = base | None
        kwargs: dict[str, Any] = {"description": self.description}
        for key in ("ge", "gt", "le", "pattern", "max_length"):
            value = getattr(self, key)
            if value is not None:
                kwargs[key] = value
        if self.kind == "float":
            kwargs["allow_inf_nan"] = False
        return Annotated[base, (Path if self.where == "path" else Query)(**kwargs)]

    def plain(self, text: str) -> Any:
        """The value of a plainly valid ``text`` (as FastAPI would validate it), else ``_DECLINE``."""
        if self.kind == "int":
            if not _DIGITS.fullmatch(text):
                return _DECLINE
            value: Any = int(text)
        elif self.kind == "float":
            if not _DECIMAL.fullmatch(text):
                return _DECLINE
            value = float(text)
        elif self.kind == "bool":
            return _BOOLS.get(text, _DECLINE)
        elif self.kind == "choice":
            return text if text in self.choices else _DECLINE
        else:
            if self.max_length is not None and len(text) > self.max_length:
                return _DECLINE
            # Python's and pydantic's regex engines agree on printable ASCII (not on what "\s" matches
            # among control characters, nor on Unicode classes); anything else is FastAPI's.
            if self.pattern is not None and not (text.isascii() and text.isprintable()
                                                 and _fullmatch(self.pattern, text)):
                return _DECLINE
            return text
        if ((self.ge is not None and value < self.ge) or (self.gt is not None and value <= self.gt)
                or (self.le is not None and value > self.le)):
            return _DECLINE
        return value


_DECLINE = object()
_COMPILED: dict[str, re.Pattern[str]] = {}


def _fullmatch(pattern: str, text: str) -> bool:
    compiled = _COMPILED.get(pattern)
    if compiled is None:
        # Fully matched without the anchors: "$" would also match before a final newline.
        compiled = _COMPILED[pattern] = re.compile(pattern.removeprefix("^").removesuffix("$"))
    return compiled.fullmatch(text) is not None


def _pairs(query: str) -> list[tuple[str, str]]:
    """``parse_qsl(query, keep_blank_values=True)``, without its unquoting when there is nothing to unquote."""
    if "%" in query or "+" in query:
        return parse_qsl(query, keep_blank_values=True)
    out = []
    for part in query.split("&"):
        if part:
            name, _, value = part.partition("=")
            out.append((name, value))
    return out


Handler = Callable[..., Awaitable[Any]]  # (service, request, values: dict) → the route's answer


@dataclass(frozen=True)
class RouteSpec:
    """The parameters of one GET route, in the order of its signature."""

    path: str
    params: tuple[Param, ...]
    _by_name: dict[str, Param] = field(init=False, repr=False, compare=False)
    _path_re: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _static: bool = field(init=False, repr=False, compare=False)  # a path without parameters
    _defaults: dict[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {p.name: p for p in self.params if p.where == "query"})
        # Starlette matches "{name}" as [^/]+; the rest of the template literally.
        parts = re.split(r"\{(\w+)\}", self.path)
        regex = "".join(re.escape(x) if i % 2 == 0 else f"(?P<{x}>[^/]+)" for i, x in enumerate(parts))
        object.__setattr__(self, "_path_re", re.compile(regex))
        object.__setattr__(self, "_static", len(parts) == 1)
        object.__setattr__(self, "_defaults", {p.name: p.default for p in self.params})

    def parse_plain(self, path: str, query_string: bytes) -> dict[str, Any] | None:
        """The values of a request to this route when every parameter is plainly valid, else None
        (FastAPI then judges it). Parsed as Starlette parses it: latin-1, then ``parse_qsl`` with
        blank values kept; unknown parameters ignored, a repeated known one left to FastAPI."""
        if self._static:
            if path != self.path:
                return None
            out = dict(self._defaults)
        else:
            match = self._path_re.fullmatch(path)
            if match is None:
                return None
            out = dict(self._defaults)
            for p in self.params:
                if p.where == "path":
                    value = p.plain(match.group(p.name))
                    if value is _DECLINE:
                        return None
                    out[p.name] = value
        if not query_string:
            return out
        seen: set[str] = set()
        for key, text in _pairs(query_string.decode("latin-1")):
            param = self._by_name.get(key)
            if param is None:
                continue
            if key in seen:
                return None
            seen.add(key)
            value = param.plain(text)
            if value is _DECLINE:
                return None
            out[key] = value
        return out

    def endpoint(self, name: str, handler: Handler, service_dep: Any, doc: str) -> Callable[..., Awaitable[Any]]:
        """A FastAPI endpoint named ``name`` whose signature is (request, service, *these parameters)
        and which calls ``handler(service, request, values)``."""

        async def endpoint(request: Request, service: Any, **values: Any) -> Any:
            return await handler(service, request, values)

        params = [
            inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request),
            inspect.Parameter("service", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=service_dep),
        ]
        for p in self.params:
            default = inspect.Parameter.empty if p.required else p.default
            params.append(inspect.Parameter(p.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                            annotation=p.annotation()))
        endpoint.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        endpoint.__name__ = endpoint.__qualname__ = name
        endpoint.__doc__ = doc
        return endpoint


# --- the parameters ----------------------------------------------------------------------------

MODEL = Param("model", "str", "model name (default: the service's default model)", pattern=NAME_PATTERN,
              max_length=64)
MODEL_PATH = Param("model", "str", "model name", pattern=NAME_PATTERN, max_length=64, where="path")
LABEL = Param("label", "str", "class index (0…K−1) or class name of a conditional model; drawn at random when "
              "omitted; not allowed on unconditional models", max_length=MAX_LABEL)
SEED = Param("seed", "int", f"latent seed 0…{SEED_MAX}; drawn at random when omitted (then the response is not "
             "cacheable)", ge=0, le=SEED_MAX)
SEED_PATH = Param("seed", "int", f"latent seed 0…{SEED_MAX}", ge=0, le=SEED_MAX, where="path")
N = Param("n", "int", "images in the grid: seeds seed…seed+n−1", default=1, ge=1, le=MAX_N)
TRUNCATION = Param("truncation", "float", "truncation ψ in (0, 1]: z is scaled by ψ (default: the model's own, "
                   "`truncation` on its card; 1 unless its metrics were measured at another)", gt=0.0, le=1.0)
SCALE = Param("scale", "int", "nearest-neighbour upscaling factor", default=1, ge=1, le=MAX_SCALE)
VERSION = Param("version", "str", "the model version the URL was made for (`version` on its card, "
                "`X-Model-Version`): the response is then immutable; another version than the loaded one → 404 "
                "naming it. Without it the response is revalidated", pattern=VERSION_PATTERN)
_Z_FORMAT = ("base64url (RFC 4648 §5, '=' padding optional) of the model's z_dim little-endian float32 values, "
             "all finite — as `encode` returns it")
Z = Param("z", "str", f"an explicit latent instead of a seed: {_Z_FORMAT}; with it n is 1, and `truncation` "
          "scales it only when given (default 1: the latent as it is)")
Z_PATH = Param("z", "str", f"the latent: {_Z_FORMAT}", where="path")
FROM_Z = Param("from_z", "str", f"an explicit start latent instead of from_seed: {_Z_FORMAT}")
TO_Z = Param("to_z", "str", f"an explicit end latent instead of to_seed: {_Z_FORMAT}")
FROM_LABEL = Param("from_label", "str", "class morph: start class", max_length=MAX_LABEL)
TO_LABEL = Param("to_label", "str", "class morph: end class", max_length=MAX_LABEL)
FROM_SEED = Param("from_seed", "int", f"seed 0…{SEED_MAX}; random when omitted", ge=0, le=SEED_MAX)
TO_SEED = Param("to_seed", "int", f"seed 0…{SEED_MAX}; random when omitted", ge=0, le=SEED_MAX)
SEEDS = Param("seeds", "str", f"2–{MAX_KEYS} key seeds, e.g. 1,5,9 (instead of from_seed/to_seed)",
              max_length=200, pattern=r"^\s*\d+(\s*,\s*\d+)*\s*$")
FRAMES = Param("frames", "int", "frames in all", default=24, ge=2, le=MAX_FRAMES)
FPS = Param("fps", "int", "GIF frames per second", default=12, ge=1, le=MAX_FPS)
METHOD = Param("method", "choice", "spherical or linear interpolation", default="slerp", choices=("slerp", "lerp"))
LOOP = Param("loop", "bool", "come back to the first key (and class): a seamless loop", default=False)
FORMAT = Param("format", "choice", "gif: animation download; png: one strip", default="gif", choices=("gif", "png"))

GENERATE = RouteSpec("/generate", (MODEL, LABEL, SEED, N, TRUNCATION, SCALE, VERSION, Z))
SEED_PNG = RouteSpec("/models/{model}/seeds/{seed}.png", (MODEL_PATH, SEED_PATH, LABEL, TRUNCATION, SCALE, VERSION))
MODEL_CARD = RouteSpec("/models/{model}", (MODEL_PATH,))
SAMPLES_PNG = RouteSpec("/models/{model}/samples.png", (MODEL_PATH,))
INTERPOLATE = RouteSpec("/interpolate", (MODEL, LABEL, FROM_LABEL, TO_LABEL, FROM_SEED, TO_SEED, SEEDS, FRAMES, FPS,
                                         METHOD, LOOP, FORMAT, SCALE, TRUNCATION, VERSION, FROM_Z, TO_Z))
Z_PNG = RouteSpec("/models/{model}/z/{z}.png", (MODEL_PATH, Z_PATH, LABEL, TRUNCATION, SCALE, VERSION))

# The image-in routes (POST; the body is the image, app/uploads.py).
ENCODE_LABEL = Param("label", "str", "class index or name: required on conditional models (the class the image is "
                     "projected into); may also be a field of a multipart body", max_length=MAX_LABEL)
ENCODE = RouteSpec("/models/{model}/encode", (MODEL_PATH, ENCODE_LABEL))
TRANSLATE = RouteSpec("/models/{model}/translate", (MODEL_PATH, SCALE))
RECONSTRUCT = RouteSpec("/models/{model}/reconstruct", (MODEL_PATH, SCALE))
