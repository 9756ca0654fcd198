"""Run the real service in a subprocess and drive it with headless Debian Chromium.

Shared by ``tests/e2e/test_frontend.py`` and ``scripts/screenshots.py``: tiny test-made
checkpoints (the writers of ``tests/app/conftest.py``), ``python -m uvicorn app.main:app`` on a
free port, a wait for ``/readyz``, and a Chromium launched from ``/usr/bin/chromium`` (never a
Playwright browser download).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("GANSERVE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic",
]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


def write_test_checkpoints(root: Path) -> Path:
    """A conditional DCGenerator (3 named classes), an unconditional MLP measured on 10k samples at
    truncation 0.7 (it misses the coverage bar) and trained in two parts, an unsampleable AE and a
    tiny pix2pix translator (edges → 32×32 RGB)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.app.conftest import MEASURED_UNCOND, write_ae, write_cgan, write_mlp
    from tests.translator_fixture import write_translator
    from training.checkpoint import CONFIG, CommandPart, atomic_write_json, read_config, update_metrics

    cgan = write_cgan(root)
    # Shaped as `evaluate-encoding` writes it: projection on 200 held-out images with the label given.
    update_metrics(cgan, {"encoding": {"method": "projection", "images": 200, "split": "test", "seed": 0,
                                       "steps": 100, "label_given": True, "class_accuracy": 0.945,
                                       "agrees_with_original": 0.925, "evaluator_on_originals": 0.945,
                                       "psnr": 21.689}}, read_config(cgan).evaluator_sha256)
    # Judged against the bars (it misses coverage), measured — and so served — at truncation ψ 0.7.
    # Its KID is noise at this sample size (the spread is larger than the value), as mnist-cgan's is.
    mlp = update_metrics(write_mlp(root), {**MEASURED_UNCOND, "kid": -3.35354, "kid_std": 5.423737,
                                           "truncation": 0.7}, None)
    # Trained in two parts: resumed at epoch 3 with another command line.
    first, second = "python -m training train --family mlp-gan --epochs 3", "… --epochs 5 --resume --lr-g 5e-5"
    training = mlp.training.model_copy(update={"command": second, "epochs": 5, "parts": [
        CommandPart(command=first, from_epoch=0), CommandPart(command=second, from_epoch=3)]})
    atomic_write_json(root / mlp.name / CONFIG,
                      mlp.model_copy(update={"training": training}).model_dump(mode="json", by_alias=True))
    write_ae(root)
    translator = write_translator(root)  # tiny-edges2shapes: edges → 32×32 RGB, for the Draw panel
    # Shaped as `evaluate --baseline` writes a translator's metrics.
    update_metrics(translator, {"l1": 0.07393, "fid": 61.4305, "fid_floor": 0.3767, "accuracy": 0.7657,
                                "sample_accuracy_real": 0.929, "num_pairs": 10000,
                                "baseline": {"l1_only": True, "l1": 0.074585, "fid": 70.4605}}, None)
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running_service(checkpoints: Path, *, default_model: str | None = None, timeout: float = 90.0,
                    env: dict[str, str] | None = None) -> Iterator[str]:
    """Start ``uvicorn app.main:app`` on ``checkpoints``; yield its base URL once /readyz says 200."""
    port = free_port()
    environ = {
        **os.environ,
        "GANSERVE_CHECKPOINTS": str(checkpoints),
        "GANSERVE_DEVICE": "cpu",
        "GANSERVE_RELOAD_INTERVAL_S": "0",
        "OMP_NUM_THREADS": "1",  # two cores shared with training runs
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
        **({"GANSERVE_DEFAULT_MODEL": default_model} if default_model else {}),
        **(env or {}),
    }
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port),
             "--log-level", "warning"],
            cwd=ROOT, env=environ, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            _wait_ready(base, proc, log, timeout)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _wait_ready(base: str, proc: subprocess.Popen[bytes], log: Any, timeout: float) -> None:
    until = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < until:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"the service exited with {proc.returncode}:\n{log.read()[-4000:]}")
        try:
            r = httpx.get(f"{base}/readyz", timeout=2)
            if r.status_code == 200:
                return
            last = r.text
        except httpx.HTTPError as e:
            last = repr(e)
        time.sleep(0.2)
    log.seek(0)
    raise RuntimeError(f"the service was not ready after {timeout:.0f}s ({last}):\n{log.read()[-4000:]}")


def launch_chromium(playwright: Any) -> Any:
    """Headless Debian Chromium through Playwright (no browser download, no network of its own)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
