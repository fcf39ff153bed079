"""Closed-loop results: success rates with Wilson intervals, ``results.json``, a figure, rollout videos."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.metaworld import _FastRenderer

VIDEO_VIEW = 192
"""Side of the larger scene view in the rollout videos (pixels)."""


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (default 95 %): (low, high) in [0, 1]."""
    if n <= 0:
        raise ValueError(f"wilson_interval: n must be > 0, got {n}")
    if not 0 <= successes <= n:
        raise ValueError(f"wilson_interval: successes must be in [0, {n}], got {successes}")
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _finite_mean(values: Sequence[float | None]) -> float | None:
    arr = np.array([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    return float(arr.mean()) if arr.size else None


def summarize(results: dict[str, list[Any]]) -> dict[str, Any]:
    """Per task: success rate, its 95 % Wilson interval, episodes, mean steps to success, mean squared jerk and
    SPARC of the executed actions; ``mean_success`` over tasks.

    Every episode of a task must run another (benchmark seed, variation): a repeat is refused (ValueError),
    since the interval counts each episode as an independent trial."""
    tasks = {}
    for task, episodes in results.items():
        trials = [(getattr(e, "benchmark_seed", None), e.variation) for e in episodes]
        repeated = sorted({t for t in trials if trials.count(t) > 1}, key=str)
        if repeated:  # a deterministic policy replays a repeated variation: it is not a new Bernoulli trial
            raise ValueError(f"summarize: task {task} runs (benchmark seed, variation) {repeated[:3]} more than "
                             "once; the Wilson interval needs independent trials")
        n = len(episodes)
        wins = sum(e.success for e in episodes)
        low, high = wilson_interval(wins, n)
        tasks[task] = {
            "success_rate": wins / n, "successes": wins, "episodes": n, "wilson95": [low, high],
            "mean_steps_to_success": _finite_mean([e.steps for e in episodes if e.success]),
            "mean_squared_jerk": _finite_mean([e.mean_squared_jerk for e in episodes]),
            "sparc": _finite_mean([e.sparc for e in episodes]),
            "switch_action_jump": _finite_mean([e.switch_action_jump for e in episodes]),
            "variations": [e.variation for e in episodes],
            "benchmark_seeds": [getattr(e, "benchmark_seed", None) for e in episodes],
            "success_per_episode": [bool(e.success) for e in episodes],
        }
    mean = float(np.mean([t["success_rate"] for t in tasks.values()])) if tasks else float("nan")
    return {"mean_success": mean, "tasks": tasks}


def write_results(path: Path, summary: dict[str, Any], meta: dict[str, Any]) -> Path:
    """``results.json`` (settings, seeds and checkpoint in ``meta``), written atomically."""
    data = dict(meta)
    data.update(summary)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def format_table(rows: dict[str, dict[str, Any]], title: str = "") -> str:
    """A one-screen table: one column per run (e.g. NIAF at 20 Hz, at 80 Hz, expert), one row per task."""
    names = list(rows)
    tasks = sorted({t for r in rows.values() for t in r["tasks"]})
    width = max([len("task")] + [len(t) for t in tasks] + [len("mean")])
    cols = [max(len(n), 15) for n in names]
    lines = [title] if title else []
    lines.append("  ".join([f"{'task':<{width}}"] + [f"{n:>{c}}" for n, c in zip(names, cols, strict=True)]))
    for task in tasks + ["mean"]:
        cells = []
        for n, c in zip(names, cols, strict=True):
            if task == "mean":
                cells.append(f"{100 * rows[n]['mean_success']:>{c - 1}.1f}%")
                continue
            t = rows[n]["tasks"].get(task)
            if t is None:
                cells.append(f"{'-':>{c}}")
            else:
                lo, hi = t["wilson95"]
                cell = f"{100 * t['success_rate']:.0f}% [{100 * lo:.0f},{100 * hi:.0f}]"
                cells.append(f"{cell:>{c}}")
        lines.append("  ".join([f"{task:<{width}}"] + cells))
    return "\n".join(lines)


RELIANCE_HEADING = "## Inputs the policy relies on (closed loop)"


def input_reliance_section(normal: dict[str, Any], ablated: dict[str, dict[str, Any]]) -> str:
    """Markdown for the model card: closed-loop success with all inputs and with each ablation of
    ``ablated`` (``{"images": results, ...}``, as ``niaf-eval --ablate`` writes them), and which inputs the
    policy relies on: an input whose removal costs more than the 95 % interval of the normal run."""
    tasks = list(normal["tasks"])

    def row(name: str, results: dict[str, Any]) -> str:
        cells = [f"{100 * results['tasks'][t]['success_rate']:.0f} %" for t in tasks]
        return f"| {name} | " + " | ".join(cells) + f" | {100 * results['mean_success']:.0f} % |"

    low = float(np.mean([normal["tasks"][t]["wilson95"][0] for t in tasks]))
    relied = [name for name, res in ablated.items() if res["mean_success"] < low]
    lines = ["", RELIANCE_HEADING, "",
             f"Measured with `niaf-eval --ablate` on held-out variations (benchmark seed {normal['benchmark_seed']}, "
             f"{normal['tasks'][tasks[0]]['episodes']} episodes per task):", "",
             "| inputs | " + " | ".join(tasks) + " | mean |", "|---" * (len(tasks) + 2) + "|",
             row("all", normal)]
    lines += [row(f"without {name} ({_ABLATION_WORDS.get(name, name)})", res) for name, res in ablated.items()]
    lines += ["", ("The policy relies on: " + ", ".join(relied) + " (success drops below the 95 % interval of the "
                   "run with all inputs).") if relied else
              "No ablated input lowers success below the 95 % interval of the run with all inputs: the policy "
              "does not rely on them.", ""]
    return "\n".join(lines)


_ABLATION_WORDS = {"images": "black frames", "state": "state at its training mean", "instruction": "empty instruction",
                   "other_instruction": "another task's instruction"}


def write_input_reliance(card: Path, section: str) -> None:
    """Put ``section`` (:func:`input_reliance_section`) into a checkpoint's README.md, replacing an earlier one."""
    text = card.read_text(encoding="utf-8")
    start = text.find(RELIANCE_HEADING)
    if start >= 0:
        end = text.find("\n## ", start + len(RELIANCE_HEADING))
        text = text[:start].rstrip("\n") + ("\n" + text[end:] if end >= 0 else "\n")
    card.write_text(text.rstrip("\n") + "\n" + section, encoding="utf-8")


def plot_success(path: Path, runs: dict[str, dict[str, Any]], title: str) -> Path:
    """Bar chart of success per task (one bar per run) with 95 % Wilson intervals."""
    import matplotlib  # optional dependency: matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # optional dependency: matplotlib

    tasks = sorted({t for r in runs.values() for t in r["tasks"]})
    n = len(runs)
    width = 0.8 / max(n, 1)
    fig, ax = plt.subplots(figsize=(min(14.0, 3.0 + 0.35 * len(tasks) * max(1, n)), 4.2))
    x = np.arange(len(tasks))
    for i, (name, run) in enumerate(runs.items()):
        rates = np.array([run["tasks"].get(t, {}).get("success_rate", np.nan) for t in tasks]) * 100
        lo = np.array([run["tasks"].get(t, {}).get("wilson95", [np.nan, np.nan])[0] for t in tasks]) * 100
        hi = np.array([run["tasks"].get(t, {}).get("wilson95", [np.nan, np.nan])[1] for t in tasks]) * 100
        ax.bar(x + (i - (n - 1) / 2) * width, rates, width, label=name,
               yerr=np.maximum(np.vstack([rates - lo, hi - rates]), 0.0), capsize=2)
    ax.set_xticks(x, tasks, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("success (%), 95% Wilson interval")
    ax.set_ylim(0, 105)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=max(1, n), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


class VideoWriter:
    """An MP4 of one episode: the camera the policy sees (upscaled, nearest) beside a larger view of the scene,
    one frame per environment step (80 fps)."""

    def __init__(self, path: Path, scene: Any, camera: str | None, fps: int = 80) -> None:
        import av  # optional dependency: av (PyAV), for video

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.camera = camera
        self.scene = scene
        self.view = _FastRenderer(scene.env.model, VIDEO_VIEW, VIDEO_VIEW)
        self.rotate = scene.rotate.get(camera, False) if camera else False
        self.container = av.open(str(self.path), "w")
        self.stream = self.container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=fps)
        self.stream.width = 2 * VIDEO_VIEW if camera else VIDEO_VIEW
        self.stream.height = VIDEO_VIEW
        self.stream.pix_fmt = "yuv420p"
        self.last_policy_view: np.ndarray | None = None
        self.frames = 0

    def add(self, observation: dict[str, Any] | None, scene: Any) -> None:
        import av  # optional dependency: av (PyAV), for video

        big = self.view.render(scene.env.data, self.camera or "corner2", self.rotate)
        parts = [big]
        if self.camera:
            if observation is not None:
                small = observation[f"observation.images.{self.camera}"]
                reps = max(1, VIDEO_VIEW // small.shape[0])
                up = np.repeat(np.repeat(small, reps, axis=0), reps, axis=1)
                pad = np.zeros((VIDEO_VIEW, VIDEO_VIEW, 3), np.uint8)
                pad[: up.shape[0], : up.shape[1]] = up[:VIDEO_VIEW, :VIDEO_VIEW]
                self.last_policy_view = pad
            parts.insert(0, self.last_policy_view if self.last_policy_view is not None
                         else np.zeros((VIDEO_VIEW, VIDEO_VIEW, 3), np.uint8))
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(np.concatenate(parts, axis=1)), format="rgb24")
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()
        self.view.close()


__all__ = ["VideoWriter", "format_table", "plot_success", "summarize", "wilson_interval", "write_results"]
