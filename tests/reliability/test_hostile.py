"""Hostile input: property-based tests of the seed rule, the label parser and the limits, and the
things an attacker tries first (path traversal, header injection, leaking internals, reaching
/metrics or /docs, cross-origin reads).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from app.generation import resolve_label
from app.imaging import grid_shape
from app.main import create_app
from app.routes.interpolate import parse_seeds
from app.service import ApiError
from app.settings import Settings
from tests.app.conftest import AE, CLASSES, COND, UNCOND, make_settings, wait_ready, write_checkpoint
from tests.app.images import pixels
from training.latent import SEED_MAX, grid_seeds, latent, latents

FAST = settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
HTTP = settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
seeds = st.integers(0, SEED_MAX)


@pytest.fixture(scope="module")
def client(tiny_root: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(tiny_root))) as c:
        wait_ready(c)
        yield c


# -------------------------------------------------------------------------------- seed → latent


@FAST
@given(seed=seeds, z_dim=st.integers(1, 512))
def test_seed_rule_is_the_documented_formula(seed: int, z_dim: int) -> None:
    expected = np.random.RandomState(seed).standard_normal(z_dim).astype(np.float32)
    z = latent(seed, z_dim)
    assert z.dtype == np.float32 and z.shape == (z_dim,)
    assert np.array_equal(z, expected)


@FAST
@given(seed=st.integers(0, SEED_MAX - 63), n=st.integers(1, 64), z_dim=st.integers(1, 128),
       truncation=st.floats(0.01, 1.0))
def test_grid_row_i_is_seed_plus_i_and_truncation_scales(seed: int, n: int, z_dim: int, truncation: float) -> None:
    z = latents(grid_seeds(seed, n), z_dim)
    assert z.shape == (n, z_dim)
    for i in (0, n // 2, n - 1):
        assert np.array_equal(z[i].numpy(), latent(seed + i, z_dim))
    zt = latents(grid_seeds(seed, n), z_dim, truncation)
    assert torch.equal(zt, z * np.float32(truncation))


@FAST
@given(seed=st.one_of(st.integers(max_value=-1), st.integers(min_value=SEED_MAX + 1)))
def test_seeds_out_of_range_are_refused(seed: int) -> None:
    with pytest.raises(ValueError, match="seed must be"):
        latent(seed, 4)


@HTTP
@given(seed=seeds, n=st.integers(1, 4))
def test_http_seed_range_and_grid_boundary(client: TestClient, seed: int, n: int) -> None:
    r = client.get("/generate", params={"model": UNCOND, "seed": seed, "n": n})
    if seed + n - 1 <= SEED_MAX:
        assert r.status_code == 200 and r.headers["x-seed"] == str(seed)
        if n == 1:  # the permalink is the same image
            assert client.get(f"/models/{UNCOND}/seeds/{seed}.png").content == r.content
    else:
        assert r.status_code == 422 and "seed + n − 1" in r.json()["detail"]


# ----------------------------------------------------------------------------------- label parser


@FAST
@given(raw=st.text(max_size=60))
def test_label_parser_accepts_exactly_indices_and_names(client: TestClient, raw: str) -> None:
    model = client.app.state.service.registry.models[COND]  # type: ignore[attr-defined]
    text = raw.strip()
    lowered = [c.lower() for c in CLASSES]
    if text.isascii() and text.isdecimal() and int(text) < len(CLASSES):
        want: int | None = int(text)
    elif text in CLASSES:
        want = CLASSES.index(text)
    elif not (text.isascii() and text.isdecimal()) and text.lower() in lowered:
        want = lowered.index(text.lower())
    else:
        want = None
    try:
        got = resolve_label(model, raw)
    except ApiError as e:
        assert want is None, (raw, e.detail)
        assert e.status == 422 and e.allowed == CLASSES
        assert len(e.detail) < 400  # the echo of the input is bounded
        return
    assert got == want and got is not None and 0 <= got < len(CLASSES)


@FAST
@given(index=st.integers(0, len(CLASSES) - 1), pad=st.sampled_from(["", " ", "\t", "  "]),
       case=st.sampled_from([str.lower, str.upper, str.title, str]))
def test_label_parser_round_trips(client: TestClient, index: int, pad: str, case: Any) -> None:
    model = client.app.state.service.registry.models[COND]  # type: ignore[attr-defined]
    assert resolve_label(model, f"{pad}{index}{pad}") == index
    assert resolve_label(model, pad + case(CLASSES[index]) + pad) == index
    unconditional = client.app.state.service.registry.models[UNCOND]  # type: ignore[attr-defined]
    with pytest.raises(ApiError, match="unconditional"):
        resolve_label(unconditional, str(index))


@FAST
@given(text=st.text(max_size=80))
def test_seed_list_parser_never_crashes(text: str) -> None:
    try:
        keys = parse_seeds(text)
    except ApiError as e:
        assert e.status == 422
        return
    assert 2 <= len(keys) <= 16 and all(0 <= k <= SEED_MAX for k in keys)


# ------------------------------------------------------------------------------------ query limits


@HTTP
@given(n=st.integers(-3, 80), scale=st.integers(-1, 10), model=st.sampled_from([COND, UNCOND]))
def test_grid_limits(client: TestClient, n: int, scale: int, model: str) -> None:
    params: dict[str, Any] = {"model": model, "seed": 1, "n": n, "scale": scale}
    if model == COND:
        params["label"] = 1
    r = client.get("/generate", params=params)
    if 1 <= n <= 64 and 1 <= scale <= 8:
        h, w = grid_shape(n, 28, 28, scale)
        budget = client.app.state.service.settings.max_image_pixels  # type: ignore[attr-defined]
        assert r.status_code == (200 if h * w <= budget else 422), r.text
        if r.status_code == 200:
            assert pixels(r.content).shape[:2] == (h, w)
    else:
        assert r.status_code == 422 and r.headers["content-type"] == "application/json"


@pytest.fixture(scope="module")
def small_budget(tiny_root: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(tiny_root, max_animation_pixels=200_000))) as c:
        wait_ready(c)
        yield c


@HTTP
@given(frames=st.integers(-2, 130), scale=st.integers(0, 9), fmt=st.sampled_from(["gif", "png"]),
       fps=st.integers(-1, 60))
def test_animation_limits(small_budget: TestClient, frames: int, scale: int, fmt: str, fps: int) -> None:
    assume(frames <= 12 or frames > 120 or scale > 8 or scale < 1)  # keep the encoded ones small
    r = small_budget.get("/interpolate", params={"model": UNCOND, "from_seed": 1, "to_seed": 2, "frames": frames,
                                                 "scale": scale, "format": fmt, "fps": fps})
    in_range = 2 <= frames <= 120 and 1 <= scale <= 8 and 1 <= fps <= 50
    if not in_range:
        assert r.status_code == 422
        return
    if fmt == "gif":
        within = frames * (28 * scale) ** 2 <= 200_000
    else:
        h, w = grid_shape(frames, 28, 28, scale, nrow=frames)
        within = h * w <= 4_194_304
    assert r.status_code == (200 if within else 422), r.text
    if not within:
        assert "pixels" in r.json()["detail"] and "at most" in r.json()["detail"]


# ---------------------------------------------------------------------- traversal and injection

TRAVERSALS = ["../etc/passwd", "..", "../../", "..%2F..%2Fetc%2Fpasswd", "%2e%2e", "tiny-cgan/../tiny-mlp",
              "tiny-cgan%00", "tiny-cgan\x00", "TINY-CGAN", "tiny\u2010cgan", "/etc/passwd", "C:\\windows",
              "tiny-cgan\r\nX-Injected: 1", "x" * 500, "evaluators", ".hidden", "tiny-cgan/x", "~root"]


@pytest.mark.parametrize("name", TRAVERSALS)
def test_model_names_cannot_reach_paths(client: TestClient, tiny_root: Path, name: str) -> None:
    seg = quote(name, safe="").replace(".", "%2E")  # percent-encoded, so that the client does not normalise it
    for r in (client.get("/generate", params={"model": name}),
              client.get("/interpolate", params={"model": name}),
              client.get(f"/models/{seg}"),
              client.get(f"/models/{seg}/seeds/1.png"),
              client.get(f"/models/{seg}/samples.png")):
        assert r.status_code in (404, 422), (name, r.request.url, r.status_code)
        assert r.headers["content-type"] == "application/json"
        assert "x-injected" not in r.headers
        _no_leaks(r.text, tiny_root)


def _no_leaks(text: str, root: Path) -> None:
    for leak in ("Traceback", str(root), "site-packages", ".py\"", "File \"", "/root/", "/home/"):
        assert leak not in text, (leak, text[:300])


@pytest.fixture(scope="module")
def nasty_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint whose class names try header injection, quoting and traversal."""
    root = tmp_path_factory.mktemp("nasty")
    names = ['a"; filename="evil.sh', "b\r\nSet-Cookie: session=stolen", "../../c", "ümlaut ☃"]
    kw = {"z_dim": 4, "num_classes": len(names), "channels": 1, "resolution": 28, "ngf": 4, "upsample": "convT",
          "bn": "before-act"}
    write_checkpoint(root, "nasty", "DCGenerator", kw, family="cgan", class_names=names)
    return root


