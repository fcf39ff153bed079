"""CALVIN (https://github.com/mees/calvin) in its release layout, read into :class:`~niaf_train.data.episodes.Episode`.

A CALVIN split folder (``task_D_D/training``, ``task_ABC_D/validation``, ``calvin_debug_dataset/training``, ...)
holds one ``episode_XXXXXXX.npz`` per recorded frame (30 Hz), named by a zero-padded *global* frame id, plus

* ``ep_start_end_ids.npy``  int [k, 2]: first and last frame id (both **inclusive**) of each contiguous segment;
* ``lang_annotations/auto_lang_ann.npy``: a pickled dict with one instruction (``language.ann``), task id
  (``language.task``) and inclusive frame window (``info.indx``) per annotation. It is read with the restricted
  unpickler of :mod:`niaf_train.data.safe_pickle`, never with ``np.load(..., allow_pickle=True)``;
* ``statistics.yaml``: mean/std of ``robot_obs`` and ``scene_obs``, bounds of the absolute actions.

Two ways to cut episodes (``mode``):

* ``"lang"`` (default): one episode per language annotation, frames ``start .. end`` (inclusive), with its
  instruction. Annotations overlap, so one frame can appear in several episodes. Chunks never read past the
  annotated window: the last K-1 start frames of a window get padded (and masked) chunks.
* ``"all"``: one episode per row of ``ep_start_end_ids.npy`` with an empty instruction: every recorded frame,
  for unconditioned or vision-only pre-training.

Per step the episode carries the ``rel_actions`` (default; ``action_key="actions"`` gives the absolute TCP
target instead), the proprioception selected by ``state`` and the two RGB cameras, decoded lazily frame by frame
(a 500k-frame split does not fit in memory). Frame files are checked as they are indexed: keys present, dtypes
numeric, shapes as in the release (actions (7,), robot_obs (15,), images (H, W, 3) uint8 read from the npy
headers without decoding pixels), values finite. A bad file raises :class:`~niaf_train.data.episodes.EpisodeError`
naming the file, the episode and the key, or is skipped and counted with ``skip_invalid=True``.

Facts this module relies on (the CALVIN release, https://github.com/mees/calvin): numeric arrays are float64 on disk (cast to
float32 here); ``rel_actions`` is computed inside a frame from its ``actions`` and ``robot_obs``
(:func:`calvin_relative_action`); gripper +1 = open, -1 = close; no velocities are stored.

By job: :mod:`.calvin_frames` reads and checks the frame files, :mod:`.calvin_index` the split's index files
(annotations, segments, statistics); this module cuts them into episodes and chunk datasets and re-exports the
names of both, so ``from niaf_train.data.calvin import X`` keeps working.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .calvin_frames import CalvinFrameNaming, CameraFetcher, FrameReader, calvin_relative_action
from .calvin_index import (
    LANG_FILE,
    CalvinLanguage,
    read_calvin_language,
    read_calvin_segments,
    read_calvin_statistics,
    resolve_calvin_split,
)
from .chunking import build_chunk_dataset, file_fingerprint
from .episodes import Episode, EpisodeError, LazyFrames, LoadSummary
from .safe_pickle import UnsafePickleError
from .unreadable_episode import UnreadableEpisode, raise_or_skip_unreadable

logger = logging.getLogger(__name__)

CALVIN_FPS: float = 30.0
"""Recording and control rate of CALVIN, Hz."""

CALVIN_CAMERAS: tuple[str, ...] = ("rgb_static", "rgb_gripper")
"""RGB cameras of a CALVIN frame: static 200x200 and wrist 84x84."""

CALVIN_STATE_LAYOUTS: dict[str, tuple[int, ...]] = {
    # all 15 robot_obs dims: TCP xyz (m), TCP Euler xyz (rad), gripper width (m), 7 joint angles (rad),
    # last gripper command (+1 open / -1 close)
    "robot_obs": tuple(range(15)),
    # the 8 dims the reference CALVIN models use (`robot_no_joints`): TCP pose, width, gripper command
    "robot_no_joints": (0, 1, 2, 3, 4, 5, 6, 14),
}

_ACTION_KEYS = ("rel_actions", "actions")


@dataclass(frozen=True)
class _Window:
    index: int
    episode_id: str
    start: int
    end: int  # inclusive
    instruction: str
    task: str


def _windows(
    split_dir: Path, mode: str, lang_folder: str, segments: np.ndarray | None
) -> tuple[list[_Window], Path | None]:
    if mode == "all":
        assert segments is not None
        return [
            _Window(i, f"segment_{i}", int(s), int(e), "", "") for i, (s, e) in enumerate(segments.tolist())
        ], None
    lang = read_calvin_language(split_dir, lang_folder)
    windows = [
        _Window(i, f"ann_{i}", int(s), int(e), lang.ann[i], lang.task[i])
        for i, (s, e) in enumerate(lang.indx.tolist())
    ]
    return windows, lang.path


def iter_calvin_episodes(
    root: str | PathLike[str],
    split: str = "training",
    *,
    mode: Literal["lang", "all"] = "lang",
    action_key: Literal["rel_actions", "actions"] = "rel_actions",
    state: Literal["robot_obs", "robot_no_joints"] | None = "robot_obs",
    cameras: Sequence[str] = CALVIN_CAMERAS,
    lang_folder: str = "lang_annotations",
    max_episodes: int | None = None,
    skip_invalid: bool = False,
    summary: LoadSummary | None = None,
) -> Iterator[Episode]:
    """Yield the episodes of a CALVIN split, one per language window (``mode="lang"``) or segment (``"all"``).

    Args:
        root: a split root (``task_D_D``) or directly its ``training``/``validation`` folder.
        split: sub-folder of ``root`` to read when ``root`` is a split root.
        mode: ``"lang"`` = annotated windows with their instruction; ``"all"`` = every frame of every segment
            of ``ep_start_end_ids.npy``, instruction ``""``.
        action_key: ``"rel_actions"`` ([-1, 1], the action CALVIN policies send; default) or ``"actions"``
            (absolute TCP target in m / rad, gripper ±1).
        state: ``"robot_obs"`` (15 dims), ``"robot_no_joints"`` (8 dims: TCP pose, gripper width, gripper
            command) or None.
        cameras: subset of :data:`CALVIN_CAMERAS`, kept under their CALVIN names.
        lang_folder: ``lang_annotations`` or a sibling folder with other sentence embeddings (same ``ann``).
        max_episodes: read only the first ``max_episodes`` windows / segments (debugging).
        skip_invalid: on a bad frame file or window, record it in ``summary`` (and log it) and go on instead
            of raising.
        summary: where skips are counted (a fresh one is used when None).

    Yields:
        :class:`Episode` with ``fps=30``; ``actions`` float32 [T, 7]; ``states`` float32 [T, S] or None;
        ``images[cam]`` lazy uint8 [T, H, W, 3]; ``index`` = annotation (or segment) number; ``metadata`` =
        ``{"task", "start_frame", "end_frame", "frame_files"}`` (inclusive global frame ids). Cross-episode
        checks (same action width, cameras, frame shapes) are the chunk builder's
        (:func:`~niaf_train.data.episodes.iter_valid_episodes`).

    Raises:
        EpisodeError: a frame file is missing, unreadable, lacks a key, or holds a wrong shape / non-finite
            value (message names file, episode and key), unless ``skip_invalid``.
        UnsafePickleError: the annotation file carries anything but plain data (never skipped).
    """
    summary = summary if summary is not None else LoadSummary()
    yield from raise_or_skip_unreadable(
        _calvin_episodes(
            root,
            split,
            mode=mode,
            action_key=action_key,
            state=state,
            cameras=cameras,
            lang_folder=lang_folder,
            max_episodes=max_episodes,
        ),
        skip_invalid,
        summary,
    )


def _calvin_episodes(
    root: str | PathLike[str],
    split: str,
    *,
    mode: str,
    action_key: str,
    state: str | None,
    cameras: Sequence[str],
    lang_folder: str,
    max_episodes: int | None,
) -> Iterator[Episode]:
    """Like :func:`iter_calvin_episodes`, but a bad window comes out as an :class:`UnreadableEpisode`."""
    if mode not in ("lang", "all"):
        raise ValueError(f"mode={mode!r}: expected 'lang' or 'all'")
    if action_key not in _ACTION_KEYS:
        raise ValueError(f"action_key={action_key!r}: expected one of {_ACTION_KEYS}")
    if state is not None and state not in CALVIN_STATE_LAYOUTS:
        raise ValueError(f"state={state!r}: expected one of {sorted(CALVIN_STATE_LAYOUTS)} or None")
    unknown = [c for c in cameras if c not in CALVIN_CAMERAS]
    if unknown:  # an empty selection reads no images (statistics, low-dim training)
        raise ValueError(f"cameras={list(cameras)}: expected a subset of {list(CALVIN_CAMERAS)} (empty: no images)")
    split_dir = resolve_calvin_split(root, split)
    naming = CalvinFrameNaming.detect(split_dir)
    seg_path = split_dir / "ep_start_end_ids.npy"
    segments = read_calvin_segments(split_dir) if (mode == "all" or seg_path.is_file()) else None
    windows, lang_path = _windows(split_dir, mode, lang_folder, segments)
    if max_episodes is not None:
        if isinstance(max_episodes, bool) or not isinstance(max_episodes, int) or max_episodes < 1:
            # a negative count would slice off the last windows silently (windows[:-1])
            raise ValueError(f"max_episodes={max_episodes!r}: expected a positive int or None (all)")
        windows = windows[:max_episodes]
    lowdim_keys = [action_key] + (["robot_obs"] if state is not None else [])
    # Language windows overlap: keep recently read frames so each file is opened about once.
    reader = FrameReader(
        split_dir, naming, lowdim_keys, cameras, cache_frames=4096 if mode == "lang" else 0, root=Path(root)
    )
    state_idx = list(CALVIN_STATE_LAYOUTS[state]) if state is not None else None
    logger.info("CALVIN %s: %d %s episodes (frames named %s)", split_dir, len(windows), mode, naming)
    for win in windows:
        try:
            yield _read_window(reader, win, split_dir, lang_path, segments, action_key, state_idx, cameras)
        except EpisodeError as err:
            yield UnreadableEpisode(err, CALVIN_FPS)


def _read_window(
    reader: FrameReader,
    win: _Window,
    split_dir: Path,
    lang_path: Path | None,
    segments: np.ndarray | None,
    action_key: str,
    state_idx: list[int] | None,
    cameras: Sequence[str],
) -> Episode:
    if segments is not None:
        inside = (segments[:, 0] <= win.start) & (win.end <= segments[:, 1])
        if not inside.any():
            raise EpisodeError(
                str(lang_path or split_dir / "ep_start_end_ids.npy"),
                win.episode_id,
                "info.indx",
                f"window [{win.start}, {win.end}] does not lie inside one segment of "
                f"{split_dir / 'ep_start_end_ids.npy'}; expected contiguous recorded frames",
            )
    n = win.end - win.start + 1
    actions = np.empty((n, 7), dtype=np.float64)
    states = np.empty((n, len(state_idx)), dtype=np.float64) if state_idx is not None else None
    image_shapes: dict[str, tuple[int, ...]] = {}
    for t in range(n):
        frame = win.start + t
        arrays, shapes = reader.lowdim(frame, win.episode_id)
        if t == 0:
            image_shapes = shapes
        elif shapes != image_shapes:
            cam = next(c for c in cameras if shapes[c] != image_shapes[c])
            raise EpisodeError(
                str(reader.path(frame)),
                win.episode_id,
                cam,
                f"image shape {shapes[cam]} differs from {image_shapes[cam]} of the episode's first frame "
                f"{reader.path(win.start).name}",
            )
        actions[t] = arrays[action_key]
        if states is not None:
            states[t] = arrays["robot_obs"][state_idx]
    images = {
        cam: LazyFrames(
            n,
            image_shapes[cam],
            CameraFetcher(reader, win.start, cam, win.episode_id),
            name=f"{split_dir}/{reader.naming.name(win.start)}..{reader.naming.name(win.end)}:{cam}",
        )
        for cam in cameras
    }
    return Episode(
        episode_id=win.episode_id,
        source=str(lang_path if lang_path is not None else split_dir / "ep_start_end_ids.npy"),
        instruction=win.instruction,
        fps=CALVIN_FPS,
        actions=actions.astype(np.float32),
        states=None if states is None else states.astype(np.float32),
        velocities=None,
        images=images,
        index=win.index,
        metadata={
            "task": win.task,
            "start_frame": win.start,
            "end_frame": win.end,
            "frame_files": f"{reader.naming.name(win.start)}..{reader.naming.name(win.end)}",
        },
    )


def load_calvin(
    root: str | PathLike[str],
    split: str = "training",
    *,
    chunk_size: int,
    stride: int = 1,
    mode: Literal["lang", "all"] = "lang",
    action_key: Literal["rel_actions", "actions"] = "rel_actions",
    state: Literal["robot_obs", "robot_no_joints"] | None = "robot_obs",
    cameras: Sequence[str] = CALVIN_CAMERAS,
    lang_folder: str = "lang_annotations",
    max_episodes: int | None = None,
    skip_invalid: bool = False,
    cache_dir: str | PathLike[str] | None = None,
    use_cache: bool = True,
    **build_kwargs: Any,
):
    """A CALVIN split as a cached chunk dataset (see :mod:`niaf_train.data.chunking` for the columns).

    Each row holds the observation at frame t (``observation.images.rgb_static`` 200x200,
    ``observation.images.rgb_gripper`` 84x84, ``observation.state``), the instruction (``task``; ``""`` with
    ``mode="all"``) and ``action`` float32 [K, 7]: the ``action_key`` values of frames t, t+s, ..., t+(K-1)s
    of the same episode. ``rel_actions`` (default) are in [-1, 1] (×50 m, ×20 rad of TCP motion relative to
    the frame's own observation, gripper +1 open / -1 close). Chunk points past the episode end repeat the
    last real action and have ``action_is_pad`` True. No ``velocity`` column: CALVIN stores none.

    Args:
        root, split, mode, action_key, state, cameras, lang_folder, max_episodes: as in
            :func:`iter_calvin_episodes`.
        chunk_size: K.
        stride: s, frames between chunk points; the chunk control rate is 30/s Hz.
        skip_invalid: count and log bad windows / frame files instead of raising; see
            :func:`niaf_train.data.chunking.load_summary`.
        cache_dir: cache root (default :func:`niaf_train.data.chunking.default_cache_dir`).
        use_cache: False rebuilds into a fresh temporary folder.
        **build_kwargs: passed on to :func:`niaf_train.data.chunking.build_chunk_dataset` (``sample_every``,
            ``image_format``, ``streaming``, ``writer_batch_size``, ...).

    Returns:
        ``datasets.Dataset`` (or ``IterableDataset`` with ``streaming=True``).

    The cache fingerprint covers the index files (``ep_start_end_ids.npy``, the annotation file), the split
    folder's modification time (which changes when frame files are added or removed) and every option; a
    frame file edited in place is not detected: delete the cache folder after doing that.
    """
    split_dir = resolve_calvin_split(root, split)
    options = {
        "mode": mode,
        "action_key": action_key,
        "state": state,
        "cameras": list(cameras),
        "lang_folder": lang_folder,
        "max_episodes": max_episodes,
    }

    def episodes() -> Iterator[Episode]:
        return _calvin_episodes(root, split, **options)

    fingerprint_parts = None
    if use_cache:
        index_files = [split_dir / "ep_start_end_ids.npy"]
        if mode == "lang":
            index_files.append(split_dir / lang_folder / LANG_FILE)
        fingerprint_parts = {
            "format": "calvin",
            "split_dir": str(split_dir.resolve()),
            "split_dir_mtime_ns": split_dir.stat().st_mtime_ns,
            "index_files": file_fingerprint([p for p in index_files if p.is_file()]),
            "options": options,
        }
    return build_chunk_dataset(
        episodes,
        chunk_size,
        stride,
        cache_dir,
        fingerprint_parts,
        name="calvin",
        skip_invalid=skip_invalid,
        extra_meta={"format": "calvin", "split_dir": str(split_dir), **options},
        **build_kwargs,
    )


__all__ = [
    "CALVIN_CAMERAS",
    "CALVIN_FPS",
    "CALVIN_STATE_LAYOUTS",
    "CalvinFrameNaming",
    "CalvinLanguage",
    "UnsafePickleError",
    "calvin_relative_action",
    "iter_calvin_episodes",
    "load_calvin",
    "read_calvin_language",
    "read_calvin_segments",
    "read_calvin_statistics",
    "resolve_calvin_split",
]
