"""Prometheus metrics, in a CollectorRegistry of each app's own (tests build many apps).

Besides the service's own metrics, ``/metrics`` carries prometheus_client's process metrics
(``process_resident_memory_bytes``, ``process_cpu_seconds_total``, ``process_open_fds``, …), the
garbage collector's (``python_gc_*``) and ``python_info``. With several processes
(``PROMETHEUS_MULTIPROC_DIR``) the process metrics of every living process are given, each with
a ``pid`` label; the collector's are not (they can only be read inside a process).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Metric,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    multiprocess,
)
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
MAX_LABEL_SETS = 4096  # cached label children of the request metrics (the label values are bounded anyway)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """The service's metrics; ``model`` labels hold registry names only (bounded)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("ganserve_requests_total", "HTTP requests answered",
                                ["route", "method", "status", "model"], registry=r)
        self.latency = Histogram("ganserve_request_seconds", "HTTP request latency",
                                 ["route", "model"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("ganserve_batch_size", "latents per forward pass",
                                    ["model"], buckets=BATCH_BUCKETS, registry=r)
        self.batch_requests = Histogram("ganserve_batch_requests", "requests coalesced into one forward pass",
                                        ["model"], buckets=BATCH_BUCKETS, registry=r)
        self.forward_seconds = Histogram("ganserve_forward_seconds", "time of one batched forward pass",
                                         ["model"], buckets=LATENCY_BUCKETS, registry=r)
        # With several processes (python -m app --processes N) gauges add up over the living ones.
        self.queue_depth = Gauge("ganserve_queue_depth", "requests waiting for a forward pass",
                                 ["model"], registry=r, multiprocess_mode="livesum")
        self.rejected = Counter("ganserve_rejected_total", "generation requests refused (queue full, deadline)",
                                ["model", "reason"], registry=r)
        self.cache = Counter("ganserve_cache_total", "encoded-image cache lookups", ["result"], registry=r)
        self.models_loaded = Gauge("ganserve_models_loaded", "checkpoints being served", registry=r,
                                   multiprocess_mode="livemax")
        self.models_refused = Gauge("ganserve_models_refused", "checkpoint entries refused", registry=r,
                                    multiprocess_mode="livemax")
        self.reloads = Counter("ganserve_reloads_total", "checkpoint (re)loads by outcome", ["outcome"], registry=r)
        self.model_info = Gauge("ganserve_model_info", "1 for each model being served: its version (the weights' "
                                "sha256, 12 digits) and family", ["model", "version", "family"], registry=r,
                                multiprocess_mode="livemax")
        self._model_info_labels: set[tuple[str, str, str]] = set()
        if multiprocess_dir() is None:
            ProcessCollector(registry=r)
            GCCollector(registry=r)
        PlatformCollector(registry=r)

    def set_models(self, models: Iterable[tuple[str, str, str]]) -> None:
        """``ganserve_model_info``: 1 for each (model, version, family) served now, gone (or 0 with
        several processes, where labels cannot be removed) for those no longer served."""
        now = set(models)
        for labels in self._model_info_labels - now:
            if multiprocess_dir() is not None:
                self.model_info.labels(*labels).set(0)
            else:
                with contextlib.suppress(KeyError):
                    self.model_info.remove(*labels)
        for labels in now:
            self.model_info.labels(*labels).set(1)
        self._model_info_labels = now

    def forget_model(self, model: str) -> None:
        """Drop the per-model gauges of a model that left the registry."""
        if multiprocess_dir() is not None:  # prometheus_client cannot remove labels there: zero it
            self.queue_depth.labels(model).set(0)
            return
        with contextlib.suppress(KeyError):
            self.queue_depth.remove(model)

    def render(self) -> bytes:
        """The text format; with several processes (``PROMETHEUS_MULTIPROC_DIR``) the sum over all of them."""
        if multiprocess_dir() is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)
        merged.register(LiveProcessesCollector(Path(multiprocess_dir() or ".")))
        PlatformCollector(registry=merged)
        return generate_latest(merged)


class LiveProcessesCollector(Collector):
    """The process metrics (memory, CPU, open files, …) of every living process of a multiprocess
    service, each sample labelled with its ``pid``. The living processes are those whose live-gauge
    files are still in the metrics folder (``mark_process_dead`` removes them) and that the OS knows."""

    FILE = re.compile(r"gauge_live\w+?_(\d+)\.db")

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def pids(self) -> list[int]:
        found = {int(m.group(1)) for f in self.folder.glob("gauge_live*_*.db") if (m := self.FILE.fullmatch(f.name))}
        return sorted(pid for pid in found if Path(f"/proc/{pid}").exists())

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for pid in self.pids():
            for family in ProcessCollector(pid=functools.partial(int, pid), registry=None).collect():
                out = families.get(family.name)
                if out is None:
                    out = families[family.name] = Metric(family.name, family.documentation, family.type)
                for sample in family.samples:
                    out.add_sample(sample.name, {**sample.labels, "pid": str(pid)}, sample.value)
        yield from families.values()


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def process_exiting() -> None:
    """Drop this process's live gauges from the shared metrics (several processes only)."""
    if multiprocess_dir() is not None:
        multiprocess.mark_process_dead(os.getpid())


class MetricsMiddleware:
    """Counts every HTTP request by route template, status and model (pure ASGI, no body buffering)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        # Label children resolved once per label set (``labels()`` validates and locks on every call).
        self._children: dict[tuple[str, str, str, str], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 0

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = _route_template(scope)
            state: dict[str, Any] = scope.get("state") or {}
            key = (route, str(scope.get("method", "")), str(status or 500), str(state.get("metrics_model", "")))
            children = self._children.get(key)
            if children is None:
                children = (self.metrics.requests.labels(*key), self.metrics.latency.labels(key[0], key[3]))
                if len(self._children) < MAX_LABEL_SETS:
                    self._children[key] = children
            children[0].inc()
            children[1].observe(time.perf_counter() - start)


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"
