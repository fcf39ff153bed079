"""Action chunking shared by every loader, and the cached ``datasets.Dataset`` builder.

Contract (stable; the CALVIN, LIBERO, LeRobot and Meta-World loaders all build on it)
=====================================================================================

A loader produces :class:`~niaf_train.data.episodes.Episode` objects (``actions`` float32 [T, D] on a clock of
``fps`` Hz, optional ``states`` [T, S] and ``velocities`` [T, D] per second, ``images`` camera → uint8
[T, H, W, 3]) and hands a zero-argument factory returning an iterable of them to
:func:`build_chunk_dataset`. That function validates each episode (raising, or with ``skip_invalid=True``
recording it in a :class:`~niaf_train.data.episodes.LoadSummary`), chunks it, and returns a memory-mapped
``datasets.Dataset`` cached under a fingerprint (or, with ``streaming=True``, an ``IterableDataset`` with the
same features).

Chunking, with chunk size K and stride s (both counted in source frames):

* samples start at frames t = 0, e, 2e, ... < T, where e = ``sample_every`` (default: s);
* the chunk of the sample at t holds the actions at frames t, t+s, ..., t+(K-1)s: its control rate is fps/s
  and its k-th point lies at τ_k = -1 + 2k/(K-1) (t_k = k·s/fps seconds after the observation);
* points past the episode end are padding: the action repeats the last real action of the chunk, the
  velocity is zero, and ``action_is_pad`` is True. Losses must mask them.

Dense supervision (``dense_every`` = d, a divisor of s; off by default): each sample also keeps the source
frames between its chunk points, every d-th one, t, t+d, ..., t+(K-1)s: M = (K-1)·s/d + 1 points at
τ_j = -1 + 2j/(M-1), on the same time axis as the chunk (the chunk point k is dense point j = k·s/d). A function
head (NIAF, B-spline) is evaluated there at no extra output cost; a waypoint head cannot use them. Padding as
for the chunk: points past the episode end repeat the last real source frame, velocity zero, ``dense_is_pad``.

Velocities from the actions (``difference_velocities=True``): for episodes without velocity labels, the
velocity at every source frame is the finite difference of the actions at the source rate, per second
(:func:`finite_difference_velocities`: central inside, one-sided at the episode ends); the ``velocity`` (and
``dense_velocity``) columns then hold them.

One sample (row) has these columns (LeRobot names):

=================================  ====================  ===========================================
column                             type                  content
=================================  ====================  ===========================================
``observation.images.<cam>``       image (PNG) or uint8  frame t, RGB; PNG decodes to [H, W, 3];
                                   [3, H, W] (raw)       with ``with_format("torch")`` both give
                                                         [3, H, W] (uint8 for PNG; datasets'
                                                         torch formatter makes raw arrays int64)
``observation.state``              float32 [S]           state at t (only if the episodes have states)
``task``                           string                the instruction
``action``                         float32 [K, D]        actions at t + k·s (physical units)
``velocity``                       float32 [K, D]        velocities at t + k·s, per second (only if the
                                                         episodes have velocities); 0 where padded
``action_is_pad``                  bool [K]              True for padded points
``tau``                            float32 [K]           τ_k = -1 + 2k/(K-1)
``dense_action``                   float32 [M, D]        actions at t + j·d (only with ``dense_every``)
``dense_velocity``                 float32 [M, D]        velocities there, per second (with velocities)
``dense_is_pad``                   bool [M]              True for padded dense points
``dense_tau``                      float32 [M]           τ_j = -1 + 2j/(M-1)
``episode_index``                  int64                 ``Episode.index``, else the reading order
``frame_index``                    int64                 t, in source frames (before the stride)
``timestamp``                      float32               t / fps seconds
``index``                          int64                 global row number
=================================  ====================  ===========================================

The dataset's ``info.description`` holds a JSON object under the key ``"niaf"`` with the effective control
rate ``fps`` (= source fps / s; compare it with ``NiafConfig.control_hz`` via :func:`check_control_hz`), the
source fps, ``chunk_size``, ``stride``, ``sample_every``, feature layout and the load summary; read it with
:func:`chunk_dataset_meta`, :func:`dataset_fps` and :func:`load_summary`.

Caching: the Arrow file lives in ``<cache_dir>/<name>-<fingerprint>/``; the fingerprint hashes the caller's
``fingerprint_parts`` (use :func:`file_fingerprint` for (path, size, mtime) of the source files) together
with every chunking option, so changing a file or an option rebuilds. A file lock makes concurrent
processes (Accelerate) build once and share the result.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .episodes import Episode, EpisodeError, LoadSummary, episode_layout, iter_valid_episodes

logger = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 1
"""Bumped whenever the layout of the cached Arrow rows changes, so old caches are rebuilt."""

NIAF_META_KEY = "niaf"
IMAGE_FORMATS = ("png", "raw")

EpisodeFactory = Callable[..., Iterable[Episode | None]]
"""A callable returning a fresh iterable of episodes (called once per build, and once per shard when streaming).

