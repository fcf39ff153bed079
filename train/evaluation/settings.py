"""What a closed-loop evaluation runs and how (:class:`EvalSettings`), its limits, and :class:`EvalError`.

Times are in Meta-World environment steps (80 Hz) unless named otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modeling_niaf.runtime import SWITCH_MODES

from ..data.metaworld import (
    MAX_PATH_LENGTH,
    METAWORLD_FPS,
    MetaWorldScene,
    _import_metaworld,
    camera_crops,
    check_camera_view,
    check_instructions,
    check_state_kind,
)
from .provenance import DEFAULT_EVAL_SEED, MAX_BENCHMARK_SEED

EXECUTIONS = ("function", "zoh", "linear")
"""How a chunk is turned into commands: the continuous function, or its waypoints held / interpolated."""
POLICIES = ("niaf", "expert", "random")
ABLATIONS = ("images", "state", "instruction", "other_instruction")
"""Inputs a NIAF policy can be denied in closed loop (``--ablate``, combinable): ``images`` every frame black;
``state`` the state replaced by its training mean (the checkpoint's statistics); ``instruction`` an empty
instruction; ``other_instruction`` the instruction of another task (the next one in the evaluation's task list,
or a fixed other Meta-World task when only one is evaluated)."""
ACTION_DIM = 4
MAX_EPISODES = 5000
"""Episodes per task an evaluation accepts (100 benchmark seeds of 50 distinct variations each)."""
EPISODE_SECONDS = MAX_PATH_LENGTH / METAWORLD_FPS
"""The longest Meta-World episode (6.25 s): the bound on ``latency_ms`` and ``blend_ms``."""
MAX_IMAGE_SIZE = 1024


class EvalError(ValueError):
    """A bad evaluation argument; the message names it (``niaf-eval`` prints it and exits 2)."""


@dataclass
class EvalSettings:
    """What to evaluate and how. Times in environment steps (80 Hz) unless named otherwise."""

    tasks: list[str]
    episodes: int = 50
    """Episodes per task (1..MAX_EPISODES); episode i runs variation i % 50 of the (i // 50)-th held-out seed."""
    seed: int | None = None
    """First benchmark seed of the held-out variations; None = the first seed >= 1000 not used in training."""
    execution: str = "function"
    execute_hz: float = METAWORLD_FPS
    """Rate at which the controller reads a new command (must divide 80 Hz)."""
    replan_every: int = 8
    """Environment steps between policy calls."""
    latency_ms: float = 0.0
    """Simulated inference delay: a function computed from the observation at t is used from t + latency."""
    switch: str = "offset_decay"
    blend_ms: float = 0.0
    """ActionStream blend window at a switch between functions (0 = switch at once)."""
    max_steps: int = MAX_PATH_LENGTH
    cameras: list[str] = field(default_factory=lambda: ["corner2"])
    image_size: int = 32
    crop: list[float] | None = None
    """Box of each upright camera image the policy sees (top, left, height, width fractions; 4 values for every
    camera or 4 per camera); None: all of it."""
    state: str = "full"
    """``observation.state`` kind: ``full`` (39-d) or ``agent_pos`` (4-d); a checkpoint's training record says which."""
    camera_view: str = "niaf"
    """How the cameras are placed and rendered (``niaf`` or ``lerobot``: LeRobot's Meta-World view); a checkpoint's
    training record says which."""
    instructions: str = "niaf"
    """The sentence each task's observation carries (``niaf`` or ``lerobot``: LeRobot's task strings,
    :data:`~niaf_train.data.metaworld.INSTRUCTION_SETS`); a checkpoint's training record says which."""
    ablate: list[str] = field(default_factory=list)
    """Inputs withheld from the policy (:data:`ABLATIONS`)."""
    video: bool = True
    """Record the first episode of each task as an MP4."""

    def check(self) -> None:
        """Every setting's type and range, and the task and camera names, before anything runs.

        Raises:
            EvalError: naming the argument (as ``niaf-eval`` spells it) and what was expected.
        """
        if not isinstance(self.tasks, (list, tuple)) or not self.tasks \
                or not all(isinstance(t, str) for t in self.tasks):
            raise EvalError(f"--tasks: give at least one Meta-World task name, got {self.tasks!r}")
        repeated = sorted({t for t in self.tasks if list(self.tasks).count(t) > 1})
        if repeated:
            raise EvalError(f"--tasks: {repeated} given more than once (each task is evaluated once)")
        _int_in("--episodes", self.episodes, 1, MAX_EPISODES)
        if self.seed is not None:
            _int_in("--seed", self.seed, 0, MAX_BENCHMARK_SEED)
        _int_in("--replan-every", self.replan_every, 1, MAX_PATH_LENGTH)
        _int_in("--max-steps", self.max_steps, 1, MAX_PATH_LENGTH)
        _int_in("--image-size", self.image_size, 1, MAX_IMAGE_SIZE)
        for name, value in (("--execute-hz", self.execute_hz), ("--latency-ms", self.latency_ms),
                            ("--blend-ms", self.blend_ms)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise EvalError(f"{name} must be a number, got {value!r}")
        for name, value in (("--latency-ms", self.latency_ms), ("--blend-ms", self.blend_ms)):
            if not (math.isfinite(value) and 0 <= value <= 1000 * EPISODE_SECONDS):
                raise EvalError(f"{name} must be in [0, {1000 * EPISODE_SECONDS:g}] ms (one {MAX_PATH_LENGTH}-step "
                                f"episode), got {value}")
        if not isinstance(self.cameras, (list, tuple)) or not all(isinstance(c, str) and c for c in self.cameras):
            raise EvalError(f"--cameras must be Meta-World camera names, got {self.cameras!r}")
        if not isinstance(self.video, bool):
            raise EvalError(f"video must be True or False, got {self.video!r}")
        metaworld, _mujoco, policy_map = _import_metaworld()
        unknown = [t for t in self.tasks if t not in metaworld.MT1.ENV_NAMES or t not in policy_map]
        if unknown:
            raise EvalError(f"--tasks: unknown Meta-World MT1 task(s) {unknown}; choose from "
                            f"{sorted(metaworld.MT1.ENV_NAMES)}")
        try:
            check_state_kind(self.state)
            camera_crops(self.crop, self.cameras)
            check_camera_view(self.camera_view, self.cameras, self.crop, self.image_size)
        except (TypeError, ValueError) as err:
            raise EvalError(f"the observation settings (the training record's state, crop and camera view, with "
                            f"--cameras and --image-size): {err}") from None
        try:
            check_instructions(self.instructions, self.tasks)
        except (TypeError, ValueError) as err:
            raise EvalError(f"the instructions (the training record's, with --tasks): {err}") from None
        if not isinstance(self.ablate, (list, tuple)) or [a for a in self.ablate if a not in ABLATIONS]:
            raise EvalError(f"--ablate must be among {ABLATIONS}, got {self.ablate!r}")
        if "instruction" in self.ablate and "other_instruction" in self.ablate:
            raise EvalError("--ablate: choose one of instruction and other_instruction")
        if self.execution not in EXECUTIONS:
            raise EvalError(f"--execution must be one of {EXECUTIONS}, got {self.execution!r}")
        period = METAWORLD_FPS / self.execute_hz if self.execute_hz > 0 else math.inf
        if not (math.isfinite(period) and abs(period - round(period)) < 1e-9 and round(period) >= 1):
            raise EvalError(f"--execute-hz must divide Meta-World's {METAWORLD_FPS:g} Hz (80, 40, 20, 16, 10, ...), "
                            f"got {self.execute_hz}")
        if self.switch not in SWITCH_MODES:
            raise EvalError(f"--switch must be one of {SWITCH_MODES}, got {self.switch!r}")

    def check_cameras(self) -> None:
        """Build the first task's scene once (no episode) so that a bad camera is refused before any work."""
        try:
            MetaWorldScene(self.tasks[0], DEFAULT_EVAL_SEED, self.cameras, self.image_size, self.state, self.crop,
                           self.camera_view, self.instructions).close()
        except ValueError as err:
            raise EvalError(f"--cameras: {err}") from None

    @property
    def query_period(self) -> int:
        """Environment steps between two reads of the command."""
        return int(round(METAWORLD_FPS / self.execute_hz))

    @property
    def latency_steps(self) -> int:
        return int(math.ceil(self.latency_ms * 1e-3 * METAWORLD_FPS - 1e-9))


def _int_in(name: str, value: Any, low: int, high: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not low <= value <= high:
        raise EvalError(f"{name} must be an integer in [{low}, {high}], got {value!r}")


__all__ = [
    "ABLATIONS",
    "ACTION_DIM",
    "EPISODE_SECONDS",
    "EXECUTIONS",
    "EvalError",
    "EvalSettings",
    "MAX_EPISODES",
    "MAX_IMAGE_SIZE",
    "POLICIES",
]