def test_headers_are_built_from_validated_values_only(nasty_root: Path) -> None:
    with TestClient(create_app(make_settings(nasty_root, default_model="nasty"))) as client:
        wait_ready(client)
        for label in range(4):
            r = client.get("/generate", params={"label": label, "seed": 1})
            assert r.status_code == 200
            assert "set-cookie" not in r.headers
            assert re.fullmatch(r"[A-Za-z0-9%._~-]+", r.headers["x-label-name"]), r.headers["x-label-name"]
            g = client.get("/interpolate", params={"from_label": label, "to_label": 3, "from_seed": 1, "frames": 3})
            assert g.status_code == 200 and "set-cookie" not in g.headers
            disposition = g.headers["content-disposition"]
            assert re.fullmatch(r'attachment; filename="[a-z0-9._-]+\.gif"', disposition), disposition
        # Labels are names from the registry, never echoed into headers unvalidated.
        r = client.get("/generate", params={"label": "0\r\nSet-Cookie: x=1", "seed": 1})
        assert r.status_code == 422 and "set-cookie" not in r.headers


METHODS_AND_PATHS = [("POST", "/generate"), ("PUT", "/models/tiny-cgan"), ("DELETE", "/models"),
                     ("PATCH", "/readyz"), ("GET", "/nope"), ("GET", "/static/../app/main.py"),
                     ("GET", "/static/%2e%2e/registry.py"), ("GET", "/static/..%2f..%2fsettings.py"),
                     ("GET", "/models/tiny-cgan/seeds/-1.png"), ("GET", "/models/tiny-cgan/seeds/1.gif"),
                     ("GET", "/generate?seed=" + "9" * 5000), ("GET", "/generate?truncation=1e309"),
                     ("GET", "/interpolate?seeds=" + ",".join(["1"] * 300))]


