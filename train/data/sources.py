"""The one registry of data sources, used by both command lines (``niaf-data`` and ``niaf-train``).

Each source names a loader that turns a folder (or a Hub dataset id, resolved by :mod:`.hub_datasets`) into
the chunk dataset training reads (columns: :mod:`.chunking`):

==================  ========================================================================================
``lerobot``         LeRobot v3.0 datasets (:func:`.lerobot_v3.load_lerobot`)
``libero_lerobot``  LIBERO converted to LeRobot (true 20 Hz rate, LeRobot's camera names)
``libero``          LIBERO's own HDF5 release (:func:`.libero.load_libero`)
``calvin``          CALVIN's release layout (:func:`.calvin.load_calvin`)
``metaworld``       scripted-expert Meta-World demonstrations, generated once into the cache
                    (:func:`metaworld_demonstrations`), then read as LeRobot v3.0
==================  ========================================================================================

Names are spelled with underscores; ``libero-lerobot`` is accepted too (the spelling of ``niaf-data``'s
``--format`` before the registry existed).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .calvin import load_calvin
from .chunking import niaf_cache_root
from .lerobot_v3 import load_lerobot, load_libero_lerobot
from .libero import load_libero
from .metaworld import generate_metaworld_dataset

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadOptions:
    """How to cut a source into chunks; options a format does not have are refused by :func:`load_source`."""

    chunk_size: int
    stride: int = 1
    cache_dir: str | os.PathLike[str] | None = None  # the chunk cache folder (chunking.chunk_cache_dir)
    cameras: Sequence[str] | None = None  # None: the format's cameras; (): none (statistics only, no images)
    velocity: str = "auto"  # lerobot formats: "auto" | "require" | "none"; every format: "difference" (of the actions)
    sample_every: int | None = None  # None: the loader's default
    dense_every: int | None = None  # dense targets every d source frames (chunking.py), every format
    skip_invalid: bool = False
    max_episodes: int | None = None
    fps: float | None = None  # lerobot formats: the true control rate when info.json's is wrong
    split: str | None = None  # calvin: training | validation


@dataclass(frozen=True)
class DataSource:
    name: str
    summary: str
    load: Callable[[Path, LoadOptions], Any]
    options: frozenset[str] = field(default_factory=frozenset)  # format-specific LoadOptions it accepts


def _common(o: LoadOptions, episodes_key: str, *, cameras: bool = True) -> dict[str, Any]:
    """Keyword arguments every loader shares; ``episodes_key`` is the loader's name for the episode limit."""
    kw: dict[str, Any] = {"cache_dir": o.cache_dir, "skip_invalid": o.skip_invalid}
    if cameras and o.cameras is not None:
        kw["cameras"] = list(o.cameras)
    if o.sample_every is not None:
        kw["sample_every"] = o.sample_every
    if o.dense_every is not None:
        kw["dense_every"] = o.dense_every
    if o.velocity == "difference":  # velocity labels from the actions' finite differences (chunking.py)
        kw["difference_velocities"] = True
    if o.max_episodes is not None:
        kw[episodes_key] = list(range(o.max_episodes)) if episodes_key == "episodes" else o.max_episodes
    return kw


def _load_lerobot(path: Path, o: LoadOptions, *, libero: bool = False) -> Any:
    state_only = o.cameras is not None and len(o.cameras) == 0  # statistics only: no image or video is read
    # "difference": velocity labels are the actions' finite differences, whatever the dataset holds
    kw = dict(_common(o, "episodes", cameras=not state_only),
              velocity="none" if o.velocity == "difference" else o.velocity)
    if state_only:
        kw["state_only"] = True
    if o.fps is not None:
        kw["fps" if libero else "fps_override"] = o.fps
    loader = load_libero_lerobot if libero else load_lerobot
    return loader(path, o.chunk_size, o.stride, **kw)


def _load_libero(path: Path, o: LoadOptions) -> Any:
    return load_libero(path, chunk_size=o.chunk_size, stride=o.stride, **_common(o, "max_demos_per_file"))


def _load_calvin(path: Path, o: LoadOptions) -> Any:
    return load_calvin(path, o.split or "training", chunk_size=o.chunk_size, stride=o.stride,
                       **_common(o, "max_episodes"))


