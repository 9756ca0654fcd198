"""Service settings, read from the environment with the ``GANSERVE_`` prefix."""

from __future__ import annotations

import difflib
import logging
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MAX_PROJECTION_STEPS = 2000  # the hard cap of GANSERVE_PROJECTION_STEPS
MAX_IMAGE_PIXELS = 89_478_485  # Pillow's own decompression-bomb threshold (PIL.Image.MAX_IMAGE_PIXELS)

DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda|cuda:\d{1,2})$")


CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def _cgroup_dirs(mount: Path, path: str) -> list[Path]:
    """The process's cgroup folder under a cgroup mount and each of its parents up to the mount.
    In a container the mount's root already is the container's cgroup and ``path`` (the host's
    view) does not exist under it: then only the mount's root counts."""
    own = mount / path.strip("/")
    dirs = [d for d in (own, *own.parents) if d.is_relative_to(mount)]
    return [d for d in dirs if d.is_dir()] or [mount]


def _quota_v2(folder: Path) -> float | None:
    """``cpu.max`` = "max 100000" (no limit) or "<quota µs> <period µs>" → CPUs, or None."""
    try:
        quota, period = (folder / "cpu.max").read_text().split()[:2]
        return None if quota == "max" or int(period) <= 0 or int(quota) <= 0 else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def _quota_v1(folder: Path) -> float | None:
    """``cpu.cfs_quota_us`` (−1: no limit) / ``cpu.cfs_period_us`` → CPUs, or None."""
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period


def cgroup_cpu_limit(root: Path | None = None, proc_cgroup: Path | None = None) -> float | None:
    """CPUs the process's cgroup quota allows (``docker run --cpus``, a Kubernetes CPU limit), as the
    smallest quota on its cgroup's path: ``cpu.max`` in cgroup v2, ``cpu.cfs_quota_us`` /
    ``cpu.cfs_period_us`` in v1 (the ``cpu`` or ``cpu,cpuacct`` mount). None when there is none
    or it cannot be read (not Linux). ``root`` / ``proc_cgroup`` default to ``CGROUP_ROOT`` / ``PROC_CGROUP``."""
    root = CGROUP_ROOT if root is None else root
    try:
        lines = (PROC_CGROUP if proc_cgroup is None else proc_cgroup).read_text().splitlines()
    except OSError:
        return None
    v1_path = v2_path = None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            v2_path = parts[2]
        elif "cpu" in parts[1].split(","):
            v1_path = parts[2]
    limits: list[float] = []
    if v2_path is not None and (root / "cgroup.controllers").is_file():  # unified hierarchy mounted at root
        limits = [q for d in _cgroup_dirs(root, v2_path) if (q := _quota_v2(d)) is not None]
    elif v1_path is not None:
        for name in ("cpu,cpuacct", "cpu"):
            if (root / name).is_dir():
                limits = [q for d in _cgroup_dirs(root / name, v1_path) if (q := _quota_v1(d)) is not None]
                break
    return min(limits) if limits else None


def usable_cores(cgroup_root: Path | None = None, proc_cgroup: Path | None = None) -> int:
    """The CPU cores this process may use: its CPU affinity (``taskset``, a container's
    ``--cpuset-cpus``) where the OS tells it, else the machine's count — and no more than its cgroup
    CPU quota allows (``--cpus 2``, a Kubernetes ``limits.cpu``), rounded down, at least 1: a
    quota of 2.5 CPUs plans for 2 cores, so the process is not throttled in every period."""
    try:
        cores = len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # no sched_getaffinity (macOS, Windows)
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_limit(cgroup_root, proc_cgroup)
    if quota is not None:
        cores = min(cores, max(1, math.floor(quota + 1e-9)))
    return cores


