"""NIAF configuration and physical units (no torch import).

``normalization`` (numpy only) is the one home of the units; ``configuration_niaf`` holds `NiafConfig`, which
imports transformers. The names below are resolved on first use, so that ``configuration_niaf.normalization``
imports without transformers (niaf-data's statistics pass, a deployment process).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "NiafConfig": "configuration_niaf",
    "NORMALIZATION_MODES": "normalization",
    "STATS_KEYS": "normalization",
    "check_relative_action_state_indices": "normalization",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


__all__ = ["NiafConfig", "NORMALIZATION_MODES", "STATS_KEYS", "check_relative_action_state_indices"]