It is called without arguments, except when it takes a keyword argument ``select``: then the streaming builder
calls it as ``factory(select=keep)``, ``keep(position) -> bool`` saying which reading positions (0-based) the
shard being produced needs, and the factory may yield ``None`` at the other positions instead of reading those
episodes (``load_lerobot`` does), so that the shards of a stream do not each read the whole dataset."""


# ---------------------------------------------------------------------------------------------------------
# Pure chunking (numpy)
# ---------------------------------------------------------------------------------------------------------


def tau_grid(chunk_size: int) -> np.ndarray:
    """τ_k = -1 + 2k/(K-1) for k = 0..K-1, float32 [K]."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 2:
        raise ValueError(f"chunk_size must be an int >= 2, got {chunk_size!r}")
    k = np.arange(chunk_size, dtype=np.float64)
    return (-1.0 + 2.0 * k / (chunk_size - 1)).astype(np.float32)


def chunk_indices(length: int, start: int, chunk_size: int, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Source-frame indices of one chunk and its padding mask.

    Args:
        length: T, the episode length in frames.
        start: t, the observed frame (0 <= t < T).
        chunk_size: K.
        stride: s, frames between consecutive chunk points.

    Returns:
        ``(indices, is_pad)``: int64 [K] frame indices, padded points pointing at the last real point of the
        chunk, and bool [K] True where t + k·s >= T.
    """
    if not 0 <= start < length:
        raise ValueError(f"start frame {start} outside the episode [0, {length})")
    raw = start + stride * np.arange(chunk_size, dtype=np.int64)
    is_pad = raw >= length
    last_real = start + stride * ((length - 1 - start) // stride)
    return np.where(is_pad, last_real, raw), is_pad


def dense_points(chunk_size: int, stride: int, dense_every: int) -> int:
    """M = (K-1)·s/d + 1, the dense points of a chunk of K points at stride s kept every d source frames.

    Raises ValueError unless d >= 1 divides s (then every chunk point is a dense point)."""
    tau_grid(chunk_size)
    stride = _check_positive_int("stride", stride)
    dense_every = _check_positive_int("dense_every", dense_every)
    if stride % dense_every:
        raise ValueError(f"dense_every={dense_every} must divide the chunk stride {stride} (so that every chunk "
                         "point is a dense point)")
    return (chunk_size - 1) * stride // dense_every + 1


def finite_difference_velocities(actions: np.ndarray, fps: float) -> np.ndarray:
    """Velocities [T, D] per second of actions [T, D] sampled at ``fps`` Hz: central differences
    (a[t+1] - a[t-1])·fps/2 inside, one-sided (a[1] - a[0])·fps and (a[T-1] - a[T-2])·fps at the ends; zeros for a
    one-frame episode. float32."""
    a = np.asarray(actions, dtype=np.float64)
    if len(a) < 2:
        return np.zeros_like(a, dtype=np.float32)
    return np.gradient(a, 1.0 / float(fps), axis=0).astype(np.float32)


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


def chunk_episode(
    episode: Episode,
    chunk_size: int,
    stride: int = 1,
    sample_every: int | None = None,
    dense_every: int | None = None,
    difference_velocities: bool = False,
) -> Iterator[dict[str, Any]]:
    """Cut one (validated) episode into samples.

    Yields dicts with numpy values: ``"images"`` (camera → uint8 [H, W, 3]), ``"observation.state"``
    (float32 [S], if any), ``"action"`` float32 [K, D], ``"velocity"`` float32 [K, D] (if any),
    ``"action_is_pad"`` bool [K], ``"tau"`` float32 [K], ``"frame_index"`` int, ``"timestamp"`` float
    (seconds), ``"task"`` str; with ``dense_every`` also ``"dense_action"`` [M, D], ``"dense_velocity"``
    [M, D] (if any), ``"dense_is_pad"`` [M] and ``"dense_tau"`` [M]. With ``difference_velocities`` an episode
    without velocities gets :func:`finite_difference_velocities`. See the module docstring for the padding,
    stride and dense rules.
    """
    stride = _check_positive_int("stride", stride)
    every = stride if sample_every is None else _check_positive_int("sample_every", sample_every)
    tau = tau_grid(chunk_size)
    length = len(episode)
    velocities = episode.velocities
    if velocities is None and difference_velocities:
        velocities = finite_difference_velocities(episode.actions, episode.fps)
    if dense_every is not None:
        m = dense_points(chunk_size, stride, dense_every)
        dense_tau = tau_grid(m)
    for t in range(0, length, every):
        idx, is_pad = chunk_indices(length, t, chunk_size, stride)
        sample: dict[str, Any] = {
            "images": {cam: np.asarray(frames[t]) for cam, frames in episode.images.items()},
            "task": episode.instruction,
            "action": np.ascontiguousarray(episode.actions[idx], dtype=np.float32),
            "action_is_pad": is_pad.copy(),
            "tau": tau,
            "frame_index": t,
            "timestamp": t / float(episode.fps),
        }
        if episode.states is not None:
            sample["observation.state"] = np.asarray(episode.states[t], dtype=np.float32)
        if velocities is not None:
            vel = np.array(velocities[idx], dtype=np.float32)
            vel[is_pad] = 0.0
            sample["velocity"] = vel
        if dense_every is not None:
            didx, dpad = chunk_indices(length, t, m, dense_every)
            sample["dense_action"] = np.ascontiguousarray(episode.actions[didx], dtype=np.float32)
            sample["dense_is_pad"] = dpad.copy()
            sample["dense_tau"] = dense_tau
            if velocities is not None:
                dvel = np.array(velocities[didx], dtype=np.float32)
                dvel[dpad] = 0.0
                sample["dense_velocity"] = dvel
        yield sample


# ---------------------------------------------------------------------------------------------------------
# Features and rows
# ---------------------------------------------------------------------------------------------------------


def make_features(
    chunk_size: int,
    action_dim: int,
    state_dim: int | None,
    image_shapes: Mapping[str, tuple[int, int, int]],
    has_velocity: bool,
    image_format: str = "png",
    dense_points: int | None = None,
):
    """The ``datasets.Features`` of a chunk dataset (see the module docstring for the columns); ``dense_points``
    M adds the dense columns."""
    import datasets

    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    feats: dict[str, Any] = {}
    for cam, shape in image_shapes.items():
        feats[f"observation.images.{cam}"] = (
            datasets.Image()
            if image_format == "png"
            else datasets.Array3D(shape=(shape[2], shape[0], shape[1]), dtype="uint8")
        )
    if state_dim is not None:
        feats["observation.state"] = datasets.List(datasets.Value("float32"), length=state_dim)
    feats["task"] = datasets.Value("string")
    feats["action"] = datasets.Array2D(shape=(chunk_size, action_dim), dtype="float32")
    if has_velocity:
        feats["velocity"] = datasets.Array2D(shape=(chunk_size, action_dim), dtype="float32")
    feats["action_is_pad"] = datasets.List(datasets.Value("bool"), length=chunk_size)
    feats["tau"] = datasets.List(datasets.Value("float32"), length=chunk_size)
    if dense_points is not None:
        feats["dense_action"] = datasets.Array2D(shape=(dense_points, action_dim), dtype="float32")
        if has_velocity:
            feats["dense_velocity"] = datasets.Array2D(shape=(dense_points, action_dim), dtype="float32")
        feats["dense_is_pad"] = datasets.List(datasets.Value("bool"), length=dense_points)
        feats["dense_tau"] = datasets.List(datasets.Value("float32"), length=dense_points)
    feats["episode_index"] = datasets.Value("int64")
    feats["frame_index"] = datasets.Value("int64")
    feats["timestamp"] = datasets.Value("float32")
    feats["index"] = datasets.Value("int64")
    return datasets.Features(feats)


def encode_png(frame: np.ndarray, compress_level: int = 1) -> bytes:
    """PNG bytes of a uint8 [H, W, 3] frame (fast compression: decoding speed is what training needs)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frame)).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def _sample_to_row(sample: dict[str, Any], episode_index: int, row_index: int, image_format: str) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for cam, frame in sample["images"].items():
        key = f"observation.images.{cam}"
        if image_format == "png":
            row[key] = {"bytes": encode_png(frame), "path": None}
        else:  # channel-first, like datasets' torch formatting of decoded images
            row[key] = np.ascontiguousarray(np.moveaxis(frame, -1, 0))
    if "observation.state" in sample:
        row["observation.state"] = sample["observation.state"]
    row["task"] = sample["task"]
    row["action"] = sample["action"]
    if "velocity" in sample:
        row["velocity"] = sample["velocity"]
    row["action_is_pad"] = sample["action_is_pad"]
    row["tau"] = sample["tau"]
    for key in ("dense_action", "dense_velocity", "dense_is_pad", "dense_tau"):
        if key in sample:
            row[key] = sample[key]
    row["episode_index"] = int(episode_index)
    row["frame_index"] = int(sample["frame_index"])
    row["timestamp"] = float(sample["timestamp"])
    row["index"] = int(row_index)
    return row


