"""Synthetic data fixtures for the data-loader tests (shared by the data test modules).

Everything here is written by code paths independent of the package's writers: LeRobot v3 folders are
built with pyarrow/pandas directly from the LeRobot v3.0 format description, so a reader test compares
the package's reader against a separately written file.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from niaf_train.data.episodes import Episode


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


def tiny_lerobot_dataset(root: Path, seed: int = 3) -> Path:
    """A LeRobot v3 dataset at ``root`` small enough for a 2-step niaf-train run: 4 episodes of 9-12 frames,
    4-dim actions, 3-dim state, one 16×16 camera, 20 fps, seeded by ``seed``."""
    src = random_lerobot_episodes(n=4, lengths=[9, 10, 11, 12], d=4, s=3, hw=(16, 16), seed=seed)
    return write_lerobot_v3_fixture(root, src, fps=20)


# ------------------------------------------------------------------------------------------------------------
# CALVIN release layout (github.com/mees/calvin), built around the real frame in ../shared/fixtures/calvin


CALVIN_FRAME_KEYS = (
    "actions", "rel_actions", "robot_obs", "scene_obs", "rgb_static", "rgb_gripper", "rgb_tactile",
    "depth_static", "depth_gripper", "depth_tactile",
)


def calvin_real_frame(fixtures_dir: Path) -> dict[str, np.ndarray]:
    """The ten arrays of the real CALVIN frame ``calvin/episode_0358482.npz`` (read, never copied)."""
    with np.load(Path(fixtures_dir) / "calvin" / "episode_0358482.npz", allow_pickle=False) as npz:
        return {k: npz[k] for k in CALVIN_FRAME_KEYS}


def _calvin_rel_action(a: np.ndarray, o: np.ndarray) -> np.ndarray:
    # calvin_env's rule, written independently of niaf_train.data.calvin
    pos = np.clip(a[:3] - o[:3], -0.02, 0.02) / 0.02
    orn = np.clip((a[3:6] - o[3:6] + np.pi) % (2 * np.pi) - np.pi, -0.05, 0.05) / 0.05
    return np.concatenate([pos, orn, a[6:7]])


def write_calvin_split(
    split_dir: Path,
    real: dict[str, np.ndarray],
    segments: Sequence[tuple[int, int]],
    annotations: Sequence[tuple[int, int, str, str]],
    prefix: str = "episode_",
    digits: int = 7,
    mutate=None,
) -> dict:
    """Write a CALVIN split folder with the release schema around copies of a real frame.

    Every frame id of ``segments`` (inclusive ``(first, last)``) gets ``<prefix><id>.npz`` written with
    ``np.savez_compressed``, the ten keys in release order and dtypes: the real frame with a per-frame TCP
    pose (``robot_obs``), an absolute ``actions`` target chosen so that position clipping and Euler wrapping
    both occur, alternating gripper commands, ``rel_actions`` recomputed with CALVIN's rule, and pixel
    (0, 0) of both RGB images set to a per-frame marker. Also writes ``ep_start_end_ids.npy``, ``ep_lens.npy``,
    ``scene_info.npy``, ``statistics.yaml`` (OmegaConf list layout) and ``lang_annotations/auto_lang_ann.npy``
    (``np.save`` of the annotation dict; ``annotations`` are ``(start, end, text, task)``).

    ``mutate(frame_id, arrays)`` may edit (or drop keys of) a frame's dict before it is written.

    Returns:
        ``{"frames": {id: (actions, robot_obs, rel_actions)} (float64, as written), "markers": {id: [r, g, b]},
        "real": real, "stats": {...}}``.
    """
    split_dir = Path(split_dir)
    (split_dir / "lang_annotations").mkdir(parents=True, exist_ok=True)
    frames: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    markers: dict[int, list[int]] = {}
    k = 0
    for first, last in segments:
        for fid in range(first, last + 1):
            o = real["robot_obs"].copy()
            o[0] += 0.001 * k
            o[1] -= 0.0005 * k
            o[3] = 3.1 - 0.001 * k
            o[14] = 1.0 if k % 2 == 0 else -1.0
            a = real["actions"].copy()
            a[0] = o[0] + (0.03 if k % 3 == 0 else 0.004 * np.sin(k))  # every third frame clips at +2 cm
            a[1] = o[1] - 0.0021 * (k % 5)
            a[2] = o[2] + 0.0015
            a[3] = -3.12 if k % 4 == 0 else o[3] + 0.01 * np.cos(k)  # every fourth wraps across ±π, then clips
            a[4] = o[4] - 0.002 * k
            a[5] = o[5] + (-0.3 if k % 5 == 0 else 0.02)
            a[6] = 1.0 if (k // 2) % 2 == 0 else -1.0
            marker = [(7 * k + 1) % 256, (fid // 256) % 256, fid % 256]
            arrays = {key: real[key].copy() for key in CALVIN_FRAME_KEYS}
            arrays.update(actions=a, robot_obs=o, rel_actions=_calvin_rel_action(a, o))
            arrays["rgb_static"][0, 0] = marker
            arrays["rgb_gripper"][0, 0] = marker
            frames[fid] = (a.copy(), o.copy(), arrays["rel_actions"].copy())
            markers[fid] = marker
            if mutate is not None:
                mutate(fid, arrays)
            np.savez_compressed(split_dir / f"{prefix}{fid:0{digits}d}.npz", **arrays)
            k += 1
    ids = np.asarray(segments, dtype=np.int64).reshape(-1, 2)
    np.save(split_dir / "ep_start_end_ids.npy", ids)
    np.save(split_dir / "ep_lens.npy", ids[:, 1] - ids[:, 0] + 1)
    np.save(split_dir / "scene_info.npy", {"calvin_scene_D": [int(ids[0, 0]), int(ids[-1, 1])]}, allow_pickle=True)
    rng = np.random.default_rng(0)
    lang = {
        "language": {
            "ann": [a[2] for a in annotations],
            "task": [a[3] for a in annotations],
            "emb": rng.normal(size=(len(annotations), 1, 384)).astype(np.float32),
        },
        "info": {"indx": [(np.int64(a[0]), np.int64(a[1])) for a in annotations], "episodes": []},
    }
    np.save(split_dir / "lang_annotations" / "auto_lang_ann.npy", lang, allow_pickle=True)
    stats = {
        "robot_obs_mean": np.round(np.linspace(-1, 1, 15), 6),
        "robot_obs_std": np.round(np.linspace(0.1, 0.5, 15), 6),
        "scene_obs_mean": np.zeros(24),
        "scene_obs_std": np.ones(24),
        "act_min_bound": np.array([-0.43, -0.55, 0.29, -np.pi, -0.81, -np.pi, -1.0]),
        "act_max_bound": np.array([0.43, 0.14, 0.80, np.pi, 0.64, np.pi, 1.0]),
    }
    target = "calvin_agent.utils.transforms.NormalizeVector"
    text = (
        f"robot_obs:\n- _target_: {target}\n  mean: {stats['robot_obs_mean'].tolist()}\n"
        f"  std: {stats['robot_obs_std'].tolist()}\n"
        f"scene_obs:\n- _target_: {target}\n  mean: {stats['scene_obs_mean'].tolist()}\n"
        f"  std: {stats['scene_obs_std'].tolist()}\n"
        f"act_min_bound: {stats['act_min_bound'].tolist()}\nact_max_bound: {stats['act_max_bound'].tolist()}\n"
    )
    (split_dir / "statistics.yaml").write_text(text)
    return {"frames": frames, "markers": markers, "real": real, "stats": stats}


# ------------------------------------------------------------------------------------------------------------
# LIBERO original HDF5 demonstrations (LIBERO's HDF5 layout), written with h5py



def two_window_calvin_split(split: Path, fixtures_dir: Path, mutate=None) -> Path:
    """A CALVIN split at ``split`` built from the real fixture frame: segments (0, 5) and (8, 11), each with one
    language window ("good window", "bad window"); ``mutate`` as for :func:`write_calvin_split`."""
    write_calvin_split(
        split,
        calvin_real_frame(fixtures_dir),
        segments=[(0, 5), (8, 11)],
        annotations=[(0, 5, "good window", "a"), (8, 11, "bad window", "b")],
        mutate=mutate,
    )
    return split


def calvin_training_split(root: Path, fixtures_dir: Path, mutate=None) -> Path:
    """:func:`two_window_calvin_split` in ``root/training``, where a CALVIN release keeps its training split."""
    return two_window_calvin_split(root / "training", fixtures_dir, mutate)

def libero_demo_arrays(length: int, seed: int, hw: tuple[int, int] = (128, 128)) -> dict[str, np.ndarray]:
    """Random arrays of one LIBERO demo, images **upright** (the writer stores them upside-down).

    The upright images are asymmetric (a bright top-left block) so a wrong flip is visible in any test.
    """
    rng = np.random.default_rng(seed)
    images = {}
    for key in ("agentview_rgb", "eye_in_hand_rgb"):
        frames = rng.integers(0, 200, size=(length, *hw, 3), dtype=np.uint8)
        frames[:, :8, 1:17] = 255  # bright block near the top-left corner, beside the marker pixel (0, 0)
        frames[:, 0, 0] = np.stack([np.arange(length), np.full(length, seed), np.full(length, 7)], 1)
        images[key] = frames
    quat = rng.normal(size=(length, 4))
    return {
        "actions": np.concatenate([rng.uniform(-1, 1, size=(length, 6)), np.sign(rng.normal(size=(length, 1)))], 1),
        "ee_pos": rng.normal(size=(length, 3)),
        "ee_ori": rng.normal(size=(length, 3)),
        "gripper_states": rng.uniform(-0.04, 0.04, size=(length, 2)),
        "joint_states": rng.uniform(-2, 2, size=(length, 7)),
        "robot_quat": quat / np.linalg.norm(quat, axis=1, keepdims=True),
        **images,
    }


def write_libero_hdf5(
    path: Path,
    demos: dict[str, dict[str, np.ndarray]],
    language_instruction: str,
    problem_name: str = "libero_tabletop_manipulation",
    drop: Sequence[str] = (),
) -> Path:
    """Write a LIBERO ``*_demo.hdf5`` as ``scripts/create_dataset.py`` lays it out.

    ``demos``: group name (``"demo_<i>"``, written in the given order) -> arrays from
    :func:`libero_demo_arrays` (upright images; stored here rotated by 180°, as the simulator records them).
    ``drop``: ``"<demo>/<key>"`` datasets to leave out (to test missing keys).
    """
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    total = sum(d["actions"].shape[0] for d in demos.values())
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["env_name"] = "Libero_Tabletop_Manipulation"
        data.attrs["problem_info"] = json.dumps(
            {"problem_name": problem_name, "domain_name": "robosuite", "language_instruction": language_instruction}
        )
        data.attrs["macros_image_convention"] = "opengl"
        data.attrs["bddl_file_name"] = f"libero/bddl_files/{path.stem}.bddl"
        data.attrs["bddl_file_content"] = "(define (problem LIBERO_Tabletop_Manipulation))"
        data.attrs["env_args"] = json.dumps(
            {"type": 1, "env_name": "Libero_Tabletop_Manipulation", "problem_name": problem_name,
             "bddl_file": f"{path.stem}.bddl", "env_kwargs": {"control_freq": 20}}
        )
        data.attrs["num_demos"] = len(demos)
        data.attrs["total"] = total
        data.attrs["tag"] = "libero-v1"
        for name, d in demos.items():
            t = d["actions"].shape[0]
            g = data.create_group(name)
            g.attrs["num_samples"] = t
            g.attrs["model_file"] = "<mujoco model='base'/>"
            g.attrs["init_state"] = np.zeros(10)
            ee_states = np.concatenate([d["ee_pos"], d["ee_ori"]], 1)
            datasets_ = {
                "actions": d["actions"].astype(np.float64),
                "states": np.zeros((t, 47)),
                "robot_states": np.concatenate([d["gripper_states"], d["ee_pos"], d["robot_quat"]], 1),
                "rewards": np.r_[np.zeros(t - 1), 1].astype(np.uint8),
                "dones": np.r_[np.zeros(t - 1), 1].astype(np.uint8),
                "obs/agentview_rgb": d["agentview_rgb"][:, ::-1, ::-1],
                "obs/eye_in_hand_rgb": d["eye_in_hand_rgb"][:, ::-1, ::-1],
                "obs/gripper_states": d["gripper_states"],
                "obs/joint_states": d["joint_states"],
                "obs/ee_states": ee_states,
                "obs/ee_pos": d["ee_pos"],
                "obs/ee_ori": d["ee_ori"],
            }
            for key, value in datasets_.items():
                if f"{name}/{key}" not in drop:
                    g.create_dataset(key, data=np.ascontiguousarray(value))
    return path
