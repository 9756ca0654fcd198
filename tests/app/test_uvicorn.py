"""``uvicorn app.main:app`` from the repo root, over real HTTP on the loopback interface."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.app.conftest import COND
from tests.app.images import decode

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_uvicorn_serves(tiny_checkpoints: Path) -> None:
    port = _free_port()
    env = {**os.environ, "GANSERVE_CHECKPOINTS": str(tiny_checkpoints), "GANSERVE_DEVICE": "auto",
           "GANSERVE_DEFAULT_MODEL": COND}
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        until = time.monotonic() + 60
        ready = None
        while time.monotonic() < until and proc.poll() is None:
            try:
                ready = httpx.get(f"{base}/readyz", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        assert ready is not None and ready.status_code == 200, "server never became ready"
        r = httpx.get(f"{base}/generate", params={"label": 2, "seed": 0, "scale": 2}, timeout=10)
        assert r.status_code == 200 and decode(r.content).size == (56, 56)
        gif = httpx.get(f"{base}/interpolate", params={"label": "circle", "from_seed": 1, "to_seed": 2,
                                                       "frames": 4}, timeout=10)
        assert gif.status_code == 200 and decode(gif.content).n_frames == 4  # type: ignore[attr-defined]
        bad = httpx.get(f"{base}/generate", params={"seed": "x"}, timeout=10)
        assert bad.status_code == 422
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert "Traceback" not in out, out
    assert f"model {COND}: ready on cpu" in out or "ready on" in out, out
