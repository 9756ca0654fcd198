"""The PNG writer: any decoder (here Pillow) reads back the exact pixels, grey and RGB, any size."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from isal import isal_zlib
from PIL import Image

from training.images import png_bytes, to_uint8


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 70), st.integers(1, 70), st.sampled_from([1, 3]), st.integers(0, 9), st.integers(0, 2**31),
       st.booleans())
def test_pillow_reads_back_the_exact_pixels(h, w, c, level, seed, isal) -> None:
    """With the standard library's zlib (levels 0–9) and with ISA-L's (levels 0–3), as the service uses it."""
    image = np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)
    if isal:
        image[: h // 2] = image[0, 0]  # half flat: something to compress
    data = png_bytes(image, level % 4, isal_zlib.compress) if isal else png_bytes(image, level)
    with Image.open(io.BytesIO(data)) as im:
        im.load()  # verifies every chunk's CRC and the zlib stream
        assert im.format == "PNG" and im.mode == ("L" if c == 1 else "RGB") and im.size == (w, h)
        decoded = np.asarray(im)
    assert np.array_equal(decoded.reshape(h, w, c), image)


def test_flat_images_compress_and_bad_input_is_refused() -> None:
    assert len(png_bytes(np.zeros((280, 280, 1), np.uint8))) < 1000
    for bad in (np.zeros((4, 4), np.uint8), np.zeros((4, 4, 2), np.uint8), np.zeros((4, 4, 1), np.float32)):
        with pytest.raises(ValueError, match="expected"):
            png_bytes(bad)


def _reference_uint8(x: torch.Tensor) -> np.ndarray:
    """The conversion written with torch ops (what an accelerator runs): clamp, (x + 1) · 127.5, round half to even."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 5), st.sampled_from([1, 3]), st.integers(0, 2**31 - 1))
def test_to_uint8_on_the_cpu_matches_the_torch_ops(b, c, seed) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, 6, 5, generator=g) * 1.5  # values outside [-1, 1] too
    # exact halves after scaling: (k + 0.5) / 127.5 − 1 must round half to even like torch.round
    x.view(-1)[: min(x.numel(), 8)] = (torch.arange(min(x.numel(), 8)) * 31 + 0.5) / 127.5 - 1
    want = _reference_uint8(x)
    got = to_uint8(x)
    assert got.dtype == np.uint8 and got.shape == (b, 6, 5, c)
    np.testing.assert_array_equal(got, want)


def test_to_uint8_keeps_the_input_tensor_unchanged_and_takes_half_precision() -> None:
    x = torch.tensor([[[[-2.0, -1.0, 0.0, 1.0, 2.0]]]])
    before = x.clone()
    np.testing.assert_array_equal(to_uint8(x)[0, 0, :, 0], [0, 0, 128, 255, 255])
    assert torch.equal(x, before)
    np.testing.assert_array_equal(to_uint8(x.half()), to_uint8(x))
