"""LeRobot configuration of the NIAF policy (``--policy.type=niaf``).

LeRobot finds the policy class and the processor factory by naming convention from this module's path:
``configuration_niaf`` → ``modeling_niaf.NiafPolicy`` and ``processor_niaf.make_niaf_pre_post_processors``
(``lerobot.policies.factory``). The NIAF model itself is described by a `configuration_niaf.NiafConfig` of the
``niaf`` package; it is kept here as a plain dict (``niaf_config``), filled when the model is first built, so that a
saved ``pretrained_model`` folder rebuilds exactly the same model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lerobot.configs import FeatureType, NormalizationMode, PreTrainedConfig
from lerobot.optim import AdamWConfig
from lerobot.utils.constants import ACTION, OBS_STATE

SWITCH_MODES = ("crossfade", "offset_decay")


@PreTrainedConfig.register_subclass("niaf")
@dataclass
class NiafConfig(PreTrainedConfig):
    """NIAF (Neural Implicit Action Fields) as a LeRobot policy.

    Where the model comes from, in this order:

    * ``niaf_config`` set (a saved ``pretrained_model`` folder or a converted NIAF checkpoint): that exact model;
    * ``niaf_pretrained_path``: a NIAF checkpoint (Hub id or folder, as written by ``niaf-train``), weights and
      processor (tokenizer, image processor, prompt) included;
    * otherwise a fresh tiny random-weight model built in code (``backbone="tiny"``), its vocabulary made from the
      dataset's task strings. Other backbones: train with ``niaf-train`` and convert (``niaf-lerobot to-lerobot``).

    Normalisation: the dataset statistics are turned into NIAF's affine map (``normalization_mode`` QUANTILES,
    MIN_MAX or MEAN_STD, ``configuration_niaf.normalization``) and handed to LeRobot's normaliser steps as
    ``mean`` = centre, ``std`` = half-range with ``eps`` = 0, which makes them compute exactly NIAF's
    ``(x - centre) / half`` and ``x · half + centre``. Hence ``normalization_mapping`` is MEAN_STD for state and
    action whatever ``normalization_mode`` is; images stay in [0, 1] (IDENTITY) and go through the backbone's own
    image processor inside the policy.

    Execution (``select_action``): every ``n_action_steps`` environment steps the backbone runs once and its action
    function is submitted to a `modeling_niaf.runtime.ActionStream`; every step in between the command is read from
    the function at ``t = step / execute_hz`` (``execute_hz`` defaults to the model's ``control_hz``, the rate of
    the training data). Commands come from the function, not from a queue of waypoints.
    """

    n_obs_steps: int = 1
    normalization_mapping: dict[str, NormalizationMode] = field(
        default_factory=lambda: {
            "VISUAL": NormalizationMode.IDENTITY,
            "STATE": NormalizationMode.MEAN_STD,
            "ACTION": NormalizationMode.MEAN_STD,
        }
    )

    # --- the NIAF model -------------------------------------------------------------------------------------
    niaf_config: dict[str, Any] | None = None
    """The NIAF model's `configuration_niaf.NiafConfig` as a dict; set when the model is built, then authoritative."""
    niaf_pretrained_path: str | None = None
    """A NIAF checkpoint (Hub id or folder) to start from, instead of a fresh tiny model."""
    backbone: str = "tiny"
    chunk_size: int = 10
    """K: actions per training chunk, at the dataset's fps (the function spans (K-1)/fps seconds)."""
    siren_layers: int = 3
    siren_width: int = 256
    siren_omega0: float = 30.0
    modulation_groups: int = 64
    use_state: bool = True
    normalization_mode: str = "QUANTILES"
    loss_weight_position: float = 1.0
    loss_weight_jerk: float = 0.0
    prompt_template: str = "What action should the robot take to {instruction}?"
    # tiny backbone (``backbone="tiny"``)
    tiny_hidden_size: int = 64
    tiny_layers: int = 2
    tiny_image_size: int = 32
    tiny_patch_size: int = 8

    # --- execution --------------------------------------------------------------------------------------------
    n_action_steps: int = 8
    """Environment steps between two backbone passes (each pass gives a new action function)."""
    execute_hz: float | None = None
    """Rate at which ``select_action`` is called (environment / robot loop); None: the model's ``control_hz``."""
    blend_duration: float = 0.0
    """ActionStream switch window between functions, seconds (0: switch at once)."""
    switch: str = "crossfade"

    # --- training preset --------------------------------------------------------------------------------------
    optimizer_lr: float = 3e-4
    optimizer_weight_decay: float = 0.0
    optimizer_grad_clip_norm: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_obs_steps != 1:
            raise ValueError(f"NIAF reads one observation per call; got n_obs_steps={self.n_obs_steps}.")
        if self.chunk_size < 2:
            raise ValueError(f"`chunk_size` must be >= 2, got {self.chunk_size}.")
        if self.n_action_steps < 1:
            raise ValueError(f"`n_action_steps` must be >= 1, got {self.n_action_steps}.")
        if self.execute_hz is not None and not self.execute_hz > 0:
            raise ValueError(f"`execute_hz` must be positive or None, got {self.execute_hz}.")
        if self.switch not in SWITCH_MODES:
            raise ValueError(f"`switch` must be one of {SWITCH_MODES}, got {self.switch!r}.")
        if self.backbone != "tiny" and self.niaf_config is None and self.niaf_pretrained_path is None:
            raise ValueError(
                f"backbone={self.backbone!r}: only the tiny backbone is built in code here; train another backbone "
                "with niaf-train and start from it with --policy.niaf_pretrained_path (or convert it with "
                "`niaf-lerobot to-lerobot`)."
            )
        if self.niaf_config is not None and self.niaf_config.get("chunk_size") is not None:
            # the model's K decides how many future actions the dataset has to deliver
            self.chunk_size = int(self.niaf_config["chunk_size"])

    def get_optimizer_preset(self) -> AdamWConfig:
        return AdamWConfig(
            lr=self.optimizer_lr,
            weight_decay=self.optimizer_weight_decay,
            grad_clip_norm=self.optimizer_grad_clip_norm,
        )

    def get_scheduler_preset(self) -> None:
        return None

    def validate_features(self) -> None:
        if not self.image_features:
            raise ValueError("NIAF needs at least one camera among the input features (observation.images.*).")
        if self.action_feature is None:
            raise ValueError(f"NIAF needs an {ACTION!r} output feature.")
        if self.use_state and self.robot_state_feature is None:
            raise ValueError(
                f"use_state=True but there is no {OBS_STATE!r} input feature; pass --policy.use_state=false."
            )
        for key, ft in self.image_features.items():
            if ft.type is not FeatureType.VISUAL or len(ft.shape) != 3:
                raise ValueError(f"image feature {key!r} must be [C, H, W], got {ft.shape}.")

    @property
    def observation_delta_indices(self) -> None:
        return None

    @property
    def action_delta_indices(self) -> list[int]:
        return list(range(self.chunk_size))

    @property
    def reward_delta_indices(self) -> None:
        return None


__all__ = ["NiafConfig", "SWITCH_MODES"]
