"""The micro-batcher: coalescing, the bounded queue (503 + Retry-After), deadlines and failures."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

import app.routes.images as images_route
from app.inference import default_max_batch, forward_uint8
from app.main import create_app
from tests.app.conftest import COND, make_settings, wait_for, wait_ready
from tests.app.images import pixels


@pytest.fixture
def gated(tiny_checkpoints: Path) -> Iterator[tuple[TestClient, threading.Event, threading.Event, list[int]]]:
    """A client whose COND forward pass (one worker) waits for ``gate``; ``entered`` is set when one starts."""
    app = create_app(make_settings(tiny_checkpoints, queue_size=1, request_timeout_s=5, max_wait_ms=0,
                                   inference_workers=1))
    gate, entered, sizes = threading.Event(), threading.Event(), []
    with TestClient(app) as client:
        wait_ready(client)
        batcher = app.state.service.registry.models[COND].batcher

        def forward(*args: Any) -> np.ndarray:
            sizes.append(int(args[1].shape[0]))
            entered.set()
            gate.wait(10)
            return forward_uint8(*args)

        batcher._forward = forward
        yield client, gate, entered, sizes
        gate.set()


def test_concurrent_requests_share_a_forward_pass(tiny_checkpoints: Path) -> None:
    app = create_app(make_settings(tiny_checkpoints, max_wait_ms=100, max_batch=64))
    with TestClient(app) as client:
        wait_ready(client)
        batcher = app.state.service.registry.models[COND].batcher
        calls: list[int] = []

        def counting(*args: Any) -> np.ndarray:
            calls.append(int(args[1].shape[0]))
            return forward_uint8(*args)

        batcher._forward = counting
        seeds = list(range(100, 112))
        with ThreadPoolExecutor(12) as pool:
            together = list(pool.map(lambda s: client.get("/generate", params={"label": 1, "seed": s}), seeds))
        assert all(r.status_code == 200 for r in together)
        assert len(calls) < len(seeds) and max(calls) > 1, calls  # coalesced
        # Each image made inside a batch is within one grey level of the same image made alone.
        client.app.state.service.cache._items.clear()  # type: ignore[attr-defined]
        for s, r in zip(seeds, together, strict=True):
            alone = client.get("/generate", params={"label": 1, "seed": s})
            assert np.abs(pixels(alone.content) - pixels(r.content)).max() <= 1
        assert calls[-1] == 1
        metrics = client.get("/metrics").text
        assert f'ganserve_batch_requests_count{{model="{COND}"}}' in metrics


def test_big_requests_are_split_into_max_batch_chunks(tiny_checkpoints: Path) -> None:
    with TestClient(create_app(make_settings(tiny_checkpoints, max_batch=4))) as client:
        wait_ready(client)
        small = client.get("/generate", params={"label": 0, "seed": 0, "n": 10})
    with TestClient(create_app(make_settings(tiny_checkpoints, max_batch=64))) as client:
        wait_ready(client)
        big = client.get("/generate", params={"label": 0, "seed": 0, "n": 10})
    assert small.status_code == big.status_code == 200
    assert np.abs(pixels(small.content) - pixels(big.content)).max() <= 1


def test_max_batch_zero_means_the_device_default(tiny_checkpoints: Path) -> None:
    assert default_max_batch(torch.device("cpu")) == 32
    assert default_max_batch(torch.device("cuda", 0)) == 64  # a device object only: no CUDA call
    with TestClient(create_app(make_settings(tiny_checkpoints, max_batch=0))) as client:
        wait_ready(client)
        batcher = client.app.state.service.registry.models[COND].batcher  # type: ignore[attr-defined]
        assert batcher.max_batch == 32
        assert client.get("/generate", params={"label": 0, "seed": 0, "n": 40}).status_code == 200  # two passes


def test_queue_full_is_503_with_retry_after(gated: tuple[TestClient, threading.Event, threading.Event, list[int]]
                                           ) -> None:
    client, gate, entered, _ = gated
    batcher = client.app.state.service.registry.models[COND].batcher  # type: ignore[attr-defined]
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(client.get, "/generate", params={"label": 0})
        assert entered.wait(10)  # the first request is in the forward pass; the queue is empty
        second = pool.submit(client.get, "/generate", params={"label": 0})
        wait_for(lambda: batcher._queue.qsize() == 1)  # the second one waits in the (size 1) queue
        third = client.get("/generate", params={"label": 0})
        assert third.status_code == 503
        assert third.headers["retry-after"] == "1" and "queue full" in third.json()["detail"]
        gate.set()
        assert first.result().status_code == 200 and second.result().status_code == 200
    assert 'reason="queue_full"' in client.get("/metrics").text


def test_workers_compute_batches_side_by_side(tiny_checkpoints: Path) -> None:
    """With 2 workers a second batch starts while the first is still in its forward pass; a third
    request waits for a free worker and then makes its own batch."""
    app = create_app(make_settings(tiny_checkpoints, max_wait_ms=0, inference_workers=2, inference_threads=1))
    gate, running, peak, lock = threading.Event(), [0], [0], threading.Lock()
    with TestClient(app) as client:
        wait_ready(client)
        batcher = app.state.service.registry.models[COND].batcher
        assert batcher.workers == 2 and batcher.threads == 1

        def forward(*args: Any) -> np.ndarray:
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            gate.wait(10)
            with lock:
                running[0] -= 1
            return forward_uint8(*args)

        batcher._forward = forward
        with ThreadPoolExecutor(3) as pool:
            first = pool.submit(client.get, "/generate", params={"label": 0, "seed": 1})
            wait_for(lambda: running[0] == 1)
            second = pool.submit(client.get, "/generate", params={"label": 1, "seed": 2})
            wait_for(lambda: running[0] == 2)  # both in a forward pass at once
            third = pool.submit(client.get, "/generate", params={"label": 2, "seed": 3})
            wait_for(lambda: batcher._queue.qsize() == 1)  # no free worker: it queues
            gate.set()
            assert [f.result().status_code for f in (first, second, third)] == [200, 200, 200]
        assert peak[0] == 2


def test_deadline_is_503(tiny_checkpoints: Path) -> None:
    app = create_app(make_settings(tiny_checkpoints, request_timeout_s=0.2))
    gate = threading.Event()
    with TestClient(app) as client:
        wait_ready(client)
        batcher = app.state.service.registry.models[COND].batcher

        def stuck(*args: Any) -> np.ndarray:
            gate.wait(10)
            return forward_uint8(*args)

        batcher._forward = stuck
        r = client.get("/generate", params={"label": 0})
        gate.set()
        assert r.status_code == 503 and "within 0.2 s" in r.json()["detail"] and "retry-after" in r.headers


def test_failed_forward_pass_is_503_not_500(tiny_checkpoints: Path, caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(make_settings(tiny_checkpoints))
    with TestClient(app) as client:
        wait_ready(client)

        def broken(*args: Any) -> np.ndarray:
            raise RuntimeError("CUDA out of memory (simulated)")

        app.state.service.registry.models[COND].batcher._forward = broken
        r = client.get("/generate", params={"label": 0})
        assert r.status_code == 503 and r.json() == {"detail": "generation failed"}
        assert "Traceback" not in r.text and "CUDA" not in r.text
    assert any("forward pass" in rec.getMessage() and rec.exc_info for rec in caplog.records)


def test_unexpected_error_is_503_json(client: TestClient, monkeypatch: pytest.MonkeyPatch,
                                      caplog: pytest.LogCaptureFixture) -> None:
    def boom(*args: Any) -> bytes:
        raise ValueError("encoder exploded")

    monkeypatch.setattr(images_route, "encode_grid", boom)
    r = client.get("/generate", params={"label": 0, "seed": 123456})
    assert r.status_code == 503 and r.json() == {"detail": "generation failed"}
    assert r.headers["content-type"] == "application/json"
    assert any("unhandled error" in rec.getMessage() for rec in caplog.records)


def test_a_lone_request_does_not_wait(tiny_checkpoints: Path) -> None:
    """max_wait_ms is spent only while requests are arriving: a lone one runs at once."""
    with TestClient(create_app(make_settings(tiny_checkpoints, max_wait_ms=500))) as client:
        wait_ready(client)
        client.get("/generate", params={"label": 0})
        time.sleep(0.6)  # nothing arrived for longer than max_wait
        start = time.perf_counter()
        assert client.get("/generate", params={"label": 0}).status_code == 200
        assert time.perf_counter() - start < 0.3


def test_one_request_after_another_does_not_wait(tiny_checkpoints: Path) -> None:
    """A client that sends its requests one after the other, however quickly, is never "a burst":
    nobody else is coming, so none of its requests waits max_wait_ms for company."""
    with TestClient(create_app(make_settings(tiny_checkpoints, max_wait_ms=400))) as client:
        wait_ready(client)
        start = time.perf_counter()
        for seed in range(5):
            assert client.get("/generate", params={"label": 0, "seed": seed}).status_code == 200
        assert time.perf_counter() - start < 0.4 * 2  # waiting would have cost ≥ 4 × 0.4 s


def test_a_worker_survives_an_error_outside_the_forward_pass(tiny_checkpoints: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """An error after the forward pass (here: the metrics) fails that batch with a 503, and the
    worker goes on serving the next one."""
    app = create_app(make_settings(tiny_checkpoints, inference_workers=1))
    with TestClient(app) as client:
        wait_ready(client)
        batcher = app.state.service.registry.models[COND].batcher
        real = batcher.metrics.batch_size

        class Broken:
            def labels(self, *args: Any) -> Any:
                raise RuntimeError("metrics store unavailable (simulated)")

        batcher.metrics.batch_size = Broken()
        try:
            r = client.get("/generate", params={"label": 0, "seed": 1})
        finally:
            batcher.metrics.batch_size = real
        assert r.status_code == 503 and r.json()["detail"] == "generation failed"
        assert client.get("/generate", params={"label": 0, "seed": 2}).status_code == 200
    assert any("worker error" in rec.getMessage() and rec.exc_info for rec in caplog.records)


def test_labels_of_a_batch_merge_ints_hard_and_soft_rows() -> None:
    """Requests hand over one class index (an int) or a tensor of hard or soft labels (interpolation
    frames); a batch mixing them gets one row per latent, one-hot where any row is soft."""
    from app.batcher import Job, _merge_labels

    def job(labels: Any, rows: int) -> Job:
        return Job(torch.zeros(rows, 4), labels, float("inf"), None)  # type: ignore[arg-type]

    ints = _merge_labels([job(3, 2), job(0, 1)], 5)
    assert ints is not None and ints.dtype == torch.long and ints.tolist() == [3, 3, 0]
    hard = _merge_labels([job(3, 2), job(torch.tensor([1, 4]), 2)], 5)
    assert hard is not None and hard.tolist() == [3, 3, 1, 4]
    soft_rows = torch.tensor([[0.5, 0.5, 0, 0, 0]])
    mixed = _merge_labels([job(2, 1), job(soft_rows, 1)], 5)
    assert mixed is not None and mixed.shape == (2, 5)
    assert mixed[0].tolist() == [0, 0, 1, 0, 0] and torch.equal(mixed[1], soft_rows[0])
    assert _merge_labels([job(3, 1)], 0) is None  # unconditional model
    with pytest.raises(ValueError):
        _merge_labels([job(3, 1), job(None, 1)], 5)
