"""Per-model micro-batcher: concurrent requests share one forward pass, off the event loop.

A request is a block of latents (a grid of n seeds, or the frames of an animation) with
their labels. The event loop puts it in the model's queue; the model's worker threads take
every request that is waiting and run the concatenated block through the generator under
``torch.inference_mode()``; requests that queue meanwhile make the next batch. With several
workers (on the CPU one per core by default, each pass single-threaded) a free worker starts
the next batch at once, so the event loop (HTTP) and the forward passes share the cores
without OpenMP barriers, and the workers never wait for the busy event loop to hand them
work. Only when a request arrives at an empty queue in the middle of a burst (others still
being computed) does a worker wait for company — at most ``max_wait_ms`` — and a lone request
runs at once.

The worker also encodes each request's images (``generate(..., encode=...)``) right after
the batch and hands the event loop one callback per batch. Tensors stay on the device until
one ``uint8`` copy per batch. Eval-mode networks are batch-independent, so an image made
alone or inside a batch is the same image — to the bit where the kernels allow it: the served
module runs its matrix products at one fixed shape, and the registry checks that module at load
(``app.inference``) and hands it to the batcher as it is."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from app.inference import default_max_batch, forward_uint8, worker_plan
from app.metrics import Metrics
from training.latent import latents

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The model's queue is full: answer 503 with Retry-After."""


class BatcherClosed(Exception):
    """The model was unloaded or replaced while the request waited."""


class DeadlinePassed(TimeoutError):
    """The request's deadline passed before its images were ready."""


class GenerationFailed(Exception):
    """The forward pass raised; the traceback is logged server-side."""


Encoder = Callable[[np.ndarray], Any]  # (k, H, W, C) uint8 → the response body (PNG or GIF bytes)


class LatentSource(Protocol):
    """How to draw a request's (rows, z_dim) float32 CPU latents — called in the worker thread, so
    the event loop never runs the seed rule or any torch call."""

    @property
    def rows(self) -> int: ...

    def __call__(self) -> torch.Tensor: ...


@dataclass(frozen=True)
class SeededLatents:
    """The latents of seeds seed…seed+rows−1 (the seed rule, scaled by ``truncation``), drawn in the
    worker thread rather than on the event loop."""

    seed: int
    rows: int
    z_dim: int
    truncation: float = 1.0

    def __call__(self) -> torch.Tensor:
        return latents(range(self.seed, self.seed + self.rows), self.z_dim, self.truncation)


Latents = torch.Tensor | LatentSource  # (k, z_dim) float32 on the CPU, or how to draw them
# A request's labels: (k,) int64, (k, K) float32 soft labels, one class index for all its k rows, or
# how to make them (called in the worker thread) — turned into a tensor in the worker thread (a torch
# call on the event loop hands the interpreter lock to a busy worker and waits to get it back).
Labels = torch.Tensor | int | Callable[[], torch.Tensor] | None


@dataclass(eq=False)  # identity: jobs live in sets
class Job:
    z: Latents
    labels: Labels
    deadline: float  # time.monotonic() after which nobody waits for the result
    future: asyncio.Future[Any] = field(repr=False)
    in_burst: bool = False  # other requests were in the batcher when this one came: worth waiting for more
    encode: Encoder | None = None  # run in the worker thread on this job's images

    @property
    def rows(self) -> int:
        return int(self.z.shape[0]) if isinstance(self.z, torch.Tensor) else self.z.rows

    def latents(self) -> torch.Tensor:
        return self.z if isinstance(self.z, torch.Tensor) else self.z()


def _merge_labels(jobs: list[Job], num_classes: int) -> torch.Tensor | None:
    """Concatenate the jobs' labels; hard labels become one-hot rows when any job is soft."""
    if num_classes == 0:
        return None
    parts = [j.labels() if callable(j.labels) else j.labels for j in jobs]
    if any(p is None for p in parts):
        raise ValueError("a conditional model got a request without labels")
    hard = [p for p in parts if isinstance(p, int)]
    if len(hard) == len(parts):  # the usual batch: one class index per request
        return torch.tensor([c for c, j in zip(hard, jobs, strict=True) for _ in range(j.rows)], dtype=torch.long)
    tensors = [torch.full((j.rows,), p, dtype=torch.long) if isinstance(p, int) else p
               for j, p in zip(jobs, parts, strict=True) if p is not None]
    if all(t.dim() == 1 for t in tensors):
        return torch.cat(tensors)
    soft = [
        t if t.dim() == 2 else torch.nn.functional.one_hot(t.long(), num_classes).float() for t in tensors
    ]
    return torch.cat(soft)


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(DeadlinePassed())


