"""The simulated arm: MuJoCo model, 1 kHz joint impedance controller, reference motions, demonstrations.

Control law (the paper's eq. 14, in joint space, plus bias compensation):

    τ = Kp (q_d - q) + Kd (q̇_d - q̇) + c(q, q̇) + g(q)

with q_d, q̇_d from whatever command source is plugged in (the analytic reference for demonstrations, the
streaming runtime or a waypoint executor in the comparison) and c + g = MuJoCo's ``qfrc_bias`` at the current
state (computed by ``mj_step1`` before the torque is set, then ``mj_step2`` integrates).

Reference motions: each joint follows a critically damped third-order system toward a goal that changes a
few times per episode, q⃛ = -p³(q - g) - 3p² q̇ - 3p q̈. It is C² (the jerk steps when the goal changes),
Markov in (q, q̇, q̈, goal), so a policy that sees the state and the goal can learn it, and it is integrated
exactly (matrix exponential) on the 1 kHz grid.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
ARM_XML = HERE / "arm.xml"
JOINT_NAMES = ("j1_yaw", "j2_shoulder", "j3_elbow", "j4_forearm_roll", "j5_wrist_pitch", "j6_wrist_roll")
DOF = len(JOINT_NAMES)

HOME = np.array([0.0, 0.35, 1.1, 0.0, 0.6, 0.0])
"""Rest posture, rad."""
GOAL_SPAN = np.array([0.9, 0.45, 0.55, 1.0, 0.7, 1.0])
"""Goals are drawn uniformly in HOME ± GOAL_SPAN, rad."""

KP = np.array([300.0, 300.0, 200.0, 40.0, 40.0, 15.0])
"""Joint stiffness, N·m/rad (about 25, 20, 25, 40, 40, 38 rad/s natural frequency with the arm's inertia)."""
KD = np.array([22.0, 28.0, 14.0, 1.6, 1.7, 0.7])
"""Joint damping, N·m·s/rad (damping ratios about 0.7 to 0.9)."""
TORQUE_LIMIT = np.array([120.0, 120.0, 80.0, 20.0, 20.0, 10.0])
"""Motor torque limits, N·m (the controller clips)."""

POSITION_NOISE = 5e-4
"""Std of the joint-position sensor noise, rad."""
VELOCITY_NOISE = 0.02
"""Std of the joint-velocity sensor noise, rad/s (like an FOC driver's estimate)."""


def _expm(m: np.ndarray, terms: int = 18) -> np.ndarray:
    """Matrix exponential by scaling and squaring of a Taylor series (small dense matrices)."""
    norm = np.abs(m).sum(axis=1).max()
    squarings = max(0, int(math.ceil(math.log2(norm))) + 1) if norm > 0.5 else 0
    a = m / 2.0**squarings
    out, term = np.eye(len(m)), np.eye(len(m))
    for k in range(1, terms):
        term = term @ a / k
        out = out + term
    for _ in range(squarings):
        out = out @ out
    return out


@dataclass
class ReferenceMotion:
    """A joint reference sampled exactly on the controller grid.

    Attributes:
        dt: grid step, s.
        position, velocity, acceleration, jerk: [N+1, D] at t = i·dt (rad, rad/s, rad/s², rad/s³).
        goals: [N+1, D] the goal in force at each tick, rad.
        switch_times: times at which the goal changes, s.
    """

    dt: float
    position: np.ndarray
    velocity: np.ndarray
    acceleration: np.ndarray
    jerk: np.ndarray
    goals: np.ndarray
    switch_times: list[float] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return (len(self.position) - 1) * self.dt

    def index(self, t: float) -> int:
        """Grid index of time t (t must lie on the grid up to rounding)."""
        i = int(round(t / self.dt))
        if not 0 <= i < len(self.position) or abs(i * self.dt - t) > 1e-6:
            raise ValueError(
                f"`t`={t} s is not a tick of the reference grid (dt={self.dt} s, {self.duration} s long)."
            )
        return i


def make_reference(
    rng: np.random.Generator,
    duration: float,
    dt: float = 0.001,
    pole: float = 8.0,
    num_goals: int | None = None,
    start_delay: float = 0.2,
) -> ReferenceMotion:
    """A random reference: at rest near HOME for ``start_delay`` s, then 2-3 goals at random times.

    The rest at the start lets the first policy output arrive before anything moves (a robot does not start
    a motion before its policy has seen it), so no method is judged on a start-up catch-up.

    Args:
        rng: random generator (seeds the start, goals and switch times).
        duration: length, s.
        dt: grid step, s.
        pole: p of the third-order system (1/s); larger is faster.
        num_goals: goals per episode (default: one per ~1.3 s, at least 2).
        start_delay: seconds at rest before the first goal, s.
    """
    steps = int(round(duration / dt))
    if num_goals is None:
        num_goals = max(2, int(round(duration / 1.3)))
    starts = np.sort(
        np.concatenate([[start_delay], start_delay + rng.uniform(0.25, 0.8, num_goals - 1) * duration])
    )
    goals = HOME + rng.uniform(-1.0, 1.0, (num_goals, DOF)) * GOAL_SPAN
    starts = starts[starts < duration]
    goals = goals[: len(starts)]
    # x = [q - g, q̇, q̈] per joint; ẋ = A x with the characteristic polynomial (s + p)³.
    a = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [-(pole**3), -3 * pole**2, -3 * pole]])
    phi = _expm(a * dt)
    q = np.empty((steps + 1, DOF))
    v = np.zeros_like(q)
    acc = np.zeros_like(q)
    goal_at = np.empty_like(q)
    q[0] = HOME + rng.uniform(-0.1, 0.1, DOF)
    state = np.stack([q[0], np.zeros(DOF), np.zeros(DOF)])  # [3, D]
    switch_idx = [int(round(s / dt)) for s in starts]
    g = q[0].copy()  # at rest until the first goal
    for i in range(steps + 1):
        for k, si in enumerate(switch_idx):
            if i == si:
                g = goals[k]
        goal_at[i] = g
        q[i], v[i], acc[i] = state
        if i < steps:
            x = np.stack([state[0] - g, state[1], state[2]])
            x = phi @ x
            state = np.stack([x[0] + g, x[1], x[2]])
    jerk = -(pole**3) * (q - goal_at) - 3 * pole**2 * v - 3 * pole * acc
    return ReferenceMotion(dt, q, v, acc, jerk, goal_at, [float(s) for s in starts])


