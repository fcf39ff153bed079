"""Synthetic data fixtures for the data-loader tests (shared by the data test modules).

Everything here is written by code paths independent of the package's writers: LeRobot v3 folders are
built with pyarrow/pandas directly from the format description (formats.md §3), so a reader test compares
the package's reader against a separately written file.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from niaf_train.episodes import Episode


def make_episode(
    episode_id: str = "0",
    length: int = 12,
    action_dim: int = 4,
    state_dim: int | None = 3,
    velocity: bool = True,
    cameras: Sequence[str] = ("top",),
    image_hw: tuple[int, int] = (16, 16),
    fps: float = 20.0,
    seed: int = 0,
    instruction: str = "pick up the block",
    index: int | None = None,
) -> Episode:
    """A random episode with float32 arrays and uint8 images (images differ frame to frame)."""
    rng = np.random.default_rng(seed)
    return Episode(
        episode_id=episode_id,
        source=f"memory://episode-{episode_id}",
        instruction=instruction,
        fps=fps,
        actions=rng.normal(size=(length, action_dim)).astype(np.float32),
        states=None if state_dim is None else rng.normal(size=(length, state_dim)).astype(np.float32),
        velocities=rng.normal(size=(length, action_dim)).astype(np.float32) if velocity else None,
        images={c: rng.integers(0, 256, size=(length, *image_hw, 3), dtype=np.uint8) for c in cameras},
        index=index,
    )


def _png(frame: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG")
    return buf.getvalue()


def write_lerobot_v3_fixture(
    root: Path,
    episodes: Sequence[dict],
    fps: float = 30.0,
    state_names: Sequence[str] | None = None,
    image_keys: Sequence[str] = ("observation.images.top",),
    velocity: bool = False,
    task_column: str = "__index_level_0__",
    episodes_per_data_file: int = 2,
    robot_type: str | None = "so101",
) -> Path:
    """Write a LeRobot v3.0 folder by hand (pyarrow only), with images as PNG structs in the data parquet.

    ``episodes``: dicts with ``action`` [T, D], ``state`` [T, S], optional ``velocity`` [T, S], ``images``
    {key: uint8 [T, H, W, 3]} and ``task`` (str). Returns ``root``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(root)
    (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
    (root / "data" / "chunk-000").mkdir(parents=True)
    tasks = sorted({e["task"] for e in episodes})
    task_index = {t: i for i, t in enumerate(tasks)}
    d = episodes[0]["action"].shape[1]
    s = episodes[0]["state"].shape[1]
    state_names = list(state_names) if state_names is not None else [f"j{i}.pos" for i in range(s)]
    hw = {k: episodes[0]["images"][k].shape[1:] for k in image_keys}

    def flist(n: int) -> pa.DataType:
        return pa.list_(pa.float32(), n)

    fields = [("action", flist(d)), ("observation.state", flist(s))]
    if velocity:
        fields.append(("observation.velocity", flist(s)))
    for k in image_keys:
        fields.append((k, pa.struct([("bytes", pa.binary()), ("path", pa.string())])))
    fields += [("timestamp", pa.float32()), ("frame_index", pa.int64()), ("episode_index", pa.int64()),
               ("index", pa.int64()), ("task_index", pa.int64())]
    schema = pa.schema(fields)

    ep_rows = []
    gidx = 0
    for file_index, start in enumerate(range(0, len(episodes), episodes_per_data_file)):
        cols: dict[str, list] = {name: [] for name, _ in fields}
        for e_i in range(start, min(start + episodes_per_data_file, len(episodes))):
            e = episodes[e_i]
            n = e["action"].shape[0]
            for t in range(n):
                cols["action"].append(e["action"][t].astype(np.float32).tolist())
                cols["observation.state"].append(e["state"][t].astype(np.float32).tolist())
                if velocity:
                    cols["observation.velocity"].append(e["velocity"][t].astype(np.float32).tolist())
                for k in image_keys:
                    cols[k].append({"bytes": _png(e["images"][k][t]), "path": f"frame-{t:06d}.png"})
                cols["timestamp"].append(t / fps)
                cols["frame_index"].append(t)
                cols["episode_index"].append(e_i)
                cols["index"].append(gidx + t)
                cols["task_index"].append(task_index[e["task"]])
            row = {"episode_index": e_i, "tasks": [e["task"]], "length": n, "data/chunk_index": 0,
                   "data/file_index": file_index, "dataset_from_index": gidx, "dataset_to_index": gidx + n,
                   "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0}
            ep_rows.append(row)
            gidx += n
        pq.write_table(pa.table(cols, schema=schema), root / "data" / "chunk-000" / f"file-{file_index:03d}.parquet")
    pq.write_table(pa.Table.from_pylist(ep_rows), root / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    pq.write_table(pa.table({task_column: tasks, "task_index": list(range(len(tasks)))}),
                   root / "meta" / "tasks.parquet")

    features = {
        "action": {"dtype": "float32", "shape": [d], "names": [f"a{i}" for i in range(d)]},
        "observation.state": {"dtype": "float32", "shape": [s], "names": state_names},
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        "frame_index": {"dtype": "int64", "shape": [1], "names": None},
        "episode_index": {"dtype": "int64", "shape": [1], "names": None},
        "index": {"dtype": "int64", "shape": [1], "names": None},
        "task_index": {"dtype": "int64", "shape": [1], "names": None},
    }
    if velocity:
        features["observation.velocity"] = {"dtype": "float32", "shape": [s], "names": state_names}
    for k in image_keys:
        features[k] = {"dtype": "image", "shape": [*hw[k]], "names": ["height", "width", "channels"]}
    info = {
        "codebase_version": "v3.0", "robot_type": robot_type, "total_episodes": len(episodes),
        "total_frames": gidx, "total_tasks": len(tasks), "chunks_size": 1000, "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 200, "fps": fps, "splits": {"train": f"0:{len(episodes)}"},
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet", "video_path": None,
        "features": features,
    }
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=2))
    return root


def random_lerobot_episodes(
    n: int = 3, lengths: Sequence[int] | None = None, d: int = 6, s: int = 6, hw: tuple[int, int] = (12, 10),
    image_keys: Sequence[str] = ("observation.images.top",), velocity: bool = False, seed: int = 0,
) -> list[dict]:
    """Random episode dicts for :func:`write_lerobot_v3_fixture`."""
    rng = np.random.default_rng(seed)
    lengths = list(lengths) if lengths is not None else [7 + i for i in range(n)]
    out = []
    for i, T in enumerate(lengths):
        e = {
            "action": rng.normal(size=(T, d)).astype(np.float32),
            "state": rng.normal(size=(T, s)).astype(np.float32),
            "images": {k: rng.integers(0, 256, size=(T, *hw, 3), dtype=np.uint8) for k in image_keys},
            "task": ["pick the cube", "open the drawer"][i % 2],
        }
        if velocity:
            e["velocity"] = rng.normal(size=(T, s)).astype(np.float32)
        out.append(e)
    return out
