import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from training.latent import SEED_MAX, grid_seeds, latent, latents, lerp, slerp


@given(st.integers(0, SEED_MAX), st.integers(1, 256))
def test_seed_rule_is_the_design_rule(seed, z_dim):
    expect = np.random.RandomState(seed).standard_normal(z_dim).astype(np.float32)
    assert np.array_equal(latent(seed, z_dim), expect)


@given(st.integers(min_value=-(2**40), max_value=-1) | st.integers(min_value=SEED_MAX + 1, max_value=2**64))
def test_out_of_range_seeds_are_refused(seed):
    with pytest.raises(ValueError, match="seed must be"):
        latent(seed, 4)


def test_grid_uses_consecutive_seeds():
    z = latents(grid_seeds(41, 3), 16)
    for i in range(3):
        assert torch.equal(z[i], torch.from_numpy(latent(41 + i, 16)))
    with pytest.raises(ValueError):
        grid_seeds(SEED_MAX, 2)  # the last seed would overflow


def test_truncation_scales_toward_zero():
    assert torch.allclose(latents([3], 8, 0.5), 0.5 * latents([3], 8))
    with pytest.raises(ValueError, match="truncation"):
        latents([3], 8, 0.0)


def test_interpolation_endpoints():
    a, b = latents([1], 32)[0], latents([2], 32)[0]
    t = torch.linspace(0, 1, 5)
    for f in (slerp, lerp):
        path = f(a, b, t)
        assert torch.allclose(path[0], a, atol=1e-5) and torch.allclose(path[-1], b, atol=1e-5)
    # slerp keeps the norm roughly constant between two typical Gaussian latents; lerp shrinks it.
    mid_s, mid_l = slerp(a, b, t)[2].norm(), lerp(a, b, t)[2].norm()
    assert mid_s > mid_l
