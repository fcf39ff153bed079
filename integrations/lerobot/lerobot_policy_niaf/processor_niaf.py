"""Pre/post-processing pipelines of the NIAF policy, built from LeRobot's own processor steps.

The pipelines hold the steps ``lerobot-eval`` and ``lerobot-train`` address by name
(``rename_observations_processor``, ``device_processor``, ``normalizer_processor``, ``unnormalizer_processor``).
The normaliser steps get NIAF's affine map as ``mean``/``std`` statistics with ``eps=0``: LeRobot's MEAN_STD
formula ``(x - mean) / (std + eps)`` and its inverse ``x · std + mean`` then are exactly `NiafProcessor`'s
``(x - centre) / half`` and ``x · half + centre`` (``configuration_niaf.normalization.AffineNormalizer``) with the
same float32 centre and half-range. De-normalised actions are bit-identical to NIAF's; on float32 inputs the
normalised state is too. `NiafProcessor.__call__` normalises the state in float64 and rounds once, so there the
two can differ by one float32 ulp (tests/test_plugin.py measures both).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from lerobot.configs import FeatureType, NormalizationMode
from lerobot.processor import (
    AddBatchDimensionProcessorStep,
    DeviceProcessorStep,
    NormalizerProcessorStep,
    PolicyAction,
    PolicyProcessorPipeline,
    RenameObservationsProcessorStep,
    UnnormalizerProcessorStep,
)
from lerobot.processor.factory import make_policy_processor_pipelines
from lerobot.utils.constants import ACTION, OBS_STATE

from configuration_niaf.normalization import affine_from_stats, check_normalization_stats

from .configuration_niaf import NiafConfig

NIAF_FEATURES = {ACTION: "action", OBS_STATE: "state"}
"""LeRobot feature key → NIAF statistics key."""


def niaf_stats_from_lerobot(
    dataset_stats: Mapping[str, Mapping[str, Any]] | None, mode: str, action_dim: int, state_dim: int | None
) -> dict[str, dict[str, list[float]]] | None:
    """LeRobot ``dataset.meta.stats`` (feature → stat → array) → NIAF's ``{"action": ..., "state": ...}`` layout,
    checked as `NiafConfig` stores them (plain floats, the mode's keys present)."""
    if dataset_stats is None:
        return None
    out: dict[str, dict[str, list[float]]] = {}
    for key, name in NIAF_FEATURES.items():
        if name == "state" and state_dim is None:
            continue
        if key not in dataset_stats:
            continue
        out[name] = {
            stat: np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=np.float64)
            .reshape(-1)
            .tolist()
            for stat, value in dataset_stats[key].items()
        }
    if not out:
        return None
    return check_normalization_stats(out, mode, {"action": action_dim, "state": state_dim}, "lerobot_policy_niaf")


def affine_stats(niaf_config: Mapping[str, Any]) -> dict[str, dict[str, torch.Tensor]]:
    """The statistics LeRobot's MEAN_STD steps need to apply NIAF's normalisation exactly: per feature
    ``mean`` = centre and ``std`` = half-range [D] (float32), from a NIAF config dict (mode, statistics, dims,
    gripper dims left unnormalised, degenerate state dims centred only: all decided by ``affine_from_stats``)."""
    mode = niaf_config["normalization_mode"]
    stats = niaf_config.get("normalization_stats") or {}
    out: dict[str, dict[str, torch.Tensor]] = {}
    dims = {ACTION: niaf_config["action_dim"], OBS_STATE: niaf_config.get("state_dim")}
    skip = {ACTION: niaf_config.get("unnormalized_action_dims") or [], OBS_STATE: []}
    for key, name in NIAF_FEATURES.items():
        if dims[key] is None or (mode != "IDENTITY" and name not in stats):
            continue
        center, half = affine_from_stats(stats.get(name), mode, dims[key], skip[key], feature=name)
        out[key] = {
            "mean": torch.as_tensor(center, dtype=torch.float32),
            "std": torch.as_tensor(half, dtype=torch.float32),
        }
    return out


def make_niaf_pre_post_processors(
    config: NiafConfig,
    dataset_stats: dict[str, dict[str, torch.Tensor]] | None = None,
) -> tuple[
    PolicyProcessorPipeline[dict[str, Any], dict[str, Any]],
    PolicyProcessorPipeline[PolicyAction, PolicyAction],
]:
    """Rename → batch → device → normalise (state; action targets in training), and unnormalise → cpu.

    The affine statistics come from ``dataset_stats`` when given (training on a dataset: converted to NIAF's
    layout and mode first, the same values `NiafPolicy` writes into the model's config), else from the
    statistics inside ``config.niaf_config`` (a converted NIAF checkpoint).
    """
    niaf = dict(config.niaf_config or {})
    if not niaf:  # a fresh model: its config is only built by NiafPolicy; the settings needed here are known
        action = config.action_feature
        state = config.robot_state_feature if config.use_state else None
        niaf = {
            "normalization_mode": config.normalization_mode,
            "action_dim": int(action.shape[0]) if action is not None else None,
            "state_dim": int(state.shape[0]) if state is not None else None,
            "unnormalized_action_dims": [],
        }
    if dataset_stats is not None:
        niaf["normalization_stats"] = niaf_stats_from_lerobot(
            dataset_stats, niaf["normalization_mode"], niaf["action_dim"], niaf.get("state_dim")
        )
    stats = affine_stats(niaf)
    norm_map = {
        FeatureType.VISUAL: NormalizationMode.IDENTITY,
        FeatureType.STATE: NormalizationMode.MEAN_STD,
        FeatureType.ACTION: NormalizationMode.MEAN_STD,
    }
    features = {**config.input_features, **config.output_features}
    input_steps = [
        RenameObservationsProcessorStep(rename_map={}),
        AddBatchDimensionProcessorStep(),
        DeviceProcessorStep(device=config.device),
        NormalizerProcessorStep(features=features, norm_map=norm_map, stats=stats, eps=0.0),
    ]
    output_steps = [
        UnnormalizerProcessorStep(features=config.output_features, norm_map=norm_map, stats=stats, eps=0.0),
        DeviceProcessorStep(device="cpu"),
    ]
    return make_policy_processor_pipelines(input_steps=input_steps, output_steps=output_steps)


__all__ = ["affine_stats", "make_niaf_pre_post_processors", "niaf_stats_from_lerobot"]
