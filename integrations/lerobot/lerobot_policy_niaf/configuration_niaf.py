"""LeRobot configuration of the NIAF policy (``--policy.type=niaf``).

LeRobot finds the policy class and the processor factory by naming convention from this module's path:
``configuration_niaf`` → ``modeling_niaf.NiafPolicy`` and ``processor_niaf.make_niaf_pre_post_processors``
(``lerobot.policies.factory``). The NIAF model itself is described by a `configuration_niaf.NiafConfig` of the
``niaf`` package; it is kept here as a plain dict (``niaf_config``), filled when the model is first built, so that a
saved ``pretrained_model`` folder rebuilds exactly the same model.
"""

from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lerobot.configs import FeatureType, NormalizationMode, PreTrainedConfig
from lerobot.optim import AdamWConfig
from lerobot.utils.constants import ACTION, OBS_STATE

from .schedule_niaf import NiafLRSchedulerConfig

SWITCH_MODES = ("crossfade", "offset_decay")

RECIPE_TRAINING_KEYS = ("learning_rate", "head_learning_rate", "adam_beta1", "adam_beta2", "adam_epsilon",
                        "weight_decay", "lr_scheduler", "warmup_ratio", "decay_ratio", "final_lr_scale",
                        "max_grad_norm", "image_shift")
"""The ``training:`` keys of a niaf-train recipe the LeRobot policy uses (optimiser, schedule) or warns about."""


def recipe_file(recipe: str) -> str:
    """``recipe`` as niaf-train's ``--config`` takes it: a YAML path, or a packaged name (``.yaml`` added)."""
    if Path(recipe).is_file() or recipe.endswith((".yaml", ".yml")):
        return recipe
    return f"{recipe}.yaml"


def resolve_recipe(recipe: str, model_overrides: str = "", chunk_size: int | None = None) -> dict[str, Any]:
    """The ``model`` section and the optimiser/schedule keys of a niaf-train recipe after overrides, read and
    checked by niaf-train's own config code (``niaf_train.training.arguments.load_config``)."""
    from niaf_train.training.arguments import ConfigError, load_config

    overrides: list[str] = []
    for token in shlex.split(model_overrides or ""):
        key, eq, value = token.partition("=")
        if not eq or not key:
            raise ValueError(f"--policy.niaf_model_overrides: expected key=value pairs, got {token!r}.")
        overrides += [f"--model.{key.removeprefix('model.')}", value]
    if chunk_size is not None:
        overrides += ["--model.chunk_size", str(chunk_size)]
    try:
        cfg = load_config(recipe_file(recipe), overrides)
    except ConfigError as err:
        raise ValueError(f"--policy.niaf_recipe {recipe}: {err}") from None
    training = {key: getattr(cfg.training, key) for key in RECIPE_TRAINING_KEYS}
    return {"model": dataclasses.asdict(cfg.model), "training": training}


def recipe_from_resolved(resolved: dict[str, Any], origin: str) -> Any:
    """A niaf-train ``FinetuneConfig`` from a `resolve_recipe` dict (checked again by niaf-train's code)."""
    from niaf_train.training.arguments import ConfigError, build_config

    try:
        return build_config({k: resolved.get(k) for k in ("model", "training")}, [], f"recipe {origin}")
    except ConfigError as err:
        raise ValueError(f"--policy.niaf_recipe_resolved: {err}") from None


