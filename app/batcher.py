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
module runs its matrix products at one fixed shape (``prepare_for_inference``), and the registry
checks each model at load (``app.forward.batch_invariant``)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from app.metrics import Metrics
from app.settings import usable_cores
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
# A request's labels: (k,) int64, (k, K) float32 soft labels, or one class index for all its k rows —
# turned into a tensor in the worker thread (a torch call on the event loop hands the interpreter
# lock to a busy worker and waits to get it back).
Labels = torch.Tensor | int | None


@dataclass(eq=False)  # identity: jobs live in sets
class Job:
    z: Latents
    labels: Labels  # (k,) int64, (k, K) float32 soft labels, one class index for all k rows, or None
    deadline: float  # time.monotonic() after which nobody waits for the result
    future: asyncio.Future[Any] = field(repr=False)
    in_burst: bool = False  # other requests were in the batcher when this one came: worth waiting for more
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


PRODUCT_ROWS = 16  # rows of every matrix product the served generator runs (see ``prepare_for_inference``)


def fixed_rows(x: torch.Tensor, product: Callable[[torch.Tensor], torch.Tensor],
               rows: int = PRODUCT_ROWS) -> torch.Tensor:
    """``product`` (a row-wise matrix product) of the (B, K) ``x``, always called on exactly ``rows``
    rows: ``x`` is cut into blocks of ``rows``, the last one padded with zero rows, and the padding is
    dropped from the result.

    A BLAS may pick its kernel, blocking and summation order by the number of rows (MKL does: on
    an AMD EPYC a row's float32 result changes between 2- or 3-row calls and larger ones, whatever
    ``MKL_CBWR`` says). A call of one fixed shape runs one code path, so a row's result is the same
    however many rows its request was batched with (measured on every position of the block and
    the shipped layers' shapes; ``app.forward.batch_invariant`` checks each model at load)."""
    b = x.shape[0]
    pad = -b % rows
    if pad:
        x = torch.cat([x, x.new_zeros((pad, *x.shape[1:]))])
    if x.shape[0] == rows:
        return product(x)[:b]
    return torch.cat([product(x[i : i + rows]) for i in range(0, x.shape[0], rows)])[:b]


class _ConvTransposeOn1x1(nn.Module):
    """A ConvTranspose2d that, on a 1×1 input (the first layer of a DCGAN generator: z as a
    (B, z, 1, 1) map), runs as the one matrix product it is: (B, Cin) @ (Cin, Cout·kH·kW), in
    blocks of ``PRODUCT_ROWS`` rows (``fixed_rows``).

    The same GEMM the convolution runs inside, without its col2im pass and the setup around it:
    4× faster for the shipped 28×28 generator (~0.45 → ~0.1 ms at batch 2, ~1.9 → ~0.55 ms at
    batch 64 on one CPU thread, before the fixed-shape blocks), the same output up to float rounding.
    Any other input goes to the convolution.
    """

    def __init__(self, conv: nn.ConvTranspose2d, exact: bool = False) -> None:
        super().__init__()
        self.conv, self.exact = conv, exact
        self.plain = (conv.stride == (1, 1) and conv.padding == (0, 0) and conv.output_padding == (0, 0)
                      and conv.dilation == (1, 1) and conv.groups == 1)
        self._matrix: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.plain and x.dim() == 4 and x.shape[2] == 1 and x.shape[3] == 1):
            return self.conv(x)
        w = self.conv.weight  # (Cin, Cout, kH, kW)
        dtype = torch.float64 if self.exact else w.dtype
        if self._matrix is None or self._matrix.device != w.device or self._matrix.dtype != dtype:
            self._matrix = w.detach().reshape(w.shape[0], -1).to(dtype).contiguous()  # (Cin, Cout·kH·kW)
        matrix = self._matrix
        y = fixed_rows(x.flatten(1).to(dtype), lambda rows: rows @ matrix)
        y = y.view(x.shape[0], w.shape[1], w.shape[2], w.shape[3])
        if self.conv.bias is not None:
            y = y + self.conv.bias.to(dtype).view(1, -1, 1, 1)
        return y.to(x.dtype)


