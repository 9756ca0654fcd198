"""Faults of checkpoints and of generators, with the service running.

Checkpoint files bit-flipped, swapped between models, replaced (atomically or not) while a
request stream is being served, or deleted: the bad one is refused with a log line and a
``/models`` entry saying why, the rest keep serving, and no response ever comes from a
half-written file. (Truncated, garbage, mismatched and pickled checkpoints are covered in
tests/app/test_loading.py.)

A generator that raises, returns NaN, or runs out of device memory: that request gets a JSON
503 with Retry-After and a reason, the model stays listed and usable, and ``/readyz`` says
which models are failing.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from app.main import create_app
from tests.app.conftest import COND, UNCOND, make_settings, wait_for, wait_ready, write_cgan, write_mlp
from training.checkpoint import CONFIG, WEIGHTS, sha256_bytes

GOOD_PARAMS = {"label": 0, "seed": 42}


def _refused(client: TestClient) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in client.get("/models").json()["refused"]}


def _served(client: TestClient) -> list[str]:
    return [m["name"] for m in client.get("/models").json()["models"]]


def _flip(path: Path, position: int, bit: int) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 1 << bit
    path.write_bytes(bytes(data))


# --------------------------------------------------------------------------------------- bit flips


@pytest.fixture(scope="module")
def flipped(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """One good model beside copies of it with one bit flipped at a random place of one file.

    Returns the folder and, per copy, which file was flipped and whether its sha256 was updated
    afterwards (a flip that a careless tool "repaired" by re-hashing).
    """
    root = tmp_path_factory.mktemp("flips")
    write_cgan(root)
    rng = random.Random(1234)
    kinds: dict[str, str] = {}
    size = (root / COND / WEIGHTS).stat().st_size
    header = int.from_bytes((root / COND / WEIGHTS).read_bytes()[:8], "little") + 8
    for i in range(12):  # in the weights, sha256 left alone: always a sha256 mismatch
        name = f"flip-w{i:02d}"
        write_cgan(root, name)
        _flip(root / name / WEIGHTS, rng.randrange(size), rng.randrange(8))
        kinds[name] = "weights"
    for i in range(6):  # in the safetensors header, then re-hashed: the parser or the architecture check
        name = f"flip-h{i:02d}"
        write_cgan(root, name)
        _flip(root / name / WEIGHTS, rng.randrange(8, header), rng.randrange(8))
        data = (root / name / WEIGHTS).read_bytes()
        cfg = json.loads((root / name / CONFIG).read_text())
        cfg["generator_sha256"] = sha256_bytes(data)
        (root / name / CONFIG).write_text(json.dumps(cfg))
        kinds[name] = "header-rehashed"
    for i in range(12):  # in config.json
        name = f"flip-c{i:02d}"
        write_cgan(root, name)
        size_c = (root / name / CONFIG).stat().st_size
        _flip(root / name / CONFIG, rng.randrange(size_c), rng.randrange(8))
        kinds[name] = "config"
    return root, kinds


def test_bit_flips_are_refused_or_harmless(flipped: tuple[Path, dict[str, str]],
                                           caplog: pytest.LogCaptureFixture) -> None:
    root, kinds = flipped
    caplog.set_level("INFO", logger="app.registry")
    with TestClient(create_app(make_settings(root))) as client:
        wait_ready(client)
        genuine = client.get("/generate", params={"model": COND, **GOOD_PARAMS})
        assert genuine.status_code == 200
        refused, served = _refused(client), set(_served(client))
        for name, kind in kinds.items():
            if kind == "weights":
                assert name in refused and "sha256" in refused[name]["reason"], (name, refused.get(name))
            elif name in served:
                # A flip that leaves a valid, consistent checkpoint (e.g. one letter of the description,
                # or a header flip that still parses into the same tensors): what it serves is the
                # genuine generator's output, never garbage.
                r = client.get("/generate", params={"model": name, **GOOD_PARAMS})
                assert r.status_code == 200 and r.content == genuine.content, (name, kind)
            else:
                assert name in refused and refused[name]["reason"], name
                assert client.get("/generate", params={"model": name}).status_code == 404
        assert client.get("/readyz").json()["refused"] == len(refused)
        assert sum(k == "weights" for k in kinds.values()) <= len(refused)
    logged = "\n".join(rec.getMessage() for rec in caplog.records)
    for name in refused:
        assert f"checkpoint {name} refused" in logged


# ------------------------------------------------------------------------------------- swaps


def test_files_swapped_between_two_models_are_refused(tmp_path: Path) -> None:
    write_cgan(tmp_path)
    write_mlp(tmp_path)
    write_cgan(tmp_path, "cgan-b", seed=9)
    write_cgan(tmp_path, "cgan-c", seed=10)
    settings = make_settings(tmp_path, reload_interval_s=0.05)
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        assert set(_served(client)) == {COND, UNCOND, "cgan-b", "cgan-c"}
        before = client.get("/generate", params={"model": COND, **GOOD_PARAMS}).content
        # Weights swapped between two models of the same architecture: each sha256 names the other file.
        a, b = tmp_path / COND / WEIGHTS, tmp_path / "cgan-b" / WEIGHTS
        tmp = tmp_path / "swap.tmp"
        os.replace(a, tmp)
        os.replace(b, a)
        os.replace(tmp, b)
        wait_for(lambda: {COND, "cgan-b"} <= set(_refused(client)))
        refused = _refused(client)
        for name in (COND, "cgan-b"):
            assert "does not match config.json" in refused[name]["reason"]
            assert refused[name]["still_serving"] is True  # the loaded version goes on serving
        assert client.get("/generate", params={"model": COND, **GOOD_PARAMS}).content == before
        # config.json swapped between two models: each names the other folder.
        c, m = tmp_path / "cgan-c" / CONFIG, tmp_path / UNCOND / CONFIG
        os.replace(c, tmp)
        os.replace(m, c)
        os.replace(tmp, m)
        wait_for(lambda: {"cgan-c", UNCOND} <= set(_refused(client)))
        refused = _refused(client)
        for name in ("cgan-c", UNCOND):  # the weights' sha256 or the name gives the swap away
            reason = refused[name]["reason"]
            assert "does not match config.json" in reason or "differs from its folder name" in reason, reason
        r = client.get("/generate", params={"model": UNCOND, "seed": 3})
        assert r.status_code == 200 and r.headers["x-model"] == UNCOND


# ------------------------------------------------------------------------- replace while serving


def _write_in_place_slowly(path: Path, data: bytes, loads: Callable[[], tuple[int, int]]) -> None:
    """A careless writer (cp, rsync --inplace): the file is half old, half new for a moment.

    The moment lasts until the registry has tried to load the half-written folder — ``loads()`` is
    (attempts started, attempts finished); a new attempt has started and finished — or 10 s. A fixed
    pause let a busy machine's registry, still loading the previous version, miss every half."""
    started, _ = loads()
    with path.open("r+b") as f:
        f.write(data[: len(data) // 2])
        f.flush()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            now_started, finished = loads()
            if now_started > started and finished >= now_started:
                break
            time.sleep(0.01)
        f.write(data[len(data) // 2:])
        f.truncate()


def test_replacing_a_checkpoint_while_serving_never_serves_a_half_written_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="app.registry")
    versions = 6
    staging = tmp_path / "staging"
    for k in range(versions):
        write_cgan(staging / f"v{k}", COND, seed=100 + k)
    # Reference: every version served under its own name (the ETag depends on the weights, not the name).
    refs_root = tmp_path / "refs"
    for k in range(versions):
        shutil.copytree(staging / f"v{k}" / COND, refs_root / f"v{k}")
        cfg = json.loads((refs_root / f"v{k}" / CONFIG).read_text())
        (refs_root / f"v{k}" / CONFIG).write_text(json.dumps({**cfg, "name": f"v{k}"}))
    expected: dict[str, bytes] = {}
    with TestClient(create_app(make_settings(refs_root))) as ref:
        wait_ready(ref)
        for k in range(versions):
            r = ref.get("/generate", params={"model": f"v{k}", **GOOD_PARAMS})
            expected[r.headers["etag"]] = r.content
    assert len(set(expected.values())) == versions

    live = tmp_path / "live"
    shutil.copytree(staging / "v0", live)
    settings = make_settings(live, reload_interval_s=0.01, cache_size=0)
    seen: dict[str, int] = {}
    bad: list[str] = []
    stop = threading.Event()

    def loads() -> tuple[int, int]:
        messages = [r.getMessage() for r in list(caplog.records)]
        started = sum(m.startswith(f"model {COND}: reloading") for m in messages)
        finished = sum(f"checkpoint {COND} refused" in m or m.startswith(f"model {COND}: ready") for m in messages)
        return started, finished

    with TestClient(create_app(settings)) as client:
        wait_ready(client)

        def stream() -> None:
            while not stop.is_set():
                r = client.get("/generate", params={"model": COND, **GOOD_PARAMS})
                if r.status_code == 200:
                    etag = r.headers["etag"]
                    if expected.get(etag) != r.content:
                        bad.append(f"{etag}: bytes of no genuine version")
                    seen[etag] = seen.get(etag, 0) + 1
                elif r.status_code != 503:
                    bad.append(f"{r.status_code}: {r.text[:200]}")

        readers = [threading.Thread(target=stream) for _ in range(3)]
        for t in readers:
            t.start()
        try:
            for rnd in range(2):
                for k in range(1, versions) if rnd == 0 else range(versions - 2, -1, -1):
                    src = staging / f"v{k}" / COND
                    if k % 2:  # atomic, the way training writes: temp file + rename, weights then config
                        for f in (WEIGHTS, CONFIG):
                            shutil.copy(src / f, live / COND / f".{f}.tmp")
                            os.replace(live / COND / f".{f}.tmp", live / COND / f)
                    else:  # in place, slowly, config.json first: the registry must not load the halves
                        _write_in_place_slowly(live / COND / CONFIG, (src / CONFIG).read_bytes(), loads)
                        _write_in_place_slowly(live / COND / WEIGHTS, (src / WEIGHTS).read_bytes(), loads)
                    time.sleep(0.15)
        finally:
            stop.set()
            for t in readers:
                t.join(30)
        wait_for(lambda: not _refused(client))  # the last version landed whole and is served
        final = client.get("/generate", params={"model": COND, **GOOD_PARAMS})
    assert not bad, bad[:10]
    assert len(seen) >= 3, seen  # the stream did see several versions
    refused = [r.getMessage() for r in caplog.records if f"checkpoint {COND} refused" in r.getMessage()]
    assert refused and all("previous version goes on serving" in m for m in refused)  # halves were seen
    assert expected[final.headers["etag"]] == final.content


# ------------------------------------------------------------------------------------- deletion


def test_deleted_files_are_refused_and_deleted_folders_unloaded(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="app.registry")
    write_cgan(tmp_path)
    write_mlp(tmp_path)
    write_cgan(tmp_path, "cgan-b", seed=9)
    with TestClient(create_app(make_settings(tmp_path, reload_interval_s=0.05))) as client:
        wait_ready(client)
        before = client.get("/generate", params={"model": COND, **GOOD_PARAMS}).content
        (tmp_path / COND / WEIGHTS).unlink()
        (tmp_path / "cgan-b" / CONFIG).unlink()
        wait_for(lambda: {COND, "cgan-b"} <= set(_refused(client)))
        refused = _refused(client)
        assert "missing" in refused[COND]["reason"] and refused[COND]["still_serving"]
        assert "missing" in refused["cgan-b"]["reason"] and refused["cgan-b"]["still_serving"]
        # What was loaded is in memory and whole: it goes on serving the same bytes.
        assert client.get("/generate", params={"model": COND, **GOOD_PARAMS}).content == before
        shutil.rmtree(tmp_path / UNCOND)
        wait_for(lambda: UNCOND not in _served(client))
        r = client.get("/generate", params={"model": UNCOND})
        assert r.status_code == 404 and "unknown model" in r.json()["detail"]
        assert client.get("/readyz").status_code == 200
    logged = "\n".join(rec.getMessage() for rec in caplog.records)
    assert f"checkpoint {COND} refused" in logged and "missing" in logged
    assert f"model {UNCOND}: checkpoint removed, unloading" in logged


# ----------------------------------------------------------------------------- generator faults


def _nan_generator(channels: int, size: int) -> Any:
    def g(z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return torch.full((z.shape[0], channels, size, size), float("nan"))

    return g


def _raising(message: str, exc: type[BaseException] = RuntimeError) -> Any:
    def g(z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        raise exc(message)

    return g


@pytest.fixture
def faulty(tiny_root: Path) -> Any:
    with TestClient(create_app(make_settings(tiny_root, cache_size=0))) as client:
        wait_ready(client)
        yield client, client.app.state.service.registry  # type: ignore[attr-defined]


@pytest.mark.parametrize(("fault", "detail", "retry_after"), [
    (_nan_generator(1, 28), "generation failed: non-finite output", "1"),
    (_raising("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 7.79 GiB total capacity)"),
     "generation failed: device out of memory; retry shortly", "2"),
    (_raising("out of memory", torch.OutOfMemoryError), "generation failed: device out of memory; retry shortly",
     "2"),
    (_raising("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR at /opt/torch/aten/src/conv.cpp:42"), "generation failed",
     "1"),
])
def test_generator_faults_are_a_clean_503_and_the_model_recovers(
    faulty: Any, fault: Any, detail: str, retry_after: str, caplog: pytest.LogCaptureFixture
) -> None:
    client, registry = faulty
    batcher = registry.models[COND].batcher
    genuine = batcher.generator
    before = client.get("/generate", params={"model": COND, **GOOD_PARAMS})
    batcher.generator = fault
    try:
        for path, params in [("/generate", {"model": COND, **GOOD_PARAMS, "n": 4}),
                             (f"/models/{COND}/seeds/7.png", {"label": 1}),
                             ("/interpolate", {"model": COND, "label": 1, "from_seed": 1, "to_seed": 2})]:
            r = client.get(path, params=params)
            assert r.status_code == 503, r.text
            assert r.json() == {"detail": detail} and r.headers["retry-after"] == retry_after
            for leak in ("Traceback", "/opt/", ".cpp", "GiB", "File \""):
                assert leak not in r.text
        # Still listed; three failures in a row: /readyz names it, still 200 (the other model serves).
        assert COND in _served(client)
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"
        assert ready.json()["failing"] == [COND]
        assert client.get("/generate", params={"model": UNCOND, "seed": 1}).status_code == 200
    finally:
        batcher.generator = genuine
    # Usable again at once, with the same bytes as before; /readyz is back to ready.
    after = client.get("/generate", params={"model": COND, **GOOD_PARAMS})
    assert after.status_code == 200 and after.content == before.content
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and "failing" not in ready
    assert any("forward pass" in rec.getMessage() and rec.exc_info for rec in caplog.records)  # logged in full


def test_every_model_failing_makes_readyz_503(faulty: Any) -> None:
    client, registry = faulty
    saved = {n: m.batcher.generator for n, m in registry.models.items() if m.sampleable and m.batcher is not None}
    try:
        for name in saved:
            registry.models[name].batcher.generator = _raising("CUDA error: an illegal memory access")
            for _ in range(3):
                params = {"model": name, "seed": 1, **({"label": 0} if name == COND else {})}
                assert client.get("/generate", params=params).status_code == 503
        r = client.get("/readyz")
        assert r.status_code == 503 and r.json()["status"] == "failing" and "retry-after" in r.headers
        assert sorted(r.json()["failing"]) == sorted(saved)
        assert client.get("/healthz").status_code == 200  # alive: a restart is not what helps here
    finally:
        for name, g in saved.items():
            registry.models[name].batcher.generator = g
    assert client.get("/generate", params={"model": COND, "label": 0, "seed": 1}).status_code == 200
    assert client.get("/readyz").json()["status"] == "degraded"  # the other one has not been retried yet
    assert client.get("/generate", params={"model": UNCOND, "seed": 1}).status_code == 200
    assert client.get("/readyz").status_code == 200 and client.get("/readyz").json()["status"] == "ready"


def test_a_partly_non_finite_batch_is_refused_whole(faulty: Any) -> None:
    """One NaN pixel anywhere in a forward pass: no image of it is served (no silent black pixels)."""
    client, registry = faulty
    batcher = registry.models[COND].batcher
    genuine = batcher.generator

    def one_bad_pixel(z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        out = genuine(z, labels).clone()
        out[-1, 0, 5, 5] = float("inf")
        return out

    batcher.generator = one_bad_pixel
    try:
        r = client.get("/generate", params={"model": COND, "label": 0, "seed": 5, "n": 3})
        assert r.status_code == 503 and "non-finite" in r.json()["detail"]
    finally:
        batcher.generator = genuine
