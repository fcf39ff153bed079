"""Closed-loop comparison: NIAF through the streaming runtime versus waypoint execution, and the metrics.

Every method sees the same arm, gains, reference, sensor-noise sequence, policy outputs, observation times
(policy at ``policy_hz``) and inference latency. They differ only in how a chunk becomes the 1 kHz command:

* ``niaf``: the action function itself through :class:`modeling_niaf.runtime.ActionStream` — position and
  analytic velocity at the present time, C² switches (``LoopSettings.switch``), stop-and-hold past the chunk;
* ``waypoints_zoh``: the chunk's K waypoints at the training rate (the function sampled at τ_k), each held
  (zero-order hold) until the next, velocity = finite difference of consecutive setpoints (the held one minus
  the one before, times f), as a controller fed only setpoints would estimate it;
* ``waypoints_linear``: the same waypoints linearly interpolated at 1 kHz, velocity = the segment's finite
  difference (piecewise constant).
Waypoint executors switch to a new chunk at once on arrival (the usual chunk execution), indexed by the time
elapsed since the observation, so they get the same delay compensation as the runtime.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from arm import observation_state

from modeling_niaf.runtime import ActionStream

logger = logging.getLogger(__name__)


class WaypointExecutor:
    """Waypoints of the newest chunk, held (``"zoh"``) or linearly interpolated (``"linear"``).

    Args:
        initial_position: [D] held until the first chunk, rad.
        chunk_size, control_hz: K waypoints at f Hz (t_k = k/f after the observation).
        mode: "zoh" or "linear".
    """

    def __init__(self, initial_position: np.ndarray, chunk_size: int, control_hz: float, mode: str) -> None:
        if mode not in ("zoh", "linear"):
            raise ValueError(f"`mode` must be 'zoh' or 'linear', got {mode!r}.")
        self.mode, self.k, self.f = mode, int(chunk_size), float(control_hz)
        self.hold = np.asarray(initial_position, dtype=np.float64).copy()
        self.waypoints: np.ndarray | None = None
        self.anchor = 0.0
        self._held = self.hold.copy()  # ZOH: the setpoint held now and the one before it
        self._previous = self.hold.copy()
        self._changed = 0.0

    def submit(self, fn, observation_time: float, now: float) -> bool:
        tau = np.linspace(-1.0, 1.0, self.k)
        traj = fn(tau=tau, derivatives=0)
        self.waypoints = np.asarray(traj.position, dtype=np.float64)[0]
        self.anchor = observation_time
        return True

    def command(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        if self.waypoints is None:
            return self.hold, np.zeros_like(self.hold)
        w = self.waypoints
        x = (t - self.anchor) * self.f
        k = int(math.floor(x + 1e-9))
        if k >= self.k - 1:  # past the chunk: hold the last waypoint
            return self._zoh(w[-1], t) if self.mode == "zoh" else (w[-1], np.zeros_like(w[-1]))
        k = max(k, 0)
        if self.mode == "zoh":
            return self._zoh(w[k], t)
        slope = (w[k + 1] - w[k]) * self.f
        return w[k] + (w[k + 1] - w[k]) * min(max(x - k, 0.0), 1.0), slope

    def _zoh(self, setpoint: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Hold ``setpoint``; velocity = (held - previous)·f during the interval after each change, then 0."""
        if not np.array_equal(setpoint, self._held):
            self._previous, self._held, self._changed = self._held, setpoint.copy(), t
        elif t - self._changed >= 1.0 / self.f - 1e-9:
            self._previous = self._held
        return self._held, (self._held - self._previous) * self.f


