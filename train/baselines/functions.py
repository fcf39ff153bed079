"""Action-function objects of the comparison heads: a chunk of coefficients times a fixed time basis.

Every comparison head predicts, per sample, coefficients C [M, D] in normalised action units whose action at
time t is a fixed linear basis: A(t) = Σ_i φ_i(t) C_i. Only the basis differs:

* ``bspline``: M control points, φ = clamped cubic B-spline bases of τ (:mod:`.bspline`), exact derivatives;
* ``waypoints`` / ``flow``: the K waypoints of the chunk, φ = the hold ("zoh") or linear interpolation of
  :class:`WaypointFunction`, which niaf-eval uses to execute any chunk as waypoints (its basis is obtained by
  running it on the identity matrix, so a waypoint chunk is executed here exactly as niaf-eval executes it).

[`BasisActionFunction`] has the call signature and units of NIAF's [`modeling_niaf.ActionFunction`]
(``tau`` / ``times`` / ``num_points``, ``derivatives``, ``denormalize``, ``extrapolate``; ``to_numpy()``,
``__getitem__``, ``__len__``; de-normalisation by the checkpoint's affine map, ``position_offset`` added to
de-normalised positions only) and returns an [`ActionTrajectory`], so ``niaf-eval`` and ``ActionStream`` run it
unchanged. [`NumpyBasisActionFunction`] is its torch-free twin with NIAF's ``at(time, derivatives, sample)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from modeling_niaf.numpy_function import (
    _DERIVATIVE_NAMES,
    TAU_TOLERANCE,
    ActionTrajectory,
    _position_offset,
    _resolve_tau_numpy,
)

from .bspline import DEGREE, bspline_basis

MAX_DERIVATIVE_ORDER = 3
INTERPOLATIONS = ("zoh", "linear")

Basis = Callable[[np.ndarray, int], np.ndarray]
"""basis(tau [N], k) → [k+1, N, M] float64, derivatives per unit τ."""


def spline_basis(num_control_points: int, degree: int = DEGREE) -> Basis:
    """The τ-basis of a clamped B-spline with ``num_control_points`` control points."""

    def basis(tau: np.ndarray, k: int) -> np.ndarray:
        return bspline_basis(tau, num_control_points, derivatives=k, degree=degree)

    basis.description = f"clamped B-spline, degree {degree}, {num_control_points} control points"  # type: ignore[attr-defined]
    return basis


class WaypointFunction:
    """K waypoints at a fixed period executed as a waypoint policy is: held (``"zoh"``) or linearly
    interpolated (``"linear"``), with the matching (piecewise-constant or zero) derivatives.

    Follows the action-function call signature (``times`` in seconds from the chunk start, ``derivatives``),
    so :class:`~modeling_niaf.runtime.ActionStream` runs it unchanged.

    Args:
        waypoints: [K, D] physical actions at t_k = k · dt.
        dt: waypoint period in seconds (1 / control_hz).
        mode: ``"zoh"`` or ``"linear"``.
    """

    def __init__(self, waypoints: np.ndarray, dt: float, mode: str) -> None:
        self.waypoints = np.asarray(waypoints, dtype=np.float64)
        if self.waypoints.ndim != 2 or self.waypoints.shape[0] < 2:
            raise ValueError(f"WaypointFunction: waypoints must be [K >= 2, D], got {self.waypoints.shape}")
        if mode not in ("zoh", "linear"):
            raise ValueError(f"WaypointFunction: mode must be 'zoh' or 'linear', got {mode!r}")
        self.dt = float(dt)
        self.mode = mode
        self.chunk_duration = self.dt * (len(self.waypoints) - 1)

    def __call__(self, *, times: Any = None, derivatives: int = 3, **_: Any) -> ActionTrajectory:
        t = np.clip(np.asarray(times, dtype=np.float64).reshape(-1), 0.0, self.chunk_duration)
        k = len(self.waypoints)
        x = t / self.dt
        zeros = np.zeros((len(t), self.waypoints.shape[1]))
        if self.mode == "zoh":
            idx = np.minimum(np.floor(x + 1e-9).astype(int), k - 1)
            return self._trajectory(t, self.waypoints[idx], zeros, zeros)
        i0 = np.minimum(np.floor(x + 1e-9).astype(int), k - 2)
        w = (x - i0)[:, None]
        p0, p1 = self.waypoints[i0], self.waypoints[i0 + 1]
        return self._trajectory(t, p0 + w * (p1 - p0), (p1 - p0) / self.dt, zeros)

    def _trajectory(self, t: np.ndarray, position: np.ndarray, velocity: np.ndarray, acceleration: np.ndarray):
        return ActionTrajectory(tau=2.0 * t / self.chunk_duration - 1.0, time=t, position=position, velocity=velocity,
                                acceleration=acceleration, jerk=np.zeros_like(position))


def waypoint_basis(chunk_size: int, mode: str) -> Basis:
    """The τ-basis of K waypoints at τ_k = -1 + 2k/(K-1), held (``zoh``) or linearly interpolated (``linear``)
    exactly as niaf-eval executes them (:class:`WaypointFunction`; outside the chunk the end values are held)."""
    if mode not in INTERPOLATIONS:
        raise ValueError(f"waypoint interpolation must be one of {INTERPOLATIONS}, got {mode!r}")
    k = int(chunk_size)
    dt = 2.0 / (k - 1)  # the waypoint period in units of τ: τ_k = -1 + k·dt
    unit = WaypointFunction(np.eye(k), dt, mode)  # linear in its waypoints: identity waypoints give the basis

    def basis(tau: np.ndarray, order: int) -> np.ndarray:
        traj = unit(times=np.asarray(tau, dtype=np.float64) + 1.0, derivatives=3)  # time = τ + 1 in [0, 2]
        rows = [traj.position, traj.velocity, traj.acceleration, traj.jerk][: order + 1]
        return np.stack([np.asarray(r, dtype=np.float64) for r in rows])

    basis.description = f"{k} waypoints, {mode}"  # type: ignore[attr-defined]
    return basis


def _check_derivatives(derivatives: Any) -> int:
    if isinstance(derivatives, bool) or not isinstance(derivatives, int) or not 0 <= derivatives <= MAX_DERIVATIVE_ORDER:
        raise ValueError(f"`derivatives` must be an int in 0..{MAX_DERIVATIVE_ORDER}, got {derivatives!r}.")
    return derivatives


class _Affine:
    """Shared bookkeeping: duration, K, de-normalisation and the per-sample position offset."""

    def _setup(self, batch: int, dim: int, chunk_duration: float, chunk_size: int, center: Any, half: Any,
               position_offset: Any) -> None:
        if not (isinstance(chunk_duration, (int, float)) and np.isfinite(chunk_duration) and chunk_duration > 0):
            raise ValueError(f"`chunk_duration` must be a positive number of seconds, got {chunk_duration!r}.")
        if (center is None) != (half is None):
            raise ValueError("Give both `action_center` and `action_half_range`, or neither.")
        self.chunk_duration = float(chunk_duration)
        self.chunk_size = int(chunk_size)
        if center is None:
            center, half = np.zeros(dim), np.ones(dim)
        self.action_center = np.asarray(torch.as_tensor(center).cpu(), dtype=np.float64).reshape(-1)
        self.action_half_range = np.asarray(torch.as_tensor(half).cpu(), dtype=np.float64).reshape(-1)
        if self.action_center.shape != (dim,) or self.action_half_range.shape != (dim,):
            raise ValueError(f"`action_center`/`action_half_range` must have shape ({dim},), got "
                             f"{self.action_center.shape} / {self.action_half_range.shape}.")
        self.position_offset = _position_offset(position_offset, batch, dim)

    def _evaluate(self, coefficients: np.ndarray, tau: np.ndarray, derivatives: int, denormalize: bool) -> dict:
        """coefficients [B, M, D] float64, tau [N] or [B, N] → {name: [B, N, D] float64}."""
        batch = coefficients.shape[0]
        per_second = 2.0 / self.chunk_duration
        if tau.ndim == 2:
            if tau.shape[0] != batch:
                raise ValueError(f"`tau` of shape [B, N] must have B={batch}, got {tau.shape}.")
            rows = np.stack([np.einsum("knm,md->knd", self.basis(tau[b], derivatives), coefficients[b])
                             for b in range(batch)], axis=1)  # [k+1, B, N, D]
        else:
            rows = np.einsum("knm,bmd->kbnd", self.basis(tau, derivatives), coefficients)
        out = {}
        for order in range(derivatives + 1):
            v = rows[order] * per_second**order
            if denormalize:
                v = v * self.action_half_range
                if order == 0:
                    v = v + self.action_center + self.position_offset[:, None, :]
            out[_DERIVATIVE_NAMES[order]] = v
        return out


class BasisActionFunction(_Affine):
    """A batch of predicted chunks A_b(t) = Σ_i φ_i(t) C_{b,i}, queryable at any time points (torch in and out).

    Args:
        coefficients: [B, M, D] normalised action units (control points or waypoints), detached here.
        basis: the τ-basis (`spline_basis` / `waypoint_basis`).
        chunk_duration: T in seconds.
        action_center, action_half_range: [D] physical = normalised · half + center; None: already physical.
        chunk_size: K, the default query points.
        position_offset: [B, D] or [D] physical units added to de-normalised positions (relative actions).
        kind: name of the representation (``bspline``, ``waypoints``, ``flow``), for repr and reports.
    """

    def __init__(self, coefficients: torch.Tensor, basis: Basis, chunk_duration: float, action_center: Any = None,
                 action_half_range: Any = None, chunk_size: int = 10, position_offset: Any = None,
                 kind: str = "chunk") -> None:
        if not isinstance(coefficients, torch.Tensor) or coefficients.ndim != 3:
            raise ValueError(f"`coefficients` must be a [B, M, D] tensor, got {getattr(coefficients, 'shape', coefficients)!r}.")
        self.coefficients = coefficients.detach()
        self.basis = basis
        self.kind = kind
        self._setup(int(coefficients.shape[0]), int(coefficients.shape[2]), chunk_duration, chunk_size,
                    action_center, action_half_range, position_offset)

    @property
    def batch_size(self) -> int:
        return int(self.coefficients.shape[0])

    @property
    def action_dim(self) -> int:
        return int(self.coefficients.shape[2])

    def __len__(self) -> int:
        return self.batch_size

    def __repr__(self) -> str:
        return (f"BasisActionFunction(kind={self.kind!r}, batch={self.batch_size}, action_dim={self.action_dim}, "
                f"basis={getattr(self.basis, 'description', '?')}, T={self.chunk_duration:g} s)")

    def __getitem__(self, index: int | slice) -> BasisActionFunction:
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return BasisActionFunction(self.coefficients[index], self.basis, self.chunk_duration, self.action_center,
                                   self.action_half_range, self.chunk_size, self.position_offset[index], self.kind)

    def __call__(self, tau: Any = None, times: Any = None, num_points: int | None = None, derivatives: int = 3,
                 denormalize: bool = True, extrapolate: bool = False) -> ActionTrajectory:
        """Same arguments and units as [`modeling_niaf.ActionFunction.__call__`]; torch float32 outputs."""
        derivatives = _check_derivatives(derivatives)
        if isinstance(tau, torch.Tensor):
            tau = tau.detach().cpu().double().numpy()
        if isinstance(times, torch.Tensor):
            times = times.detach().cpu().double().numpy()
        tau_np = _resolve_tau_numpy(tau, times, num_points, self.chunk_duration, self.chunk_size, extrapolate)
        coefficients = self.coefficients.detach().cpu().double().numpy()
        values = self._evaluate(coefficients, tau_np, derivatives, denormalize)
        device = self.coefficients.device

        def t(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(a, dtype=torch.float32, device=device)

        time = (tau_np + 1.0) * (self.chunk_duration / 2.0)
        return ActionTrajectory(tau=t(tau_np), time=t(time), denormalized=denormalize,
                                **{k: t(v) for k, v in values.items()})

    def to_numpy(self, dtype: Any = None) -> NumpyBasisActionFunction:
        """The torch-free evaluator (float64; ``dtype`` is accepted for NIAF's signature and ignored)."""
        return NumpyBasisActionFunction(self.coefficients.detach().cpu().double().numpy(), self.basis,
                                        self.chunk_duration, self.action_center, self.action_half_range,
                                        self.chunk_size, self.position_offset, self.kind)


class NumpyBasisActionFunction(_Affine):
    """Torch-free twin of [`BasisActionFunction`] (float64 numpy), with NIAF's real-time ``at``."""

    def __init__(self, coefficients: np.ndarray, basis: Basis, chunk_duration: float, action_center: Any = None,
                 action_half_range: Any = None, chunk_size: int = 10, position_offset: Any = None,
                 kind: str = "chunk") -> None:
        self.coefficients = np.asarray(coefficients, dtype=np.float64)
        self.basis = basis
        self.kind = kind
        self._setup(self.coefficients.shape[0], self.coefficients.shape[2], chunk_duration, chunk_size,
                    action_center, action_half_range, position_offset)

    @property
    def batch_size(self) -> int:
        return int(self.coefficients.shape[0])

    def __len__(self) -> int:
        return self.batch_size

    def __call__(self, tau: Any = None, times: Any = None, num_points: int | None = None, derivatives: int = 3,
                 denormalize: bool = True, extrapolate: bool = False) -> ActionTrajectory:
        derivatives = _check_derivatives(derivatives)
        tau_np = _resolve_tau_numpy(tau, times, num_points, self.chunk_duration, self.chunk_size, extrapolate)
        values = self._evaluate(self.coefficients, tau_np, derivatives, denormalize)
        time = (tau_np + 1.0) * (self.chunk_duration / 2.0)
        return ActionTrajectory(tau=tau_np, time=time, denormalized=denormalize, **values)

    def at(self, time: float, derivatives: int = 1, sample: int = 0) -> np.ndarray:
        """One sample at one time (seconds in [0, T]), physical units: [derivatives + 1, D]."""
        tau = 2.0 * float(time) / self.chunk_duration - 1.0
        if not -1.0 - TAU_TOLERANCE <= tau <= 1.0 + TAU_TOLERANCE:
            raise ValueError(f"`time` {time!r} s is outside the chunk [0, {self.chunk_duration:g}] s.")
        derivatives = _check_derivatives(derivatives)
        rows = self.basis(np.array([tau]), derivatives)[:, 0, :]  # [k+1, M]
        per_second = (2.0 / self.chunk_duration) ** np.arange(derivatives + 1)
        out = (rows @ self.coefficients[sample]) * per_second[:, None] * self.action_half_range
        out[0] += self.action_center + self.position_offset[sample]
        return out


__all__ = [
    "BasisActionFunction",
    "WaypointFunction",
    "INTERPOLATIONS",
    "NumpyBasisActionFunction",
    "spline_basis",
    "waypoint_basis",
]
