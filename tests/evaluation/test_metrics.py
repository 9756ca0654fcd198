"""Each metric on a case whose answer is known in closed form or by construction."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.evaluation.conftest import checkerboard
from training.evaluation import metrics as M


def gaussian(n: int, d: int, mean: float = 0.0, std: float = 1.0, seed: int = 0) -> np.ndarray:
    return np.random.RandomState(seed).normal(mean, std, (n, d))


# --- FID ---------------------------------------------------------------------------------


def test_frechet_distance_closed_form() -> None:
    rng = np.random.RandomState(0)
    a = rng.normal(size=(6, 6))
    sigma = a @ a.T + np.eye(6)
    mu = rng.normal(size=6)
    assert M.frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-6)
    # Same covariance: FID is the squared distance of the means.
    shift = np.arange(6.0)
    assert M.frechet_distance(mu, sigma, mu + shift, sigma) == pytest.approx(float(shift @ shift), rel=1e-6)
    # Diagonal covariances: Σ (σ₁ − σ₂)² + ‖Δμ‖².
    s1, s2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    expected = ((np.sqrt(s1) - np.sqrt(s2)) ** 2).sum() + 3.0
    assert M.frechet_distance(np.zeros(3), np.diag(s1), np.ones(3), np.diag(s2)) == pytest.approx(expected)


def test_fid_of_samples_identical_and_shifted_gaussians() -> None:
    a, b = gaussian(20000, 8, seed=1), gaussian(20000, 8, seed=2)
    assert M.fid(a, b) < 0.01
    assert M.fid(a, a + 0.5) == pytest.approx(8 * 0.25, rel=1e-6)  # same Σ: ‖Δμ‖² = 8 × 0.5²
    assert M.fid(a, 2 * b) == pytest.approx(8 * (2 - 1) ** 2, abs=0.15)  # Σ (σ₁ − σ₂)² for N(0, I) vs N(0, 4I)


def test_fid_survives_singular_covariances() -> None:
    a = np.zeros((100, 4))
    a[:, 0] = np.random.RandomState(0).normal(size=100)  # rank-1 covariance
    assert math.isfinite(M.fid(a, a + 1))


# --- KID ---------------------------------------------------------------------------------


def test_kid_exact_on_constant_sets() -> None:
    # k(0, 0) = 1, k(1, 1) = (D/D + 1)³ = 8, k(0, 1) = 1 → MMD² = 1 + 8 − 2 = 7 exactly.
    mean, std = M.kid(np.zeros((50, 4)), np.ones((50, 4)), num_subsets=5, subset_size=20)
    assert mean == pytest.approx(7.0) and std == pytest.approx(0.0)


def test_kid_same_distribution_is_near_zero_and_shift_is_not() -> None:
    a, b = gaussian(3000, 16, seed=1), gaussian(3000, 16, seed=2)
    same, std = M.kid(a, b, num_subsets=20, subset_size=500)
    assert abs(same) < 3 * std + 1e-3
    shifted, _ = M.kid(a, b + 0.5, num_subsets=20, subset_size=500)
    assert shifted > 50 * max(abs(same), 1e-4)


# --- PRDC ----------------------------------------------------------------------------------


def test_prdc_same_distribution() -> None:
    r = M.prdc(gaussian(2000, 8, seed=1), gaussian(2000, 8, seed=2))
    assert r["precision"] > 0.6 and r["recall"] > 0.6 and r["coverage"] > 0.9
    assert r["density"] == pytest.approx(1.0, abs=0.15)


def test_prdc_disjoint_sets_score_zero() -> None:
    r = M.prdc(gaussian(500, 8, seed=1), gaussian(500, 8, mean=50, seed=2))
    assert r == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_prdc_collapse_keeps_precision_but_loses_recall_and_coverage() -> None:
    real = gaussian(1000, 4, seed=1)
    fake = real[:1].repeat(1000, 0) + 1e-4 * gaussian(1000, 4, seed=2)  # every fake ≈ one real point
    r = M.prdc(real, fake)
    assert r["precision"] == 1.0
    assert r["recall"] < 0.01 and r["coverage"] < 0.02


def test_coverage_by_class_names_the_class_the_fakes_miss() -> None:
    """Three well-apart real clusters; the fakes come from the first two only."""
    real = np.concatenate([gaussian(300, 4, mean=20 * c, seed=c) for c in range(3)])
    labels = np.repeat(np.arange(3), 300)
    fake = np.concatenate([gaussian(450, 4, mean=20 * c, seed=10 + c) for c in range(2)])
    values, covered = M.prdc_and_covered(real, fake)
    assert values == M.prdc(real, fake) and covered.shape == (900,)
    assert values["coverage"] == pytest.approx(covered.mean())
    per = M.coverage_by_class(covered, labels, 4)
    assert per[0] > 0.9 and per[1] > 0.9 and per[2] == 0.0
    assert per[3] is None  # no real sample of that class
    assert values["coverage"] == pytest.approx((per[0] + per[1] + per[2]) / 3)


# --- classes -------------------------------------------------------------------------------


def test_class_histogram_balanced_and_collapsed() -> None:
    balanced = M.class_histogram(np.arange(1000) % 10, 10)
    assert balanced == pytest.approx(np.full(10, 0.1))
    assert M.kl_to_uniform(balanced) == pytest.approx(0.0, abs=1e-12)
    assert M.modes_covered(balanced) == 10
    # Collapse to one class, with a few "misclassified" samples in every other class.
    pred = np.full(1000, 3)
    pred[:9] = [0, 1, 2, 4, 5, 6, 7, 8, 9]
    hist = M.class_histogram(pred, 10)
    assert M.modes_covered(hist) == 1
    assert M.kl_to_uniform(hist) > 0.9 * math.log(10)
    assert M.kl_to_uniform(np.eye(10)[3]) == pytest.approx(math.log(10))


def test_dropped_classes_show_in_modes_and_per_class_accuracy() -> None:
    intended = np.arange(1000) % 10
    pred = np.where(intended < 6, intended, intended - 6)  # classes 6..9 come out as 0..3
    acc, per = M.class_accuracy(pred, intended, 10)
    assert acc == pytest.approx(0.6)
    assert per == [1.0] * 6 + [0.0] * 4
    assert M.modes_covered(M.class_histogram(pred, 10)) == 6
    _, per_missing = M.class_accuracy(np.zeros(5), np.zeros(5), 3)
    assert per_missing == [1.0, None, None]


# --- memorisation --------------------------------------------------------------------------


def test_nearest_distances_exact() -> None:
    ref = np.array([[0.0, 0.0], [3.0, 4.0]])
    q = np.array([[0.0, 0.0], [3.0, 0.0], [6.0, 8.0]])
    assert M.nearest_distances(q, ref) == pytest.approx([0.0, 3.0, 5.0], abs=1e-5)


def test_memorization_copies_test_and_noise() -> None:
    rng = np.random.RandomState(0)
    train = torch.from_numpy(rng.randint(0, 256, (600, 1, 8, 8)).astype(np.uint8))
    test = torch.from_numpy(rng.randint(0, 256, (400, 1, 8, 8)).astype(np.uint8))
    copies, thr = M.memorization(train[:200], train, test)
    assert copies == 1.0 and thr > 0
    unseen, _ = M.memorization(test, train, test)
    assert unseen == pytest.approx(0.01, abs=0.005)  # the threshold is test's own 1st percentile
    near_copies, _ = M.memorization((train[:200].int() + 1).clamp(0, 255).to(torch.uint8), train, test)
    assert near_copies == 1.0


# --- checkerboard --------------------------------------------------------------------------


def smooth_images(n: int, size: int = 28, seed: int = 0) -> np.ndarray:
    """Soft blobs: natural-image-like spectra with little energy at the Nyquist frequencies."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[:size, :size]
    out = np.zeros((n, 1, size, size))
    for i in range(n):
        for _ in range(3):
            cy, cx, s = rng.uniform(4, size - 4), rng.uniform(4, size - 4), rng.uniform(2, 5)
            out[i, 0] += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    return np.clip(out, 0, 1) * 2 - 1


