"""Where chunk datasets are cached and what they carry: source-file fingerprints, cache folders, the ``"niaf"``
metadata in ``info.description`` (control rate, load summary) and the cache size report.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .episodes import LoadSummary

NIAF_META_KEY = "niaf"


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
