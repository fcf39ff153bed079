"""LIBERO (https://github.com/Lifelong-Robot-Learning/LIBERO) demonstrations from the original HDF5 files.

One file per task, ``<suite>/<task_name>_demo.hdf5``, written by LIBERO's ``scripts/create_dataset.py``::

    /data                      attrs: problem_info (JSON with "language_instruction"), env_args, num_demos, ...
      /demo_<i>                i = 0, 1, ..., sorted here by the integer i (not lexicographically)
        actions                (T, 7)  delta EEF position (3) + delta axis-angle (3) + gripper (-1 open, +1 close)
        obs/agentview_rgb      (T, H, W, 3) uint8, third-person camera, stored upside-down (OpenGL convention)
        obs/eye_in_hand_rgb    (T, H, W, 3) uint8, wrist camera, upside-down
        obs/ee_states          (T, 6)  EEF position (m) + axis-angle (rad)
        obs/gripper_states     (T, 2)  finger joint positions (m)
        obs/joint_states       (T, 7)  arm joint angles (rad)

The demonstrations were replayed at 20 Hz (:data:`LIBERO_FPS`).

Choices, each an option:

* **Image orientation** (``flip_images=True``): frames are rotated by 180° (height and width reversed), the
  orientation OpenVLA, openpi and LeRobot train on and LeRobot's LIBERO environment produces. ``False`` keeps
  the raw upside-down frames (what FLOWER and BEAST use).
* **Camera names** follow LeRobot's LIBERO datasets: ``image`` (agentview) and ``wrist_image``
  (``wrist_camera_name="image2"`` gives the ``HuggingFaceVLA/libero`` / ``lerobot/libero`` name), so rows carry
  ``observation.images.image`` and ``observation.images.wrist_image``.
* **State** (``state="ee_gripper"``): 8 dims = EEF position (3) + axis-angle (3) + the two finger positions (2),
  the ``observation.state`` of LeRobot's LIBERO datasets and environment, so a policy trained here can run in
  that environment unchanged. ``state="joints_gripper"`` gives 9 dims = joint angles (7) + fingers (2), the
  proprioception FLOWER/BEAST use; ``None`` drops the state.
* **Gripper action** stays in LIBERO's raw convention (-1 open, +1 close), as in LeRobot's datasets.

Every array is checked as it is read (keys present, shapes, equal lengths, finite numbers); a problem raises
:class:`~niaf_train.data.episodes.EpisodeError` naming the file, the demo and the HDF5 key, or, with
``skip_invalid=True``, is logged and counted in the dataset's load summary.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from os import PathLike
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .chunking import build_chunk_dataset, file_fingerprint
from .episodes import Episode, EpisodeError, LoadSummary
from .unreadable_episode import UnreadableEpisode, raise_or_skip_unreadable

logger = logging.getLogger(__name__)

LIBERO_FPS: float = 20.0
"""Control rate of the LIBERO demonstrations, Hz (LeRobot conversions write 10 in info.json; it is 20)."""

LIBERO_IMAGE_KEYS: dict[str, str] = {"agentview_rgb": "image", "eye_in_hand_rgb": "wrist_image"}
"""HDF5 ``obs/`` image key -> camera name in the samples (LeRobot's LIBERO naming)."""

LIBERO_STATE_LAYOUTS: dict[str, tuple[tuple[str, int], ...]] = {
    # LeRobot / openpi / OpenVLA: EEF pos (3) + axis-angle (3) + finger qpos (2)
    "ee_gripper": (("obs/ee_states", 6), ("obs/gripper_states", 2)),
    # FLOWER / BEAST: joint angles (7) + finger qpos (2)
    "joints_gripper": (("obs/joint_states", 7), ("obs/gripper_states", 2)),
}

_DEMO = re.compile(r"^demo_(\d+)$")
_SCENE_PREFIX = re.compile(r"^[A-Z][A-Z0-9_]*?SCENE\d+_")


def libero_instruction_from_filename(path: str | PathLike[str]) -> str:
    """The benchmark's instruction derived from a demo file name (LIBERO's own rule).

    ``KITCHEN_SCENE3_turn_on_the_stove_demo.hdf5`` -> ``"turn on the stove"``: the ``_demo`` suffix and an
    upper-case ``<PLACE>_SCENE<k>_`` prefix (LIBERO-10/90) are dropped, underscores become spaces.
    """
    stem = Path(path).name
    stem = stem[: -len(".hdf5")] if stem.endswith(".hdf5") else stem
    stem = stem[: -len("_demo")] if stem.endswith("_demo") else stem
    stem = _SCENE_PREFIX.sub("", stem)
    return stem.replace("_", " ").strip()


def find_libero_files(paths: str | PathLike[str] | Iterable[str | PathLike[str]]) -> list[Path]:
    """Demo files from a file, a suite folder (``*_demo.hdf5`` inside, sorted by name) or a list of either."""
    if isinstance(paths, (str, PathLike)):
        paths = [paths]
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found = sorted(p.glob("*.hdf5"))
            if not found:
                raise FileNotFoundError(
                    f"{p}: no *.hdf5 demo files in this folder; expected a LIBERO suite folder"
                )
            files.extend(found)
        elif p.is_file() or (p.exists() and not p.is_dir()):  # a FIFO is refused by name when read
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such LIBERO demo file or folder")
    return files


def _decode_attr(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray) and value.shape == ():
        return _decode_attr(value.item())
    return value


def read_libero_instruction(data_group: Any, path: str | PathLike[str]) -> str:
    """``language_instruction`` from the JSON in ``data.attrs["problem_info"]`` of an open file's ``data``."""
    raw = data_group.attrs.get("problem_info")
    if raw is None:
        raise EpisodeError(
            str(path),
            "*",
            "data.attrs['problem_info']",
            "missing; expected a JSON string with 'language_instruction' "
            "(use instruction_from='filename' to derive it from the file name)",
        )
    try:
        info = json.loads(_decode_attr(raw))
        text = info["language_instruction"]
    except (TypeError, ValueError, KeyError) as exc:
        raise EpisodeError(
            str(path),
            "*",
            "data.attrs['problem_info']",
            f"expected a JSON object with a 'language_instruction' string ({type(exc).__name__}: {exc})",
        ) from exc
    if isinstance(text, list):  # some regenerated files store a one-element list
        text = " ".join(str(t) for t in text)
    return str(text).strip()


def sorted_demo_names(data_group: Any, path: str | PathLike[str]) -> list[str]:
    """Names ``demo_<i>`` under ``data`` sorted by the integer i; other members are logged and ignored."""
    names = []
    for name in data_group.keys():
        match = _DEMO.match(name)
        if match:
            names.append((int(match.group(1)), name))
        else:
            logger.debug("%s: ignoring data/%s (not a demo_<i> group)", path, name)
    return [name for _, name in sorted(names)]


_MAX_COMPRESSION_RATIO = 1100
"""gzip/deflate expands at most ~1032:1; a dataset claiming more bytes than that from its storage is forged."""


def _local_object(group: Any, key: str, path: Path, demo: str, full_key: str) -> Any:
    """``group[key]`` after checking every link on the way stays inside this file and the dataset's data too.

    HDF5 can point out of a file: external links (to another file), virtual datasets (mapping other files) and
    external raw storage (bytes read from arbitrary paths). LIBERO demo files are self-contained, so all three
    are refused; so is a dataset whose declared size is implausible for its stored bytes (a header claiming
    terabytes of fill value), before anything is allocated.
    """
    import h5py  # optional dependency: h5py, for LIBERO HDF5 files

    node = group
    for part in key.split("/"):
        link = node.get(part, getlink=True)
        if link is None:
            raise EpisodeError(str(path), demo, full_key, f"missing from the {'demo' if demo != '*' else 'file'} group")
        if isinstance(link, h5py.ExternalLink):
            raise EpisodeError(
                str(path), demo, full_key,
                f"an HDF5 external link to {link.filename}:{link.path}; demo files must be self-contained, refused",
            )
        node = node[part]
    if isinstance(node, h5py.Dataset):
        if node.is_virtual or node.external:
            raise EpisodeError(
                str(path), demo, full_key,
                "a virtual dataset or one with external storage (data in other files); refused",
            )
        nbytes = int(node.size) * node.dtype.itemsize
        if nbytes > max(node.id.get_storage_size(), 1 << 20) * _MAX_COMPRESSION_RATIO:
            raise EpisodeError(
                str(path), demo, full_key,
                f"declares shape {node.shape} ({nbytes} bytes) but stores {node.id.get_storage_size()} bytes; refused",
            )
    return node


def _read_array(
    group: Any,
    key: str,
    path: Path,
    demo: str,
    *,
    ndim: int,
    width: int | None = None,
    length: int | None = None,
    dtype: Any = None,
) -> np.ndarray:
    """``group[key]`` as a numpy array, checked; errors name file, demo and HDF5 key."""
    full_key = f"data/{demo}/{key}"
    dataset = _local_object(group, key, path, demo, full_key)  # checks links before `in` would follow them
    try:
        arr = dataset[()]
    except Exception as exc:  # h5py raises OSError / KeyError / TypeError on damaged datasets
        raise EpisodeError(str(path), demo, full_key, f"unreadable ({type(exc).__name__}: {exc})") from exc
    arr = np.asarray(arr)
    if arr.ndim != ndim or (width is not None and arr.shape[-1] != width):
        want = f"{ndim}-D" + (f" with last dimension {width}" if width is not None else "")
        raise EpisodeError(str(path), demo, full_key, f"shape {arr.shape}, expected {want}")
    if length is not None and arr.shape[0] != length:
        raise EpisodeError(
            str(path), demo, full_key, f"has {arr.shape[0]} steps, 'actions' has {length}; expected equal"
        )
    if dtype is not None:
        if arr.dtype != dtype:
            raise EpisodeError(str(path), demo, full_key, f"dtype {arr.dtype}, expected {np.dtype(dtype)}")
    else:
        if not np.issubdtype(arr.dtype, np.number):
            raise EpisodeError(str(path), demo, full_key, f"dtype {arr.dtype}, expected numbers")
        bad = ~np.isfinite(arr)
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise EpisodeError(
                str(path),
                demo,
                full_key,
                f"{int(bad.sum())} non-finite value(s) (first at index {where}); expected finite numbers",
            )
    return arr


def _read_demo(
    demo_group: Any,
    path: Path,
    demo: str,
    instruction: str,
    index: int,
    *,
    flip_images: bool,
    state: str | None,
    camera_names: dict[str, str],
) -> Episode:
    actions = _read_array(demo_group, "actions", path, demo, ndim=2)
    n = actions.shape[0]
    states = None
    if state is not None:
        parts = [
            _read_array(demo_group, key, path, demo, ndim=2, width=width, length=n)
            for key, width in LIBERO_STATE_LAYOUTS[state]
        ]
        states = np.concatenate(parts, axis=1).astype(np.float32)
    images: dict[str, np.ndarray] = {}
    for h5_key, cam in camera_names.items():
        frames = _read_array(
            demo_group, f"obs/{h5_key}", path, demo, ndim=4, width=3, length=n, dtype=np.uint8
        )
        # The files store OpenGL (upside-down) frames: a 180° rotation reverses both image axes.
        images[cam] = np.ascontiguousarray(frames[:, ::-1, ::-1]) if flip_images else frames
    return Episode(
        episode_id=demo,
        source=str(path),
        instruction=instruction,
        fps=LIBERO_FPS,
        actions=actions.astype(np.float32),
        states=states,
        velocities=None,
        images=images,
        index=index,
        metadata={"file": path.name, "demo": demo, "task": libero_instruction_from_filename(path)},
    )


def _libero_episodes(
    files: Sequence[Path],
    *,
    flip_images: bool,
    state: str | None,
    wrist_camera_name: str,
    cameras: Sequence[str] | None,
    instruction_from: str,
    max_demos_per_file: int | None,
) -> Iterator[Episode]:
    """Episodes of all files in order; a bad demo or file comes out as an :class:`UnreadableEpisode`."""
    import h5py  # optional dependency: h5py, for LIBERO HDF5 files

    if state is not None and state not in LIBERO_STATE_LAYOUTS:
        raise ValueError(f"state={state!r}: expected one of {sorted(LIBERO_STATE_LAYOUTS)} or None")
    if max_demos_per_file is not None and (
        isinstance(max_demos_per_file, bool) or not isinstance(max_demos_per_file, int) or max_demos_per_file < 1
    ):
        raise ValueError(f"max_demos_per_file={max_demos_per_file!r}: expected a positive int or None (all)")
    if wrist_camera_name not in ("wrist_image", "image2"):
        raise ValueError(f"wrist_camera_name={wrist_camera_name!r}: expected 'wrist_image' or 'image2'")
    if instruction_from not in ("problem_info", "filename"):
        raise ValueError(f"instruction_from={instruction_from!r}: expected 'problem_info' or 'filename'")
    names = {"agentview_rgb": "image", "eye_in_hand_rgb": wrist_camera_name}
    if cameras is not None:
        unknown = [c for c in cameras if c not in names.values()]
        if unknown:  # an empty selection reads no images (statistics, low-dim training)
            raise ValueError(
                f"cameras={list(cameras)}: expected a subset of {sorted(names.values())} (empty: no images)"
            )
        names = {k: v for k, v in names.items() if v in cameras}
    index = 0
    for path in files:
        if not path.is_file():  # a FIFO or device named *.hdf5 would block h5py forever
            yield UnreadableEpisode(
                EpisodeError(str(path), "*", "<file>", "not a regular file (a FIFO or device?); refused"), LIBERO_FPS
            )
            continue
        try:
            fh = h5py.File(path, "r")
        except OSError as exc:
            yield UnreadableEpisode(
                EpisodeError(str(path), "*", "<file>", f"not a readable HDF5 file ({exc})"), LIBERO_FPS
            )
            continue
        with fh:
            try:
                if fh.get("data", getlink=True) is None:
                    raise EpisodeError(
                        str(path), "*", "data", "group missing; expected LIBERO's /data/demo_<i> layout"
                    )
                data = _local_object(fh, "data", path, "*", "data")
                instruction = (
                    read_libero_instruction(data, path)
                    if instruction_from == "problem_info"
                    else libero_instruction_from_filename(path)
                )
                demos = sorted_demo_names(data, path)
                if not demos:
                    raise EpisodeError(str(path), "*", "data", "no demo_<i> groups found")
            except EpisodeError as err:
                yield UnreadableEpisode(err, LIBERO_FPS)
                continue
            if max_demos_per_file is not None:
                demos = demos[:max_demos_per_file]  # checked positive above: a negative count drops the last demos
            logger.info("LIBERO %s: %d demos, instruction %r", path, len(demos), instruction)
            for demo in demos:
                try:
                    yield _read_demo(
                        _local_object(data, demo, path, demo, f"data/{demo}"),
                        path,
                        demo,
                        instruction,
                        index,
                        flip_images=flip_images,
                        state=state,
                        camera_names=names,
                    )
                except EpisodeError as err:
                    yield UnreadableEpisode(err, LIBERO_FPS)
                index += 1


def iter_libero_episodes(
    paths: str | PathLike[str] | Iterable[str | PathLike[str]],
    *,
    flip_images: bool = True,
    state: Literal["ee_gripper", "joints_gripper"] | None = "ee_gripper",
    wrist_camera_name: Literal["wrist_image", "image2"] = "wrist_image",
    cameras: Sequence[str] | None = None,
    instruction_from: Literal["problem_info", "filename"] = "problem_info",
    max_demos_per_file: int | None = None,
    skip_invalid: bool = False,
    summary: LoadSummary | None = None,
) -> Iterator[Episode]:
    """Yield one :class:`Episode` per demo of LIBERO ``*_demo.hdf5`` files.

    Args:
        paths: a demo file, a suite folder, or a list of them; files are read in the given (folder: sorted)
            order, demos of a file by increasing integer suffix.
        flip_images: rotate frames by 180° to the upright orientation (default, as OpenVLA/openpi/LeRobot).
        state: ``"ee_gripper"`` (8 dims, LeRobot's LIBERO state), ``"joints_gripper"`` (9 dims) or None.
        wrist_camera_name: name of the wrist camera, ``"wrist_image"`` or ``"image2"``.
        cameras: subset of ``{"image", wrist_camera_name}`` to keep (default both).
        instruction_from: ``"problem_info"`` (the file's ``language_instruction``) or ``"filename"``.
        max_demos_per_file: read only the first demos of each file (debugging).
        skip_invalid: log and count bad demos / files in ``summary`` instead of raising.
        summary: where skips are recorded (a fresh one when None).

    Yields:
        :class:`Episode`: ``fps=20``; ``actions`` float32 [T, 7] (delta EEF in the controller's scaled units,
        gripper -1 open / +1 close); ``states`` float32 [T, 8 or 9] or None; ``images[cam]`` uint8
        [T, H, W, 3] (in memory: one demo at a time); ``index`` = running demo number over all files;
        ``episode_id`` = ``"demo_<i>"``; ``source`` = the file.

    Raises:
        EpisodeError: a missing key, wrong shape, non-finite value or unreadable file (names file, demo and
            HDF5 key), unless ``skip_invalid``.
    """
    summary = summary if summary is not None else LoadSummary()
    yield from raise_or_skip_unreadable(
        _libero_episodes(
            find_libero_files(paths),
            flip_images=flip_images,
            state=state,
            wrist_camera_name=wrist_camera_name,
            cameras=cameras,
            instruction_from=instruction_from,
            max_demos_per_file=max_demos_per_file,
        ),
        skip_invalid,
        summary,
    )


def load_libero(
    paths: str | PathLike[str] | Iterable[str | PathLike[str]],
    *,
    chunk_size: int,
    stride: int = 1,
    flip_images: bool = True,
    state: Literal["ee_gripper", "joints_gripper"] | None = "ee_gripper",
    wrist_camera_name: Literal["wrist_image", "image2"] = "wrist_image",
    cameras: Sequence[str] | None = None,
    instruction_from: Literal["problem_info", "filename"] = "problem_info",
    max_demos_per_file: int | None = None,
    skip_invalid: bool = False,
    cache_dir: str | PathLike[str] | None = None,
    use_cache: bool = True,
    **build_kwargs: Any,
):
    """LIBERO HDF5 demos as a cached chunk dataset (columns: :mod:`niaf_train.data.chunking`).

    Each row: ``observation.images.image`` / ``observation.images.<wrist_camera_name>`` at step t,
    ``observation.state`` (8 or 9 dims), ``task`` (the instruction), ``action`` float32 [K, 7] = the actions of
    steps t, t+s, ..., t+(K-1)s of the same demo (padding repeats the last one; ``action_is_pad``). The chunk
    control rate is 20/s Hz.

    Args:
        paths, flip_images, state, wrist_camera_name, cameras, instruction_from, max_demos_per_file: as in
            :func:`iter_libero_episodes`.
        chunk_size: K.
        stride: s.
        skip_invalid: count and log bad demos instead of raising (see :func:`niaf_train.data.chunking.load_summary`).
        cache_dir: cache root; use_cache: False rebuilds into a fresh temporary folder.
        **build_kwargs: passed to :func:`niaf_train.data.chunking.build_chunk_dataset`.

    Returns:
        ``datasets.Dataset`` (or ``IterableDataset`` with ``streaming=True``). The cache fingerprint covers
        every file's path, size and modification time and every option.
    """
    files = find_libero_files(paths)
    options = {
        "flip_images": flip_images,
        "state": state,
        "wrist_camera_name": wrist_camera_name,
        "cameras": None if cameras is None else list(cameras),
        "instruction_from": instruction_from,
        "max_demos_per_file": max_demos_per_file,
    }

    def episodes() -> Iterator[Episode]:
        return _libero_episodes(files, **options)

    fingerprint_parts = (
        {"format": "libero_hdf5", "files": file_fingerprint(files), "options": options} if use_cache else None
    )
    return build_chunk_dataset(
        episodes,
        chunk_size,
        stride,
        cache_dir,
        fingerprint_parts,
        name="libero",
        skip_invalid=skip_invalid,
        extra_meta={"format": "libero_hdf5", **options},
        **build_kwargs,
    )


__all__ = [
    "LIBERO_FPS",
    "LIBERO_IMAGE_KEYS",
    "LIBERO_STATE_LAYOUTS",
    "find_libero_files",
    "iter_libero_episodes",
    "libero_instruction_from_filename",
    "load_libero",
    "read_libero_instruction",
    "sorted_demo_names",
]
