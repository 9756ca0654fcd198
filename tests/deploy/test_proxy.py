"""deploy/nginx/ganserve.conf.template run for real: Debian's nginx on loopback in front of the real service.

The proxy caches what the service says may be cached — versioned images, immutable — and nothing else,
so a replaced checkpoint never leaves old bytes behind an unversioned URL; it shields uvicorn from slow
clients, limits request bodies, and passes 503 + Retry-After through.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from bench.common import free_port
from bench.proxy import TEMPLATE, TEMPLATE_VARS, Nginx
from tests.app.conftest import COND, write_ae, write_cgan, write_mlp
from tests.deploy.conftest import HOST, Service, run_nginx, run_service

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
UPLOAD_LIMIT = 65_536  # rendered into client_max_body_size


def version(service: Service, model: str = COND) -> str:
    v = httpx.get(f"{service.base}/models/{model}", timeout=10).json()["version"]
    assert re.fullmatch(r"[0-9a-f]{12}", v), v
    return str(v)


def get(base: str, url: str, **headers: str) -> httpx.Response:
    return httpx.get(f"{base}{url}", headers=headers, timeout=15)


def max_age(cache_control: str) -> float:
    """Seconds an unversioned response may be reused without revalidation (0 for no-cache)."""
    if "no-cache" in cache_control or "no-store" in cache_control:
        return 0.0
    m = re.search(r"max-age=(\d+)", cache_control)
    assert m, cache_control
    return float(m.group(1))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, Nginx]]:
    tmp = tmp_path_factory.mktemp("proxy")
    checkpoints = tmp / "checkpoints"
    write_cgan(checkpoints)
    write_mlp(checkpoints)
    with run_service(checkpoints, tmp) as service, \
            run_nginx(service.upstream, tmp, max_upload_bytes=UPLOAD_LIMIT) as nginx:
        yield service, nginx


def test_the_template_has_only_its_four_variables() -> None:
    """The official image substitutes every environment variable it has (``$NAME`` and ``${NAME}``): the
    template's own are its four, and nginx's variables are all lower-case, which no environment holds."""
    text = TEMPLATE.read_text()
    assert set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text)) == set(TEMPLATE_VARS)
    bare = set(re.findall(r"\$([A-Za-z_][A-Za-z0-9_]*)", text))
    assert bare and all(name.islower() for name in bare), bare


def test_a_repeated_versioned_request_does_not_reach_the_service(stack: tuple[Service, Nginx]) -> None:
    service, nginx = stack
    v = version(service)
    url = f"/generate?model={COND}&label=1&seed=7&version={v}"
    direct = get(service.base, url)
    first = get(nginx.base, url)
    assert first.status_code == 200 and first.headers["x-cache-status"] == "MISS"
    assert first.content == direct.content and first.headers["etag"] == direct.headers["etag"]
    assert "immutable" in first.headers["cache-control"] and first.headers["x-model-version"] == v
    before = service.requests()
    for _ in range(5):
        again = get(nginx.base, url)
        assert again.status_code == 200 and again.headers["x-cache-status"] == "HIT"
        assert again.content == first.content and again.headers["x-model-version"] == v
    not_modified = get(nginx.base, url, **{"If-None-Match": first.headers["etag"]})
    assert not_modified.status_code == 304 and not not_modified.content
    assert service.requests() == before  # six requests, none reached the service


def test_concurrent_misses_of_one_url_make_one_upstream_request(stack: tuple[Service, Nginx]) -> None:
    service, nginx = stack
    url = f"/generate?model={COND}&label=2&seed=11&n=4&version={version(service)}"
    before = service.requests()
    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda _: get(nginx.base, url), range(16)))
    assert {r.status_code for r in responses} == {200}
    assert len({r.content for r in responses}) == 1
    assert service.requests() == before + 1  # proxy_cache_lock: the other 15 waited for the first


def test_unversioned_and_drawn_urls_are_not_kept_longer_than_the_service_allows(
        stack: tuple[Service, Nginx]) -> None:
    service, nginx = stack
    url = f"/generate?model={COND}&label=1&seed=21"
    direct = get(service.base, url)
    proxied = get(nginx.base, url)
    assert proxied.status_code == 200 and proxied.content == direct.content
    assert proxied.headers["cache-control"] == direct.headers["cache-control"]  # passed through as it is
    assert "immutable" not in proxied.headers["cache-control"] and max_age(proxied.headers["cache-control"]) <= 60
    # A drawn seed (no-store) is never stored: every request is a new image from the service.
    before = service.requests()
    drawn = [get(nginx.base, f"/generate?model={COND}&label=1") for _ in range(3)]
    assert all(r.status_code == 200 and "no-store" in r.headers["cache-control"] for r in drawn)
    assert len({r.headers["x-seed"] for r in drawn}) == 3
    assert service.requests() == before + 3


def test_slow_clients_wait_in_nginx_not_in_the_service(stack: tuple[Service, Nginx]) -> None:
    """100 connections holding half-sent request heads: a normal request is not delayed by more than a
    second, nginx drops the slow ones after client_header_timeout (5 s), and the service never sees them."""
    service, nginx = stack
    v = version(service)

    def timed(seed: int) -> float:
        t0 = time.perf_counter()
        r = get(nginx.base, f"/generate?model={COND}&label=0&seed={seed}&version={v}")  # a miss: a forward pass
        assert r.status_code == 200
        return time.perf_counter() - t0

    baseline = sorted(timed(1000 + i) for i in range(5))[2]
    before = service.requests()
    socks = []
    for _ in range(100):
        s = socket.create_connection((HOST, nginx.port), timeout=5)
        s.sendall(b"GET /generate?seed=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        socks.append(s)
    try:
        opened = time.monotonic()
        during = []
        while time.monotonic() - opened < 4:  # inside the header timeout: all 100 are still held
            for s in socks:
                s.sendall(b"a")
            during.append(timed(2000 + len(during)))
            time.sleep(0.1)
        assert len(during) >= 10
        assert max(during) < baseline + 1.0, (baseline, during)
        # Past client_header_timeout nginx has closed every one of them (no response: the head never ended).
        closed = 0
        for s in socks:
            s.settimeout(max(0.1, opened + 15 - time.monotonic()))
            try:
                closed += s.recv(1024) == b""
            except ConnectionResetError:
                closed += 1
        assert closed == 100
    finally:
        for s in socks:
            s.close()
    assert service.requests() == before + len(during)  # the slow heads never reached the service


def test_request_bodies_are_limited_to_the_upload_limit(stack: tuple[Service, Nginx]) -> None:
    service, nginx = stack
    before = service.requests()
    big = httpx.post(f"{nginx.base}/models/{COND}/translate", content=b"\0" * (UPLOAD_LIMIT + 1),
                     headers={"Content-Type": "image/png"}, timeout=15)
    assert big.status_code == 413
    assert service.requests() == before  # refused at the proxy
    small = httpx.post(f"{nginx.base}/models/{COND}/translate", content=b"\0" * 100,
                       headers={"Content-Type": "image/png"}, timeout=15)
    assert small.status_code != 413 and small.status_code < 500
    assert service.requests() == before + 1  # the service answered it, whatever it thinks of the body


def test_metrics_are_not_served_through_the_proxy(stack: tuple[Service, Nginx]) -> None:
    service, nginx = stack
    r = get(nginx.base, "/metrics")
    assert r.status_code == 404 and r.json() == {"detail": "not found"}
    assert get(service.base, "/metrics").status_code == 200


def test_an_upstream_list_balances_and_skips_a_dead_replica(stack: tuple[Service, Nginx], tmp_path: Path) -> None:
    """GANSERVE_UPSTREAM as a list (the value follows `server`): a replica that refuses connections is
    skipped, every request is answered by the living one."""
    service, _ = stack
    dead = f"{HOST}:{free_port()}"
    with run_nginx(f"{dead}; server {service.upstream}", tmp_path) as nginx:
        before = service.requests()
        for i in range(6):
            r = get(nginx.base, f"/generate?model={COND}&label=0&seed={500 + i}")
            assert r.status_code == 200
        assert service.requests() == before + 6


def test_the_services_503_and_retry_after_pass_through(tmp_path: Path) -> None:
    """A service with no sampleable model answers 503 + Retry-After; through nginx the same status, header
    and body, and nothing is cached (every request reaches the service)."""
    checkpoints = tmp_path / "checkpoints"
    write_ae(checkpoints)
    with run_service(checkpoints, tmp_path, ready_path="/healthz") as service, \
            run_nginx(service.upstream, tmp_path) as nginx:
        direct = get(service.base, "/generate?seed=1")
        assert direct.status_code == 503 and direct.headers["retry-after"]
        before = service.requests()
        for _ in range(2):
            r = get(nginx.base, "/generate?seed=1")
            assert r.status_code == 503 and r.headers["retry-after"] == direct.headers["retry-after"]
            assert r.json() == direct.json() and r.headers["x-cache-status"] == "MISS"
        assert service.requests() == before + 2


def test_cached_versioned_images_outlive_the_service(tmp_path: Path) -> None:
    """With the service stopped, a cached versioned image is still served; anything else is the
    proxy's own 503 + Retry-After (never an unversioned image from the cache)."""
    checkpoints = tmp_path / "checkpoints"
    write_cgan(checkpoints)
    with run_service(checkpoints, tmp_path) as service, run_nginx(service.upstream, tmp_path) as nginx:
        v = version(service)
        versioned = f"/generate?model={COND}&label=1&seed=5&version={v}"
        unversioned = f"/generate?model={COND}&label=1&seed=5"
        kept = get(nginx.base, versioned)
        assert kept.status_code == 200 and get(nginx.base, unversioned).status_code == 200
        service.stop()
        r = get(nginx.base, versioned)
        assert r.status_code == 200 and r.headers["x-cache-status"] == "HIT" and r.content == kept.content
        for url in (unversioned, f"/generate?model={COND}&label=1&seed=6&version={v}"):
            down = get(nginx.base, url)
            assert down.status_code == 503 and down.headers["retry-after"] == "5"
            assert "unavailable" in down.json()["detail"]