# ---------------------------------------------------------------------------------------------------------
# Fingerprints and metadata
# ---------------------------------------------------------------------------------------------------------


def file_fingerprint(paths: Iterable[str | os.PathLike[str]]) -> list[list[Any]]:
    """``[[path, size, mtime_ns, ctime_ns, inode], ...]`` for the given files; folders are walked recursively.

    Pass the result as (part of) ``fingerprint_parts`` so that editing, adding or removing a source file
    invalidates the cache. Size and modification time alone miss an edit that keeps both (``touch -r``, a
    copy with preserved times); the status-change time cannot be set back by a user and changes with every
    write, and the inode changes when a file is replaced, so a changed file never reuses a stale cache.
    """
    out: list[list[Any]] = []
    for p in paths:
        p = Path(p).resolve()
        if p.is_dir():
            files = sorted(q for q in p.rglob("*") if q.is_file())
        elif p.exists():
            files = [p]
        else:
            raise FileNotFoundError(f"file_fingerprint: {p} does not exist")
        for f in files:
            st = f.stat()
            out.append([str(f), int(st.st_size), int(st.st_mtime_ns), int(st.st_ctime_ns), int(st.st_ino)])
    return out


def fingerprint(parts: Any) -> str:
    """A stable 20-hex-digit hash of JSON-serialisable ``parts``."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:20]


def niaf_cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The one root of NIAF's caches: ``cache_dir``, else ``$NIAF_CACHE``, else ``~/.cache/niaf``.

    Chunk datasets live in ``<root>/chunks`` (:func:`chunk_cache_dir`), generated Meta-World demonstrations in
    ``<root>/metaworld``; ``niaf-data --cache-dir`` and ``niaf-train --data.cache_dir`` both name this root, so
    ``niaf-data inspect`` builds the very cache ``niaf-train`` then reuses.
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("NIAF_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "niaf"


def chunk_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """``<niaf_cache_root(cache_dir)>/chunks``: where the command lines keep chunk datasets."""
    return niaf_cache_root(cache_dir) / "chunks"


def default_cache_dir() -> Path:
    """Chunk datasets of loaders called without ``cache_dir``: :func:`chunk_cache_dir` of the default root."""
    return chunk_cache_dir(None)


def cache_size_report(dataset: Any) -> dict[str, Any]:
    """Where a cached chunk dataset lives and how big it is: total bytes, and bytes of each camera's image column
    per sample (one frame per camera and sample), with the image storage format."""
    meta = chunk_dataset_meta(dataset)
    files = [Path(f["filename"]) for f in getattr(dataset, "cache_files", None) or []]
    cameras = [c for c in dataset.column_names if c.startswith("observation.images.")]
    rows = max(len(dataset), 1)
    table = dataset.data
    per_camera = {c.removeprefix("observation.images."): table.column(c).nbytes / rows for c in cameras}
    return {
        "folder": str(files[0].parent) if files else None,
        "bytes": int(sum(f.stat().st_size for f in files if f.is_file())),
        "image_format": meta.get("image_format"),
        "image_bytes_per_frame_per_camera": per_camera,
    }


def chunk_dataset_meta(dataset: Any) -> dict[str, Any]:
    """The ``"niaf"`` metadata object stored in a chunk dataset's ``info.description``."""
    desc = getattr(getattr(dataset, "info", None), "description", None) or ""
    try:
        meta = json.loads(desc)[NIAF_META_KEY]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(
            "this dataset carries no NIAF chunk metadata in info.description; build it with "
            "niaf_train.data.chunking.build_chunk_dataset"
        ) from err
    return meta


