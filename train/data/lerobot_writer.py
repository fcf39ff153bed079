"""Writing episodes as a LeRobot v3.0 folder: info.json, stats.json, tasks.parquet, the episodes parquet and data
parquet with images as PNG {bytes, path} structs (no video encoding), optional ``observation.velocity``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from configuration_niaf.normalization import RunningStats

from .chunk_builder import encode_png
from .episodes import Episode
from .lerobot_meta import CODEBASE_VERSION, IMAGE_PREFIX, _base
from .lerobot_paths import DEFAULT_DATA_PATH
from .stats import EpisodeStats, write_stats_json

logger = logging.getLogger(f"{__package__}.lerobot_v3")  # the module this code was split from: logging set-ups keep working


def _episode_stats_columns(prefix: str, values: np.ndarray) -> dict[str, Any]:
    acc = RunningStats(values.shape[1])
    acc.update(values)
    return {f"stats/{prefix}/{k}": v for k, v in acc.result().items()}


def write_lerobot_dataset(
    root: str | os.PathLike[str],
    episodes: Iterable[Episode],
    fps: float,
    robot_type: str | None = None,
    *,
    action_names: Sequence[str] | None = None,
    state_names: Sequence[str] | None = None,
    velocity_names: Sequence[str] | None = None,
    data_files_size_in_mb: float = 100.0,
    chunks_size: int = 1000,
    image_stats_pixels: int = 1024,
    total_episodes: int | None = None,
    extra_info: Callable[[], Mapping[str, Any]] | Mapping[str, Any] | None = None,
) -> Path:
    """Write episodes as a LeRobot v3.0 folder with PNG images inside the data parquet.

    Args:
        root: output folder; must not exist or be empty (never overwritten).
        episodes: validated on the fly; all must share fps, cameras, shapes and dimensions.
        fps: the control rate written to ``info.json`` (must equal every ``Episode.fps``), Hz.
        robot_type: ``info.json``'s ``robot_type``.
        action_names, state_names, velocity_names: per-dimension names (default ``a0..``, ``s0..``; velocity
            names default to the action names with ``.vel``). Velocities are written as
            ``observation.velocity``, one value per action dimension, per second.
        data_files_size_in_mb: start a new data file once a file holds about this much.
        chunks_size: files per ``chunk-XXX`` folder.
        image_stats_pixels: pixels per frame sampled for image statistics in stats.json.
        total_episodes: only for the progress bar.
        extra_info: more top-level ``info.json`` entries (e.g. the provenance of generated data), or a
            function returning them, called once all episodes are written.

    Returns:
        ``root``. Files: ``meta/info.json``, ``meta/stats.json``, ``meta/tasks.parquet``,
        ``meta/episodes/chunk-000/file-000.parquet``, ``data/chunk-XXX/file-XXX.parquet``.
    """
    import datasets  # heavy: datasets (pyarrow, fsspec)
    import pandas as pd  # heavy: pandas
    import pyarrow as pa  # heavy: pyarrow
    import pyarrow.parquet as pq  # heavy: pyarrow
    from tqdm.auto import tqdm  # lazy: tqdm.auto probes for notebook support

    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root} exists and is not an empty folder; refusing to overwrite it")
    fps = float(fps)
    if not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"write_lerobot_dataset: fps must be a positive number, got {fps}")
    created = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    tasks: dict[str, int] = {}
    ep_rows: list[dict[str, Any]] = []
    stats = EpisodeStats(image_pixels=image_stats_pixels)
    layout: dict[str, Any] | None = None
    features: Any = None
    writer: Any = None
    file_index = chunk_index = 0
    file_bytes = 0.0
    global_index = 0
    bar = tqdm(total=total_episodes, desc=f"writing {root.name}", unit="ep", leave=False)

    def open_writer() -> Any:
        path = root / DEFAULT_DATA_PATH.format(chunk_index=chunk_index, file_index=file_index)
        path.parent.mkdir(parents=True, exist_ok=True)
        return pq.ParquetWriter(path, features.arrow_schema)

    try:
        for n_ep, ep in enumerate(episodes):
            ep.validate(None if layout is None else layout["images"])
            if abs(float(ep.fps) - fps) > 1e-9 * fps:
                raise ep.error("fps", f"{ep.fps} Hz, but the dataset is written at fps={fps}")
            this = {"images": {c: tuple(f.shape[1:]) for c, f in ep.images.items()}, "action": ep.action_dim,
                    "state": ep.state_dim, "velocity": ep.velocities is not None}
            if layout is None:
                layout = this
                d, s = layout["action"], layout["state"]
                a_names = list(action_names) if action_names is not None else [f"a{i}" for i in range(d)]
                s_names = (list(state_names) if state_names is not None else [f"s{i}" for i in range(s)]) if s else None
                v_names = (list(velocity_names) if velocity_names is not None
                           else [f"{_base(n)}.vel" for n in a_names]) if layout["velocity"] else None
                for what, nm, dim in (("action_names", a_names, d), ("state_names", s_names, s), ("velocity_names", v_names, d)):
                    if nm is not None and len(nm) != dim:
                        raise ValueError(f"write_lerobot_dataset: {what} has {len(nm)} entries, expected {dim}")
                feats: dict[str, Any] = {"action": datasets.List(datasets.Value("float32"), length=d)}
                if s:
                    feats["observation.state"] = datasets.List(datasets.Value("float32"), length=s)
                if layout["velocity"]:
                    feats["observation.velocity"] = datasets.List(datasets.Value("float32"), length=d)
                for cam in layout["images"]:
                    feats[IMAGE_PREFIX + cam] = datasets.Image()
                for k, dt in (("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"),
                              ("index", "int64"), ("task_index", "int64")):
                    feats[k] = datasets.Value(dt)
                features = datasets.Features(feats)
                names = {"action": a_names, "observation.state": s_names, "observation.velocity": v_names}
                writer = open_writer()
            elif this != layout:
                raise ep.error("layout", f"{this} differs from the first episode's {layout}")
            T = len(ep)
            task = ep.instruction
            if task not in tasks:
                tasks[task] = len(tasks)
            cols: dict[str, Any] = {"action": pa.FixedSizeListArray.from_arrays(pa.array(ep.actions.reshape(-1)), ep.action_dim)}
            if ep.states is not None:
                cols["observation.state"] = pa.FixedSizeListArray.from_arrays(pa.array(ep.states.reshape(-1)), ep.state_dim)
            if ep.velocities is not None:
                cols["observation.velocity"] = pa.FixedSizeListArray.from_arrays(pa.array(ep.velocities.reshape(-1)), ep.action_dim)
            for cam, frames in ep.images.items():
                pngs = [encode_png(np.asarray(frames[t])) for t in range(T)]
                file_bytes += sum(len(b) for b in pngs)
                cols[IMAGE_PREFIX + cam] = pa.StructArray.from_arrays(
                    [pa.array(pngs, pa.binary()), pa.array([f"frame-{t:06d}.png" for t in range(T)], pa.string())],
                    names=["bytes", "path"],
                )
            cols["timestamp"] = pa.array((np.arange(T) / fps).astype(np.float32))
            cols["frame_index"] = pa.array(np.arange(T, dtype=np.int64))
            cols["episode_index"] = pa.array(np.full(T, n_ep, np.int64))
            cols["index"] = pa.array(np.arange(global_index, global_index + T, dtype=np.int64))
            cols["task_index"] = pa.array(np.full(T, tasks[task], np.int64))
            writer.write_table(pa.Table.from_pydict(cols, schema=features.arrow_schema))
            file_bytes += 4.0 * T * (ep.action_dim * 2 + (ep.state_dim or 0) + 6)
            row = {"episode_index": n_ep, "tasks": [task], "length": T, "data/chunk_index": chunk_index,
                   "data/file_index": file_index, "dataset_from_index": global_index,
                   "dataset_to_index": global_index + T, "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0}
            row.update(_episode_stats_columns("action", ep.actions))
            if ep.states is not None:
                row.update(_episode_stats_columns("observation.state", ep.states))
            if ep.velocities is not None:
                row.update(_episode_stats_columns("observation.velocity", ep.velocities))
            ep_rows.append(row)
            stats.update(ep)
            global_index += T
            bar.update(1)
            if file_bytes >= data_files_size_in_mb * 1e6:
                writer.close()
                file_bytes = 0.0
                file_index += 1
                if file_index >= chunks_size:
                    chunk_index, file_index = chunk_index + 1, 0
                writer = open_writer()
        bar.close()
        if layout is None:
            raise ValueError("write_lerobot_dataset: no episodes given")
        writer.close()
        writer = None
        # a trailing file opened after the last roll-over holds no rows: remove it
        last = root / DEFAULT_DATA_PATH.format(chunk_index=chunk_index, file_index=file_index)
        if not any(r["data/file_index"] == file_index and r["data/chunk_index"] == chunk_index for r in ep_rows):
            last.unlink()
        (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(ep_rows), root / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
        task_df = pd.DataFrame({"task_index": list(tasks.values())}, index=pd.Index(list(tasks), name="task"))
        task_df.to_parquet(root / "meta" / "tasks.parquet")
        write_stats_json(root / "meta" / "stats.json", stats.result())
        info_features: dict[str, Any] = {
            "action": {"dtype": "float32", "shape": [layout["action"]], "names": names["action"]},
        }
        if layout["state"]:
            info_features["observation.state"] = {"dtype": "float32", "shape": [layout["state"]],
                                                  "names": names["observation.state"]}
        if layout["velocity"]:
            info_features["observation.velocity"] = {"dtype": "float32", "shape": [layout["action"]],
                                                     "names": names["observation.velocity"],
                                                     "info": {"unit": "action units per second"}}
        for cam, shape in layout["images"].items():
            info_features[IMAGE_PREFIX + cam] = {"dtype": "image", "shape": list(shape),
                                                 "names": ["height", "width", "channels"]}
        for k, dt in (("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"),
                      ("index", "int64"), ("task_index", "int64")):
            info_features[k] = {"dtype": dt, "shape": [1], "names": None}
        info = {
            "codebase_version": CODEBASE_VERSION, "robot_type": robot_type, "total_episodes": len(ep_rows),
            "total_frames": global_index, "total_tasks": len(tasks), "chunks_size": chunks_size,
            "data_files_size_in_mb": data_files_size_in_mb, "video_files_size_in_mb": 200,
            "fps": int(fps) if float(fps).is_integer() else fps, "splits": {"train": f"0:{len(ep_rows)}"},
            "data_path": DEFAULT_DATA_PATH, "video_path": None, "features": info_features,
        }
        extra = extra_info() if callable(extra_info) else extra_info
        for key, value in (extra or {}).items():
            if key in info:
                raise ValueError(f"write_lerobot_dataset: extra_info key {key!r} would replace a standard info.json entry")
            info[key] = value
        (root / "meta" / "info.json").write_text(json.dumps(info, indent=4))
    except BaseException:
        if writer is not None:
            writer.close()
        bar.close()
        # leave nothing half-written behind: the folder was absent or empty when we started
        shutil.rmtree(root, ignore_errors=True)
        if not created:
            root.mkdir(parents=True, exist_ok=True)
        raise
    logger.info("wrote %d episodes, %d frames to %s", len(ep_rows), global_index, root)
    return root