@dataclass
class LoopSettings:
    """Timing of the slow loop (seconds, Hz)."""

    policy_hz: float = 10.0
    latency: float = 0.03
    chunk_size: int = 10
    control_hz: float = 20.0
    # the runtime's switch: the new function's motion at once, the disagreement with the old command removed
    # over 0.3 s, which puts that correction below the jitter cutoff (5 Hz) without delaying a new plan
    blend_duration: float = 0.3
    stop_duration: float = 0.3
    switch: str = "offset_decay"

    def observation_times(self, duration: float) -> np.ndarray:
        period = 1.0 / self.policy_hz
        return np.arange(0.0, duration - self.latency - 1e-9, period).round(9)


def run_method(
    arm,
    reference,
    policy: Callable,
    method: str,
    settings: LoopSettings,
    noise_seed: int,
    duration: float,
    image_size: int | None = None,
):
    """One closed-loop episode of ``duration`` seconds; returns (Rollout, list of switch times).

    The reference must extend at least one chunk past ``duration`` so that every chunk has a true future.
    With ``image_size`` the observation also holds ``observation.images.front``, the arm rendered at that size
    (as in the demonstrations).
    """
    if image_size is not None and image_size < 1:
        raise ValueError(f"`image_size` must be a positive number of pixels or None, got {image_size}.")
    if reference.duration < duration + settings.chunk_size / settings.control_hz - 1e-9:
        raise ValueError(
            f"`reference` lasts {reference.duration} s; it must cover `duration` ({duration} s) plus one chunk."
        )
    arm.reset(reference.position[0], seed=noise_seed)
    q0 = reference.position[0]
    if method == "niaf":
        executor = ActionStream(
            q0,
            0.0,
            blend_duration=settings.blend_duration,
            stop_duration=settings.stop_duration,
            max_latency=0.5,
            max_velocity=20.0,
            switch=settings.switch,
        )

        def command(t: float):
            c = executor.command(t)
            return c.position, c.velocity

        def command_in_force(t: float):
            c = executor.command(t)  # the stream's clock allows the same time twice
            return c.position, c.velocity, c.acceleration
    else:
        executor = WaypointExecutor(q0, settings.chunk_size, settings.control_hz, method.split("_")[1])
        command = executor.command

        def command_in_force(t: float):
            # waypoint commands have no acceleration; with SharedChunks these observations only matter
            # for a policy asked first by a waypoint run
            p, v = executor.command(t)
            return p, v, np.zeros_like(p)

    obs_ticks = {int(round(t / arm.dt)) for t in settings.observation_times(duration)}
    latency_ticks = int(round(settings.latency / arm.dt))
    pending: dict[int, tuple[float, object]] = {}
    switches: list[float] = []

    def before_tick(i: int, t: float) -> None:
        if i in obs_ticks:
            _, v = arm.measure()
            obs = {
                "observation.state": observation_state(*command_in_force(t), reference.goals[i]),
                "observation.velocity": v,
                "task": "reach the goal joint configuration",
            }
            if image_size is not None:
                obs["observation.images.front"] = arm.render(reference.goals[i], image_size)
            pending[i + latency_ticks] = (t, policy(obs, t))
        if i in pending:
            obs_time, fn = pending.pop(i)
            if executor.submit(fn, obs_time, t):
                switches.append(t)

    return arm.run(int(round(duration / arm.dt)), command, before_tick), switches


def high_frequency_power(signal: np.ndarray, dt: float, cutoff_hz: float) -> float:
    """Mean power of ``signal`` [N, D] above ``cutoff_hz``, averaged over D (units of signal²).

    By Parseval: the mean square of the signal with every Fourier component at or below the cutoff removed.
    The signal is mirrored before the FFT (even extension), so the jump between its last and first sample
    that a plain periodic FFT would see does not count as high-frequency energy (the mirrored half has the
    same energy as the signal, so the mean over the signal alone is the mean over the extension).
    """
    return float(np.mean(high_pass(signal, dt, cutoff_hz) ** 2))