def dataset_fps(dataset: Any) -> float:
    """The control rate of the chunks (source fps / stride), in Hz."""
    return float(chunk_dataset_meta(dataset)["fps"])


def load_summary(dataset: Any) -> LoadSummary | None:
    """The :class:`LoadSummary` stored with a dataset (None for streaming datasets, counted lazily)."""
    summary = chunk_dataset_meta(dataset).get("summary")
    return None if summary is None else LoadSummary.from_dict(summary)


def check_control_hz(dataset: Any, control_hz: float, rel_tol: float = 1e-6) -> None:
    """Raise ValueError if the model's ``control_hz`` differs from the dataset's chunk rate."""
    fps = dataset_fps(dataset)
    if abs(fps - float(control_hz)) > rel_tol * max(abs(fps), 1.0):
        raise ValueError(
            f"control rate mismatch: the dataset's chunks are at {fps} Hz (source fps / stride) but the model "
            f"config has control_hz={control_hz}; set NiafConfig.control_hz={fps} or change the stride."
        )


# ---------------------------------------------------------------------------------------------------------
# Builder
# ---------------------------------------------------------------------------------------------------------


def _layout(episode: Episode, options: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "image_shapes": {cam: tuple(int(s) for s in frames.shape[1:]) for cam, frames in episode.images.items()},
        "action_dim": episode.action_dim,
        "state_dim": episode.state_dim,
        "has_velocity": episode.velocities is not None or bool(options.get("difference_velocities")),
        "fps": float(episode.fps),
    }