@dataclass
class Rollout:
    """What one closed-loop run recorded, one row per controller tick (t = i·dt, before the step)."""

    time: np.ndarray
    q: np.ndarray  # true joint positions, rad
    qd: np.ndarray  # true joint velocities, rad/s
    qdd: np.ndarray  # joint accelerations applied by the step, rad/s²
    q_meas: np.ndarray  # measured (noisy) positions
    qd_meas: np.ndarray  # measured (noisy) velocities
    q_cmd: np.ndarray  # commanded position q_d
    qd_cmd: np.ndarray  # commanded velocity q̇_d
    torque: np.ndarray
    events: list[dict] = field(default_factory=list)


class Arm:
    """The MuJoCo arm with its 1 kHz impedance controller.

    Args:
        kp, kd: per-joint gains (N·m/rad, N·m·s/rad).
        seed: seed of the sensor noise.
    """

    def __init__(self, kp: np.ndarray = KP, kd: np.ndarray = KD, seed: int = 0) -> None:
        import mujoco

        self._mj = mujoco
        self.model = mujoco.MjModel.from_xml_path(str(ARM_XML))
        self.data = mujoco.MjData(self.model)
        self.dt = float(self.model.opt.timestep)
        self.kp, self.kd = np.asarray(kp, float), np.asarray(kd, float)
        self.rng = np.random.default_rng(seed)
        self._fk_data = mujoco.MjData(self.model)
        self._tool = self.model.site("tool").id
        self._marker = self.model.body("goal_marker").mocapid[0]
        self._renderer = None

    def reset(self, q: np.ndarray, seed: int) -> None:
        self._mj.mj_resetData(self.model, self.data)
        self.data.qpos[:] = q
        self.data.qvel[:] = 0.0
        self._mj.mj_forward(self.model, self.data)
        self.rng = np.random.default_rng(seed)

    def measure(self) -> tuple[np.ndarray, np.ndarray]:
        """Noisy joint positions (rad) and velocities (rad/s) of the current state."""
        q = self.data.qpos + self.rng.normal(0.0, POSITION_NOISE, DOF)
        v = self.data.qvel + self.rng.normal(0.0, VELOCITY_NOISE, DOF)
        return q, v

    def tool_position(self, q: np.ndarray) -> np.ndarray:
        """Forward kinematics of the tool site, metres (world frame)."""
        self._fk_data.qpos[:] = q
        self._mj.mj_kinematics(self.model, self._fk_data)
        return self._fk_data.site_xpos[self._tool].copy()

    def render(self, goal: np.ndarray, size: int = 64) -> np.ndarray:
        """RGB uint8 [size, size, 3] from the front camera, with the goal's tool position marked."""
        if self._renderer is None:
            self._renderer = self._mj.Renderer(self.model, size, size)
        self.data.mocap_pos[self._marker] = self.tool_position(goal)
        self._mj.mj_forward(self.model, self.data)
        self._renderer.update_scene(self.data, camera="front")
        return self._renderer.render().copy()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def run(
        self,
        steps: int,
        command: Callable[[float], tuple[np.ndarray, np.ndarray]],
        before_tick: Callable[[int, float], None] | None = None,
    ) -> Rollout:
        """Run ``steps`` controller ticks from the current state.

        Args:
            steps: number of 1 kHz ticks.
            command: t → (q_d, q̇_d), called once per tick after ``before_tick``.
            before_tick: optional hook (tick index, time) for the slow loop: observe, call a policy, submit.
        """
        mj, m, d = self._mj, self.model, self.data
        rec = {
            k: np.empty((steps, DOF))
            for k in ("q", "qd", "qdd", "q_meas", "qd_meas", "q_cmd", "qd_cmd", "torque")
        }
        time = np.arange(steps) * self.dt
        for i in range(steps):
            t = time[i]
            if before_tick is not None:
                before_tick(i, t)
            q_meas, qd_meas = self.measure()
            q_d, qd_d = command(t)
            mj.mj_step1(m, d)  # positions/velocities stage: qfrc_bias for the current state
            tau = self.kp * (q_d - q_meas) + self.kd * (qd_d - qd_meas) + d.qfrc_bias
            tau = np.clip(tau, -TORQUE_LIMIT, TORQUE_LIMIT)
            d.ctrl[:] = tau
            rec["q"][i], rec["qd"][i] = d.qpos, d.qvel
            rec["q_meas"][i], rec["qd_meas"][i] = q_meas, qd_meas
            rec["q_cmd"][i], rec["qd_cmd"][i], rec["torque"][i] = q_d, qd_d, tau
            mj.mj_step2(m, d)
            rec["qdd"][i] = d.qacc
        if not np.all(np.isfinite(rec["q"])):
            raise FloatingPointError("the simulation diverged (non-finite joint positions)")
        return Rollout(time=time, **rec)


