"""Shared helpers of the reliability suite: tiny checkpoints and a real ``uvicorn`` server process.

Everything runs on the loopback interface (127.0.0.1) with one torch thread per process, so
that the suite stays bounded on a small shared machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.app.conftest import write_ae, write_cgan, write_checkpoint, write_mlp

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"  # loopback only, never any other address
HEAVY = "heavy-dcgan"  # a 64×64 RGB DCGAN generator whose forward pass takes tens of milliseconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def write_heavy(root: Path, name: str = HEAVY) -> Path:
    kw = {"z_dim": 32, "num_classes": 0, "channels": 3, "resolution": 64, "ngf": 64, "upsample": "convT",
          "bn": "before-act"}
    return write_checkpoint(root, name, "DCGenerator", kw, family="dcgan", seed=3)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tests/app tiny checkpoints (cgan 28×28 grey, mlp 28×28 RGB, an unsampleable ae)."""
    root = tmp_path_factory.mktemp("reliability-checkpoints")
    write_cgan(root)
    write_mlp(root)
    write_ae(root)
    return root


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MiB (from /proc; psutil is not needed)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


class Server:
    def __init__(self, proc: subprocess.Popen[str], port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log
        self.base = f"http://{HOST}:{port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_mb(self) -> float:
        return rss_mb(self.pid)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def run_server(checkpoints: Path, tmp_path: Path, *, env: dict[str, str] | None = None,
               uvicorn_args: list[str] | None = None, ready_timeout: float = 90) -> Iterator[Server]:
    """``python -m uvicorn app.main:app`` on a free loopback port, ready (``/readyz`` 200) when yielded."""
    port = free_port()
    full_env = {
        **os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
        "GANSERVE_CHECKPOINTS": str(checkpoints), "GANSERVE_DEVICE": "cpu", "GANSERVE_DEFAULT_MODEL": "tiny-cgan",
        "GANSERVE_RELOAD_INTERVAL_S": "0", "GANSERVE_WARMUP_BATCH": "2", **(env or {}),
    }
    log = tmp_path / f"uvicorn-{port}.log"
    cmd = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", HOST, "--port", str(port), "--no-access-log",
           *(uvicorn_args or [])]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT, text=True)
    server = Server(proc, port, log)
    try:
        until = time.monotonic() + ready_timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"server exited with {proc.returncode}:\n{server.output()}")
            try:
                if httpx.get(f"{server.base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > until:
                raise AssertionError(f"server not ready after {ready_timeout}s:\n{server.output()}")
            time.sleep(0.1)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(**numbers: Any) -> None:
    """Print measured numbers (shown with ``pytest -s`` and kept in the captured output of failures)."""
    print("reliability:", ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                     for k, v in numbers.items()))


class RawResponse:
    def __init__(self, status: int, headers: dict[str, str], content: bytes) -> None:
        self.status_code, self.headers, self.content = status, headers, content

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


class RawClient:
    """A minimal HTTP/1.1 keep-alive client (GET, and POST of a body) over one asyncio connection.

    httpx spends 3–4 ms of client CPU per request, more than the server; a soak of tens of
    thousands of requests on two shared cores would measure the client. This one parses only
    what the service sends (status line, headers, Content-Length bodies).
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, target: str, headers: dict[str, str] | None = None) -> RawResponse:
        return await self.request("GET", target, headers)

    async def post(self, target: str, body: bytes, content_type: str) -> RawResponse:
        return await self.request("POST", target, {"Content-Type": content_type,
                                                   "Content-Length": str(len(body))}, body)

    async def request(self, method: str, target: str, headers: dict[str, str] | None = None,
                      body: bytes = b"") -> RawResponse:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        assert self.reader is not None
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.writer.write(f"{method} {target} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n{extra}\r\n".encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        fields: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                k, _, v = line.partition(":")
                fields[k.strip().lower()] = v.strip()
        assert "transfer-encoding" not in fields, fields
        length = int(fields.get("content-length", "0"))
        body = await self.reader.readexactly(length) if length else b""
        if fields.get("connection", "").lower() == "close":
            await self.close()
        return RawResponse(status, fields, body)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None
