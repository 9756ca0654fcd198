"""How a loaded generator is prepared and run for serving: one module, the one the registry checks
at load and the batcher serves.

* **Fixed-row products** (``prepare_for_inference``): every matrix product of the served copy —
  each Linear and the 1×1 transposed conv of a DCGAN generator — runs on blocks of exactly
  ``PRODUCT_ROWS`` rows (``fixed_rows``), so a latent's image does not depend on how many
  requests it was batched with; ``exact`` takes those products in float64.
* **The batch-invariance check** (``batch_invariant``, ``prepare_checked``): run at load on the
  prepared module with the workers' torch threads; a module that fails with float32 products is
  tried with float64 ones (CPU), and one that fails both is served with weak ETags.
* **The guarded forward** (``guarded_forward``, ``make_forward``): what every batch runs —
  non-finite output raises ``NonFiniteOutput``, a device out-of-memory error
  ``DeviceOutOfMemory``; no chunk is ever a single row (a 1-row product is a gemv, which rounds
  differently); each model's ``Health`` records the outcome for ``/readyz``. The batcher turns
  any exception into ``GenerationFailed(type name)``, so the routes tell the kinds apart by that
  name (``app.generation.run``).
* **The worker plan** (``worker_plan``): how many forward passes side by side, with how many
  torch threads each, and the rows of one pass (``default_max_batch``).
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from app.settings import usable_cores
from training.images import to_uint8

log = logging.getLogger(__name__)


def forward_uint8(
    generator: nn.Module, z: torch.Tensor, labels: torch.Tensor | None, device: torch.device, max_batch: int,
    convert: Callable[[torch.Tensor], np.ndarray] = to_uint8,
) -> np.ndarray:
    """Run (B, z_dim) CPU latents through the generator in chunks of ``max_batch`` → (B, H, W, C) uint8
    (or ``convert`` of each chunk's output: an image-in module's inputs are images, its outputs images
    or latents, ``app.imagein``)."""
    out: list[np.ndarray] = []
    with torch.inference_mode():
        for start in range(0, z.shape[0], max_batch):
            zc = z[start : start + max_batch].to(device)
            lc = None if labels is None else labels[start : start + max_batch].to(device)
            out.append(convert(generator(zc, lc)))
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
    the shipped layers' shapes; ``batch_invariant`` checks each model at load)."""
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
    several times faster for the shipped 28×28 generators on one CPU thread (docs/history.md), the
    same output up to float rounding.
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
    does not depend on how many requests it was batched with. The padding costs most on small passes
    of small models (docs/history.md); bench/serving.py measures what is served.

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

    On the CPU a larger pass is not cheaper per image once its activations outgrow the caches
    (``bench.serving.forward_rate`` measures it; docs/history.md tells how 32 was chosen). On a GPU
    larger passes keep paying off; 64 there is a default, not a measurement.
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


FAILING_AFTER = 3  # consecutive failed forward passes before a model counts as failing
FAILING_FOR_S = 30.0  # ... and for how long after its last failure (then traffic may probe it again)


class NonFiniteOutput(RuntimeError):
    """The generator produced NaN or infinite pixels."""


class DeviceOutOfMemory(RuntimeError):
    """The device ran out of memory during the forward pass."""


@dataclass
class Health:
    """Outcome of a model's recent forward passes (written from its worker threads, under a lock)."""

    consecutive_failures: int = 0
    last_failure: float = 0.0  # time.monotonic()
    last_error: str | None = None
    failures: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def ok(self) -> None:
        with self._lock:
            self.consecutive_failures = 0

    def failed(self, kind: str) -> None:
        with self._lock:
            self.consecutive_failures += 1
            self.failures += 1
            self.last_failure = time.monotonic()
            self.last_error = kind

    @property
    def failing(self) -> bool:
        """Every one of the last few forward passes failed, the latest one recently."""
        return (self.consecutive_failures >= FAILING_AFTER
                and time.monotonic() - self.last_failure < FAILING_FOR_S)


