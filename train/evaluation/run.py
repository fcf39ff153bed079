"""The Python API behind ``niaf-eval``: evaluate a checkpoint (or a baseline) into an output folder."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import time
from pathlib import Path
from typing import Any

from ..baselines import checkpoint_action_head
from .checkpoint import load_policy, resolve_seeds, training_record, training_seeds
from .closed_loop import evaluate
from .policies import ExpertPolicy, RandomPolicy
from .report import plot_success, summarize, write_results
from .settings import EvalError, EvalSettings

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
FIGURE_FILE = "success.png"
LOCK_FILE = ".niaf-eval.lock"


class OutputLock:
    """An exclusive, non-blocking ``flock`` on ``<output_dir>/.niaf-eval.lock`` while an evaluation writes there.

    The kernel drops it when the process dies (no stale lock). A folder the lock created is removed again by
    :meth:`release` when the evaluation left nothing in it but the lock file.
    """

    def __init__(self, output_dir: Path) -> None:
        self.folder = Path(output_dir)
        self.path = self.folder / LOCK_FILE
        self.created: list[Path] = []
        self._fd: int | None = None

    def acquire(self) -> OutputLock:
        missing = [p for p in (self.folder, *self.folder.parents) if not p.exists()]
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.created = missing  # deepest first
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            self.release()
            raise EvalError(f"--output-dir {self.folder}: cannot create {LOCK_FILE} ({err.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise EvalError(f"--output-dir {self.folder} is in use by another niaf-eval run; wait for it or "
                                "choose another folder") from None
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            if self.created and [p.name for p in self.folder.iterdir()] == [LOCK_FILE]:
                self.path.unlink(missing_ok=True)  # nothing was written: leave no folder behind
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        for folder in self.created:  # only folders this lock made, and only while empty
            try:
                folder.rmdir()
            except OSError:
                break
        self.created = []


def _existing_outputs(out: Path, settings: EvalSettings) -> list[str]:
    """Files of ``out`` that this evaluation would write (and so overwrite)."""
    names = [RESULTS_FILE, FIGURE_FILE]
    if settings.video:
        names += [f"videos/{task}.mp4" for task in settings.tasks]
    return [n for n in names if os.path.lexists(out / n)]


def evaluate_checkpoint(
    checkpoint: str | None,
    settings: EvalSettings,
    output_dir: str | Path,
    *,
    policy: str = "niaf",
    train_data: str | None = None,
    progress: bool = True,
    policy_object: Any = None,
) -> dict[str, Any]:
    """Run ``settings`` in closed loop and write ``results.json``, ``success.png`` and ``videos/<task>.mp4``
    into ``output_dir``. Returns the results (what ``results.json`` holds).

    Every argument, the training records and the held-out seeds are checked before the model loads; the output
    folder is then locked (a second evaluation on it is refused) and must not hold any file this one writes.

    Args:
        checkpoint: a local NIAF checkpoint folder or a Hub id (required for ``policy="niaf"``; for the
            baselines it only provides the training record, chunk size and rate).
        settings: tasks, episodes, execution, rates; see :class:`EvalSettings`.
        policy: ``niaf``, ``expert`` or ``random``.
        train_data: the training dataset folder, whose ``info.json`` says which variations it used (default:
            the checkpoint's ``training_data.json``).
        policy_object: an already loaded :class:`NiafPolicy` (reused across runs; skips loading).
    """
    settings.check()
    if policy not in ("niaf", "expert", "random"):
        raise EvalError(f"--policy must be niaf, expert or random, got {policy!r}")
    if policy == "niaf" and checkpoint is None and policy_object is None:
        raise EvalError("--checkpoint is required with --policy niaf")
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise EvalError(f"--output-dir {out} is a file")
    record = training_record(checkpoint, train_data)
    seeds = resolve_seeds(settings.seed, record, settings.episodes)
    settings.check_cameras()
    _refuse_existing(out, settings)
    lock = OutputLock(out).acquire()
    try:
        _refuse_existing(out, settings)  # again under the lock: another run may have finished meanwhile
        return _evaluate_locked(checkpoint, settings, out, policy, record, seeds, progress, policy_object)
    finally:
        lock.release()


def _refuse_existing(out: Path, settings: EvalSettings) -> None:
    existing = _existing_outputs(out, settings)
    if existing:
        raise EvalError(f"--output-dir {out} already holds {', '.join(existing)}; choose a new folder (nothing is "
                        "overwritten)")


def _evaluate_locked(checkpoint: str | None, settings: EvalSettings, out: Path, policy: str,
                     record: dict[str, Any] | None, seeds: list[int], progress: bool,
                     policy_object: Any) -> dict[str, Any]:
    seed = seeds[0]
    chunk_size, control_hz = 8, 20.0
    label = policy  # what the figure calls the policy: a comparison-head checkpoint by its head
    if policy == "niaf":
        runner = policy_object if policy_object is not None else load_policy(checkpoint, settings)
        if checkpoint is not None:
            label = checkpoint_action_head(checkpoint)
    elif policy == "expert":
        runner = ExpertPolicy()
    elif policy == "random":
        if checkpoint is not None:
            from transformers import AutoConfig  # heavy: transformers

            cfg = AutoConfig.from_pretrained(str(checkpoint), trust_remote_code=True)
            chunk_size, control_hz = cfg.chunk_size, cfg.control_hz
        runner = RandomPolicy(chunk_size, control_hz, settings.execution, seed)
    if record is None and policy == "niaf":
        logger.warning("no training record for %s: cannot prove the evaluation variations (benchmark seed %d) are "
                       "held out; pass --train-data DATASET to check", checkpoint, seed)
    start = time.perf_counter()
    results = evaluate(runner, settings, seeds, progress=progress, video_dir=out / "videos")
    summary = summarize(results)
    meta = {
        "policy": policy,
        "label": label,
        "checkpoint": str(checkpoint) if checkpoint is not None else None,
        "settings": {k: v for k, v in vars(settings).items()},
        "benchmark_seed": seed,
        "benchmark_seeds": seeds,
        "training_benchmark_seeds": training_seeds(record),
        "seconds": round(time.perf_counter() - start, 2),
    }
    write_results(out / RESULTS_FILE, summary, meta)
    plot_success(out / FIGURE_FILE, {label: summary},
                 f"{label}: closed-loop success, {settings.episodes} held-out episodes per task "
                 f"(execution {settings.execution} at {settings.execute_hz:g} Hz)")
    summary.update(meta)
    return summary


__all__ = ["FIGURE_FILE", "LOCK_FILE", "OutputLock", "RESULTS_FILE", "evaluate_checkpoint"]
