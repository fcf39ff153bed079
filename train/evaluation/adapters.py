"""Adapters between the simulator, a policy and the streaming runtime: what the policy is shown
(:class:`ObservationAblation`) and what the runtime is given (:class:`OneSampleFunction`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from modeling_niaf import ActionTrajectory

from ..data.metaworld import TASK_INSTRUCTIONS, instruction_for
from .settings import EvalError


class OneSampleFunction:
    """Sample ``index`` of a batched numpy action function, as a single-chunk function for the stream."""

    def __init__(self, fn: Any, index: int) -> None:
        self.fn, self.index = fn, index
        self.chunk_duration = float(fn.chunk_duration)

    def __call__(self, *, times: Any = None, derivatives: int = 3, **_: Any) -> ActionTrajectory:
        t = np.asarray(times, dtype=np.float64).reshape(-1)
        rows = np.stack([self.fn.at(float(x), 3, self.index) for x in t], axis=1)  # [4, N, D]
        return ActionTrajectory(tau=2.0 * t / self.chunk_duration - 1.0, time=t, position=rows[0], velocity=rows[1],
                                acceleration=rows[2], jerk=rows[3])


class ObservationAblation:
    """Withholds inputs from a policy's observation (:data:`ABLATIONS`); the simulator is untouched.

    Args:
        ablate: the inputs to withhold.
        state_mean: what ``state`` ablation puts in place of the state (the training mean).
        tasks: the evaluation's tasks, for ``other_instruction``.
        instructions: the instruction set the observations carry (``niaf`` or ``lerobot``), for
            ``other_instruction``.
    """

    def __init__(self, ablate: Sequence[str], state_mean: np.ndarray | None = None,
                 tasks: Sequence[str] = (), instructions: str = "niaf") -> None:
        self.ablate = tuple(ablate)
        if "state" in self.ablate and state_mean is None:
            raise EvalError("--ablate state: the checkpoint has no state statistics to take the mean from")
        self.state_mean = None if state_mean is None else np.asarray(state_mean, dtype=np.float32)
        names = list(tasks)
        own = {instruction_for(n, instructions) for n in names}
        spare = [t for t in TASK_INSTRUCTIONS if instruction_for(t, instructions) not in own]  # (LeRobot has them all)
        # each task's instruction is replaced by the next task's (cyclically); a lone task by an unrelated one
        order = names[1:] + names[:1] if len(names) > 1 else spare[:len(names)]
        self.other = {instruction_for(a, instructions): instruction_for(b, instructions)
                      for a, b in zip(names, order, strict=True)}

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


__all__ = ["ObservationAblation", "OneSampleFunction"]
