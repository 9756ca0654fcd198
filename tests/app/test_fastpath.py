"""The pure-ASGI fast path (app/fastpath.py) answers exactly as the FastAPI routes do.

Every query below is sent to two apps over the same checkpoints, one with the fast path and one
without; status, headers and bytes must agree (for seeded requests — unseeded ones draw a random
seed, so there only the status and the header names can agree)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import app.fastpath as fastpath
import app.params as params
from app.main import create_app
from tests.app.conftest import make_settings, wait_ready

KEYS = ["model", "label", "seed", "n", "truncation", "scale", "version", "other"]
VALUES = ["0", "1", "2", "3", "7", "8", "9", "64", "65", "-1", "+1", " 1", "1 ", "1e0", "1_0", "0x1", "00012", "",
          "0.5", ".5", "1.", "1.0", "0", "0.0", "1.5", "nan", "inf", "0.30000000000000004", "4294967295",
          "4294967296", "99999999999", "tiny-cgan", "tiny-mlp", "tiny-ae", "nope", "Tiny-cgan", "tiny-cgan\n",
          "circle", "CIRCLE", "t-shirt/top", "square ", "x" * 201, "é", "%zz", "a&b"]


@pytest.fixture(scope="module")
def clients(tiny_checkpoints: Path) -> Iterator[tuple[TestClient, TestClient]]:
    fast = create_app(make_settings(tiny_checkpoints, fast_path=True))
    slow = create_app(make_settings(tiny_checkpoints, fast_path=False))
    with TestClient(fast) as f, TestClient(slow) as s:
        wait_ready(f)
        wait_ready(s)
        yield f, s


def _same(fast_resp, slow_resp) -> None:
    assert fast_resp.status_code == slow_resp.status_code, (fast_resp.text[:300], slow_resp.text[:300])
    if fast_resp.headers.get("cache-control") == "no-store" and fast_resp.status_code == 200:
        # a random seed (and label) was drawn: the values differ, their shape does not
        assert sorted(fast_resp.headers.keys()) == sorted(slow_resp.headers.keys())
        assert fast_resp.headers["content-type"] == slow_resp.headers["content-type"]
        assert fast_resp.headers["content-type"] in ("image/png", "image/gif")
        return
    assert fast_resp.content == slow_resp.content
    assert list(fast_resp.headers.items()) == list(slow_resp.headers.items())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(KEYS), st.sampled_from(VALUES)), max_size=5))
@example([("seed", "5"), ("label", "circle")])
@example([("model", "tiny-mlp"), ("seed", "5"), ("n", "4"), ("scale", "2"), ("truncation", "0.5")])
@example([("seed", "5"), ("seed", "6"), ("label", "1")])
@example([("model", "tiny-ae"), ("seed", "1")])
def test_fast_and_fastapi_paths_answer_alike(clients, pairs) -> None:
    fast, slow = clients
    query = "&".join(f"{quote(k)}={quote(v, safe='%&')}" for k, v in pairs)
    _same(fast.get(f"/generate?{query}"), slow.get(f"/generate?{query}"))


def test_conditional_requests_and_healthz_answer_alike(clients) -> None:
    fast, slow = clients
    first = fast.get("/generate?seed=11&label=2")
    etag = first.headers["etag"]
    _same(fast.get("/generate?seed=11&label=2", headers={"If-None-Match": etag}),
          slow.get("/generate?seed=11&label=2", headers={"If-None-Match": etag}))
    assert fast.get("/generate?seed=11&label=2", headers={"If-None-Match": etag}).status_code == 304
    _same(fast.get("/healthz"), slow.get("/healthz"))
    assert fast.get("/healthz").json() == {"status": "ok"}
    # Only GET is taken: other methods get FastAPI's 405, as without the fast path.
    _same(fast.post("/generate?seed=1&label=0"), slow.post("/generate?seed=1&label=0"))


def _fast_path_layer(client: TestClient) -> fastpath.FastPath:
    layer = client.app.middleware_stack  # type: ignore[attr-defined]
    while not isinstance(layer, fastpath.FastPath):
        layer = layer.app
    return layer


def test_plain_queries_take_the_fast_path_and_count_as_their_route(clients, monkeypatch) -> None:
    fast, _ = clients
    calls: list[tuple[str, dict[str, object]]] = []
    layer = _fast_path_layer(fast)

    def spying(spec, render):
        async def spy(service, request, values):
            calls.append((spec.path, values))
            return await render(service, request, values)
        return spy

    monkeypatch.setattr(layer, "routes", [(spec, spying(spec, render), route) for spec, render, route in layer.routes])
    assert fast.get("/generate?seed=3&label=circle&scale=2").status_code == 200
    assert fast.get("/generate?seed=-3").status_code == 422  # left to FastAPI's validation
    assert fast.get("/models/tiny-cgan/seeds/5.png?label=1").status_code == 200
    assert fast.get("/interpolate?label=0&from_seed=1&to_seed=2&frames=3&loop=true").status_code == 200
    assert fast.get("/interpolate?label=0&from_seed=1&to_seed=2&loop=True").status_code == 200  # FastAPI's
    assert calls == [
        ("/generate", {"model": None, "label": "circle", "seed": 3, "n": 1, "truncation": None, "scale": 2,
                       "version": None}),  # no truncation: the model's own; no version
        ("/models/{model}/seeds/{seed}.png", {"model": "tiny-cgan", "seed": 5, "label": "1", "truncation": None,
                                              "scale": 1, "version": None}),
        ("/interpolate", {"model": None, "label": "0", "from_label": None, "to_label": None, "from_seed": 1,
                          "to_seed": 2, "seeds": None, "frames": 3, "fps": 12, "method": "slerp", "loop": True,
                          "format": "gif", "scale": 1, "truncation": None, "version": None}),
    ]
    assert fast.get("/healthz").status_code == 200
    metrics = fast.get("/metrics").text
    assert 'ganserve_requests_total{method="GET",model="tiny-cgan",route="/generate",status="200"}' in metrics
    assert 'ganserve_requests_total{method="GET",model="",route="/healthz",status="200"}' in metrics


@given(st.text(alphabet="ab=&;+%20x", max_size=20))
def test_query_pairs_are_parse_qsl(query) -> None:
    assert params._pairs(query) == parse_qsl(query, keep_blank_values=True)


def parse_generate_query(query_string: bytes) -> dict[str, object] | None:
    return params.GENERATE.parse_plain("/generate", query_string)


def test_the_parser_takes_only_plain_spellings() -> None:
    assert parse_generate_query(b"") == {"model": None, "label": None, "seed": None, "n": 1, "truncation": None,
                                         "scale": 1, "version": None}
    assert parse_generate_query(b"seed=0012&n=64&truncation=.25&model=a.b-c_d&label=t-shirt%2Ftop&x=1"
                                b"&version=0123456789ab") == {
        "model": "a.b-c_d", "label": "t-shirt/top", "seed": 12, "n": 64, "truncation": 0.25, "scale": 1,
        "version": "0123456789ab"}
    for plain_invalid in (b"seed=-1", b"seed=4294967296", b"n=0", b"n=65", b"scale=9", b"truncation=0",
                          b"truncation=1.5", b"truncation=1e-1", b"model=Bad", b"model=a%0A", b"seed=1&seed=2",
                          b"label=" + b"x" * 201, b"seed=", b"seed=+1", b"seed=%201", b"version=0123456789AB",
                          b"version=0123456789a", b"version="):
        assert parse_generate_query(plain_invalid) is None, plain_invalid
    interpolate = params.INTERPOLATE
    assert interpolate.parse_plain("/interpolate", b"seeds=1,%202&loop=1&method=lerp&format=png")["seeds"] == "1, 2"
    for plain_invalid in (b"seeds=1,%1C2", b"seeds=1,%092", b"seeds=%D9%A3,1", b"loop=True", b"loop=yes",
                          b"method=LERP", b"frames=121", b"fps=0"):
        assert interpolate.parse_plain("/interpolate", plain_invalid) is None, plain_invalid
    assert params.SEED_PNG.parse_plain("/models/m/seeds/7.png", b"") == {
        "model": "m", "seed": 7, "label": None, "truncation": None, "scale": 1, "version": None}
    for path in ("/models/m/seeds/-7.png", "/models/M/seeds/7.png", "/models/m/seeds/7.jpg", "/models/m/seeds/.png"):
        assert params.SEED_PNG.parse_plain(path, b"") is None, path


INTERPOLATE_KEYS = ["model", "label", "from_label", "to_label", "from_seed", "to_seed", "seeds", "frames", "fps",
                    "method", "loop", "format", "scale", "truncation", "other"]
INTERPOLATE_VALUES = ["0", "1", "2", "3", "5", "121", "-1", "+1", "", "0.5", "1.5", "true", "True", "false", "yes",
                      "slerp", "lerp", "cubic", "gif", "png", "1,2", "1, 5 ,9", "1,x", "٣,1", "tiny-mlp", "tiny-ae",
                      "circle", "SQUARE", "nope", "1,\x1c2", "1,\t2"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(INTERPOLATE_KEYS), st.sampled_from(INTERPOLATE_VALUES)), max_size=6),
       st.booleans())
@example([("label", "0"), ("from_seed", "1"), ("to_seed", "2"), ("frames", "3"), ("loop", "true")], False)
@example([("model", "tiny-mlp"), ("seeds", "1, 5 ,9"), ("format", "png"), ("frames", "5")], False)
def test_interpolate_and_permalinks_answer_alike(clients, pairs, permalink) -> None:
    """The other routes the fast path takes: every query gives what FastAPI gives (seeded ones)."""
    fast, slow = clients
    if permalink:
        pairs = [(k, v) for k, v in pairs if k in ("label", "truncation", "scale", "other")]
        url = "/models/tiny-cgan/seeds/7.png?"
    else:
        pairs = pairs or [("from_seed", "3"), ("to_seed", "4"), ("frames", "3")]
        url = "/interpolate?"
    query = "&".join(f"{quote(k)}={quote(v, safe='%&')}" for k, v in pairs)
    _same(fast.get(url + query), slow.get(url + query))


def test_the_openapi_parameters_are_the_specifications() -> None:
    """Each image route's OpenAPI parameters are its RouteSpec's, in order, with their bounds."""
    from app.params import GENERATE, INTERPOLATE, SEED_PNG

    doc = create_app().openapi()
    for spec in (GENERATE, SEED_PNG, INTERPOLATE):
        documented = doc["paths"][spec.path]["get"]["parameters"]
        assert [(p["name"], p["in"]) for p in documented] == [(p.name, p.where) for p in spec.params], spec.path
        for p, d in zip(spec.params, documented, strict=True):
            schema = d["schema"].get("anyOf", [d["schema"]])[0]
            assert schema.get("maximum") == p.le and schema.get("pattern") == p.pattern, p.name
            assert d.get("description") == p.description
