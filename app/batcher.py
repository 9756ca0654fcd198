"""Per-model micro-batcher: concurrent requests share one forward pass, off the event loop.

A request is a block of latents (a grid of n seeds, or the frames of an animation) with
their labels. The batcher's consumer task takes every request that is waiting and runs the
concatenated block through the generator under ``torch.inference_mode()`` in one of the
model's worker threads; requests that queue meanwhile make the next batch. With several
workers (on the CPU one per core by default, each pass single-threaded) the next batch
starts as soon as a worker is free, so the event loop (HTTP) and the forward passes share
the cores without OpenMP barriers. Only when a request arrives at an empty queue in the
middle of a burst does the consumer wait for company — at most ``max_wait_ms`` — and a lone
request runs at once.

The worker also encodes each request's images (``generate(..., encode=...)``) right after
the batch, so the event loop hands off one batch per forward pass instead of one job per
request. Tensors stay on the device until one ``uint8`` copy per batch. Eval-mode networks
are batch-independent, so an image made alone or inside a batch is the same image (within
float rounding: ≤ 1 grey level)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from app.metrics import Metrics
from training.images import to_uint8
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


Latents = torch.Tensor | SeededLatents  # (k, z_dim) float32 on the CPU, or how to draw them


@dataclass(eq=False)  # identity: jobs live in sets
class Job:
    z: Latents
    labels: torch.Tensor | None  # (k,) int64, (k, K) float32 soft labels, or None
    deadline: float  # time.monotonic() after which nobody waits for the result
    future: asyncio.Future[Any] = field(repr=False)
    in_burst: bool = False  # another request arrived shortly before this one: worth waiting for more
    encode: Encoder | None = None  # run in the worker thread on this job's images

    @property
    def rows(self) -> int:
        return self.z.rows if isinstance(self.z, SeededLatents) else int(self.z.shape[0])

    def latents(self) -> torch.Tensor:
        return self.z() if isinstance(self.z, SeededLatents) else self.z


def _merge_labels(jobs: list[Job], num_classes: int) -> torch.Tensor | None:
    """Concatenate the jobs' labels; hard labels become one-hot rows when any job is soft."""
    if num_classes == 0:
        return None
    parts = [j.labels for j in jobs]
    if any(p is None for p in parts):
        raise ValueError("a conditional model got a request without labels")
    tensors = [p for p in parts if p is not None]
    if all(t.dim() == 1 for t in tensors):
        return torch.cat(tensors)
    soft = [
        t if t.dim() == 2 else torch.nn.functional.one_hot(t.long(), num_classes).float() for t in tensors
    ]
    return torch.cat(soft)


def forward_uint8(
    generator: nn.Module, z: torch.Tensor, labels: torch.Tensor | None, device: torch.device, max_batch: int
) -> np.ndarray:
    """Run (B, z_dim) CPU latents through the generator in chunks of ``max_batch`` → (B, H, W, C) uint8."""
    out: list[np.ndarray] = []
    with torch.inference_mode():
        for start in range(0, z.shape[0], max_batch):
            zc = z[start : start + max_batch].to(device)
            lc = None if labels is None else labels[start : start + max_batch].to(device)
            out.append(to_uint8(generator(zc, lc)))
    return np.concatenate(out)


class _ConvTransposeOn1x1(nn.Module):
    """A ConvTranspose2d that, on a 1×1 input (the first layer of a DCGAN generator: z as a
    (B, z, 1, 1) map), runs as the one matrix product it is: (B, Cin) @ (Cin, Cout·kH·kW).

    The same GEMM the convolution runs inside, without its col2im pass and the setup around it:
    4× faster for the shipped 28×28 generator (~0.45 → ~0.1 ms at batch 2, ~1.9 → ~0.55 ms at
    batch 64 on one CPU thread), bit-identical output. Any other input goes to the convolution.
    """

    def __init__(self, conv: nn.ConvTranspose2d) -> None:
        super().__init__()
        self.conv = conv
        self.plain = (conv.stride == (1, 1) and conv.padding == (0, 0) and conv.output_padding == (0, 0)
                      and conv.dilation == (1, 1) and conv.groups == 1)
        self._matrix: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.plain and x.dim() == 4 and x.shape[2] == 1 and x.shape[3] == 1):
            return self.conv(x)
        w = self.conv.weight  # (Cin, Cout, kH, kW)
        if self._matrix is None or self._matrix.device != w.device or self._matrix.dtype != w.dtype:
            self._matrix = w.detach().reshape(w.shape[0], -1).contiguous()  # (Cin, Cout·kH·kW)
        y = (x.flatten(1) @ self._matrix).view(x.shape[0], w.shape[1], w.shape[2], w.shape[3])
        if self.conv.bias is not None:
            y = y + self.conv.bias.view(1, -1, 1, 1)
        return y


