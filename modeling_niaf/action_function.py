"""A predicted action chunk as a function of time, with a torch-free twin for real-time control loops.

[`ActionFunction`] holds one backbone pass's worth of per-sample modulations (γ, β) together with the shared
SIREN, the chunk duration T and the action normalisation. Calling it evaluates positions and exact time
derivatives at any time points, as often as a controller wants, without running the backbone again.

Units: ``time`` is seconds from the chunk start (τ = -1 ↔ t = 0, τ = +1 ↔ t = T). With ``denormalize=True``
the position is in the dataset's physical action units and velocity, acceleration and jerk are in those
units per second, per second², per second³. Derivatives are de-normalised with the scale only: the offset of
an affine map has no time derivative.

An optional ``position_offset`` [B, D] (physical units) is added to the de-normalised position of each sample,
never to a derivative: a model trained on relative ("delta") actions predicts a_i(t) - state_s(t_obs), and
the offset is that state value, so the function returns absolute positions. With ``denormalize=False`` the
function returns the normalised (delta) values and no offset is added.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from .siren import MAX_DERIVATIVE_ORDER, ModulatedSiren

TAU_TOLERANCE = 1e-6
"""Slack on τ ∈ [-1, 1] so that times computed in floating point at the chunk ends are accepted."""

_DERIVATIVE_NAMES = ("position", "velocity", "acceleration", "jerk")


@dataclass
class ActionTrajectory:
    """Positions and derivatives of action functions at N time points.

    Attributes (torch tensors, or numpy arrays when produced by [`NumpyActionFunction`]):
        tau: [N] or [B, N], normalised chunk time.
        time: same shape as ``tau``, seconds from the chunk start.
        position: [B, N, D].
        velocity: [B, N, D] per second, or None when fewer derivatives were asked for.
        acceleration: [B, N, D] per second², or None.
        jerk: [B, N, D] per second³, or None.
        denormalized: whether the values are in physical units (True) or normalised action units (False).
    """

    tau: Any
    time: Any
    position: Any
    velocity: Any = None
    acceleration: Any = None
    jerk: Any = None
    denormalized: bool = True

    def to_numpy(self) -> ActionTrajectory:
        """A copy with every tensor moved to CPU numpy (float64 stays float64, float32 stays float32)."""
        def conv(v):
            return v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v

        return ActionTrajectory(**{f.name: conv(getattr(self, f.name)) for f in fields(self)})


def _position_offset(offset: Any, batch: int, dim: int) -> np.ndarray:
    """``position_offset`` as an owned float64 [B, D] array (None → zeros; [D] → the same for every sample)."""
    if offset is None:
        return np.zeros((batch, dim), dtype=np.float64)
    if isinstance(offset, torch.Tensor):
        offset = offset.detach().cpu().double().numpy()
    arr = np.asarray(offset, dtype=np.float64)
    if arr.shape == (dim,):
        arr = np.broadcast_to(arr, (batch, dim))
    if arr.shape != (batch, dim):
        raise ValueError(
            f"`position_offset` must have shape [B, D] = [{batch}, {dim}] or [D] = [{dim}] (physical action units, "
            f"one offset per sample and action dimension), got {arr.shape}."
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError("`position_offset` contains NaN or inf.")
    return np.array(arr, dtype=np.float64)  # an owned, contiguous copy


def _resolve_tau_numpy(tau, times, num_points, duration: float, default_points: int, extrapolate: bool) -> np.ndarray:
    given = [name for name, v in (("tau", tau), ("times", times), ("num_points", num_points)) if v is not None]
    if len(given) > 1:
        raise ValueError(f"Give at most one of `tau`, `times`, `num_points`; got {given}.")
    if num_points is not None:
        if isinstance(num_points, bool) or not isinstance(num_points, (int, np.integer)) or num_points < 1:
            raise ValueError(f"`num_points` must be a positive int, got {num_points!r}.")
        return np.linspace(-1.0, 1.0, int(num_points)) if num_points > 1 else np.array([-1.0])
    if times is not None:
        t = np.asarray(times, dtype=np.float64)
        name = "times"
        tau_arr = 2.0 * t / duration - 1.0
    elif tau is not None:
        tau_arr = np.asarray(tau, dtype=np.float64)
        name = "tau"
    else:
        return np.linspace(-1.0, 1.0, default_points)
    if tau_arr.ndim == 0:
        tau_arr = tau_arr.reshape(1)
    if tau_arr.ndim not in (1, 2) or tau_arr.shape[-1] == 0:
        raise ValueError(f"`{name}` must have shape [N] or [B, N] with N >= 1, got {tau_arr.shape}.")
    if not np.all(np.isfinite(tau_arr)):
        raise ValueError(f"`{name}` contains NaN or inf.")
    if not extrapolate and (tau_arr.min() < -1.0 - TAU_TOLERANCE or tau_arr.max() > 1.0 + TAU_TOLERANCE):
        span = f"t ∈ [0, {duration:g}] s" if name == "times" else "τ ∈ [-1, 1]"
        raise ValueError(
            f"`{name}` leaves the chunk ({span}): range [{tau_arr.min():g}, {tau_arr.max():g}] in τ. "
            "The field was only trained inside the chunk; pass `extrapolate=True` to evaluate outside it anyway."
        )
    return tau_arr


def _check_tau_tensor(tau: Any, times: Any, num_points: Any, duration: float, extrapolate: bool) -> None:
    """`_resolve_tau_numpy`'s checks for a ``tau`` or ``times`` given as a torch tensor, on the tensor's device.

    Same errors; the tensor is never copied to numpy: its finiteness, minimum and maximum come back to the
    host together (one small transfer; none on CPU).
    """
    given = [name for name, v in (("tau", tau), ("times", times), ("num_points", num_points)) if v is not None]
    if len(given) > 1:
        raise ValueError(f"Give at most one of `tau`, `times`, `num_points`; got {given}.")
    name = "tau" if tau is not None else "times"
    t = tau if tau is not None else times
    shape = (1,) if t.ndim == 0 else tuple(t.shape)
    if len(shape) not in (1, 2) or shape[-1] == 0 or t.numel() == 0:
        raise ValueError(f"`{name}` must have shape [N] or [B, N] with N >= 1, got {shape}.")
    t = t.detach()
    values = t if t.is_floating_point() else t.double()
    finite, lo, hi = torch.stack([torch.isfinite(values).all().to(values.dtype), values.min(), values.max()]).tolist()
    if not finite:
        raise ValueError(f"`{name}` contains NaN or inf.")
    if name == "times":  # τ = 2t/T - 1 is increasing: the extreme τ are those of the extreme times (as in float64)
        lo, hi = 2.0 * lo / duration - 1.0, 2.0 * hi / duration - 1.0
    if not extrapolate and (lo < -1.0 - TAU_TOLERANCE or hi > 1.0 + TAU_TOLERANCE):
        span = f"t ∈ [0, {duration:g}] s" if name == "times" else "τ ∈ [-1, 1]"
        raise ValueError(
            f"`{name}` leaves the chunk ({span}): range [{lo:g}, {hi:g}] in τ. "
            "The field was only trained inside the chunk; pass `extrapolate=True` to evaluate outside it anyway."
        )


class ActionFunction:
    """A batch of predicted action chunks A_b(τ), queryable at any time points.

    Args:
        siren: the model's shared [`ModulatedSiren`].
        gamma, beta: [B, L, H] modulations from one backbone pass (kept detached unless ``keep_graph``).
        chunk_duration: T in seconds (``(chunk_size - 1) / control_hz``).
        action_center, action_half_range: [D] physical-units normalisation (physical = norm·half + center);
            None means the field is already in physical units.
        chunk_size: K, the number of training points, used when no time points are given.
        keep_graph: keep γ, β attached to the autograd graph and build graphs when called (for losses
            through the function); by default calls run without autograd, as a controller wants.
        position_offset: [B, D] (or [D], the same for every sample) physical units, float64, added to the
            position when called with ``denormalize=True`` (relative actions: the robot state at the
            observation time); derivatives never change. None: zeros.
    """

    def __init__(
        self,
        siren: ModulatedSiren,
        gamma: torch.Tensor,
        beta: torch.Tensor,
        chunk_duration: float,
        action_center: np.ndarray | torch.Tensor | None = None,
        action_half_range: np.ndarray | torch.Tensor | None = None,
        chunk_size: int = 10,
        keep_graph: bool = False,
        position_offset: np.ndarray | torch.Tensor | None = None,
    ) -> None:
        if not (isinstance(chunk_duration, (int, float)) and np.isfinite(chunk_duration) and chunk_duration > 0):
            raise ValueError(f"`chunk_duration` must be a positive number of seconds, got {chunk_duration!r}.")
        if gamma.ndim != 3 or gamma.shape != beta.shape:
            raise ValueError(f"`gamma` and `beta` must both be [B, L, H]; got {tuple(gamma.shape)} and {tuple(beta.shape)}.")
        self.siren = siren
        self.gamma = gamma if keep_graph else gamma.detach()
        self.beta = beta if keep_graph else beta.detach()
        self.chunk_duration = float(chunk_duration)
        self.chunk_size = int(chunk_size)
        self.keep_graph = bool(keep_graph)
        dim = siren.out_dim
        if (action_center is None) != (action_half_range is None):
            raise ValueError("Give both `action_center` and `action_half_range`, or neither.")
        if action_center is None:
            center, half = np.zeros(dim), np.ones(dim)
        else:
            center = np.asarray(torch.as_tensor(action_center).detach().cpu(), dtype=np.float64).reshape(-1)
            half = np.asarray(torch.as_tensor(action_half_range).detach().cpu(), dtype=np.float64).reshape(-1)
            if center.shape != (dim,) or half.shape != (dim,):
                raise ValueError(
                    f"`action_center`/`action_half_range` must have shape ({dim},), got {center.shape} / {half.shape}."
                )
        self.action_center = center
        self.action_half_range = half
        self.position_offset = _position_offset(position_offset, int(gamma.shape[0]), dim)

    @property
    def batch_size(self) -> int:
        return int(self.gamma.shape[0])

    @property
    def action_dim(self) -> int:
        return self.siren.out_dim

    def __len__(self) -> int:
        return self.batch_size

    def __getitem__(self, index: int | slice) -> ActionFunction:
        """The action function(s) of some samples of the batch."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return ActionFunction(
            self.siren, self.gamma[index], self.beta[index], self.chunk_duration,
            self.action_center, self.action_half_range, self.chunk_size, keep_graph=self.keep_graph,
            position_offset=self.position_offset[index],
        )

    def __call__(
        self,
        tau: torch.Tensor | np.ndarray | float | None = None,
        times: torch.Tensor | np.ndarray | float | None = None,
        num_points: int | None = None,
        derivatives: int = 3,
        denormalize: bool = True,
        extrapolate: bool = False,
    ) -> ActionTrajectory:
        """Evaluate the action functions.

        Give at most one of:
            tau: [N] or [B, N] normalised times in [-1, 1];
            times: [N] or [B, N] seconds from the chunk start, in [0, T];
            num_points: N evenly spaced points over the chunk (both ends included).
        With none of them, the K training points are used.

        Args:
            derivatives: how many time derivatives (0..3) to return besides the position.
            denormalize: return physical units (True; the position includes ``position_offset``) or
                normalised action units (False; no offset); derivatives are always per second, never per
                unit τ.
            extrapolate: allow time points outside the chunk.
        """
        if isinstance(derivatives, bool) or not isinstance(derivatives, int) or not 0 <= derivatives <= MAX_DERIVATIVE_ORDER:
            raise ValueError(f"`derivatives` must be an int in 0..{MAX_DERIVATIVE_ORDER}, got {derivatives!r}.")
        device = self.gamma.device
        float_dtype = torch.float64 if self.gamma.dtype == torch.float64 else torch.float32
        if isinstance(tau, torch.Tensor) or isinstance(times, torch.Tensor):
            # Validate and compute on the caller's tensor (no numpy round trip; its graph is kept).
            src = tau if isinstance(tau, torch.Tensor) else times
            _check_tau_tensor(tau, times, num_points, self.chunk_duration, extrapolate)
            src = src.reshape(1) if src.ndim == 0 else src
            src = src.to(device=device, dtype=torch.float64 if src.dtype == torch.float64 else float_dtype)
            tau_t = src if tau is not None else src * (2.0 / self.chunk_duration) - 1.0
        else:
            tau_np = _resolve_tau_numpy(tau, times, num_points, self.chunk_duration, self.chunk_size, extrapolate)
            tau_t = torch.as_tensor(tau_np, dtype=float_dtype, device=device)
        with torch.set_grad_enabled(self.keep_graph and torch.is_grad_enabled()):
            values = self.siren(tau_t, self.gamma, self.beta, derivatives=derivatives)
        per_second = 2.0 / self.chunk_duration
        out: dict[str, Any] = {}
        for order, v in enumerate(values):
            if order > 0:
                v = v * per_second**order
            if denormalize:
                half = torch.as_tensor(self.action_half_range, dtype=v.dtype, device=v.device)
                v = v * half
                if order == 0:  # center + offset summed in float64, then one add: [B, 1, D]
                    base = self.action_center + self.position_offset[:, None, :]
                    v = v + torch.as_tensor(base, dtype=v.dtype, device=v.device)
            out[_DERIVATIVE_NAMES[order]] = v
        time = (tau_t + 1.0) * (self.chunk_duration / 2.0)
        return ActionTrajectory(tau=tau_t, time=time, denormalized=denormalize, **out)

    def to_numpy(self, dtype: type | np.dtype | None = None) -> NumpyActionFunction:
        """A numpy-only evaluator with the same numbers, for a real-time loop (no torch, no autograd).

        Args:
            dtype: numpy float type of the evaluator's arithmetic. By default the model's own precision:
                float64 for a float64 SIREN or float64 modulations, else float32 (about 3x faster per query
                than float64 at H = 256, and as precise as the float32 model it mirrors).
        """
        siren = self.siren
        if dtype is None:
            wide = siren.readout.weight.dtype == torch.float64 or self.gamma.dtype == torch.float64
            dtype = np.float64 if wide else np.float32

        def arr(t: torch.Tensor) -> np.ndarray:
            return t.detach().cpu().double().numpy()

        return NumpyActionFunction(
            weights=[arr(layer.weight) for layer in siren.layers],
            biases=[arr(layer.bias) for layer in siren.layers],
            readout_weight=arr(siren.readout.weight),
            readout_bias=arr(siren.readout.bias),
            omega_0=siren.omega_0,
            gamma=arr(self.gamma),
            beta=arr(self.beta),
            dtype=dtype,
            chunk_duration=self.chunk_duration,
            action_center=self.action_center,
            action_half_range=self.action_half_range,
            chunk_size=self.chunk_size,
            position_offset=self.position_offset,
        )


