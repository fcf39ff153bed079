"""The output folder of a ``niaf-train`` run: what it holds, who may write it, and what a resume must match.

A run's folder (layout in :mod:`niaf_train.training.checkpointing`) is recognised by its ``run_config.json`` and by
holding nothing but the entries a run writes (:data:`RUN_ENTRIES`). Only such a folder is ever deleted by
``--overwrite_output_dir``, and never when it contains the dataset or the chunk cache.

While a run works on a folder it holds an exclusive ``flock`` on ``<output_dir>/.niaf-train.lock`` (released by
the kernel when the process dies, so a killed run never leaves a stale lock): a second run on the same folder
is refused instead of interleaving checkpoints.

``run_fingerprint.json`` records what decides the sample stream: a content digest of the training data's
low-dimensional columns (actions, states, velocities, episode indices, tasks), the episode split and the
settings that change the order or grouping of samples (seed, batch size, gradient accumulation, number of
processes). ``--resume`` refuses to continue a run when any of them differs, since the checkpoint's
statistics and optimizer state belong to the old stream.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..data.chunking import niaf_cache_root
from .arguments import ConfigError, FinetuneConfig
from .checkpointing import last_checkpoint

logger = logging.getLogger(__name__)

RUN_CONFIG = "run_config.json"
FINAL_DIR = "final"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.jsonl"
FINGERPRINT_FILE = "run_fingerprint.json"
LOCK_FILE = ".niaf-train.lock"

RUN_ENTRIES = re.compile(
    r"^(run_config\.json|run_fingerprint\.json|metrics\.json|history\.jsonl|checkpoints|final|logs|base_model"
    r"|samples_rank\d+\.txt|weights_rank\d+\.safetensors|\.niaf-train\.lock|\.tmp-.*)$"
)
"""Names a niaf-train run writes at the top of its output folder (anything else makes it not ours)."""

SAMPLE_STREAM_KEYS = ("seed", "per_device_batch_size", "gradient_accumulation_steps")
"""``training`` settings that change which samples form which optimiser step."""


# ----------------------------------------------------------------------------------------------------------
# Lock
# ----------------------------------------------------------------------------------------------------------
class RunLock:
    """An exclusive, non-blocking ``flock`` on ``<output_dir>/.niaf-train.lock``, held until :meth:`release`."""

    def __init__(self, output_dir: Path) -> None:
        self.path = Path(output_dir) / LOCK_FILE
        self._fd: int | None = None
        self._created: list[Path] = []

    def acquire(self) -> RunLock:
        try:
            self._created = [p for p in (self.path.parent, *self.path.parent.parents) if not p.exists()]
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise ConfigError(
                f"training.output_dir {self.path.parent}: cannot create {self.path.name} ({err.strerror})"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                holder = self.path.read_text(encoding="utf-8").strip() or "another process"
                raise ConfigError(
                    f"training.output_dir {self.path.parent} is in use by another niaf-train run ({holder}); "
                    "wait for it to finish or choose another folder"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock. A folder the lock created and in which the run wrote nothing (it was refused before
        its first file, e.g. for a bad data path) is removed with the lock file: a refusal leaves no folder."""
        if self._fd is not None:
            if self._created and [p.name for p in self.path.parent.iterdir()] == [LOCK_FILE]:
                self.path.unlink(missing_ok=True)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        for folder in self._created:  # deepest first; only while empty
            try:
                folder.rmdir()
            except OSError:
                break
        self._created = []


# ----------------------------------------------------------------------------------------------------------
# What the folder holds
# ----------------------------------------------------------------------------------------------------------
def foreign_entries(output_dir: Path) -> list[str]:
    """Top-level entries of ``output_dir`` that a niaf-train run does not write (sorted)."""
    if not output_dir.is_dir():
        return []
    return sorted(p.name for p in output_dir.iterdir() if not RUN_ENTRIES.match(p.name))


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or path.is_relative_to(folder)


def check_overwrite(cfg: FinetuneConfig, data_paths: list[Path]) -> None:
    """Refuse ``--overwrite_output_dir`` unless the folder is a niaf-train run and holds no input.

    Raises:
        ConfigError: the folder holds files a run does not write, or contains the dataset or the chunk cache.
    """
    out = Path(cfg.training.output_dir)
    if not out.is_dir():
        return
    for path in data_paths:
        if _inside(path, out):
            raise ConfigError(
                f"--overwrite_output_dir: training.output_dir {out} contains {path}, which this run reads; "
                "refusing to delete it (choose an output folder outside the data and the cache)"
            )
    contents = [p.name for p in out.iterdir() if p.name != LOCK_FILE]
    if not contents:
        return
    foreign = foreign_entries(out)
    if (out / RUN_CONFIG).is_file() and not foreign:
        return
    what = f"files a niaf-train run does not write ({foreign[:5]})" if foreign else "no run_config.json"
    raise ConfigError(
        f"--overwrite_output_dir: training.output_dir {out} holds {what}; it is not a niaf-train run, refusing to "
        "delete it"
    )