def test_nyquist_fraction_of_a_pure_checkerboard_is_one() -> None:
    cb = checkerboard(28, 28, 1.0).numpy()
    assert M.nyquist_energy_fraction(cb) == pytest.approx(1.0)
    stripes = np.tile(np.array([1.0, -1.0]), 14)[None, None, None, :].repeat(28, 2)  # period 2 in x only
    assert M.nyquist_energy_fraction(stripes) == pytest.approx(1.0)


def test_faint_checkerboard_is_caught() -> None:
    real, gen = smooth_images(64, seed=0), smooth_images(64, seed=1)
    assert M.checkerboard_ratio(gen, real) == pytest.approx(1.0, rel=0.5)
    faint = gen + checkerboard(28, 28, 0.03).numpy()  # ±4 grey levels of 255
    assert M.checkerboard_ratio(faint, real) > 5


# --- properties ----------------------------------------------------------------------------

@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 1000), min_size=2, max_size=20).filter(lambda c: sum(c) > 0))
def test_kl_to_uniform_is_bounded_and_modes_are_counted(counts: list[int]) -> None:
    h = np.asarray(counts, np.float64) / sum(counts)
    kl = M.kl_to_uniform(h)
    assert -1e-12 <= kl <= math.log(len(h)) + 1e-12
    assert 1 <= M.modes_covered(h) <= len(h)


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(-3, 3))
def test_fid_is_symmetric_and_nonnegative(seed: int, shift: float) -> None:
    a = gaussian(200, 3, seed=seed)
    b = gaussian(200, 3, mean=shift, std=1.5, seed=seed + 1)
    assert M.fid(a, b) >= 0
    assert M.fid(a, b) == pytest.approx(M.fid(b, a), rel=1e-6, abs=1e-8)
