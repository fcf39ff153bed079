"""Terminal output of the command lines: log lines that do not glue onto progress bars, quiet third parties.

``configure_logging()`` is called by ``niaf-train`` (and may be by any other entry point): our loggers
(``niaf_train.*``, ``niaf.*``) log at INFO, everything else only from WARNING (PyOpenGL's "No OpenGL_accelerate
module loaded", Accelerate's per-checkpoint "Saving current state to ..." and similar INFO lines are
dropped unless ``NIAF_THIRD_PARTY_LOG_LEVEL=INFO``, and so are transformers' per-checkpoint "Loading weights" / "Writing model shards" bars), and every
record is written with ``tqdm.write`` so that an active progress bar is cleared, the line
printed on its own, and the bar redrawn below it.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

OUR_LOGGERS = ("niaf_train", "niaf", "modeling_niaf")
"""Loggers kept at the chosen level; every other logger only reports warnings and errors."""

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class TqdmLoggingHandler(logging.Handler):
    """A handler that prints through ``tqdm.write`` (to stderr), so log lines and progress bars stay apart."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm.auto import tqdm  # lazy: tqdm.auto probes for notebook support

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001  (logging must never raise)
            self.handleError(record)


LEVEL_ENV = "NIAF_LOG_LEVEL"
THIRD_PARTY_LEVEL_ENV = "NIAF_THIRD_PARTY_LOG_LEVEL"


def _level_from_env(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip().upper()
    if not value:
        return default
    level = logging.getLevelName(value)
    if not isinstance(level, int):
        raise ValueError(f"{name}={value!r} is not a logging level; use DEBUG, INFO, WARNING or ERROR")
    return level


def configure_logging(level: int | None = None, third_party_level: int | None = None) -> None:
    """Route the root logger through `TqdmLoggingHandler`; ours at ``level``, the rest at ``third_party_level``.

    Defaults: ``$NIAF_LOG_LEVEL`` or INFO, and ``$NIAF_THIRD_PARTY_LOG_LEVEL`` or WARNING (set it to INFO to see
    the messages silenced by default). Idempotent. transformers' own stderr handler is replaced by propagation
    to the root logger, so its warnings go through the same handler.

    Raises:
        ValueError: one of the environment variables does not name a logging level.
    """
    level = _level_from_env(LEVEL_ENV, logging.INFO) if level is None else level
    third_party_level = (_level_from_env(THIRD_PARTY_LEVEL_ENV, logging.WARNING) if third_party_level is None
                         else third_party_level)
    root = logging.getLogger()
    if not any(isinstance(h, TqdmLoggingHandler) for h in root.handlers):
        handler = TqdmLoggingHandler()
        handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(handler)
    root.setLevel(third_party_level)
    for name in OUR_LOGGERS:
        logging.getLogger(name).setLevel(level)
    try:
        from transformers.utils import logging as hf_logging  # heavy: transformers

        hf_logging.set_verbosity(third_party_level)
        hf_logging.disable_default_handler()
        hf_logging.enable_propagation()
        hf_logging.disable_progress_bar()  # "Loading weights" / "Writing model shards" bars at every checkpoint
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass


def print_error(message: str) -> None:
    """Print a one-line error on stderr on a line of its own, even while a progress bar is drawn there."""
    from tqdm.auto import tqdm  # lazy: tqdm.auto probes for notebook support

    tqdm.write(message, file=sys.stderr)


def count_parameters(model: Any) -> tuple[int, int]:
    """(total, trainable) parameter counts; parameters shared between modules are counted once."""
    seen: set[int] = set()
    total = trainable = 0
    for param in model.parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        total += param.numel()
        if param.requires_grad:
            trainable += param.numel()
    return total, trainable


def format_step_line(step: int, max_steps: int, logs: dict[str, float]) -> str:
    """One periodic training line, e.g.
    ``step 20/500 | loss 0.1234 (pos 0.1201, jerk 3.3e-03) | lr 1.00e-03 | grad_norm 0.532 | 812.3 samples/s |
    data 3.1 ms/step (12%)``; ``logs`` holds the ``train/*`` values of the history."""
    parts = [f"step {step}/{max_steps}"]
    if "train/loss" in logs:
        terms = [f"{name} {logs[f'train/loss_{name}']:.4g}" for name in ("pos", "vel", "jerk")
                 if f"train/loss_{name}" in logs]
        parts.append(f"loss {logs['train/loss']:.4g}" + (f" ({', '.join(terms)})" if terms else ""))
    if "train/lr" in logs:
        parts.append(f"lr {logs['train/lr']:.3g}")
    if "train/grad_norm" in logs:
        parts.append(f"grad_norm {logs['train/grad_norm']:.4g}")
    if "train/samples_per_second" in logs:
        parts.append(f"{logs['train/samples_per_second']:.1f} samples/s")
    if "train/data_seconds_per_step" in logs:
        data = f"data {1000 * logs['train/data_seconds_per_step']:.1f} ms/step"
        if "train/data_fraction" in logs:
            data += f" ({100 * logs['train/data_fraction']:.0f}%)"
        parts.append(data)
    return " | ".join(parts)


__all__ = ["TqdmLoggingHandler", "configure_logging", "count_parameters", "format_step_line", "print_error"]