class Settings(BaseSettings):
    """Everything the service reads from its environment (``GANSERVE_CHECKPOINTS=...`` etc.)."""

    model_config = SettingsConfigDict(env_prefix="GANSERVE_", extra="ignore", frozen=True)

    checkpoints: Path = Field(default=Path("checkpoints"), description="folder holding one sub-folder per checkpoint")
    device: str = Field(default="auto", description="auto (cuda, else mps, else cpu) | cpu | cuda | cuda:N | mps")
    default_model: str = Field(default="mnist-cgan", description="model used when a request names none")

    # Micro-batching: concurrent requests for one model share one forward pass.
    max_batch: int = Field(default=0, ge=0, le=1024, description="most latents in one forward pass; 0: 32 on "
                           "the CPU (past ~24–48 rows a CPU pass gets slower per image), 64 on a GPU")
    max_wait_ms: float = Field(default=2.0, ge=0, le=1000, description="longest wait for more requests to join a batch")
    queue_size: int = Field(default=256, ge=1, description="requests waiting per model before 503 + Retry-After")
    request_timeout_s: float = Field(default=30.0, gt=0, description="per-request deadline for generation")
    inference_workers: int = Field(default=0, ge=0, le=64, description="concurrent forward passes per model; "
                                   "0: one per CPU core of the process (at most 4), 1 on a GPU")
    inference_threads: int = Field(default=0, ge=0, le=1024, description="torch threads of each forward pass on "
                                   "the CPU; 0: (cores of the process − 1) / workers, at least 1")
    cores: int = Field(default=0, ge=0, le=1024, description="CPU cores this process plans its workers for; 0: all "
                       "it may run on (python -m app sets cores / processes for each of its processes)")
    warmup_batch: int = Field(default=8, ge=1, le=1024, description="latents in the warm-up forward pass")

    # Limits of one request (besides n ≤ 64, frames ≤ 120, scale ≤ 8 of the HTTP contract).
    max_image_pixels: int = Field(default=4_194_304, ge=1, description="pixels of one PNG (a grid or a strip)")
    max_animation_pixels: int = Field(default=16_777_216, ge=1, description="pixels of all the frames of one GIF")

    # Images in (app/uploads.py, app/projection.py).
    max_upload_bytes: int = Field(default=10 * 1024 * 1024, ge=1, description="bytes of one uploaded image (the "
                                  "request body); more: 413, and the rest is not read")
    max_upload_pixels: int = Field(default=4096 * 4096, ge=1, le=MAX_IMAGE_PIXELS, description="pixels of one "
                                   "uploaded image, judged from its header before decoding; more: 413")
    projection_steps: int = Field(default=100, ge=1, le=MAX_PROJECTION_STEPS, description="Adam steps of one "
                                  "projection (POST /models/{model}/encode on a GAN generator)")
    projection_workers: int = Field(default=1, ge=1, le=16, description="projections computed side by side (each "
                                    "single-threaded), apart from the sampling workers")
    projection_queue: int = Field(default=4, ge=0, le=1024, description="projections waiting for a worker; more: "
                                  "503 + Retry-After")

    fast_path: bool = Field(default=True, description="answer plainly valid GET /generate, permalinks, "
                            "/interpolate and /healthz without FastAPI's per-request routing and validation "
                            "(app/fastpath.py)")

    reload_interval_s: float = Field(default=5.0, ge=0, description="seconds between checkpoint-folder rescans; 0: off")
    cache_size: int = Field(default=512, ge=0, description="encoded images of seeded requests kept in memory (LRU)")
    unversioned_max_age_s: int = Field(default=0, ge=0, le=60, description="how long a browser or proxy may keep a "
                                       "seeded image whose URL names no version= before asking again: 0: "
                                       "'public, no-cache' (revalidate every time, a 304 when unchanged); 1–60: "
                                       "'public, max-age=N'. URLs naming the loaded version are immutable")

    # Limits of the request itself (docs/security.md): larger requests get 414 / 431 before any route runs.
    max_url_bytes: int = Field(default=8192, ge=256, description="bytes of path + query string; more: 414")
    max_header_bytes: int = Field(default=8192, ge=1024, description="bytes of all request headers; more: 431")

    log_level: str = Field(default="INFO", description="DEBUG | INFO | WARNING | ERROR")
    enable_docs: bool = Field(default=True, description="serve /docs, /redoc and /openapi.json")
    enable_metrics: bool = Field(default=True, description="serve /metrics")
    metrics_token: SecretStr | None = Field(default=None, description="when set, /metrics needs "
                                                                      "'Authorization: Bearer <token>'")
    cors_origins: list[str] = Field(default_factory=list, description='JSON list, e.g. ["http://localhost:5173"]; '
                                                                      "empty: no CORS headers at all")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        v = v.strip().lower()
        if not DEVICE_PATTERN.match(v):
            raise ValueError(f"device must be auto, cpu, mps, cuda or cuda:N, got {v!r}")
        return v

    @field_validator("metrics_token")
    @classmethod
    def _token(cls, v: SecretStr | None) -> SecretStr | None:
        return v if v is not None and v.get_secret_value().strip() else None

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, v: list[str]) -> list[str]:
        for origin in v:
            if origin == "*" or not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:\d{1,5})?", origin):
                raise ValueError(f"cors_origins: each origin is scheme://host[:port] (no wildcard), got {origin!r}")
        return v

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        v = v.strip().upper()
        if v not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError(f"log_level must be DEBUG, INFO, WARNING or ERROR, got {v!r}")
        return v

    @property
    def unversioned_cache_control(self) -> str:
        """``Cache-Control`` of a seeded image whose URL names no version (see "Caching and versions")."""
        return f"public, max-age={self.unversioned_max_age_s}" if self.unversioned_max_age_s else "public, no-cache"


# GANSERVE_* variables that are not service settings but are read elsewhere, so never reported.
OTHER_VARIABLES = frozenset({
    "GANSERVE_EVALUATORS",  # the trainer's evaluator folder (training/evaluation)
    "GANSERVE_CACHE",  # the datasets' download and decode cache (training/data.py), not GANSERVE_CACHE_SIZE
    "GANSERVE_PORT",  # the published port in docker-compose.yml
    "GANSERVE_POD_PROCESSES", "GANSERVE_POD_READY_DIR",  # set by python -m app for its processes (app/podready.py)
    "GANSERVE_CHROMIUM", "GANSERVE_SOAK_REQUESTS", "GANSERVE_KILL_SEED",  # the test suite's knobs
})


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[tuple[str, str | None]]:
    """The ``GANSERVE_*`` variables of ``environ`` (default: this process's) that no setting reads,
    each with the closest known name when one is close (a typo), else None. Names are compared
    without regard to case, as the settings read them."""
    env = os.environ if environ is None else environ
    settings = sorted(name.upper() for name in Settings.model_fields)  # compared without the prefix
    known = {f"GANSERVE_{name}" for name in settings} | OTHER_VARIABLES
    unknown = []
    for var in sorted(env):
        name = var.upper()
        if name.startswith("GANSERVE_") and name not in known:
            close = difflib.get_close_matches(name.removeprefix("GANSERVE_"), settings, n=1, cutoff=0.75)
            unknown.append((var, f"GANSERVE_{close[0]}" if close else None))
    return unknown


def warn_unknown_variables(logger: logging.Logger, environ: Mapping[str, str] | None = None) -> None:
    """Log a warning for each ``GANSERVE_*`` variable that is ignored (see ``unknown_variables``)."""
    for var, guess in unknown_variables(environ):
        hint = f"did you mean {guess}?" if guess else "the settings are listed in app/settings.py"
        logger.warning("%s is not a ganserve setting and is ignored; %s", var, hint)
