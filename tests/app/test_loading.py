"""Start-up loading, refused checkpoints, readiness before and after warm-up, and hot reload."""

from __future__ import annotations

import gc
import json
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

import app.registry as registry_module
from app.main import create_app
from app.settings import Settings
from tests.app.conftest import (
    COND,
    UNCOND,
    cgan_kwargs,
    make_settings,
    wait_for,
    wait_ready,
    write_cgan,
    write_mlp,
)
from training.checkpoint import CONFIG, WEIGHTS, sha256_bytes, weights_bytes
from training.devices import resolve_device
from training.models import build_generator


def _set_sha(folder: Path, data: bytes) -> None:
    cfg = json.loads((folder / CONFIG).read_text())
    cfg["generator_sha256"] = sha256_bytes(data)
    (folder / CONFIG).write_text(json.dumps(cfg))


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One good model beside every kind of bad entry."""
    root = tmp_path_factory.mktemp("bad")
    write_cgan(root)

    # Garbage weights whose sha256 was (maliciously or carelessly) updated: not parseable.
    f = write_cgan(root, "corrupt")
    junk = b"\x00\xff" * 500
    (f / WEIGHTS).write_bytes(junk)
    _set_sha(f, junk)
    # Truncated weights (a half-copied file): the sha256 no longer matches.
    f = write_cgan(root, "truncated")
    data = (f / WEIGHTS).read_bytes()
    (f / WEIGHTS).write_bytes(data[: len(data) // 2])
    # A valid safetensors file truncated and re-hashed: the header promises more bytes than there are.
    f = write_cgan(root, "truncated-rehashed")
    cut = (f / WEIGHTS).read_bytes()[:-100]
    (f / WEIGHTS).write_bytes(cut)
    _set_sha(f, cut)
    # config.json describes a wider network than the weights hold (sha256 consistent).
    f = write_cgan(root, "mismatch")
    cfg = json.loads((f / CONFIG).read_text())
    cfg["generator"]["kwargs"]["ngf"] = 8
    (f / CONFIG).write_text(json.dumps(cfg))
    # Weights swapped in from another checkpoint.
    f = write_cgan(root, "swapped")
    shutil.copy(root / COND / WEIGHTS, f / WEIGHTS)
    (f / WEIGHTS).write_bytes(weights_bytes(build_generator("DCGenerator", cgan_kwargs(ngf=2))))
    # A pickle at the top level, and a folder that holds only a pickle.
    gen = build_generator("DCGenerator", cgan_kwargs())
    torch.save(gen.state_dict(), root / "model.pt")
    (root / "pickled").mkdir()
    shutil.copy(root / COND / CONFIG, root / "pickled" / CONFIG)
    torch.save(gen.state_dict(), root / "pickled" / "generator.pt")
    # Loose weights, a folder name that is not a model name, a config.json naming another model.
    shutil.copy(root / COND / WEIGHTS, root / "loose.safetensors")
    shutil.copytree(root / COND, root / "Bad Name")
    shutil.copytree(root / COND, root / "other-name")
    # Missing or unreadable config.json, an invalid config.json.
    (root / "no-config").mkdir()
    shutil.copy(root / COND / WEIGHTS, root / "no-config" / WEIGHTS)
    shutil.copytree(root / COND, root / "bad-json")
    (root / "bad-json" / CONFIG).write_text("{not json")
    shutil.copytree(root / COND, root / "bad-config")
    cfg = json.loads((root / COND / CONFIG).read_text())
    cfg.update(name="bad-config", num_classes=5)
    (root / "bad-config" / CONFIG).write_text(json.dumps(cfg))
    # Ignored: hidden entries, the evaluators folder, unrelated files.
    (root / ".tmp-run").mkdir()
    (root / "evaluators").mkdir()
    (root / "README.md").write_text("checkpoints")
    return root


REASONS = {
    "corrupt": "not a valid safetensors file",
    "truncated": "does not match config.json",
    "truncated-rehashed": "not a valid safetensors file",
    "mismatch": "weights do not match config.json's architecture",
    "swapped": "does not match config.json",
    "model.pt": "pickles are never loaded",
    "pickled": "never pickles",
    "loose.safetensors": "loose weights file",
    "Bad Name": "not a model name",
    "other-name": "differs from its folder name",
    "no-config": "missing",
    "bad-json": "not valid JSON",
    "bad-config": "invalid at",
}


def test_bad_checkpoints_are_refused_and_listed(bad_folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("ERROR", logger="app.registry")
    with TestClient(create_app(make_settings(bad_folder))) as client:
        wait_ready(client)
        body = client.get("/models").json()
        assert [m["name"] for m in body["models"]] == [COND]
        refused = {r["name"]: r["reason"] for r in body["refused"]}
        assert set(refused) == set(REASONS)
        for name, needle in REASONS.items():
            assert needle in refused[name], (name, refused[name])
            assert str(bad_folder) not in refused[name]  # no server paths in the API
        assert client.get("/readyz").json()["refused"] == len(REASONS)
        # The good model serves; a refused one answers 404 with its reason.
        assert client.get("/generate", params={"label": 0, "seed": 1}).status_code == 200
        r = client.get("/generate", params={"model": "mismatch"})
        assert r.status_code == 404 and "refused" in r.json()["detail"] and "architecture" in r.json()["detail"]
        assert client.get("/models/corrupt").status_code == 404
    logged = "\n".join(rec.getMessage() for rec in caplog.records)
    for name in REASONS:
        assert f"checkpoint {name} refused" in logged
    assert "Traceback" not in logged


def test_readiness_waits_for_warm_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_cgan(tmp_path)
    gate = threading.Event()
    real = registry_module.load_generator

    def slow_load(path: Any, device: Any) -> Any:
        gate.wait(30)
        return real(path, device)

    monkeypatch.setattr(registry_module, "load_generator", slow_load)
    with TestClient(create_app(make_settings(tmp_path))) as client:
        assert client.get("/healthz").status_code == 200  # alive at once
        r = client.get("/readyz")
        assert r.status_code == 503 and r.json()["status"] == "loading" and r.headers["retry-after"] == "1"
        g = client.get("/generate", params={"label": 0})
        assert g.status_code == 503 and "loading" in g.json()["detail"] and "retry-after" in g.headers
        assert client.get(f"/models/{COND}").status_code == 503
        gate.set()
        wait_ready(client)
        assert client.get("/readyz").json()["status"] == "ready"
        assert client.get("/generate", params={"label": 0}).status_code == 200


def test_warm_up_checks_the_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A generator whose output contradicts config.json is refused at warm-up."""
    write_cgan(tmp_path)
    real = registry_module.load_generator

    def shrinking(path: Any, device: Any) -> Any:
        gen, cfg = real(path, device)
        return (lambda z, y: gen(z, y)[:, :, :14, :14]), cfg

    monkeypatch.setattr(registry_module, "load_generator", shrinking)
    with TestClient(create_app(make_settings(tmp_path))) as client:
        wait_for(lambda: client.get("/models").json()["refused"])
        reason = client.get("/models").json()["refused"][0]["reason"]
        assert "config.json says (2, 1, 28, 28)" in reason
        r = client.get("/readyz")
        assert r.status_code == 503 and r.json()["status"] == "no models"


