"""Run a policy in closed loop on Meta-World v3 tasks and measure task success.

One episode (:func:`run_episode`):

1. ``MetaWorldScene.reset(variation)``; the observation is built by ``MetaWorldScene.observe``, the same code
   that records the demonstrations (camera, resolution, rotation, state vector, instruction).
2. Every ``replan_every`` environment steps the policy is run on the current observation. Its action function
   (time 0 = the observation) reaches the streaming runtime (:class:`modeling_niaf.runtime.ActionStream`)
   ``latency_ms`` later in simulated time; until then the previous function goes on commanding.
3. The controller queries the stream at the environment's own step times: every ``80 / execute_hz``-th step
   it reads ``command(t)``, and holds that value in between. ``execute_hz = 80`` gives every native
   Meta-World step a new value of the function; at the training rate (80 / stride) the function is read only
   at the points it was trained on.
4. The episode ends at the first step with ``info["success"]`` or after ``max_steps``.

Executions (``execution``): ``function`` queries the policy's continuous action function; ``zoh`` and
``linear`` turn the same chunk into its K waypoints (the function at the training points) and hold or
linearly interpolate them (:class:`WaypointFunction`), the way a waypoint policy is executed.

Policies: ``niaf`` (a checkpoint loaded with ``AutoModel`` / ``AutoProcessor`` and ``trust_remote_code=True``,
exactly as a downstream user loads it), ``expert`` (Meta-World's scripted policy, applied at every step: the
upper bound) and ``random`` (uniform random waypoints in [-1, 1], executed like a chunk).

Held-out variations: the demonstrations of a task are variations of ``MT1(task, seed=s)`` for the benchmark
seeds ``s`` recorded in the dataset's ``info.json`` (and copied into the checkpoint as ``training_data.json``;
the model card's configuration names them too). The evaluation checks every record against the others
(:mod:`.provenance`), draws its variations from benchmark seeds none of them used, and refuses a seed that was
used in training. Episode i runs variation ``i % 50`` of the ``i // 50``-th held-out seed, so no variation is
run twice.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modeling_niaf import ActionTrajectory
from modeling_niaf.runtime import SWITCH_MODES, ActionStream

from ..baselines.functions import WaypointFunction
from ..data.metaworld import (
    MAX_PATH_LENGTH,
    METAWORLD_FPS,
    STATE_KINDS,
    TASK_INSTRUCTIONS,
    VARIATIONS_PER_BENCHMARK,
    MetaWorldScene,
    camera_crops,
    check_state_kind,
    instruction_for,
)
from .provenance import (
    DEFAULT_EVAL_SEED,
    MAX_BENCHMARK_SEED,
    TRAINING_RECORD,
    ProvenanceError,
    held_out_seeds,
    merged_record,
    record_seeds,
    seeds_needed,
    training_records,
)

logger = logging.getLogger(__name__)

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
        from ..data.metaworld import _import_metaworld

        metaworld, _mujoco, policy_map = _import_metaworld()
        unknown = [t for t in self.tasks if t not in metaworld.MT1.ENV_NAMES or t not in policy_map]
        if unknown:
            raise EvalError(f"--tasks: unknown Meta-World MT1 task(s) {unknown}; choose from "
                            f"{sorted(metaworld.MT1.ENV_NAMES)}")
        try:
            check_state_kind(self.state)
            camera_crops(self.crop, self.cameras)
        except ValueError as err:
            raise EvalError(f"the observation settings (the training record's state and crop): {err}") from None
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
            MetaWorldScene(self.tasks[0], DEFAULT_EVAL_SEED, self.cameras, self.image_size, self.state, self.crop).close()
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


@dataclass
class EpisodeResult:
    """One episode: ``steps`` is the step of the first success (1-based) or the number of steps run."""

    task: str
    variation: int
    success: bool
    steps: int
    mean_squared_jerk: float
    sparc: float
    switch_action_jump: float | None = None
    """Mean |new plan's dx, dy, dz − the command being executed| at the switches (no blending)."""
    actions: np.ndarray | None = field(default=None, repr=False)
    benchmark_seed: int | None = None
    """The MT1 benchmark seed ``variation`` belongs to."""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("actions")
        return out


