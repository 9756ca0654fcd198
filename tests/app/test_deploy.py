"""Dockerfile and docker-compose.yml: the compose file validates and says what the service needs.

There is no Docker engine in CI, only (optionally) a compose client: Debian's ``docker-compose``
package (1.29) or the ``docker compose`` plugin. The validation runs with whichever exists.
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


def _compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    return None


def _services() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())["services"]
    return services


def test_compose_config_validates() -> None:
    cmd = _compose_command()
    if cmd is None:
        pytest.skip("no compose client (apt-get install docker-compose)")
    for profiles in ([], ["--profile", "cpu", "--profile", "train"]):
        r = subprocess.run([*cmd, "-f", str(COMPOSE), *profiles, "config", "-q"], capture_output=True, text=True,
                           cwd=ROOT, timeout=60)
        assert r.returncode == 0, r.stderr


def test_compose_services() -> None:
    services = _services()
    gpu = services["ganserve"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert gpu["environment"]["GANSERVE_DEVICE"] == "cuda"
    assert "./checkpoints:/srv/ganserve/checkpoints:ro" in gpu["volumes"]
    assert "/readyz" in " ".join(gpu["healthcheck"]["test"])

    cpu = services["ganserve-cpu"]
    assert "deploy" not in cpu and cpu["profiles"] == ["cpu"]
    assert cpu["environment"]["GANSERVE_DEVICE"] == "cpu"
    assert "/readyz" in " ".join(cpu["healthcheck"]["test"])

    trainer = services["trainer"]
    assert trainer["profiles"] == ["train"]
    assert trainer["entrypoint"] == ["python", "-m", "training"]
    assert "./checkpoints:/srv/ganserve/checkpoints" in trainer["volumes"]


def test_dockerfile_serves_the_app() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert 'CMD ["python", "-m", "app", "--host", "0.0.0.0"' in text
    assert "HEALTHCHECK" in text and "/readyz" in text
    assert "USER ganserve" in text
