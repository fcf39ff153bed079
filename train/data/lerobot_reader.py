"""Reading a LeRobot v3.0 folder as :class:`~niaf_train.data.episodes.Episode` objects and as a chunk dataset
(:func:`load_lerobot`), and the LeRobot-format LIBERO variant (:func:`load_libero_lerobot`).

See :mod:`niaf_train.data.lerobot_v3` for the folder layout and the reading rules.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .chunk_builder import build_chunk_dataset
from .chunk_cache import file_fingerprint
from .episodes import Episode, EpisodeError, LazyFrames
from .lerobot_meta import IMAGE_PREFIX, LeRobotV3Meta, open_lerobot_v3, velocity_plan
from .lerobot_paths import _data_path, _video_path, safe_join
from .lerobot_video import _VideoPool
from .unreadable_episode import UnreadableEpisode

logger = logging.getLogger(f"{__package__}.lerobot_v3")  # the module this code was split from: logging set-ups keep working

LIBERO_FPS = 20.0
"""True control rate of LIBERO demonstrations (robosuite ``control_freq``), Hz."""

VelocityMode = Literal["auto", "require", "none"]


def _decode_image(cell: Mapping[str, Any] | None, root: Path, where: str) -> np.ndarray:
    from PIL import Image  # lazy: Pillow, only for image features

    if cell is None:
        raise ValueError(f"{where}: image cell is null")
    data = cell.get("bytes")
    if data is None:
        p = cell.get("path")
        if not p:
            raise ValueError(f"{where}: image has neither bytes nor path")
        data = safe_join(root, p, "image").read_bytes()
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def _fixed_rows(column: Any, n: int, width: int, where: str) -> np.ndarray:
    """A list/fixed-size-list Arrow column → float32 [n, width]."""
    import pyarrow as pa  # heavy: pyarrow

    arr = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    if arr.null_count:
        raise ValueError(f"{where}: {arr.null_count} null row(s)")
    nested = pa.types.is_list(arr.type) or pa.types.is_fixed_size_list(arr.type) or pa.types.is_large_list(arr.type)
    value_type = arr.type.value_type if nested else arr.type
    if not (pa.types.is_floating(value_type) or pa.types.is_integer(value_type)):
        # strings would be parsed and booleans become 0/1 without a word: refuse them
        raise ValueError(f"{where}: stored as {value_type}; expected floating-point (or integer) numbers")
    if pa.types.is_list(arr.type) or pa.types.is_fixed_size_list(arr.type) or pa.types.is_large_list(arr.type):
        flat = np.asarray(arr.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
    else:  # scalar column stored as a plain number
        flat = np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.float32)
    if flat.size != n * width:
        raise ValueError(f"{where}: {flat.size} values for {n} rows; expected {width} per row")
    return flat.reshape(n, width)


def iter_lerobot_episodes(
    root: str | os.PathLike[str],
    *,
    fps_override: float | None = None,
    state_only: bool = False,
    velocity: VelocityMode = "auto",
    cameras: Sequence[str] | None = None,
    camera_names: Mapping[str, str] | None = None,
    episodes: Sequence[int] | None = None,
    meta: LeRobotV3Meta | None = None,
    select: Callable[[int], bool] | None = None,
) -> Iterator[Episode | None]:
    """Yield the episodes of a LeRobot v3.0 folder.

    Args:
        root: dataset root (holding ``meta/info.json``).
        fps_override: the true control rate in Hz when ``info.json``'s fps is wrong (warns when different).
        state_only: read no images/videos (actions, states, velocities and tasks only).
        velocity: ``"auto"`` (use velocities when found, else warn), ``"require"`` (error when absent) or
            ``"none"``.
        cameras: image/video feature keys to read (default: all ``observation.images.*``).
        camera_names: feature key → camera name in ``Episode.images`` (default: the key without
            ``observation.images.``).
        episodes: episode indices to read (default: all).
        meta: already-read metadata (else read from ``root``).
        select: which reading positions (0-based, counted over the episodes this call yields) are needed;
            the others are yielded as ``None`` without reading their rows (data files are then read with a
            filter on ``episode_index``). The streaming chunk builder passes it so that each shard reads only
            its own episodes. Default: every episode.

    Yields:
        :class:`Episode` with ``index`` = the LeRobot ``episode_index`` and ``episode_id`` its decimal string
        (``None`` at positions ``select`` rejects). An unreadable episode is yielded as an episode whose
        ``validate()`` raises the reading error, so the chunk builder can skip and count it (``skip_invalid``)
        or stop.
    """

    meta = meta or open_lerobot_v3(root, fps_override)
    root = meta.root
    info_path = str(root / "meta" / "info.json")
    if velocity not in ("auto", "require", "none"):
        raise ValueError(f"velocity must be 'auto', 'require' or 'none', got {velocity!r}")
    vplan: tuple[str, np.ndarray] | None = None
    if velocity != "none":
        plan = velocity_plan(meta)
        if isinstance(plan, str):
            if velocity == "require":
                raise ValueError(f"{info_path}: velocities required but not usable: {plan}")
            logger.warning("%s: no velocities (%s); the velocity loss will be off", info_path, plan)
        else:
            vplan = plan
    all_cams = meta.image_keys + meta.video_keys
    keys = [] if state_only else list(cameras) if cameras is not None else all_cams
    for k in keys:
        if k not in all_cams:
            raise ValueError(f"{info_path}: camera {k!r} is not an image/video feature; available: {all_cams}")
    names = {k: (camera_names or {}).get(k, k[len(IMAGE_PREFIX):]) for k in keys}
    if not state_only:
        missing = []
        for ep in meta.episodes[:1] if meta.episodes else []:
            for k in keys:
                if k in meta.video_keys:
                    path = _video_path(meta, k, ep)
                    if not path.is_file():
                        missing.append(str(path))
        if missing:
            raise FileNotFoundError(
                f"{root}: video file(s) {missing} not found: this dataset's videos are absent. Download them, or "
                "load actions and states only with state_only=True (CLI: --state-only)."
            )
    has_state = "observation.state" in meta.features
    action_dim = meta.dim("action")
    state_dim = meta.dim("observation.state") if has_state else None
    wanted = None if episodes is None else {int(e) for e in episodes}
    rows = [row for row in meta.episodes if wanted is None or int(row["episode_index"]) in wanted]
    chosen = None if select is None else [bool(select(position)) for position in range(len(rows))]
    columns = ["action", "frame_index", "episode_index", "task_index"]
    if has_state:
        columns.append("observation.state")
    if vplan is not None and vplan[0] == "observation.velocity":
        columns.append("observation.velocity")
    columns += [k for k in keys if k in meta.image_keys]
    plan = _ReadPlan(
        meta=meta, columns=columns, keys=keys, names=names, velocity=vplan, action_dim=action_dim,
        state_dim=state_dim,
        only_episodes=None if chosen is None else sorted(
            int(row["episode_index"]) for row, keep in zip(rows, chosen, strict=True) if keep),
        pool=_VideoPool(size=max(2, 2 * len(meta.video_keys))),
    )
    cache = _DataFile()

    for position, row in enumerate(rows):
        e = int(row["episode_index"])
        if chosen is not None and not chosen[position]:
            yield None
            continue
        try:
            yield _read_episode(plan, row, cache)
        except (EpisodeError, ValueError, OSError, KeyError) as err:
            if not isinstance(err, EpisodeError):
                source = str(cache.path or root)
                err = EpisodeError(source, str(e), getattr(err, "key", "data"), str(err))
            yield UnreadableEpisode(err, meta.fps)


def _rows_by_episode(episode_column: np.ndarray) -> Callable[[int], np.ndarray]:
    """A lookup episode_index → its row numbers (ascending) in a data file whose ``episode_index`` column is
    ``episode_column`` int [N]; one stable sort per file, O(log N) per episode, instead of a scan of the whole
    column per episode (O(N · episodes) per file)."""
    order = np.argsort(episode_column, kind="stable")
    ordered = episode_column[order]

    def rows(e: int) -> np.ndarray:
        lo, hi = np.searchsorted(ordered, e, side="left"), np.searchsorted(ordered, e, side="right")
        return order[lo:hi]

    return rows


@dataclass
class _ReadPlan:
    """What every episode of one :func:`iter_lerobot_episodes` call is read with.

    Attributes:
        meta: the folder's metadata.
        columns: the data-parquet columns to read.
        keys: the image/video feature keys to load (empty with ``state_only``).
        names: feature key → camera name in ``Episode.images``.
        velocity: ``(column, indices)`` of :func:`velocity_plan` (int64 [D] dims of that column), or None.
        action_dim: D.
        state_dim: S, or None without ``observation.state``.
        only_episodes: read only these episodes' rows of a data file (``select``), or None for all.
        pool: the open video files.
    """

    meta: LeRobotV3Meta
    columns: list[str]
    keys: list[str]
    names: dict[str, str]
    velocity: tuple[str, np.ndarray] | None
    action_dim: int
    state_dim: int | None
    only_episodes: list[int] | None
    pool: _VideoPool


@dataclass
class _DataFile:
    """The data file read last (episodes are read in order, so consecutive episodes share it).

    Attributes:
        path: its path, or None before the first read (and after a failed one).
        table: its rows (the plan's columns; only ``only_episodes``' rows with a selection).
        combined: whether ``table`` was joined into one chunk per column (done once, when an episode's rows are
            not contiguous).
        rows_of: episode_index → its row numbers in ``table`` (:func:`_rows_by_episode`).
    """

    path: Path | None = None
    table: Any = None
    combined: bool = False
    rows_of: Callable[[int], np.ndarray] | None = None


def _read_episode(plan: _ReadPlan, row: Mapping[str, Any], cache: _DataFile) -> Episode:
    """Read the episode of one ``meta/episodes`` row through ``cache`` (updated when its data file changes)."""
    import pyarrow.parquet as pq  # heavy: pyarrow

    meta = plan.meta
    e = int(row["episode_index"])
    length = int(row["length"])
    path = _data_path(meta, row)
    if cache.path != path:
        cache.path = cache.table = None  # a failure below is this file's, not the previous one's
        if not path.is_file():
            raise EpisodeError(str(path), str(e), "data", "data file not found (referenced by meta/episodes)")
        try:
            schema_names = pq.read_schema(path).names
            absent = [c for c in plan.columns if c not in schema_names]
            if absent:
                raise EpisodeError(str(path), str(e), absent[0], f"column missing; file has {schema_names}")
            only = plan.only_episodes
            # with a selection, only its episodes' rows (row groups whose statistics exclude them are not read)
            table = pq.read_table(path, columns=plan.columns,
                                  filters=None if only is None else [("episode_index", "in", only)])
        except EpisodeError:
            raise
        except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for a truncated file
            raise EpisodeError(str(path), str(e), "data", f"unreadable ({type(exc).__name__}: {exc})") from None
        cache.table = table
        cache.combined = False
        cache.path = path
        cache.rows_of = _rows_by_episode(np.asarray(table["episode_index"].to_numpy()))
    assert cache.rows_of is not None
    table = cache.table
    sel = cache.rows_of(e)
    src = str(path)

    def err(key: str, msg: str) -> EpisodeError:
        return EpisodeError(src, str(e), key, msg)

    if sel.size == 0:
        raise err("episode_index", "no rows for this episode in its data file")
    if sel.size != length:
        raise err("episode_index", f"{sel.size} rows but meta/episodes says length {length}")
    if sel[-1] - sel[0] + 1 == sel.size:  # the usual layout, an episode's rows in one run: a zero-copy view
        sub = table.slice(int(sel[0]), int(sel.size))
    else:
        if not cache.combined:
            # take() on a table of many row-group chunks concatenates every chunk on each call (a copy of the
            # whole file per episode): join them once per file instead
            cache.table = table = table.combine_chunks()
            cache.combined = True
        sub = table.take(sel)
    frame_index = np.asarray(sub["frame_index"].to_numpy())
    order = np.argsort(frame_index, kind="stable")
    if not np.array_equal(frame_index[order], np.arange(length)):
        raise err("frame_index", f"expected frames 0..{length - 1} once each")
    if not np.array_equal(order, np.arange(length)):
        sub = sub.take(order)
    actions = _fixed_rows(sub["action"], length, plan.action_dim, f"{src}: episode {e}: key 'action'")
    states = None
    if plan.state_dim is not None:
        states = _fixed_rows(sub["observation.state"], length, plan.state_dim, f"{src}: episode {e}: key 'observation.state'")
    velocities = None
    if plan.velocity is not None:
        column, idx = plan.velocity
        if column == "observation.state":
            velocities = states[:, idx]
        else:
            w = meta.dim("observation.velocity")
            velocities = _fixed_rows(sub[column], length, w, f"{src}: episode {e}: key {column!r}")[:, idx]
    task_idx = np.asarray(sub["task_index"].to_numpy())
    first_task = int(task_idx[0])
    if first_task not in meta.tasks:
        raise err("task_index", f"task_index {first_task} not in meta/tasks.parquet ({sorted(meta.tasks)})")
    if np.any(task_idx != first_task):
        logger.warning("%s: episode %d has several tasks %s; using the first, %r", src, e,
                       sorted(set(task_idx.tolist())), meta.tasks[first_task])
    images: dict[str, Any] = {}
    for k in plan.keys:
        shape = meta.frame_shape(k)
        if k in meta.image_keys:
            # a copy of the episode's Arrow cells (combine_chunks copies: the slice alone would keep its whole data
            # file alive as long as the episode lives), each made a Python {bytes, path} only when its frame is decoded
            cells = sub[k].combine_chunks()
            where = f"{src}: episode {e}: key {k!r}"
            images[plan.names[k]] = LazyFrames(
                length, shape, lambda i, c=cells, w=where: _decode_image(c[i].as_py(), meta.root, f"{w} frame {i}"), where
            )
        else:
            vpath = _video_path(meta, k, row)
            if not vpath.is_file():
                raise EpisodeError(str(vpath), str(e), k, "video file not found (videos absent? use state_only=True)")
            start = float(row.get(f"videos/{k}/from_timestamp", 0.0) or 0.0)
            vfps = float((meta.features[k].get("info") or {}).get("video.fps", meta.info_fps))
            tol = 0.5 / vfps
            # the data's timestamps follow info.json's fps: frame i sits at start + i / info_fps in the video
            step = 1.0 / meta.info_fps
            images[plan.names[k]] = LazyFrames(
                length, shape,
                lambda i, p=vpath, s=start, st=step, t=tol, pool=plan.pool: pool.get(p).frame_at(s + i * st, t),
                f"{vpath} (episode {e}, key {k!r})",
            )
    return Episode(
        episode_id=str(e), source=src, instruction=meta.tasks[first_task], fps=meta.fps, actions=actions,
        states=states, velocities=velocities, images=images, index=e,
        metadata={"info_fps": meta.info_fps, "robot_type": meta.info.get("robot_type")},
    )


def load_lerobot(
    root: str | os.PathLike[str],
    chunk_size: int,
    stride: int = 1,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    fps_override: float | None = None,
    state_only: bool = False,
    velocity: VelocityMode = "auto",
    cameras: Sequence[str] | None = None,
    camera_names: Mapping[str, str] | None = None,
    episodes: Sequence[int] | None = None,
    skip_invalid: bool = False,
    streaming: bool = False,
    image_format: str = "png",
    sample_every: int | None = None,
    dense_every: int | None = None,
    difference_velocities: bool = False,
    _format_name: str = "lerobot",
):
    """A LeRobot v3.0 folder as a chunked ``datasets.Dataset`` (see :mod:`niaf_train.data.chunking` for columns).

    ``dense_every`` and ``difference_velocities`` are :func:`~niaf_train.data.chunking.build_chunk_dataset`'s
    (dense targets between chunk points; velocities as finite differences of the actions where the dataset
    has none). The cache fingerprint covers (path, size, mtime) of ``meta/``, ``data/`` and ``videos/`` and
    every option.
    """
    meta = open_lerobot_v3(root, fps_override)
    sources = [meta.root / "meta", meta.root / "data"] + ([meta.root / "videos"] if (meta.root / "videos").is_dir() else [])
    opts = {"fps_override": fps_override, "state_only": state_only, "velocity": velocity, "cameras": cameras,
            "camera_names": dict(camera_names or {}), "episodes": None if episodes is None else sorted(episodes)}
    return build_chunk_dataset(
        lambda select=None: iter_lerobot_episodes(
            meta.root, fps_override=fps_override, state_only=state_only, velocity=velocity, cameras=cameras,
            camera_names=camera_names, episodes=episodes, meta=meta, select=select),
        chunk_size, stride, cache_dir, [file_fingerprint(sources), opts], name=_format_name,
        sample_every=sample_every, skip_invalid=skip_invalid, streaming=streaming, image_format=image_format,
        total_episodes=len(meta.episodes) if episodes is None else len(episodes),
        extra_meta={"format": _format_name, "root": str(meta.root), "info_fps": meta.info_fps},
        dense_every=dense_every, difference_velocities=difference_velocities,
    )


LIBERO_CAMERA_NAMES = {
    "observation.images.image": "image",
    "observation.images.image2": "image2",
    "observation.images.wrist_image": "image2",
}
"""LeRobot-format LIBERO camera keys → the names LeRobot's LIBERO environment uses (agent view, wrist)."""