def high_pass(signal: np.ndarray, dt: float, cutoff_hz: float) -> np.ndarray:
    """``signal`` [N, D] with every Fourier component at or below ``cutoff_hz`` removed (mirrored FFT)."""
    x = np.concatenate([signal, signal[::-1]], axis=0)
    spec = np.fft.rfft(x, axis=0)
    spec[np.fft.rfftfreq(len(x), dt) <= cutoff_hz] = 0.0
    return np.fft.irfft(spec, n=len(x), axis=0)[: len(signal)]


def jitter_share_after(
    signal: np.ndarray, dt: float, cutoff_hz: float, event_times: list[float], window: float = 0.3
) -> float:
    """Fraction of the energy of ``signal`` above ``cutoff_hz`` that lies within ``window`` s after an event."""
    high = high_pass(signal, dt, cutoff_hz) ** 2
    t = np.arange(len(signal)) * dt
    near = np.zeros(len(t), bool)
    for s in event_times:
        near |= (t >= s) & (t < s + window)
    total = float(high.sum())
    return float(high[near].sum()) / total if total > 0 else 0.0


def metrics(roll, reference, switches: list[float], dt: float, cutoff_hz: float) -> dict[str, float]:
    """The comparison's numbers for one rollout (see README for definitions and units)."""
    n = len(roll.time)
    err = roll.q - reference.position[:n]
    jerk = np.diff(roll.qdd, axis=0) / dt
    jumps, steps = [], []
    for s in switches:
        i = int(round(s / dt))
        if 1 <= i < n:
            jumps.append(float(np.abs(roll.qd_cmd[i] - roll.qd_cmd[i - 1]).max()))
            # the part of the position change over the switch tick that the velocity command does not explain
            moved = roll.q_cmd[i] - roll.q_cmd[i - 1] - roll.qd_cmd[i - 1] * dt
            steps.append(float(np.abs(moved).max()))
    return {
        "tracking_rmse": float(np.sqrt(np.mean(err**2))),
        "velocity_jitter": high_frequency_power(roll.qd_cmd, dt, cutoff_hz),
        "jitter_share_after_goal_change": jitter_share_after(
            roll.qd_cmd, dt, cutoff_hz, reference.switch_times
        ),
        "peak_jerk": float(np.abs(jerk).max()),
        "boundary_velocity_jump": float(np.mean(jumps)) if jumps else 0.0,
        "boundary_velocity_jump_max": float(np.max(jumps)) if jumps else 0.0,
        "boundary_position_step": float(np.mean(steps)) if steps else 0.0,
        "measured_velocity_jitter": high_frequency_power(roll.qd, dt, cutoff_hz),
        "command_tracking_rmse": float(np.sqrt(np.mean((roll.q - roll.q_cmd) ** 2))),
        "rms_jerk": float(np.sqrt(np.mean(jerk**2))),
    }


def plot_velocities(
    path, rollouts: dict, switches: dict, labels: dict, joint: int, joint_name: str, reference
) -> None:
    """Commanded and measured velocity of one joint for each method, chunk switches dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rollouts), 1, figsize=(10, 2.6 * len(rollouts)), sharex=True, sharey=True)
    for ax, (name, roll) in zip(np.atleast_1d(axes), rollouts.items(), strict=True):
        for s in switches[name]:
            ax.axvline(s, color="0.85", lw=0.6, zorder=0)
        n = len(roll.time)
        ax.plot(roll.time, reference.velocity[:n, joint], color="0.5", lw=1.0, ls="--", label="reference")
        ax.plot(roll.time, roll.qd_cmd[:, joint], color="tab:red", lw=0.9, label="commanded q̇_d")
        ax.plot(roll.time, roll.qd[:, joint], color="tab:blue", lw=1.1, label="measured q̇")
        ax.set_title(labels[name], fontsize=9, loc="left")
        ax.set_ylabel(f"{joint_name} [rad/s]")
    axes = np.atleast_1d(axes)
    axes[0].legend(loc="upper right", fontsize=8, ncol=3)
    axes[-1].set_xlabel("time [s] (grey lines: chunk switches)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