def _features(layout: Mapping[str, Any], options: Mapping[str, Any]):
    dense = options.get("dense_every")
    return make_features(
        options["chunk_size"], layout["action_dim"], layout["state_dim"], layout["image_shapes"],
        layout["has_velocity"], options["image_format"],
        None if dense is None else dense_points(options["chunk_size"], options["stride"], dense),
    )


def _chunks(ep: Episode, options: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    return chunk_episode(ep, options["chunk_size"], options["stride"], options["sample_every"],
                         options.get("dense_every"), bool(options.get("difference_velocities")))


def _check_fps(ep: Episode, source_fps: float) -> None:
    if abs(float(ep.fps) - source_fps) > 1e-6 * source_fps:
        raise ep.error("fps", f"{ep.fps} Hz differs from the first episode's {source_fps} Hz; one dataset, one clock")


def _peek_first_valid(episodes: Iterator[Episode], summary: LoadSummary, skip_invalid: bool):
    valid = iter_valid_episodes(episodes, summary, skip_invalid)
    for first in valid:
        return first, valid
    return None, valid


def build_chunk_dataset(
    episode_factory: EpisodeFactory,
    chunk_size: int,
    stride: int = 1,
    cache_dir: str | os.PathLike[str] | None = None,
    fingerprint_parts: Any = None,
    *,
    name: str = "niaf",
    sample_every: int | None = None,
    skip_invalid: bool = False,
    streaming: bool = False,
    image_format: str = "png",
    num_shards: int = 16,
    total_episodes: int | None = None,
    writer_batch_size: int = 256,
    extra_meta: Mapping[str, Any] | None = None,
    dense_every: int | None = None,
    difference_velocities: bool = False,
):
    """Validate, chunk and cache episodes as a ``datasets.Dataset`` (or stream them as an ``IterableDataset``).

    Args:
        episode_factory: zero-argument callable returning an iterable of :class:`Episode` (called once per
            build; episodes may load images lazily with :class:`~niaf_train.data.episodes.LazyFrames`).
        chunk_size: K, actions per sample.
        stride: s, source frames between consecutive chunk points; the chunk rate is fps/s.
        cache_dir: where cached datasets live (default :func:`default_cache_dir`). Ignored when streaming.
        fingerprint_parts: JSON-serialisable description of the source (e.g. ``file_fingerprint([...])``
            plus loader options). ``None`` disables caching: the dataset is built in a fresh temporary
            folder under ``cache_dir``.
        name: prefix of the cache folder (e.g. ``"lerobot"``, ``"calvin"``).
        sample_every: source frames between consecutive sample starts (default: ``stride``).
        skip_invalid: skip (log and count) invalid episodes instead of raising :class:`EpisodeError`.
        streaming: return an ``IterableDataset`` built on the fly (no cache, no summary); it has
            ``num_shards`` shards (episode i goes to shard i mod num_shards) so that
            ``datasets.distributed.split_dataset_by_node`` and DataLoader workers split the episodes.
        image_format: ``"png"`` (``datasets.Image``; compact, decoded on access) or ``"raw"``
            (``Array3D`` uint8; larger on disk, no decoding).
        num_shards: shards of the streaming dataset.
        total_episodes: only for the progress bar.
        writer_batch_size: rows per Arrow record batch.
        extra_meta: JSON-serialisable extras stored in the metadata (e.g. ``{"format": "lerobot"}``).
        dense_every: keep every d-th source frame between chunk points as dense targets (d divides
            ``stride``; None: no dense columns, the layout of older caches).
        difference_velocities: velocity columns from :func:`finite_difference_velocities` of the actions for
            episodes without velocities.

    Returns:
        ``datasets.Dataset`` (memory-mapped Arrow) or ``datasets.IterableDataset``; metadata in
        ``info.description`` (see :func:`chunk_dataset_meta`).

    Raises:
        EpisodeError: an invalid episode (without ``skip_invalid``), or episodes with different layouts.
        ValueError: no valid episode at all, or bad options.
    """
    tau_grid(chunk_size)
    stride = _check_positive_int("stride", stride)
    if sample_every is not None:
        _check_positive_int("sample_every", sample_every)
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    options = {
        "chunk_size": int(chunk_size),
        "stride": stride,
        "sample_every": stride if sample_every is None else int(sample_every),
        "image_format": image_format,
        "skip_invalid": bool(skip_invalid),
    }
    # only when set: the fingerprints (and cache folders) of datasets built without them stay what they were
    if dense_every is not None:
        dense_points(chunk_size, stride, dense_every)
        options["dense_every"] = int(dense_every)
    if difference_velocities:
        options["difference_velocities"] = True

    if streaming:
        return _build_streaming(episode_factory, options, num_shards, extra_meta)

    cache_root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache_root.mkdir(parents=True, exist_ok=True)
    if fingerprint_parts is None:
        target = Path(tempfile.mkdtemp(prefix=f"{name}-nocache-", dir=cache_root))
        return _build_into(target, episode_factory, options, total_episodes, writer_batch_size, extra_meta, None)

    fp = fingerprint({"version": CACHE_FORMAT_VERSION, "parts": fingerprint_parts, "options": options,
                      "extra": extra_meta})
    target = cache_root / f"{name}-{fp}"
    from filelock import FileLock

    with FileLock(str(cache_root / f"{name}-{fp}.lock")):
        if (target / "niaf_meta.json").is_file():
            logger.info("loading cached chunk dataset %s", target)
            try:
                return _load_cached(target)
            except Exception as err:  # a truncated or damaged cache is rebuilt, not an error on every run
                logger.warning("chunk cache %s is unreadable (%s: %s); rebuilding it", target, type(err).__name__, err)
                shutil.rmtree(target)
        return _build_into(target, episode_factory, options, total_episodes, writer_batch_size, extra_meta, fp)



def _load_cached(target: Path):
    import datasets

    meta = json.loads((target / "niaf_meta.json").read_text())
    features = datasets.Features.from_dict(meta.pop("features"))
    info = datasets.DatasetInfo(description=json.dumps({NIAF_META_KEY: meta}), features=features)
    return datasets.Dataset.from_file(str(target / "data.arrow"), info=info)


def _build_into(
    target: Path,
    episode_factory: EpisodeFactory,
    options: dict[str, Any],
    total_episodes: int | None,
    writer_batch_size: int,
    extra_meta: Mapping[str, Any] | None,
    fp: str | None,
):
    from datasets.arrow_writer import ArrowWriter
    from tqdm.auto import tqdm

    summary = LoadSummary()
    first, valid = _peek_first_valid(iter(episode_factory()), summary, options["skip_invalid"])
    if first is None:
        reasons = "; ".join(f"{s.source} episode {s.episode_id}: {s.reason}" for s in summary.skipped[:5])
        raise ValueError(f"no valid episode to build a dataset from{': ' + reasons if reasons else ''}")
    layout = _layout(first, options)
    features = _features(layout, options)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    try:
        writer = ArrowWriter(features=features, path=str(tmp / "data.arrow"), writer_batch_size=writer_batch_size)
        batch: list[dict[str, Any]] = []
        bar = tqdm(total=total_episodes, desc=f"chunking {target.name}", unit="ep", leave=False)

        def all_valid() -> Iterator[Episode]:
            yield first
            yield from valid

        for ep in all_valid():
            ordinal = summary.episodes + len(summary.skipped)  # reading order, skipped episodes included
            _check_fps(ep, layout["fps"])
            episode_index = ep.index if ep.index is not None else ordinal
            try:
                rows = [
                    _sample_to_row(s, episode_index, summary.samples + j, options["image_format"])
                    for j, s in enumerate(_chunks(ep, options))
                ]
            except (ValueError, OSError) as err:  # lazy frames failing to decode
                error = err if isinstance(err, EpisodeError) else ep.error("images", f"could not read a frame: {err}")
                if not options["skip_invalid"]:
                    raise error from err
                summary.skip(error)
                bar.update(1)
                continue
            summary.episodes += 1
            summary.frames += len(ep)
            summary.samples += len(rows)
            batch.extend(rows)
            if len(batch) >= writer_batch_size:
                writer.write_batch({k: [r[k] for r in batch] for k in batch[0]})
                batch = []
            bar.update(1)
        if batch:
            writer.write_batch({k: [r[k] for r in batch] for k in batch[0]})
        writer.finalize()
        writer.close()
        bar.close()
        meta = _meta(layout, options, summary, extra_meta, fp)
        meta_with_features = dict(meta, features=features.to_dict())
        (tmp / "niaf_meta.json").write_text(json.dumps(meta_with_features, indent=1))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if summary.skipped:
        logger.warning("%s: skipped %d invalid episode(s); see load_summary(dataset)", target.name, len(summary.skipped))
    return _load_cached(target)


def _meta(
    layout: dict[str, Any],
    options: dict[str, Any],
    summary: LoadSummary | None,
    extra_meta: Mapping[str, Any] | None,
    fp: str | None,
) -> dict[str, Any]:
    return {
        "format_version": CACHE_FORMAT_VERSION,
        "fps": layout["fps"] / options["stride"],
        "source_fps": layout["fps"],
        **options,
        "action_dim": layout["action_dim"],
        "state_dim": layout["state_dim"],
        "has_velocity": layout["has_velocity"],
        "cameras": {cam: list(shape) for cam, shape in layout["image_shapes"].items()},
        "summary": None if summary is None else summary.to_dict(),
        "fingerprint": fp,
        "extra": dict(extra_meta or {}),
    }


def _takes_select(factory: EpisodeFactory) -> bool:
    """Whether an episode factory accepts the keyword argument ``select`` (see :data:`EpisodeFactory`)."""
    import inspect

    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # builtins and some callables have no signature
        return False
    p = params.get("select")
    return p is not None and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)