class Batcher:
    """The queue and worker threads of one loaded model.

    The event loop only queues jobs and, once per batch, hands the results to the waiting
    requests; the worker threads take their batches from the queue themselves. A worker that
    finishes a batch starts the next one at once, without waiting for the event loop — which
    under load is busy parsing and answering requests, and would otherwise leave the cores idle
    between batches.
    """

    def __init__(
        self,
        name: str,
        generator: nn.Module,
        device: torch.device,
        num_classes: int,
        *,
        max_batch: int,  # 0: default_max_batch(device)
        max_wait_ms: float,
        queue_size: int,
        metrics: Metrics,
        forward: Callable[..., np.ndarray] = forward_uint8,
        threads: int | None = -1,  # torch threads of each worker; -1: inference_threads(device); None: as is
        workers: int = 0,  # concurrent forward passes (worker threads); 0: inference_workers(device, cores)
        cores: int = 0,  # CPU cores this process plans for; 0: all it may run on
    ) -> None:
        self.name = name
        self.generator = generator  # run as it is: the registry prepared and checked it (app.inference)
        self.device = device
        self.num_classes = num_classes
        self.max_batch = max_batch or default_max_batch(device)
        self.max_wait = max_wait_ms / 1000.0
        self.queue_size = queue_size
        self.metrics = metrics
        self._forward = forward
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()  # None: a worker's signal to stop
        self._closed = False
        self._lock = threading.Lock()  # guards _inflight (jobs in a worker's hands)
        self._inflight: set[Job] = set()
        self._pending = 0  # requests between generate() and their answer (event-loop thread only)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: list[threading.Thread] = []
        self._depth = metrics.queue_depth.labels(name)
        # Up to ``workers`` batches are computed side by side, each in its own thread with its own
        # torch thread setting.
        self.workers, self.threads = worker_plan(device, workers, threads, cores)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for i in range(self.workers):
            t = threading.Thread(target=self._worker, name=f"ganserve-{self.name}_{i}", daemon=True)
            t.start()
            self._threads.append(t)

    async def generate(self, z: Latents, labels: Labels, timeout: float,
                       encode: Encoder | None = None) -> Any:
        """Queue one request and wait for its (k, H, W, C) uint8 images, or for ``encode(images)``
        computed in the worker thread when ``encode`` is given.

        Raises QueueFull, BatcherClosed, DeadlinePassed (a TimeoutError) or GenerationFailed; an exception raised by
        ``encode`` reaches the caller as it is.
        """
        if self._closed:
            raise BatcherClosed(self.name)
        if self._queue.qsize() >= self.queue_size:
            self.metrics.rejected.labels(self.name, "queue_full").inc()
            raise QueueFull(self.name)
        loop = asyncio.get_running_loop()
        job = Job(z, labels, time.monotonic() + timeout, loop.create_future(), in_burst=self._pending > 0,
                  encode=encode)
        self._queue.put(job)
        self._pending += 1
        self._depth.set(self._queue.qsize())
        # One timer handle per request (cheaper than wait_for + shield). A cancelled caller (client gone)
        # cancels the job's future, and the worker skips it.
        timer = loop.call_later(timeout, _expire, job.future)
        try:
            return await job.future
        except DeadlinePassed:
            self.metrics.rejected.labels(self.name, "deadline").inc()
            raise
        finally:
            self._pending -= 1
            timer.cancel()

    # -- worker threads ---------------------------------------------------------------------------

    def _worker(self) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)
        while True:
            jobs = self._collect()
            if jobs is None:
                return
            now = time.monotonic()
            live = [j for j in jobs if not j.future.done() and j.deadline > now]
            if not live:
                continue
            with self._lock:
                self._inflight.update(live)
            try:
                self._run_batch(live)
            except Exception:  # never let a worker die (the model would stop answering): fail this batch
                log.exception("model %s: worker error on a batch of %d request(s)", self.name, len(live))
                self._hand_over(live, [(False, GenerationFailed("WorkerError")) for _ in live])
            finally:
                with self._lock:
                    self._inflight.difference_update(live)

    def _collect(self) -> list[Job] | None:
        """The next batch: every waiting job (up to ``max_batch`` rows), without waiting when there
        was a backlog; when the queue was empty, the first job waits up to ``max_wait`` for company
        only if it came in a burst (other requests were queued or being computed when it arrived).
        None: stop.

        A lone request runs at once — and so does each request of a client that sends one after
        the other, however quickly: nobody else is coming. Under load, the requests that queued
        during the previous forward pass are the batch (waiting then would only leave the worker idle).
        """
        backlog = not self._queue.empty()
        first = self._queue.get()
        if first is None:
            return None
        jobs, rows = [first], first.rows
        wait = not backlog and first.in_burst
        until = time.monotonic() + self.max_wait
        while rows < self.max_batch:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                remaining = until - time.monotonic()
                if not wait or len(jobs) > 1 or remaining <= 0:
                    break
                try:
                    job = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if job is None:  # stopping: leave the signal for this worker's next turn
                self._queue.put(None)
                break
            jobs.append(job)
            rows += job.rows
        self._depth.set(self._queue.qsize())
        return jobs

    def _work(self, jobs: list[Job]) -> tuple[list[tuple[bool, Any]], float]:
        """One forward pass for all the jobs, then each job's encode.

        → ((ok, value) per job, forward seconds); a failing forward pass raises, a failing encode
        fails its own job only.
        """
        z = torch.cat([j.latents() for j in jobs]) if len(jobs) > 1 else jobs[0].latents()
        labels = _merge_labels(jobs, self.num_classes)
        start = time.perf_counter()
        images = self._forward(self.generator, z, labels, self.device, self.max_batch)
        seconds = time.perf_counter() - start
        results: list[tuple[bool, Any]] = []
        offset = 0
        for j in jobs:
            mine = images[offset : offset + j.rows]
            offset += j.rows
            if j.encode is None:
                results.append((True, mine))
                continue
            try:
                results.append((True, j.encode(mine)))
            except Exception as e:  # this request's encoding failed: its route answers (and logs) it
                results.append((False, e))
        return results, seconds

    def _run_batch(self, jobs: list[Job]) -> None:
        try:
            results, seconds = self._work(jobs)
        except Exception as e:  # the forward pass failed: every waiting request gets a clean 503
            log.exception("model %s: forward pass of %d request(s) failed", self.name, len(jobs))
            results, seconds = [(False, GenerationFailed(type(e).__name__)) for _ in jobs], -1.0
        self.metrics.batch_size.labels(self.name).observe(sum(j.rows for j in jobs))
        self.metrics.batch_requests.labels(self.name).observe(len(jobs))
        if seconds >= 0:
            self.metrics.forward_seconds.labels(self.name).observe(seconds)
        self._hand_over(jobs, results)

    def _hand_over(self, jobs: list[Job], results: list[tuple[bool, Any]]) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            self._loop.call_soon_threadsafe(_deliver, jobs, results)

    async def close(self, grace: float = 10.0) -> None:
        """Stop taking requests, let the queued ones finish (up to ``grace`` s), then stop."""
        self._closed = True
        until = time.monotonic() + grace
        while (self._queue.qsize() or self._inflight) and time.monotonic() < until:
            await asyncio.sleep(0.01)
        leftovers: list[Job] = []
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                leftovers.append(job)
        for _ in self._threads:
            self._queue.put(None)
        with self._lock:
            leftovers.extend(self._inflight)
        for job in leftovers:
            if not job.future.done():
                job.future.set_exception(BatcherClosed(self.name))
        self.metrics.forget_model(self.name)


def _deliver(jobs: list[Job], results: list[tuple[bool, Any]]) -> None:
    """On the event loop: the results of one batch to the requests still waiting for them."""
    for j, (ok, value) in zip(jobs, results, strict=True):
        if j.future.done():
            continue
        if ok:
            j.future.set_result(value)
        else:
            j.future.set_exception(value)
