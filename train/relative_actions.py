"""Relative ("delta") action targets: the one place where training turns absolute chunks into deltas.

With ``model.relative_action_state_indices`` (``NiafConfig.relative_action_state_indices``), action dim i of
a chunk becomes ``a_i(t_k) - state_s(t_obs)`` in physical units, s = ``indices[i]``, the state at the chunk's
observation time; dims whose entry is None stay absolute. The chunk cache on disk always stays absolute: the
statistics pass (:func:`niaf_train.data.stats.stats_from_chunk_dataset`), the batch collation
(``NiafProcessor`` with ``relative_action_state_indices``, called by :class:`niaf_train.training.collation.Collator`) and
the evaluation all use the same transform (``modeling_niaf.processing_niaf.relative_to_state``, which
:func:`to_relative_actions` wraps with checks), and the model adds the state back at inference.

Velocities need no change: a constant offset has no time derivative. An error against deltas equals the
error against absolute actions (the same offset is subtracted from prediction and reference).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

CONFIG_KEY = "model.relative_action_state_indices"


def check_relative_indices(
    indices: Sequence[int | None], action_dim: int, state_dim: int | None, name: str = CONFIG_KEY
) -> None:
    """Raise a ValueError naming ``name`` unless ``indices`` fits actions of ``action_dim`` and states of ``state_dim``.

    Args:
        indices: one entry per action dim: an int index into the state, or None (absolute dim).
        action_dim: D of the actions.
        state_dim: S of ``observation.state``; None when the data has no state.
    """
    from configuration_niaf import check_relative_action_state_indices

    if state_dim is None:
        raise ValueError(f"`{name}` is set but the dataset has no `observation.state` to take the deltas from.")
    check_relative_action_state_indices(indices, action_dim, state_dim, name=name)


def to_relative_actions(action: Any, state: Any, indices: Sequence[int | None]) -> np.ndarray:
    """Absolute action chunks → chunks relative to the state at the observation time (physical units).

    Args:
        action: [K, D] or [B, K, D] absolute actions (numpy or torch).
        state: [S] or [B, S] robot state at each chunk's observation time (physical units).
        indices: length D; ``indices[i]`` = s makes dim i ``action[..., i] - state[..., s]``; None keeps dim i.

    Returns:
        float64 numpy array of ``action``'s shape.
    """
    # the processor's own transform, so that there is one definition of the targets (imported here: this module
    # stays importable without torch/transformers for the statistics pass)
    from modeling_niaf.processing_niaf import relative_to_state

    return relative_to_state(action, state, indices, name=CONFIG_KEY)
