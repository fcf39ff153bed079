"""Comparison heads for NIAF's head ablation (the paper's comparison): waypoints (OFT), B-spline (BEAST-CT), flow matching (π0).

Each comparison head sits on NIAF's own backbone, learned query tokens, state pathway and data pipeline
(:class:`NiafBaselineForActionFunction`, a task model on NIAF's base ``NiafModel``, beside
``NiafForActionFunction``); only the map from the query outputs Z to actions differs. Select one for training
with ``niaf-train --model.action_head niaf|waypoints|bspline|flow``; ``niaf`` (the default) trains the
unchanged NIAF model.

* :mod:`.bspline`: clamped cubic B-spline bases with exact derivatives;
* :mod:`.heads`: the three head modules (Z [B, Q, d] → waypoints / control points / flow velocity);
* :mod:`.functions`: the chunk function objects (NIAF's ``ActionFunction`` call signature);
* :mod:`.modeling_baselines`: the model class, its losses, ``predict_action_function`` and plain saving.

Checkpoints of comparison heads carry ``action_head`` in config.json and no remote code; :func:`load_model` loads
any checkpoint (NIAF or comparison head) and niaf-eval's ``load_policy`` goes through it for the latter.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .modeling_baselines import (
    ACTION_HEADS,
    COMPARISON_HEADS,
    HEAD_DEFAULTS,
    LOADER,
    NiafBaselineForActionFunction,
)

MODEL_ARGUMENT_KEYS = ("head_hidden_size", "bspline_control_points", "waypoint_loss", "chunk_interpolation",
                       "flow_steps")
"""``ModelOptions`` fields copied into the config of a comparison-head model (never into a NIAF one)."""


def action_head_settings(model_args: Any, head: dict[str, Any]) -> tuple[type, dict[str, Any]]:
    """The model class and NiafConfig keyword arguments for ``model_args.action_head`` (niaf-train's one call).

    ``head`` holds the NiafConfig keywords niaf-train builds for NIAF; for ``niaf`` they are returned unchanged
    with ``NiafForActionFunction`` (so a NIAF config.json is exactly what it always was); for a comparison head
    ``action_head`` and its settings are added and the class is :class:`NiafBaselineForActionFunction`.
    """
    # lazy: modeling_niaf's names register the Auto classes (transformers' processing stack)
    from modeling_niaf import NiafForActionFunction

    kind = getattr(model_args, "action_head", "niaf")
    if kind == "niaf":
        return NiafForActionFunction, dict(head)
    if kind not in COMPARISON_HEADS:
        raise ValueError(f"`model.action_head` must be one of {ACTION_HEADS}, got {kind!r}")
    extra = {"action_head": kind, **{k: getattr(model_args, k) for k in MODEL_ARGUMENT_KEYS}}
    return NiafBaselineForActionFunction, {**head, **extra}


def checkpoint_action_head(path: str | Path) -> str:
    """``action_head`` of a local checkpoint's config.json: ``niaf`` when absent (every NIAF checkpoint)."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return "niaf"
    return str(json.loads(config.read_text(encoding="utf-8")).get("action_head") or "niaf")


def load_model(path: str | Path, **kwargs: Any) -> Any:
    """A checkpoint of any head: comparison heads with :class:`NiafBaselineForActionFunction`, NIAF checkpoints
    with ``AutoModel.from_pretrained(..., trust_remote_code=True)`` (their shipped remote code)."""
    if checkpoint_action_head(path) == "niaf":
        from transformers import AutoModel  # heavy: transformers

        return AutoModel.from_pretrained(str(path), trust_remote_code=True, **kwargs)
    return NiafBaselineForActionFunction.from_pretrained(str(path), **kwargs)


def load_processor(path: str | Path) -> Any:
    """The :class:`NiafProcessor` saved with a comparison-head checkpoint (plain files, no ``auto_map``)."""
    # lazy: modeling_niaf's names register the Auto classes (transformers' processing stack)
    from modeling_niaf import NiafProcessor

    return NiafProcessor.from_pretrained(str(path))


def head_parameter_count(model: Any) -> int:
    """Parameters of what turns the query outputs into actions: NIAF's ψ heads + SIREN, or the comparison head
    (the backbone, the learned queries and the state projection are shared by all heads and not counted)."""
    if isinstance(model, NiafBaselineForActionFunction):
        return model.head_parameters()
    return sum(p.numel() for name in ("modulation_heads", "siren") for p in getattr(model, name).parameters())


__all__ = [
    "ACTION_HEADS",
    "COMPARISON_HEADS",
    "HEAD_DEFAULTS",
    "LOADER",
    "MODEL_ARGUMENT_KEYS",
    "NiafBaselineForActionFunction",
    "action_head_settings",
    "checkpoint_action_head",
    "head_parameter_count",
    "load_model",
    "load_processor",
]
