"""Physical units of NIAF: the one module that owns them (numpy only; no torch, no transformers).

Everything that maps between the robot's physical units and the units the network sees lives here, both
directions next to each other:

* **names**: the normalisation modes (LeRobot's: ``QUANTILES`` q01 → -1, q99 → +1, robust to outliers, the
  default; ``MIN_MAX`` min → -1, max → +1; ``MEAN_STD`` zero mean, unit std; ``IDENTITY`` unchanged), the
  statistics keys and the quantile list of LeRobot's ``stats.json`` layout;
* **statistics**: `RunningStats` (streaming, exact moments, exact or reservoir-sampled quantiles) and
  `compute_stats`, the one implementation used by `NiafProcessor.fit_stats` and by niaf-train / niaf-data;
  `check_normalization_stats` validates a ``normalization_stats`` dict (used by `NiafConfig`);
* **normalise / de-normalise**: `affine_from_stats` and `AffineNormalizer`. Every mode is an affine map
  ``x_norm = (x - center) / half_range`` per dimension, so the inverse is exact (up to float rounding) and a
  time derivative is only scaled, never offset: ``v_norm = v / half_range``;
* **absolute / relative to the state** ("delta" actions, ``relative_action_state_indices``): `to_relative`
  turns absolute chunks into ``a_i(t_k) - state_s(t_obs)``; `relative_offset` is what is added back (to the
  position only: a constant offset has no time derivative) and `to_absolute` adds it.

Where the statistics are stored: **once per checkpoint**, in the model's ``config.json``
(``NiafConfig.normalization_stats``), so that ``model.generate_actions(**inputs)`` returns physical positions
and per-second derivatives in one call. A `NiafProcessor` saved with a model (``model.save_pretrained(dir,
processor=processor)``) writes no copy into ``processor_config.json`` and reads them from the same folder's
``config.json`` when loaded; only a processor saved on its own keeps them in its ``processor_config.json``.

Who calls what: the processor normalises inputs and targets (and makes targets relative); the model
de-normalises its output (`affine_from_stats`) and adds `relative_offset` back; niaf-train computes the
statistics (`RunningStats`) and compares held-out predictions as deltas (`to_relative`).

This file sits in the torch-free ``configuration_niaf`` package (``NiafConfig`` validates with it) and is
shipped to the Hub flat next to ``configuration_niaf.py`` and ``modeling_niaf.py``; it imports nothing of ours.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

NORMALIZATION_MODES: tuple[str, ...] = ("QUANTILES", "MIN_MAX", "MEAN_STD", "IDENTITY")
"""Normalisation modes, with LeRobot's names. All map a feature per dimension to roughly [-1, 1]."""

REQUIRED_STATS: dict[str, tuple[str, ...]] = {
    "QUANTILES": ("q01", "q99"), "MIN_MAX": ("min", "max"), "MEAN_STD": ("mean", "std"), "IDENTITY": (),
}
"""Statistics each mode reads: (low, high) bounds mapped to -1/+1, or (center, half-range) for MEAN_STD."""

QUANTILES: dict[str, float] = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
"""Quantiles kept per dimension (LeRobot's keys)."""

STATS_KEYS: tuple[str, ...] = ("min", "max", "mean", "std", "count", *QUANTILES)
"""Statistics keys per feature in LeRobot's ``stats.json`` layout (``count`` = [number of rows])."""

EPS = 1e-8
"""Smallest half-range of an action dimension; a constant one (max == min) is centred, not divided by zero."""

MIN_STATE_HALF_RANGE = 1e-6
"""Smallest half-range by which a *state* dimension is divided. The state is a network input: a near-zero range
(a joint that never moved in the data) would amplify any deviation at deployment (1 mm off → 10⁵ with EPS), so
such a dimension is centred but kept at unit scale. Actions are outputs, multiplied by the range, so a tiny range
only keeps the prediction at the constant it always had."""


