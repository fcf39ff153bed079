"""The in-memory form of one demonstration, shared by every data loader, and its validation.

Every loader (CALVIN, LIBERO HDF5, LeRobot v3, LeRobot-format LIBERO, Meta-World) turns what it reads into
:class:`Episode` objects; :mod:`niaf_train.data.chunking` turns episodes into training samples. An episode is a
plain container of per-step arrays sampled on one clock of ``fps`` Hz:

* ``actions``    float32 [T, D]   the command sent at step t (physical units of the source dataset);
* ``states``     float32 [T, S]   proprioception observed at step t, or None;
* ``velocities`` float32 [T, D]   action-space velocity at step t, **per second**, or None;
* ``images``     camera name → uint8 [T, H, W, 3] (a numpy array, or a :class:`LazyFrames` that decodes
  on demand), RGB, upright.

:meth:`Episode.validate` checks all of that and raises :class:`EpisodeError` (a ``ValueError``) naming the
file, the episode, the key and what was expected. Loaders that are asked to skip bad episodes
(``skip_invalid=True``) record each skipped episode in a :class:`LoadSummary` instead of dropping it silently.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


class EpisodeError(ValueError):
    """An episode (or one of its files) does not hold what a loader expects.

    The message always starts with ``"<file>: episode <id>: key <key>: "``, followed by what was found and
    what was expected; the three parts are also kept as attributes for summaries.
    """

    def __init__(self, source: str, episode_id: str, key: str, message: str) -> None:
        self.source = str(source)
        self.episode_id = str(episode_id)
        self.key = str(key)
        self.reason = message
        super().__init__(f"{self.source}: episode {self.episode_id}: key {self.key!r}: {message}")


class LazyFrames:
    """A camera stream whose frames are decoded on demand.

    Behaves like a read-only uint8 array of shape [T, H, W, 3] for ``len``, ``shape``, ``dtype`` and
    integer indexing, so the chunker treats it exactly like an in-memory array.

    Args:
        length: number of frames T.
        frame_shape: (H, W, 3) of every frame.
        fetch: ``fetch(i) -> uint8 [H, W, 3]`` for 0 <= i < T.
        name: a description used in error messages (e.g. ``"videos/observation.images.top/.../file-000.mp4"``).
    """

    dtype = np.dtype(np.uint8)

    def __init__(
        self, length: int, frame_shape: tuple[int, int, int], fetch: Callable[[int], np.ndarray], name: str = ""
    ) -> None:
        self._length = int(length)
        self._frame_shape = tuple(int(s) for s in frame_shape)
        self._fetch = fetch
        self.name = name

    @property
    def shape(self) -> tuple[int, ...]:
        return (self._length, *self._frame_shape)

    @property
    def ndim(self) -> int:
        return 4

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> np.ndarray:
        index = int(index)
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError(f"{self.name}: frame {index} out of range [0, {self._length})")
        frame = np.asarray(self._fetch(index))
        if frame.shape != self._frame_shape or frame.dtype != np.uint8:
            raise ValueError(
                f"{self.name}: frame {index} has shape {frame.shape} dtype {frame.dtype}, "
                f"expected {self._frame_shape} uint8"
            )
        return frame

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(self._length):
            yield self[i]

    def __repr__(self) -> str:
        return f"LazyFrames(shape={self.shape}, name={self.name!r})"


FrameSource = np.ndarray | LazyFrames
"""What ``Episode.images`` maps a camera name to: uint8 [T, H, W, 3]."""


@dataclass
class Episode:
    """One demonstration on a single clock.

    Attributes:
        episode_id: identifier unique within its source (e.g. ``"demo_3"``, ``"12"``).
        source: the file or folder it was read from (used in every error message).
        instruction: the natural-language task.
        fps: the true control rate of ``actions`` in Hz (for example 20 for LIBERO even when a LeRobot
            ``info.json`` says 10).
        actions: float32 [T, D].
        states: float32 [T, S] or None.
        velocities: float32 [T, D] in action units per second, or None.
        images: camera name → uint8 [T, H, W, 3] (array or :class:`LazyFrames`); may be empty.
        index: optional integer episode index kept in the samples' ``episode_index`` column (e.g. the
            LeRobot ``episode_index``); when None the builder numbers episodes in reading order (skipped
            episodes keep their number, so indices stay stable).
        metadata: free-form JSON-serialisable extras (task id, original fps, ...).
    """

    episode_id: str
    source: str
    instruction: str
    fps: float
    actions: np.ndarray
    states: np.ndarray | None = None
    velocities: np.ndarray | None = None
    images: Mapping[str, FrameSource] = field(default_factory=dict)
    index: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(np.shape(self.actions)[0]) if np.ndim(self.actions) >= 1 else 0

    @property
    def action_dim(self) -> int:
        return int(np.shape(self.actions)[1])

    @property
    def state_dim(self) -> int | None:
        return None if self.states is None else int(np.shape(self.states)[1])

    def error(self, key: str, message: str) -> EpisodeError:
        """An :class:`EpisodeError` about ``key`` of this episode."""
        return EpisodeError(self.source, self.episode_id, key, message)

    def validate(self, image_shapes: Mapping[str, tuple[int, int, int]] | None = None) -> Episode:
        """Check the episode and return it; raise :class:`EpisodeError` on the first problem.

        Checks: ``fps`` is a positive finite number; ``actions`` is a 2-D float array with at least 2 steps;
        ``states`` [T, S] and ``velocities`` [T, D] have the same T (and velocities the action width);
        actions, states and velocities are finite (no NaN/inf); every camera is uint8 [T, H, W, 3]; and,
        when ``image_shapes`` is given, each listed camera is present with frame shape (H, W, 3).

        Numeric arrays are cast to float32 in place (a float64 source is accepted).
        """
        if isinstance(self.fps, bool) or not isinstance(self.fps, (int, float, np.floating, np.integer)):
            raise self.error("fps", f"expected a number of Hz, got {self.fps!r}")
        if not math.isfinite(float(self.fps)) or float(self.fps) <= 0:
            raise self.error("fps", f"expected a positive finite control rate in Hz, got {self.fps!r}")
        if not isinstance(self.instruction, str):
            raise self.error("instruction", f"expected a string, got {type(self.instruction).__name__}")
        self.actions = self._numeric("actions", self.actions)
        n = self.actions.shape[0]
        if n < 2:
            raise self.error("actions", f"expected at least 2 steps, got {n}")
        if self.states is not None:
            self.states = self._numeric("states", self.states, length=n)
        if self.velocities is not None:
            self.velocities = self._numeric("velocities", self.velocities, length=n, width=self.actions.shape[1])
        for cam, frames in self.images.items():
            shape = tuple(getattr(frames, "shape", ()))
            dtype = getattr(frames, "dtype", None)
            key = f"images.{cam}"
            if len(shape) != 4 or shape[3] != 3:
                raise self.error(key, f"expected frames of shape [T, H, W, 3], got {shape}")
            if shape[0] != n:
                raise self.error(key, f"has {shape[0]} frames but actions have {n} steps; expected equal lengths")
            if dtype != np.uint8:
                raise self.error(key, f"expected uint8 RGB frames, got dtype {dtype}")
        if image_shapes is not None:
            for cam, hw3 in image_shapes.items():
                if cam not in self.images:
                    raise self.error(f"images.{cam}", f"camera missing; this dataset's cameras are {sorted(image_shapes)}")
                got = tuple(self.images[cam].shape[1:])
                if got != tuple(hw3):
                    raise self.error(f"images.{cam}", f"frame shape {got}, expected {tuple(hw3)} like the first episode")
            extra = sorted(set(self.images) - set(image_shapes))
            if extra:
                raise self.error("images", f"unexpected cameras {extra}; expected {sorted(image_shapes)}")
        return self

    def _numeric(self, key: str, value: Any, length: int | None = None, width: int | None = None) -> np.ndarray:
        arr = np.asarray(value)
        if arr.ndim != 2:
            raise self.error(key, f"expected a 2-D array [T, dim], got shape {arr.shape}")
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise self.error(key, f"expected a numeric array, got dtype {arr.dtype}")
        if length is not None and arr.shape[0] != length:
            raise self.error(key, f"has {arr.shape[0]} steps but actions have {length}; expected equal lengths")
        if width is not None and arr.shape[1] != width:
            raise self.error(key, f"has width {arr.shape[1]}, expected the action dimension {width}")
        arr = arr.astype(np.float32, copy=False)
        bad = ~np.isfinite(arr)
        if bad.any():
            t, d = (int(i) for i in np.argwhere(bad)[0])
            raise self.error(
                key, f"{int(bad.sum())} non-finite value(s) (first: {arr[t, d]} at step {t}, dim {d}); expected finite numbers"
            )
        return np.ascontiguousarray(arr)


@dataclass
class SkippedEpisode:
    """One episode left out by a loader run with ``skip_invalid=True``."""

    source: str
    episode_id: str
    key: str
    reason: str


@dataclass
class LoadSummary:
    """What a loader read, and what it skipped and why.

    ``episodes`` counts the episodes kept, ``frames`` their steps, ``samples`` the rows produced.
    """

    episodes: int = 0
    frames: int = 0
    samples: int = 0
    skipped: list[SkippedEpisode] = field(default_factory=list)

    def skip(self, error: EpisodeError) -> None:
        """Record a skipped episode and log why."""
        self.skipped.append(SkippedEpisode(error.source, error.episode_id, error.key, error.reason))
        logger.warning("skipping %s", error)

    def to_dict(self) -> dict[str, Any]:
        return {
            "episodes": self.episodes,
            "frames": self.frames,
            "samples": self.samples,
            "skipped_episodes": len(self.skipped),
            "skipped": [asdict(s) for s in self.skipped],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LoadSummary:
        return cls(
            episodes=int(data.get("episodes", 0)),
            frames=int(data.get("frames", 0)),
            samples=int(data.get("samples", 0)),
            skipped=[SkippedEpisode(**s) for s in data.get("skipped", [])],
        )


def episode_layout(episode: Episode) -> dict[str, Any]:
    """What all episodes of one dataset share: ``images`` (camera → (H, W, 3)), ``action_dim``, ``state_dim``
    and ``velocity`` (whether velocities are present)."""
    return {
        "images": {cam: tuple(frames.shape[1:]) for cam, frames in episode.images.items()},
        "action_dim": episode.action_dim,
        "state_dim": episode.state_dim,
        "velocity": episode.velocities is not None,
    }


def iter_valid_episodes(
    episodes: Iterator[Episode] | list[Episode],
    summary: LoadSummary,
    skip_invalid: bool = False,
    reference: Mapping[str, Any] | None = None,
) -> Iterator[Episode]:
    """Validate each episode, yielding the good ones.

    An invalid episode raises its :class:`EpisodeError`, or with ``skip_invalid=True`` is recorded in
    ``summary.skipped`` (and logged) and left out. Episodes after the first one must have the first one's
    cameras, frame shapes, action width, state width and velocity presence; with ``reference`` (an
    :func:`episode_layout`, e.g. of a dataset's first episode when only some of its episodes are read here)
    every episode must have that layout.
    """
    for ep in episodes:
        try:
            ep.validate(image_shapes=None if reference is None else reference["images"])
            layout = episode_layout(ep)
            if reference is not None:
                for key, name in (("action_dim", "actions"), ("state_dim", "states"), ("velocity", "velocities")):
                    if layout[key] != reference[key]:
                        raise ep.error(
                            name, f"{key} is {layout[key]!r} but the first episode has {reference[key]!r}; "
                            "all episodes of a dataset must share one layout"
                        )
        except EpisodeError as err:
            if not skip_invalid:
                raise
            summary.skip(err)
            continue
        if reference is None:
            reference = layout
        yield ep


__all__ = [
    "Episode",
    "EpisodeError",
    "FrameSource",
    "LazyFrames",
    "LoadSummary",
    "SkippedEpisode",
    "episode_layout",
    "iter_valid_episodes",
]