# ------------------------------------------------------------------------------------------------------------
# Action functions the stream can run
# ------------------------------------------------------------------------------------------------------------
class _OneSample:
    """Sample ``index`` of a batched numpy action function, as a single-chunk function for the stream."""

    def __init__(self, fn: Any, index: int) -> None:
        self.fn, self.index = fn, index
        self.chunk_duration = float(fn.chunk_duration)

    def __call__(self, *, times: Any = None, derivatives: int = 3, **_: Any) -> ActionTrajectory:
        t = np.asarray(times, dtype=np.float64).reshape(-1)
        rows = np.stack([self.fn.at(float(x), 3, self.index) for x in t], axis=1)  # [4, N, D]
        return ActionTrajectory(tau=2.0 * t / self.chunk_duration - 1.0, time=t, position=rows[0], velocity=rows[1],
                                acceleration=rows[2], jerk=rows[3])


# ------------------------------------------------------------------------------------------------------------
# Policies
# ------------------------------------------------------------------------------------------------------------
class NiafPolicy:
    """A NIAF checkpoint as a closed-loop policy: observation → action function (or its waypoints)."""

    def __init__(self, model: Any, processor: Any, cameras: Sequence[str], execution: str,
                 ablation: ObservationAblation | None = None) -> None:
        self.model, self.processor = model, processor
        self.cameras = [f"observation.images.{c}" for c in cameras]
        self.execution = execution
        self.use_state = bool(model.config.use_state)
        self.dt = 1.0 / float(model.config.control_hz)
        self.ablation = ablation

    def plan(self, observations: Sequence[dict[str, Any]]) -> list[Any]:
        import torch

        if self.ablation is not None:
            observations = [self.ablation(obs) for obs in observations]
        kwargs: dict[str, Any] = {
            "images": [[obs[c] for c in self.cameras] for obs in observations],
            "text": [obs["task"] for obs in observations],
        }
        if self.use_state:
            kwargs["state"] = torch.as_tensor(np.stack([obs["observation.state"] for obs in observations]))
        with torch.inference_mode():
            batch = self.processor(**kwargs)
            fn = self.model.predict_action_function(**batch)
            if self.execution == "function":
                fast = fn.to_numpy()
                return [_OneSample(fast, i) for i in range(len(observations))]
            waypoints = fn(derivatives=0).position.double().cpu().numpy()  # [B, K, D] at the training points
        return [WaypointFunction(w, self.dt, self.execution) for w in waypoints]


class ObservationAblation:
    """Withholds inputs from a policy's observation (:data:`ABLATIONS`); the simulator is untouched.

    Args:
        ablate: the inputs to withhold.
        state_mean: what ``state`` ablation puts in place of the state (the training mean).
        tasks: the evaluation's tasks, for ``other_instruction``.
    """

    def __init__(self, ablate: Sequence[str], state_mean: np.ndarray | None = None,
                 tasks: Sequence[str] = ()) -> None:
        self.ablate = tuple(ablate)
        if "state" in self.ablate and state_mean is None:
            raise EvalError("--ablate state: the checkpoint has no state statistics to take the mean from")
        self.state_mean = None if state_mean is None else np.asarray(state_mean, dtype=np.float32)
        names = list(tasks)
        spare = [t for t in TASK_INSTRUCTIONS if t not in names]
        # each task's instruction is replaced by the next task's (cyclically); a lone task by an unrelated one
        order = names[1:] + names[:1] if len(names) > 1 else spare[:len(names)]
        self.other = {instruction_for(a): instruction_for(b) for a, b in zip(names, order, strict=True)}

    def __call__(self, obs: dict[str, Any]) -> dict[str, Any]:
        out = dict(obs)
        if "images" in self.ablate:
            for key in obs:
                if key.startswith("observation.images."):
                    out[key] = np.zeros_like(obs[key])
        if "state" in self.ablate:
            out["observation.state"] = self.state_mean.copy()
        if "instruction" in self.ablate:
            out["task"] = ""
        if "other_instruction" in self.ablate:
            out["task"] = self.other.get(obs["task"], obs["task"])
        return out


