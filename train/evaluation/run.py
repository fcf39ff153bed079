"""The Python API behind ``niaf-eval``: evaluate a checkpoint (or a baseline) into an output folder."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from .closed_loop import (
    EvalError,
    EvalSettings,
    ExpertPolicy,
    RandomPolicy,
    evaluate,
    load_policy,
    resolve_seed,
    training_record,
    training_seeds,
)
from .report import plot_success, summarize, write_results

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
FIGURE_FILE = "success.png"


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
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise EvalError(f"--output-dir {out} is a file")
    if (out / RESULTS_FILE).exists():
        raise EvalError(f"--output-dir {out} already holds a {RESULTS_FILE}; choose a new folder")
    record = training_record(checkpoint, train_data)
    seed = resolve_seed(settings.seed, record)
    chunk_size, control_hz = 8, 20.0
    label = policy  # what the figure calls the policy: a comparison-head checkpoint by its head
    if policy == "niaf":
        if checkpoint is None and policy_object is None:
            raise EvalError("--checkpoint is required with --policy niaf")
        runner = policy_object if policy_object is not None else load_policy(checkpoint, settings)
        if checkpoint is not None:
            from ..baselines import checkpoint_action_head

            label = checkpoint_action_head(checkpoint)
    elif policy == "expert":
        runner = ExpertPolicy()
    elif policy == "random":
        if checkpoint is not None:
            from transformers import AutoConfig

            cfg = AutoConfig.from_pretrained(str(checkpoint), trust_remote_code=True)
            chunk_size, control_hz = cfg.chunk_size, cfg.control_hz
        runner = RandomPolicy(chunk_size, control_hz, settings.execution, seed)
    else:
        raise EvalError(f"--policy must be niaf, expert or random, got {policy!r}")
    if record is None and policy == "niaf":
        logger.warning("no training record for %s: cannot prove the evaluation variations (benchmark seed %d) are "
                       "held out; pass --train-data DATASET to check", checkpoint, seed)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results = evaluate(runner, settings, seed, progress=progress, video_dir=out / "videos")
    summary = summarize(results)
    meta = {
        "policy": policy,
        "label": label,
        "checkpoint": str(checkpoint) if checkpoint is not None else None,
        "settings": {k: v for k, v in vars(settings).items()},
        "benchmark_seed": seed,
        "training_benchmark_seeds": training_seeds(record),
        "seconds": round(time.perf_counter() - start, 2),
    }
    write_results(out / RESULTS_FILE, summary, meta)
    plot_success(out / FIGURE_FILE, {label: summary},
                 f"{label}: closed-loop success, {settings.episodes} held-out episodes per task "
                 f"(execution {settings.execution} at {settings.execute_hz:g} Hz)")
    summary.update(meta)
    return summary


__all__ = ["FIGURE_FILE", "RESULTS_FILE", "evaluate_checkpoint"]
