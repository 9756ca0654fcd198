"""``uvicorn app.main:app`` from the repo root, over real HTTP on the loopback interface."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch

import app.settings as settings_module
from app.__main__ import MAX_AUTO_PROCESSES, auto_processes, build_parser, main, share_cores
from app.inference import inference_threads, inference_workers
from app.settings import Settings, usable_cores
from tests.app.conftest import COND
from tests.app.images import decode

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[str], timeout: float) -> str:
    """Terminate the server (kill it if it does not stop in time) → everything it printed."""
    proc.terminate()
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


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
        out = _stop(proc, 15)
    assert "Traceback" not in out, out
    assert f"model {COND}: ready on cpu" in out or "ready on" in out, out


def test_several_processes_share_the_socket_and_add_up_their_metrics(tiny_checkpoints: Path, tmp_path: Path) -> None:
    """``python -m app --processes 2``: the copies answer on one port, /metrics counts the requests of all
    (the stale file of an earlier run is cleared first)."""
    port = _free_port()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"stale")  # from an earlier run: must not be added in
    env = {**os.environ, "GANSERVE_CHECKPOINTS": str(tiny_checkpoints), "GANSERVE_DEFAULT_MODEL": COND,
           "GANSERVE_RELOAD_INTERVAL_S": "0", "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
           "GANSERVE_MAX_BATCHES": "8"}  # a typo: reported at start-up
    proc = subprocess.Popen([sys.executable, "-m", "app", "--port", str(port), "--processes", "2"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        until, ready = time.monotonic() + 90, 0
        while time.monotonic() < until and proc.poll() is None and ready < 10:
            try:  # a new connection each time: the kernel spreads them over both processes
                ready = ready + 1 if httpx.get(f"{base}/readyz", timeout=2).status_code == 200 else 0
            except httpx.TransportError:
                ready = 0
            time.sleep(0.05)
        assert ready >= 10, "not every process became ready"
        for seed in range(30):
            r = httpx.get(f"{base}/generate", params={"label": 1, "seed": seed}, timeout=10)
            assert r.status_code == 200 and r.headers["x-seed"] == str(seed)
        metrics = httpx.get(f"{base}/metrics", timeout=10).text
        line = 'ganserve_requests_total{method="GET",model="tiny-cgan",route="/generate",status="200"} 30.0'
        assert line in metrics, metrics[:2000]
        assert "ganserve_models_loaded 3.0" in metrics
        assert not (metrics_dir / "counter_1.db").exists()
        # The process metrics of each copy, told apart by pid; the model's version and family.
        assert len(set(re.findall(r'^process_resident_memory_bytes\{pid="(\d+)"\} ', metrics, re.MULTILINE))) == 2
        assert re.search(r'^ganserve_model_info\{family="cgan",model="tiny-cgan",version="[0-9a-f]{12}"\} 1\.0$',
                         metrics, re.MULTILINE), metrics[:3000]
    finally:
        out = _stop(proc, 30)
    assert "Traceback" not in out, out[-3000:]
    assert "GANSERVE_MAX_BATCHES is not a ganserve setting and is ignored; did you mean GANSERVE_MAX_BATCH?" in out
    assert metrics_dir.exists()  # given by the caller: left in place


HOLD_BACK = """\
# Test hook (tests/app/test_uvicorn.py): the first process of the pod whose registry is ready does not mark
# itself ready while the file $READYZ_TEST_HOLD exists.
import os
from pathlib import Path

from app import podready

_hold = Path(os.environ["READYZ_TEST_HOLD"])
_mark = podready.PodReadiness.mark
_claimed = None


