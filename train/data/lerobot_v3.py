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

The code lives in one module per job, all re-exported here (the import path of every public name is unchanged):
:mod:`~niaf_train.data.lerobot_paths` (path templates, ``safe_join``), :mod:`~niaf_train.data.lerobot_meta`
(metadata, velocity plan), :mod:`~niaf_train.data.lerobot_video` (MP4 frame access),
:mod:`~niaf_train.data.lerobot_reader` (episodes, ``load_lerobot``, LIBERO) and
:mod:`~niaf_train.data.lerobot_writer`.
"""

from __future__ import annotations

from .lerobot_meta import (
    CODEBASE_VERSION,
    LeRobotV3Meta,
    open_lerobot_v3,
    read_episodes_meta,
    read_info,
    read_tasks,
    velocity_plan,
)
from .lerobot_meta import IMAGE_PREFIX as IMAGE_PREFIX  # public before the split, outside __all__
from .lerobot_paths import DEFAULT_DATA_PATH as DEFAULT_DATA_PATH
from .lerobot_paths import DEFAULT_VIDEO_PATH as DEFAULT_VIDEO_PATH
from .lerobot_paths import safe_join
from .lerobot_reader import (
    LIBERO_CAMERA_NAMES,
    LIBERO_FPS,
    check_libero_lerobot,
    iter_lerobot_episodes,
    load_lerobot,
    load_libero_lerobot,
)
from .lerobot_reader import VelocityMode as VelocityMode
from .lerobot_writer import write_lerobot_dataset

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
