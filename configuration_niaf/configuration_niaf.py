"""Configuration of a NIAF model (Neural Implicit Action Fields, arXiv 2603.01766).

This file is shipped to the Hub as remote code next to ``modeling_niaf.py``. It imports no torch itself; its one
import of ours is ``normalization.py`` (the units: mode names, statistics keys, validation), a sibling in the
installed ``configuration_niaf`` package and on the Hub alike, so both use the very same file.
"""

from __future__ import annotations

import math
import re
from typing import Any

import transformers
from transformers import AutoConfig, PretrainedConfig
from transformers.utils import logging

# the units module (numpy only) sits next to this file, in the installed package and on the Hub alike
from .normalization import (
    NORMALIZATION_MODES,
    STATS_KEYS,
    check_mode,
    check_normalization_stats,
    check_relative_action_state_indices,
)

logger = logging.get_logger(__name__)

MIN_TRANSFORMERS_VERSION = "5.5.0"
"""Oldest transformers this code runs on (and the floor in pyproject.toml; the fast tests run there in CI).
4.x names the backbones' parameters differently (a checkpoint would load with a re-initialised backbone) and
lacks APIs the model code calls (``get_image_features(...).pooler_output``,
``get_rope_index(mm_token_type_ids=...)``); 5.3 has no ``SiglipImageProcessorPil``; 5.4's Qwen-VL image
processors need torchvision."""


def _version_tuple(version: str) -> tuple[int, ...]:
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", version)
    if match is None:
        raise ValueError(f"cannot read a version number from {version!r}")
    return tuple(int(part or 0) for part in match.groups())


def check_transformers_version(installed: str | None = None) -> None:
    """Raise ImportError (one line) when the installed transformers is older than `MIN_TRANSFORMERS_VERSION`.

    Runs when this file is imported, i.e. before ``AutoConfig``/``AutoModel.from_pretrained(...,
    trust_remote_code=True)`` builds anything from a NIAF checkpoint.
    """
    installed = transformers.__version__ if installed is None else installed
    if _version_tuple(installed) < _version_tuple(MIN_TRANSFORMERS_VERSION):
        raise ImportError(
            f"NIAF needs transformers>={MIN_TRANSFORMERS_VERSION}, found transformers {installed}; "
            f"upgrade with: pip install -U 'transformers>={MIN_TRANSFORMERS_VERSION}'"
        )


check_transformers_version()

_DEFAULT_BACKBONE_TYPE = "florence2"

HEAD_LIMITS: dict[str, float] = {
    "action_dim": 1024,
    "state_dim": 4096,
    "chunk_size": 10_000,
    "control_hz": 100_000.0,
    "siren_layers": 32,
    "siren_width": 8192,
    "siren_omega0": 1000.0,
    "num_cameras": 16,
    "image_keypoints": 256,
    "image_keypoint_channels": 1024,
    "query_init_std": 10.0,
}
"""Upper bounds of the head settings. Far above any sensible value (defaults: ω₀ = 30, L = 3, H = 256), they keep
a hostile or mistyped config from building a head that never returns (200,000 SIREN layers), allocates
gigabytes, or whose every output is NaN (sin(ω₀·x) with ω₀ = 1e300)."""


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"NiafConfig: `{name}` must be an int, got {type(value).__name__} ({value!r}).")
    if value < minimum:
        raise ValueError(f"NiafConfig: `{name}` must be >= {minimum}, got {value}.")
    if name in HEAD_LIMITS and value > HEAD_LIMITS[name]:
        raise ValueError(f"NiafConfig: `{name}` must be <= {int(HEAD_LIMITS[name])}, got {value}.")
    return value


def _check_float(name: str, value: Any, *, positive: bool = False, non_negative: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"NiafConfig: `{name}` must be a number, got {type(value).__name__} ({value!r}).")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"NiafConfig: `{name}` must be finite, got {value}.")
    if positive and value <= 0:
        raise ValueError(f"NiafConfig: `{name}` must be > 0, got {value}.")
    if non_negative and value < 0:
        raise ValueError(f"NiafConfig: `{name}` must be >= 0, got {value}.")
    if name in HEAD_LIMITS and value > HEAD_LIMITS[name]:
        raise ValueError(f"NiafConfig: `{name}` must be <= {HEAD_LIMITS[name]:g}, got {value:g}.")
    return value


