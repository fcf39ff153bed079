"""Closed-loop policies: a NIAF checkpoint (:class:`NiafPolicy`), uniform random waypoints
(:class:`RandomPolicy`) and Meta-World's scripted expert (:class:`ExpertPolicy`).

Every policy has LeRobot's stepping interface, the one the LeRobot plugin's ``NiafPolicy``
(``integrations/lerobot``) has too: :meth:`reset` at the start of an episode, then :meth:`select_action` once per
environment step, returning that step's command. The chunk policies (:class:`ChunkPolicy`: NIAF and random) also
keep :meth:`plan` (observations → one action function each); their :meth:`select_action` runs those functions
through the streaming runtime exactly as the closed-loop runner does (every ``replan_every`` steps a new function,
in force ``latency_ms`` later; a command read every ``80 / execute_hz`` steps and held in between).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from modeling_niaf.runtime import ActionStream

from ..baselines.functions import WaypointFunction
from ..data.metaworld import METAWORLD_FPS
from .adapters import ObservationAblation, OneSampleFunction
from .settings import ACTION_DIM, EvalSettings

ENVIRONMENT_STATE = "observation.environment_state"
"""Observation key of the simulator's own state (LeRobot's name for privileged state): Meta-World's observation
vector [39], float64, which the scripted expert reads."""


class ChunkPolicy(ABC):
    """A policy that plans action functions (:meth:`plan`) and executes them one environment step at a time.

    :meth:`reset` takes the evaluation's settings (rates, latency, blend, switch; default: those of the last
    reset, or :class:`EvalSettings`' defaults); after it, :attr:`observation_due` says whether the next
    :meth:`select_action` plans on its observation (only then does it need the images), and
    :attr:`queried`, :attr:`current_fn` and :attr:`switch_jumps` report what the last step did.
    """

    _settings: EvalSettings | None = None

    @abstractmethod
    def plan(self, observations: Sequence[dict[str, Any]]) -> list[Any]:
        """One action function per observation (time 0 = the observation, seconds; positions [.., ACTION_DIM])."""

    def reset(self, settings: EvalSettings | None = None, scene: Any = None) -> None:
        """Start an episode: an empty :class:`~modeling_niaf.runtime.ActionStream` at the origin, no plan in
        flight. ``scene`` is not needed (the expert's argument)."""
        if settings is not None:
            self._settings = settings
        elif self._settings is None:
            self._settings = EvalSettings(tasks=[])
        s = self._settings
        self._stream = ActionStream(np.zeros(ACTION_DIM), 0.0, blend_duration=s.blend_ms * 1e-3,
                                    max_latency=max(1.0, 2 * s.latency_ms * 1e-3), switch=s.switch)
        self._step = 0
        self._pending: list[tuple[int, float, Any]] = []
        self._held = np.zeros(ACTION_DIM)
        self.current_fn: tuple[Any, float] | None = None
        """(function, its observation time in s) the stream last accepted."""
        self.switch_jumps: list[float] = []
        """|new plan's dx, dy, dz − the command being executed| at every switch after the first plan."""
        self.queried = False
        """Whether the last :meth:`select_action` read a new command from the stream."""

    @property
    def observation_due(self) -> bool:
        """Whether the next :meth:`select_action` plans on its observation (every ``replan_every`` steps)."""
        return self._step % self._settings.replan_every == 0

    def select_action(self, observation: dict[str, Any] | None) -> np.ndarray:
        """The command of the next environment step (80 Hz), float64 [ACTION_DIM] in [-1, 1].

        Args:
            observation: the policy's view of this step (``MetaWorldScene.observe``); may be None at a step
                where :attr:`observation_due` is False.
        """
        if not hasattr(self, "_stream"):
            raise RuntimeError(f"{type(self).__name__}.select_action: call reset() at the start of the episode")
        s, step = self._settings, self._step
        t = step * (1.0 / METAWORLD_FPS)
        if step % s.replan_every == 0:
            if observation is None:
                raise ValueError(f"{type(self).__name__}.select_action: step {step} plans a new action function; "
                                 "it needs the observation (observation_due is True)")
            self._pending.append((step + s.latency_steps, t, self.plan([observation])[0]))
        ready = [p for p in self._pending if p[0] <= step]
        self._pending = [p for p in self._pending if p[0] > step]
        for _, t_obs, fn in ready:
            had_plan = self._stream.num_accepted > 0
            if self._stream.submit(fn, observation_time=t_obs, now=t):
                self.current_fn = (fn, t_obs)
                if had_plan:  # how far the new plan's command is from the one being executed
                    after = fn(times=np.array([t - t_obs]), derivatives=3).position[0]
                    self.switch_jumps.append(float(np.linalg.norm((after - self._held)[:3])))
        self.queried = step % s.query_period == 0
        if self.queried:
            self._held = np.clip(self._stream.command(t).position, -1.0, 1.0)
        self._step += 1
        return self._held.copy()


class NiafPolicy(ChunkPolicy):
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
        import torch  # heavy: torch

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
                return [OneSampleFunction(fast, i) for i in range(len(observations))]
            waypoints = fn(derivatives=0).position.double().cpu().numpy()  # [B, K, D] at the training points
        return [WaypointFunction(w, self.dt, self.execution) for w in waypoints]


class RandomPolicy(ChunkPolicy):
    """Uniform random waypoints in [-1, 1] (the action box), executed like a policy's chunk."""

    def __init__(self, chunk_size: int, control_hz: float, execution: str, seed: int) -> None:
        self.k, self.dt = chunk_size, 1.0 / control_hz
        self.mode = "zoh" if execution == "function" else execution
        self.rng = np.random.default_rng(seed)

    def plan(self, observations: Sequence[dict[str, Any]]) -> list[Any]:
        return [WaypointFunction(self.rng.uniform(-1, 1, (self.k, ACTION_DIM)), self.dt, self.mode)
                for _ in observations]


class ExpertPolicy:
    """Meta-World's scripted expert, applied at every environment step (no chunking): the upper bound.

    It reads the simulator's observation vector (``observation[ENVIRONMENT_STATE]``), never the images.
    """

    observation_due = False
    """The expert needs no rendered observation."""
    queried = False
    current_fn = None

    def reset(self, settings: EvalSettings | None = None, scene: Any = None) -> None:
        """Start an episode with a fresh scripted expert of ``scene``'s task (required)."""
        if scene is None:
            raise ValueError("ExpertPolicy.reset: the scripted expert comes from the episode's scene; pass scene=")
        self._expert = scene.expert()
        self.switch_jumps: list[float] = []

    def select_action(self, observation: dict[str, Any]) -> np.ndarray:
        """The expert's action for ``observation[ENVIRONMENT_STATE]``, float64 [ACTION_DIM] clipped to [-1, 1]."""
        if not hasattr(self, "_expert"):
            raise RuntimeError("ExpertPolicy.select_action: call reset(scene=...) at the start of the episode")
        return np.clip(np.asarray(self._expert.get_action(observation[ENVIRONMENT_STATE]), dtype=np.float64),
                       -1.0, 1.0)


__all__ = ["ENVIRONMENT_STATE", "ChunkPolicy", "ExpertPolicy", "NiafPolicy", "RandomPolicy"]
