"""Overload and slow clients against a real uvicorn process.

* Far more concurrent generation requests than the queue holds: the excess is shed with 503 +
  Retry-After within a fraction of a second, every request gets an answer (nothing hangs), and
  once the storm stops a request is as fast as before it.
* Slowloris: connections that send their request head a byte at a time do not slow down the
  other clients (uvicorn's event loop only wakes up for them when a byte arrives).
* Oversized request heads are refused: 414 for a long URL, 431 for large headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import statistics
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.app.conftest import COND
from tests.reliability.conftest import HEAVY, HOST, RawClient, percentile, report, run_server, write_heavy

STORM_CLIENTS = 128  # concurrent connections during the storm (the queue holds 4)
STORM_SECONDS = 6.0


@pytest.fixture(scope="module")
def heavy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("heavy")
    write_heavy(root)
    return root


def _timed_sequential(port: int, count: int, first_seed: int) -> list[float]:
    async def go() -> list[float]:
        client, times = RawClient(port), []
        try:
            for i in range(count):
                t0 = time.perf_counter()
                r = await client.get(f"/generate?model={HEAVY}&seed={first_seed + i}&n=16")
                assert r.status_code == 200, r.text
                times.append(time.perf_counter() - t0)
        finally:
            await client.close()
        return times

    return asyncio.run(go())


async def _storm(port: int) -> tuple[Counter[int], list[float], list[float], list[str]]:
    """STORM_CLIENTS clients, each sending its next request as soon as the last one is answered
    (ignoring Retry-After, as a hostile client would), for STORM_SECONDS."""
    statuses: Counter[int] = Counter()
    shed: list[float] = []
    served: list[float] = []
    problems: list[str] = []
    stop = time.monotonic() + STORM_SECONDS

    async def client(k: int) -> None:
        c, seed = RawClient(port), 10_000 * (k + 1)
        try:
            while time.monotonic() < stop:
                seed += 1
                t0 = time.perf_counter()
                try:
                    r = await asyncio.wait_for(c.get(f"/generate?model={HEAVY}&seed={seed}&n=16"), 30)
                except (TimeoutError, OSError, asyncio.IncompleteReadError) as e:
                    problems.append(f"client {k}: {type(e).__name__} (a hang or a dropped connection)")
                    await c.close()
                    continue
                dt = time.perf_counter() - t0
                statuses[r.status_code] += 1
                if r.status_code == 503:
                    shed.append(dt)
                    if "retry-after" not in r.headers or "busy" not in r.json()["detail"]:
                        problems.append(f"503 without Retry-After or reason: {r.headers} {r.text}")
                elif r.status_code == 200:
                    served.append(dt)
                else:
                    problems.append(f"unexpected {r.status_code}: {r.text[:200]}")
        finally:
            await c.close()

    await asyncio.gather(*(client(k) for k in range(STORM_CLIENTS)))
    return statuses, shed, served, problems


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_overload_sheds_fast_and_recovers(heavy_root: Path, tmp_path: Path) -> None:
    env = {"GANSERVE_DEFAULT_MODEL": HEAVY, "GANSERVE_QUEUE_SIZE": "4", "GANSERVE_MAX_BATCH": "64",
           "GANSERVE_CACHE_SIZE": "0", "GANSERVE_REQUEST_TIMEOUT_S": "10", "GANSERVE_LOG_LEVEL": "WARNING"}
    with run_server(heavy_root, tmp_path, env=env) as server:
        before = _timed_sequential(server.port, 8, 1)
        t0 = time.perf_counter()
        statuses, shed, served, problems = asyncio.run(_storm(server.port))
        storm_seconds = time.perf_counter() - t0
        time.sleep(0.5)
        after = _timed_sequential(server.port, 8, 100)
        metrics = httpx.get(f"{server.base}/metrics", timeout=10).text
        log = server.output()
    report(before_ms=statistics.median(before) * 1000, after_ms=statistics.median(after) * 1000,
           storm_s=storm_seconds, statuses=dict(statuses), shed_p50_ms=percentile(shed, 0.5) * 1000,
           shed_p99_ms=percentile(shed, 0.99) * 1000, served_p50_ms=percentile(served, 0.5) * 1000,
           served_rps=len(served) / STORM_SECONDS)
    assert not problems, problems[:10]
    assert set(statuses) <= {200, 503}
    assert statuses[503] > statuses[200] > 0  # most of the storm was shed, some of it served
    # Shedding is quick: a refusal does not wait for the queue (it costs only the HTTP handling).
    assert percentile(shed, 0.5) < min(1.0, percentile(served, 0.5) / 2) and percentile(shed, 0.99) < 3.0
    assert storm_seconds < STORM_SECONDS + 15  # every request was answered: nothing hung
    # Back to full speed: as fast as before the storm (with slack for the shared machine).
    assert statistics.median(after) < max(2 * statistics.median(before), statistics.median(before) + 0.1)
    assert f'ganserve_queue_depth{{model="{HEAVY}"}} 0.0' in metrics
    assert f'ganserve_rejected_total{{model="{HEAVY}",reason="queue_full"}}' in metrics
    assert "Traceback" not in log


def _slowloris(port: int, count: int) -> list[socket.socket]:
    """``count`` connections that have started a request head and will never finish it quickly."""
    socks = []
    for _ in range(count):
        s = socket.create_connection((HOST, port), timeout=5)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        socks.append(s)
    return socks



@pytest.mark.slow
@pytest.mark.timeout(180)
def test_slowloris_does_not_starve_other_clients(tiny_root: Path, tmp_path: Path) -> None:
    with run_server(tiny_root, tmp_path, uvicorn_args=["--timeout-keep-alive", "5"]) as server:
        base = _timed_generate(server.base, 10, 0)
        socks = _slowloris(server.port, 100)
        try:
            during: list[float] = []
            until = time.monotonic() + 6
            i = 0
            while time.monotonic() < until:
                for s in socks:  # one more byte on every slow connection, then a normal request
                    with contextlib.suppress(OSError):
                        s.sendall(b"a")
                during += _timed_generate(server.base, 1, 1000 + i)
                i += 1
                time.sleep(0.1)
            still_open = sum(1 for s in socks if _is_open(s))
        finally:
            for s in socks:
                s.close()
        after = _timed_generate(server.base, 10, 5000)
    report(slow_connections=len(socks), still_open=still_open, normal_requests=len(during),
           p50_before_ms=statistics.median(base) * 1000, p50_during_ms=statistics.median(during) * 1000,
           max_during_ms=max(during) * 1000, p50_after_ms=statistics.median(after) * 1000)
    assert len(during) >= 10
    assert max(during) < 1.0 and statistics.median(during) < max(0.2, 3 * statistics.median(base))


def _timed_generate(base: str, count: int, seed: int) -> list[float]:
    times = []
    with httpx.Client(base_url=base, timeout=10) as c:
        for i in range(count):
            t0 = time.perf_counter()
            r = c.get("/generate", params={"model": COND, "label": 1, "seed": seed + i})
            assert r.status_code == 200
            times.append(time.perf_counter() - t0)
    return times


def _is_open(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        return s.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        s.setblocking(True)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_oversized_request_heads_are_refused(tiny_root: Path, tmp_path: Path) -> None:
    """Over real HTTP: 414 / 431 JSON from the service, nothing reaches a route."""
    with run_server(tiny_root, tmp_path) as server, httpx.Client(base_url=server.base, timeout=10) as c:
        r = c.get("/generate", params={"label": "x" * 9000})
        assert r.status_code == 414 and "at most 8192" in r.json()["detail"]
        r = c.get("/healthz", headers={f"x-h{i}": "v" * 1000 for i in range(10)})
        assert r.status_code == 431 and "at most 8192" in r.json()["detail"]
        assert r.headers["connection"] == "close"
        assert c.get("/healthz").status_code == 200
