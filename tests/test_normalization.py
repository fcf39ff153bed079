"""Affine normalisation: LeRobot's modes, exact inverse, derivatives scale only."""

import numpy as np
import pytest
import torch

from modeling_niaf.normalization import AffineNormalizer, affine_from_stats

STATS = {
    "min": [-2.0, 0.0, 5.0],
    "max": [2.0, 1.0, 5.0],  # dim 2 is constant
    "q01": [-1.0, 0.1, 5.0],
    "q99": [1.0, 0.9, 5.0],
    "mean": [0.5, 0.5, 5.0],
    "std": [2.0, 0.25, 0.0],
}


@pytest.mark.parametrize(
    "mode, low_key, high_key",
    [("QUANTILES", "q01", "q99"), ("MIN_MAX", "min", "max")],
)
def test_bounds_map_to_minus_one_and_one(mode, low_key, high_key):
    norm = AffineNormalizer.from_stats(STATS, mode, 3)
    lo = np.array(STATS[low_key])
    hi = np.array(STATS[high_key])
    np.testing.assert_allclose(norm.normalize(lo)[:2], [-1.0, -1.0], atol=1e-12)
    np.testing.assert_allclose(norm.normalize(hi)[:2], [1.0, 1.0], atol=1e-12)
    # a constant dimension is centred, not divided by zero
    assert norm.normalize(np.array([0.0, 0.5, 5.0]))[2] == 0.0


def test_mean_std_matches_hand_computation():
    norm = AffineNormalizer.from_stats(STATS, "MEAN_STD", 3)
    x = np.array([2.5, 0.0, 5.0])
    np.testing.assert_allclose(norm.normalize(x), [(2.5 - 0.5) / 2.0, (0.0 - 0.5) / 0.25, 0.0])


@pytest.mark.parametrize("mode", ["QUANTILES", "MIN_MAX", "MEAN_STD", "IDENTITY"])
def test_exact_inverse_numpy_and_torch(mode):
    norm = AffineNormalizer.from_stats(STATS, mode, 3, skip_dims=[1])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 4, 3))
    np.testing.assert_allclose(norm.denormalize(norm.normalize(x)), x, rtol=0, atol=1e-12)
    xt = torch.from_numpy(x)
    torch.testing.assert_close(norm.denormalize(norm.normalize(xt)), xt, rtol=0, atol=1e-12)
    np.testing.assert_allclose(norm.normalize(x)[..., 1], x[..., 1])  # skipped dim untouched


def test_derivatives_scale_without_offset():
    norm = AffineNormalizer.from_stats(STATS, "QUANTILES", 3)
    x0, x1, dt = np.array([0.2, 0.3, 5.0]), np.array([0.4, 0.2, 5.0]), 0.1
    v_phys = (x1 - x0) / dt
    v_norm = (norm.normalize(x1) - norm.normalize(x0)) / dt
    np.testing.assert_allclose(norm.normalize_derivative(v_phys), v_norm, rtol=1e-12)
    np.testing.assert_allclose(norm.denormalize_derivative(v_norm), v_phys, rtol=1e-12)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="q99"):
        affine_from_stats({"q01": [0.0]}, "QUANTILES", 1)
    with pytest.raises(ValueError, match="expected \\(2,\\)"):
        affine_from_stats({"q01": [0.0], "q99": [1.0]}, "QUANTILES", 2)
    with pytest.raises(ValueError, match="needs statistics"):
        affine_from_stats(None, "MIN_MAX", 2, feature="state")
    with pytest.raises(ValueError, match="max < min"):
        affine_from_stats({"min": [1.0], "max": [0.0]}, "MIN_MAX", 1)
    with pytest.raises(ValueError, match="unknown mode"):
        affine_from_stats(STATS, "minmax", 3)
    with pytest.raises(ValueError, match="last dimension is 2, expected 3"):
        AffineNormalizer.from_stats(STATS, "QUANTILES", 3).normalize(np.zeros((4, 2)))