class RandomPolicy:
    """Uniform random waypoints in [-1, 1] (the action box), executed like a policy's chunk."""

    def __init__(self, chunk_size: int, control_hz: float, execution: str, seed: int) -> None:
        self.k, self.dt = chunk_size, 1.0 / control_hz
        self.mode = "zoh" if execution == "function" else execution
        self.rng = np.random.default_rng(seed)

    def plan(self, observations: Sequence[dict[str, Any]]) -> list[Any]:
        return [WaypointFunction(self.rng.uniform(-1, 1, (self.k, ACTION_DIM)), self.dt, self.mode)
                for _ in observations]


class ExpertPolicy:
    """Meta-World's scripted expert, applied at every environment step (no chunking): the upper bound."""


# ------------------------------------------------------------------------------------------------------------
# Checkpoint loading and the training record
# ------------------------------------------------------------------------------------------------------------
def training_record(checkpoint: str | os.PathLike[str] | None = None,
                    train_data: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """Where the training demonstrations came from, or None when nothing records it.

    Every record is read and checked (:mod:`.provenance`): the checkpoint's ``training_data.json`` and model
    card (a local folder, or a Hub repository through the local cache) and, with ``train_data``, that
    dataset's ``meta/info.json``. They must agree; the result is the most detailed one with the union of their
    benchmark seeds.

    Raises:
        EvalError: a malformed record, or two that disagree (one line naming the files).
    """
    try:
        return merged_record(training_records(checkpoint, train_data))
    except ProvenanceError as err:
        raise EvalError(str(err)) from None


def training_seeds(record: dict[str, Any] | None) -> list[int]:
    """The benchmark seeds a (checked) training record says its demonstrations came from."""
    return record_seeds(record)


def resolve_seed(requested: int | None, record: dict[str, Any] | None) -> int:
    """The first benchmark seed of the held-out variations (see :func:`resolve_seeds`)."""
    return resolve_seeds(requested, record, 1)[0]


def resolve_seeds(requested: int | None, record: dict[str, Any] | None, episodes: int) -> list[int]:
    """The benchmark seeds ``episodes`` held-out episodes per task draw from: ``requested`` (error if training
    used it) or the first seed >= :data:`DEFAULT_EVAL_SEED` not used in training, then the next unused seeds,
    one per 50 episodes."""
    try:
        return held_out_seeds(requested, record, seeds_needed(episodes))
    except ProvenanceError as err:
        raise EvalError(str(err)) from None


def load_policy(checkpoint: str | os.PathLike[str], settings: EvalSettings) -> NiafPolicy:
    """Load a checkpoint through ``AutoModel`` / ``AutoProcessor`` (``trust_remote_code=True``; a comparison-head
    checkpoint, with ``action_head`` in its config.json, through ``niaf_train.baselines``) and check that its
    action/state/camera layout fits Meta-World."""
    from transformers import AutoModel, AutoProcessor

    from ..baselines import checkpoint_action_head, load_model, load_processor

    try:
        if checkpoint_action_head(checkpoint) != "niaf":  # a comparison head (niaf_train.baselines): no remote code
            model, processor = load_model(checkpoint).eval(), load_processor(checkpoint)
        else:
            model = AutoModel.from_pretrained(str(checkpoint), trust_remote_code=True).eval()
            processor = AutoProcessor.from_pretrained(str(checkpoint), trust_remote_code=True)
    except (OSError, ValueError) as err:
        raise EvalError(f"--checkpoint {checkpoint}: cannot load a NIAF model and processor ({err})") from err
    cfg = model.config
    if getattr(cfg, "model_type", None) != "niaf":
        raise EvalError(f"--checkpoint {checkpoint}: a {getattr(cfg, 'model_type', '?')} model, not a NIAF policy")
    if cfg.action_dim != ACTION_DIM:
        raise EvalError(f"--checkpoint {checkpoint}: action_dim {cfg.action_dim}, Meta-World needs {ACTION_DIM} "
                        "(dx, dy, dz, gripper)")
    state_dim = len(STATE_KINDS[settings.state])
    if cfg.use_state and cfg.state_dim != state_dim:
        raise EvalError(f"--checkpoint {checkpoint}: state_dim {cfg.state_dim}, Meta-World's {settings.state!r} state "
                        f"has {state_dim} (a checkpoint trained on other data?)")
    if cfg.num_cameras != len(settings.cameras):
        raise EvalError(f"--checkpoint {checkpoint}: the model reads {cfg.num_cameras} camera(s), --cameras "
                        f"gives {settings.cameras}")
    if cfg.relative_action_state_indices is not None:
        raise EvalError(f"--checkpoint {checkpoint}: relative actions are not meaningful for Meta-World's "
                        "displacement actions")
    return NiafPolicy(model, processor, settings.cameras, settings.execution, observation_ablation(cfg, settings))


def observation_ablation(config: Any, settings: EvalSettings) -> ObservationAblation | None:
    """The :class:`ObservationAblation` of ``settings.ablate`` for a model with ``config`` (None: ablate nothing).
    The state is replaced by the mean of the checkpoint's own state statistics."""
    if not settings.ablate:
        return None
    if "state" in settings.ablate and not config.use_state:
        raise EvalError("--ablate state: the checkpoint reads no state")
    mean = ((config.normalization_stats or {}).get("state") or {}).get("mean") if config.use_state else None
    return ObservationAblation(settings.ablate, None if mean is None else np.asarray(mean), settings.tasks)


# ------------------------------------------------------------------------------------------------------------
# Episodes
# ------------------------------------------------------------------------------------------------------------
def first_observation(task: str, seed: int, variation: int, cameras: Sequence[str], image_size: int,
                      state: str = "full", crop: Sequence[float] | None = None) -> dict[str, Any]:
    """The observation an evaluation episode starts from (what the policy sees at step 0)."""
    with MetaWorldScene(task, seed, cameras, image_size, state, crop) as scene:
        return scene.observe(scene.reset(variation))


def _executed_metrics(actions: np.ndarray) -> tuple[float, float]:
    """Mean squared jerk ((units/s³)², of the dx, dy, dz commands as a function of time) and SPARC of their
    magnitude, over one episode's executed actions at 80 Hz."""
    from .trajectory_metrics import jerk_from_positions, spectral_arc_length

    dt = 1.0 / METAWORLD_FPS
    xyz = actions[:, :3]
    msj = float(np.mean(jerk_from_positions(xyz[None], dt) ** 2)) if len(xyz) >= 5 else float("nan")
    sparc = spectral_arc_length(np.linalg.norm(xyz, axis=1), dt) if len(xyz) >= 2 else float("nan")
    return msj, sparc


def run_episode(scene: MetaWorldScene, variation: int, policy: Any, settings: EvalSettings,
                frame_hook: Callable[[dict[str, Any] | None, Any], None] | None = None,
                query_log: list[tuple[float, Any]] | None = None) -> EpisodeResult:
    """One closed-loop episode (see the module docstring). ``frame_hook(observation_or_None, scene)`` is called
    before every step (for videos); ``query_log`` receives ``(t, function in force)`` at every command read."""
    obs = scene.reset(variation)
    dt = 1.0 / METAWORLD_FPS
    executed: list[np.ndarray] = []
    success, steps = False, settings.max_steps
    expert = scene.expert() if isinstance(policy, ExpertPolicy) else None
    stream = ActionStream(np.zeros(ACTION_DIM), 0.0, blend_duration=settings.blend_ms * 1e-3,
                          max_latency=max(1.0, 2 * settings.latency_ms * 1e-3), switch=settings.switch)
    pending: list[tuple[int, float, Any]] = []
    current_fn: Any = None
    held = np.zeros(ACTION_DIM)
    switch_jumps: list[float] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Meta-World's experts warn on every call
        for step in range(settings.max_steps):
            t = step * dt
            seen = None
            if expert is not None:
                held = np.clip(np.asarray(expert.get_action(obs), dtype=np.float64), -1.0, 1.0)
            else:
                if step % settings.replan_every == 0:
                    seen = scene.observe(obs)
                    pending.append((step + settings.latency_steps, t, policy.plan([seen])[0]))
                ready = [p for p in pending if p[0] <= step]
                pending = [p for p in pending if p[0] > step]
                for _, t_obs, fn in ready:
                    had_plan = stream.num_accepted > 0
                    if stream.submit(fn, observation_time=t_obs, now=t):
                        current_fn = (fn, t_obs)
                        if had_plan:  # how far the new plan's command is from the one being executed
                            after = fn(times=np.array([t - t_obs]), derivatives=3).position[0]
                            switch_jumps.append(float(np.linalg.norm((after - held)[:3])))
                if step % settings.query_period == 0:
                    held = np.clip(stream.command(t).position, -1.0, 1.0)
                    if query_log is not None:
                        query_log.append((t, current_fn))
            if frame_hook is not None:
                frame_hook(seen, scene)
            executed.append(held.copy())
            obs, success, truncated = scene.step(held)
            if success:
                steps = step + 1
                break
            if truncated:
                steps = step + 1
                break
    actions = np.asarray(executed)
    msj, sparc = _executed_metrics(actions)
    return EpisodeResult(scene.task, variation, bool(success), int(steps), msj, sparc,
                         float(np.mean(switch_jumps)) if switch_jumps else None, actions)


def evaluate(policy: Any, settings: EvalSettings, seed: int | Sequence[int], *, progress: bool = True,
             video_dir: Path | None = None) -> dict[str, list[EpisodeResult]]:
    """Run ``settings.episodes`` held-out episodes per task: episode i runs variation ``i % 50`` of
    ``MT1(task, seeds[i // 50])``, so no variation runs twice.

    Args:
        seed: the held-out benchmark seeds (:func:`resolve_seeds`), at least one per 50 episodes; a single int
            ``s`` stands for ``s, s + 1, ...``.
    """
    from tqdm.auto import tqdm

    from .report import VideoWriter

    settings.check()
    need = seeds_needed(settings.episodes)
    seeds = list(range(int(seed), int(seed) + need)) if isinstance(seed, (int, np.integer)) else [int(s) for s in seed]
    if len(seeds) < need or len(set(seeds)) != len(seeds):
        raise EvalError(f"evaluate: {settings.episodes} episodes per task need {need} distinct benchmark seeds, "
                        f"got {seeds}")
    results: dict[str, list[EpisodeResult]] = {}
    bar = tqdm(total=len(settings.tasks) * settings.episodes, desc="closed-loop episodes", unit="ep",
               disable=not progress)
    for task in settings.tasks:
        scene: MetaWorldScene | None = None
        try:
            results[task] = []
            for i in range(settings.episodes):
                bench_seed = seeds[i // VARIATIONS_PER_BENCHMARK]
                if scene is None or scene.benchmark_seed != bench_seed:
                    if scene is not None:
                        scene.close()
                    scene = MetaWorldScene(task, bench_seed, settings.cameras, settings.image_size, settings.state,
                                           settings.crop)
                writer = None
                if settings.video and video_dir is not None and i == 0:
                    writer = VideoWriter(video_dir / f"{task}.mp4", scene, settings.cameras[0] if settings.cameras else None)
                try:
                    res = run_episode(scene, i % VARIATIONS_PER_BENCHMARK, policy, settings,
                                      frame_hook=writer.add if writer else None)
                finally:
                    if writer is not None:
                        writer.close()
                res.benchmark_seed = bench_seed
                results[task].append(res)
                bar.update(1)
                bar.set_postfix_str(f"{task} {sum(r.success for r in results[task])}/{len(results[task])}")
        finally:
            if scene is not None:
                scene.close()
    bar.close()
    return results


__all__ = [
    "ABLATIONS",
    "DEFAULT_EVAL_SEED",
    "EXECUTIONS",
    "EpisodeResult",
    "EvalError",
    "EvalSettings",
    "ExpertPolicy",
    "NiafPolicy",
    "ObservationAblation",
    "POLICIES",
    "RandomPolicy",
    "MAX_EPISODES",
    "TRAINING_RECORD",
    "WaypointFunction",
    "evaluate",
    "first_observation",
    "load_policy",
    "observation_ablation",
    "resolve_seed",
    "resolve_seeds",
    "run_episode",
    "training_record",
]
