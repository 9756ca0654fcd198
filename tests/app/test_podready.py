"""Pod-wide readiness (``python -m app --processes N``): ``/readyz`` is ready only when every process is."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.podready import FOLDER_ENV, PROCESSES_ENV, PodReadiness, start_time
from app.settings import unknown_variables
from tests.app.conftest import make_settings, wait_for


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A living process other than this one (a stand-in for another worker of the pod)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc
    proc.kill()
    proc.wait()


def _mark_for(folder: Path, pid: int, start: str | None) -> None:
    """The mark another process would write (``PodReadiness.mark`` writes this process's own)."""
    (folder / str(pid)).write_text(start if start is not None else "")


def test_marks_of_living_processes_are_counted_n_of_m(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    pod = PodReadiness(tmp_path, 3)
    assert pod.ready_count() == 0 and not pod.all_ready()
    pod.mark(True)
    assert (tmp_path / str(os.getpid())).read_text() == start_time(os.getpid())
    assert not list(tmp_path.glob(".*.tmp"))  # written whole, then renamed
    assert pod.ready_count() == 1
    _mark_for(tmp_path, sleeper.pid, start_time(sleeper.pid))
    assert pod.ready_count() == 2 and not pod.all_ready()  # 2 of 3
    assert PodReadiness(tmp_path, 2).all_ready()  # 2 of 2
    pod.mark(False)  # this process is no longer ready: its mark goes
    assert not (tmp_path / str(os.getpid())).exists() and pod.ready_count() == 1
    (tmp_path / "notes.txt").write_text("1")  # not a mark
    assert pod.ready_count() == 1


def test_marks_of_dead_processes_do_not_count(tmp_path: Path) -> None:
    pod = PodReadiness(tmp_path, 2)
    pod.mark(True)
    gone = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    gone_start = start_time(gone.pid)  # alive until its stdin closes
    assert gone_start and gone.stdin is not None
    _mark_for(tmp_path, gone.pid, gone_start)
    assert pod.ready_count() == 2
    gone.stdin.close()
    # Dead but not yet reaped by its parent (a zombie, as a crashed uvicorn worker is for a moment).
    os.waitid(os.P_PID, gone.pid, os.WEXITED | os.WNOWAIT)
    assert start_time(gone.pid) is None
    assert pod.ready_count() == 1
    gone.wait()  # reaped: no such process
    assert start_time(gone.pid) is None and pod.ready_count() == 1 and not pod.all_ready()


def test_a_mark_whose_pid_now_names_another_process_does_not_count(tmp_path: Path,
                                                                   sleeper: subprocess.Popen[bytes]) -> None:
    """The pid of a dead worker given to a new process: the start time in the mark tells them apart."""
    _mark_for(tmp_path, sleeper.pid, "1")  # written by an earlier process with that pid
    assert start_time(sleeper.pid) not in (None, "1")
    assert PodReadiness(tmp_path, 1).ready_count() == 0


def test_the_pod_comes_from_the_launchers_variables_which_are_not_reported(tmp_path: Path) -> None:
    assert PodReadiness.from_env({}) is None
    assert PodReadiness.from_env({FOLDER_ENV: str(tmp_path), PROCESSES_ENV: "1"}) is None  # one process
    pod = PodReadiness.from_env({FOLDER_ENV: str(tmp_path), PROCESSES_ENV: "4"})
    assert pod is not None and (pod.folder, pod.processes) == (tmp_path, 4)
    assert unknown_variables({FOLDER_ENV: str(tmp_path), PROCESSES_ENV: "4"}) == []
    assert PodReadiness(tmp_path / "gone", 2).ready_count() == 0  # the launcher removed the folder


def test_readyz_waits_for_every_process_of_the_pod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   tiny_checkpoints: Path, sleeper: subprocess.Popen[bytes]) -> None:
    """This process is ready, the other of 2 is not: 503 saying 1 of 2; both: 200; the other dies: 503."""
    folder = tmp_path / "ready"
    folder.mkdir()
    monkeypatch.setenv(FOLDER_ENV, str(folder))
    monkeypatch.setenv(PROCESSES_ENV, "2")
    with TestClient(create_app(make_settings(tiny_checkpoints))) as client:
        wait_for(lambda: (folder / str(os.getpid())).exists())  # this process's registry is ready
        r = client.get("/readyz")
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        body = r.json()
        assert (body["status"], body["processes"], body["processes_ready"], body["models"]) == ("loading", 2, 1, 3)
        _mark_for(folder, sleeper.pid, start_time(sleeper.pid))  # the other process is ready too
        r = client.get("/readyz")
        assert r.status_code == 200 and r.json()["status"] == "ready" and r.json()["processes_ready"] == 2
        sleeper.kill()
        sleeper.wait()  # a worker died; uvicorn would start another, which marks once it has loaded
        r = client.get("/readyz")
        assert r.status_code == 503 and (r.json()["processes"], r.json()["processes_ready"]) == (2, 1)
    assert not (folder / str(os.getpid())).exists()  # withdrawn at shutdown


def test_one_process_answers_for_itself(tiny_checkpoints: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FOLDER_ENV, raising=False)
    monkeypatch.delenv(PROCESSES_ENV, raising=False)
    with TestClient(create_app(make_settings(tiny_checkpoints))) as client:
        wait_for(lambda: client.get("/readyz").status_code == 200)
        body = client.get("/readyz").json()
        assert body["status"] == "ready" and "processes" not in body and "processes_ready" not in body