def check_mode(mode: Any, where: str) -> str:
    """Return ``mode`` if it is one of `NORMALIZATION_MODES`, else raise a ValueError naming ``where``."""
    if mode not in NORMALIZATION_MODES:
        raise ValueError(f"{where}: `normalization_mode` must be one of {NORMALIZATION_MODES}, got {mode!r}.")
    return mode


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

    if mode not in REQUIRED_STATS:
        raise ValueError(f"normalization: unknown mode {mode!r}; expected one of {NORMALIZATION_MODES}.")
    first, second = (vec(k) for k in REQUIRED_STATS[mode])
    if mode == "MEAN_STD":
        center, half = first, second
        if np.any(half < 0):
            raise ValueError(f"normalization: {feature!r} stats 'std' is negative in dims {np.nonzero(half < 0)[0].tolist()}.")
    else:  # (low, high) bounds → -1, +1
        lo, hi = first, second
        if np.any(hi < lo):
            bad = np.nonzero(hi < lo)[0].tolist()
            low_key, high_key = REQUIRED_STATS[mode]
            raise ValueError(f"normalization: {feature!r} stats have {high_key} < {low_key} in dims {bad}.")
        center = (hi + lo) / 2.0
        half = (hi - lo) / 2.0
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




# ----------------------------------------------------------------------------------------------------------
# Statistics: one implementation (streaming), one validator
# ----------------------------------------------------------------------------------------------------------
class RunningStats:
    """Streaming per-dimension statistics of rows of width ``dim`` (LeRobot's ``stats.json`` keys).

    One pass over batches of rows ``[N, D]`` keeps

    * ``count``, ``min``, ``max`` exactly;
    * ``mean`` and ``std`` (population, ddof = 0, like LeRobot) exactly, merging batches with Chan et al.'s
      parallel update in float64 (no catastrophic cancellation of a sum of squares);
    * the `QUANTILES`: **exact** (numpy's linear interpolation over all rows) while at most ``exact_limit``
      rows were seen; beyond that, from a uniform random sample of ``reservoir_size`` rows kept by reservoir
      sampling (Vitter's algorithm R, seeded, so deterministic). The error of a quantile q from an n-row
      uniform sample is about sqrt(q(1-q)/n) in rank: with the default n = 200,000, ±0.00022 in rank for
      q01/q99 and ±0.0011 for q50 (one standard error).

    Args:
        dim: D, the width of each row.
        exact_limit: quantiles are exact while at most this many rows were added.
        reservoir_size: rows kept for approximate quantiles beyond ``exact_limit`` (<= exact_limit).
        seed: seed of the reservoir sampler.
        feature: the feature's name in error messages.
    """

    def __init__(
        self, dim: int, exact_limit: int = 1_000_000, reservoir_size: int = 200_000, seed: int = 0,
        feature: str = "rows",
    ) -> None:
        if dim < 1:
            raise ValueError(f"RunningStats: dim must be >= 1, got {dim}")
        if not 1 <= reservoir_size <= exact_limit:
            raise ValueError(f"RunningStats: need 1 <= reservoir_size ({reservoir_size}) <= exact_limit ({exact_limit})")
        self.dim = dim
        self.exact_limit = exact_limit
        self.reservoir_size = reservoir_size
        self.feature = feature
        self.count = 0
        self._mean = np.zeros(dim, np.float64)
        self._m2 = np.zeros(dim, np.float64)
        self._min = np.full(dim, np.inf)
        self._max = np.full(dim, -np.inf)
        self._rows: list[np.ndarray] = []  # exact mode: every batch
        self._reservoir: np.ndarray | None = None  # sample mode
        self._rng = np.random.default_rng(seed)

    @property
    def exact(self) -> bool:
        """Whether the quantiles are exact (False once more than ``exact_limit`` rows were added)."""
        return self._reservoir is None

    def update(self, rows: Any) -> None:
        """Add a batch of rows, float [N, D] (numpy or torch; a [D] vector counts as one row)."""
        x = _float64(rows)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"RunningStats: `{self.feature}` rows must have shape [N, {self.dim}], got {x.shape}")
        n = x.shape[0]
        if n == 0:
            return
        if not np.isfinite(x).all():
            bad = np.nonzero(~np.isfinite(x).all(axis=1))[0][:5].tolist()
            raise ValueError(
                f"RunningStats: `{self.feature}` rows contain NaN or inf (rows {bad} of this batch); validate the data first"
            )
        # Chan et al. parallel merge of (count, mean, M2)
        b_mean = x.mean(axis=0)
        b_m2 = ((x - b_mean) ** 2).sum(axis=0)
        total = self.count + n
        delta = b_mean - self._mean
        self._mean = self._mean + delta * (n / total)
        self._m2 = self._m2 + b_m2 + delta**2 * (self.count * n / total)
        self._min = np.minimum(self._min, x.min(axis=0))
        self._max = np.maximum(self._max, x.max(axis=0))
        seen = self.count
        self.count = total
        if self._reservoir is None:
            self._rows.append(x)
            if total > self.exact_limit:
                self._start_reservoir()
        else:
            self._reservoir_add(x, seen)

    def _start_reservoir(self) -> None:
        all_rows = np.concatenate(self._rows)
        self._rows = []
        r = self.reservoir_size
        # process sequentially: the first r rows fill the reservoir, the rest go through algorithm R
        self._reservoir = all_rows[:r].copy()
        self._reservoir_add(all_rows[r:], r)
        logger.info("RunningStats: more than %d rows, quantiles now from a %d-row reservoir sample", self.exact_limit, r)

    def _reservoir_add(self, x: np.ndarray, seen: int) -> None:
        """Algorithm R for rows x whose global positions are seen, seen+1, ... (all >= reservoir_size)."""
        assert self._reservoir is not None
        positions = seen + np.arange(x.shape[0], dtype=np.float64)
        accept = self._rng.random(x.shape[0]) < self.reservoir_size / (positions + 1.0)
        idx = np.nonzero(accept)[0]
        slots = self._rng.integers(0, self.reservoir_size, size=idx.size)
        for i, s in zip(idx, slots, strict=True):  # in order: a later row replaces an earlier one
            self._reservoir[s] = x[i]

    def result(self) -> dict[str, list[float]]:
        """The statistics as lists (LeRobot layout, keys `STATS_KEYS`); raises if no row was added."""
        if self.count == 0:
            raise ValueError(f"RunningStats: no rows were added for `{self.feature}`")
        sample = np.concatenate(self._rows) if self._reservoir is None else self._reservoir
        qs = np.quantile(sample, list(QUANTILES.values()), axis=0)
        out = {
            "min": self._min.tolist(),
            "max": self._max.tolist(),
            "mean": self._mean.tolist(),
            "std": np.sqrt(np.maximum(self._m2 / self.count, 0.0)).tolist(),
            "count": [int(self.count)],
        }
        for key, q in zip(QUANTILES, qs, strict=True):
            out[key] = q.tolist()
        return out


