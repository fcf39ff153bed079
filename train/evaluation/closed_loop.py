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

The parts live by job: :mod:`.settings` (what to run, :class:`EvalError`), :mod:`.adapters` (input ablations,
one sample of a batched function), :mod:`.policies`, :mod:`.checkpoint` (loading, the training record and the
held-out seeds); this module runs the episodes and re-exports the rest, so ``from .closed_loop import X`` keeps
working. The runner steps every policy through LeRobot's interface, ``reset()`` at the start of an episode and
``select_action(observation)`` once per environment step; steps 2 and 3 above happen inside a chunk policy's
``select_action`` (:class:`.policies.ChunkPolicy`).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..baselines.functions import WaypointFunction
from ..data.metaworld import METAWORLD_FPS, VARIATIONS_PER_BENCHMARK, MetaWorldScene
from .adapters import ObservationAblation, OneSampleFunction
from .checkpoint import (
    load_policy,
    observation_ablation,
    resolve_seed,
    resolve_seeds,
    training_record,
    training_seeds,
)
from .policies import ENVIRONMENT_STATE, ChunkPolicy, ExpertPolicy, NiafPolicy, RandomPolicy
from .provenance import DEFAULT_EVAL_SEED, TRAINING_RECORD, seeds_needed
from .report import VideoWriter
from .settings import (
    ABLATIONS,
    ACTION_DIM,
    EPISODE_SECONDS,
    EXECUTIONS,
    MAX_EPISODES,
    MAX_IMAGE_SIZE,
    POLICIES,
    EvalError,
    EvalSettings,
)

logger = logging.getLogger(__name__)


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


def first_observation(task: str, seed: int, variation: int, cameras: Sequence[str], image_size: int,
                      state: str = "full", crop: Sequence[float] | None = None,
                      camera_view: str = "niaf", instructions: str = "niaf") -> dict[str, Any]:
    """The observation an evaluation episode starts from (what the policy sees at step 0)."""
    with MetaWorldScene(task, seed, cameras, image_size, state, crop, camera_view, instructions) as scene:
        return scene.observe(scene.reset(variation))


def _executed_metrics(actions: np.ndarray) -> tuple[float, float]:
    """Mean squared jerk ((units/s³)², of the dx, dy, dz commands as a function of time) and SPARC of their
    magnitude, over one episode's executed actions at 80 Hz."""
    # lazy: trajectory_metrics imports datasets and evaluate
    from .trajectory_metrics import jerk_from_positions, spectral_arc_length

    dt = 1.0 / METAWORLD_FPS
    xyz = actions[:, :3]
    msj = float(np.mean(jerk_from_positions(xyz[None], dt) ** 2)) if len(xyz) >= 5 else float("nan")
    sparc = spectral_arc_length(np.linalg.norm(xyz, axis=1), dt) if len(xyz) >= 2 else float("nan")
    return msj, sparc


def run_episode(scene: MetaWorldScene, variation: int, policy: ChunkPolicy | ExpertPolicy, settings: EvalSettings,
                frame_hook: Callable[[dict[str, Any] | None, Any], None] | None = None,
                query_log: list[tuple[float, Any]] | None = None) -> EpisodeResult:
    """One closed-loop episode (see the module docstring) through the policy's LeRobot-shaped interface:
    ``policy.reset(settings, scene)``, then one ``policy.select_action(observation)`` per environment step. The
    observation holds Meta-World's vector under :data:`ENVIRONMENT_STATE` and, at the steps the policy plans
    (``policy.observation_due``), the rendered view (``scene.observe``). ``frame_hook(view_or_None, scene)`` is
    called before every step (for videos); ``query_log`` receives ``(t, function in force)`` at every command
    read."""
    obs = scene.reset(variation)
    dt = 1.0 / METAWORLD_FPS
    executed: list[np.ndarray] = []
    success, steps = False, settings.max_steps
    policy.reset(settings, scene)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Meta-World's experts warn on every call
        for step in range(settings.max_steps):
            seen = scene.observe(obs) if policy.observation_due else None
            held = policy.select_action({**(seen or {}), ENVIRONMENT_STATE: obs})
            if query_log is not None and policy.queried:
                query_log.append((step * dt, policy.current_fn))
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
    switch_jumps = policy.switch_jumps
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
    from tqdm.auto import tqdm  # lazy: tqdm.auto probes for notebook support

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
                                           settings.crop, settings.camera_view, settings.instructions)
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
    "ACTION_DIM",
    "ChunkPolicy",
    "DEFAULT_EVAL_SEED",
    "ENVIRONMENT_STATE",
    "EPISODE_SECONDS",
    "EXECUTIONS",
    "EpisodeResult",
    "EvalError",
    "EvalSettings",
    "ExpertPolicy",
    "NiafPolicy",
    "ObservationAblation",
    "OneSampleFunction",
    "POLICIES",
    "RandomPolicy",
    "MAX_EPISODES",
    "MAX_IMAGE_SIZE",
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
    "training_seeds",
]
