"""Per-dimension statistics of actions, states and velocities in LeRobot's ``stats.json`` layout: the datasets' side.

The statistics themselves (:class:`RunningStats`: one streaming pass, exact moments, exact or reservoir-sampled
quantiles; the keys and quantile list) are ``configuration_niaf.normalization``'s, the one home of units, which
the processor's ``fit_stats`` uses too. This module feeds it episodes and chunk datasets and reads / writes
LeRobot's ``stats.json``.

``stats.json`` maps a feature name (``"action"``, ``"observation.state"``, ``"observation.velocity"``,
``"observation.images.<cam>"``) to ``{"min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90",
"q99"}``, each a list: shape [D] for vectors, [3, 1, 1] per channel for images (values in [0, 1]), and
``count`` = [number of frames].
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from configuration_niaf.normalization import RunningStats, to_relative

from .episodes import Episode

logger = logging.getLogger(__name__)

RELATIVE_KEY = "model.relative_action_state_indices"

EPISODE_FEATURES: dict[str, str] = {
    "actions": "action",
    "states": "observation.state",
    "velocities": "observation.velocity",
}
"""Episode attribute → LeRobot feature name in stats.json."""


class EpisodeStats:
    """Accumulates stats.json entries for actions, states, velocities (and optionally images) of episodes.

    Args:
        image_pixels: pixels sampled per frame per camera for image statistics (0 = no image stats).
            Image statistics are per channel over those pixels, in [0, 1], shaped [3, 1, 1].
        kwargs: passed to every :class:`RunningStats`.
    """

    def __init__(self, image_pixels: int = 0, **kwargs: Any) -> None:
        self.image_pixels = image_pixels
        self.kwargs = kwargs
        self.acc: dict[str, RunningStats] = {}
        self.frames = 0

    def _add(self, name: str, rows: np.ndarray) -> None:
        if name not in self.acc:
            self.acc[name] = RunningStats(rows.shape[1], feature=name, **self.kwargs)
        self.acc[name].update(rows)

    def update(self, episode: Episode) -> None:
        """Add every step of a (validated) episode."""
        self.frames += len(episode)
        for attr, name in EPISODE_FEATURES.items():
            value = getattr(episode, attr)
            if value is not None:
                self._add(name, np.asarray(value))
        if self.image_pixels > 0:
            for cam, frames in episode.images.items():
                h, w = frames.shape[1:3]
                step = max(1, int(math.sqrt(h * w / self.image_pixels)))
                rows = [np.asarray(frames[t])[::step, ::step].reshape(-1, 3) for t in range(len(frames))]
                self._add(f"observation.images.{cam}", np.concatenate(rows).astype(np.float64) / 255.0)

    def result(self) -> dict[str, dict[str, list]]:
        out: dict[str, dict[str, list]] = {}
        for name, acc in self.acc.items():
            res = acc.result()
            if name.startswith("observation.images."):
                res = {k: (v if k == "count" else [[[x]] for x in v]) for k, v in res.items()}
                res["count"] = [self.frames]  # frames, not pixels
            out[name] = res
        return out


def stats_from_episodes(episodes: Iterable[Episode], image_pixels: int = 0, **kwargs: Any) -> dict[str, dict[str, list]]:
    """stats.json content for the given (validated) episodes, in one pass."""
    acc = EpisodeStats(image_pixels=image_pixels, **kwargs)
    for ep in episodes:
        acc.update(ep)
    return acc.result()


def stats_from_chunk_dataset(
    dataset: Any,
    batch_size: int = 4096,
    relative_action_state_indices: Sequence[int | None] | None = None,
    **kwargs: Any,
) -> dict[str, dict[str, list]]:
    """stats.json entries from a chunk dataset (:mod:`niaf_train.data.chunking`), without decoding images.

    Uses, per row, the first chunk point (never padded) of ``action`` and ``velocity`` and the row's
    ``observation.state``: the statistics of the frames the dataset samples (every frame at stride 1).

    With ``relative_action_state_indices`` (``configuration_niaf.normalization.to_relative``) the ``action`` entry is the
    statistics of the delta targets ``a_i(t_k) - state_s(t_obs)`` at **every real (non-padded) chunk point**:
    a delta grows with the horizon k, and its first point alone (about 0) would understate the range the
    model has to fit. ``observation.state`` and ``observation.velocity`` are unchanged.
    """
    columns = {"action": "action", "observation.state": "observation.state", "velocity": "observation.velocity"}
    relative = relative_action_state_indices is not None
    if relative and "observation.state" not in dataset.column_names:
        raise ValueError(
            "stats_from_chunk_dataset: relative_action_state_indices needs an 'observation.state' column; the dataset "
            f"has {dataset.column_names}"
        )
    present = [c for c in columns if c in dataset.column_names]
    if "action" not in present:
        raise ValueError(f"stats_from_chunk_dataset: no 'action' column in {dataset.column_names}")
    read = present + (["action_is_pad"] if relative and "action_is_pad" in dataset.column_names else [])
    acc: dict[str, RunningStats] = {}
    view = dataset.select_columns(read).with_format("numpy")
    for start in range(0, len(view), batch_size):
        batch = view[start : start + batch_size]
        for col in present:
            rows = np.asarray(batch[col], dtype=np.float64)
            if col == "action" and relative:
                deltas = to_relative(rows, batch["observation.state"], relative_action_state_indices, name=RELATIVE_KEY)
                real = ~np.asarray(batch["action_is_pad"], dtype=bool) if "action_is_pad" in batch else None
                rows = deltas[real] if real is not None else deltas.reshape(-1, deltas.shape[-1])
            elif col in ("action", "velocity"):
                rows = rows[:, 0, :]
            name = columns[col]
            if name not in acc:
                acc[name] = RunningStats(rows.shape[1], feature=name, **kwargs)
            acc[name].update(rows)
    return {name: a.result() for name, a in acc.items()}


def write_stats_json(path: str | os.PathLike[str], stats: Mapping[str, Mapping[str, Any]], overwrite: bool = False) -> Path:
    """Write ``stats`` as JSON; refuse to replace an existing file unless ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(stats, indent=2))
    return path


