"""Streaming execution of action functions: a slow policy feeding a fast controller.

A NIAF policy returns a whole action *function* A(t) per inference, valid for one chunk of T seconds after
the observation it was computed from. A controller (typically an impedance controller at 500 Hz to 1 kHz)
needs, at every tick, a desired position, velocity and acceleration. [`ActionStream`] sits between them:

* **Delay compensation.** Each function is anchored at the time of its observation, not at the time it
  arrives: at controller time t it is queried at ``t - observation_time`` seconds into its chunk. Inference
  latency therefore shifts *where* in the chunk the controller reads, never the plan itself.
* **Switching.** When a new function arrives at time t_s, the command moves from the old source to the new
  one over ``blend_duration`` = T_b seconds, with position, velocity and acceleration continuous at both
  ends of the window. Two ways (``switch``):

  - ``"crossfade"`` (default): (1 - w)·old(t) + w·new(t) with the quintic weight
    w(s) = 10s³ - 15s⁴ + 6s⁵, s = (t - t_s)/T_b (see [`blend_weight`]). During the window the command still
    partly follows the old plan, so keep T_b shorter than the policy period.
  - ``"offset_decay"``: new(t) + e(t). The new plan's motion takes over at once; e starts with the
    difference old - new in position, velocity and acceleration at t_s and is removed by a quintic Hermite
    polynomial over T_b (see [`offset_decay_basis`]). Since nothing of the old plan's *motion* is kept, T_b
    can be longer than the policy period without delaying the reaction to a new plan, and a longer window
    moves the correction of a disagreement between consecutive predictions (a bump of about 1.9·Δp/T_b in
    velocity) to lower frequencies. Prefer it when consecutive predictions disagree by more than the
    controller should feel as high-frequency velocity (e.g. T_b = 0.2-0.3 s at a 10 Hz policy).
* **Hold and stop.** Past the end of its chunk a function is not extrapolated: the command follows a
  polynomial stop profile that starts with the chunk's final position, velocity and acceleration and
  brings velocity and acceleration to zero after ``stop_duration`` seconds, then holds that position.
* **Refusal.** A submitted function is checked before it is used: too old (latency above ``max_latency``,
  or its chunk already over), older than the function in use, non-finite anywhere on a probe grid, above a
  velocity limit, outside position limits, or too far from the current command. A refused function changes
  nothing: the stream keeps following what it followed before (ultimately a stop-and-hold), and the reason
  is logged and kept in [`ActionStream.last_refusal`]. The probe grid is only a first filter.
* **Enforcement.** The limits (``position_limits``, ``max_velocity``, ``max_acceleration``) are enforced on
  every command that leaves [`ActionStream.command`], whatever produced it: a function that leaves the
  limits between probe points, a switch between two plans, a stop profile. A dimension whose source command
  is within the limits, and reachable from the previous command within them, is passed through exactly;
  otherwise the command follows a rate limiter (position clamped to the limits, velocity to
  ``max_velocity``, velocity change per tick to ``max_acceleration``·dt, position change per tick to the
  commanded velocity·dt) that converges back to the source. Such a command has ``limited=True``, is counted
  in [`ActionStream.num_limited`] and described in [`ActionStream.last_violation`].
* **Faults.** A function that raises or returns a non-finite value when [`ActionStream.command`] queries it
  (alone, or as the old or new side of a switch) is dropped: the command stops from the last good command
  (then holds), an error is logged and kept in [`ActionStream.last_fault`]. A function that fails while
  [`ActionStream.submit`] checks it or builds the switch to it is refused and changes nothing. No exception
  from an action function reaches the control loop, on any path.

The module needs only numpy and imports neither torch nor transformers (``import modeling_niaf.runtime`` in a
control process pays for numpy only). It consumes anything that follows [`ActionFunctionLike`]: NIAF's
``NumpyActionFunction`` (recommended in a real-time loop; ``modeling_niaf.numpy_function``, loadable from a
file with ``NumpyActionFunction.load``), a torch ``ActionFunction`` (converted once with its
``to_numpy()``), or any user object with the same call signature.

Units: times in seconds on the caller's clock (any origin, e.g. ``time.monotonic()`` or simulation time);
positions in the action's physical units (e.g. rad), velocities per second, accelerations per second²,
jerks per second³.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

logger = logging.getLogger(__name__)

SWITCH_MODES = ("crossfade", "offset_decay")
"""How [`ActionStream`] moves from one function to the next (see the module docstring)."""

TIME_TOLERANCE = 1e-9
"""Slack in seconds when comparing clock values (a controller clock built by repeated addition drifts)."""


@runtime_checkable
class ActionFunctionLike(Protocol):
    """What [`ActionStream`] needs from an action function.

    ``chunk_duration`` is T in seconds. Calling with ``times`` (seconds from the chunk start, shape [N]) and
    ``derivatives=3`` returns an object with ``position``, ``velocity``, ``acceleration`` and ``jerk``
    attributes of shape [1, N, D] (or [N, D]) in physical units per second^k, numpy arrays or torch tensors.
    """

    chunk_duration: float

    def __call__(self, *, times: Any = None, derivatives: int = 3, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class JointCommand:
    """The reference a controller tracks at one instant.

    Attributes:
        time: controller time in seconds.
        position: [D] desired position (physical units).
        velocity: [D] desired velocity, per second.
        acceleration: [D] desired acceleration, per second².
        jerk: [D] jerk of the reference, per second³ (for monitoring; not needed by the control law).
        mode: "hold" (no function yet, or stopped), "track" (one function), "blend" (switching between two
            sources) or "stop" (past a chunk's end, decelerating).
        limited: True when at least one dimension was clamped or rate-limited to keep the command within the
            stream's position, velocity or acceleration limits (see [`ActionStream.last_violation`]).
    """

    time: float
    position: np.ndarray
    velocity: np.ndarray
    acceleration: np.ndarray
    jerk: np.ndarray
    mode: str
    limited: bool = False


# --------------------------------------------------------------------------------------------------------
# Scalar profiles with their exact derivatives
# --------------------------------------------------------------------------------------------------------
def blend_weight(s: float) -> tuple[float, float, float, float]:
    """The quintic blend w(s) = 10s³ - 15s⁴ + 6s⁵ on s ∈ [0, 1] and its first three s-derivatives.

    w(0) = 0, w(1) = 1 and w' = w'' = 0 at both ends, so a blend (1-w)·a + w·b matches a in value, first and
    second derivative at s = 0 and b at s = 1. Outside [0, 1] the weight is clamped (0 or 1, no derivative).
    """
    if s <= 0.0:
        return 0.0, 0.0, 0.0, 0.0
    if s >= 1.0:
        return 1.0, 0.0, 0.0, 0.0
    s2 = s * s
    one = 1.0 - s
    return (
        s2 * s * (10.0 - 15.0 * s + 6.0 * s2),
        30.0 * s2 * one * one,
        60.0 * s * one * (1.0 - 2.0 * s),
        60.0 * (1.0 - 6.0 * s + 6.0 * s2),
    )


# Stop profile: velocity v(s) = (v0 + a0·T_s·s)·g(s) with g(s) = (1-s)³(1+3s) = 1 - 6s² + 8s³ - 3s⁴.
# g(0) = 1 and g'(0) = 0 give v(0) = v0 and dv/dt(0) = a0; g, g', g'' all vanish at s = 1, so velocity,
# acceleration and jerk reach zero together. Position is the exact integral (polynomial).
_G = np.polynomial.Polynomial([1.0, 0.0, -6.0, 8.0, -3.0])
_SG = _G * np.polynomial.Polynomial([0.0, 1.0])
_G_INT = _G.integ()
_SG_INT = _SG.integ()
_G_D1, _G_D2 = _G.deriv(1), _G.deriv(2)


def stop_profile(
    position: np.ndarray, velocity: np.ndarray, acceleration: np.ndarray, duration: float, elapsed: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A smooth stop from (position, velocity, acceleration), evaluated ``elapsed`` seconds after it starts.

    Position, velocity and acceleration are continuous with the given start state; after ``duration``
    seconds velocity, acceleration and jerk are zero and the position stays at
    ``position + duration·(velocity·∫g + acceleration·duration·∫s·g)`` (∫ over [0, 1]). Returns
    (position, velocity, acceleration, jerk), each [D], in the units of the inputs per second^k.
    """
    if duration <= 0.0:
        zero = np.zeros_like(position)
        return position.copy(), zero, zero.copy(), zero.copy()
    s = min(max(elapsed / duration, 0.0), 1.0)
    v_n = velocity / duration  # v0 / T_s
    pos = position + duration * (velocity * _G_INT(s) + acceleration * duration * _SG_INT(s))
    if s >= 1.0:
        zero = np.zeros_like(position)
        return pos, zero, zero.copy(), zero.copy()
    g, g1, g2 = _G(s), _G_D1(s), _G_D2(s)
    lin = v_n + acceleration * s  # (v0 + a0 T_s s) / T_s
    vel = (velocity + acceleration * duration * s) * g
    acc = acceleration * g + lin * g1
    jerk = (2.0 * acceleration * g1 + lin * g2) / duration
    return pos, vel, acc, jerk


# --------------------------------------------------------------------------------------------------------
# Command sources
# --------------------------------------------------------------------------------------------------------
_State = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, without importing torch
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


def evaluate_function(fn: ActionFunctionLike, times: np.ndarray, dof: int) -> _State:
    """Positions and the first three time derivatives of ``fn`` at ``times`` (seconds from its chunk start).

    Returns four float64 arrays of shape [N, D]. Raises ValueError when the result does not have one
    sample of ``dof`` dimensions per time point.
    """
    traj = fn(times=np.asarray(times, dtype=np.float64), derivatives=3)
    out = []
    for name in ("position", "velocity", "acceleration", "jerk"):
        value = getattr(traj, name, None)
        if value is None:
            raise ValueError(f"the action function returned no `{name}`; it must support derivatives=3.")
        arr = _to_numpy(value)
        if arr.ndim == 3:
            if arr.shape[0] != 1:
                raise ValueError(
                    f"the action function holds a batch of {arr.shape[0]} chunks; submit one chunk (fn[i])."
                )
            arr = arr[0]
        if arr.shape != (len(times), dof):
            raise ValueError(
                f"the action function's `{name}` has shape {arr.shape}, expected ({len(times)}, {dof})."
            )
        out.append(arr)
    return out[0], out[1], out[2], out[3]


class _Source:
    mode = "hold"

    def evaluate(self, t: float) -> _State:
        raise NotImplementedError

    def simplify(self, t: float) -> _Source:
        """The equivalent source from time t on (drops finished blends)."""
        return self


class _HoldSource(_Source):
    mode = "hold"

    def __init__(self, position: np.ndarray) -> None:
        self.position = position.copy()

    def evaluate(self, t: float) -> _State:
        zero = np.zeros_like(self.position)
        return self.position.copy(), zero, zero.copy(), zero.copy()


class _StopSource(_Source):
    """Decelerate from a given state, starting at ``start``, then hold."""

    mode = "stop"

    def __init__(self, state: _State, start: float, duration: float) -> None:
        self.p0, self.v0, self.a0 = (x.copy() for x in state[:3])
        self.start = start
        self.duration = duration

    def evaluate(self, t: float) -> _State:
        return stop_profile(self.p0, self.v0, self.a0, self.duration, t - self.start)

    def simplify(self, t: float) -> _Source:
        if t >= self.start + self.duration:
            return _HoldSource(self.evaluate(t)[0])
        return self


class _FunctionSource(_Source):
    """One action function anchored at its observation time; stop-and-hold past the chunk's end."""

    mode = "track"

    def __init__(self, fn: ActionFunctionLike, anchor: float, dof: int, stop_duration: float) -> None:
        self.fn = fn
        self.anchor = anchor
        self.duration = float(fn.chunk_duration)
        self.dof = dof
        end_state = evaluate_function(fn, np.array([self.duration]), dof)
        self.end_state = tuple(x[0] for x in end_state)
        self.stop = _StopSource(self.end_state, anchor + self.duration, stop_duration)

    def evaluate(self, t: float) -> _State:
        local = t - self.anchor
        if local > self.duration:
            return self.stop.evaluate(t)
        local = min(max(local, 0.0), self.duration)
        p, v, a, j = evaluate_function(self.fn, np.array([local]), self.dof)
        return p[0], v[0], a[0], j[0]

    def simplify(self, t: float) -> _Source:
        if t > self.anchor + self.duration:
            return self.stop.simplify(t)
        return self


class _BlendSource(_Source):
    mode = "blend"

    def __init__(self, old: _Source, new: _Source, start: float, duration: float) -> None:
        self.old, self.new, self.start, self.duration = old, new, start, duration

    def evaluate(self, t: float) -> _State:
        w, w1, w2, w3 = blend_weight((t - self.start) / self.duration)
        new = self.new.evaluate(t)
        if w >= 1.0:
            return new
        old = self.old.evaluate(t)
        if w <= 0.0:
            return old
        inv = 1.0 / self.duration
        w1, w2, w3 = w1 * inv, w2 * inv * inv, w3 * inv**3  # per second
        dp, dv, da, dj = (n - o for n, o in zip(new, old, strict=True))
        p = old[0] + w * dp
        v = old[1] + w * dv + w1 * dp
        a = old[2] + w * da + 2.0 * w1 * dv + w2 * dp
        j = old[3] + w * dj + 3.0 * w1 * da + 3.0 * w2 * dv + w3 * dp
        return p, v, a, j

    def simplify(self, t: float) -> _Source:
        if t >= self.start + self.duration:
            return self.new.simplify(t)
        self.old = self.old.simplify(t)
        self.new = self.new.simplify(t)
        return self


def offset_decay_basis(s: float) -> np.ndarray:
    """The quintic Hermite basis of the ``"offset_decay"`` switch on s ∈ [0, 1]: [4, 3] array, row k = the k-th
    s-derivative of (H0, H1, H2).

    H0 = 1 - 10s³ + 15s⁴ - 6s⁵ starts at (1, 0, 0) in (value, slope, curvature), H1 = s - 6s³ + 8s⁴ - 3s⁵ at
    (0, 1, 0) and H2 = (s² - 3s³ + 3s⁴ - s⁵)/2 at (0, 0, 1); all three end at (0, 0, 0) at s = 1. So
    e(t) = Δp·H0(s) + Δv·T·H1(s) + Δa·T²·H2(s), s = t/T, starts with the offsets Δp, Δv, Δa in position,
    velocity and acceleration and is zero, with its first two derivatives, from t = T on. Outside [0, 1]:
    s < 0 is treated as 0 and s >= 1 gives zeros.
    """
    if s >= 1.0:
        return np.zeros((4, 3))
    s = max(s, 0.0)
    s2, s3, s4 = s * s, s * s * s, s**4
    return np.array(
        [
            [1 - 10 * s3 + 15 * s4 - 6 * s4 * s, s - 6 * s3 + 8 * s4 - 3 * s4 * s, (s2 - 3 * s3 + 3 * s4 - s4 * s) / 2],
            [-30 * s2 + 60 * s3 - 30 * s4, 1 - 18 * s2 + 32 * s3 - 15 * s4, (2 * s - 9 * s2 + 12 * s3 - 5 * s4) / 2],
            [-60 * s + 180 * s2 - 120 * s3, -36 * s + 96 * s2 - 60 * s3, (2 - 18 * s + 36 * s2 - 20 * s3) / 2],
            [-60 + 360 * s - 360 * s2, -36 + 192 * s - 180 * s2, (-18 + 72 * s - 60 * s2) / 2],
        ]
    )


class _OffsetDecaySource(_Source):
    """``new`` from the switch on, plus the offset (old - new) at the switch, removed over ``duration``.

    ``old_state`` is the command (position, velocity, acceleration, jerk) at ``start``; only the offset is kept
    of the old source, so nothing of it needs to be evaluated later.
    """

    mode = "blend"

    def __init__(self, old_state: _State, new: _Source, start: float, duration: float) -> None:
        self.new, self.start, self.duration = new, start, duration
        now = new.evaluate(start)
        self.delta = [o - n for o, n in zip(old_state[:3], now[:3], strict=True)]  # Δp, Δv, Δa

    def evaluate(self, t: float) -> _State:
        new = self.new.evaluate(t)
        h = offset_decay_basis((t - self.start) / self.duration)
        if not h.any():
            return new
        dp, dv, da = self.delta
        T = self.duration
        out = []
        for order in range(4):
            e = (dp * h[order, 0] + dv * T * h[order, 1] + da * T * T * h[order, 2]) / T**order
            out.append(new[order] + e)
        return out[0], out[1], out[2], out[3]

    def simplify(self, t: float) -> _Source:
        if t >= self.start + self.duration:
            return self.new.simplify(t)
        self.new = self.new.simplify(t)
        return self


# --------------------------------------------------------------------------------------------------------
# The stream
# --------------------------------------------------------------------------------------------------------
def _positive(name: str, value: Any, allow_zero: bool = False, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"`{name}` must be a number of seconds, got {value!r}.")
    value = float(value)
    if not math.isfinite(value) or value < 0.0 or (value == 0.0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"`{name}` must be finite and {bound}, got {value!r}.")
    return value


def _time(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"`{name}` must be a time in seconds (a real number), got {value!r}.")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be finite, got {value!r}.")
    return value


def _per_dim(name: str, value: Any, dof: int) -> np.ndarray | None:
    if value is None:
        return None
    arr = (
        np.broadcast_to(np.asarray(value, dtype=np.float64), (dof,)).copy()
        if np.ndim(value) == 0
        else np.asarray(value, dtype=np.float64)
    )
    if arr.shape != (dof,) or not np.all(arr > 0) or not np.all(np.isfinite(arr)):
        raise ValueError(f"`{name}` must be a positive finite scalar or a ({dof},) array, got {value!r}.")
    return arr


class ActionStream:
    """Turns action functions arriving at a low rate into a continuous joint command at controller rate.

    Args:
        initial_position: [D] position held until the first function is accepted (e.g. the measured
            joint positions at start-up), physical units.
        start_time: controller time of ``initial_position``, seconds.
        blend_duration: T_b, length of the switch from one function to the next, seconds (0 switches at
            once and gives up continuity). With ``switch="crossfade"`` keep it shorter than the policy period.
        stop_duration: T_s, how long the stop profile past a chunk's end takes to bring velocity to zero.
        max_latency: a function whose observation is more than this many seconds old when submitted is
            refused.
        max_velocity: optional per-dimension (or scalar) bound on |velocity|, per second. A function exceeding
            it on the probe grid is refused, and every command is held to it (see Enforcement above).
        position_limits: optional ([D] lower, [D] upper) bounds on the position; a function outside them on
            the probe grid is refused, and every command is clamped to them. ``initial_position`` must lie
            within them.
        max_acceleration: optional per-dimension (or scalar) bound on |acceleration|, per second²; checked on
            the probe grid like ``max_velocity`` and enforced on every command (velocity change per tick).
        max_position_jump: optional bound on |new position - current command| at the switch time; guards
            against a function that disagrees wildly with where the arm is commanded to be.
        validation_points: number of probe times over the remaining chunk checked on submission.
        switch: ``"crossfade"`` (default) mixes the old and the new function with a quintic weight over T_b;
            ``"offset_decay"`` follows the new function at once and removes the offset between the two (in
            position, velocity and acceleration at the switch) over T_b, which allows a window longer than
            the policy period. See the module docstring.

    Call [`submit`] when the policy returns, and [`command`] at every controller tick with non-decreasing
    times.
    """

    def __init__(
        self,
        initial_position: np.ndarray,
        start_time: float = 0.0,
        *,
        blend_duration: float = 0.05,
        stop_duration: float = 0.3,
        max_latency: float = 0.5,
        max_velocity: float | np.ndarray | None = None,
        position_limits: tuple[np.ndarray, np.ndarray] | None = None,
        max_position_jump: float | np.ndarray | None = None,
        validation_points: int = 16,
        switch: str = "crossfade",
        max_acceleration: float | np.ndarray | None = None,
    ) -> None:
        if switch not in SWITCH_MODES:
            raise ValueError(f"`switch` must be one of {SWITCH_MODES}, got {switch!r}.")
        self.switch = switch
        position = np.asarray(initial_position, dtype=np.float64)
        if position.ndim != 1 or position.size == 0 or not np.all(np.isfinite(position)):
            raise ValueError(f"`initial_position` must be a finite [D] array, got {initial_position!r}.")
        self.dof = int(position.size)
        self.blend_duration = _positive("blend_duration", blend_duration, allow_zero=True)
        self.stop_duration = _positive("stop_duration", stop_duration, allow_zero=True)
        self.max_latency = _positive("max_latency", max_latency)
        self.max_velocity = _per_dim("max_velocity", max_velocity, self.dof)
        self.max_position_jump = _per_dim("max_position_jump", max_position_jump, self.dof)
        self.max_acceleration = _per_dim("max_acceleration", max_acceleration, self.dof)
        if position_limits is not None:
            try:
                lower, upper = (np.asarray(x, dtype=np.float64) for x in position_limits)
            except (TypeError, ValueError) as err:
                raise ValueError(
                    f"`position_limits` must be a pair ([D] lower, [D] upper), got {position_limits!r}."
                ) from err
            if lower.shape != (self.dof,) or upper.shape != (self.dof,) or not np.all(lower < upper):
                raise ValueError(
                    f"`position_limits` must be two ({self.dof},) arrays with lower < upper, got {position_limits!r}."
                )
            if np.any(position < lower) or np.any(position > upper):
                raise ValueError(
                    f"`initial_position` {position.tolist()} lies outside `position_limits` "
                    f"({lower.tolist()}, {upper.tolist()})."
                )
            position_limits = (lower, upper)
        self.position_limits = position_limits
        if (
            isinstance(validation_points, bool)
            or not isinstance(validation_points, int)
            or validation_points < 2
        ):
            raise ValueError(f"`validation_points` must be an int >= 2, got {validation_points!r}.")
        self.validation_points = validation_points
        self._source: _Source = _HoldSource(position)
        self._last_time = _time("start_time", start_time)
        self._last_command: JointCommand | None = None
        self._anchor: float | None = None
        # The state the limiter steps from: the latest command returned (initially a hold at start_time).
        self._out = (self._last_time, position.copy(), np.zeros(self.dof), np.zeros(self.dof))
        self._limiting = False
        self.num_accepted = 0
        self.num_refused = 0
        self.last_refusal: str | None = None
        self.num_limited = 0
        """Commands returned with at least one dimension clamped or rate-limited."""
        self.last_violation: str | None = None
        """What the latest limited command corrected (dimensions and limit)."""
        self.num_faults = 0
        """Times an active function raised or returned a non-finite value in [`command`]."""
        self.last_fault: str | None = None

    # ----------------------------------------------------------------------------------------------------
    @property
    def anchor(self) -> float | None:
        """Observation time of the newest accepted function (None before the first)."""
        return self._anchor

    @property
    def last_command(self) -> JointCommand | None:
        """The latest command returned by [`command`] (None before the first call).

        A policy can be conditioned on it: the command in force when an observation is taken (position,
        velocity and acceleration, exact for an action function) is what the next chunk has to continue.
        """
        return self._last_command

    @property
    def last_time(self) -> float:
        """The latest time seen by [`command`] or [`submit`]."""
        return self._last_time

    def _check_clock(self, name: str, t: float) -> None:
        if t < self._last_time - TIME_TOLERANCE:
            raise ValueError(
                f"`{name}` must not go back in time: got {t!r} s after {self._last_time!r} s (the stream's clock is "
                "monotonic)."
            )

    def _refuse(self, reason: str) -> bool:
        self.num_refused += 1
        self.last_refusal = reason
        logger.warning("ActionStream: refused an action function: %s", reason)
        return False

    def submit(self, fn: ActionFunctionLike, observation_time: float, now: float) -> bool:
        """Offer a new action function; returns True when it is accepted.

        Args:
            fn: the action function of ONE chunk whose time 0 is the observation it was computed from.
                Objects with a ``to_numpy()`` method (NIAF's torch ``ActionFunction``) are converted once.
            observation_time: controller time at which the observation was taken, seconds.
            now: current controller time (the switch starts here), seconds; ``now >= observation_time``.

        A refused function leaves the command unchanged. Reasons: latency ``now - observation_time`` above
        ``max_latency``; chunk already over at ``now``; observation older than that of the function in use;
        the function raised, returned the wrong shape, or a non-finite value on the probe grid over
        ``[now - observation_time, T]``; velocity, position-limit or position-jump checks failed.
        Raises ValueError for caller errors (non-finite or backward times, observation in the future, an
        object without a finite positive ``chunk_duration``). Anything the function itself raises (its
        ``chunk_duration`` property, ``to_numpy()``, a call on the probe grid, at the chunk's end or while the
        switch is built) is a refusal: no exception from the function leaves ``submit``.
        """
        observation_time = _time("observation_time", observation_time)
        now = _time("now", now)
        self._check_clock("now", now)
        if observation_time > now + TIME_TOLERANCE:
            raise ValueError(f"`observation_time` ({observation_time} s) is later than `now` ({now} s).")
        try:
            duration = getattr(fn, "chunk_duration", None)
        except Exception as err:  # a property that raises: the function is faulty, not the caller's call
            return self._refuse(f"reading `chunk_duration` failed: {type(err).__name__}: {err}")
        if isinstance(duration, bool) or not isinstance(duration, (int, float, np.floating, np.integer)) \
                or not (math.isfinite(duration) and duration > 0):
            raise ValueError(f"`fn` must have a finite positive `chunk_duration` in seconds, got {duration!r}.")
        try:  # everything below runs the function: whatever it raises is a refusal, never the caller's exception
            return self._check_and_switch(fn, float(duration), observation_time, now)
        except Exception as err:
            return self._refuse(f"the function failed while it was checked or switched to: {type(err).__name__}: "
                                f"{err}")

    def _check_and_switch(self, fn: ActionFunctionLike, duration: float, observation_time: float,
                          now: float) -> bool:
        """The body of [`submit`] once the caller's arguments are valid (any exception is the function's)."""
        if hasattr(fn, "to_numpy") and callable(fn.to_numpy):
            fn = fn.to_numpy()
        latency = now - observation_time
        if latency > self.max_latency:
            return self._refuse(
                f"stale: observation is {latency:.4f} s old, max_latency is {self.max_latency} s"
            )
        if latency >= duration:
            return self._refuse(
                f"stale: the chunk ({duration} s) is already over {latency:.4f} s after its observation"
            )
        if self._anchor is not None and observation_time < self._anchor - TIME_TOLERANCE:
            return self._refuse(
                f"out of order: observation at {observation_time} s is older than the one in use ({self._anchor} s)"
            )
        probe = np.linspace(max(latency, 0.0), duration, self.validation_points)
        try:
            p, v, a, j = evaluate_function(fn, probe, self.dof)
        except Exception as err:  # a user function may raise anything; none of it reaches the caller
            return self._refuse(f"evaluation failed: {type(err).__name__}: {err}")
        if not all(np.all(np.isfinite(x)) for x in (p, v, a, j)):
            return self._refuse("non-finite position or derivative on the probe grid")
        if self.max_velocity is not None and np.any(np.abs(v) > self.max_velocity):
            worst = float(np.max(np.abs(v) / self.max_velocity))
            return self._refuse(f"velocity limit exceeded ({worst:.2f}× max_velocity)")
        if self.max_acceleration is not None and np.any(np.abs(a) > self.max_acceleration):
            worst = float(np.max(np.abs(a) / self.max_acceleration))
            return self._refuse(f"acceleration limit exceeded ({worst:.2f}× max_acceleration)")
        if self.position_limits is not None:
            lower, upper = self.position_limits
            if np.any(p < lower) or np.any(p > upper):
                return self._refuse("position limits exceeded")
        if self.max_position_jump is not None:
            current = self._current_state(now)[0]
            if np.any(np.abs(p[0] - current) > self.max_position_jump):
                jump = float(np.max(np.abs(p[0] - current)))
                return self._refuse(f"position jump {jump:.4f} at the switch exceeds max_position_jump")
        try:
            new = _FunctionSource(fn, observation_time, self.dof, self.stop_duration)
        except Exception as err:
            return self._refuse(f"evaluation failed at the chunk's end: {type(err).__name__}: {err}")
        if not all(np.all(np.isfinite(x)) for x in new.end_state):
            return self._refuse("non-finite state at the chunk's end")
        # the switch is built completely before it replaces the source in force: a function that fails here
        # (or gives a non-finite offset) is refused and the stream goes on with what it followed
        if self.blend_duration > 0.0 and self.switch == "offset_decay":
            switched: _Source = _OffsetDecaySource(self._current_state(now), new, now, self.blend_duration)
            if not all(np.all(np.isfinite(x)) for x in switched.delta):
                return self._refuse("non-finite offset between the command and the function at the switch")
        elif self.blend_duration > 0.0:
            self._current_state(now)  # drops finished blends, and a source that has failed since
            switched = _BlendSource(self._source, new, now, self.blend_duration)
        else:
            switched = new
        self._source = switched
        self._anchor = observation_time
        self._last_time = now
        self.num_accepted += 1
        logger.debug(
            "ActionStream: accepted a function observed at %.4f s, switching at %.4f s", observation_time, now
        )
        return True

    def _fault(self, t: float, reason: str) -> _State:
        """Drop the active source after a fault and stop from the latest command returned."""
        self.num_faults += 1
        self.last_fault = f"t={t:.4f} s: the active action function {reason}"
        logger.error(
            "ActionStream: non-finite command or error at t=%.4f s (%s); stopping from the last good command.",
            t,
            reason,
        )
        _, p, v, a = self._out
        self._source = _StopSource((p, v, a, np.zeros_like(p)), t, self.stop_duration)
        state = self._source.evaluate(t)
        if not all(np.all(np.isfinite(x)) for x in state):  # a stop from an absurd velocity overflows: hold
            self._source = _HoldSource(p)
            state = self._source.evaluate(t)
        return state

    def _current_state(self, t: float) -> _State:
        """The active source at time t; a source that raises or yields a non-finite value is replaced by a stop."""
        try:
            self._source = self._source.simplify(t)
            p, v, a, j = self._source.evaluate(t)
        except Exception as err:  # never let a user function's exception into the control loop
            return self._fault(t, f"raised {type(err).__name__}: {err}")
        if not (np.all(np.isfinite(p)) and np.all(np.isfinite(v)) and np.all(np.isfinite(a))):
            return self._fault(t, "returned a non-finite position, velocity or acceleration")
        if not np.all(np.isfinite(j)):
            j = np.zeros_like(j)
        return p, v, a, j

    def _limit(
        self, t: float, p: np.ndarray, v: np.ndarray, a: np.ndarray, j: np.ndarray
    ) -> tuple[_State, str | None]:
        """Hold (p, v, a, j) at time t to the stream's limits, stepping from the latest command returned.

        Per dimension: passed through unchanged when the position is within ``position_limits``, |v| and |a|
        within ``max_velocity`` / ``max_acceleration``, and the step from the previous command is feasible
        (|Δp| <= max_velocity·dt, |Δv| <= max_acceleration·dt). Otherwise the dimension is rate-limited toward
        the (clamped) source: velocity v_prev + clip(Δp/dt - v_src, ±sqrt(2·a_max·|Δp|)) (so it brakes in
        time), then clipped to v_prev ± a_max·dt and ±v_max; position p_prev + v·dt clamped to the limits.
        Returns the limited state and a description of what was corrected (None when nothing was).
        """
        if self.position_limits is None and self.max_velocity is None and self.max_acceleration is None:
            return (p, v, a, j), None
        t0, p0, v0, a0 = self._out
        dt = max(t - t0, 0.0)
        inf = np.full(self.dof, np.inf)
        lower, upper = self.position_limits if self.position_limits is not None else (-inf, inf)
        vmax = self.max_velocity if self.max_velocity is not None else inf
        amax = self.max_acceleration if self.max_acceleration is not None else inf
        rel = 1.0 + 1e-9  # rounding slack: a source exactly at a limit is not a violation
        checks = {
            "position": (p >= lower) & (p <= upper),
            "velocity": np.abs(v) <= vmax * rel,
            "acceleration": np.abs(a) <= amax * rel,
        }
        with np.errstate(invalid="ignore"):  # inf·0 when a limit is unset and dt is 0
            checks["position step"] = np.isinf(vmax) | (np.abs(p - p0) <= vmax * dt * rel + 1e-12)
            checks["velocity step"] = np.isinf(amax) | (np.abs(v - v0) <= amax * dt * rel + 1e-12)
        ok = np.logical_and.reduce(list(checks.values()))
        if ok.all():
            return (p, v, a, j), None
        target = np.clip(p, lower, upper)
        if dt > 0.0:
            v_src = np.clip(v, -vmax, vmax)
            error = target - p0
            with np.errstate(invalid="ignore"):
                # the fastest approach that can still stop at the target
                brake = np.where(np.isinf(amax), np.inf, np.sqrt(2.0 * amax * np.abs(error)))
                v_new = v_src + np.clip(error / dt - v_src, -brake, brake)
                v_new = np.clip(v_new, v0 - amax * dt, v0 + amax * dt)
            v_new = np.clip(v_new, -vmax, vmax)
            p_new = np.clip(p0 + v_new * dt, lower, upper)
            v_new = (p_new - p0) / dt
            a_new = np.clip((v_new - v0) / dt, -amax, amax)
        else:  # no time has passed: the command cannot move
            p_new, v_new, a_new = p0.copy(), v0.copy(), a0.copy()
        bad = ~ok
        out = (
            np.where(bad, p_new, p),
            np.where(bad, v_new, v),
            np.where(bad, a_new, a),
            np.where(bad, 0.0, j),
        )
        what = ", ".join(
            f"{name} (dims {np.flatnonzero(~flag).tolist()})"
            for name, flag in checks.items()
            if not flag.all()
        )
        return out, f"t={t:.4f} s: limited {what}"

    def command(self, t: float) -> JointCommand:
        """The reference at controller time ``t`` (seconds, non-decreasing between calls).

        Every command returned is finite and within the stream's limits (position, velocity, acceleration; see
        the module docstring). If the active function raises or yields a non-finite value (it passed the probe
        grid, so this is rare), the stream logs an error and falls back to a stop from the last good command;
        the exception is not propagated.
        """
        t = _time("t", t)
        self._check_clock("t", t)
        p, v, a, j = self._current_state(t)
        (p, v, a, j), violation = self._limit(t, p, v, a, j)
        if violation is not None:
            self.num_limited += 1
            self.last_violation = violation
            if not self._limiting:  # once per episode of limiting, not at every 1 kHz tick
                logger.warning("ActionStream: command held to the limits: %s", violation)
        self._limiting = violation is not None
        self._last_time = t
        self._out = (t, p, v, a)
        self._last_command = JointCommand(t, p, v, a, j, self._source.mode, violation is not None)
        return self._last_command


__all__ = [
    "ActionFunctionLike",
    "ActionStream",
    "JointCommand",
    "SWITCH_MODES",
    "TIME_TOLERANCE",
    "blend_weight",
    "evaluate_function",
    "offset_decay_basis",
    "stop_profile",
]
