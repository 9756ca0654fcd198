"""The PNG writer: any decoder (here Pillow) reads back the exact pixels, grey and RGB, any size."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from training.images import png_bytes


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 70), st.integers(1, 70), st.sampled_from([1, 3]), st.integers(0, 9), st.integers(0, 2**31))
def test_pillow_reads_back_the_exact_pixels(h, w, c, level, seed) -> None:
    image = np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)
    data = png_bytes(image, level)
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