def prepare_for_inference(generator: nn.Module) -> nn.Module:
    """A copy of an eval-mode generator with the serving-only rewrites (``_ConvTransposeOn1x1``);
    the loaded module itself is left as it is."""
    fast = copy.deepcopy(generator).eval()
    for parent in list(fast.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.ConvTranspose2d):
                setattr(parent, name, _ConvTransposeOn1x1(child))
    return fast


def inference_workers(device: torch.device) -> int:
    """Worker threads (concurrent forward passes) of a model: on the CPU one per core, at most 4;
    on an accelerator 1 (the device runs one batch at a time anyway)."""
    if device.type != "cpu":
        return 1
    return max(1, min(4, os.cpu_count() or 1))


def inference_threads(device: torch.device, workers: int = 1) -> int | None:
    """Intra-op torch threads of each worker on the CPU: the cores but one (the event loop's) shared
    among the workers, at least 1 — on 2 cores, 2 workers × 1 thread. Single-threaded forward passes
    side by side use both cores without OpenMP barriers: with 2 threads per pass, a pass waits at
    every barrier for whichever thread the event loop (or anything else) preempted, and runs several
    times slower (docs/performance.md). None on accelerators, where the device does the work."""
    if device.type != "cpu":
        return None
    return max(1, ((os.cpu_count() or 1) - 1) // max(1, workers))


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(DeadlinePassed())


class Batcher:
    """The queue and consumer task of one loaded model."""

    def __init__(
        self,
        name: str,
        generator: nn.Module,
        device: torch.device,
        num_classes: int,
        *,
        max_batch: int,
        max_wait_ms: float,
        queue_size: int,
        metrics: Metrics,
        forward: Callable[..., np.ndarray] = forward_uint8,
        threads: int | None = -1,  # torch threads of each worker; -1: inference_threads(device); None: as is
        workers: int = 0,  # concurrent forward passes (worker threads); 0: inference_workers(device)
    ) -> None:
        self.name = name
        self.generator = prepare_for_inference(generator)
        self.device = device
        self.num_classes = num_classes
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.metrics = metrics
        self._forward = forward
        self._queue: asyncio.Queue[Job] = asyncio.Queue(maxsize=queue_size)
        self._closed = False
        self._busy = 0  # batches being computed
        self._inflight: set[Job] = set()
        self._batches: set[asyncio.Task[None]] = set()
        self._last_arrival = -1e9
        self._task: asyncio.Task[None] | None = None
        self._depth = metrics.queue_depth.labels(name)
        # Dedicated worker threads per model (they keep their torch thread setting): up to ``workers``
        # batches are computed side by side, each collected when a worker is free to take it.
        self.workers = workers or inference_workers(device)
        self.threads = inference_threads(device, self.workers) if threads == -1 else threads
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix=f"ganserve-{name}",
                                            initializer=self._init_worker)

    def _init_worker(self) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"batcher:{self.name}")

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    async def generate(self, z: Latents, labels: torch.Tensor | None, timeout: float,
                       encode: Encoder | None = None) -> Any:
        """Queue one request and wait for its (k, H, W, C) uint8 images, or for ``encode(images)``
        computed in the worker thread when ``encode`` is given.

        Raises QueueFull, BatcherClosed, DeadlinePassed (a TimeoutError) or GenerationFailed; an exception raised by
        ``encode`` reaches the caller as it is.
        """
        if self._closed:
            raise BatcherClosed(self.name)
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        job = Job(z, labels, now + timeout, loop.create_future(), in_burst=now - self._last_arrival <= self.max_wait,
                  encode=encode)
        self._last_arrival = now
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self.metrics.rejected.labels(self.name, "queue_full").inc()
            raise QueueFull(self.name) from None
        self._depth.set(self._queue.qsize())
        # One timer handle per request (cheaper than wait_for + shield). A cancelled caller (client gone)
        # cancels the job's future, and the consumer skips it.
        timer = loop.call_later(timeout, _expire, job.future)
        try:
            return await job.future
        except DeadlinePassed:
            self.metrics.rejected.labels(self.name, "deadline").inc()
            raise
        finally:
            timer.cancel()

    async def _collect(self) -> list[Job]:
        """The next batch: every waiting job (up to ``max_batch`` rows), without waiting when there
        was a backlog; when the queue was empty, the first job waits up to ``max_wait`` for company
        only if it came in a burst (another request arrived within ``max_wait`` before it).

        A lone request runs at once; under load, the requests that queued during the previous forward
        pass are the batch (waiting then would only leave the worker idle).
        """
        backlog = not self._queue.empty()
        jobs = [await self._queue.get()]
        rows = jobs[0].rows
        while rows < self.max_batch and not self._queue.empty():
            job = self._queue.get_nowait()
            jobs.append(job)
            rows += job.rows
        if backlog or len(jobs) > 1 or not jobs[0].in_burst:
            return jobs
        until = time.monotonic() + self.max_wait
        while rows < self.max_batch:
            try:
                job = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = until - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            jobs.append(job)
            rows += job.rows
        return jobs

    async def _run(self) -> None:
        free = asyncio.Semaphore(self.workers)
        while True:
            await free.acquire()  # a batch is collected only when a worker can start it at once
            try:
                jobs = await self._collect()
            except BaseException:
                free.release()
                raise
            self._depth.set(self._queue.qsize())
            now = time.monotonic()
            live = [j for j in jobs if not j.future.done() and j.deadline > now]
            if not live:
                free.release()
                continue
            self._busy += 1
            self._inflight.update(live)
            task = asyncio.get_running_loop().create_task(self._batch(live, free))
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)

    async def _batch(self, jobs: list[Job], free: asyncio.Semaphore) -> None:
        try:
            await self._run_batch(jobs)
        finally:
            self._busy -= 1
            self._inflight.difference_update(jobs)
            free.release()

    def _work(self, jobs: list[Job]) -> tuple[list[tuple[bool, Any]], float]:
        """In the worker thread: one forward pass for all the jobs, then each job's encode.

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

    async def _run_batch(self, jobs: list[Job]) -> None:
        try:
            loop = asyncio.get_running_loop()
            results, seconds = await loop.run_in_executor(self._executor, self._work, jobs)
        except Exception as e:  # the forward pass failed: every waiting request gets a clean 503
            log.exception("model %s: forward pass of %d request(s) failed", self.name, len(jobs))
            for j in jobs:
                if not j.future.done():
                    j.future.set_exception(GenerationFailed(f"{type(e).__name__}"))
            return
        self.metrics.forward_seconds.labels(self.name).observe(seconds)
        self.metrics.batch_size.labels(self.name).observe(sum(j.rows for j in jobs))
        self.metrics.batch_requests.labels(self.name).observe(len(jobs))
        for j, (ok, value) in zip(jobs, results, strict=True):
            if j.future.done():
                continue
            if ok:
                j.future.set_result(value)
            else:
                j.future.set_exception(value)

    async def close(self, grace: float = 10.0) -> None:
        """Stop taking requests, let the queued ones finish (up to ``grace`` s), then stop."""
        self._closed = True
        until = time.monotonic() + grace
        while (self._queue.qsize() or self._busy) and time.monotonic() < until:
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        leftovers = list(self._inflight)
        while not self._queue.empty():
            leftovers.append(self._queue.get_nowait())
        for job in leftovers:
            if not job.future.done():
                job.future.set_exception(BatcherClosed(self.name))
        self._executor.shutdown(wait=False)
        self.metrics.forget_model(self.name)
