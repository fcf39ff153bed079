"""A predicted action chunk as a function of time (torch); its numpy twin lives in ``numpy_function.py``.

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

from typing import Any

import numpy as np
import torch

from .numpy_function import (
    _DERIVATIVE_NAMES,
    TAU_TOLERANCE,
    ActionTrajectory,
    NumpyActionFunction,
    _position_offset,
    _resolve_tau_numpy,
)
from .siren import MAX_DERIVATIVE_ORDER, ModulatedSiren


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
        """The action function(s) of some samples of the batch.

        Raises:
            IndexError: an integer outside ``-B .. B-1`` or a slice that selects no sample (never an empty function).
            TypeError: any other index (a bool, a float, an array).
        """
        if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
            if not -self.batch_size <= index < self.batch_size:
                raise IndexError(f"ActionFunction: sample {int(index)} is out of range for a batch of {self.batch_size}")
            start = int(index) % self.batch_size
            index = slice(start, start + 1)
        elif not isinstance(index, slice):
            raise TypeError(f"ActionFunction: index must be an int or a slice, got {type(index).__name__}")
        elif len(range(*index.indices(self.batch_size))) == 0:
            raise IndexError(f"ActionFunction: {index} selects no sample of a batch of {self.batch_size}")
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


__all__ = ["ActionFunction"]
