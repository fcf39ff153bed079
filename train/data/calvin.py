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
"""

from __future__ import annotations

import logging
import os
import re
import stat
import zipfile
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.lib import format as npy_format

from .episodes import Episode, EpisodeError, LazyFrames, LoadSummary
from .safe_pickle import UnsafePickleError, check_npy_size, read_npy_header, safe_load_npy
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
_EXPECTED_SHAPES: dict[str, tuple[int, ...]] = {"actions": (7,), "rel_actions": (7,), "robot_obs": (15,)}
_LANG_FILE = "auto_lang_ann.npy"
_FRAME_NAME = re.compile(r"^(?P<prefix>.*?)(?P<digits>\d+)\.npz$")
_MAX_DEFLATE_RATIO = 1100
"""Deflate expands at most ~1032:1; a zip member claiming more uncompressed bytes than that is forged."""


def _open_frame_file(path: Path, roots: tuple[Path, ...], episode_id: str) -> zipfile.ZipFile:
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


# --------------------------------------------------------------------------------------------------------------
# small readers


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


@dataclass
class CalvinLanguage:
    """The language annotations of a split.

    Attributes:
        path: the file they were read from.
        ann: N instructions.
        task: N task ids (e.g. ``"open_drawer"``); empty strings if the file has none.
        indx: int64 [N, 2] inclusive (start, end) global frame ids.
    """

    path: Path
    ann: list[str]
    task: list[str]
    indx: np.ndarray = field(repr=False)

    def __len__(self) -> int:
        return len(self.ann)


def read_calvin_language(
    split_dir: str | PathLike[str], lang_folder: str = "lang_annotations"
) -> CalvinLanguage:
    """Read ``<split_dir>/<lang_folder>/auto_lang_ann.npy`` without executing anything from it.

    Raises:
        FileNotFoundError: the file is missing.
        UnsafePickleError: the pickle asks for anything but numpy arrays and plain data.
        ValueError: the dict lacks ``language.ann`` / ``info.indx`` or their lengths disagree (names the key).
    """
    path = Path(split_dir) / lang_folder / _LANG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: language annotation file not found (needed for mode='lang')")
    array = safe_load_npy(path)
    content = array.item() if array.shape == () else None
    if not isinstance(content, dict):
        raise ValueError(
            f"{path}: expected a pickled dict with 'language' and 'info', got {type(content).__name__}"
        )

    def get(section: str, key: str, required: bool = True) -> Any:
        sub = content.get(section)
        if not isinstance(sub, dict) or key not in sub:
            if required:
                raise ValueError(
                    f"{path}: key '{section}.{key}' missing; expected the CALVIN annotation layout"
                )
            return None
        return sub[key]

    ann = [str(a) for a in get("language", "ann")]
    task_raw = get("language", "task", required=False)
    task = [str(t) for t in task_raw] if task_raw is not None else [""] * len(ann)
    try:
        indx = np.asarray([(int(s), int(e)) for s, e in get("info", "indx")], dtype=np.int64).reshape(-1, 2)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{path}: key 'info.indx': expected a list of (start, end) frame ids ({exc})"
        ) from exc
    if not (len(ann) == len(task) == len(indx)):
        raise ValueError(
            f"{path}: 'language.ann' has {len(ann)} entries, 'language.task' {len(task)}, 'info.indx' {len(indx)}; "
            "expected one of each per annotation"
        )
    bad = np.flatnonzero(indx[:, 1] < indx[:, 0])
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{path}: key 'info.indx'[{i}] = {tuple(indx[i])}: end before start")
    return CalvinLanguage(path=path, ann=ann, task=task, indx=indx)


def read_calvin_segments(split_dir: str | PathLike[str]) -> np.ndarray:
    """``ep_start_end_ids.npy``: int64 [k, 2] of inclusive (first, last) frame ids of contiguous segments."""
    path = Path(split_dir) / "ep_start_end_ids.npy"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: segment index file not found")
    ids = safe_load_npy(path)
    if ids.ndim != 2 or ids.shape[1] != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(
            f"{path}: expected an integer array [k, 2] of (start, end) frame ids, got {ids.dtype} {ids.shape}"
        )
    ids = ids.astype(np.int64)
    bad = np.flatnonzero(ids[:, 1] < ids[:, 0])
    if bad.size:
        raise ValueError(f"{path}: row {int(bad[0])} = {tuple(ids[bad[0]])}: end before start")
    return ids


def read_calvin_statistics(path: str | PathLike[str]) -> dict[str, dict[str, np.ndarray]]:
    """Read a CALVIN ``statistics.yaml`` (a split folder or the file itself) with ``yaml.safe_load``.

    The file is plain YAML written by OmegaConf; ``_target_`` entries are ordinary string keys and nothing is
    instantiated. Both the list-of-transforms (``robot_obs: [{_target_: ..., mean, std}]``) and the flat mapping
    layouts are accepted, and both ``act_*_bound`` and ``action_*_bound`` spellings.

    Returns:
        ``{"robot_obs": {"mean": [15], "std": [15]}, "scene_obs": {...} (if present),
        "actions": {"min": [7], "max": [7]} (if present)}``, float64 arrays.
    """
    import yaml

    path = Path(path)
    if path.is_dir():
        path = path / "statistics.yaml"
    try:
        with path.open("r", encoding="utf-8") as fh:
            raw = yaml.safe_load(fh)
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read CALVIN statistics ({exc})") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping at top level, got {type(raw).__name__}")
    stats: dict[str, dict[str, np.ndarray]] = {}
    for key in ("robot_obs", "scene_obs"):
        entry = raw.get(key)
        if entry is None:
            continue
        if isinstance(entry, list):
            entry = next((e for e in entry if isinstance(e, dict) and "mean" in e), None)
        if not isinstance(entry, dict) or "mean" not in entry or "std" not in entry:
            raise ValueError(f"{path}: key '{key}': expected a NormalizeVector entry with 'mean' and 'std'")
        stats[key] = {s: np.asarray(entry[s], dtype=np.float64) for s in ("mean", "std")}
    for prefix in ("act", "action"):
        lo, hi = raw.get(f"{prefix}_min_bound"), raw.get(f"{prefix}_max_bound")
        if lo is not None and hi is not None:
            stats["actions"] = {
                "min": np.asarray(lo, dtype=np.float64),
                "max": np.asarray(hi, dtype=np.float64),
            }
            break
    if "robot_obs" not in stats:
        raise ValueError(f"{path}: key 'robot_obs' missing; expected CALVIN statistics")
    return stats


def resolve_calvin_split(root: str | PathLike[str], split: str = "training") -> Path:
    """The folder holding the frames: ``root/split`` if it exists, else ``root`` itself if it holds frames."""
    root = Path(root)
    if (root / split).is_dir():
        return root / split
    if (root / "ep_start_end_ids.npy").is_file():
        return root
    raise FileNotFoundError(
        f"{root}: neither '{split}/' nor 'ep_start_end_ids.npy' found; expected a CALVIN split root (task_D_D) "
        "or one of its training/validation folders"
    )


# --------------------------------------------------------------------------------------------------------------
# frame files


class _FrameReader:
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
            with _open_frame_file(path, self.roots, episode_id) as zf:
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
                    expected = _EXPECTED_SHAPES[key]
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
                with _open_frame_file(path, self.roots, episode_id) as zf:
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


class _CameraFetcher:
    """``fetch(i)`` for :class:`LazyFrames`: image ``camera`` of the i-th frame of an episode."""

    def __init__(self, reader: _FrameReader, first_frame: int, camera: str, episode_id: str) -> None:
        self.reader = reader
        self.first_frame = first_frame
        self.camera = camera
        self.episode_id = episode_id

    def __call__(self, index: int) -> np.ndarray:
        return self.reader.image(self.first_frame + index, self.camera, self.episode_id)


# --------------------------------------------------------------------------------------------------------------
# episodes


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
    reader = _FrameReader(
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
    reader: _FrameReader,
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
            _CameraFetcher(reader, win.start, cam, win.episode_id),
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
    from .chunking import build_chunk_dataset, file_fingerprint

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
            index_files.append(split_dir / lang_folder / _LANG_FILE)
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