@pytest.mark.parametrize("unversioned_max_age", ["0", "2"])  # 'public, no-cache' / 'public, max-age=2'
def test_a_checkpoint_replaced_in_place_shows_through_the_proxy(tmp_path: Path, unversioned_max_age: str) -> None:
    """Retrain in place (same folder, new weights, picked up by hot reload): through nginx the unversioned
    URL gives the new bytes within the max-age the service promised, and an old-version URL gives 404
    naming the loaded version. (An old-version URL nginx had already cached keeps that version's bytes:
    they are still exactly what that URL names.)"""
    checkpoints = tmp_path / "checkpoints"
    write_cgan(checkpoints, seed=0)
    env = {"GANSERVE_RELOAD_INTERVAL_S": "0.2", "GANSERVE_UNVERSIONED_MAX_AGE_S": unversioned_max_age}
    with run_service(checkpoints, tmp_path, env=env) as service, \
            run_nginx(service.upstream, tmp_path) as nginx:
        old = version(service)
        unversioned = f"/generate?model={COND}&label=1&seed=3"
        pinned = f"/generate?model={COND}&label=1&seed=3&version={old}"
        fetched_at = time.monotonic()
        before = get(nginx.base, unversioned)
        kept = get(nginx.base, pinned)
        assert before.status_code == kept.status_code == 200 and before.content == kept.content
        promised = max_age(before.headers["cache-control"])
        assert promised == float(unversioned_max_age)
        if promised:  # stored for its max-age: answered from the cache meanwhile
            assert get(nginx.base, unversioned).headers["x-cache-status"] in ("HIT", "REVALIDATED")

        write_cgan(checkpoints, seed=1)  # the same model retrained: new weights, same name, same folder
        deadline = time.monotonic() + 30
        while version(service) == old:
            assert time.monotonic() < deadline, "the service did not reload the replaced checkpoint"
            time.sleep(0.1)
        new = version(service)
        fresh = get(service.base, unversioned)
        assert fresh.status_code == 200 and fresh.content != before.content

        while (r := get(nginx.base, unversioned)).content != fresh.content:
            assert r.status_code == 200 and r.content == before.content
            assert time.monotonic() < fetched_at + promised + 5, "the proxy kept the old bytes past max-age"
            time.sleep(0.2)
        assert r.headers["x-model-version"] == new

        gone = get(nginx.base, f"/generate?model={COND}&label=1&seed=4&version={old}")
        assert gone.status_code == 404 and new in gone.json()["detail"]
        assert get(nginx.base, pinned).content == kept.content  # cached: version `old`'s own bytes
        now_pinned = get(nginx.base, f"/generate?model={COND}&label=1&seed=3&version={new}")
        assert now_pinned.status_code == 200 and now_pinned.content == fresh.content
