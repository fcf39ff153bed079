"""The run's demonstrations: the configured source read through the data registry, the split into training and
held-out episodes, and the layout (dimensions, cameras, rate) the model is built for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..data.chunking import chunk_cache_dir, dataset_fps
from ..data.hub_datasets import DatasetNotFoundError, resolve_dataset_path
from ..data.metaworld import METAWORLD_FPS, read_provenance
from ..data.sources import LoadOptions, load_source, metaworld_cache_dir, metaworld_demonstrations
from .arguments import ConfigError, FinetuneConfig


def _metaworld_settings(cfg: FinetuneConfig) -> dict[str, Any]:
    d = cfg.data
    return {"tasks": d.metaworld_tasks, "episodes": d.metaworld_episodes_per_task, "size": d.metaworld_image_size,
            "camera": ",".join(d.metaworld_camera), "stride": d.metaworld_stride, "seed": d.metaworld_seed,
            "noise": d.metaworld_action_noise, "state": d.metaworld_state, "crop": d.metaworld_crop,
            "view": d.metaworld_camera_view, "instructions": d.metaworld_instructions}


def metaworld_dataset_dir(cfg: FinetuneConfig) -> Path:
    """Folder of the run's Meta-World demonstrations: ``data.path`` or the cache folder of its settings."""
    if cfg.data.path:
        return Path(cfg.data.path).expanduser()
    return metaworld_cache_dir(_metaworld_settings(cfg), cfg.data.cache_dir or None)


def metaworld_control_hz(cfg: FinetuneConfig) -> float:
    """The chunk (training) rate of a Meta-World config: 80 Hz / (``metaworld_stride`` · ``chunk_stride``)."""
    return METAWORLD_FPS / (cfg.data.metaworld_stride * cfg.data.chunk_stride)


def data_provenance(cfg: FinetuneConfig) -> dict[str, Any] | None:
    """The ``"metaworld"`` record of a LeRobot dataset's ``info.json`` (benchmark seed, tasks, cameras, image
    size, stride and the variations it holds), or None for other data. Saved in the final checkpoint as
    ``training_data.json`` so that ``niaf-eval`` can keep its variations held out; ``chunk_stride`` is added
    (the chunk rate is 80 Hz / (stride · chunk_stride), ``niaf-eval``'s default execution rate)."""
    d = cfg.data
    if d.source == "metaworld":
        root = metaworld_dataset_dir(cfg)
    elif d.source == "lerobot" and d.path:
        root = Path(d.path).expanduser()
    else:
        return None
    record = read_provenance(root)
    if record is not None:
        record = dict(record, chunk_stride=int(d.chunk_stride))
    return record


def load_chunks(cfg: FinetuneConfig) -> Any:
    """The chunk dataset of ``cfg.data`` (columns: :mod:`niaf_train.data.chunking`)."""
    d = cfg.data
    if d.source == "metaworld":
        root = Path(d.path).expanduser() if d.path else metaworld_demonstrations(_metaworld_settings(cfg),
                                                                                d.cache_dir or None)
    else:
        root = _data_root(d.path)
    options = LoadOptions(chunk_size=cfg.model.chunk_size, stride=d.chunk_stride, sample_every=d.sample_every,
                          cameras=d.cameras or None, velocity=d.velocity, dense_every=d.dense_every or None,
                          # the same folder `niaf-data inspect` builds into
                          cache_dir=chunk_cache_dir(d.cache_dir or None))
    if d.source in ("metaworld", "lerobot", "libero_lerobot") and not (root / "meta" / "info.json").is_file():
        raise ConfigError(f"data.path {root}: not a LeRobot v3.0 dataset (no meta/info.json)")
    return load_source(d.source, root, options)


def _data_root(path: str) -> Path:
    """``data.path``: a local folder, or a Hub dataset id ``user/name[@revision]`` fetched into the Hub cache."""
    try:
        return resolve_dataset_path(path)
    except DatasetNotFoundError as err:
        raise ConfigError(f"data.path {err}") from None


def split_episodes(dataset: Any, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the training and held-out episodes (whole episodes, chosen with ``seed``)."""
    episodes = np.asarray(dataset.select_columns(["episode_index"]).with_format("numpy")["episode_index"])
    unique = np.unique(episodes)
    n_val = 0 if val_fraction <= 0 else max(1, int(round(val_fraction * len(unique))))
    if n_val >= len(unique):
        raise ConfigError(f"data.val_fraction {val_fraction} leaves no training episode of {len(unique)}")
    held_out = np.random.default_rng(seed).choice(unique, size=n_val, replace=False) if n_val else np.array([], int)
    is_val = np.isin(episodes, held_out)
    return np.nonzero(~is_val)[0], np.nonzero(is_val)[0]


def dataset_layout(dataset: Any) -> dict[str, Any]:
    """Action dim D, state dim, cameras, whether velocities exist, the chunk rate (Hz)."""
    features = dataset.features
    action_shape = getattr(features["action"], "shape", None)
    row = dataset.select_columns(["action"]).with_format("numpy")[0]["action"]
    state_dim = None
    if "observation.state" in features:
        state_dim = int(np.asarray(dataset.select_columns(["observation.state"]).with_format("numpy")[0]
                                   ["observation.state"]).shape[-1])
    return {
        "action_dim": int(action_shape[-1]) if action_shape else int(np.asarray(row).shape[-1]),
        "state_dim": state_dim,
        "cameras": sorted(c for c in dataset.column_names if c.startswith("observation.images.")),
        "velocity": "velocity" in dataset.column_names,
        "fps": dataset_fps(dataset),
        "episodes": int(len(np.unique(dataset.select_columns(["episode_index"]).with_format("numpy")["episode_index"]))),
    }
