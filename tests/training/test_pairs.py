"""Paired data by a named deterministic transform of the target (training/pairs.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.pairs import TRANSFORMS, check_transform, input_channels, make_inputs


def shapes(n: int = 6, channels: int = 3, side: int = 32) -> torch.Tensor:
    """uint8 (n, C, side, side): a filled rectangle of a different colour and place on white, per image."""
    rng = np.random.RandomState(0)
    x = np.full((n, channels, side, side), 255, np.uint8)
    for i in range(n):
        a, b = rng.randint(3, side // 2, 2)
        x[i, :, a:a + side // 3, b:b + side // 3] = rng.randint(0, 200, (channels, 1, 1))
    return torch.from_numpy(x)


def test_the_transforms_are_named():
    assert TRANSFORMS == ("edges", "grey")
    assert [input_channels(t) for t in TRANSFORMS] == [1, 1]


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_transforms_are_deterministic(transform):
    x = shapes()
    a, b = make_inputs(x, transform), make_inputs(x.clone(), transform)
    assert a.dtype == torch.uint8 and a.shape == (6, 1, 32, 32)
    assert torch.equal(a, b)
    assert torch.equal(make_inputs(x[2:3], transform), a[2:3])  # an image alone = inside a batch


def test_edges_are_black_lines_on_white_around_the_shape():
    x = shapes(1)
    e = make_inputs(x, "edges")[0, 0]
    assert set(e.unique().tolist()) == {0, 255}
    lines = e == 0
    assert 20 < int(lines.sum()) < 200  # the outline of a ~10×10 square, not the whole image
    # every edge pixel is within a pixel of the square's border
    inside = (x[0, 0] < 255)
    grown = torch.nn.functional.max_pool2d(inside[None, None].float(), 3, 1, 1)[0, 0] > 0
    shrunk = -torch.nn.functional.max_pool2d(-inside[None, None].float(), 3, 1, 1)[0, 0] > 0
    border = grown & ~shrunk
    assert bool(border[lines].all())


def test_a_flat_image_has_no_edges():
    x = torch.full((2, 1, 32, 32), 128, dtype=torch.uint8)
    assert bool((make_inputs(x, "edges") == 255).all())


def test_grey_is_the_luminance():
    x = shapes(2)
    g = make_inputs(x, "grey")
    lum = (0.299 * x[:, 0].float() + 0.587 * x[:, 1].float() + 0.114 * x[:, 2].float()).round()
    assert torch.equal(g[:, 0], lum.to(torch.uint8))


def test_bad_transforms_are_clear_errors():
    with pytest.raises(ValueError, match="choose one of edges, grey"):
        check_transform("sketch")
    with pytest.raises(ValueError, match="--channels 3"):
        make_inputs(shapes(1, channels=1), "grey")
