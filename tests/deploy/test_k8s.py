"""deploy/k8s/ (and deploy/nginx/'s proxy): every kustomization renders with ``kubectl kustomize`` and
validates strictly against the Kubernetes schemas (``kubernetes-validate --strict``, bundled schemas, no
cluster), and the rendered manifests have the probes, resources and security settings docs/deployment.md
promises."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUSTOMIZATIONS = sorted(p.parent for p in DEPLOY.rglob("kustomization.yaml"))
OVERLAYS = {"cpu": DEPLOY / "k8s" / "overlays" / "cpu", "gpu": DEPLOY / "k8s" / "overlays" / "gpu"}
TEMPLATE = DEPLOY / "nginx" / "ganserve.conf.template"
K8S_VERSION = "1.30.0"  # the oldest Kubernetes these manifests are validated against


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        pytest.skip("kubectl is not installed (scripts/setup.sh test installs it where it is missing)")
    out = subprocess.run([found, "version", "--client"], capture_output=True, text=True, timeout=30).stdout
    m = re.search(r"Kustomize Version: v(\d+)", out)
    if not m or int(m.group(1)) < 4:
        pytest.skip(f"this kubectl's kustomize is too old for the `labels` and `patches` fields (needs v4+): {out!r}")
    return found


@cache
def render(folder: Path) -> tuple[dict[str, Any], ...]:
    r = subprocess.run([kubectl(), "kustomize", str(folder)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return tuple(d for d in yaml.safe_load_all(r.stdout) if d)


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("kubernetes-validate") or str(Path(sys.executable).parent / "kubernetes-validate")
    if not Path(exe).exists():
        pytest.skip("kubernetes-validate is not installed (it comes with the test extras)")
    return subprocess.run([exe, "--strict", "--quiet", "-k", K8S_VERSION, str(path)], capture_output=True,
                          text=True, timeout=120)


def find(docs: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    hits = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(hits) == 1, (kind, name, [(d["kind"], d["metadata"]["name"]) for d in docs])
    return hits[0]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1  # one process tree per pod
    return dict(containers[0])


def env(c: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c.get("env", [])}


def dockerfile_uid() -> int:
    users = re.findall(r"^USER (\d+):\d+$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert users and len(set(users)) == 1, users
    return int(users[0])


@pytest.mark.parametrize("folder", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_kustomization_renders_and_validates_strictly(folder: Path, tmp_path: Path) -> None:
    docs = render(folder)
    assert docs
    out = tmp_path / "rendered.yaml"
    out.write_text(yaml.safe_dump_all(docs))
    r = validate(out)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_validation_is_strict(tmp_path: Path) -> None:
    """An unknown field in a rendered Deployment fails it (so the test above can fail)."""
    docs = [copy.deepcopy(d) for d in render(OVERLAYS["cpu"])]
    find(tuple(docs), "Deployment", "ganserve")["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    out = tmp_path / "broken.yaml"
    out.write_text(yaml.safe_dump_all(docs))
    r = validate(out)
    assert r.returncode != 0 and "livenesProbe" in r.stdout + r.stderr


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_the_service_deployment(overlay: str) -> None:
    docs = render(OVERLAYS[overlay])
    dep = find(docs, "Deployment", "ganserve")
    pod = dep["spec"]["template"]["spec"]
    c = container(dep)
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()

    # Probes: alive on /healthz; ready on /readyz, with a startup allowance for loading the checkpoints.
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    startup = c["startupProbe"]
    assert startup["httpGet"]["path"] == "/readyz"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert c[probe]["httpGet"]["port"] in ("http", 8000)
    assert {"name": "http", "containerPort": 8000} in c["ports"]

    # Requests and limits for CPU and memory; a whole number of CPUs, which python -m app sizes itself from.
    for key in ("cpu", "memory"):
        assert key in c["resources"]["requests"] and key in c["resources"]["limits"]
    assert re.fullmatch(r"\d+", str(c["resources"]["limits"]["cpu"]))

    # Security: non-root with the image's numeric user, read-only root, nothing to escalate, no capabilities.
    for ctx in (pod["securityContext"], c["securityContext"]):
        assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] == dockerfile_uid() != 0
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"]
    assert pod["automountServiceAccountToken"] is False
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in c["volumeMounts"]:  # anything writable is an emptyDir; /tmp is one
        assert "emptyDir" in volumes[mount["name"]] or mount.get("readOnly") is True, mount
    assert "/tmp" in {m["mountPath"] for m in c["volumeMounts"]}

    # The checkpoints baked into the image are what it serves: nothing is mounted over them.
    assert env(c)["GANSERVE_CHECKPOINTS"] == "/srv/ganserve/checkpoints"
    assert not any(m["mountPath"].startswith("/srv/ganserve/checkpoints") for m in c["volumeMounts"])
    assert "COPY checkpoints ./checkpoints" in (ROOT / "Dockerfile").read_text()

    if overlay == "gpu":
        assert env(c)["GANSERVE_DEVICE"] == "cuda" and c["image"] == "ganserve:latest"
        assert c["resources"]["limits"]["nvidia.com/gpu"] == 1 == c["resources"]["requests"]["nvidia.com/gpu"]
        assert c["command"][-2:] == ["--processes", "1"]  # one process per pod, on its one GPU
        assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    else:
        assert env(c)["GANSERVE_DEVICE"] == "cpu" and c["image"] == "ganserve:cpu"
        assert "nvidia.com/gpu" not in c["resources"]["limits"] and "command" not in c


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_service_autoscaler_and_disruption_budget(overlay: str) -> None:
    docs = render(OVERLAYS[overlay])
    labels = find(docs, "Deployment", "ganserve")["spec"]["template"]["metadata"]["labels"]
    svc = find(docs, "Service", "ganserve")
    assert svc["spec"]["selector"].items() <= labels.items()
    assert svc["spec"]["ports"] == [{"name": "http", "port": 8000, "targetPort": "http"}]
    hpa = find(docs, "HorizontalPodAutoscaler", "ganserve")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "ganserve"}
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    pdb = find(docs, "PodDisruptionBudget", "ganserve")
    assert pdb["apiVersion"] == "policy/v1" and pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]  # a node drain can always evict one


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_the_proxy_runs_the_template_in_front_of_the_service(overlay: str) -> None:
    docs = render(OVERLAYS[overlay])
    dep = find(docs, "Deployment", "ganserve-proxy")
    c = container(dep)
    assert c["image"].startswith("nginx:")
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    config_map_name = volumes[mounts["/etc/nginx/templates"]["name"]]["configMap"]["name"]
    cm = find(docs, "ConfigMap", config_map_name)
    assert cm["data"] == {"default.conf.template": TEMPLATE.read_text()}  # the tested template, verbatim
    e = env(c)
    assert set(e) == {"GANSERVE_UPSTREAM", "NGINX_PORT", "NGINX_CACHE_DIR", "GANSERVE_MAX_UPLOAD_BYTES"}
    svc = find(docs, "Service", "ganserve")
    assert e["GANSERVE_UPSTREAM"] == f"{svc['metadata']['name']}:{svc['spec']['ports'][0]['port']}"
    assert e["GANSERVE_MAX_UPLOAD_BYTES"] == env(container(find(docs, "Deployment", "ganserve")))[
        "GANSERVE_MAX_UPLOAD_BYTES"]
    assert {"name": "http", "containerPort": int(e["NGINX_PORT"])} in c["ports"]
    assert any(path == "/var/cache/nginx" or e["NGINX_CACHE_DIR"].startswith(path + "/") for path in mounts)
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["capabilities"]["drop"] == ["ALL"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] != 0
    for path, mount in mounts.items():  # the entrypoint writes conf.d, nginx its cache, pid and temp files
        assert "emptyDir" in volumes[mount["name"]] or mount.get("readOnly") is True, path
    proxy_svc = find(docs, "Service", "ganserve-proxy")
    assert proxy_svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    find(docs, "PodDisruptionBudget", "ganserve-proxy")
