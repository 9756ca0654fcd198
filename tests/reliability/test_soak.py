"""Soak: tens of thousands of mixed requests at high concurrency against a real uvicorn process.

Promises checked: no error besides deliberate ones (the 4xx a request asks for, and 503 +
Retry-After if the queue overflows), every seeded response byte-identical to the same request
made alone, and a resident set that stays flat once warm.

The server runs with the encoded-image cache off, so that every request goes through the
micro-batcher and is coalesced with whatever else is in flight: byte-identity is then a
property of batched generation, not of the cache.
"""

from __future__ import annotations

import asyncio
import io
import os
import random
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.app.conftest import COND, UNCOND
from tests.reliability.conftest import RawClient, percentile, report, run_server

REQUESTS = int(os.environ.get("GANSERVE_SOAK_REQUESTS", "20000"))
CONCURRENCY = 64
WARMUP = 5000  # requests before the "warm" RSS reading (RSS plateaus after ~5,000)
MAX_RSS_GROWTH_MB = 50.0


def request_pool(rng: random.Random) -> list[tuple[str, int, bool]]:
    """(url, expected status, deterministic body) for a mix of every route and deliberate errors."""
    pool: list[tuple[str, int, bool]] = []
    for _ in range(60):
        s = rng.randrange(2**32 - 64)
        label = rng.choice(["0", "1", "2", "circle", "square", "t-shirt/top"])
        pool += [
            (f"/generate?model={COND}&label={label}&seed={s}", 200, True),
            (f"/generate?model={UNCOND}&seed={s}", 200, True),
            (f"/generate?model={UNCOND}&seed={s}&n={rng.randint(2, 16)}", 200, True),
            (f"/generate?model={COND}&label={label}&seed={s}&n={rng.randint(2, 9)}&scale=2&truncation=0.7", 200, True),
            (f"/models/{COND}/seeds/{s}.png?label={rng.randrange(3)}&scale={rng.randint(1, 3)}", 200, True),
            (f"/models/{UNCOND}/seeds/{s}.png", 200, True),
        ]
    for _ in range(20):
        s = rng.randrange(2**32 - 64)
        pool += [
            (f"/interpolate?model={COND}&label=1&from_seed={s}&to_seed={s + 1}&frames={rng.randint(2, 8)}", 200, True),
            (f"/interpolate?model={UNCOND}&seeds={s},{s + 3},{s + 7}&frames=6&format=png&method=lerp", 200, True),
            (f"/interpolate?model={COND}&from_label=0&to_label=2&from_seed={s}&frames=5&loop=true", 200, True),
        ]
    pool += [
        ("/models", 200, True), (f"/models/{COND}", 200, True), (f"/models/{UNCOND}", 200, True),
        ("/healthz", 200, True), ("/readyz", 200, True),
        (f"/generate?model={COND}", 200, False),  # seed and label drawn: any image
        (f"/interpolate?model={UNCOND}&frames=3", 200, False),
        ("/generate?model=nope&seed=1", 404, True),  # deliberate errors
        (f"/generate?model={COND}&label=dress&seed=1", 422, True),
        (f"/generate?model={UNCOND}&seed=1&n=65", 422, True),
        (f"/models/{COND}/seeds/{2**32}.png", 422, True),
    ]
    return pool


def how_images_differ(got: bytes, want: bytes) -> str:
    """Which pixels of two encoded images (PNG or GIF frames) differ, and by how much: what a failure
    report needs to tell a rounding step in a few pixels from a different image."""
    try:
        a, b = Image.open(io.BytesIO(got)), Image.open(io.BytesIO(want))
        frames = 0
        worst, count = 0, 0
        for i in range(getattr(b, "n_frames", 1)):
            a.seek(i)
            b.seek(i)
            x = np.asarray(a.convert("RGB"), dtype=np.int16)
            y = np.asarray(b.convert("RGB"), dtype=np.int16)
            if x.shape != y.shape:
                return f"frame {i}: {x.shape} vs {y.shape}"
            d = np.abs(x - y)
            count += int((d.max(axis=-1) > 0).sum())
            worst = max(worst, int(d.max()))
            frames += 1
    except Exception as e:  # not an image (JSON): the bytes are all there is to say
        return f"not images ({type(e).__name__}); {len(got)} vs {len(want)} bytes"
    return f"{count} pixel(s) in {frames} frame(s) differ, by up to {worst} level(s)"