def merge_stats_json(path: str | os.PathLike[str], stats: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Update an existing ``stats.json`` with ``stats``: computed features replace their entries, the others
    (image statistics, features this pass did not compute) are kept. The previous file is first copied to
    ``stats.json.bak`` (``.bak.1``, ``.bak.2``... when that exists) and the new one is written atomically.

    Returns ``{"written", "backup", "replaced", "kept"}``. Raises ValueError naming the file when the existing
    one is not a JSON object (nothing is written then).
    """
    path = Path(path)
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read the existing stats JSON to merge into ({err}); move it away first") from None
    if not isinstance(previous, dict):
        raise ValueError(f"{path}: expected a JSON object feature -> stats, got {type(previous).__name__}; move it away first")
    backup = path.with_name(path.name + ".bak")
    n = 0
    while backup.exists():
        n += 1
        backup = path.with_name(f"{path.name}.bak.{n}")
    shutil.copy2(path, backup)
    merged = {**previous, **stats}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(merged, indent=2))
    os.replace(tmp, path)
    return {
        "written": str(path),
        "backup": str(backup),
        "replaced": sorted(set(stats) & set(previous)),
        "kept": sorted(set(previous) - set(stats)),
    }


def read_stats_json(path: str | os.PathLike[str]) -> dict[str, dict[str, np.ndarray]]:
    """Read a LeRobot ``stats.json``; values become float64 arrays. Checks that each entry is a dict of lists."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read stats JSON: {err}") from err
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object feature -> stats, got {type(raw).__name__}")
    out: dict[str, dict[str, np.ndarray]] = {}
    for feature, entry in raw.items():
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: feature {feature!r}: expected an object of statistics, got {type(entry).__name__}")
        out[feature] = {}
        for key, value in entry.items():
            try:
                out[feature][key] = np.asarray(value, dtype=np.float64)
            except (TypeError, ValueError) as err:
                raise ValueError(f"{path}: feature {feature!r} key {key!r}: not a numeric list ({err})") from err
    return out


def to_normalization_stats(stats: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, list[float]]]:
    """Map stats.json features to ``NiafConfig.normalization_stats`` (``{"action": ..., "state": ...}``)."""
    out: dict[str, dict[str, list[float]]] = {}
    for src, dst in (("action", "action"), ("observation.state", "state")):
        if src in stats:
            out[dst] = {k: np.asarray(v, dtype=np.float64).reshape(-1).tolist() for k, v in stats[src].items() if k != "count"}
    return out


__all__ = [
    "EPISODE_FEATURES",
    "EpisodeStats",
    "merge_stats_json",
    "read_stats_json",
    "stats_from_chunk_dataset",
    "stats_from_episodes",
    "to_normalization_stats",
    "write_stats_json",
]
