"""The units module: LeRobot's modes, exact inverse, derivatives scale only; the one statistics implementation."""

import numpy as np
import pytest
import torch

from configuration_niaf.normalization import (
    NORMALIZATION_MODES,
    QUANTILES,
    REQUIRED_STATS,
    STATS_KEYS,
    AffineNormalizer,
    RunningStats,
    affine_from_stats,
    compute_stats,
)

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


def test_one_compute_stats_matches_numpy_and_streaming_running_stats():
    rng = np.random.default_rng(7)
    x = rng.normal(loc=[3.0, -1.0, 50.0, 0.0], scale=[1.0, 0.01, 10.0, 2.0], size=(2_000, 4))
    got = compute_stats(x)  # one [N, D] array: the processor's fit_stats
    assert set(got) == set(STATS_KEYS) and got["count"] == [2_000]
    np.testing.assert_array_equal(got["min"], x.min(0))
    np.testing.assert_array_equal(got["max"], x.max(0))
    np.testing.assert_allclose(got["mean"], x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(got["std"], x.std(0), rtol=1e-10)  # population std, like LeRobot
    for key, q in QUANTILES.items():
        np.testing.assert_allclose(got[key], np.quantile(x, q, axis=0), rtol=1e-12, atol=1e-12)
    # the same numbers from batches (niaf-train's streaming pass), from torch, and from RunningStats itself
    batches = np.split(x, [1, 13, 700, 701, 1999])
    streamed = RunningStats(4)
    for b in batches:
        streamed.update(b)
    for other in (compute_stats(batches), compute_stats(torch.from_numpy(x)), streamed.result()):
        assert other["count"] == got["count"]
        for key in set(STATS_KEYS) - {"count"}:
            np.testing.assert_allclose(other[key], got[key], rtol=1e-12, atol=1e-12, err_msg=key)
    # beyond exact_limit the quantiles come from a seeded reservoir sample: close, moments still exact
    sampled = compute_stats(batches, exact_limit=1_000, reservoir_size=1_000)
    np.testing.assert_allclose(sampled["mean"], got["mean"], rtol=1e-12)
    for key in ("q10", "q50", "q90"):
        spread = np.quantile(x, 0.95, axis=0) - np.quantile(x, 0.05, axis=0)
        assert np.all(np.abs(np.asarray(sampled[key]) - got[key]) < 0.1 * spread), key
    with pytest.raises(ValueError, match=r"`state` must be rows \[N, D\]"):
        compute_stats(np.zeros(5), feature="state")
    with pytest.raises(ValueError, match="`action` rows contain NaN"):
        compute_stats(np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError, match="has no rows"):
        compute_stats([])


def test_mode_names_and_their_statistics_are_spelled_once():
    """The configuration, the processor and niaf-train all take the mode names from the units module."""
    from niaf_train.training.arguments import CHOICES

    import configuration_niaf

    assert set(REQUIRED_STATS) == set(NORMALIZATION_MODES)
    assert configuration_niaf.NORMALIZATION_MODES is NORMALIZATION_MODES
    assert configuration_niaf.STATS_KEYS is STATS_KEYS
    assert CHOICES["model.normalization_mode"] is NORMALIZATION_MODES
