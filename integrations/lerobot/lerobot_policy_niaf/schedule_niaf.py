"""niaf-train's learning-rate schedules as a LeRobot ``LRSchedulerConfig`` (``--scheduler.type=niaf``).

LeRobot 0.6 has no tri-stage schedule (its ``cosine_decay_with_warmup`` decays from the end of the warm-up and
takes step counts, not fractions of the run). `NiafLRSchedulerConfig` gives, for a run of ``num_training_steps``
optimiser steps (``lerobot-train --steps``), the multiplier of the peak learning rate at step ``s`` (0-based, the
step the optimiser is about to take) that niaf-train gives a run of ``max_steps`` = ``num_training_steps``:

* warm-up: ``W = round(warmup_ratio · N)`` steps, ``(s + 1) / W``;
* tri_stage: hold at 1 until ``N - D`` (``D = round(decay_ratio · N)``), then ``final_lr_scale ** ((s - N + D) / D)``
  (exponential-style, reaching ``final_lr_scale`` at the end);
* cosine / linear: from the end of the warm-up to ``final_lr_scale`` at step N; constant: 1 after the warm-up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lerobot.optim.schedulers import LRSchedulerConfig
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

SCHEDULE_KINDS = ("tri_stage", "cosine", "linear", "constant")


class NiafLRScale:
    """The multiplier per optimiser step (a picklable callable, so that LeRobot can save the scheduler state)."""

    def __init__(self, total: int, warmup_ratio: float, decay_ratio: float, final_lr_scale: float, kind: str):
        self.total, self.kind, self.final = int(total), kind, float(final_lr_scale)
        self.warmup = int(round(warmup_ratio * self.total))
        self.decay = int(round(decay_ratio * self.total)) if kind == "tri_stage" else self.total - self.warmup
        self.hold_end = self.total - self.decay

    def __call__(self, step: int) -> float:
        if self.warmup and step < self.warmup:
            return (step + 1) / self.warmup
        if self.kind == "constant":
            return 1.0
        if self.kind == "tri_stage":
            if step < self.hold_end:
                return 1.0
            return float(self.final ** min((step - self.hold_end) / max(self.decay, 1), 1.0))
        progress = min((step - self.warmup) / max(self.total - self.warmup, 1), 1.0)
        if self.kind == "cosine":
            return self.final + (1.0 - self.final) * 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0 - (1.0 - self.final) * progress


@LRSchedulerConfig.register_subclass("niaf")
@dataclass
class NiafLRSchedulerConfig(LRSchedulerConfig):
    """niaf-train's schedule (``training.lr_scheduler`` and its ratios) over ``num_training_steps``."""

    num_warmup_steps: int = 0
    """Unused (LeRobot's base field): the warm-up is ``warmup_ratio`` of the run, as in niaf-train."""
    kind: str = "tri_stage"
    warmup_ratio: float = 0.05
    decay_ratio: float = 0.25
    final_lr_scale: float = 0.05

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULE_KINDS:
            raise ValueError(f"`scheduler.kind` must be one of {SCHEDULE_KINDS}, got {self.kind!r}.")
        for name in ("warmup_ratio", "decay_ratio", "final_lr_scale"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"`scheduler.{name}` must be in [0, 1], got {value}.")
        if self.warmup_ratio + (self.decay_ratio if self.kind == "tri_stage" else 0.0) > 1.0:
            raise ValueError("`scheduler.warmup_ratio` + `scheduler.decay_ratio` must not exceed 1.")

    def build(self, optimizer: Optimizer, num_training_steps: int) -> LambdaLR:
        if num_training_steps < 1:
            raise ValueError(f"NiafLRSchedulerConfig: num_training_steps must be >= 1, got {num_training_steps}.")
        scale = NiafLRScale(num_training_steps, self.warmup_ratio, self.decay_ratio, self.final_lr_scale, self.kind)
        return LambdaLR(optimizer, scale)


__all__ = ["SCHEDULE_KINDS", "NiafLRScale", "NiafLRSchedulerConfig"]
