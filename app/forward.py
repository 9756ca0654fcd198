"""The forward pass every model's batcher runs: guarded, classified and batch-invariant.

``guarded_forward`` wraps ``app.batcher.forward_uint8`` (passed to each Batcher as its
``forward``) and adds what serving on the open internet needs:

* non-finite output (NaN/inf from a diverged or corrupted generator) raises
  ``NonFiniteOutput`` instead of silently becoming black pixels;
* a device out-of-memory error raises ``DeviceOutOfMemory`` (after freeing the allocator's
  cache) so that the route can answer "retry shortly" rather than a bare failure;
* no chunk is ever a single row: a 1-row pass takes other kernels (a 1-row matrix product is a gemv)
  whose rounding differs from the batched one, so an image made alone would differ from the
  same image made inside a batch (≤ 1 grey level, but the PNG bytes and a strong ETag would
  not hold). One duplicated row keeps the bytes the same however requests are coalesced;
* each model's ``Health`` records the outcome, which ``/readyz`` reports.

The batcher turns any exception into ``GenerationFailed(type name)``, so the routes tell the
kinds apart by that name (see ``app.generation.run``).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from app.batcher import forward_uint8

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
                    max_batch: int, *, health: Health | None = None) -> np.ndarray:
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
        images = forward_uint8(cast(nn.Module, checked), z, labels, device, max_batch)
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


def make_forward(health: Health) -> Any:
    """The ``forward`` callable of one model's batcher."""

    def forward(generator: nn.Module, z: torch.Tensor, labels: torch.Tensor | None, device: torch.device,
                max_batch: int) -> np.ndarray:
        return guarded_forward(generator, z, labels, device, max_batch, health=health)

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
    (``app.batcher.fixed_rows``); a model that fails it anyway cannot be promised the same bytes
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
