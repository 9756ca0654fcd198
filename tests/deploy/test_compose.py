"""docker-compose.yml: it validates with a real compose client, and it says what the deployment needs.

There is no Docker engine here, only a compose client: Debian's ``docker-compose`` package (1.29, installed
by ``scripts/setup.sh test``) or the ``docker compose`` plugin. The validation runs with whichever exists.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
PROFILES = ["--profile", "gpu", "--profile", "gpu2", "--profile", "cpu", "--profile", "train"]
SERVING = ("ganserve", "ganserve-gpu1", "ganserve-cpu")


def _compose_command() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    pytest.skip("no compose client (scripts/setup.sh test installs Debian's docker-compose)")


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    """The services as the compose client resolves them (anchors merged, variables at their defaults)."""
    r = subprocess.run([*_compose_command(), "-f", str(COMPOSE), *PROFILES, "config"], capture_output=True,
                       text=True, cwd=ROOT, timeout=60, env={"PATH": "/usr/bin:/bin:/usr/local/bin"})
    assert r.returncode == 0, r.stderr
    resolved: dict[str, Any] = yaml.safe_load(r.stdout)["services"]
    return resolved


def test_compose_config_validates_with_each_profile() -> None:
    for profiles in ([], ["--profile", "gpu"], ["--profile", "cpu"], PROFILES):
        r = subprocess.run([*_compose_command(), "-f", str(COMPOSE), *profiles, "config", "-q"],
                           capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert r.returncode == 0, r.stderr


def test_nginx_is_in_front_and_only_it_publishes_a_port(services: dict[str, Any]) -> None:
    nginx = services["nginx"]
    assert nginx["image"].startswith("nginx:")  # the official image renders /etc/nginx/templates/ itself
    assert any(v.endswith("deploy/nginx/ganserve.conf.template:/etc/nginx/templates/default.conf.template:ro")
               for v in nginx["volumes"])
    env = nginx["environment"]
    assert set(env) >= {"GANSERVE_UPSTREAM", "NGINX_PORT", "NGINX_CACHE_DIR", "GANSERVE_MAX_UPLOAD_BYTES"}
    assert env["GANSERVE_UPSTREAM"] == "ganserve:8000"
    assert [p["target"] for p in nginx["ports"]] == [int(env["NGINX_PORT"])]
    for name in SERVING:
        service = services[name]
        assert "ports" not in service, f"{name} publishes a port: --scale would clash"
        assert "ganserve" in service["networks"]["default"]["aliases"]  # nginx's upstream name
        # The same upload limit on both sides of the proxy.
        assert service["environment"]["GANSERVE_MAX_UPLOAD_BYTES"] == env["GANSERVE_MAX_UPLOAD_BYTES"]


def test_one_gpu_per_replica_and_a_cpu_only_torch(services: dict[str, Any]) -> None:
    for name, gpu in (("ganserve", "0"), ("ganserve-gpu1", "1")):
        service = services[name]
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert devices == [{"driver": "nvidia", "device_ids": [gpu], "capabilities": ["gpu"]}]
        assert service["environment"]["GANSERVE_DEVICE"] == "cuda"
        assert service["build"]["target"] == "serve" and "args" not in service["build"]
    cpu = services["ganserve-cpu"]
    assert "deploy" not in cpu and cpu["environment"]["GANSERVE_DEVICE"] == "cpu"
    assert cpu["build"]["target"] == "serve"
    assert cpu["build"]["args"]["TORCH_INDEX_URL"].endswith("/whl/cpu")  # PyTorch's CPU-only wheels
    assert float(cpu["cpus"]) >= 1  # the quota the replica sizes itself from (cgroup cpu.max)


def test_serving_containers_are_read_only_and_the_health_check_is_the_images(services: dict[str, Any]) -> None:
    for name in SERVING:
        service = services[name]
        assert service["read_only"] is True and "/tmp" in service["tmpfs"]
        assert any(v.endswith(":/srv/ganserve/checkpoints:ro") for v in service["volumes"])
        assert "healthcheck" not in service  # stated once, in the Dockerfile
    assert "HEALTHCHECK" in (ROOT / "Dockerfile").read_text() and "/readyz" in (ROOT / "Dockerfile").read_text()
    assert "healthcheck" not in COMPOSE.read_text()


def test_the_trainer_writes_as_the_host_user(services: dict[str, Any]) -> None:
    trainer = services["trainer"]
    assert trainer["build"]["target"] == "train"
    assert trainer["user"] == "1000:1000"  # HOST_UID:HOST_GID, here at their defaults
    assert any(":/srv/ganserve/checkpoints" in v and not v.endswith(":ro") for v in trainer["volumes"])
    r = subprocess.run([*_compose_command(), "-f", str(COMPOSE), "--profile", "train", "config"],
                       capture_output=True, text=True, cwd=ROOT, timeout=60,
                       env={"PATH": "/usr/bin:/bin:/usr/local/bin", "HOST_UID": "1234", "HOST_GID": "567"})
    assert r.returncode == 0 and yaml.safe_load(r.stdout)["services"]["trainer"]["user"] == "1234:567"
