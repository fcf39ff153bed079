"""The metadata of a LeRobot v3.0 folder (``meta/info.json``, ``meta/tasks.parquet``, ``meta/episodes``) and the
velocity plan (which column gives each action dimension's velocity).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(f"{__package__}.lerobot_v3")  # the module this code was split from: logging set-ups keep working


CODEBASE_VERSION = "v3.0"
IMAGE_PREFIX = "observation.images."


def _flat_names(names: Any) -> list[str] | None:
    """A feature's ``names`` as a flat list of strings (flat list, nested list or {"motors": [...]})."""
    if names is None:
        return None
    if isinstance(names, Mapping):
        flat: list[str] = []
        for v in names.values():
            flat.extend(_flat_names(v) or [])
        return flat
    if isinstance(names, (list, tuple)):
        flat = []
        for v in names:
            if isinstance(v, (list, tuple, Mapping)):
                flat.extend(_flat_names(v) or [])
            else:
                flat.append(str(v))
        return flat
    return None


@dataclass
class LeRobotV3Meta:
    """The metadata of a LeRobot v3.0 folder.

    Attributes:
        root: dataset root.
        info: parsed ``meta/info.json``.
        fps: the control rate used for the episodes (``info["fps"]`` unless overridden), Hz.
        info_fps: ``info["fps"]`` as written.
        tasks: task_index → task text.
        episodes: one dict per episode row of ``meta/episodes`` (sorted by ``episode_index``).
        image_keys / video_keys: ``observation.images.*`` features stored in the parquet / as MP4.
    """

    root: Path
    info: dict[str, Any]
    fps: float
    info_fps: float
    tasks: dict[int, str]
    episodes: list[dict[str, Any]]
    image_keys: list[str] = field(default_factory=list)
    video_keys: list[str] = field(default_factory=list)

    @property
    def features(self) -> dict[str, Any]:
        return self.info["features"]

    def names(self, key: str) -> list[str] | None:
        return _flat_names(self.features.get(key, {}).get("names"))

    def dim(self, key: str) -> int | None:
        feat = self.features.get(key)
        if feat is None:
            return None
        shape = feat.get("shape") or [1]
        return int(np.prod(shape))

    def frame_shape(self, key: str) -> tuple[int, int, int]:
        """(H, W, 3) of an image/video feature from its declared shape and names."""
        feat = self.features[key]
        shape = [int(s) for s in feat.get("shape", [])]
        names = [str(n).lower() for n in (_flat_names(feat.get("names")) or [])]
        if len(shape) != 3:
            raise ValueError(f"{self.root / 'meta/info.json'}: feature {key!r} shape {shape}; expected [H, W, C] or [C, H, W]")
        if names[:1] in (["channels"], ["channel"], ["c"]) or (shape[0] in (1, 3, 4) and shape[2] not in (1, 3, 4)):
            c, h, w = shape
        else:
            h, w, c = shape
        if c != 3:
            raise ValueError(f"{self.root / 'meta/info.json'}: feature {key!r} has {c} channels; expected RGB (3)")
        return (h, w, 3)


