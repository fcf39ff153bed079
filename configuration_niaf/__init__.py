"""NIAF configuration (no torch import of its own)."""

from .configuration_niaf import (
    NORMALIZATION_MODES,
    STATS_KEYS,
    NiafConfig,
    check_relative_action_state_indices,
)

__all__ = ["NiafConfig", "NORMALIZATION_MODES", "STATS_KEYS", "check_relative_action_state_indices"]
