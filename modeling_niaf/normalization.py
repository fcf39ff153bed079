"""Per-dimension affine normalisation of actions and states (numpy only, no torch).

Every mode is an affine map ``x_norm = (x - center) / half_range`` per dimension, so the inverse is exact
(up to float rounding) and a time derivative only scales: ``v_norm = v / half_range`` (no offset).

Modes use LeRobot's names:

* ``QUANTILES``: q01 → -1, q99 → +1 (robust to outliers; the default);
* ``MIN_MAX``: min → -1, max → +1;
* ``MEAN_STD``: zero mean, unit standard deviation;
* ``IDENTITY``: unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

logger = logging.getLogger(__name__)

EPS = 1e-8
"""Smallest half-range of an action dimension; a constant one (max == min) is centred, not divided by zero."""

MIN_STATE_HALF_RANGE = 1e-6
"""Smallest half-range by which a *state* dimension is divided. The state is a network input: a near-zero range
(a joint that never moved in the data) would amplify any deviation at deployment (1 mm off → 10⁵ with EPS), so
such a dimension is centred but kept at unit scale. Actions are outputs, multiplied by the range, so a tiny range
only keeps the prediction at the constant it always had."""

_BOUNDS = {"QUANTILES": ("q01", "q99"), "MIN_MAX": ("min", "max")}


def affine_from_stats(
    stats: Mapping[str, Sequence[float]] | None,
    mode: str,
    dim: int,
    skip_dims: Sequence[int] = (),
    feature: str = "action",
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(center, half_range)``, float64 arrays of shape [dim], for one feature.

    Args:
        stats: the feature's statistics (keys ``min``, ``max``, ``mean``, ``std``, ``q01``, ``q99``...),
            or None, which is only allowed with ``mode="IDENTITY"``.
        mode: QUANTILES, MIN_MAX, MEAN_STD or IDENTITY.
        dim: the feature's dimension.
        skip_dims: dimensions left unnormalised (center 0, half-range 1), e.g. a binary gripper.
        feature: the feature's name, used in error messages.
    """
    center = np.zeros(dim, dtype=np.float64)
    half = np.ones(dim, dtype=np.float64)
    if mode == "IDENTITY":
        return center, half
    if stats is None:
        raise ValueError(
            f"normalization: mode {mode} for feature {feature!r} needs statistics, but none were given "
            "(compute them with `niaf-data stats` or pass normalization_stats)."
        )

    def vec(key: str) -> np.ndarray:
        if key not in stats:
            raise ValueError(f"normalization: mode {mode} needs {feature!r} stats key {key!r}; found {sorted(stats)}.")
        try:
            v = np.asarray(stats[key], dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise ValueError(f"normalization: {feature!r} stats {key!r} must be a list of numbers.") from None
        if v.shape != (dim,):
            raise ValueError(f"normalization: {feature!r} stats {key!r} has shape {v.shape}, expected ({dim},).")
        if not np.all(np.isfinite(v)):
            bad = np.nonzero(~np.isfinite(v))[0].tolist()
            raise ValueError(f"normalization: {feature!r} stats {key!r} is NaN or inf in dims {bad}.")
        return v

    if mode in _BOUNDS:
        lo, hi = (vec(k) for k in _BOUNDS[mode])
        if np.any(hi < lo):
            bad = np.nonzero(hi < lo)[0].tolist()
            raise ValueError(f"normalization: {feature!r} stats have {_BOUNDS[mode][1]} < {_BOUNDS[mode][0]} in dims {bad}.")
        center = (hi + lo) / 2.0
        half = (hi - lo) / 2.0
    elif mode == "MEAN_STD":
        center = vec("mean")
        half = vec("std")
        if np.any(half < 0):
            raise ValueError(f"normalization: {feature!r} stats 'std' is negative in dims {np.nonzero(half < 0)[0].tolist()}.")
    else:
        raise ValueError(f"normalization: unknown mode {mode!r}; expected QUANTILES, MIN_MAX, MEAN_STD or IDENTITY.")
    if feature == "state":
        degenerate = half < MIN_STATE_HALF_RANGE
        if degenerate.any():
            logger.info(
                "normalization: 'state' stats have a half-range below %g in dims %s; they are centred, not scaled.",
                MIN_STATE_HALF_RANGE,
                np.nonzero(degenerate)[0].tolist(),
            )
            half = np.where(degenerate, 1.0, half)
    half = np.maximum(half, EPS)
    for d in skip_dims:
        center[d] = 0.0
        half[d] = 1.0
    return center, half


class AffineNormalizer:
    """Normalise / de-normalise one feature with an exact inverse; works on numpy arrays and torch tensors.

    Args:
        center, half_range: float arrays of shape [D] (physical units).
        feature: the feature's name for error messages.
    """

    def __init__(self, center: np.ndarray, half_range: np.ndarray, feature: str = "action") -> None:
        self.center = np.asarray(center, dtype=np.float64)
        self.half_range = np.asarray(half_range, dtype=np.float64)
        self.feature = feature
        if self.center.shape != self.half_range.shape or self.center.ndim != 1:
            raise ValueError(f"AffineNormalizer({feature}): center and half_range must both have shape [D].")

    @classmethod
    def from_stats(cls, stats, mode: str, dim: int, skip_dims: Sequence[int] = (), feature: str = "action"):
        return cls(*affine_from_stats(stats, mode, dim, skip_dims, feature), feature=feature)

    @property
    def dim(self) -> int:
        return int(self.center.shape[0])

    def _params(self, x):
        if self.dim != x.shape[-1]:
            raise ValueError(f"{self.feature}: last dimension is {x.shape[-1]}, expected {self.dim}.")
        if isinstance(x, np.ndarray):
            return self.center.astype(x.dtype, copy=False), self.half_range.astype(x.dtype, copy=False)
        import torch  # only reached with torch inputs

        return (
            torch.as_tensor(self.center, dtype=x.dtype, device=x.device),
            torch.as_tensor(self.half_range, dtype=x.dtype, device=x.device),
        )

    def normalize(self, x):
        """Physical → normalised, [..., D]."""
        c, h = self._params(x)
        return (x - c) / h

    def denormalize(self, x):
        """Normalised → physical, [..., D]."""
        c, h = self._params(x)
        return x * h + c

    def normalize_derivative(self, dx):
        """A time derivative (velocity, ...) in physical units → normalised units: scale only, no offset."""
        _, h = self._params(dx)
        return dx / h

    def denormalize_derivative(self, dx):
        """A time derivative in normalised units → physical units: scale only, no offset."""
        _, h = self._params(dx)
        return dx * h


__all__ = ["AffineNormalizer", "affine_from_stats", "EPS", "MIN_STATE_HALF_RANGE"]