def _build_streaming(
    episode_factory: EpisodeFactory,
    options: dict[str, Any],
    num_shards: int,
    extra_meta: Mapping[str, Any] | None,
):
    import datasets

    num_shards = _check_positive_int("num_shards", num_shards)
    probe = LoadSummary()
    first, _ = _peek_first_valid(iter(episode_factory()), probe, options["skip_invalid"])
    if first is None:
        raise ValueError("no valid episode to stream")
    layout = _layout(first, options)
    features = _features(layout, options)

    reference = episode_layout(first)
    selectable = _takes_select(episode_factory)

    def generate(shard_ids: Sequence[int]):
        wanted = set(shard_ids)

        def keep(position: int) -> bool:
            return position % num_shards in wanted

        summary = LoadSummary()
        position = -1

        def own_episodes() -> Iterator[Episode]:
            # only this shard's episodes are validated (against the dataset's first episode) and chunked; a
            # factory that takes `select` does not even read the others
            nonlocal position
            source = episode_factory(select=keep) if selectable else episode_factory()
            for position, ep in enumerate(source):
                if keep(position):
                    if ep is None:
                        raise ValueError(f"the episode factory yielded None at position {position}, which was selected")
                    yield ep

        row = 0
        for ep in iter_valid_episodes(own_episodes(), summary, options["skip_invalid"], reference=reference):
            ordinal = position  # reading order, skipped episodes included
            summary.episodes += 1
            _check_fps(ep, layout["fps"])
            episode_index = ep.index if ep.index is not None else ordinal
            for s in _chunks(ep, options):
                # `index` is unique per shard only: rows are produced lazily on several workers.
                yield _sample_to_row(s, episode_index, row, options["image_format"])
                row += 1

    meta = _meta(layout, options, None, extra_meta, None)
    meta["streaming"] = True
    ds = datasets.IterableDataset.from_generator(
        generate, features=features, gen_kwargs={"shard_ids": list(range(num_shards))}
    )
    ds.info.description = json.dumps({NIAF_META_KEY: meta})
    return ds


