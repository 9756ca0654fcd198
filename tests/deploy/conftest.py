"""Helpers of the deployment tests: the real nginx template rendered as the official nginx image renders
it, Debian's nginx started on loopback from it, and the real service behind it.

Everything listens on 127.0.0.1 on free ports, under a temporary prefix; every process is stopped at the
end of its ``with`` block.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "nginx" / "ganserve.conf.template"
HOST = "127.0.0.1"  # loopback only
TEMPLATE_VARS = ("GANSERVE_UPSTREAM", "NGINX_PORT", "NGINX_CACHE_DIR", "GANSERVE_MAX_UPLOAD_BYTES")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def nginx_binary() -> str:
    """Debian's nginx (in /usr/sbin, which a non-root PATH may lack), or skip the test."""
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
    if found is None:
        pytest.skip("nginx is not installed (scripts/setup.sh test installs Debian's nginx)")
    return found


def render_template(values: dict[str, str], template: Path = TEMPLATE) -> str:
    """The template with exactly its four variables substituted, as the official image's
    ``20-envsubst-on-templates.sh`` does (``envsubst`` limited to the names it defines, so nginx's own
    ``$variables`` stay); Python's equivalent where gettext's envsubst is missing."""
    assert set(values) == set(TEMPLATE_VARS), sorted(values)
    text = template.read_text()
    envsubst = shutil.which("envsubst")
    if envsubst:
        shell_format = " ".join(f"${{{k}}}" for k in TEMPLATE_VARS)
        return subprocess.run([envsubst, shell_format], input=text, capture_output=True, text=True, check=True,
                              env={**os.environ, **values}).stdout
    return re.sub(r"\$\{(" + "|".join(TEMPLATE_VARS) + r")\}", lambda m: values[m.group(1)], text)


class Nginx:
    def __init__(self, proc: subprocess.Popen[str], port: int, prefix: Path) -> None:
        self.proc, self.port, self.prefix = proc, port, prefix
        self.base = f"http://{HOST}:{port}"

    def error_log(self) -> str:
        return (self.prefix / "error.log").read_text(errors="replace")


def main_conf(prefix: Path, include: Path) -> str:
    """The main nginx.conf around the rendered include (what the official image's /etc/nginx/nginx.conf
    does with /etc/nginx/conf.d/*.conf), every path under the test's prefix."""
    temp = "\n".join(f"    {kind}_temp_path {prefix / kind};" for kind in ("client_body", "proxy", "fastcgi",
                                                                             "uwsgi", "scgi"))
    user = "user root;\n" if os.geteuid() == 0 else ""  # as root, workers would otherwise run as nobody
    return (f"{user}worker_processes 1;\npid {prefix / 'nginx.pid'};\nerror_log {prefix / 'error.log'} info;\n"
            f"events {{ worker_connections 1024; }}\n"
            f"http {{\n    access_log {prefix / 'access.log'};\n{temp}\n    include {include};\n}}\n")


@contextmanager
def run_nginx(upstream: str, tmp_path: Path, *, max_upload_bytes: int = 8 * 1024 * 1024) -> Iterator[Nginx]:
    """Debian's nginx in the foreground on a free loopback port with the rendered template; stopped at exit."""
    binary = nginx_binary()
    prefix = tmp_path / f"nginx-{free_port()}"
    prefix.mkdir()
    port = free_port()
    include = prefix / "ganserve.conf"
    include.write_text(render_template({"GANSERVE_UPSTREAM": upstream, "NGINX_PORT": f"{HOST}:{port}",
                                        "NGINX_CACHE_DIR": str(prefix / "cache"),
                                        "GANSERVE_MAX_UPLOAD_BYTES": str(max_upload_bytes)}))
    conf = prefix / "nginx.conf"
    conf.write_text(main_conf(prefix, include))
    cmd = [binary, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log"), "-g", "daemon off;"]
    test = subprocess.run([*cmd, "-t"], capture_output=True, text=True, timeout=30)
    assert test.returncode == 0, test.stderr
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    server = Nginx(proc, port, prefix)
    try:
        until = time.monotonic() + 20
        while True:
            assert proc.poll() is None, f"nginx exited with {proc.returncode}: {server.error_log()}"
            try:
                socket.create_connection((HOST, port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < until, f"nginx not listening after 20 s: {server.error_log()}"
                time.sleep(0.05)
        yield server
    finally:
        proc.send_signal(signal.SIGQUIT)  # graceful stop
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
