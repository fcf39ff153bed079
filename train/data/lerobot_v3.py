"""LeRobotDataset v3.0 folders: reader (real-robot episodes, LeRobot-format LIBERO) and writer.

Layout (LeRobot v3.0, https://huggingface.co/docs/lerobot)::

    <root>/meta/info.json                 fps, features, data_path / video_path templates
    <root>/meta/stats.json                per-feature statistics
    <root>/meta/tasks.parquet             task_index + task text (column ``task`` or ``__index_level_0__``)
    <root>/meta/episodes/chunk-XXX/file-XXX.parquet   one row per episode: length, data file, video segment
    <root>/data/chunk-XXX/file-XXX.parquet            frames of many episodes; image features as {bytes, path}
    <root>/videos/<key>/chunk-XXX/file-XXX.mp4        video features (decoded with PyAV)

Reading (:func:`iter_lerobot_episodes`, :func:`load_lerobot`, :func:`load_libero_lerobot`):

* one :class:`~niaf_train.data.episodes.Episode` per row of ``meta/episodes``: ``action`` → ``actions``,
  ``observation.state`` → ``states``, every image/video feature ``observation.images.<cam>`` → ``images[cam]``
  (decoded lazily, RGB uint8 [H, W, 3]), the task text of the episode's first frame → ``instruction``;
* velocities for NIAF's velocity loss, per action dimension, found in this order: the ``observation.velocity``
  feature, then ``<joint>.vel`` dimensions of ``observation.state``; matched to actions by motor name
  (``shoulder.pos`` ↔ ``shoulder.vel``/``shoulder``), or position by position (with a warning) when no name
  matches at all and the widths agree. Velocities are never derived from timestamps here. ``velocity="require"`` makes a missing or
  unmatched velocity an error; ``"auto"`` logs a warning and goes on without; ``"none"`` ignores them;
* ``state_only=True`` reads no image or video at all, for datasets whose videos were not downloaded (without
  it a missing video file is an error that says so);
* every path built from an ``info.json`` template must stay inside the dataset root;
* ``fps_override`` replaces ``info.json``'s fps (with a warning when they differ): LeRobot-format LIBERO says
  10 fps but was recorded at 20 Hz.

Writing (:func:`write_lerobot_dataset`): info.json, stats.json, tasks.parquet, episodes parquet and data
parquet with images as PNG {bytes, path} structs (no video encoding), optional ``observation.velocity``.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import re
import shutil
import string
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from configuration_niaf.normalization import RunningStats

from .chunking import build_chunk_dataset, encode_png, file_fingerprint
from .episodes import Episode, EpisodeError, LazyFrames
from .stats import EpisodeStats, write_stats_json

logger = logging.getLogger(__name__)

CODEBASE_VERSION = "v3.0"
DEFAULT_DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
DEFAULT_VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
IMAGE_PREFIX = "observation.images."
LIBERO_FPS = 20.0
"""True control rate of LIBERO demonstrations (robosuite ``control_freq``), Hz."""

VelocityMode = Literal["auto", "require", "none"]


# ---------------------------------------------------------------------------------------------------------
# Metadata
# ---------------------------------------------------------------------------------------------------------


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


def safe_join(root: Path, relative: str, what: str) -> Path:
    """``root / relative``, refusing absolute paths and paths that leave ``root`` (``..``, symlinks)."""
    rel = Path(relative)
    if rel.is_absolute():
        raise ValueError(f"{root}: {what} path {relative!r} is absolute; expected a path inside the dataset root")
    full = (root / rel).resolve()
    if not full.is_relative_to(root.resolve()):
        raise ValueError(f"{root}: {what} path {relative!r} resolves to {full}, outside the dataset root")
    return full


_TEMPLATE_SPEC = re.compile(r"^0?\d{0,2}d?$")


def _format_template(root: Path, template: str, what: str, **fields: Any) -> Path:
    """Fill a path template of info.json; only the given fields with an int spec of width < 100 are allowed
    (``{file_index:0999999999d}`` would allocate gigabytes; ``{x.attr}`` reaches into objects)."""
    info = root / "meta" / "info.json"
    if not isinstance(template, str) or len(template) > 4096:
        raise ValueError(f"{info}: {what} must be a path template string of at most 4096 characters")
    try:
        parsed = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(template) if name is not None]
    except ValueError as err:
        raise ValueError(f"{info}: {what} template {template[:80]!r} is not a valid format string: {err}") from None
    for name, spec, conv in parsed:
        if name not in fields or conv or not _TEMPLATE_SPEC.match(spec or ""):
            raise ValueError(
                f"{info}: {what} template field {{{name}{'!' + conv if conv else ''}{':' + spec if spec else ''}}} "
                f"is not allowed; expected fields {sorted(fields)} with an int format such as :03d"
            )
    try:
        relative = template.format(**fields)
    except (KeyError, IndexError, ValueError) as err:
        raise ValueError(
            f"{root / 'meta' / 'info.json'}: {what} template {template!r} cannot be filled with "
            f"{sorted(fields)}: {err}"
        ) from err
    return safe_join(root, relative, what)


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
    import pyarrow.parquet as pq

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
    import pyarrow.parquet as pq

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


# ---------------------------------------------------------------------------------------------------------
# Velocity plan
# ---------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------
# Frame access
# ---------------------------------------------------------------------------------------------------------


class _VideoFile:
    """Sequential-friendly frame access to one MP4 file with PyAV (seeks only when going back or far ahead)."""

    def __init__(self, path: Path) -> None:
        import av

        self.path = path
        self.container = av.open(str(path))
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        self._frames: Iterator[Any] | None = None
        self._last: tuple[float, np.ndarray] | None = None

    def _seek(self, seconds: float) -> None:
        tb = self.stream.time_base
        self.container.seek(max(0, int(seconds / tb)), stream=self.stream, backward=True, any_frame=False)
        self._frames = self.container.decode(self.stream)
        self._last = None

    def frame_at(self, seconds: float, tolerance: float) -> np.ndarray:
        """The first frame whose timestamp is >= ``seconds - tolerance``, RGB uint8 [H, W, 3]."""
        if self._last is not None and abs(self._last[0] - seconds) <= tolerance:
            return self._last[1]
        if self._frames is None or self._last is None or self._last[0] > seconds - tolerance or seconds - self._last[0] > 2.0:
            self._seek(seconds)
        assert self._frames is not None
        for frame in self._frames:
            if frame.pts is None:
                continue
            ts = float(frame.pts * self.stream.time_base)
            if ts >= seconds - tolerance:
                self._last = (ts, frame.to_ndarray(format="rgb24"))
                if ts > seconds + tolerance:
                    raise ValueError(f"{self.path}: no frame at {seconds:.4f} s (next frame at {ts:.4f} s)")
                return self._last[1]
        raise ValueError(f"{self.path}: video ends before {seconds:.4f} s")

    def close(self) -> None:
        self.container.close()


class _VideoPool:
    """A few open video files, least recently used closed first."""

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self.files: OrderedDict[Path, _VideoFile] = OrderedDict()

    def get(self, path: Path) -> _VideoFile:
        if path in self.files:
            self.files.move_to_end(path)
            return self.files[path]
        vf = _VideoFile(path)
        self.files[path] = vf
        while len(self.files) > self.size:
            self.files.popitem(last=False)[1].close()
        return vf


def _decode_image(cell: Mapping[str, Any] | None, root: Path, where: str) -> np.ndarray:
    from PIL import Image

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
    import pyarrow as pa

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


# ---------------------------------------------------------------------------------------------------------
# Reader
# ---------------------------------------------------------------------------------------------------------


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
    import pyarrow.parquet as pq

    from .unreadable_episode import UnreadableEpisode

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
    pool = _VideoPool(size=max(2, 2 * len(meta.video_keys)))
    cache: dict[str, Any] = {"path": None, "table": None, "only_episodes": None}
    if chosen is not None:
        cache["only_episodes"] = sorted(int(row["episode_index"]) for row, keep in zip(rows, chosen, strict=True) if keep)
    columns = ["action", "frame_index", "episode_index", "task_index"]
    if has_state:
        columns.append("observation.state")
    if vplan is not None and vplan[0] == "observation.velocity":
        columns.append("observation.velocity")
    columns += [k for k in keys if k in meta.image_keys]

    for position, row in enumerate(rows):
        e = int(row["episode_index"])
        if chosen is not None and not chosen[position]:
            yield None
            continue
        try:
            yield _read_episode(meta, row, columns, cache, pool, keys, names, vplan, action_dim, state_dim, pq)
        except (EpisodeError, ValueError, OSError, KeyError) as err:
            if not isinstance(err, EpisodeError):
                source = str(cache["path"] or root)
                err = EpisodeError(source, str(e), getattr(err, "key", "data"), str(err))
            yield UnreadableEpisode(err, meta.fps)


def _data_path(meta: LeRobotV3Meta, row: Mapping[str, Any]) -> Path:
    template = meta.info.get("data_path") or DEFAULT_DATA_PATH
    return _format_template(meta.root, template, "data_path", chunk_index=int(row.get("data/chunk_index", 0)),
                            file_index=int(row.get("data/file_index", 0)), episode_index=int(row["episode_index"]))


def _video_path(meta: LeRobotV3Meta, key: str, row: Mapping[str, Any]) -> Path:
    template = meta.info.get("video_path") or DEFAULT_VIDEO_PATH
    return _format_template(meta.root, template, "video_path", video_key=key,
                            chunk_index=int(row.get(f"videos/{key}/chunk_index", 0)),
                            file_index=int(row.get(f"videos/{key}/file_index", 0)),
                            episode_index=int(row["episode_index"]))


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


def _read_episode(meta, row, columns, cache, pool, keys, names, vplan, action_dim, state_dim, pq) -> Episode:
    e = int(row["episode_index"])
    length = int(row["length"])
    path = _data_path(meta, row)
    if cache["path"] != path:
        cache["path"] = cache["table"] = None  # a failure below is this file's, not the previous one's
        if not path.is_file():
            raise EpisodeError(str(path), str(e), "data", "data file not found (referenced by meta/episodes)")
        try:
            schema_names = pq.read_schema(path).names
            absent = [c for c in columns if c not in schema_names]
            if absent:
                raise EpisodeError(str(path), str(e), absent[0], f"column missing; file has {schema_names}")
            only = cache.get("only_episodes")
            # with a selection, only its episodes' rows (row groups whose statistics exclude them are not read)
            table = pq.read_table(path, columns=columns, filters=None if only is None else [("episode_index", "in", only)])
        except EpisodeError:
            raise
        except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for a truncated file
            raise EpisodeError(str(path), str(e), "data", f"unreadable ({type(exc).__name__}: {exc})") from None
        cache["table"] = table
        cache["combined"] = False
        cache["path"] = path
        cache["rows_of"] = _rows_by_episode(np.asarray(table["episode_index"].to_numpy()))
    table = cache["table"]
    sel = cache["rows_of"](e)
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
        if not cache.get("combined"):
            # take() on a table of many row-group chunks concatenates every chunk on each call (a copy of the
            # whole file per episode): join them once per file instead
            cache["table"] = table = table.combine_chunks()
            cache["combined"] = True
        sub = table.take(sel)
    frame_index = np.asarray(sub["frame_index"].to_numpy())
    order = np.argsort(frame_index, kind="stable")
    if not np.array_equal(frame_index[order], np.arange(length)):
        raise err("frame_index", f"expected frames 0..{length - 1} once each")
    if not np.array_equal(order, np.arange(length)):
        sub = sub.take(order)
    actions = _fixed_rows(sub["action"], length, action_dim, f"{src}: episode {e}: key 'action'")
    states = None
    if state_dim is not None:
        states = _fixed_rows(sub["observation.state"], length, state_dim, f"{src}: episode {e}: key 'observation.state'")
    velocities = None
    if vplan is not None:
        column, idx = vplan
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
    for k in keys:
        shape = meta.frame_shape(k)
        if k in meta.image_keys:
            # the episode's Arrow cells, each made a Python {bytes, path} only when its frame is decoded
            cells = sub[k].combine_chunks()
            where = f"{src}: episode {e}: key {k!r}"
            images[names[k]] = LazyFrames(
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
            images[names[k]] = LazyFrames(
                length, shape,
                lambda i, p=vpath, s=start, st=step, t=tol: pool.get(p).frame_at(s + i * st, t),
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


# ---------------------------------------------------------------------------------------------------------
# Writer
# ---------------------------------------------------------------------------------------------------------


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
    import datasets
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm.auto import tqdm

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


__all__ = [
    "CODEBASE_VERSION",
    "LIBERO_CAMERA_NAMES",
    "LIBERO_FPS",
    "LeRobotV3Meta",
    "check_libero_lerobot",
    "iter_lerobot_episodes",
    "load_lerobot",
    "load_libero_lerobot",
    "open_lerobot_v3",
    "read_episodes_meta",
    "read_info",
    "read_tasks",
    "safe_join",
    "velocity_plan",
    "write_lerobot_dataset",
]
