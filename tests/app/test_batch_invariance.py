"""A seeded image has the same bytes however its request is batched — or the service says it cannot.

* On x86 with MKL, importing ``app`` puts MKL in strict reproducibility mode; the test runs MKL's
  AVX2 kernels (``MKL_ENABLE_INSTRUCTIONS=AVX2``, what an AVX2-only CPU runs), where the default
  mode gives a linear layer's row a result that depends on the number of rows in the batch.
* ``app.inference.batch_invariant`` tells a generator whose output depends on the batch from one
  whose output does not, and a model that fails it is served with weak ETags.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from torch import nn

import app.inference as inference_module
import app.registry as registry_module
from app.inference import batch_invariant, prepare_for_inference
from app.main import create_app
from tests.app.conftest import COND, UNCOND, make_settings, wait_ready, write_cgan, write_mlp

ROOT = Path(__file__).resolve().parents[2]

# Rows of a linear layer (the MLP generator's 1024 → 784) made two at a time and inside batches of
# 2…64 rows at every third offset; prints how many batches gave a row different bits.
PROBE = """
import sys
if sys.argv[1] == "app":
    import app  # noqa: F401
import torch
torch.manual_seed(0)
torch.set_num_threads(1)
w, x = torch.randn(784, 1024) * 0.03, torch.randn(100, 1024)
linear = torch.nn.functional.linear
alone = torch.cat([linear(x[i : i + 2], w)[:1] for i in range(99)])
batches = [(s, b) for b in range(2, 65) for s in range(0, 99 - b, 3)]
print(sum(not torch.equal(linear(x[s : s + b], w), alone[s : s + b]) for s, b in batches))
"""


def differing_batches(with_app: bool) -> int:
    env = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}
    env.update(MKL_ENABLE_INSTRUCTIONS="AVX2", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", PROBE, "app" if with_app else "plain"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=120, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def intel_with_avx2() -> bool:
    try:
        info = Path("/proc/cpuinfo").read_text().replace("\n", " ")
    except OSError:
        return False
    return " avx2 " in info and "GenuineIntel" in info


# MKL's strict mode holds on Intel CPUs. On an AMD EPYC (AVX-512) it changes nothing, measured: 1342 of the
# probe's batches differ with and without it, whatever MKL_CBWR or MKL_ENABLE_INSTRUCTIONS say — there the
# registry serves float64 products instead (test_float64_products_are_served_where_float32_ones_vary_by_batch).
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64") or not torch.backends.mkl.is_available()
                    or not intel_with_avx2(), reason="MKL's strict mode (AVX2 and AVX-512 kernels): Intel x86 "
                    "with AVX2 and MKL only")
def test_importing_app_makes_mkl_rows_independent_of_the_batch() -> None:
    plain = differing_batches(with_app=False)
    if plain == 0:
        pytest.skip("this MKL's AVX2 product does not depend on the batch here: nothing to fix or to show")
    assert differing_batches(with_app=True) == 0, f"without app: {plain} batches differed"


class BatchDependent(nn.Module):
    """A generator whose pixels move by a rounding step with the number of rows, as a BLAS whose kernel
    depends on the batch size makes them — for every size but ``same`` (rows that round like the
    2-row pass, as MKL's float32 product on an AMD EPYC rounds its 2- and 3-row calls alike)."""

    def __init__(self, inner: Any, same: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.inner, self.same = inner, same

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        out: torch.Tensor = self.inner(z, labels)
        return out if z.shape[0] in self.same else out + 1e-6 * z.shape[0]


def test_batch_invariant_tells_the_two_apart(tmp_path: Path) -> None:
    gen, cfg = registry_module.load_generator(write_mlp(tmp_path), torch.device("cpu"))
    gen = prepare_for_inference(gen, exact=True)  # invariant on every CPU (float32 products are not on all)
    z = torch.randn(32, cfg.z_dim, generator=torch.Generator().manual_seed(0))
    assert batch_invariant(gen, z, None)
    assert not batch_invariant(BatchDependent(gen), z, None)
    assert batch_invariant(BatchDependent(gen), z[:3], None)  # too few rows to compare: nothing claimed
    # A kernel whose 2-row and full passes agree but whose sizes in between differ is caught too.
    assert not batch_invariant(BatchDependent(gen, same=(2, 32)), z, None)
    assert not batch_invariant(BatchDependent(gen, same=(2, 3, 32)), z, None)


@pytest.mark.parametrize("writer", [write_cgan, write_mlp])
def test_served_generators_make_a_row_the_same_at_every_batch_size(tmp_path: Path, writer: Any) -> None:
    """The module the batcher runs (``prepare_for_inference``: every matrix product in blocks of
    ``PRODUCT_ROWS``) gives a latent bit for bit the same result in a pass of any size from 2 to 40
    rows, at any place in it, on one thread as the workers run. The plain float32 module fails this on
    an AMD EPYC (MKL's 2- and 3-row products round otherwise than larger ones)."""
    gen, cfg = registry_module.load_generator(writer(tmp_path), torch.device("cpu"))
    served = prepare_for_inference(gen)
    z = torch.randn(40, cfg.z_dim, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(40) % cfg.num_classes if cfg.conditional else None
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            alone = torch.cat([served(z[i : i + 2], None if labels is None else labels[i : i + 2])[:1]
                               for i in range(39)])
            for size in range(2, 41):
                for start in range(0, 41 - size, 5):
                    part = served(z[start : start + size], None if labels is None else labels[start : start + size])
                    n = min(size, 39 - start)
                    assert torch.equal(part[:n], alone[start : start + n]), (size, start)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("rows", [1, 2, 15, 16, 17, 40])
def test_fixed_rows_runs_every_product_on_one_shape(rows: int) -> None:
    from app.inference import PRODUCT_ROWS, fixed_rows

    x, w = torch.randn(rows, 7, dtype=torch.float64), torch.randn(7, 5, dtype=torch.float64)
    shapes: list[tuple[int, ...]] = []

    def product(block: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(block.shape))
        return block @ w

    out = fixed_rows(x, product)
    assert out.shape == (rows, 5) and torch.allclose(out, x @ w)
    assert shapes == [(PRODUCT_ROWS, 7)] * -(-rows // PRODUCT_ROWS)


def test_the_load_time_check_runs_with_the_workers_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pass can depend on the batch with 2 threads and not with 1 (measured here: fashion-dcgan and
    fashion-wgan-gp, whose matrix products run at one shape — their convolutions or element-wise passes,
    presumably): the registry checks each model with the torch threads its batcher's workers will have."""
    write_cgan(tmp_path)
    seen: list[int] = []
    real = inference_module.batch_invariant

    def check(gen: nn.Module, z: torch.Tensor, labels: torch.Tensor | None) -> bool:
        seen.append(torch.get_num_threads())
        return real(gen, z, labels)

    monkeypatch.setattr(inference_module, "batch_invariant", check)
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            with TestClient(create_app(make_settings(tmp_path, inference_threads=threads))) as client:
                wait_ready(client)
            assert seen and set(seen) == {threads}, (threads, seen)
            seen.clear()
    finally:
        torch.set_num_threads(before)


def test_a_batch_dependent_model_gets_weak_etags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_cgan(tmp_path)
    write_mlp(tmp_path)
    real = registry_module.load_generator

    def load(path: Any, device: Any) -> Any:
        gen, cfg = real(path, device)
        return (BatchDependent(gen) if cfg.name == UNCOND else gen), cfg

    monkeypatch.setattr(registry_module, "load_generator", load)
    with TestClient(create_app(make_settings(tmp_path))) as client:
        wait_ready(client)
        assert client.get(f"/models/{UNCOND}").json()["batch_invariant"] is False
        assert client.get(f"/models/{COND}").json()["batch_invariant"] is True

        strong = client.get("/generate", params={"model": COND, "label": 1, "seed": 5})
        assert strong.status_code == 200 and strong.headers["etag"].startswith('"')

        for url in (f"/generate?model={UNCOND}&seed=5", f"/models/{UNCOND}/seeds/5.png",
                    f"/interpolate?model={UNCOND}&from_seed=1&to_seed=2&frames=3"):
            r = client.get(url)
            assert r.status_code == 200, r.text
            etag = r.headers["etag"]
            assert etag.startswith('W/"') and etag.endswith('"'), etag
            # If-None-Match compares weakly: the tag with or without its W/ prefix matches.
            for sent in (etag, etag.removeprefix("W/")):
                again = client.get(url, headers={"If-None-Match": sent})
                assert again.status_code == 304 and again.headers["etag"] == etag
        # A strong tag sent back as weak still matches (weak comparison).
        again = client.get("/generate", params={"model": COND, "label": 1, "seed": 5},
                           headers={"If-None-Match": "W/" + strong.headers["etag"]})
        assert again.status_code == 304


def test_float64_products_are_served_where_float32_ones_vary_by_batch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model whose float32 pass fails the check is served with float64 products when those pass it
    (the check is stubbed to fail every float32 module, as on a CPU whose products vary by batch): strong
    ETags, `exact_products` on /models, and the batcher runs the float64 module."""
    from app.inference import _ConvTransposeOn1x1, _FixedRowsLinear

    def exact(gen: nn.Module) -> bool:
        return any(isinstance(m, _FixedRowsLinear | _ConvTransposeOn1x1) and m.exact for m in gen.modules())

    monkeypatch.setattr(inference_module, "batch_invariant", lambda gen, z, labels: exact(gen))
    write_cgan(tmp_path)
    write_mlp(tmp_path)
    with TestClient(create_app(make_settings(tmp_path))) as client:
        wait_ready(client)
        for name in (COND, UNCOND):
            info = client.get(f"/models/{name}").json()
            assert info["batch_invariant"] is True and info["exact_products"] is True, name
            model = client.app.state.service.registry.models[name]  # type: ignore[attr-defined]
            assert exact(model.batcher.generator), name
        r = client.get("/generate", params={"model": COND, "label": 1, "seed": 5})
        assert r.status_code == 200 and r.headers["etag"].startswith('"')


def test_the_module_checked_at_load_is_the_module_served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checked: list[nn.Module] = []
    real = inference_module.batch_invariant

    def check(gen: nn.Module, z: torch.Tensor, labels: torch.Tensor | None) -> bool:
        checked.append(gen)
        return real(gen, z, labels)

    monkeypatch.setattr(inference_module, "batch_invariant", check)
    write_cgan(tmp_path)
    with TestClient(create_app(make_settings(tmp_path))) as client:
        wait_ready(client)
        model = client.app.state.service.registry.models[COND]  # type: ignore[attr-defined]
        assert checked and checked[-1] is model.batcher.generator is model.generator
        assert client.get("/generate", params={"label": 1, "seed": 5}).status_code == 200


@pytest.mark.parametrize("writer", [write_cgan, write_mlp])
def test_float64_products_make_the_same_images_as_float32_ones(tmp_path: Path, writer: Any) -> None:
    gen, cfg = registry_module.load_generator(writer(tmp_path), torch.device("cpu"))
    z = torch.randn(16, cfg.z_dim, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(16) % cfg.num_classes if cfg.conditional else None
    with torch.inference_mode():
        fast, exact = prepare_for_inference(gen)(z, labels), prepare_for_inference(gen, exact=True)(z, labels)
    assert exact.dtype == fast.dtype == torch.float32
    assert torch.allclose(exact, fast, atol=1e-5)  # rounding steps apart, far below a grey level (0.008)