class _FixedRowsLinear(nn.Module):
    """A Linear run in blocks of ``PRODUCT_ROWS`` rows (``fixed_rows``); with ``exact``, its product
    is taken in float64 and rounded to the input's dtype once (``prepare_for_inference``)."""

    def __init__(self, linear: nn.Linear, exact: bool = False) -> None:
        super().__init__()
        self.linear, self.exact = linear, exact

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w: torch.Tensor = self.linear.weight
        b: torch.Tensor | None = self.linear.bias
        if self.exact:
            w, b = w.double(), None if b is None else b.double()
        flat = x.reshape(-1, x.shape[-1]).to(w.dtype)
        y = fixed_rows(flat, lambda rows: nn.functional.linear(rows, w, b))
        return y.reshape(*x.shape[:-1], y.shape[-1]).to(x.dtype)


def prepare_for_inference(generator: nn.Module, exact: bool = False) -> nn.Module:
    """A copy of an eval-mode generator with the serving-only rewrites; the loaded module itself is
    left as it is.

    Every matrix product — each Linear and the 1×1 transposed conv (``_ConvTransposeOn1x1``) — is
    called on blocks of exactly ``PRODUCT_ROWS`` rows (``fixed_rows``), so that a latent's image
    does not depend on how many requests it was batched with. Cost on one CPU thread, the shipped
    MLP (``mnist-gan``): a 2-row pass ~0.3 → ~0.9 ms, a 32-row pass ~1.35 → ~1.7 ms (one-off
    measurement); docs/performance.md has the bench's numbers.

    ``exact``: those products are taken in float64 and rounded to float32 once — the fallback the
    registry tries for a model whose float32 pass still fails its load-time check (in float64 a
    product's rounding is ~10⁹ times finer than the float32 result's, so a kernel whose result
    depended on the block's position would still almost never change a float32 bit). It costs
    the first layer about twice its time; convolutions are left alone (oneDNN's are
    batch-invariant here)."""
    fast = copy.deepcopy(generator).eval()
    for parent in list(fast.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.ConvTranspose2d):
                setattr(parent, name, _ConvTransposeOn1x1(child, exact))
            elif isinstance(child, nn.Linear):
                setattr(parent, name, _FixedRowsLinear(child, exact))
    return fast


def inference_workers(device: torch.device, cores: int = 0) -> int:
    """Worker threads (concurrent forward passes) of a model: on the CPU one per core this process
    may use (``cores``; 0: all it may run on), at most 4; on an accelerator 1 (the device runs one
    batch at a time anyway)."""
    if device.type != "cpu":
        return 1
    return max(1, min(4, cores or usable_cores()))


def default_max_batch(device: torch.device) -> int:
    """Rows of one forward pass when ``GANSERVE_MAX_BATCH`` is 0: 32 on the CPU, 64 on accelerators.

    On the CPU a larger pass is not cheaper per image once its activations outgrow the caches:
    two single-threaded passes side by side of the shipped 28×28 generator do ~11.7k images/s at
    16–24 rows and ~9.4k at 64, the 64×64 RGB one ~980 at 48 and ~410 at 64 (one-off measurement
    with ``bench.serving.forward_rate``; docs/performance.md has the bench's own table). On a GPU
    larger passes keep paying off; 64 is the old default, not measured here.
    """
    return 32 if device.type == "cpu" else 64


def inference_threads(device: torch.device, workers: int = 1, cores: int = 0) -> int | None:
    """Intra-op torch threads of each worker on the CPU: the process's cores (``cores``; 0: all it
    may run on) but one (the event loop's) shared among the workers, at least 1 — on 2 cores,
    2 workers × 1 thread. Single-threaded forward passes side by side use the cores without OpenMP
    barriers: with 2 threads per pass, a pass waits at every barrier for whichever thread the event
    loop (or anything else) preempted, and runs several times slower (docs/performance.md). None on
    accelerators, where the device does the work."""
    if device.type != "cpu":
        return None
    return max(1, ((cores or usable_cores()) - 1) // max(1, workers))


def worker_plan(device: torch.device, workers: int = 0, threads: int | None = -1,
                cores: int = 0) -> tuple[int, int | None]:
    """(worker threads, torch threads of each) of a model's batcher from its settings: ``workers``
    0 → ``inference_workers``; ``threads`` -1 → ``inference_threads``, None → left as it is. The
    registry uses it too, to run its load-time check as the workers will run."""
    w = workers or inference_workers(device, cores)
    return w, (inference_threads(device, w, cores) if threads == -1 else threads)


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
        exact: bool = False,  # float64 matrix products (prepare_for_inference), for batch-invariant bytes
    ) -> None:
        self.name = name
        self.generator = prepare_for_inference(generator, exact)
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

    @property
    def depth(self) -> int:
        return self._queue.qsize()

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
