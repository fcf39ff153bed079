"""Paths inside a LeRobot v3.0 folder: the ``info.json`` path templates, filled safely, and ``safe_join``.

Every path built from an ``info.json`` template must stay inside the dataset root.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .lerobot_meta import LeRobotV3Meta


DEFAULT_DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
DEFAULT_VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"


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