def test_empty_folder(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path / "missing"))) as client:
        wait_for(lambda: client.get("/readyz").json()["status"] == "no models")
        assert client.get("/readyz").status_code == 503
        r = client.get("/generate")
        assert r.status_code == 503 and "no sampleable model" in r.json()["detail"]
        assert client.get("/models").json()["models"] == []


def test_default_model_falls_back(tmp_path: Path) -> None:
    write_mlp(tmp_path)
    with TestClient(create_app(make_settings(tmp_path, default_model="mnist-cgan"))) as client:
        wait_ready(client)
        assert client.get("/models").json()["default"] == UNCOND
        assert client.get("/generate").headers["x-model"] == UNCOND


def test_hot_reload(tmp_path: Path) -> None:
    write_cgan(tmp_path)
    settings = make_settings(tmp_path, reload_interval_s=0.05)
    with TestClient(create_app(settings)) as client:
        wait_ready(client)

        def names() -> list[str]:
            return [m["name"] for m in client.get("/models").json()["models"]]

        before = client.get("/generate", params={"label": 0, "seed": 1})
        # Added.
        write_mlp(tmp_path)
        wait_for(lambda: UNCOND in names())
        assert client.get("/generate", params={"model": UNCOND, "seed": 1}).status_code == 200
        # Replaced: new weights, new bytes, new ETag.
        write_cgan(tmp_path, seed=5)
        wait_for(lambda: client.get("/generate", params={"label": 0, "seed": 1}).content != before.content)
        after = client.get("/generate", params={"label": 0, "seed": 1})
        assert after.headers["etag"] != before.headers["etag"]
        # A broken replacement is refused; the loaded version goes on serving.
        (tmp_path / COND / WEIGHTS).write_bytes(b"half-written")
        wait_for(lambda: client.get("/models").json()["refused"])
        refusal = client.get("/models").json()["refused"][0]
        assert refusal["name"] == COND and refusal["still_serving"] is True
        assert client.get("/generate", params={"label": 0, "seed": 1}).content == after.content
        # Fixed again: the refusal goes away.
        write_cgan(tmp_path, seed=6)
        wait_for(lambda: not client.get("/models").json()["refused"])
        # Removed.
        shutil.rmtree(tmp_path / UNCOND)
        wait_for(lambda: UNCOND not in names())
        assert client.get("/generate", params={"model": UNCOND}).status_code == 404
        shutil.rmtree(tmp_path / COND)
        wait_for(lambda: client.get("/readyz").status_code == 503)


