"""Closed-loop policies: a NIAF checkpoint (:class:`NiafPolicy`), uniform random waypoints
(:class:`RandomPolicy`) and Meta-World's scripted expert (:class:`ExpertPolicy`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..baselines.functions import WaypointFunction
from .adapters import ObservationAblation, OneSampleFunction
from .settings import ACTION_DIM


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
                return [OneSampleFunction(fast, i) for i in range(len(observations))]
            waypoints = fn(derivatives=0).position.double().cpu().numpy()  # [B, K, D] at the training points
        return [WaypointFunction(w, self.dt, self.execution) for w in waypoints]


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


__all__ = ["ExpertPolicy", "NiafPolicy", "RandomPolicy"]