class NiafConfig(PretrainedConfig):
    r"""Configuration of [`NiafForActionFunction`].

    A vision-language backbone reads the images, the instruction and (optionally) the robot state once; its
    outputs at ``num_queries = siren_layers * (modulation_groups + 1)`` learned query tokens become per-layer
    frequency (γ) and phase (β) modulations of a shared SIREN. The SIREN maps normalised chunk time
    τ ∈ [-1, 1] to a normalised action.

    Time axis: a chunk holds the next ``chunk_size`` (K) control steps at ``control_hz`` (f). Training samples
    τ_k = -1 + 2k/(K-1), which corresponds to t_k = k/f seconds after the chunk start, so the chunk lasts
    T = (K-1)/f seconds and d/dt = (2/T) d/dτ.

    Args:
        backbone_config (`dict` or `PretrainedConfig`, *optional*):
            Config of the vision-language backbone, any `AutoConfig` model type (Florence-2, Qwen2.5-VL,
            Qwen3-VL, PaliGemma, SmolVLM/Idefics3, ...). A dict must carry `model_type`. Defaults to a
            Florence-2 config with transformers' default sizes.
        action_dim (`int`, defaults to 7): dimension D of an action.
        chunk_size (`int`, defaults to 10): K, supervised points per chunk (>= 2).
        control_hz (`float`, defaults to 30.0): f, the rate of the actions in a chunk, in Hz.
        siren_layers (`int`, defaults to 3): L, number of modulated sine layers of the SIREN action function.
        siren_width (`int`, defaults to 256): H, width of every sine layer (a multiple of `modulation_groups`).
        siren_omega0 (`float`, defaults to 30.0): ω₀, frequency factor of every sine layer.
        modulation_groups (`int`, defaults to 64): G, frequency tokens per layer; each modulates `siren_width`/G
            rows, so G must divide `siren_width` (query tokens Q = L·(G+1)).
        use_state (`bool`, defaults to False): feed the robot state (`observation.state`, normalised like the
            actions) to the backbone as one extra token.
        state_dim (`int`, *optional*): dimension of the robot state; required when `use_state`.
        state_to_queries (`bool`, defaults to False): also add the projected state to every query token, not only
            as one token the queries attend to. A direct path from the state to every modulation: on Meta-World
            with the tiny backbone it lifted closed-loop success from under 50 % to over 90 % at equal steps.
        num_cameras (`int`, defaults to 1): images per observation (e.g. 2 for static + wrist).
        image_keypoints (`int`, defaults to 0): K > 0 adds a small convolutional encoder per camera whose K
            spatial soft-argmax keypoints (image positions), projected, are added to every query token: a direct
            path from where things are in the images to the modulations, beside the backbone. 0: none.
        image_keypoint_channels (`int`, defaults to 32): width of each camera's keypoint encoder (its cost grows
            with the square of it; ignored without `image_keypoints`).
        normalization_mode (`str`, defaults to "QUANTILES"): how actions and states are mapped to [-1, 1]: one of
            QUANTILES (q01/q99), MIN_MAX, MEAN_STD, IDENTITY.
        normalization_stats (`dict`, *optional*): ``{"action": {"q01": [...], ...}, "state": {...}}`` in
            LeRobot's stats.json layout; each vector has the feature's dimension. The checkpoint's one copy of
            the statistics: `generate_actions` de-normalises with them, and a `NiafProcessor` saved with the
            model reads them from this config.json (see ``normalization.py``).
        unnormalized_action_dims (`list[int]`, *optional*): action dimensions left in physical units (e.g. a
            binary gripper already in [-1, 1]).
        relative_action_state_indices (`list[int | None]`, *optional*): relative ("delta") actions, as openpi
            does for joint actions. None (default): every action dimension is absolute. Otherwise a list of
            length `action_dim`; entry i is the index into `observation.state` that action dim i is relative
            to, or None to keep dim i absolute (e.g. a gripper). The model then learns the chunk
            a_i(t_k) - state_s(t_obs) (physical units, the state at the observation time), so the action
            normalisation statistics (`normalization_stats["action"]`) are those of these deltas; at inference
            `predict_action_function` / `generate_actions` add the de-normalised state back to the position
            (never to its derivatives). Needs `use_state=True` and state statistics for a non-IDENTITY mode.
        loss_weight_position (`float`, defaults to 1.0): λ_p, weight of the position loss.
        loss_weight_velocity (`float`, defaults to 1.0): λ_v, weight of the velocity loss, used only when
            velocities are given.
        loss_weight_jerk (`float`, defaults to 0.0): λ_j, weight of the jerk regulariser (mean squared third
            derivative, per s³).
        query_init_std (`float`, defaults to 0.02): std of the learned query embeddings at initialisation.
    """

    model_type = "niaf"
    sub_configs = {"backbone_config": AutoConfig}

    def __init__(
        self,
        backbone_config: dict | PretrainedConfig | None = None,
        action_dim: int = 7,
        chunk_size: int = 10,
        control_hz: float = 30.0,
        siren_layers: int = 3,
        siren_width: int = 256,
        siren_omega0: float = 30.0,
        modulation_groups: int = 64,
        use_state: bool = False,
        state_dim: int | None = None,
        state_to_queries: bool = False,
        num_cameras: int = 1,
        image_keypoints: int = 0,
        image_keypoint_channels: int = 32,
        normalization_mode: str = "QUANTILES",
        normalization_stats: dict[str, dict[str, list[float]]] | None = None,
        unnormalized_action_dims: list[int] | None = None,
        relative_action_state_indices: list[int | None] | None = None,
        loss_weight_position: float = 1.0,
        loss_weight_velocity: float = 1.0,
        loss_weight_jerk: float = 0.0,
        query_init_std: float = 0.02,
        **kwargs: Any,
    ) -> None:
        kwargs.pop("num_queries", None)  # derived; written by to_dict for readers, never an input
        self.backbone_config = self._build_backbone_config(backbone_config)
        self.action_dim = _check_int("action_dim", action_dim, 1)
        self.chunk_size = _check_int("chunk_size", chunk_size, 2)
        self.control_hz = _check_float("control_hz", control_hz, positive=True)
        self.siren_layers = _check_int("siren_layers", siren_layers, 1)
        self.siren_width = _check_int("siren_width", siren_width, 1)
        self.siren_omega0 = _check_float("siren_omega0", siren_omega0, positive=True)
        self.modulation_groups = _check_int("modulation_groups", modulation_groups, 1)
        if self.siren_width % self.modulation_groups != 0:
            raise ValueError(
                f"NiafConfig: `modulation_groups` ({self.modulation_groups}) must divide `siren_width` "
                f"({self.siren_width}): each of the G frequency tokens modulates siren_width/G rows."
            )
        if not isinstance(use_state, bool):
            raise ValueError(f"NiafConfig: `use_state` must be a bool, got {use_state!r}.")
        self.use_state = use_state
        if state_dim is not None:
            state_dim = _check_int("state_dim", state_dim, 1)
        if use_state and state_dim is None:
            raise ValueError("NiafConfig: `state_dim` is required when `use_state=True`.")
        self.state_dim = state_dim
        if not isinstance(state_to_queries, bool):
            raise ValueError(f"NiafConfig: `state_to_queries` must be a bool, got {state_to_queries!r}.")
        if state_to_queries and not use_state:
            raise ValueError("NiafConfig: `state_to_queries=True` needs `use_state=True`.")
        self.state_to_queries = state_to_queries
        self.num_cameras = _check_int("num_cameras", num_cameras, 1)
        self.image_keypoints = _check_int("image_keypoints", image_keypoints, 0)
        self.image_keypoint_channels = _check_int("image_keypoint_channels", image_keypoint_channels, 1)
        self.normalization_mode = check_mode(normalization_mode, "NiafConfig")
        self.unnormalized_action_dims = self._check_dims(unnormalized_action_dims)
        self.normalization_stats = self._check_stats(normalization_stats)
        self.relative_action_state_indices = self._check_relative_indices(relative_action_state_indices)
        self.loss_weight_position = _check_float("loss_weight_position", loss_weight_position, non_negative=True)
        self.loss_weight_velocity = _check_float("loss_weight_velocity", loss_weight_velocity, non_negative=True)
        self.loss_weight_jerk = _check_float("loss_weight_jerk", loss_weight_jerk, non_negative=True)
        self.query_init_std = _check_float("query_init_std", query_init_std, positive=True)
        super().__init__(**kwargs)

    # ----------------------------------------------------------------------------------------------------
    # Derived quantities
    # ----------------------------------------------------------------------------------------------------
    @property
    def num_queries(self) -> int:
        """Q = L·(G+1): per SIREN layer, G frequency tokens and one bias token."""
        return self.siren_layers * (self.modulation_groups + 1)

    @property
    def chunk_duration(self) -> float:
        """T = (K-1)/f in seconds: τ = -1 is the first action of the chunk, τ = +1 the K-th."""
        return (self.chunk_size - 1) / self.control_hz

    @property
    def tau_to_seconds(self) -> float:
        """d/dt = (2/T) d/dτ: the factor that turns a τ-derivative into a per-second derivative."""
        return 2.0 / self.chunk_duration

    @property
    def hidden_size(self) -> int:
        """Hidden size d of the backbone's language model (the width of the query outputs Z)."""
        cfg = self.backbone_config
        text = getattr(cfg, "text_config", None)
        for source in (text, cfg):
            if source is None:
                continue
            for name in ("hidden_size", "d_model"):
                value = getattr(source, name, None)
                if isinstance(value, int):
                    return value
        raise ValueError(
            f"NiafConfig: cannot find the hidden size of backbone `{cfg.model_type}` "
            "(looked for text_config.hidden_size / d_model and hidden_size / d_model)."
        )

    # ----------------------------------------------------------------------------------------------------
    # Validation helpers
    # ----------------------------------------------------------------------------------------------------
    @staticmethod
    def _build_backbone_config(value: dict | PretrainedConfig | None) -> PretrainedConfig:
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING

        if value is None:
            logger.info("NiafConfig: no `backbone_config` given, using a default Florence-2 config.")
            return CONFIG_MAPPING[_DEFAULT_BACKBONE_TYPE]()
        if isinstance(value, PretrainedConfig):
            return value
        if isinstance(value, dict):
            model_type = value.get("model_type")
            if model_type is None:
                raise ValueError("NiafConfig: `backbone_config` dict needs a `model_type` key (e.g. 'florence2').")
            if model_type not in CONFIG_MAPPING:
                raise ValueError(
                    f"NiafConfig: `backbone_config.model_type` {model_type!r} is not a transformers model type "
                    "known to this installation; upgrade transformers or choose another backbone."
                )
            kwargs = {k: v for k, v in value.items() if k != "model_type"}
            return CONFIG_MAPPING[model_type](**kwargs)
        raise ValueError(
            f"NiafConfig: `backbone_config` must be a dict or a PretrainedConfig, got {type(value).__name__}."
        )

    def _check_dims(self, dims: list[int] | None) -> list[int]:
        if dims is None:
            return []
        if not isinstance(dims, (list, tuple)):
            raise ValueError(f"NiafConfig: `unnormalized_action_dims` must be a list of ints, got {dims!r}.")
        out = []
        for d in dims:
            if isinstance(d, bool) or not isinstance(d, int) or not 0 <= d < self.action_dim:
                raise ValueError(
                    f"NiafConfig: `unnormalized_action_dims` entries must be ints in [0, {self.action_dim}), got {d!r}."
                )
            out.append(d)
        if len(set(out)) != len(out):
            raise ValueError(f"NiafConfig: `unnormalized_action_dims` has duplicates: {out}.")
        return sorted(out)

    def _check_relative_indices(self, indices: list[int | None] | None) -> list[int | None] | None:
        if indices is not None and not self.use_state:
            raise ValueError(
                "NiafConfig: `relative_action_state_indices` needs `use_state=True` and `state_dim`: the offset added "
                "back at inference is the robot state given to the model."
            )
        try:
            return check_relative_action_state_indices(indices, self.action_dim, self.state_dim or 0)
        except ValueError as err:
            raise ValueError(f"NiafConfig: {err}") from None

    def _check_stats(self, stats: dict | None) -> dict[str, dict[str, list[float]]] | None:
        return check_normalization_stats(
            stats, self.normalization_mode, {"action": self.action_dim, "state": self.state_dim}, "NiafConfig"
        )

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        output["num_queries"] = self.num_queries  # informative only; recomputed on load
        return output


__all__ = [
    "HEAD_LIMITS",
    "MIN_TRANSFORMERS_VERSION",
    "NiafConfig",
    "NORMALIZATION_MODES",  # re-exported from normalization.py, their one home
    "STATS_KEYS",
    "check_relative_action_state_indices",
    "check_transformers_version",
]