def clear_run(output_dir: Path) -> None:
    """Delete a previous run's entries (call only after :func:`check_overwrite` and every other check)."""
    for path in sorted(output_dir.iterdir()):
        if path.name == LOCK_FILE or not RUN_ENTRIES.match(path.name):
            continue
        logger.warning("--overwrite_output_dir: removing %s of the previous run", path)
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


# ----------------------------------------------------------------------------------------------------------
# Sample-stream fingerprint
# ----------------------------------------------------------------------------------------------------------
def data_digest(dataset: Any, train_rows: np.ndarray, val_rows: np.ndarray) -> str:
    """sha256 of the chunk dataset's low-dimensional content and of the training / held-out split."""
    digest = hashlib.sha256()
    columns = [c for c in ("episode_index", "action", "state", "velocity", "action_mask", "task")
               if c in dataset.column_names]
    digest.update(json.dumps([len(dataset), columns]).encode())
    view = dataset.select_columns(columns).with_format("numpy")
    for start in range(0, len(dataset), 4096):
        batch = view[start : start + 4096]
        for name in columns:
            value = batch[name]
            if name == "task":
                digest.update("\0".join(str(v) for v in value).encode())
            else:
                array = np.ascontiguousarray(np.asarray(value))
                digest.update(str((array.dtype.str, array.shape)).encode())
                digest.update(array.tobytes())
    digest.update(np.asarray(train_rows, dtype=np.int64).tobytes())
    digest.update(b"|")
    digest.update(np.asarray(val_rows, dtype=np.int64).tobytes())
    return digest.hexdigest()


def run_fingerprint(cfg: FinetuneConfig, data_sha256: str, num_processes: int) -> dict[str, Any]:
    t = cfg.training
    return {
        "data_sha256": data_sha256,
        "num_processes": int(num_processes),
        **{f"training.{k}": getattr(t, k) for k in SAMPLE_STREAM_KEYS},
    }


def check_resume_fingerprint(output_dir: Path, current: dict[str, Any]) -> None:
    """Refuse a resume whose data or sample-stream settings differ from those the run started with."""
    path = output_dir / FINGERPRINT_FILE
    if not path.is_file():
        raise ConfigError(
            f"--resume: {path} is missing; this run cannot be checked to continue on the same data and settings"
        )
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"--resume: {path} is unreadable ({err})") from None
    changed = sorted(k for k in set(previous) | set(current) if previous.get(k) != current.get(k))
    if changed:
        detail = ", ".join(
            f"{k}: {previous.get(k)!r} → {current.get(k)!r}" if k != "data_sha256" else "the training data changed"
            for k in changed
        )
        raise ConfigError(
            f"--resume: {detail} (recorded in {path}); the checkpoint's statistics and optimizer state belong to "
            "the old sample stream. Start a new run instead"
        )


def write_fingerprint(output_dir: Path, fingerprint: dict[str, Any]) -> None:
    tmp = output_dir / (FINGERPRINT_FILE + ".tmp")
    tmp.write_text(json.dumps(fingerprint, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, output_dir / FINGERPRINT_FILE)


# ----------------------------------------------------------------------------------------------------------
# Checks that save hours: the checkpoint to resume from, the disk to write to
# ----------------------------------------------------------------------------------------------------------
def check_training_state(checkpoint: Path, num_processes: int) -> None:
    """Refuse a checkpoint whose optimizer, scheduler, model or RNG state files are missing or truncated."""
    state = checkpoint / "training_state"
    needed = [state / "optimizer.bin", state / "scheduler.bin"]
    needed += [state / f"random_states_{i}.pkl" for i in range(num_processes)]
    # one process / DDP: model.safetensors (or .bin); FSDP: pytorch_model_fsdp.bin (full state dict) or the folder
    # pytorch_model_fsdp_0 (sharded state dict)
    model = [state / "model.safetensors", state / "pytorch_model.bin", state / "pytorch_model_fsdp.bin"]
    if (state / "pytorch_model_fsdp_0").is_dir():
        model = [state / "pytorch_model_fsdp_0"]
    elif not any(p.is_file() for p in model):
        raise ConfigError(f"--resume: {model[0]} is missing (model state of checkpoint {checkpoint.name})")
    for path in needed:
        if not path.is_file():
            raise ConfigError(f"--resume: {path} is missing; the checkpoint is incomplete")
    for path in [*needed, *(p for p in model if p.is_file())]:
        if path.suffix in (".bin", ".pkl"):  # torch.save writes a zip archive; a truncated one has no directory
            try:
                with zipfile.ZipFile(path):
                    pass
            except (zipfile.BadZipFile, OSError) as err:
                raise ConfigError(f"--resume: {path} is truncated or corrupt ({err})") from None
        if path.suffix == ".safetensors":
            _check_safetensors(path)


def _check_safetensors(path: Path) -> None:
    size = path.stat().st_size
    try:
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n)) if 0 < n <= size - 8 else None
    except (OSError, ValueError) as err:
        raise ConfigError(f"--resume: {path} is unreadable ({err})") from None
    if header is None:
        raise ConfigError(f"--resume: {path} is truncated ({size} bytes)")
    end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        raise ConfigError(f"--resume: {path} is truncated ({size} bytes, its header needs {8 + n + end})")


