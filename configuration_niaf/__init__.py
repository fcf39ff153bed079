"""NIAF configuration (no torch import of its own)."""

from .configuration_niaf import NORMALIZATION_MODES, STATS_KEYS, NiafConfig

__all__ = ["NiafConfig", "NORMALIZATION_MODES", "STATS_KEYS"]