class NumpyActionFunction:
    """Torch-free evaluator of a batch of action functions (numpy, float32 or float64).

    The modulations are folded into per-sample weights once at construction (B·L small matrices), so each
    query is a handful of small matrix-vector products. Same call signature and units as
    [`ActionFunction`]; returns an [`ActionTrajectory`] of numpy arrays. ``position_offset`` ([B, D] or [D],
    physical units, None = zeros) is added to de-normalised positions only, as in [`ActionFunction`].
    """

    def __init__(
        self,
        weights: list[np.ndarray],
        biases: list[np.ndarray],
        readout_weight: np.ndarray,
        readout_bias: np.ndarray,
        omega_0: float,
        gamma: np.ndarray,
        beta: np.ndarray,
        chunk_duration: float,
        action_center: np.ndarray,
        action_half_range: np.ndarray,
        chunk_size: int = 10,
        dtype: type | np.dtype = np.float64,
        position_offset: np.ndarray | None = None,
    ) -> None:
        self.omega_0 = float(omega_0)
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ValueError(f"`dtype` must be float32 or float64, got {self.dtype}.")
        self.chunk_duration = float(chunk_duration)
        self.chunk_size = int(chunk_size)
        # Per sample b and layer l: the transposed modulated weight (w0 (1+gamma) * W)^T, contiguous for BLAS,
        # and the modulated bias w0 (b + beta).
        self._wt = [
            [
                np.ascontiguousarray((self.omega_0 * (1.0 + gamma[s, i, :, None]) * w).T, dtype=self.dtype)
                for i, w in enumerate(weights)
            ]
            for s in range(gamma.shape[0])
        ]
        self._b = [
            [(self.omega_0 * (bias + beta[s, i])).astype(self.dtype) for i, bias in enumerate(biases)]
            for s in range(gamma.shape[0])
        ]
        self._wot = np.ascontiguousarray(np.asarray(readout_weight).T, dtype=self.dtype)
        self._bo = np.asarray(readout_bias, dtype=self.dtype)
        self.action_half_range = np.asarray(action_half_range, dtype=np.float64)
        self.batch_size = int(gamma.shape[0])
        self.position_offset = _position_offset(position_offset, self.batch_size, self._wot.shape[1])
        self.action_center = np.asarray(action_center, dtype=np.float64)
        per_second = 2.0 / self.chunk_duration
        # per unit τ → per second (and physical units): row `order` scales that derivative, [4, 1] and [4, D]
        self._scales_normalised = (per_second ** np.arange(MAX_DERIVATIVE_ORDER + 1))[:, None]
        self._scales_physical = self._scales_normalised * self.action_half_range

    def __call__(
        self,
        tau=None,
        times=None,
        num_points: int | None = None,
        derivatives: int = 3,
        denormalize: bool = True,
        extrapolate: bool = False,
    ) -> ActionTrajectory:
        if isinstance(derivatives, bool) or not isinstance(derivatives, int) or not 0 <= derivatives <= MAX_DERIVATIVE_ORDER:
            raise ValueError(f"`derivatives` must be an int in 0..{MAX_DERIVATIVE_ORDER}, got {derivatives!r}.")
        tau_arr = _resolve_tau_numpy(tau, times, num_points, self.chunk_duration, self.chunk_size, extrapolate)
        if tau_arr.ndim == 2 and tau_arr.shape[0] != self.batch_size:
            raise ValueError(f"`tau` of shape [B, N] must have B={self.batch_size}, got {tau_arr.shape}.")
        if self.batch_size == 1:
            out = self._evaluate_one(0, tau_arr.reshape(-1), derivatives)[:, None]  # [k+1, 1, N, D]
        else:
            tb = np.broadcast_to(tau_arr, (self.batch_size, tau_arr.shape[-1]))  # [B, N]
            out = np.stack([self._evaluate_one(s, tb[s], derivatives) for s in range(self.batch_size)], axis=1)
        scales = self._scales_physical if denormalize else self._scales_normalised
        result: dict[str, Any] = {}
        for order in range(derivatives + 1):
            v = out[order] * scales[order]  # per unit τ → per second (and physical units)
            if denormalize and order == 0:
                v += self.action_center + self.position_offset[:, None, :]
            result[_DERIVATIVE_NAMES[order]] = v
        time = (tau_arr + 1.0) * (self.chunk_duration / 2.0)
        return ActionTrajectory(tau=tau_arr, time=time, denormalized=denormalize, **result)

    def at(self, time: float, derivatives: int = 1, sample: int = 0) -> np.ndarray:
        """The hot path of a control loop: one sample at one time, physical units, no dataclass.

        Args:
            time: seconds from the chunk start, in [0, T].
            derivatives: 0..3.
            sample: which function of the batch.

        Returns:
            [derivatives + 1, D]: position (including the sample's ``position_offset``), then velocity
            (per s), acceleration (per s²), jerk (per s³).
        """
        tau = 2.0 * float(time) / self.chunk_duration - 1.0
        if not -1.0 - TAU_TOLERANCE <= tau <= 1.0 + TAU_TOLERANCE:  # also false for NaN
            raise ValueError(f"`time` {time!r} s is outside the chunk [0, {self.chunk_duration:g}] s.")
        if not 0 <= derivatives <= MAX_DERIVATIVE_ORDER:
            raise ValueError(f"`derivatives` must be in 0..{MAX_DERIVATIVE_ORDER}, got {derivatives!r}.")
        out = self._evaluate_one(sample, np.array([tau], dtype=self.dtype), derivatives)[:, 0, :]
        out = out * self._scales_physical[: derivatives + 1]
        out[0] += self.action_center + self.position_offset[sample]
        return out

    def _evaluate_one(self, s: int, tau: np.ndarray, k: int) -> np.ndarray:
        """Orders 0..k of sample s at the points tau [N]: [k+1, N, D], normalised units per unit tau."""
        wt, bias = self._wt[s], self._b[s]
        du = wt[0][0]  # [H]: the first layer's u' (scalar input), constant in tau
        u = np.multiply.outer(tau.astype(self.dtype, copy=False), du) + bias[0]  # [N, H]
        sin_u = np.sin(u)
        hs = np.empty((k + 1,) + u.shape, dtype=self.dtype)
        hs[0] = sin_u
        if k >= 1:
            cos_u = np.cos(u)
            hs[1] = cos_u * du
            if k >= 2:
                du2 = du * du
                hs[2] = -sin_u * du2
                if k >= 3:
                    hs[3] = -cos_u * (du2 * du)
        n, width = u.shape
        for w, b in zip(wt[1:], bias[1:], strict=True):
            us = (hs.reshape(-1, width) @ w).reshape(k + 1, n, -1)  # one BLAS call for every order
            u = us[0] + b
            sin_u = np.sin(u)
            hs = np.empty_like(us)
            hs[0] = sin_u
            if k >= 1:
                cos_u = np.cos(u)
                du = us[1]
                hs[1] = cos_u * du
                if k >= 2:
                    du2 = du * du
                    hs[2] = cos_u * us[2] - sin_u * du2
                    if k >= 3:
                        hs[3] = cos_u * (us[3] - du2 * du) - 3.0 * sin_u * du * us[2]
        out = (hs.reshape(-1, width) @ self._wot).reshape(k + 1, n, -1)
        out[0] += self._bo
        return out


__all__ = ["ActionFunction", "ActionTrajectory", "NumpyActionFunction", "TAU_TOLERANCE"]
