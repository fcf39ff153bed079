"""The cached ``datasets.Dataset`` builder (:func:`build_chunk_dataset`): validates, chunks and writes episodes
as Arrow rows under a fingerprint, or streams them as an ``IterableDataset``. The columns and rules are in
:mod:`niaf_train.data.chunking`.
"""

from __future__ import annotations

import inspect
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

from .chunk_cache import NIAF_META_KEY, default_cache_dir, fingerprint
from .chunk_math import _check_positive_int, chunk_episode, dense_points, tau_grid
from .episodes import Episode, EpisodeError, LoadSummary, episode_layout, iter_valid_episodes

logger = logging.getLogger(f"{__package__}.chunking")  # the module this code was split from: logging set-ups keep working


CACHE_FORMAT_VERSION = 1
"""Bumped whenever the layout of the cached Arrow rows changes, so old caches are rebuilt."""

IMAGE_FORMATS = ("png", "raw")
WRITER_BATCH_BYTES = 32 << 20
"""A record batch of the chunk cache is written once it holds this many bytes of row data (or
``writer_batch_size`` rows). Each record batch costs ~12 kB of resident memory in every process that opens the
cache (Arrow's batch objects, not the memory-mapped data), so batches must be large: with ~180-row batches a
10^6-sample cache held 65 MiB per process (``benchmarks/bench_data_scale.py``)."""

EpisodeFactory = Callable[..., Iterable[Episode | None]]
"""A callable returning a fresh iterable of episodes (called once per build, and once per shard when streaming).

It is called without arguments, except when it takes a keyword argument ``select``: then the streaming builder
calls it as ``factory(select=keep)``, ``keep(position) -> bool`` saying which reading positions (0-based) the
shard being produced needs, and the factory may yield ``None`` at the other positions instead of reading those
episodes (``load_lerobot`` does), so that the shards of a stream do not each read the whole dataset."""


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
    import datasets  # heavy: datasets (pyarrow, fsspec)

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
    from PIL import Image  # lazy: Pillow, only for image features

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


def _row_nbytes(row: Mapping[str, Any]) -> int:
    """Bytes of one cache row's data (encoded images, arrays; 8 per scalar), to size record batches."""
    total = 0
    for value in row.values():
        if isinstance(value, dict):  # an encoded image: {"bytes": ..., "path": None}
            total += len(value.get("bytes") or b"")
        elif isinstance(value, np.ndarray):
            total += value.nbytes
        elif isinstance(value, (bytes, str)):
            total += len(value)
        else:
            total += 8
    return total


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
    writer_batch_size: int = 4096,
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
        writer_batch_size: rows per Arrow record batch at most (a batch is also written once its rows hold
            :data:`WRITER_BATCH_BYTES`); resident memory per open cache grows with the number of batches.
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
    writer_batch_size = _check_positive_int("writer_batch_size", writer_batch_size)
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
    from filelock import FileLock  # lazy: only a cache build takes the lock

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
    import datasets  # heavy: datasets (pyarrow, fsspec)

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
    from datasets.arrow_writer import ArrowWriter  # heavy: datasets (pyarrow, fsspec)
    from tqdm.auto import tqdm  # lazy: tqdm.auto probes for notebook support

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
        sizes: list[int] = []  # _row_nbytes of each row in batch

        def write(rows: list[dict[str, Any]]) -> None:
            writer.write_batch({k: [r[k] for r in rows] for k in rows[0]})

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
            sizes.extend(_row_nbytes(r) for r in rows)
            while len(batch) >= writer_batch_size:  # full batches of exactly writer_batch_size rows
                write(batch[:writer_batch_size])
                batch, sizes = batch[writer_batch_size:], sizes[writer_batch_size:]
            if batch and sum(sizes) >= WRITER_BATCH_BYTES:
                write(batch)
                batch, sizes = [], []
            bar.update(1)
        if batch:
            write(batch)
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
    import datasets  # heavy: datasets (pyarrow, fsspec)

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