SOURCES: dict[str, DataSource] = {
    s.name: s
    for s in (
        DataSource("lerobot", "LeRobot v3.0 dataset", _load_lerobot, frozenset({"fps", "velocity"})),
        DataSource("libero_lerobot", "LIBERO converted to LeRobot v3.0",
                   lambda path, o: _load_lerobot(path, o, libero=True), frozenset({"fps", "velocity"})),
        DataSource("libero", "LIBERO HDF5 release", _load_libero),
        DataSource("calvin", "CALVIN release layout", _load_calvin, frozenset({"split"})),
        DataSource("metaworld", "generated Meta-World demonstrations (LeRobot v3.0)", _load_lerobot,
                   frozenset({"velocity"})),
    )
}
ALIASES = {"libero-lerobot": "libero_lerobot"}
_DEFAULTS = LoadOptions(chunk_size=1)


def get_source(name: str) -> DataSource:
    """The source called ``name`` (an alias is accepted). Raises ValueError naming the known sources."""
    source = SOURCES.get(ALIASES.get(name, name))
    if source is None:
        raise ValueError(f"unknown data source {name!r}; expected one of {sorted(SOURCES)}")
    return source


def load_source(name: str, path: str | os.PathLike[str], options: LoadOptions) -> Any:
    """The chunk dataset of ``path`` read as source ``name``.

    Raises:
        ValueError: an unknown source, or an option the source does not have (e.g. ``fps`` for CALVIN).
    """
    source = get_source(name)
    for option in ("fps", "split"):
        if getattr(options, option) != getattr(_DEFAULTS, option) and option not in source.options:
            raise ValueError(f"{option} does not apply to data source {source.name!r}")
    return source.load(Path(path), options)


# ----------------------------------------------------------------------------------------------------------
# Meta-World: generated once per setting, then read like any LeRobot dataset
# ----------------------------------------------------------------------------------------------------------
METAWORLD_SETTINGS = ("tasks", "episodes", "size", "camera", "stride", "seed", "noise", "state", "crop")
"""The generation settings of :func:`metaworld_demonstrations` (all part of the cache folder's name), besides the
optional ``view`` (camera view) and ``instructions`` (instruction set), both default ``niaf`` and part of the name
only when they are not the default, so that the folders of earlier versions stay valid."""


def metaworld_cache_dir(settings: dict[str, Any], cache_root: str | os.PathLike[str] | None = None) -> Path:
    """Folder of the demonstrations generated with ``settings`` (keys of :func:`metaworld_demonstrations`),
    named by a hash of every setting so that a change regenerates rather than reuses."""
    keyed = {k: v for k, v in settings.items() if not (k in ("view", "instructions") and v == "niaf")}
    key = hashlib.sha256(json.dumps({**keyed, "v": 3}, sort_keys=True).encode()).hexdigest()[:12]
    return niaf_cache_root(cache_root) / "metaworld" / f"metaworld-{key}"


def metaworld_demonstrations(settings: dict[str, Any], cache_root: str | os.PathLike[str] | None = None) -> Path:
    """Generate the Meta-World demonstrations of ``settings`` once (into a temporary folder renamed when
    complete) and return their folder.

    ``settings``: ``tasks``, ``episodes`` (per task), ``size`` (image pixels), ``camera`` (comma-separated
    names), ``stride``, ``seed``,
    ``noise`` (expert action noise), ``state`` (``full`` or ``agent_pos``), ``crop`` (image box or None) and
    optionally ``view`` (camera view) and ``instructions`` (instruction set), as
    :func:`.metaworld.generate_metaworld_dataset` takes them.
    """
    missing = sorted(set(METAWORLD_SETTINGS) - set(settings))
    if missing:
        raise ValueError(f"metaworld_demonstrations: `settings` lacks {missing}; expected the keys {list(METAWORLD_SETTINGS)}")
    target = metaworld_cache_dir(settings, cache_root)
    if (target / "meta" / "info.json").is_file():
        logger.info("using cached Meta-World demonstrations %s", target)
        return target
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    logger.info("generating Meta-World demonstrations (%s x %d episodes) into %s",
                settings["tasks"], settings["episodes"], target)
    generate_metaworld_dataset(tmp, tasks=settings["tasks"], episodes_per_task=settings["episodes"],
                               cameras=tuple(settings["camera"].split(",")), image_size=settings["size"],
                               stride=settings["stride"], seed=settings["seed"], action_noise=settings["noise"],
                               state=settings["state"], crop=settings["crop"],
                               camera_view=settings.get("view", "niaf"),
                               instructions=settings.get("instructions", "niaf"))
    os.rename(tmp, target)
    return target