def read_info(root: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse and check ``meta/info.json`` (v3.0 only; v2.x gets a conversion hint)."""
    root = Path(root)
    path = root / "meta" / "info.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {root} is not a LeRobot dataset folder (expected meta/info.json)")
    try:
        info = json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"{path}: invalid JSON: {err}") from err
    version = str(info.get("codebase_version", ""))
    if not version.startswith("v3"):
        raise ValueError(
            f"{path}: codebase_version {version!r}; this reader handles LeRobotDataset v3.0. Convert a v2.x dataset "
            "with `python -m lerobot.scripts.convert_dataset_v21_to_v30 --repo-id=...`"
        )
    for key in ("fps", "features"):
        if key not in info:
            raise ValueError(f"{path}: missing key {key!r}")
    fps = info["fps"]
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"{path}: 'fps' must be a positive number, got {fps!r}")
    if "action" not in info["features"]:
        raise ValueError(f"{path}: no 'action' feature; features are {sorted(info['features'])}")
    return info


def read_tasks(root: str | os.PathLike[str]) -> dict[int, str]:
    """``meta/tasks.parquet`` as task_index → text; the text column is ``task`` or ``__index_level_0__``."""
    import pyarrow.parquet as pq  # heavy: pyarrow

    path = Path(root) / "meta" / "tasks.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (LeRobot v3 datasets keep their task texts there)")
    table = pq.read_table(path)
    cols = table.column_names
    text_col = next((c for c in ("task", "__index_level_0__") if c in cols), None)
    if text_col is None or "task_index" not in cols:
        raise ValueError(f"{path}: expected columns 'task_index' and 'task' (or '__index_level_0__'), found {cols}")
    return {int(i): str(t) for i, t in zip(table["task_index"].to_pylist(), table[text_col].to_pylist(), strict=True)}


def read_episodes_meta(root: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All rows of ``meta/episodes/*/*.parquet`` as dicts, sorted by ``episode_index``."""
    import pyarrow.parquet as pq  # heavy: pyarrow

    root = Path(root)
    files = sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
    if not files:
        raise FileNotFoundError(f"{root / 'meta' / 'episodes'}: no chunk-*/file-*.parquet episode files")
    rows: list[dict[str, Any]] = []
    listed: dict[int, Path] = {}
    for f in files:
        table = pq.read_table(f, columns=None)
        keep = [c for c in table.column_names if not c.startswith("stats/")]
        for r in table.select(keep).to_pylist():
            for key in ("episode_index", "length"):
                if key not in r:
                    raise ValueError(f"{f}: column {key!r} missing; found {sorted(r)}")
            e = int(r["episode_index"])
            if e in listed:  # it would be read, chunked and trained on twice
                raise ValueError(
                    f"{f}: episode_index {e} is listed twice in meta/episodes (also in {listed[e].name}); "
                    "expected each episode once"
                )
            listed[e] = f
            rows.append(r)
    rows.sort(key=lambda r: int(r["episode_index"]))
    return rows


def open_lerobot_v3(root: str | os.PathLike[str], fps_override: float | None = None) -> LeRobotV3Meta:
    """Read the metadata of a LeRobot v3.0 folder (no frame data)."""
    root = Path(root).expanduser().resolve()
    info = read_info(root)
    info_fps = float(info["fps"])
    fps = info_fps
    if fps_override is not None:
        fps = float(fps_override)
        if abs(fps - info_fps) > 1e-9:
            msg = (f"{root / 'meta/info.json'} says fps {info_fps:g} but fps_override={fps:g} Hz is used as the "
                   "true control rate (timestamps in the data are ignored)")
            logger.warning(msg)
            warnings.warn(msg, stacklevel=3)
    image_keys = [k for k, f in info["features"].items() if k.startswith(IMAGE_PREFIX) and f.get("dtype") == "image"]
    video_keys = [k for k, f in info["features"].items() if k.startswith(IMAGE_PREFIX) and f.get("dtype") == "video"]
    return LeRobotV3Meta(
        root=root, info=info, fps=fps, info_fps=info_fps, tasks=read_tasks(root),
        episodes=read_episodes_meta(root), image_keys=image_keys, video_keys=video_keys,
    )


def _base(name: str) -> str:
    return re.sub(r"\.(pos|vel|position|velocity)$", "", name)


def velocity_plan(meta: LeRobotV3Meta) -> tuple[str, np.ndarray] | str:
    """Where each action dimension's velocity comes from: ``(column, indices)`` or a reason string (none).

    ``column`` is ``"observation.velocity"`` or ``"observation.state"``; ``indices`` int64 [D] picks, for each
    action dimension, the matching dimension of that column.
    """
    d = meta.dim("action")
    action_names = meta.names("action")
    candidates: list[tuple[str, list[str] | None, list[int]]] = []
    if "observation.velocity" in meta.features:
        w = meta.dim("observation.velocity") or 0
        candidates.append(("observation.velocity", meta.names("observation.velocity"), list(range(w))))
    state_names = meta.names("observation.state")
    if state_names:
        vel_dims = [i for i, n in enumerate(state_names) if n.endswith(".vel")]
        if vel_dims:
            candidates.append(("observation.state", [state_names[i] for i in vel_dims], vel_dims))
    if not candidates:
        return "no 'observation.velocity' feature and no '*.vel' dimension in observation.state"
    reasons = []
    for column, names, dims in candidates:
        if action_names and names and len(names) == len(dims):
            lookup = {_base(n): dims[j] for j, n in enumerate(names)}
            missing = [a for a in action_names if _base(a) not in lookup]
            if not missing:
                return column, np.array([lookup[_base(a)] for a in action_names], dtype=np.int64)
            if len(missing) == len(action_names) and len(dims) == d:
                logger.warning("%s: no action name matches a name of %s; pairing the %d dims by position",
                               meta.root / "meta/info.json", column, d)
                return column, np.array(dims, dtype=np.int64)
            reasons.append(f"{column}: no velocity for action dims {missing}")
        elif len(dims) == d:
            return column, np.array(dims, dtype=np.int64)
        else:
            reasons.append(f"{column}: {len(dims)} velocity dims for {d} action dims and no names to match them")
    return "; ".join(reasons)