def compute_stats(values: Any, feature: str = "action", **kwargs: Any) -> dict[str, list[float]]:
    """Per-dimension statistics (`RunningStats`) of a feature, physical units, in LeRobot's layout.

    Args:
        values: the rows, either one array [N, D] (numpy or torch) or an iterable of such batches (also of
            [D] vectors, one row each), e.g. all frames of a dataset.
        feature: the feature's name in error messages.
        kwargs: `RunningStats` options (``exact_limit``, ``reservoir_size``, ``seed``).

    Returns:
        ``{"min", "max", "mean", "std", "q01", "q10", "q50", "q90", "q99": [D] lists, "count": [N]}``.
    """
    one_array = hasattr(values, "shape")
    acc: RunningStats | None = None
    for batch in [values] if one_array else values:
        rows = _float64(batch)
        if rows.ndim not in ((2,) if one_array else (1, 2)) or rows.shape[-1] == 0:
            raise ValueError(f"compute_stats: `{feature}` must be rows [N, D], got shape {rows.shape}.")
        if acc is None:
            acc = RunningStats(rows.shape[-1], feature=feature, **kwargs)
        acc.update(rows)
    if acc is None or acc.count == 0:
        raise ValueError(f"compute_stats: `{feature}` has no rows (expected a non-empty [N, D] array).")
    return acc.result()