def is_out_of_memory(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or (isinstance(e, RuntimeError) and "out of memory" in str(e))


def _free_device_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


def guarded_forward(generator: nn.Module, z: torch.Tensor, labels: torch.Tensor | None, device: torch.device,
                    max_batch: int, *, health: Health | None = None,
                    convert: Callable[[torch.Tensor], np.ndarray] = to_uint8) -> np.ndarray:
    """``forward_uint8`` with the checks above → (B, H, W, C) uint8 for (B, z_dim) latents."""
    rows = int(z.shape[0])
    if max_batch > 1 and rows % max_batch == 1:
        # The last chunk would be one row: repeat the last latent so that it is two.
        z = torch.cat([z, z[-1:]])
        labels = None if labels is None else torch.cat([labels, labels[-1:]])

    def checked(zc: torch.Tensor, lc: torch.Tensor | None) -> torch.Tensor:
        out: torch.Tensor = generator(zc, lc)
        if not bool(torch.isfinite(out).all()):
            raise NonFiniteOutput("the generator produced NaN or infinite pixels")
        return out

    try:
        images = forward_uint8(cast(nn.Module, checked), z, labels, device, max_batch, convert)
    except NonFiniteOutput:
        if health is not None:
            health.failed("non-finite output")
        raise
    except Exception as e:
        if is_out_of_memory(e):
            _free_device_memory(device)
            if health is not None:
                health.failed("device out of memory")
            raise DeviceOutOfMemory(str(e).splitlines()[0] if str(e) else "out of memory") from e
        if health is not None:
            health.failed(type(e).__name__)
        raise
    if health is not None:
        health.ok()
    return images[:rows]


def make_forward(health: Health, convert: Callable[[torch.Tensor], np.ndarray] = to_uint8) -> Any:
    """The ``forward`` callable of one model's batcher (``convert``: of its outputs, as ``forward_uint8``)."""

    def forward(generator: nn.Module, z: torch.Tensor, labels: torch.Tensor | None, device: torch.device,
                max_batch: int) -> np.ndarray:
        return guarded_forward(generator, z, labels, device, max_batch, health=health, convert=convert)

    return forward


def batch_invariant(generator: nn.Module, z: torch.Tensor, labels: torch.Tensor | None) -> bool:
    """Whether the generator makes each latent's image bit for bit the same however it is batched.

    ``z`` (and ``labels``) is a full batch of the largest size the batcher runs (``max_batch``
    rows); the rows are made in that one pass and again in smaller passes — two rows (the
    smallest pass the batcher runs, see ``guarded_forward``), three, and one row short of the
    full batch — starting at the beginning, middle and end of the batch, and compared as floats.
    (Checking only the 2-row and full passes missed a kernel whose 2- and full-row results agreed
    while the sizes between differed.) A BLAS or device whose kernel depends on the number of
    rows — MKL's float32 product on an AMD EPYC, MKL's AVX2 product outside strict reproducibility
    mode, most GPU libraries — fails this unless its products run at one fixed shape
    (``fixed_rows``); a model that fails it anyway cannot be promised the same bytes
    for the same request: ``app.generation`` gives its images weak ETags.
    """
    rows = int(z.shape[0])
    if rows < 4:
        return True  # nothing to compare against a 2-row pass

    def run(start: int, size: int) -> torch.Tensor:
        out: torch.Tensor = generator(z[start : start + size], None if labels is None else labels[start : start + size])
        return out

    with torch.inference_mode():
        # A process's very first matrix products can round differently from every later one (seen in
        # ~1 fresh process in 100 here, MKL in strict mode: the first full pass differed from a second
        # identical one, and everything after agreed). The service warms each model up before this
        # check; this pass makes the check stand on its own.
        run(0, 2)
        full = run(0, rows)
        for size in sorted({2, 3, rows - 1}):
            for start in sorted({0, (rows - size) // 2, rows - size}):
                if not torch.equal(run(start, size), full[start : start + size]):
                    return False
    return True


@dataclass(frozen=True)
class Prepared:
    """The module a model is served with, and what its load-time check found."""

    module: nn.Module  # prepare_for_inference's copy: what the batcher runs, as it was checked
    batch_invariant: bool  # same image however a latent is batched; else the model gets weak ETags
    exact_products: bool  # its matrix products are taken in float64 (float32 ones failed the check)


def prepare_checked(generator: nn.Module, device: torch.device, z_dim: int, num_classes: int, rows: int,
                    threads: int | None, name: str = "model", inputs: torch.Tensor | None = None) -> Prepared:
    """The serving copy of a loaded generator, checked with ``batch_invariant`` at its largest pass
    (``rows``) and with the torch threads its workers will run with (a pass can depend on the batch
    with 2 threads where it does not with 1): with float32 matrix products, else (on the CPU) with
    float64 ones, else served as it is with weak ETags. The module returned is the module checked.
    ``inputs``: the (rows, …) batch to check on instead of the seeds' latents (an image-in module's images)."""
    from training.latent import latents

    if threads:
        # Every batcher's workers set this same number (the setting is per process for threads
        # started later, so it is never set to anything else here).
        torch.set_num_threads(threads)
    z = latents(list(range(rows)), z_dim).to(device) if inputs is None else inputs.to(device)  # (rows, z_dim)
    labels = torch.arange(rows, device=device) % num_classes if num_classes else None
    served = prepare_for_inference(generator)
    if batch_invariant(served, z, labels):
        return Prepared(served, True, False)
    if device.type == "cpu":
        exact = prepare_for_inference(generator, exact=True)
        if batch_invariant(exact, z, labels):
            log.info("model %s: float32 matrix products differ by batch on this CPU: served with float64 ones", name)
            return Prepared(exact, True, True)
    log.warning("model %s: its images differ by batch on this device (%s): served with weak ETags, and a seeded "
                "image may differ by a rounding step from one request to the next", name, device)
    return Prepared(served, False, False)
