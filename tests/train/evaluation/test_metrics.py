"""Trajectory metrics against hand computations on known signals."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from niaf_train.evaluation import trajectory_metrics as tm


def test_position_mse_masked_hand_computed():
    pred = np.zeros((2, 3, 2))
    ref = np.zeros((2, 3, 2))
    ref[0, 0] = [1.0, 3.0]  # squared errors 1, 9 -> mean over dims 5
    ref[1, 2] = [2.0, 2.0]  # 4, 4 -> 4 (masked out below)
    mask = np.ones((2, 3), bool)
    assert tm.position_mse(pred, ref) == pytest.approx((5.0 + 4.0) / 6)
    mask[1, 2] = False
    assert tm.position_mse(pred, ref, mask) == pytest.approx(5.0 / 5)
    with pytest.raises(ValueError, match="N, K, D"):
        tm.position_mse(pred[0], ref[0])


def test_jerk_of_a_pure_sine():
    # x = A sin(w t): jerk = -A w^3 cos(w t); over whole periods the mean of its square is A^2 w^6 / 2.
    amplitude, freq, dt = 0.3, 2.0, 1e-3
    w = 2 * np.pi * freq
    t = np.arange(0, 2.0 + 4 * dt, dt)  # four whole periods (plus the 4 samples the stencil eats)
    x = (amplitude * np.sin(w * t))[None, :, None]
    jerk = tm.jerk_from_positions(x, dt)
    exact = -amplitude * w**3 * np.cos(w * t[2:-2])
    np.testing.assert_allclose(jerk[0, :, 0], exact, rtol=0, atol=1e-3 * amplitude * w**3)
    assert tm.mean_squared_jerk(jerk) == pytest.approx(amplitude**2 * w**6 / 2, rel=2e-3)


def _sparc_reference(speed, dt, fc=10.0, thr=0.05, pad=4):
    """Direct DFT sum (no FFT), written independently of the module."""
    n = int(2 ** (np.ceil(np.log2(len(speed))) + pad))
    ks = np.arange(n)
    freqs = ks / (n * dt)
    sel = ks[freqs <= fc]
    idx = np.arange(len(speed))
    mags = np.array([abs(np.sum(speed * np.exp(-2j * np.pi * k * idx / n))) for k in sel])
    mags /= mags[0]
    last = max(i for i, m in enumerate(mags) if m >= thr)
    f = freqs[sel][: last + 1]
    m = mags[: last + 1]
    length = 0.0
    for i in range(1, len(f)):
        length += np.hypot((f[i] - f[i - 1]) / (f[-1] - f[0]), m[i] - m[i - 1])
    return -length


def test_sparc_matches_direct_dft_and_ranks_smoothness():
    dt = 0.01
    t = np.arange(0, 1.0, dt)
    bell = np.exp(-((t - 0.5) ** 2) / (2 * 0.1**2))  # one smooth sub-movement
    two = bell + np.exp(-((t - 0.8) ** 2) / (2 * 0.05**2))  # an added sub-movement
    for speed in (bell, two):
        assert tm.spectral_arc_length(speed, dt) == pytest.approx(_sparc_reference(speed, dt), rel=1e-9)
    assert tm.spectral_arc_length(bell, dt) > tm.spectral_arc_length(two, dt)  # smoother is closer to 0
    # amplitude does not matter
    assert tm.spectral_arc_length(3.0 * bell, dt) == pytest.approx(tm.spectral_arc_length(bell, dt), rel=1e-12)


def test_trajectory_metrics_baseline_and_velocity():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(4, 5, 3))
    mean = ref.reshape(-1, 3).mean(0)
    out = tm.trajectory_metrics(ref + 0.1, ref, predicted_velocities=ref, reference_velocities=ref + 0.2,
                                baseline=mean)
    assert out["position_mse"] == pytest.approx(0.01)
    assert out["velocity_mse"] == pytest.approx(0.04)
    assert out["baseline_position_mse"] == pytest.approx(np.mean((ref - mean) ** 2))


@pytest.mark.skipif(importlib.util.find_spec("evaluate") is None, reason="evaluate not installed")
def test_evaluate_load_local_module():
    import evaluate

    metric = evaluate.load(str(Path(tm.__file__)))
    ref = np.zeros((2, 3, 1))
    pred = ref + 0.5
    assert metric.compute(predictions=pred.tolist(), references=ref.tolist())["position_mse"] == pytest.approx(0.25)
