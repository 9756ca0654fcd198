"""The benchmarks start and print their tables on the short setting (the real runs are in the README)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_bench(script: str, *args: str, timeout: float = 300) -> str:
    """The timeout only stops a hung benchmark: a busy machine (a training beside the suite) makes the
    quick runs several times slower (measured: the training bench over 30 s with a 2-thread run beside it)."""
    out = subprocess.run([sys.executable, f"bench/{script}", "--quick", *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "docs/performance.md" not in out.stdout  # --quick prints only: the document is left alone
    return out.stdout


@pytest.mark.slow
def test_serving_bench_quick() -> None:
    text = run_bench("serving.py")
    assert "| conns | server | req/s |" in text
    for conns in (1, 8, 64, 256):
        assert f"| {conns} | naive |" in text and f"| {conns} | ganserve |" in text
    assert "| 64 | ganserve, 1 process, fast path off |" in text and "passes side by side" in text
    assert "| 64 | ganserve, 1 process |" in text or (os.cpu_count() or 1) == 1  # the default is N processes
    assert "**limit**" in text and "| target | measured | met |" in text
    assert "answered from ganserve's image cache" in text and "| `/generate` from the image cache (ganserve," in text
    assert "/interpolate?frames=48" in text
    # The peers, in the same run: LitServe (a bench extra) and the naive server at 1 and 64 connections.
    for conns in (1, 64):
        assert f"| {conns} | ganserve |" in text and f"| {conns} | naive |" in text
    if importlib.util.find_spec("litserve") is not None:
        assert "| 1 | LitServe |" in text and "| 64 | LitServe |" in text and "fast_queue" in text
    else:
        assert "LitServe not measured" in text


@pytest.mark.slow
def test_training_bench_quick() -> None:
    text = run_bench("training.py")
    assert "| family | reference images/s |" in text
    assert "| mlp-gan |" in text and "| cgan |" in text


@pytest.mark.slow
def test_training_bench_emoji_quick() -> None:
    text = run_bench("training.py", "--emoji")
    assert "64×64×3, 9 classes, width 32" in text and "| cgan |" in text and "| mlp-gan |" not in text


@pytest.mark.slow
def test_conditioning_bench_quick() -> None:
    text = run_bench("conditioning.py")
    assert "| D conditioned on | concatenated input images/s | factored first conv images/s | speed-up |" in text
    assert "| cgan, 10 classes |" in text and "| self-conditioned dcgan, K = 50 |" in text


@pytest.mark.slow
def test_translate_bench_quick() -> None:
    text = run_bench("translate.py", "--checkpoint", "checkpoints/fashion-edges2fashion")  # one is enough here
    assert "| conns | server | req/s | p50 ms | p99 ms | server CPU µs/req | errors and 503s |" in text
    for conns in (1, 16):
        assert f"| {conns} | ganserve |" in text and f"| {conns} | naive |" in text
    assert "| 16 conns: ganserve ≥ 2.5× the naive server's req/s |" in text
    assert "answers to the same 8 inputs differ by at most" in text


@pytest.mark.slow
def test_projection_bench_quick() -> None:
    text = run_bench("projection.py", "--models", "mnist-gan", "fashion-cgan", "--images", "3", "--steps", "5")
    assert "| model | family | image | images | p50 ms | p99 ms |" in text
    assert "| mnist-gan | mlp-gan (no label) | 28×28×1 | 3 |" in text
    assert "| fashion-cgan | cgan | 28×28×1 | 3 |" in text