def observation_state(
    command_position: np.ndarray,
    command_velocity: np.ndarray,
    command_acceleration: np.ndarray,
    goal: np.ndarray,
) -> np.ndarray:
    """``observation.state`` [..., 4D]: the command in force (q_d, q̇_d, q̈_d) at the observation, then the goal.

    The policy is conditioned on the setpoint the controller is tracking when the observation is taken, not
    only on the arm: the next chunk has to continue that command, and a policy that sees it can make
    consecutive chunks agree (with the measured arm alone, q̈ is hidden and every chunk starts from a fresh
    guess of it). In the demonstrations the command is the reference, so the map state → chunk is a function
    (the reference is Markov in (q, q̇, q̈, goal)); in closed loop it is the runtime's command, whose
    acceleration is exact for an action function. Measured joint velocities go to ``observation.velocity``.
    """
    return np.concatenate([command_position, command_velocity, command_acceleration, goal], axis=-1)


@dataclass
class Demonstration:
    """One demonstration on the dataset clock (``fps``), ready for a LeRobot v3 writer.

    actions: [T, D] commanded joint positions (rad); states: [T, 4D] :func:`observation_state` (commanded
    position, rad; velocity, rad/s; acceleration, rad/s²; goal, rad);
    velocities: [T, D] measured joint velocities (rad/s, noisy); images: [T, H, W, 3] or None.
    """

    actions: np.ndarray
    states: np.ndarray
    velocities: np.ndarray
    images: np.ndarray | None
    reference: ReferenceMotion


def record_demonstrations(
    arm: Arm, num_episodes: int, duration: float, fps: float, seed: int, image_size: int | None = 64
) -> list[Demonstration]:
    """Track random references with the impedance controller and sample them at ``fps``.

    The controller follows the analytic reference (q_d, q̇_d); the recording holds what a real robot would
    log: the commanded position as the action, the command in force (position, velocity, acceleration) and the
    goal as the state, noisy measured velocities as ``observation.velocity``.
    """
    stride = int(round(1.0 / (fps * arm.dt)))
    if abs(stride * arm.dt * fps - 1.0) > 1e-9:
        raise ValueError(f"`fps`={fps} must divide the controller rate {1 / arm.dt:g} Hz.")
    demos = []
    for e in range(num_episodes):
        rng = np.random.default_rng(seed + e)
        ref = make_reference(rng, duration, arm.dt)
        arm.reset(ref.position[0], seed=seed + 1000 + e)
        steps = len(ref.position) - 1
        frames: list[np.ndarray] = []

        def snap(i: int, t: float, ref: ReferenceMotion = ref, frames: list = frames) -> None:
            if image_size and i % stride == 0:
                frames.append(arm.render(ref.goals[i], image_size))

        roll = arm.run(
            steps, lambda t, ref=ref: (ref.position[ref.index(t)], ref.velocity[ref.index(t)]), snap
        )
        idx = np.arange(0, steps, stride)
        demos.append(
            Demonstration(
                actions=roll.q_cmd[idx].astype(np.float32),
                states=observation_state(
                    ref.position[idx], ref.velocity[idx], ref.acceleration[idx], ref.goals[idx]
                ).astype(np.float32),
                velocities=roll.qd_meas[idx].astype(np.float32),
                images=np.stack(frames) if image_size else None,
                reference=ref,
            )
        )
        logger.info(
            "demonstration %d: %d frames, tracking RMSE %.4f rad",
            e,
            len(idx),
            float(np.sqrt(np.mean((roll.q - ref.position[:-1]) ** 2))),
        )
    return demos