def test_removed_model_in_flight_is_a_clean_503(tmp_path: Path) -> None:
    """Unloading closes the model's batcher; requests it can no longer serve get 503, not 500."""
    write_cgan(tmp_path)
    with TestClient(create_app(make_settings(tmp_path))) as client:
        wait_ready(client)
        model = client.app.state.service.registry.models[COND]  # type: ignore[attr-defined]
        client.portal.call(model.batcher.close)  # type: ignore[union-attr]
        r = client.get("/generate", params={"label": 0})
        assert r.status_code == 503 and "reloaded or removed" in r.json()["detail"]


def test_device_resolution() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto").type in ("cpu", "mps")
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            resolve_device("cuda:1")


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GANSERVE_CHECKPOINTS", str(tmp_path))
    monkeypatch.setenv("GANSERVE_DEVICE", "CUDA:0")
    monkeypatch.setenv("GANSERVE_MAX_BATCH", "16")
    monkeypatch.setenv("GANSERVE_CORS_ORIGINS", '["http://localhost:5173"]')
    s = Settings()
    assert s.checkpoints == tmp_path and s.device == "cuda:0" and s.max_batch == 16
    assert s.cors_origins == ["http://localhost:5173"]
    monkeypatch.setenv("GANSERVE_DEVICE", "gpu")
    with pytest.raises(ValueError, match="device must be"):
        Settings()



def test_startup_objects_are_frozen_while_serving(tiny_checkpoints: Path) -> None:
    """After the initial load the start-up objects are out of the garbage collector's full
    collections (the cause of ~50 ms pauses under load); shutdown gives them back."""
    assert gc.get_freeze_count() == 0
    with TestClient(create_app(make_settings(tiny_checkpoints))) as client:
        wait_ready(client)
        wait_for(lambda: gc.get_freeze_count() > 10_000)
    assert gc.get_freeze_count() == 0