def check_writable(output_dir: Path, need_bytes: int) -> None:
    """Refuse an output folder that cannot be written or lacks room for about ``need_bytes`` (two checkpoints)."""
    probe = output_dir / ".tmp-write-probe"
    try:
        with open(probe, "wb") as fh:
            fh.write(b"\0" * 4096)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as err:
        raise ConfigError(f"training.output_dir {output_dir}: cannot write {probe.name} ({err.strerror})") from None
    finally:
        probe.unlink(missing_ok=True)
    free = shutil.disk_usage(output_dir).free
    if free < need_bytes:
        raise ConfigError(
            f"training.output_dir {output_dir}: {free / 2**30:.2f} GiB free, a run needs about "
            f"{need_bytes / 2**30:.2f} GiB (two checkpoints with optimizer state and the final model)"
        )


def checkpoint_bytes(model: Any) -> int:
    """About the bytes one checkpoint takes: weights (exported + training state) and AdamW's two moments."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    trainable = sum(p.numel() * 4 for p in model.parameters() if p.requires_grad)
    return 2 * weights + 2 * trainable


__all__ = [
    "FINAL_DIR",
    "FINGERPRINT_FILE",
    "HISTORY_FILE",
    "LOCK_FILE",
    "METRICS_FILE",
    "RUN_CONFIG",
    "RUN_ENTRIES",
    "RunLock",
    "SAMPLE_STREAM_KEYS",
    "check_overwrite",
    "check_resume_fingerprint",
    "check_training_state",
    "check_writable",
    "checkpoint_bytes",
    "clear_run",
    "data_digest",
    "foreign_entries",
    "run_fingerprint",
    "write_fingerprint",
]


# ----------------------------------------------------------------------------------------------------------
# Checked before a run starts
# ----------------------------------------------------------------------------------------------------------
def check_output_dir(cfg: FinetuneConfig) -> None:
    """Refuse an output folder holding another run (or anything else) unless resuming or overwriting.

    Raises:
        ConfigError: before anything is written.
    """
    t = cfg.training
    out = Path(t.output_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"training.output_dir {out} is a file")
    contents = [p.name for p in out.iterdir() if p.name != LOCK_FILE] if out.is_dir() else []
    if t.resume:
        if not (out / RUN_CONFIG).is_file():
            raise ConfigError(f"--resume: {out} holds no niaf-train run to resume from (no {RUN_CONFIG})")
        try:
            previous = json.loads((out / RUN_CONFIG).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
            raise ConfigError(f"--resume: {out / RUN_CONFIG} is not the JSON a niaf-train run writes "
                              f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
        if not isinstance(previous, dict) or not all(
                isinstance(previous.get(k, {}), dict) for k in ("model", "data", "training")):
            raise ConfigError(f"--resume: {out / RUN_CONFIG} must be a JSON object with 'model', 'data' and "
                              f"'training' objects, got {type(previous).__name__}")
        defaults = FinetuneConfig().to_dict()
        for section in ("model", "data"):
            # a key the run's config predates counts as its default (a newer niaf-train added the option)
            before = {**defaults[section], **previous.get(section, {})}
            now = cfg.to_dict()[section]
            changed = sorted(k for k in now if before.get(k) != now[k])
            if changed:
                raise ConfigError(f"--resume: `{section}` settings differ from the run in {out}: {changed}")
        changed = [f"training.{k}" for k in SAMPLE_STREAM_KEYS if previous.get("training", {}).get(k) != getattr(t, k)]
        if changed:
            raise ConfigError(f"--resume: {changed} differ from the run in {out}; they change the sample stream")
        return
    if contents and not t.overwrite_output_dir:
        what = "another niaf-train run" if RUN_CONFIG in contents else f"other files ({sorted(contents)[:5]})"
        if RUN_CONFIG in contents and last_checkpoint(out) is None and not (out / FINAL_DIR).is_dir():
            what += " that never completed a checkpoint (--resume starts it again from step 0)"
        raise ConfigError(
            f"training.output_dir {out} already holds {what}; choose a new folder, pass --resume to continue it, "
            "or --overwrite_output_dir to replace it"
        )
    if t.overwrite_output_dir:
        d = cfg.data
        inputs = [niaf_cache_root(d.cache_dir or None)] + ([Path(d.path).expanduser()] if d.path else [])
        check_overwrite(cfg, inputs)