# ---------------------------------------------------------------------------------------------------------
# Fast torch view
# ---------------------------------------------------------------------------------------------------------


def _feature_numpy_dtype(feature: Any) -> np.dtype | None:
    import datasets

    if isinstance(feature, (datasets.Array2D, datasets.Array3D)):
        return np.dtype(feature.dtype)
    if isinstance(feature, datasets.List):
        return _feature_numpy_dtype(feature.feature)
    if isinstance(feature, datasets.Value):
        return None if feature.dtype in ("string", "large_string") else np.dtype(feature.dtype)
    return None


def _decode_png_batch(cells: list[Any]) -> Any:
    import torch
    from PIL import Image

    frames = []
    for cell in cells:
        with Image.open(io.BytesIO(cell["bytes"])) as img:
            frames.append(np.asarray(img.convert("RGB")))
    # [B, H, W, 3] -> contiguous [B, 3, H, W]: torch.stack in the DataLoader's collate is slow on
    # non-contiguous views, numpy's transposing copy is not
    return torch.from_numpy(np.ascontiguousarray(np.stack(frames).transpose(0, 3, 1, 2)))


class _TorchBatchTransform:
    """Turns a python-formatted batch of a chunk dataset into tensors of the features' dtypes."""

    def __init__(self, features: Any) -> None:
        import datasets

        self.images = {k for k, f in features.items() if isinstance(f, datasets.Image)}
        self.dtypes = {k: _feature_numpy_dtype(f) for k, f in features.items()}

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, Any]:
        import torch

        out: dict[str, Any] = {}
        for key, values in batch.items():
            if key in self.images:
                out[key] = _decode_png_batch(values)
            elif self.dtypes.get(key) is None:
                out[key] = values
            else:
                # raw image storage stays uint8 [3, H, W]; numbers get their feature dtype
                out[key] = torch.from_numpy(np.asarray(values, dtype=self.dtypes[key]))
        return out


