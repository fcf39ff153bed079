"""CALVIN's frame files (``<prefix><global frame id>.npz``, one per recorded frame): their naming, the checks made
on each archive before anything is decoded (regular file inside the dataset, zip member sizes, npy headers, keys,
dtypes, shapes, finite values) and a reader that caches recent frames. Also the relative action CALVIN computes
inside a frame (:func:`calvin_relative_action`)."""

from __future__ import annotations

import os
import re
import stat
import zipfile
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npy_format

from .episodes import EpisodeError
from .safe_pickle import check_npy_size, read_npy_header

EXPECTED_SHAPES: dict[str, tuple[int, ...]] = {"actions": (7,), "rel_actions": (7,), "robot_obs": (15,)}
"""Shape of one frame's low-dim arrays in the release."""
_FRAME_NAME = re.compile(r"^(?P<prefix>.*?)(?P<digits>\d+)\.npz$")
_MAX_DEFLATE_RATIO = 1100
"""Deflate expands at most ~1032:1; a zip member claiming more uncompressed bytes than that is forged."""


def open_frame_file(path: Path, roots: tuple[Path, ...], episode_id: str) -> zipfile.ZipFile:
    """Open a frame file as a zip archive, refusing what is not a regular file inside the dataset.

    A symlinked frame may point anywhere inside the dataset root or its split folder (``roots``, resolved),
    not out of them. The file is opened non-blocking and checked with fstat, so a FIFO (which would block
    the loader forever) or a device is refused instead of read.
    """
    resolved = path.resolve()
    root = roots[0]
    if path.is_symlink() and not any(resolved.is_relative_to(r) for r in roots):
        raise EpisodeError(
            str(path), episode_id, "<file>", f"a symlink to {resolved}, outside the dataset folder {root}; refused"
        )
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a FIFO" if stat.S_ISFIFO(mode) else "a directory" if stat.S_ISDIR(mode) else "not a regular file"
            raise EpisodeError(str(path), episode_id, "<file>", f"{kind}; expected a regular .npz frame file")
        if hasattr(os, "O_NONBLOCK"):
            os.set_blocking(fd, True)
        fh = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    try:
        return zipfile.ZipFile(fh)
    except BaseException:
        fh.close()
        raise


