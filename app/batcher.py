"""Per-model micro-batcher: concurrent requests share one forward pass, off the event loop.

A request is a block of latents (a grid of n seeds, or the frames of an animation) with
their labels. The batcher's consumer task takes the first waiting request, then keeps
taking more while they arrive — at most ``max_wait_ms`` and ``max_batch`` latents — and
runs the concatenated block through the generator in a worker thread under
``torch.inference_mode()``. Eval-mode networks are batch-independent, so an image made
alone or inside a batch is the same image (within float rounding: ≤ 1 grey level).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from app.metrics import Metrics
from training.images import to_uint8

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The model's queue is full: answer 503 with Retry-After."""


class BatcherClosed(Exception):
    """The model was unloaded or replaced while the request waited."""


class GenerationFailed(Exception):
    """The forward pass raised; the traceback is logged server-side."""


@dataclass
class Job:
    z: torch.Tensor  # (k, z_dim) float32 on the CPU
    labels: torch.Tensor | None  # (k,) int64, (k, K) float32 soft labels, or None
    deadline: float  # time.monotonic() after which nobody waits for the result
    future: asyncio.Future[np.ndarray] = field(repr=False)
    in_burst: bool = False  # another request arrived shortly before this one: worth waiting for more

    @property
    def rows(self) -> int:
        return int(self.z.shape[0])


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
    ) -> None:
        self.name = name
        self.generator = generator
        self.device = device
        self.num_classes = num_classes
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.metrics = metrics
        self._forward = forward
        self._queue: asyncio.Queue[Job] = asyncio.Queue(maxsize=queue_size)
        self._closed = False
        self._busy = False
        self._inflight: list[Job] = []
        self._last_arrival = -1e9
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"batcher:{self.name}")

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    async def generate(self, z: torch.Tensor, labels: torch.Tensor | None, timeout: float) -> np.ndarray:
        """Queue one request and wait for its (k, H, W, C) uint8 images.

        Raises QueueFull, BatcherClosed, TimeoutError or GenerationFailed.
        """
        if self._closed:
            raise BatcherClosed(self.name)
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        job = Job(z, labels, now + timeout, loop.create_future(), in_burst=now - self._last_arrival <= self.max_wait)
        self._last_arrival = now
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self.metrics.rejected.labels(self.name, "queue_full").inc()
            raise QueueFull(self.name) from None
        self.metrics.queue_depth.labels(self.name).set(self._queue.qsize())
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), timeout)
        except TimeoutError:
            self.metrics.rejected.labels(self.name, "deadline").inc()
            job.future.cancel()
            raise

    async def _collect(self) -> list[Job]:
        """The next batch: the first job, plus any that arrive within ``max_wait`` (up to max_batch rows).

        A request that came alone (none arrived within ``max_wait`` before it) runs at once:
        waiting pays only while requests are arriving.
        """
        jobs = [await self._queue.get()]
        rows = jobs[0].rows
        if not jobs[0].in_burst and self._queue.empty():
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
        while True:
            jobs = await self._collect()
            self.metrics.queue_depth.labels(self.name).set(self._queue.qsize())
            now = time.monotonic()
            live = [j for j in jobs if not j.future.done() and j.deadline > now]
            if not live:
                continue
            self._busy, self._inflight = True, live
            try:
                await self._run_batch(live)
            finally:
                self._busy, self._inflight = False, []

    async def _run_batch(self, jobs: list[Job]) -> None:
        try:
            z = torch.cat([j.z for j in jobs])
            labels = _merge_labels(jobs, self.num_classes)
            start = time.perf_counter()
            images = await asyncio.to_thread(self._forward, self.generator, z, labels, self.device, self.max_batch)
            self.metrics.forward_seconds.labels(self.name).observe(time.perf_counter() - start)
            self.metrics.batch_size.labels(self.name).observe(int(z.shape[0]))
            self.metrics.batch_requests.labels(self.name).observe(len(jobs))
        except Exception as e:  # the forward pass failed: every waiting request gets a clean 503
            log.exception("model %s: forward pass of %d request(s) failed", self.name, len(jobs))
            for j in jobs:
                if not j.future.done():
                    j.future.set_exception(GenerationFailed(f"{type(e).__name__}"))
            return
        offset = 0
        for j in jobs:
            if not j.future.done():
                j.future.set_result(images[offset : offset + j.rows])
            offset += j.rows

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
        self.metrics.forget_model(self.name)