def with_torch_format(dataset: Any) -> Any:
    """A view of a chunk ``datasets.Dataset`` whose rows are torch tensors, decoded fast.

    ``dataset.with_format("torch")`` works too and is about as fast for PNG storage; this view also keeps
    each feature's dtype where datasets' formatter does not: images uint8 [3, H, W] contiguous (raw storage
    too, without the int64 promotion), ``action``/``velocity``/``tau``/``observation.state`` float32,
    ``action_is_pad`` bool, indices int64, ``task`` str. Use it as a map-style dataset for
    ``torch.utils.data.DataLoader``. It is a ``datasets`` transform (``with_transform``): it is not kept by
    ``map`` or ``save_to_disk``. For a streaming ``IterableDataset`` use ``with_format("torch")``.

    Throughput note: on a busy shared CPU, ``torch.stack`` in the DataLoader's collate with 2 intra-op threads
    was measured hundreds of times slower than with 1; load data with ``torch.set_num_threads(1)`` in the
    loading process or use DataLoader workers (which default to one thread each).
    """
    import datasets

    if isinstance(dataset, datasets.IterableDataset):
        raise TypeError("with_torch_format takes a map-style datasets.Dataset; use .with_format('torch') when streaming")
    ds = dataset
    for key, feat in dataset.features.items():
        if isinstance(feat, datasets.Image) and feat.decode:
            ds = ds.cast_column(key, datasets.Image(decode=False))
    return ds.with_transform(_TorchBatchTransform(dataset.features))


__all__ = [
    "CACHE_FORMAT_VERSION",
    "EpisodeFactory",
    "build_chunk_dataset",
    "check_control_hz",
    "chunk_dataset_meta",
    "chunk_episode",
    "chunk_indices",
    "dataset_fps",
    "dense_points",
    "finite_difference_velocities",
    "cache_size_report",
    "chunk_cache_dir",
    "default_cache_dir",
    "niaf_cache_root",
    "encode_png",
    "file_fingerprint",
    "fingerprint",
    "load_summary",
    "make_features",
    "tau_grid",
    "with_torch_format",
]