def _member_header(
    zf: zipfile.ZipFile, key: str, path: Path, episode_id: str
) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data bytes available) of member ``key`` of an open frame archive; checks the claim."""
    info = zf.getinfo(key + ".npy")
    if info.file_size > max(info.compress_size, 1) * _MAX_DEFLATE_RATIO:
        raise EpisodeError(
            str(path), episode_id, key, f"zip member claims {info.file_size} bytes from {info.compress_size}; forged"
        )
    with zf.open(info) as fh:
        shape, dtype = read_npy_header(fh)
        header_len = fh.tell()
    try:
        check_npy_size(shape, dtype, info.file_size - header_len, f"{key}.npy")
    except ValueError as exc:
        raise EpisodeError(str(path), episode_id, key, str(exc)) from None
    return shape, dtype, info.file_size - header_len


def _read_member(zf: zipfile.ZipFile, key: str) -> np.ndarray:
    with zf.open(key + ".npy") as fh:
        return npy_format.read_array(fh, allow_pickle=False)


def calvin_relative_action(
    actions: np.ndarray, robot_obs: np.ndarray, max_pos: float = 0.02, max_orn: float = 0.05
) -> np.ndarray:
    """CALVIN's relative action of a frame from its absolute ``actions`` and ``robot_obs``.

    Position: ``clip(a[:3] - o[:3], ±max_pos) / max_pos``; orientation: the Euler difference wrapped to
    [-π, π), clipped to ``±max_orn`` and divided by it; gripper copied. This reproduces the ``rel_actions``
    stored in the release exactly (same float64 operations).

    Args:
        actions: [..., 7] absolute TCP target: xyz (m), Euler xyz (rad), gripper (±1).
        robot_obs: [..., 15] (or at least 6 wide) observed TCP pose of the same frame.
        max_pos: metres that map to 1.0.
        max_orn: radians that map to 1.0.

    Returns:
        [..., 7] relative action in [-1, 1] (dtype of the inputs' common type).
    """
    actions = np.asarray(actions)
    robot_obs = np.asarray(robot_obs)
    rel_pos = np.clip(actions[..., :3] - robot_obs[..., :3], -max_pos, max_pos) / max_pos
    diff = actions[..., 3:6] - robot_obs[..., 3:6]
    wrapped = (diff + np.pi) % (2 * np.pi) - np.pi
    rel_orn = np.clip(wrapped, -max_orn, max_orn) / max_orn
    return np.concatenate([rel_pos, rel_orn, actions[..., 6:7]], axis=-1)


@dataclass(frozen=True)
class CalvinFrameNaming:
    """How a split names its frame files: ``<prefix><id zero-padded to digits>.npz``."""

    prefix: str = "episode_"
    digits: int = 7

    def name(self, frame_id: int) -> str:
        """File name of global frame ``frame_id``."""
        return f"{self.prefix}{int(frame_id):0{self.digits}d}.npz"

    @classmethod
    def detect(cls, split_dir: str | PathLike[str]) -> CalvinFrameNaming:
        """Learn the prefix and digit count from the first ``*.npz`` in ``split_dir``.

        Raises:
            FileNotFoundError: no frame file in the folder.
        """
        split_dir = Path(split_dir)
        first = _first_frame_name(split_dir)
        if first is None:
            raise FileNotFoundError(
                f"{split_dir}: no frame files '<prefix><digits>.npz' found; expected a CALVIN split folder "
                "such as task_D_D/training"
            )
        match = _FRAME_NAME.match(first)
        assert match is not None
        return cls(prefix=match["prefix"], digits=len(match["digits"]))


def _first_frame_name(folder: Path) -> str | None:
    # os.scandir stops at the first hit: a 500k-file folder is never listed in full.
    with os.scandir(folder) as entries:
        for entry in entries:
            if _FRAME_NAME.match(entry.name) and entry.is_file():
                return entry.name
    return None


class FrameReader:
    """Reads CALVIN frame files; checks keys, dtypes and shapes; caches recent low-dim rows.

    Picklable (holds paths and plain data only), so lazy image fetchers built on it survive multiprocessing.
    """

    def __init__(
        self,
        split_dir: Path,
        naming: CalvinFrameNaming,
        lowdim_keys: Sequence[str],
        cameras: Sequence[str],
        cache_frames: int = 4096,
        root: Path | None = None,
    ) -> None:
        self.split_dir = split_dir
        self.roots = ((root if root is not None else split_dir).resolve(), split_dir.resolve())
        self.naming = naming
        self.lowdim_keys = tuple(lowdim_keys)
        self.cameras = tuple(cameras)
        self.cache_frames = cache_frames
        self._lowdim: OrderedDict[int, tuple[dict[str, np.ndarray], dict[str, tuple[int, ...]]]] = (
            OrderedDict()
        )
        self._image_frame: tuple[int, dict[str, np.ndarray]] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_lowdim"] = OrderedDict()
        state["_image_frame"] = None
        return state

    def path(self, frame_id: int) -> Path:
        return self.split_dir / self.naming.name(frame_id)

    def lowdim(
        self, frame_id: int, episode_id: str
    ) -> tuple[dict[str, np.ndarray], dict[str, tuple[int, ...]]]:
        """Low-dim arrays (float64) of a frame and the (H, W, 3) of each camera, all checked."""
        hit = self._lowdim.get(frame_id)
        if hit is not None:
            return hit
        path = self.path(frame_id)
        arrays: dict[str, np.ndarray] = {}
        image_shapes: dict[str, tuple[int, ...]] = {}
        key = "<file>"
        try:
            with open_frame_file(path, self.roots, episode_id) as zf:
                members = {n[:-4] for n in zf.namelist() if n.endswith(".npy")}
                for key in (*self.lowdim_keys, *self.cameras):
                    if key not in members:
                        raise EpisodeError(
                            str(path),
                            episode_id,
                            key,
                            f"missing from the frame file; it has keys {sorted(members)}",
                        )
                for key in self.lowdim_keys:
                    shape, dtype, _ = _member_header(zf, key, path, episode_id)
                    expected = EXPECTED_SHAPES[key]
                    # checked on the header, before anything is allocated; strings or booleans are not numbers
                    if shape != expected or dtype.kind not in "fiu":
                        raise EpisodeError(
                            str(path),
                            episode_id,
                            key,
                            f"got {dtype} {shape}, expected a float array {expected}",
                        )
                    arr = _read_member(zf, key)
                    if not np.all(np.isfinite(arr)):
                        raise EpisodeError(
                            str(path), episode_id, key, f"non-finite values {arr.tolist()}; expected finite"
                        )
                    arrays[key] = arr.astype(np.float64, copy=False)
                for key in self.cameras:
                    shape, dtype, _ = _member_header(zf, key, path, episode_id)
                    if len(shape) != 3 or shape[2] != 3 or dtype != np.uint8:
                        raise EpisodeError(
                            str(path),
                            episode_id,
                            key,
                            f"got {dtype} {shape}, expected a uint8 RGB image (H, W, 3)",
                        )
                    image_shapes[key] = shape
        except EpisodeError:
            raise
        except FileNotFoundError as exc:
            raise EpisodeError(
                str(path),
                episode_id,
                key,
                "frame file missing; expected one file per frame id of the episode",
            ) from exc
        except (OSError, zipfile.BadZipFile, ValueError, EOFError, KeyError) as exc:
            raise EpisodeError(
                str(path), episode_id, key, f"unreadable ({type(exc).__name__}: {exc})"
            ) from exc
        result = (arrays, image_shapes)
        if self.cache_frames > 0:
            self._lowdim[frame_id] = result
            if len(self._lowdim) > self.cache_frames:
                self._lowdim.popitem(last=False)
        return result

    def image(self, frame_id: int, camera: str, episode_id: str) -> np.ndarray:
        """uint8 [H, W, 3] of ``camera`` at ``frame_id``; both cameras are decoded together and the last kept."""
        if self._image_frame is None or self._image_frame[0] != frame_id:
            path = self.path(frame_id)
            try:
                with open_frame_file(path, self.roots, episode_id) as zf:
                    images = {}
                    for cam in self.cameras:
                        shape, dtype, _ = _member_header(zf, cam, path, episode_id)
                        if len(shape) != 3 or shape[2] != 3 or dtype != np.uint8:
                            raise EpisodeError(
                                str(path), episode_id, cam, f"got {dtype} {shape}, expected a uint8 RGB image (H, W, 3)"
                            )
                        images[cam] = _read_member(zf, cam)
            except EpisodeError:
                raise
            except (OSError, zipfile.BadZipFile, ValueError, KeyError, EOFError) as exc:
                raise EpisodeError(str(path), episode_id, camera, f"unreadable ({exc})") from exc
            self._image_frame = (frame_id, images)
        return self._image_frame[1][camera]


class CameraFetcher:
    """``fetch(i)`` for :class:`LazyFrames`: image ``camera`` of the i-th frame of an episode."""

    def __init__(self, reader: FrameReader, first_frame: int, camera: str, episode_id: str) -> None:
        self.reader = reader
        self.first_frame = first_frame
        self.camera = camera
        self.episode_id = episode_id

    def __call__(self, index: int) -> np.ndarray:
        return self.reader.image(self.first_frame + index, self.camera, self.episode_id)


__all__ = [
    "EXPECTED_SHAPES",
    "CalvinFrameNaming",
    "CameraFetcher",
    "FrameReader",
    "calvin_relative_action",
    "open_frame_file",
]