@PreTrainedConfig.register_subclass("niaf")
@dataclass
class NiafConfig(PreTrainedConfig):
    """NIAF (Neural Implicit Action Fields) as a LeRobot policy.

    Where the model comes from, in this order:

    * ``niaf_config`` set (a saved ``pretrained_model`` folder or a converted NIAF checkpoint): that exact model;
    * ``niaf_pretrained_path``: a NIAF checkpoint (Hub id or folder, as written by ``niaf-train``), weights and
      processor (tokenizer, image processor, prompt) included;
    * otherwise a fresh random-weight model built by niaf-train's own code from the ``model:`` section of a
      niaf-train recipe (``niaf_recipe``: ``default``, ``metaworld_pixels``, ... or a YAML path, with
      ``niaf_model_overrides`` and ``chunk_size``), its vocabulary made from the dataset's task strings. Only the
      tiny backbone is built in code here; other backbones: train with ``niaf-train`` and convert
      (``niaf-lerobot to-lerobot``) or start from them with ``niaf_pretrained_path``.

    Training presets: the recipe's ``training:`` section gives AdamW (lr, betas, eps, weight decay, gradient clip)
    and the learning-rate schedule (`schedule_niaf.NiafLRSchedulerConfig`: niaf-train's tri-stage, cosine, linear
    or constant schedule over ``lerobot-train --steps``).

    ``chunk_size`` counts dataset frames (``action_delta_indices = range(chunk_size)``); a recipe's K counts chunk
    points ``data.chunk_stride`` source frames apart, recorded at the recipe's rate. On faster data, give the same
    span in frames (K=8 at 20 Hz = 0.35 s = 29 frames at 80 Hz: ``--policy.chunk_size=29``, every frame
    supervised).

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
    """A NIAF checkpoint (Hub id or folder) to start from, instead of a fresh model from the recipe."""
    niaf_recipe: str = "default"
    """A niaf-train configuration: a packaged name under ``niaf_train/configs`` (``metaworld_pixels``, with or
    without ``.yaml``) or a YAML path. Its ``model:`` section is the fresh model (every NiafConfig option, read by
    niaf-train's own config code), its ``training:`` section the optimiser and learning-rate presets."""
    niaf_model_overrides: str = ""
    """``key=value`` pairs (space-separated) applied to the recipe's ``model:`` section, as niaf-train's
    ``--model.key value``, e.g. ``"siren_width=128 image_keypoints=8"``."""
    chunk_size: int | None = None
    """K: actions per training chunk, counted in dataset frames (``action_delta_indices = range(K)``, the
    function spans (K-1)/fps seconds). None: the recipe's ``chunk_size``, which niaf-train counts in chunk points
    ``data.chunk_stride`` frames apart; on data recorded faster than the recipe's, give the span in frames here
    (a K=8 recipe at 20 Hz on 80 Hz data: 29, every frame supervised)."""
    niaf_recipe_resolved: dict[str, Any] | None = None
    """The recipe as used (its ``model`` and ``training`` sections after overrides); filled on first use and saved
    with the policy, so that a saved folder needs neither the YAML file nor the overrides again."""

    # --- execution --------------------------------------------------------------------------------------------
    n_action_steps: int = 8
    """Environment steps between two backbone passes (each pass gives a new action function)."""
    execute_hz: float | None = None
    """Rate at which ``select_action`` is called (environment / robot loop); None: the model's ``control_hz``."""
    blend_duration: float = 0.0
    """ActionStream switch window between functions, seconds (0: switch at once)."""
    switch: str = "crossfade"

    # --- training preset --------------------------------------------------------------------------------------
    # None: the recipe's ``training:`` value (learning_rate, weight_decay, max_grad_norm)
    optimizer_lr: float | None = None
    optimizer_weight_decay: float | None = None
    optimizer_grad_clip_norm: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_obs_steps != 1:
            raise ValueError(f"NIAF reads one observation per call; got n_obs_steps={self.n_obs_steps}.")
        if self.chunk_size is not None and self.chunk_size < 2:
            raise ValueError(f"`chunk_size` must be >= 2, got {self.chunk_size}.")
        if self.n_action_steps < 1:
            raise ValueError(f"`n_action_steps` must be >= 1, got {self.n_action_steps}.")
        if self.execute_hz is not None and not self.execute_hz > 0:
            raise ValueError(f"`execute_hz` must be positive or None, got {self.execute_hz}.")
        if self.switch not in SWITCH_MODES:
            raise ValueError(f"`switch` must be one of {SWITCH_MODES}, got {self.switch!r}.")
        for name in ("optimizer_lr", "optimizer_weight_decay", "optimizer_grad_clip_norm"):
            value = getattr(self, name)
            if value is not None and not (value >= 0 and (name != "optimizer_lr" or value > 0)):
                raise ValueError(f"`{name}` must be {'> 0' if name == 'optimizer_lr' else '>= 0'}, got {value}.")
        if self.niaf_recipe_resolved is None:
            self.niaf_recipe_resolved = resolve_recipe(self.niaf_recipe, self.niaf_model_overrides, self.chunk_size)
        self._recipe = recipe_from_resolved(self.niaf_recipe_resolved, self.niaf_recipe)
        model = self._recipe.model
        if self.niaf_config is None and self.niaf_pretrained_path is None:
            if model.backbone != "tiny" or model.init_from_niaf:
                raise ValueError(
                    f"--policy.niaf_recipe {self.niaf_recipe}: model.backbone={model.backbone!r}; only the tiny "
                    "backbone is built in code here; train another backbone with niaf-train and start from it with "
                    "--policy.niaf_pretrained_path (or convert it with `niaf-lerobot to-lerobot`)."
                )
            if model.action_head != "niaf":
                raise ValueError(
                    f"--policy.niaf_recipe {self.niaf_recipe}: model.action_head={model.action_head!r}; the LeRobot "
                    "policy is NIAF's own head (action_head: niaf)."
                )
        if self.niaf_config is not None and self.niaf_config.get("chunk_size") is not None:
            # the model's K decides how many future actions the dataset has to deliver
            self.chunk_size = int(self.niaf_config["chunk_size"])
        else:
            self.chunk_size = int(model.chunk_size)

    @property
    def recipe(self) -> Any:
        """The recipe as a niaf-train ``FinetuneConfig`` (its ``model`` and optimiser/schedule keys matter here)."""
        return self._recipe

    @property
    def use_state(self) -> bool:
        """Whether the model reads ``observation.state``: the built model's, else the recipe's ``use_state``."""
        if self.niaf_config is not None:
            return bool(self.niaf_config.get("use_state"))
        return bool(self._recipe.model.use_state)

    @property
    def normalization_mode(self) -> str:
        """NIAF's normalisation of state and actions: the built model's, else the recipe's."""
        if self.niaf_config is not None:
            return str(self.niaf_config["normalization_mode"])
        return str(self._recipe.model.normalization_mode)

    def get_optimizer_preset(self) -> AdamWConfig:
        """AdamW as niaf-train's ``training:`` section sets it (``--policy.optimizer_*`` override)."""
        t = self._recipe.training
        clip = t.max_grad_norm if self.optimizer_grad_clip_norm is None else self.optimizer_grad_clip_norm
        return AdamWConfig(
            lr=t.learning_rate if self.optimizer_lr is None else self.optimizer_lr,
            betas=(t.adam_beta1, t.adam_beta2),
            eps=t.adam_epsilon,
            weight_decay=t.weight_decay if self.optimizer_weight_decay is None else self.optimizer_weight_decay,
            grad_clip_norm=clip,  # 0: no clipping, in lerobot-train as in niaf-train
        )

    def get_scheduler_preset(self) -> NiafLRSchedulerConfig:
        """niaf-train's learning-rate schedule over ``lerobot-train --steps`` (ratios of the run's steps)."""
        t = self._recipe.training
        return NiafLRSchedulerConfig(kind=t.lr_scheduler, warmup_ratio=t.warmup_ratio, decay_ratio=t.decay_ratio,
                                     final_lr_scale=t.final_lr_scale)

    def validate_features(self) -> None:
        if not self.image_features:
            raise ValueError("NIAF needs at least one camera among the input features (observation.images.*).")
        if self.action_feature is None:
            raise ValueError(f"NIAF needs an {ACTION!r} output feature.")
        if self.niaf_pretrained_path is None and self.use_state and self.robot_state_feature is None:
            raise ValueError(
                f"the model reads the state (use_state) but there is no {OBS_STATE!r} input feature; pass "
                "--policy.niaf_model_overrides=use_state=false."
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


__all__ = ["RECIPE_TRAINING_KEYS", "NiafConfig", "SWITCH_MODES", "recipe_file", "recipe_from_resolved",
           "resolve_recipe"]
