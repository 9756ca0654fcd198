"""The service sizes itself from its cgroup CPU quota as well as its affinity (fake cgroup trees)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import app.settings as settings_module
from app import __main__ as app_main
from app.batcher import worker_plan
from app.settings import cgroup_cpu_limit, usable_cores

AFFINITY = len(os.sched_getaffinity(0))


def _v2(tmp_path: Path, cpu_max: str | None, *, path: str = "/",
        nested: dict[str, str] | None = None) -> tuple[Path, Path]:
    """A cgroup v2 tree (``cgroup.controllers`` at the root) with ``cpu.max`` at the process's cgroup."""
    root = tmp_path / "cgroup"
    own = root / path.strip("/")
    own.mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    if cpu_max is not None:
        (own / "cpu.max").write_text(cpu_max + "\n")
    for rel, text in (nested or {}).items():
        (root / rel).mkdir(parents=True, exist_ok=True)
        (root / rel / "cpu.max").write_text(text + "\n")
    proc = tmp_path / "proc-cgroup"
    proc.write_text(f"0::{path}\n")
    return root, proc


def _v1(tmp_path: Path, quota: int, period: int = 100_000, *, mount: str = "cpu,cpuacct",
        path: str = "/docker/0123abcd") -> tuple[Path, Path]:
    """A cgroup v1 tree as inside a container: the mount's root is the container's cgroup, and
    /proc/self/cgroup names the host's path, which does not exist under it."""
    root = tmp_path / "cgroup"
    cpu = root / mount
    cpu.mkdir(parents=True)
    (cpu / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    (cpu / "cpu.cfs_period_us").write_text(f"{period}\n")
    (root / "memory").mkdir()
    proc = tmp_path / "proc-cgroup"
    proc.write_text(f"12:memory:{path}\n4:cpu,cpuacct:{path}\n1:name=systemd:{path}\n"
                    if mount == "cpu,cpuacct" else f"4:cpu:{path}\n3:cpuacct:{path}\n")
    return root, proc


@pytest.mark.parametrize(("cpu_max", "cpus", "cores"), [
    ("200000 100000", 2.0, 2),      # docker run --cpus 2
    ("150000 100000", 1.5, 1),      # 1500m: planned for one core, never throttled by a second
    ("50000 100000", 0.5, 1),       # 500m: still one core
    ("max 100000", None, AFFINITY),  # no limit
])
def test_cgroup_v2_cpu_max(tmp_path: Path, cpu_max: str, cpus: float | None, cores: int) -> None:
    root, proc = _v2(tmp_path, cpu_max)
    assert cgroup_cpu_limit(root, proc) == cpus
    assert usable_cores(root, proc) == min(cores, AFFINITY)


def test_cgroup_v2_takes_the_smallest_quota_on_the_path(tmp_path: Path) -> None:
    # A Kubernetes pod: the container's cgroup has no limit of its own, its pod's parent has 1 CPU.
    root, proc = _v2(tmp_path, "max 100000", path="/kubepods/pod1/ctr", nested={"kubepods/pod1": "100000 100000",
                                                                               "kubepods": "800000 100000"})
    assert cgroup_cpu_limit(root, proc) == 1.0
    assert usable_cores(root, proc) == 1


def test_cgroup_v1_cfs_quota(tmp_path: Path) -> None:
    root, proc = _v1(tmp_path, 100_000)
    assert cgroup_cpu_limit(root, proc) == 1.0
    assert usable_cores(root, proc) == 1
    root, proc = _v1(tmp_path / "split", 300_000, 200_000, mount="cpu")  # cpu and cpuacct mounted apart
    assert cgroup_cpu_limit(root, proc) == 1.5
    root, proc = _v1(tmp_path / "none", -1)
    assert cgroup_cpu_limit(root, proc) is None
    assert usable_cores(root, proc) == AFFINITY


@pytest.mark.parametrize("junk", ["", "garbage", "max", "100000 0", "abc def"])
def test_unreadable_quota_is_no_quota(tmp_path: Path, junk: str) -> None:
    root, proc = _v2(tmp_path, junk)
    assert cgroup_cpu_limit(root, proc) is None
    assert usable_cores(root, proc) == AFFINITY


def test_no_cgroup_files_is_no_quota(tmp_path: Path) -> None:
    assert cgroup_cpu_limit(tmp_path / "absent", tmp_path / "absent-proc") is None
    assert usable_cores(tmp_path / "absent", tmp_path / "absent-proc") == AFFINITY


def test_a_quota_sizes_processes_workers_and_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under ``--cpus 1`` on a machine with more cores: one process, one worker, one thread — the
    sizing follows the quota end to end (python -m app's processes and GANSERVE_CORES, the batcher's plan)."""
    root, proc = _v2(tmp_path, "100000 100000")
    monkeypatch.setattr(settings_module, "CGROUP_ROOT", root)
    monkeypatch.setattr(settings_module, "PROC_CGROUP", proc)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.setenv("GANSERVE_DEVICE", "cpu")
    assert settings_module.usable_cores() == 1
    assert app_main.auto_processes() == 1
    assert worker_plan(torch.device("cpu")) == (1, 1)
