"""What an operator sees: unknown GANSERVE_* variables reported at start-up, and /metrics' process
metrics and model info."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.metrics import LiveProcessesCollector
from app.settings import unknown_variables
from tests.app.conftest import COND, UNCOND, make_settings, wait_for, wait_ready, write_cgan, write_mlp
from training.checkpoint import read_config


def test_unknown_variables_are_named_with_the_likely_setting() -> None:
    env = {"GANSERVE_MAX_BATCHES": "8", "GANSERVE_DEVCE": "cpu", "ganserve_max_wait": "1", "GANSERVE_FOO": "1",
           "GANSERVE_MAX_BATCH": "8", "GANSERVE_device": "cpu", "GANSERVE_EVALUATORS": "x", "PATH": "/bin",
           "GANSERVE_CACHE": "/tmp/c"}  # the trainer's cache folder: not a typo of GANSERVE_CACHE_SIZE
    assert unknown_variables(env) == [("GANSERVE_DEVCE", "GANSERVE_DEVICE"), ("GANSERVE_FOO", None),
                                      ("GANSERVE_MAX_BATCHES", "GANSERVE_MAX_BATCH"),
                                      ("ganserve_max_wait", "GANSERVE_MAX_WAIT_MS")]
    assert unknown_variables({"GANSERVE_CHECKPOINTS": "x", "HOME": "/root"}) == []


def test_unknown_variables_are_logged_at_start_up(tiny_checkpoints: Path, monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING", logger="app")
    monkeypatch.setenv("GANSERVE_MAX_BATCHES", "8")
    monkeypatch.setenv("GANSERVE_QUEUE_SIZE", "64")
    with TestClient(create_app(make_settings(tiny_checkpoints))) as client:
        wait_ready(client)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "GANSERVE_MAX_BATCHES is not a ganserve setting and is ignored; did you mean GANSERVE_MAX_BATCH?" \
        in warnings, warnings
    assert not any("GANSERVE_QUEUE_SIZE" in w for w in warnings)


def _value(text: str, name: str) -> float:
    m = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


def test_metrics_carry_the_process_and_gc_collectors(client: TestClient) -> None:
    text = client.get("/metrics").text
    rss = _value(text, "process_resident_memory_bytes")
    assert 10e6 < rss < 64e9  # a real reading of this process (torch alone is tens of MB)
    assert _value(text, "process_cpu_seconds_total") > 0
    assert _value(text, "process_open_fds") >= 3
    assert re.search(r'^python_gc_collections_total\{generation="0"\} \d', text, re.MULTILINE)
    assert "python_info{" in text


def test_model_info_follows_the_served_versions(tmp_path: Path) -> None:
    write_cgan(tmp_path)
    write_mlp(tmp_path)

    def info(client: TestClient) -> set[tuple[str, str, str]]:
        text = client.get("/metrics").text
        pattern = r'^ganserve_model_info\{family="([^"]+)",model="([^"]+)",version="([0-9a-f]{12})"\} 1\.0$'
        return {(m, v, f) for f, m, v in re.findall(pattern, text, re.MULTILINE)}

    with TestClient(create_app(make_settings(tmp_path, reload_interval_s=0.05))) as client:
        wait_ready(client)
        first = read_config(tmp_path / COND).version
        assert info(client) == {(COND, first, "cgan"), (UNCOND, read_config(tmp_path / UNCOND).version, "mlp-gan")}
        write_cgan(tmp_path, seed=5)  # new weights: a new version replaces the old one
        second = read_config(tmp_path / COND).version
        assert second != first
        wait_for(lambda: (COND, second, "cgan") in info(client))
        assert not any(v == first for _, v, _ in info(client))
        shutil.rmtree(tmp_path / UNCOND)
        wait_for(lambda: {m for m, _, _ in info(client)} == {COND})


def test_live_processes_collector_labels_each_living_process(tmp_path: Path) -> None:
    """With several processes: the process metrics of each living one (its live-gauge file is there
    and the OS knows it), labelled by pid; a dead one's leftover file is skipped."""
    dead = 2**22 + 12345  # above the kernel's pid_max: never a living process
    for pid in (os.getpid(), dead):
        (tmp_path / f"gauge_livesum_{pid}.db").write_bytes(b"")
    (tmp_path / f"counter_{os.getppid()}.db").write_bytes(b"")  # counters say nothing of liveness
    collector = LiveProcessesCollector(tmp_path)
    assert collector.pids() == [os.getpid()]
    families = {f.name: f for f in collector.collect()}
    rss = families["process_resident_memory_bytes"].samples
    assert [s.labels for s in rss] == [{"pid": str(os.getpid())}] and rss[0].value > 10e6
