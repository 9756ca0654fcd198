"""Model cards, health, readiness, metrics, the OpenAPI document and the front-end placeholder."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from app.main import create_app
from tests.app.conftest import (
    AE,
    CLASSES,
    COND,
    MEASURED_UNCOND,
    UNCOND,
    make_settings,
    wait_ready,
    write_ae,
    write_cgan,
    write_mlp,
)
from training.checkpoint import update_metrics


def test_model_list(client: TestClient) -> None:
    r = client.get("/models")
    assert r.status_code == 200
    body = r.json()
    assert body["default"] == COND and body["ready"] is True and body["refused"] == []
    cards = {c["name"]: c for c in body["models"]}
    assert set(cards) == {AE, COND, UNCOND}
    c = cards[COND]
    assert c["conditional"] and c["sampleable"] and c["default"]
    assert c["class_names"] == CLASSES and c["num_classes"] == 3 and c["family"] == "cgan"
    assert c["image"] == {"channels": 1, "height": 28, "width": 28}
    assert c["device"] == "cpu" and c["metrics"] == {"fid": 1.5} and c["truncation"] == 1.0
    # One metric of an unknown sample count: no bar is judged; an unsampleable model has none.
    assert c["bars"] == {"accuracy ≥ 0.95 × real": None, "every class ≥ 0.8": None, "coverage ≥ 0.8": None,
                         "memorisation ≤ 2 %": None}
    assert cards[AE]["bars"] == {}
    assert c["training"]["command"] == "tests" and c["dataset"]["name"] == "synthetic"
    assert len(c["generator_sha256"]) == 64
    assert c["links"]["generate"] == f"/generate?model={COND}"
    assert not cards[AE]["sampleable"] and "generate" not in cards[AE]["links"]
    assert cards[UNCOND]["image"]["channels"] == 3 and not cards[UNCOND]["conditional"]


def test_model_card_and_errors(client: TestClient) -> None:
    r = client.get(f"/models/{UNCOND}")
    assert r.status_code == 200 and r.json()["name"] == UNCOND and r.json()["default"] is False
    missing = client.get("/models/nope")
    assert missing.status_code == 404 and missing.json()["allowed"] == sorted([AE, COND, UNCOND])
    assert client.get("/models/Bad..Name").status_code == 422
    assert client.get("/models/%2E%2E").status_code == 422


def test_model_cards_judge_the_quality_bars(tmp_path: Path) -> None:
    cond = {"num_samples": 10_000, "accuracy": 0.97, "sample_accuracy_real": 0.99, "coverage": 0.9,
            "accuracy_per_class": dict(zip(CLASSES, (0.99, 0.97, 0.79), strict=True)),
            "memorization_fraction": 0.001}
    update_metrics(write_cgan(tmp_path), cond, None)
    update_metrics(write_mlp(tmp_path), MEASURED_UNCOND, None)
    update_metrics(write_ae(tmp_path), {"num_samples": 10_000, "mse": 0.01}, None)
    with TestClient(create_app(make_settings(tmp_path))) as client:
        wait_ready(client)
        assert client.get(f"/models/{COND}").json()["bars"] == {
            "accuracy ≥ 0.95 × real": True, "every class ≥ 0.8": False, "coverage ≥ 0.8": True,
            "memorisation ≤ 2 %": True}
        assert client.get(f"/models/{UNCOND}").json()["bars"] == {
            "all classes, KL ≤ 0.1": True, "coverage ≥ 0.8": False, "memorisation ≤ 2 %": True}
        assert client.get(f"/models/{AE}").json()["bars"] == {}


def test_samples_png_missing_is_404(client: TestClient) -> None:
    r = client.get(f"/models/{COND}/samples.png")
    assert r.status_code == 404 and "samples.png" in r.json()["detail"]
    assert client.get("/models/nope/samples.png").status_code == 404


def test_health_and_ready(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "models": 3, "refused": 0, "default": COND, "device": "cpu"}


def test_metrics(client: TestClient) -> None:
    client.get("/generate", params={"label": 0, "seed": 1})
    client.get("/generate", params={"model": "nope"})
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert f'ganserve_requests_total{{method="GET",model="{COND}",route="/generate",status="200"}}' in text
    assert 'model="",route="/generate",status="404"' in text  # unknown names never become label values
    assert f'ganserve_batch_size_count{{model="{COND}"}}' in text
    assert f'ganserve_queue_depth{{model="{COND}"}}' in text
    assert f'ganserve_request_seconds_bucket{{le="0.001",model="{COND}",route="/generate"}}' in text
    assert "ganserve_models_loaded 3.0" in text


def test_openapi_describes_image_media_types(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    expected = {"/generate", "/models/{model}/seeds/{seed}.png", "/interpolate", "/models", "/models/{model}",
                "/healthz", "/readyz", "/metrics"}
    assert expected <= set(paths)
    for path in ("/generate", "/models/{model}/seeds/{seed}.png"):
        ok = paths[path]["get"]["responses"]["200"]
        assert list(ok["content"]) == ["image/png"]
        assert {"ETag", "X-Seed", "X-Model"} <= set(ok["headers"])
    assert set(paths["/interpolate"]["get"]["responses"]["200"]["content"]) == {"image/gif", "image/png"}
    params = {p["name"]: p for p in paths["/generate"]["get"]["parameters"]}
    assert params["n"]["schema"]["maximum"] == 64 and params["scale"]["schema"]["maximum"] == 8
    for op in (op for v in paths.values() for op in v.values()):  # every method of every path
        assert op.get("summary") and "500" not in op["responses"]
    for route in ("encode", "translate", "reconstruct"):  # images in: the body is one image, or a form with one
        body = paths[f"/models/{{model}}/{route}"]["post"]["requestBody"]["content"]
        assert set(body) == {"image/png", "image/jpeg", "image/webp", "multipart/form-data"}
        assert body["multipart/form-data"]["schema"]["required"] == ["image"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_front_end_placeholder(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "ganserve" in r.text
    assert client.get("/static/index.html").status_code == 200


def test_switches_and_cors(tiny_checkpoints: Path) -> None:
    settings = make_settings(tiny_checkpoints, enable_docs=False, enable_metrics=False,
                             cors_origins=["http://localhost:5173"])
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        assert client.get("/docs").status_code == 404 and client.get("/openapi.json").status_code == 404
        assert client.get("/metrics").status_code == 404
        r = client.get("/generate", params={"label": 0, "seed": 1}, headers={"Origin": "http://localhost:5173"})
        assert r.headers["access-control-allow-origin"] == "http://localhost:5173"
        assert "x-seed" in r.headers["access-control-expose-headers"].lower()
        other = client.get("/healthz", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in other.headers
