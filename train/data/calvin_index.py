"""The index files of a CALVIN split, read without executing anything from them: the language annotations
(``lang_annotations/auto_lang_ann.npy``, a pickle read by the restricted unpickler), the contiguous segments
(``ep_start_end_ids.npy``), the normalisation statistics (``statistics.yaml``), and which folder is the split."""

from __future__ import annotations

from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from .safe_pickle import safe_load_npy

LANG_FILE = "auto_lang_ann.npy"
"""The language annotation file of a split's ``lang_annotations`` folder."""


@dataclass
class CalvinLanguage:
    """The language annotations of a split.

    Attributes:
        path: the file they were read from.
        ann: N instructions.
        task: N task ids (e.g. ``"open_drawer"``); empty strings if the file has none.
        indx: int64 [N, 2] inclusive (start, end) global frame ids.
    """

    path: Path
    ann: list[str]
    task: list[str]
    indx: np.ndarray = field(repr=False)

    def __len__(self) -> int:
        return len(self.ann)


def read_calvin_language(
    split_dir: str | PathLike[str], lang_folder: str = "lang_annotations"
) -> CalvinLanguage:
    """Read ``<split_dir>/<lang_folder>/auto_lang_ann.npy`` without executing anything from it.

    Raises:
        FileNotFoundError: the file is missing.
        UnsafePickleError: the pickle asks for anything but numpy arrays and plain data.
        ValueError: the dict lacks ``language.ann`` / ``info.indx`` or their lengths disagree (names the key).
    """
    path = Path(split_dir) / lang_folder / LANG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: language annotation file not found (needed for mode='lang')")
    array = safe_load_npy(path)
    content = array.item() if array.shape == () else None
    if not isinstance(content, dict):
        raise ValueError(
            f"{path}: expected a pickled dict with 'language' and 'info', got {type(content).__name__}"
        )

    def get(section: str, key: str, required: bool = True) -> Any:
        sub = content.get(section)
        if not isinstance(sub, dict) or key not in sub:
            if required:
                raise ValueError(
                    f"{path}: key '{section}.{key}' missing; expected the CALVIN annotation layout"
                )
            return None
        return sub[key]

    ann = [str(a) for a in get("language", "ann")]
    task_raw = get("language", "task", required=False)
    task = [str(t) for t in task_raw] if task_raw is not None else [""] * len(ann)
    try:
        indx = np.asarray([(int(s), int(e)) for s, e in get("info", "indx")], dtype=np.int64).reshape(-1, 2)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{path}: key 'info.indx': expected a list of (start, end) frame ids ({exc})"
        ) from exc
    if not (len(ann) == len(task) == len(indx)):
        raise ValueError(
            f"{path}: 'language.ann' has {len(ann)} entries, 'language.task' {len(task)}, 'info.indx' {len(indx)}; "
            "expected one of each per annotation"
        )
    bad = np.flatnonzero(indx[:, 1] < indx[:, 0])
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{path}: key 'info.indx'[{i}] = {tuple(indx[i])}: end before start")
    return CalvinLanguage(path=path, ann=ann, task=task, indx=indx)


def read_calvin_segments(split_dir: str | PathLike[str]) -> np.ndarray:
    """``ep_start_end_ids.npy``: int64 [k, 2] of inclusive (first, last) frame ids of contiguous segments."""
    path = Path(split_dir) / "ep_start_end_ids.npy"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: segment index file not found")
    ids = safe_load_npy(path)
    if ids.ndim != 2 or ids.shape[1] != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(
            f"{path}: expected an integer array [k, 2] of (start, end) frame ids, got {ids.dtype} {ids.shape}"
        )
    ids = ids.astype(np.int64)
    bad = np.flatnonzero(ids[:, 1] < ids[:, 0])
    if bad.size:
        raise ValueError(f"{path}: row {int(bad[0])} = {tuple(ids[bad[0]])}: end before start")
    return ids


def read_calvin_statistics(path: str | PathLike[str]) -> dict[str, dict[str, np.ndarray]]:
    """Read a CALVIN ``statistics.yaml`` (a split folder or the file itself) with ``yaml.safe_load``.

    The file is plain YAML written by OmegaConf; ``_target_`` entries are ordinary string keys and nothing is
    instantiated. Both the list-of-transforms (``robot_obs: [{_target_: ..., mean, std}]``) and the flat mapping
    layouts are accepted, and both ``act_*_bound`` and ``action_*_bound`` spellings.

    Returns:
        ``{"robot_obs": {"mean": [15], "std": [15]}, "scene_obs": {...} (if present),
        "actions": {"min": [7], "max": [7]} (if present)}``, float64 arrays.
    """
    import yaml  # optional dependency: pyyaml

    path = Path(path)
    if path.is_dir():
        path = path / "statistics.yaml"
    try:
        with path.open("r", encoding="utf-8") as fh:
            raw = yaml.safe_load(fh)
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read CALVIN statistics ({exc})") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping at top level, got {type(raw).__name__}")
    stats: dict[str, dict[str, np.ndarray]] = {}
    for key in ("robot_obs", "scene_obs"):
        entry = raw.get(key)
        if entry is None:
            continue
        if isinstance(entry, list):
            entry = next((e for e in entry if isinstance(e, dict) and "mean" in e), None)
        if not isinstance(entry, dict) or "mean" not in entry or "std" not in entry:
            raise ValueError(f"{path}: key '{key}': expected a NormalizeVector entry with 'mean' and 'std'")
        stats[key] = {s: np.asarray(entry[s], dtype=np.float64) for s in ("mean", "std")}
    for prefix in ("act", "action"):
        lo, hi = raw.get(f"{prefix}_min_bound"), raw.get(f"{prefix}_max_bound")
        if lo is not None and hi is not None:
            stats["actions"] = {
                "min": np.asarray(lo, dtype=np.float64),
                "max": np.asarray(hi, dtype=np.float64),
            }
            break
    if "robot_obs" not in stats:
        raise ValueError(f"{path}: key 'robot_obs' missing; expected CALVIN statistics")
    return stats


def resolve_calvin_split(root: str | PathLike[str], split: str = "training") -> Path:
    """The folder holding the frames: ``root/split`` if it exists, else ``root`` itself if it holds frames."""
    root = Path(root)
    if (root / split).is_dir():
        return root / split
    if (root / "ep_start_end_ids.npy").is_file():
        return root
    raise FileNotFoundError(
        f"{root}: neither '{split}/' nor 'ep_start_end_ids.npy' found; expected a CALVIN split root (task_D_D) "
        "or one of its training/validation folders"
    )


__all__ = [
    "LANG_FILE",
    "CalvinLanguage",
    "read_calvin_language",
    "read_calvin_segments",
    "read_calvin_statistics",
    "resolve_calvin_split",
]
