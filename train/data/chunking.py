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

The code lives in one module per job, all re-exported here (the import path of every public name is unchanged):
:mod:`~niaf_train.data.chunk_math` (chunking in numpy), :mod:`~niaf_train.data.chunk_cache` (fingerprints, cache
folders, metadata), :mod:`~niaf_train.data.chunk_builder` (the ``datasets`` builder) and
:mod:`~niaf_train.data.chunk_torch` (the torch view).
"""

from __future__ import annotations

from .chunk_builder import (
    CACHE_FORMAT_VERSION,
    EpisodeFactory,
    build_chunk_dataset,
    encode_png,
    make_features,
)
from .chunk_builder import IMAGE_FORMATS as IMAGE_FORMATS  # public before the split, outside __all__
from .chunk_cache import NIAF_META_KEY as NIAF_META_KEY
from .chunk_cache import (
    cache_size_report,
    check_control_hz,
    chunk_cache_dir,
    chunk_dataset_meta,
    dataset_fps,
    default_cache_dir,
    file_fingerprint,
    fingerprint,
    load_summary,
    niaf_cache_root,
)
from .chunk_math import chunk_episode, chunk_indices, dense_points, finite_difference_velocities, tau_grid
from .chunk_torch import with_torch_format

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