def check_normalization_stats(
    stats: Any, mode: str, dims: Mapping[str, int | None], where: str = "NiafConfig"
) -> dict[str, dict[str, list[float]]] | None:
    """Validate a ``normalization_stats`` dict and return a clean copy (plain floats, ``count`` dropped).

    Args:
        stats: ``{"action": {...}, "state": {...}}`` in LeRobot's layout, or None.
        mode: the normalisation mode; every feature given must carry `REQUIRED_STATS` ``[mode]``.
        dims: the features allowed and their dimensions (None: not checked).
        where: the owner named in the ValueError (e.g. ``NiafConfig``).
    """
    if stats is None:
        return None
    if not isinstance(stats, Mapping):
        raise ValueError(f"{where}: `normalization_stats` must be a dict, got {type(stats).__name__}.")
    clean: dict[str, dict[str, list[float]]] = {}
    for feature, feature_stats in stats.items():
        if feature not in dims:
            raise ValueError(
                f"{where}: `normalization_stats` has unknown feature {feature!r}; expected one of {sorted(dims)}."
            )
        if not isinstance(feature_stats, Mapping):
            raise ValueError(f"{where}: `normalization_stats[{feature!r}]` must be a dict of lists.")
        expected = dims[feature]
        clean[feature] = {}
        for key, vector in feature_stats.items():
            if key not in STATS_KEYS:
                raise ValueError(
                    f"{where}: `normalization_stats[{feature!r}]` has unknown key {key!r}; expected one of {STATS_KEYS}."
                )
            if key == "count":
                continue
            if not isinstance(vector, (list, tuple)) or not all(
                isinstance(x, numbers.Real) and not isinstance(x, bool) for x in vector
            ):
                raise ValueError(f"{where}: `normalization_stats[{feature!r}][{key!r}]` must be a flat list of numbers.")
            if expected is not None and len(vector) != expected:
                raise ValueError(
                    f"{where}: `normalization_stats[{feature!r}][{key!r}]` has {len(vector)} entries, "
                    f"expected {expected} ({feature}_dim)."
                )
            values = [float(x) for x in vector]
            if not all(np.isfinite(values)):
                raise ValueError(f"{where}: `normalization_stats[{feature!r}][{key!r}]` is not finite.")
            clean[feature][key] = values
        missing = [k for k in REQUIRED_STATS[mode] if k not in clean[feature]]
        if missing:
            raise ValueError(
                f"{where}: normalization_mode={mode} needs {missing} in `normalization_stats[{feature!r}]`, "
                f"which has {sorted(clean[feature])}."
            )
    return clean


# ----------------------------------------------------------------------------------------------------------
# Absolute ↔ relative to the state
# ----------------------------------------------------------------------------------------------------------
def check_relative_action_state_indices(
    indices: Any, action_dim: int, state_dim: int | None, name: str = "relative_action_state_indices"
) -> list[int | None] | None:
    """Validate a ``relative_action_state_indices`` list for actions of ``action_dim`` and a state of ``state_dim``.

    One entry per action dim: an int index into the state (the dim is predicted relative to that state entry)
    or None (absolute). Used by `NiafConfig`, `NiafProcessor` and niaf-train, each naming its own ``name``
    (config key or command-line flag) in the ValueError. ``state_dim`` None (there is no state) raises for any
    list. Returns the list with plain ints, or None for None.
    """
    if indices is None:
        return None
    if not isinstance(indices, (list, tuple)):
        raise ValueError(
            f"`{name}` must be None or a list of {action_dim} entries (one per action dim: an int state index or "
            f"None), got {type(indices).__name__} ({indices!r})."
        )
    if state_dim is None:
        raise ValueError(f"`{name}` is set but there is no robot state (`observation.state`) to take the deltas from.")
    if len(indices) != action_dim:
        raise ValueError(
            f"`{name}` has {len(indices)} entries but there are {action_dim} action dims (one entry per action dim: "
            f"an int state index or None): {list(indices)!r}."
        )
    out: list[int | None] = []
    for i, s in enumerate(indices):
        if s is None:
            out.append(None)
            continue
        if isinstance(s, bool) or not isinstance(s, numbers.Integral):
            raise ValueError(f"`{name}[{i}]` must be an int state index or None, got {type(s).__name__} ({s!r}).")
        if not 0 <= s < state_dim:
            raise ValueError(f"`{name}[{i}]` = {s} is not a state index in [0, {state_dim}) (the state has {state_dim} dims).")
        out.append(int(s))
    if all(s is None for s in out):
        raise ValueError(
            f"`{name}` has no int entry, so no action dim would be relative; use None for all-absolute actions."
        )
    return out


