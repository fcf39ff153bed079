"""Atomic training checkpoints in the Hub layout, and finding the one to resume from.

Layout of an output folder::

    <output_dir>/
      run_config.json                     the run's FinetuneConfig (marks the folder as this run's)
      run_fingerprint.json                data digest and sample-stream settings a --resume must match
      .niaf-train.lock                    flock held by the run working on the folder (niaf_train.training.run_folder)
      checkpoints/
        checkpoint-000200/
          model/                          Hub layout: config.json (auto_map), model.safetensors, remote code,
                                          processor (with the normalisation statistics), README.md
          training_state/                 accelerate state: optimizer, scheduler, per-process RNG states
          trainer_state.json              step, epoch, micro-batches consumed, log history
        checkpoint-000400/ ...
      final/                              Hub layout of the final model (what --push_to_hub uploads)
      logs/                               TensorBoard / Trackio

A checkpoint is written into ``checkpoints/.tmp-checkpoint-<step>`` and renamed into place once complete;
``os.rename`` of a folder is atomic on POSIX file systems, so a run killed at any moment leaves either the
previous set of checkpoints or the new one, never a half-written checkpoint that ``--resume`` would pick up.
Left-over temporary folders are removed on the next start.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
TMP_PREFIX = ".tmp-"
STATE_FILE = "trainer_state.json"
_NAME = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_name(step: int) -> str:
    return f"checkpoint-{step:06d}"


def list_checkpoints(output_dir: str | os.PathLike[str]) -> list[Path]:
    """Complete checkpoints (those with a trainer_state.json), oldest first."""
    root = Path(output_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _NAME.match(path.name)
        if match and path.is_dir() and (path / STATE_FILE).is_file():
            found.append((int(match.group(1)), path))
    return [p for _, p in sorted(found)]


def last_checkpoint(output_dir: str | os.PathLike[str]) -> Path | None:
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1] if checkpoints else None


def remove_stale_temporaries(output_dir: str | os.PathLike[str]) -> None:
    """Delete ``.tmp-*`` folders left by a run killed while writing a checkpoint."""
    root = Path(output_dir) / CHECKPOINT_DIR
    if root.is_dir():
        for path in root.iterdir():
            if path.name.startswith(TMP_PREFIX):
                logger.warning("removing incomplete checkpoint %s (left by an interrupted run)", path)
                shutil.rmtree(path, ignore_errors=True)


def temporary_dir(output_dir: str | os.PathLike[str], step: int) -> Path:
    return Path(output_dir) / CHECKPOINT_DIR / f"{TMP_PREFIX}{checkpoint_name(step)}"


def commit(output_dir: str | os.PathLike[str], step: int, trainer_state: dict[str, Any], save_total_limit: int) -> Path:
    """Finish a checkpoint written into :func:`temporary_dir`: state file, fsync, rename, rotate old ones.

    Call on the main process only, after every process has finished writing.
    """
    tmp = temporary_dir(output_dir, step)
    (tmp / STATE_FILE).write_text(json.dumps(trainer_state, indent=2) + "\n", encoding="utf-8")
    _fsync_tree(tmp)
    final = Path(output_dir) / CHECKPOINT_DIR / checkpoint_name(step)
    if final.exists():  # a re-run of the same step after a resume: replace it atomically enough
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(final.parent)
    for old in list_checkpoints(output_dir)[:-save_total_limit]:
        shutil.rmtree(old, ignore_errors=True)
    logger.info("saved checkpoint %s", final)
    return final


def atomic_replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished folder ``tmp`` to ``final``, replacing an older ``final`` (e.g. ``final/``)."""
    _fsync_tree(tmp)
    if final.exists():
        old = final.with_name(TMP_PREFIX + final.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, final)
    _fsync_dir(final.parent)


def write_error(folder: Path, err: BaseException) -> OSError:
    """The OSError (file and cause, one line) for a checkpoint that could not be written: torch.save reports a
    full disk as a RuntimeError from its zip writer, which names neither."""
    try:
        free = shutil.disk_usage(folder if folder.exists() else folder.parent).free
    except OSError:
        free = -1
    first = str(err).splitlines()[0] if str(err) else type(err).__name__
    if "inline_container" in first or "file write failed" in first or 0 <= free < (64 << 20):
        return OSError(errno.ENOSPC, f"writing the checkpoint failed: no space left on the device ({free} bytes "
                                     "free)", str(folder))
    return OSError(errno.EIO, f"writing the checkpoint failed ({type(err).__name__}: {first})", str(folder))


def read_trainer_state(checkpoint: Path) -> dict[str, Any]:
    return json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8"))


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            except OSError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


__all__ = [
    "CHECKPOINT_DIR",
    "atomic_replace_dir",
    "checkpoint_name",
    "commit",
    "last_checkpoint",
    "list_checkpoints",
    "read_trainer_state",
    "remove_stale_temporaries",
    "temporary_dir",
]