async def soak(port: int, pool: list[tuple[str, int, bool]], reference: dict[str, bytes], count: int,
               rng: random.Random) -> tuple[Counter[str], list[str], list[float], float]:
    """``count`` requests drawn from ``pool`` by CONCURRENCY keep-alive connections
    → (outcomes, problems, latencies, seconds)."""
    picks = iter([pool[rng.randrange(len(pool))] for _ in range(count)])
    outcomes: Counter[str] = Counter()
    problems: list[str] = []
    latencies: list[float] = []

    async def worker() -> None:
        client = RawClient(port)
        try:
            for url, status, fixed in picks:
                t0 = time.perf_counter()
                try:
                    r = await asyncio.wait_for(client.get(url), 60)
                except (OSError, asyncio.IncompleteReadError, TimeoutError) as e:
                    problems.append(f"{url}: {type(e).__name__}: {e}")
                    await client.close()
                    continue
                latencies.append(time.perf_counter() - t0)
                if r.status_code == 503 and "retry-after" in r.headers:
                    outcomes["503"] += 1  # deliberate shedding: allowed, counted
                    continue
                outcomes[str(r.status_code)] += 1
                if r.status_code != status:
                    problems.append(f"{url}: {r.status_code} {r.text[:200]}")
                elif fixed and r.content != reference[url]:
                    problems.append(f"{url}: body differs from the same request made alone"
                                    f" ({how_images_differ(r.content, reference[url])})")
        finally:
            await client.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return outcomes, problems, latencies, time.perf_counter() - start


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_soak_mixed_requests(tiny_root: Path, tmp_path: Path) -> None:
    env = {"GANSERVE_CACHE_SIZE": "0", "GANSERVE_LOG_LEVEL": "WARNING"}
    with run_server(tiny_root, tmp_path, env=env) as server:
        rss_start = server.rss_mb()
        rng = random.Random(7)
        pool = request_pool(rng)
        # Every request alone first: the reference bytes (a lone request is a batch of one).
        reference: dict[str, bytes] = {}
        with httpx.Client(base_url=server.base, timeout=30) as c:
            # The service promises strong ETags (same bytes) only for models that passed its
            # batch-invariance check at load; these must have.
            for name in (COND, UNCOND):
                assert c.get(f"/models/{name}").json()["batch_invariant"] is True, name
            for url, status, fixed in pool:
                r = c.get(url)
                assert r.status_code == status, (url, r.status_code, r.text[:300])
                if fixed:
                    reference[url] = r.content
        warm = asyncio.run(soak(server.port, pool, reference, WARMUP, rng))
        rss_warm = server.rss_mb()
        outcomes, problems, latencies, seconds = asyncio.run(soak(server.port, pool, reference, REQUESTS, rng))
        rss_end = server.rss_mb()
        log = server.output()
    problems = warm[1] + problems
    report(requests=REQUESTS, concurrency=CONCURRENCY, seconds=seconds, rps=REQUESTS / seconds,
           p50_ms=percentile(latencies, 0.5) * 1000, p99_ms=percentile(latencies, 0.99) * 1000,
           rss_start_mb=rss_start, rss_warm_mb=rss_warm, rss_end_mb=rss_end, outcomes=dict(outcomes))
    assert not problems, f"{len(problems)} problem(s), e.g.:\n" + "\n".join(problems[:20])
    assert sum(outcomes.values()) == REQUESTS
    assert outcomes["503"] <= REQUESTS // 100, outcomes  # the queue (256) should hardly ever overflow at 64
    assert rss_end - rss_warm < MAX_RSS_GROWTH_MB, (rss_start, rss_warm, rss_end)
    assert "Traceback" not in log, log[-3000:]