def _held():
    global _claimed
    if _claimed is None:  # the first process to ask is the one held back
        try:
            os.close(os.open(_hold.with_suffix(".claimed"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            _claimed = True
        except FileExistsError:
            _claimed = False
    return _claimed and _hold.exists()


def mark(self, ready):
    _mark(self, ready and not _held())


podready.PodReadiness.mark = mark
"""


def test_readyz_waits_for_every_process(tiny_checkpoints: Path, tmp_path: Path) -> None:
    """``python -m app --processes 2`` with one process held back from marking itself ready (a hook loaded
    through sitecustomize in each process): /readyz says 503, 1 of 2 ready, from both processes — until it
    is released, then 200."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOLD_BACK)
    hold = tmp_path / "hold"
    hold.touch()
    port = _free_port()
    env = {**os.environ, "GANSERVE_CHECKPOINTS": str(tiny_checkpoints), "GANSERVE_DEFAULT_MODEL": COND,
           "GANSERVE_RELOAD_INTERVAL_S": "0", "READYZ_TEST_HOLD": str(hold),
           "PYTHONPATH": os.pathsep.join([str(hook), str(ROOT)])}
    proc = subprocess.Popen([sys.executable, "-m", "app", "--port", str(port), "--processes", "2"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"

    def readyz() -> httpx.Response | None:
        try:  # a new connection each time: the kernel spreads them over both processes
            return httpx.get(f"{base}/readyz", timeout=2)
        except httpx.TransportError:
            return None

    try:
        until = time.monotonic() + 90
        # Both registries ready: the held process has claimed the hold, the other has marked itself.
        while time.monotonic() < until and proc.poll() is None:
            r = readyz()
            if r is not None and r.json().get("processes_ready") == 1 and hold.with_suffix(".claimed").exists():
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the processes never loaded")
        for _ in range(20):
            r = readyz()
            assert r is not None and r.status_code == 503, r and r.text
            assert r.json()["status"] == "loading" and (r.json()["processes"], r.json()["processes_ready"]) == (2, 1)
        hold.unlink()  # released: it marks itself ready within a moment
        ready = 0
        while time.monotonic() < until and proc.poll() is None and ready < 10:
            r = readyz()
            ready = ready + 1 if r is not None and r.status_code == 200 else 0
            time.sleep(0.05)
        assert ready >= 10, "not ready after the release"
        assert r is not None and r.json()["status"] == "ready" and r.json()["processes_ready"] == 2
    finally:
        out = _stop(proc, 30)
    assert "Traceback" not in out, out[-3000:]
    assert not re.search(r"GANSERVE_POD_\w+ is not a ganserve setting", out), out[-3000:]  # the launcher's own


def test_bad_launcher_options_name_the_flag(capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    for argv, flag in ((["--processes", "0"], "--processes"), (["--processes", "x"], "--processes"),
                       (["--port", "70000"], "--port")):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2 and flag in capsys.readouterr().err
    monkeypatch.setenv("GANSERVE_DEVICE", "tpu")  # the service would not start: say so before starting it
    with pytest.raises(SystemExit) as e:
        main([])
    assert e.value.code == 2 and "GANSERVE_DEVICE" in capsys.readouterr().err.upper()


def test_auto_processes_is_one_per_core_on_the_cpu_and_one_on_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    assert build_parser().parse_args([]).processes == "auto"
    assert build_parser().parse_args(["--processes", "AUTO"]).processes == "auto"
    assert build_parser().parse_args(["--processes", "3"]).processes == 3
    monkeypatch.setattr(settings_module, "usable_cores", lambda: 2)
    monkeypatch.setenv("GANSERVE_DEVICE", "cpu")
    assert auto_processes() == 2
    monkeypatch.setattr(settings_module, "usable_cores", lambda: 32)
    assert auto_processes() == MAX_AUTO_PROCESSES
    monkeypatch.setenv("GANSERVE_DEVICE", "cuda:1")  # one process per GPU
    assert auto_processes() == 1
    monkeypatch.setenv("GANSERVE_DEVICE", "auto")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert auto_processes() == 1


def test_usable_cores_follow_the_cpu_affinity() -> None:
    if hasattr(os, "sched_getaffinity"):
        assert usable_cores() == len(os.sched_getaffinity(0))
    assert 1 <= usable_cores() <= (os.cpu_count() or 1)


def test_processes_share_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each of N processes plans its workers for cores / N (unless GANSERVE_CORES says otherwise)."""
    monkeypatch.setattr(settings_module, "usable_cores", lambda: 8)
    monkeypatch.delenv("GANSERVE_CORES", raising=False)
    share_cores(1)
    assert "GANSERVE_CORES" not in os.environ
    share_cores(4)
    assert os.environ["GANSERVE_CORES"] == "2"
    cpu = torch.device("cpu")
    cores = Settings().cores
    workers = inference_workers(cpu, cores)
    assert (cores, workers, inference_threads(cpu, workers, cores)) == (2, 2, 1)
    monkeypatch.setenv("GANSERVE_CORES", "3")
    share_cores(2)
    assert os.environ["GANSERVE_CORES"] == "3"  # the operator's choice stands
