"""Loading a checkpoint as a closed-loop policy, and the training record that decides which benchmark seeds
are held out."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..baselines import checkpoint_action_head, load_model, load_processor
from ..data.metaworld import STATE_KINDS
from .adapters import ObservationAblation
from .policies import NiafPolicy
from .provenance import (
    ProvenanceError,
    held_out_seeds,
    merged_record,
    record_seeds,
    seeds_needed,
    training_records,
)
from .settings import ACTION_DIM, EvalError, EvalSettings


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
    from transformers import AutoModel, AutoProcessor  # heavy: transformers

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
    return ObservationAblation(settings.ablate, None if mean is None else np.asarray(mean), settings.tasks,
                               settings.instructions)


__all__ = [
    "load_policy",
    "observation_ablation",
    "resolve_seed",
    "resolve_seeds",
    "training_record",
    "training_seeds",
]
