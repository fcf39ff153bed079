"""What the controller actually executes: the commands of one closed-loop episode at 80 Hz, per execution.

A success rate and a mean squared jerk are two numbers; this figure shows where they come from. The same held-out
variation is run once per execution (each in its own closed-loop episode, through :func:`.closed_loop.run_episode`,
the harness of ``niaf-eval``), with a new command at every simulator step (80 Hz):

* NIAF's action function queried at every step;
* the same policy's chunk points held (zero-order hold), as a waypoint policy is executed;
* the same chunk points linearly interpolated;

(or, from ``benchmarks/bench_heads.py``, a waypoint head's chunks held / interpolated). Top row: the executed
dx, dy, dz commands (Meta-World's action units, × 1 cm per 12.5 ms step); bottom row: their rate of change per
second (the finite difference of the executed commands at 80 Hz), where held waypoints show as spikes at every
chunk point and a jerky function as oscillation. The legend gives each episode's mean squared jerk.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.metaworld import METAWORLD_FPS, MetaWorldScene
from .checkpoint import load_policy, resolve_seed, training_record
from .closed_loop import run_episode
from .policies import NiafPolicy
from .settings import EvalSettings

logger = logging.getLogger(__name__)

COMMAND_LABELS = ("dx", "dy", "dz")


def record_executions(
    runs: Sequence[tuple[str, Any]],
    task: str,
    seed: int,
    variation: int = 0,
    cameras: Sequence[str] = ("corner2",),
    image_size: int = 32,
    state: str = "full",
    crop: Sequence[float] | None = None,
    camera_view: str = "niaf",
    instructions: str = "niaf",
) -> dict[str, Any]:
    """One closed-loop episode per ``(label, policy)`` on ``task``'s variation ``variation`` of benchmark seed
    ``seed``, commands read at 80 Hz, observations as the policies were trained on (``state`` kind, camera
    ``crop``). Returns ``{label: EpisodeResult}`` (``actions`` [steps, 4] executed)."""
    settings = EvalSettings(tasks=[task], episodes=1, execute_hz=METAWORLD_FPS, cameras=list(cameras),
                            image_size=image_size, state=state, crop=None if crop is None else list(crop),
                            camera_view=camera_view, instructions=instructions, video=False)
    out = {}
    with MetaWorldScene(task, seed, cameras, image_size, state, crop, camera_view, instructions) as scene:
        for label, policy in runs:
            out[label] = run_episode(scene, variation, policy, settings)
    return out


def plot_executions(results: dict[str, Any], path: str | Path, title: str) -> Path:
    """Executed dx, dy, dz commands (top) and their rate of change per second (bottom) of each episode."""
    import matplotlib  # optional dependency: matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # optional dependency: matplotlib

    dt = 1.0 / METAWORLD_FPS
    fig, axes = plt.subplots(2, 3, figsize=(11, 5.2), sharex=True)
    styles = ["-", "--", ":", "-."]
    for i, (label, res) in enumerate(results.items()):
        xyz = np.asarray(res.actions)[:, :3]
        t = np.arange(len(xyz)) * dt
        rate = np.diff(xyz, axis=0) / dt
        end = "success" if res.success else "no success"
        name = f"{label} ({end} at {res.steps} steps; mean sq. jerk {res.mean_squared_jerk:.2g})"
        for d in range(3):
            axes[0, d].plot(t, xyz[:, d], styles[i % 4], lw=1.1, label=name if d == 0 else None)
            axes[1, d].plot(t[1:], rate[:, d], styles[i % 4], lw=0.9)
    for d, axis_name in enumerate(COMMAND_LABELS):
        axes[0, d].set_title(f"executed {axis_name} command", fontsize=9)
        axes[1, d].set_title(f"d({axis_name})/dt of the executed command (1/s)", fontsize=9)
        axes[1, d].set_xlabel("time in episode (s)", fontsize=8)
        for row in range(2):
            axes[row, d].tick_params(labelsize=7)
    axes[0, 0].set_ylabel("command (x 1 cm / step)", fontsize=8)
    axes[1, 0].set_ylabel("rate of change (1/s)", fontsize=8)
    fig.legend(loc="lower center", ncol=1, fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.04 + 0.035 * len(results), 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_executed_commands(
    checkpoint: str | Path,
    path: str | Path,
    *,
    task: str | None = None,
    variation: int = 0,
    seed: int | None = None,
    waypoint_checkpoint: str | Path | None = None,
    cameras: Sequence[str] | None = None,
    image_size: int | None = None,
) -> Path:
    """The figure of the module docstring for a NIAF ``checkpoint`` (its first training task by default, held-out
    variation ``variation`` of the first benchmark seed training did not use). The held and interpolated rows
    execute ``waypoint_checkpoint``'s chunks (a waypoint comparison head) when given, else the NIAF checkpoint's
    own chunk points."""
    record = training_record(checkpoint) or {}
    task = task or (record.get("tasks") or ["reach-v3"])[0]
    cameras = list(cameras or record.get("cameras") or ["corner2"])
    image_size = int(image_size or record.get("image_size", 32))
    state, crop = record.get("state", "full"), record.get("crop")  # as the checkpoint was trained
    view, instructions = record.get("camera_view", "niaf"), record.get("instructions", "niaf")
    seed = resolve_seed(seed, record)
    settings = EvalSettings(tasks=[task], cameras=cameras, image_size=image_size, state=state, crop=crop,
                            camera_view=view, instructions=instructions)
    niaf = load_policy(checkpoint, settings)
    source = niaf if waypoint_checkpoint is None else load_policy(waypoint_checkpoint, settings)
    who = "NIAF's chunk points" if waypoint_checkpoint is None else "waypoint head's chunk"
    runs = [("NIAF function, queried at 80 Hz", niaf),
            (f"{who}, held", NiafPolicy(source.model, source.processor, cameras, "zoh")),
            (f"{who}, linearly interpolated", NiafPolicy(source.model, source.processor, cameras, "linear"))]
    results = record_executions(runs, task, seed, variation, cameras, image_size, state, crop, view, instructions)
    hz = float(niaf.model.config.control_hz)
    title = (f"{task}, held-out variation {variation} of benchmark seed {seed}: commands executed at 80 Hz "
             f"(chunks of {niaf.model.config.chunk_size} points at {hz:g} Hz, replanning every 8 steps)")
    out = plot_executions(results, path, title)
    logger.info("executed-command figure: %s", out)
    return out


__all__ = ["plot_executed_commands", "plot_executions", "record_executions"]