def relative_offset(
    state: Any, indices: Sequence[int | None], name: str = "relative_action_state_indices"
) -> np.ndarray:
    """What relative actions are relative to: ``offset[..., i] = state[..., indices[i]]``, 0 for absolute dims.

    Args:
        state: [S] or [B, S], the physical state at the observation time (numpy or torch).
        indices: one entry per action dim: a state index, or None (absolute dim).
        name: how the ValueError for bad ``indices`` names them.

    Returns:
        float64 [D] or [B, D], physical units. Subtracted from every chunk point by `to_relative`, added back to
        the position by `to_absolute` (and by the model's ``ActionFunction``); never to a derivative.
    """
    if indices is None:
        raise ValueError(f"`{name}` is None: no action dim is relative to the state.")
    st = _float64(state)
    if st.ndim not in (1, 2):
        raise ValueError(f"relative actions: `state` must be [S] or [B, S], got shape {st.shape}.")
    checked = check_relative_action_state_indices(list(indices), len(indices), st.shape[-1], name=name)
    offset = np.zeros((*st.shape[:-1], len(checked)), dtype=np.float64)
    dims = [i for i, s in enumerate(checked) if s is not None]
    offset[..., dims] = st[..., [checked[i] for i in dims]]
    return offset


def _chunk_offset(actions: Any, state: Any, indices: Sequence[int | None], name: str) -> tuple[np.ndarray, np.ndarray]:
    a, st = _float64(actions), _float64(state)
    if a.ndim not in (2, 3):
        raise ValueError(f"relative actions: `action` must be [K, D] or [B, K, D], got shape {a.shape}.")
    if st.ndim != a.ndim - 1 or (a.ndim == 3 and st.shape[0] != a.shape[0]):
        raise ValueError(
            f"relative actions: `state` must be [S] for a [K, D] chunk or [B, S] for [B, K, D] chunks; got action "
            f"{a.shape} and state {st.shape}."
        )
    check_relative_action_state_indices(indices, a.shape[-1], st.shape[-1], name=name)
    return a, relative_offset(st, indices, name)[..., None, :]  # the same state for every chunk point


def to_relative(
    actions: Any, state: Any, indices: Sequence[int | None], name: str = "relative_action_state_indices"
) -> np.ndarray:
    """Absolute chunks → deltas from the state at the observation time: ``a[..., k, i] - state[..., indices[i]]``.

    Args:
        actions: [K, D] or [B, K, D] absolute actions, physical units (numpy or torch).
        state: [S] or [B, S], the state at each chunk's observation time, physical units.
        indices: one entry per action dim: a state index, or None to copy the dim unchanged.
        name: how the ValueError for bad ``indices`` names them (a config key or a flag).

    Returns:
        float64 numpy array of ``actions``' shape; the inverse is `to_absolute`. Velocities need no transform:
        a constant offset has no time derivative.
    """
    a, offset = _chunk_offset(actions, state, indices, name)
    return a - offset


def to_absolute(
    actions: Any, state: Any, indices: Sequence[int | None], name: str = "relative_action_state_indices"
) -> np.ndarray:
    """Deltas from the state → absolute chunks (positions only), the exact inverse of `to_relative`.

    Same shapes and units as `to_relative`; float64 numpy.
    """
    a, offset = _chunk_offset(actions, state, indices, name)
    return a + offset


def _float64(value: Any) -> np.ndarray:
    """A float64 numpy copy of a numpy array, a nested list or a torch tensor (any device / dtype), no torch import."""
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().double().numpy()
    return np.array(value, dtype=np.float64)


__all__ = [
    "EPS",
    "MIN_STATE_HALF_RANGE",
    "NORMALIZATION_MODES",
    "QUANTILES",
    "REQUIRED_STATS",
    "STATS_KEYS",
    "AffineNormalizer",
    "RunningStats",
    "affine_from_stats",
    "check_mode",
    "check_normalization_stats",
    "check_relative_action_state_indices",
    "compute_stats",
    "relative_offset",
    "to_absolute",
    "to_relative",
]
