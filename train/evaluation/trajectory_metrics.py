"""Trajectory metrics for action-chunk policies: position error, velocity error, smoothness.

This file is self-contained (numpy only, no relative imports) so that it serves two uses:

* plain functions, used by ``niaf-train`` during evaluation: :func:`position_mse`, :func:`velocity_mse`,
  :func:`mean_squared_jerk`, :func:`jerk_from_positions`, :func:`spectral_arc_length`,
  :func:`trajectory_metrics`;
* an evaluate-compatible metric module: ``evaluate.load("/path/to/niaf_train/evaluation/trajectory_metrics.py")`` gives
  an ``EvaluationModule`` whose ``compute(predictions=..., references=..., ...)`` returns the same numbers
  (the class is defined only when the ``evaluate`` package is installed).

Units: positions and velocities in whatever units the caller passes (physical or normalised, per second for
velocities); ``dt`` in seconds; jerk in units per second³. Masked entries (padded chunk steps past an
episode's end) are left out of every mean.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _masked_mean_sq(diff: np.ndarray, mask: np.ndarray | None) -> float:
    """Mean over valid (sample, step) of the squared error averaged over dimensions. diff [N, K, D], mask [N, K]."""
    per_step = np.mean(np.square(diff), axis=-1)
    if mask is None:
        return float(per_step.mean())
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return float("nan")
    return float(per_step[mask].mean())


def position_mse(predictions: Any, references: Any, mask: Any = None) -> float:
    """Mean squared position error per action dimension: mean over valid steps and dims of (â - a)².

    Args:
        predictions, references: [N, K, D] positions (the same units).
        mask: [N, K] bool, True for real steps (None: all).
    """
    p, r = np.asarray(predictions, np.float64), np.asarray(references, np.float64)
    if p.shape != r.shape or p.ndim != 3:
        raise ValueError(f"position_mse: predictions {p.shape} and references {r.shape} must both be [N, K, D]")
    return _masked_mean_sq(p - r, mask)


def velocity_mse(predictions: Any, references: Any, mask: Any = None) -> float:
    """Mean squared velocity error per dimension (units per second, squared); same layout as position_mse."""
    return position_mse(predictions, references, mask)


def mean_squared_jerk(jerk: Any, mask: Any = None) -> float:
    """Mean over time points (and dims) of the squared jerk. jerk [N, T, D] per second³ → units²/s⁶."""
    j = np.asarray(jerk, np.float64)
    if j.ndim != 3:
        raise ValueError(f"mean_squared_jerk: jerk must be [N, T, D], got {j.shape}")
    return _masked_mean_sq(j, mask)


def jerk_from_positions(positions: Any, dt: float) -> np.ndarray:
    """Third derivative by central finite differences: [N, T, D] positions → [N, T-4, D] jerk per second³.

    Uses (x[t+2] - 2x[t+1] + 2x[t-1] - x[t-2]) / (2 dt³), second-order accurate; for a reference trajectory
    given only as samples (the analytic jerk of a NIAF prediction needs no differencing).
    """
    x = np.asarray(positions, np.float64)
    if x.ndim != 3 or x.shape[1] < 5:
        raise ValueError(f"jerk_from_positions: need [N, T>=5, D], got {x.shape}")
    if dt <= 0:
        raise ValueError(f"jerk_from_positions: dt must be > 0 seconds, got {dt}")
    return (x[:, 4:] - 2 * x[:, 3:-1] + 2 * x[:, 1:-3] - x[:, :-4]) / (2.0 * dt**3)


def spectral_arc_length(speed: Any, dt: float, cutoff_hz: float = 10.0, threshold: float = 0.05,
                        pad_level: int = 4) -> float:
    """SPARC smoothness of one speed profile (Balasubramanian et al., 2015): closer to 0 is smoother.

    The magnitude spectrum of the speed profile (zero-padded to ``2^(ceil(log2 T) + pad_level)`` samples) is
    normalised by its DC value; the arc length of that curve, with frequency normalised by the cut-off ``ωc``,
    is measured up to the last frequency below ``cutoff_hz`` whose magnitude is at least ``threshold``.
    A single smooth bell-shaped movement scores about -1.4 to -1.6; every added sub-movement lowers it.

    Args:
        speed: [T] speed samples (non-negative, e.g. the norm of the velocity), any units.
        dt: sample period in seconds.
        cutoff_hz: upper frequency bound ωc in Hz.
        threshold: magnitude (relative to DC) below which the spectrum tail is ignored.
        pad_level: extra powers of two of zero padding.

    Returns:
        The (negative) arc length; 0 for a profile with no energy.
    """
    v = np.asarray(speed, np.float64).reshape(-1)
    if v.size < 2:
        raise ValueError("spectral_arc_length: need at least 2 speed samples")
    n_fft = int(2 ** (np.ceil(np.log2(v.size)) + pad_level))
    freqs = np.arange(n_fft) / (n_fft * dt)
    magnitude = np.abs(np.fft.fft(v, n_fft))
    if magnitude[0] <= 0:
        return 0.0
    magnitude = magnitude / magnitude[0]
    keep = freqs <= cutoff_hz
    f, m = freqs[keep], magnitude[keep]
    above = np.nonzero(m >= threshold)[0]
    last = int(above[-1]) if above.size else 0
    f, m = f[: last + 1], m[: last + 1]
    if f.size < 2:
        return 0.0
    df = np.diff(f) / (f[-1] - f[0])
    dm = np.diff(m)
    return float(-np.sum(np.sqrt(df**2 + dm**2)))


def trajectory_metrics(
    predictions: Any,
    references: Any,
    mask: Any = None,
    predicted_velocities: Any = None,
    reference_velocities: Any = None,
    dense_velocities: Any = None,
    dense_jerk: Any = None,
    dense_dt: float | None = None,
    baseline: Any = None,
) -> dict[str, float]:
    """All evaluation numbers at once.

    Args:
        predictions, references: [N, K, D] positions at the K chunk points; ``mask`` [N, K] True = real.
        predicted_velocities, reference_velocities: [N, K, D] per second (velocity_mse when both given).
        dense_velocities, dense_jerk: [N, T, D] predictions at T dense query points (e.g. 4× the training
            rate) spaced ``dense_dt`` seconds: mean squared jerk and mean SPARC of the speed profiles.
        baseline: [D] constant prediction (e.g. the training mean action): ``baseline_position_mse``.

    Returns:
        ``position_mse``, optionally ``velocity_mse``, ``mean_squared_jerk``, ``sparc``,
        ``baseline_position_mse``.
    """
    out = {"position_mse": position_mse(predictions, references, mask)}
    if predicted_velocities is not None and reference_velocities is not None:
        out["velocity_mse"] = velocity_mse(predicted_velocities, reference_velocities, mask)
    if dense_jerk is not None:
        out["mean_squared_jerk"] = mean_squared_jerk(dense_jerk)
    if dense_velocities is not None:
        if dense_dt is None:
            raise ValueError("trajectory_metrics: dense_velocities need dense_dt (seconds between query points)")
        speeds = np.linalg.norm(np.asarray(dense_velocities, np.float64), axis=-1)
        out["sparc"] = float(np.mean([spectral_arc_length(s, dense_dt, cutoff_hz=min(10.0, 0.5 / dense_dt)) for s in speeds]))
    if baseline is not None:
        ref = np.asarray(references, np.float64)
        const = np.broadcast_to(np.asarray(baseline, np.float64), ref.shape)
        out["baseline_position_mse"] = position_mse(const, ref, mask)
    return out


try:  # the evaluate-compatible module (optional dependency)
    import datasets as _datasets
    import evaluate as _evaluate
except ImportError:  # pragma: no cover - evaluate not installed
    _evaluate = None

if _evaluate is not None:

    class NiafTrajectoryMetrics(_evaluate.Metric):
        """evaluate metric: position MSE (+ velocity MSE, mean squared jerk) of predicted action chunks.

        ``compute(predictions=[N][K][D], references=[N][K][D], mask=None, predicted_velocities=None,
        reference_velocities=None, dense_jerk=None)``.
        """

        def _info(self) -> Any:
            seq = _datasets.Sequence(_datasets.Sequence(_datasets.Value("float64")))
            return _evaluate.MetricInfo(
                description="Position/velocity error and jerk of predicted action chunks (NIAF).",
                citation="arXiv 2603.01766",
                inputs_description="predictions, references: [N, K, D] positions",
                features=_datasets.Features({"predictions": seq, "references": seq}),
            )

        def _compute(self, predictions: Any, references: Any, mask: Any = None, predicted_velocities: Any = None,
                     reference_velocities: Any = None, dense_jerk: Any = None) -> dict[str, float]:
            return trajectory_metrics(predictions, references, mask, predicted_velocities, reference_velocities,
                                      dense_jerk=dense_jerk)


__all__ = [
    "jerk_from_positions",
    "mean_squared_jerk",
    "position_mse",
    "spectral_arc_length",
    "trajectory_metrics",
    "velocity_mse",
]