@pytest.mark.parametrize(("method", "path"), METHODS_AND_PATHS)
def test_errors_carry_no_internals(client: TestClient, tiny_root: Path, method: str, path: str) -> None:
    r = client.request(method, path)
    assert 400 <= r.status_code < 500, (method, path, r.status_code)
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "detail" in r.json()
    _no_leaks(r.text, tiny_root)


# --------------------------------------------------------------- request head limits (in-process)


def test_url_and_header_limits(tiny_root: Path) -> None:
    with TestClient(create_app(make_settings(tiny_root, max_url_bytes=512, max_header_bytes=2048))) as c:
        wait_ready(c)
        assert c.get("/generate", params={"label": "x" * 400}).status_code == 422  # under: validated as usual
        r = c.get("/generate", params={"label": "x" * 600})
        assert r.status_code == 414
        assert re.fullmatch(r"request URL too long: \d+ bytes, at most 512", r.json()["detail"])
        r = c.get(f"/models/{'a' * 600}")
        assert r.status_code == 414
        r = c.get("/healthz", headers={"x-big": "y" * 3000})
        assert r.status_code == 431 and "at most 2048" in r.json()["detail"]
        assert c.get("/healthz", headers={"x-ok": "y" * 1000}).status_code == 200
        metrics = c.get("/metrics").text
        assert 'status="414"' in metrics and 'status="431"' in metrics  # counted like any answer


