"""Helpers of the deployment tests: the real nginx template rendered as the official nginx image renders
it, Debian's nginx started on loopback from it, and the real service behind it.

Everything listens on 127.0.0.1 on free ports, under a temporary prefix; every process is stopped at the
end of its ``with`` block.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import bench.proxy as proxy_bench
from bench.common import free_port
from bench.proxy import Nginx

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"  # loopback only


def nginx_binary() -> str:
    """Debian's nginx, or skip the test."""
    found = proxy_bench.nginx_binary()
    if found is None:
        pytest.skip("nginx is not installed (scripts/setup.sh test installs Debian's nginx)")
    return found


@contextmanager
def run_nginx(upstream: str, tmp_path: Path, *, max_upload_bytes: int = 8 * 1024 * 1024) -> Iterator[Nginx]:
    """Debian's nginx on a free loopback port with the rendered template (bench/proxy.py's runner)."""
    nginx_binary()
    with proxy_bench.run_nginx(upstream, tmp_path, max_upload_bytes=max_upload_bytes) as nginx:
        yield nginx


class Service:
    def __init__(self, proc: subprocess.Popen[str], port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log
        self.base = f"http://{HOST}:{port}"
        self.upstream = f"{HOST}:{port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def requests(self) -> float:
        """Requests the service has answered, by its own /metrics (all routes but /metrics itself)."""
        text = httpx.get(f"{self.base}/metrics", timeout=10).text
        return sum(sample.value for family in text_string_to_metric_families(text)
                   if family.name == "ganserve_requests"
                   for sample in family.samples
                   if sample.name == "ganserve_requests_total" and sample.labels.get("route") != "/metrics")


@contextmanager
def run_service(checkpoints: Path, tmp_path: Path, *, env: dict[str, str] | None = None,
                ready_path: str = "/readyz") -> Iterator[Service]:
    """The real service (``uvicorn app.main:app``) on a free loopback port, answering 200 on ``ready_path``."""
    port = free_port()
    full_env = {
        **os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
        "GANSERVE_CHECKPOINTS": str(checkpoints), "GANSERVE_DEVICE": "cpu", "GANSERVE_DEFAULT_MODEL": "tiny-cgan",
        "GANSERVE_RELOAD_INTERVAL_S": "0", "GANSERVE_WARMUP_BATCH": "2", "GANSERVE_INFERENCE_WORKERS": "1",
        **(env or {}),
    }
    log = tmp_path / f"uvicorn-{port}.log"
    cmd = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", HOST, "--port", str(port), "--no-access-log"]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT, text=True)
    service = Service(proc, port, log)
    try:
        until = time.monotonic() + 90
        while True:
            assert proc.poll() is None, f"service exited with {proc.returncode}:\n{service.output()}"
            try:
                if httpx.get(f"{service.base}{ready_path}", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < until, f"service not ready after 90 s:\n{service.output()}"
            time.sleep(0.1)
        yield service
    finally:
        service.stop()