def check_libero_lerobot(meta: LeRobotV3Meta) -> None:
    """Raise ValueError unless the folder looks like LeRobot-format LIBERO (7-d action, 8-d state)."""
    path = meta.root / "meta" / "info.json"
    if meta.dim("action") != 7:
        raise ValueError(f"{path}: 'action' has {meta.dim('action')} dims; LeRobot-format LIBERO has 7 (delta EEF 6 + gripper)")
    if meta.dim("observation.state") != 8:
        raise ValueError(f"{path}: 'observation.state' has {meta.dim('observation.state')} dims; LIBERO has 8 (EEF 6 + fingers 2)")
    cams = [k for k in meta.image_keys + meta.video_keys if k in LIBERO_CAMERA_NAMES]
    if "observation.images.image" not in cams:
        raise ValueError(f"{path}: no 'observation.images.image' (agent view) feature; found {meta.image_keys + meta.video_keys}")
    if "observation.images.image2" in cams and "observation.images.wrist_image" in cams:
        raise ValueError(f"{path}: both 'image2' and 'wrist_image' present; pass cameras= explicitly")


def load_libero_lerobot(
    root: str | os.PathLike[str],
    chunk_size: int,
    stride: int = 1,
    *,
    fps: float = LIBERO_FPS,
    **kwargs: Any,
):
    """LeRobot-format LIBERO (``HuggingFaceVLA/libero``, ``lerobot/libero``, ...) as a chunked dataset.

    Those conversions write ``fps: 10`` in info.json although LIBERO runs at 20 Hz; ``fps`` (default 20)
    overrides it with a warning. Cameras are named ``image`` (agent view) and ``image2`` (wrist; also for
    datasets that call it ``wrist_image``), like LeRobot's LIBERO environment. Actions keep the raw LIBERO
    gripper sign (-1 open, +1 close). Other keyword arguments go to :func:`load_lerobot`.
    """
    meta = open_lerobot_v3(root)
    check_libero_lerobot(meta)
    if abs(meta.info_fps - fps) > 1e-9:
        logger.warning("%s: info.json says fps %g; LIBERO was recorded at %g Hz, using %g Hz",
                       meta.root, meta.info_fps, fps, fps)
    kwargs.setdefault("camera_names", {k: v for k, v in LIBERO_CAMERA_NAMES.items()})
    kwargs.setdefault("velocity", "none")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # warned above once, in LIBERO terms
        return load_lerobot(root, chunk_size, stride, fps_override=fps, _format_name="libero-lerobot", **kwargs)