# ----------------------------------------------------------------- /metrics, /docs and CORS


def test_metrics_bearer_token(tiny_root: Path) -> None:
    token = "s3cret-token-for-tests"
    with TestClient(create_app(make_settings(tiny_root, metrics_token=token))) as c:
        wait_ready(c)
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token},
                        {"Authorization": f"Basic {token}"}, {"Authorization": f"Bearer {token}x"}):
            r = c.get("/metrics", headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
            assert token not in r.text
        ok = c.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200 and "ganserve_requests_total" in ok.text
        assert token not in c.get("/openapi.json").text
        assert c.get("/readyz").status_code == 200 and c.get("/healthz").status_code == 200  # probes stay open
    assert "s3cret" not in repr(Settings(checkpoints=tiny_root, metrics_token=token))  # not logged by accident
    assert Settings(metrics_token="  ").metrics_token is None  # blank: no token


def test_docs_and_metrics_can_be_turned_off(tiny_root: Path) -> None:
    with TestClient(create_app(make_settings(tiny_root, enable_docs=False, enable_metrics=False))) as c:
        wait_ready(c)
        for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect", "/metrics"):
            assert c.get(path).status_code == 404, path
        assert c.get("/generate", params={"label": 0, "seed": 1}).status_code == 200


def test_cors_is_off_unless_configured_and_then_explicit(tiny_root: Path) -> None:
    with TestClient(create_app(make_settings(tiny_root))) as c:
        wait_ready(c)
        r = c.get("/generate", params={"label": 0, "seed": 1}, headers={"Origin": "http://evil.example"})
        assert not [h for h in r.headers if h.startswith("access-control-")]
        pre = c.options("/generate", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"})
        assert "access-control-allow-origin" not in pre.headers
    allowed = "https://gallery.example"
    with TestClient(create_app(make_settings(tiny_root, cors_origins=[allowed]))) as c:
        wait_ready(c)
        r = c.get("/models", headers={"Origin": allowed})
        assert r.headers["access-control-allow-origin"] == allowed
        assert "access-control-allow-credentials" not in r.headers
        pre = c.options("/generate", headers={"Origin": allowed, "Access-Control-Request-Method": "POST"})
        assert pre.status_code == 400  # only GET is allowed cross-origin
        other = c.get("/models", headers={"Origin": "https://gallery.example.evil.example"})
        assert "access-control-allow-origin" not in other.headers
    for bad in (["*"], ["gallery.example"], ["https://a.example/path"], ["javascript:alert(1)"]):
        with pytest.raises(ValidationError, match="cors_origins"):
            Settings(cors_origins=bad)


def test_unsampleable_and_unknown_models_answer_cleanly(client: TestClient) -> None:
    assert client.get("/generate", params={"model": AE}).status_code == 422
    r = client.get("/generate", params={"model": "absent"})
    assert r.status_code == 404 and r.json()["allowed"] == sorted([AE, COND, UNCOND])
