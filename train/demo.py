"""The end-to-end default job: Meta-World demos → tiny NIAF fine-tune → Hub checkpoint → closed-loop success.

    python -m niaf_train.demo --output_dir outputs/metaworld-tiny
    python -m niaf_train.demo --output_dir DIR --max_steps 40 --data.metaworld_episodes_per_task 4 \
        --eval_episodes 2                                                  # a smoke run

Any ``niaf-train`` key can be overridden (``--section.key value``); ``--eval_episodes N`` sets the closed-loop
episodes per task (default 50). Steps:

1. scripted-expert Meta-World demonstrations are generated once and cached (``~/.cache/niaf``);
2. a tiny NIAF is fine-tuned with ``niaf-train`` (:mod:`niaf_train.training`) (config ``default.yaml``);
3. the final Hub-layout checkpoint is reloaded with ``AutoModel.from_pretrained(..., trust_remote_code=True)``
   and ``AutoProcessor`` — the same path a Hub user takes;
4. held-out chunks are queried at 4× the training rate (``4·(K-1)+1`` points) with analytic derivatives and
   plotted (``demo_trajectories.png``);
5. the checkpoint runs in closed loop (:mod:`niaf_train.evaluation`) on held-out Meta-World variations, with its
   action function executed at the training rate and at 4× that rate, once more at the training rate with every
   camera frame black (``--ablate images``: what the policy relies on, written into the model card), next to the
   scripted expert in the same harness; ``closed_loop/`` holds each run's ``results.json``, figure and rollout
   videos, and ``closed_loop_success.png`` compares them;
6. ``executed_commands.png``: the commands executed at 80 Hz over one held-out episode, position and rate of
   change, for the function and for its chunk points held and linearly interpolated
   (:mod:`niaf_train.evaluation.command_plot`).
"""

from __future__ import annotations

import copy
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .data.chunking import with_torch_format
from .data.metaworld import METAWORLD_FPS, STATE_KINDS
from .evaluation import EvalSettings
from .evaluation.closed_loop import EvalError, load_policy, observation_ablation
from .evaluation.command_plot import plot_executed_commands
from .evaluation.report import format_table, input_reliance_section, plot_success, write_input_reliance
from .evaluation.run import evaluate_checkpoint
from .training.arguments import ConfigError, load_config
from .training.collation import Collator
from .training.dataset import load_chunks, metaworld_control_hz, split_episodes
from .training.loop import train

logger = logging.getLogger("niaf_train.demo")


def reload_and_query(final_dir: Path, cfg: Any, out_png: Path, num_examples: int = 3) -> dict[str, Any]:
    """Reload the checkpoint through the Auto classes and query held-out chunks at 4× the training rate."""
    from transformers import AutoModel, AutoProcessor  # heavy: transformers

    model = AutoModel.from_pretrained(str(final_dir), trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(str(final_dir), trust_remote_code=True)
    dataset = load_chunks(cfg)
    _, val_rows = split_episodes(dataset, cfg.data.val_fraction, cfg.training.seed)
    cameras = [c for c in dataset.column_names if c.startswith("observation.images.")][: model.config.num_cameras]
    if cfg.data.cameras:
        cameras = [c if c.startswith("observation.images.") else f"observation.images.{c}" for c in cfg.data.cameras]
    view = with_torch_format(dataset)
    pick = val_rows[np.linspace(0, len(val_rows) - 1, num_examples).round().astype(int)]
    rows = [view[int(i)] for i in pick]
    batch = Collator(processor, cameras, model.config.use_state, False)(rows)
    batch.pop("sample_index")
    k = model.config.chunk_size
    num_points = 4 * (k - 1) + 1
    traj = model.generate_actions(**batch, num_points=num_points, derivatives=3).to_numpy()
    at_k = model.generate_actions(**batch, derivatives=0).to_numpy()
    truth = np.stack([r["action"].numpy() for r in rows])
    _plot(traj, at_k, truth, model.config, out_png, [r["task"] for r in rows])
    return {"num_points": num_points, "chunk_size": k, "control_hz": model.config.control_hz,
            "query_hz": model.config.control_hz * (num_points - 1) / (k - 1),
            "example_position_mse": float(np.mean((at_k.position - truth) ** 2))}


ACTION_LABELS = ["dx (cm / step)", "dy (cm / step)", "dz (cm / step)", "gripper effort (+ closes)"]
"""Meta-World's action dimensions and units (displacement of the hand target per 12.5 ms step, × 1 cm)."""


def _plot(traj: Any, at_k: Any, truth: np.ndarray, config: Any, path: Path, tasks: list[str]) -> None:
    import matplotlib  # optional dependency: matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # optional dependency: matplotlib

    n, dims = truth.shape[0], truth.shape[-1]
    labels = ACTION_LABELS if dims == len(ACTION_LABELS) else [f"action dim {d}" for d in range(dims)]
    t_dense = np.asarray(traj.time).reshape(-1)
    t_k = np.arange(config.chunk_size) / config.control_hz
    fig, axes = plt.subplots(n, dims, figsize=(2.8 * dims, 2.1 * n + 0.6), squeeze=False, sharex=True, sharey="col")
    for i in range(n):
        for d in range(dims):
            ax = axes[i, d]
            ax.plot(t_dense, traj.position[i, :, d], lw=1.2, label=f"NIAF, {len(t_dense)} queries")
            ax.plot(t_k, truth[i, :, d], "o", ms=3, color="k", label="expert (held out)")
            ax.tick_params(labelsize=6)
            if i == 0:
                ax.set_title(labels[d], fontsize=8)
            if i == n - 1:
                ax.set_xlabel("time in chunk (s)", fontsize=7)
        axes[i, 0].annotate(tasks[i], (0.0, 1.02), xycoords="axes fraction", fontsize=7, ha="left", va="bottom")
    axes[0, -1].legend(fontsize=6, loc="best")
    fig.suptitle(f"held-out Meta-World chunks: {config.chunk_size} points at {config.control_hz:g} Hz, "
                 f"queried at 4x", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def closed_loop(final_dir: Path, cfg: Any, out: Path, episodes: int, replan_every: int = 8,
                progress: bool = True) -> dict[str, Any]:
    """The checkpoint in closed loop on held-out variations, at the training rate, at 4× it and with black frames,
    and the scripted expert in the same harness. Returns ``{run name: results}``; files under
    ``out / "closed_loop"``; the card gets the measured input reliance."""
    d = cfg.data
    train_hz = metaworld_control_hz(cfg)
    fast_hz = min(METAWORLD_FPS, 4 * train_hz)
    base = {"tasks": list(d.metaworld_tasks), "episodes": episodes, "cameras": list(d.metaworld_camera),
            "image_size": d.metaworld_image_size, "replan_every": replan_every, "state": d.metaworld_state,
            "crop": d.metaworld_crop, "camera_view": d.metaworld_camera_view,
            "instructions": d.metaworld_instructions}
    runs = [  # (name, policy, folder under closed_loop/, settings); the NIAF runs share one loaded model
        (f"NIAF @ {train_hz:g} Hz (training rate)", "niaf", "niaf_train_rate", EvalSettings(execute_hz=train_hz, **base)),
        (f"NIAF @ {fast_hz:g} Hz ({fast_hz / train_hz:g}x)", "niaf", "niaf_4x_rate", EvalSettings(execute_hz=fast_hz, **base)),
        (f"NIAF @ {train_hz:g} Hz, black frames", "niaf", "niaf_black_frames",
         EvalSettings(execute_hz=train_hz, ablate=["images"], video=False, **base)),
        ("scripted expert", "expert", "expert", EvalSettings(video=False, **base)),
    ]
    policy = load_policy(final_dir, runs[0][3])
    results = {}
    for name, kind, folder, settings in runs:
        runner = None
        if kind == "niaf":  # the same model, with the run's inputs withheld
            runner = copy.copy(policy)
            runner.ablation = observation_ablation(policy.model.config, settings)
        results[name] = evaluate_checkpoint(str(final_dir), settings, out / "closed_loop" / folder, policy=kind,
                                            policy_object=runner, progress=progress)
    # the model card's model-index gets the success at the training rate (niaf-eval's results, as a user would add them)
    from modeling_niaf.hub import add_eval_results, closed_loop_eval_results

    add_eval_results(final_dir, closed_loop_eval_results(next(iter(results.values())), "metaworld"))
    write_input_reliance(final_dir / "README.md", input_reliance_section(
        results[runs[0][0]], {"images": results[runs[2][0]]}))
    plot_success(out / "closed_loop_success.png", results,
                 f"closed loop, {episodes} held-out episodes per task (benchmark seed "
                 f"{next(iter(results.values()))['benchmark_seed']})")
    return results


PIXELS_CONFIG = "metaworld_pixels.yaml"
PIXELS_DOCUMENTED = ("77.0 % mean at 20 Hz on 50 held-out episodes per task with training seed 0, 13.0 % "
                     "with black frames; 41.0 % and 54.0 % with seeds 1 and 2")
"""The last documented measurement of the pixels policy (docs/benchmarks.md, "A policy that sees"), printed by
the main job when no run of its own is found; update both together."""


def input_summary(cfg: Any, loop: dict[str, Any]) -> list[str]:
    """Lines saying which inputs the trained policy reads and what black frames did to it (from ``loop``), and,
    for a policy handed Meta-World's privileged state, where the policy that has to find the goal in its cameras
    is: its own run's result when one is found under the pixels config's output folder, else the documented one."""
    d = cfg.data
    normal = next(iter(loop.values()))["mean_success"]  # the training rate comes first
    black = next(r for name, r in loop.items() if "black frames" in name)["mean_success"]
    cameras = ", ".join(d.metaworld_camera)
    crop = " (cropped to the workspace)" if d.metaworld_crop else ""
    privileged = d.metaworld_state == "full"
    state = (f"Meta-World's {len(STATE_KINDS['full'])}-d privileged state (hand, object and goal positions)"
             if privileged else f"{len(STATE_KINDS[d.metaworld_state])}-d {d.metaworld_state} (hand position "
             "and gripper only: the object and the goal must come from the cameras)")
    lines = [f"inputs of this policy: {state}; camera(s) {cameras} at {d.metaworld_image_size} px{crop}; the "
             "instruction",
             f"with every camera frame black: {100 * black:.1f} % success (against {100 * normal:.1f} %)"]
    if privileged:
        pixels_cfg = load_config(PIXELS_CONFIG, [])
        summary = Path(pixels_cfg.training.output_dir) / "demo_summary.json"
        measured = f"documented: {PIXELS_DOCUMENTED}"
        if summary.is_file():
            try:
                runs = json.loads(summary.read_text(encoding="utf-8"))["closed_loop"]
                blind = [r for name, r in runs.items() if "black frames" in name]
                first = next(iter(runs.values()))["mean_success"]
                measured = f"your run in {summary.parent}: {100 * first:.1f} % mean at the training rate"
                if blind:
                    measured += f", {100 * blind[0]['mean_success']:.1f} % with black frames"
            except (OSError, ValueError, KeyError, TypeError, StopIteration, AttributeError):
                logger.warning("could not read %s; showing the documented result", summary)
        lines.append(f"a policy that must find the goal in its cameras (state: hand + gripper only): "
                     f"python -m niaf_train.demo --config {PIXELS_CONFIG}  [{measured}]")
    return lines


def _split_eval_args(argv: list[str]) -> tuple[list[str], int, int]:
    episodes, replan = 50, 8
    for flag in ("--eval_episodes", "--eval_replan_every"):
        if flag in argv:
            i = argv.index(flag)
            try:
                value = int(argv[i + 1])
            except (IndexError, ValueError):
                raise ConfigError(f"{flag} needs a whole number") from None
            if value < 1:
                raise ConfigError(f"{flag} must be >= 1, got {value}")
            argv = argv[:i] + argv[i + 2:]
            if flag == "--eval_episodes":
                episodes = value
            else:
                replan = value
    return argv, episodes, replan


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print(__doc__)
        print("Configuration keys: run `niaf-train --help`.")
        return 0
    if "--config" in argv:
        i = argv.index("--config")
        config, argv = argv[i + 1], argv[:i] + argv[i + 2:]
    else:
        config = "default.yaml"
    start = time.perf_counter()
    try:
        argv, episodes, replan = _split_eval_args(argv)
        cfg = load_config(config, argv)
        if cfg.data.source != "metaworld":
            raise ConfigError("the demo job evaluates in Meta-World; data.source must be metaworld "
                              "(use niaf-train for other data)")
        result = train(cfg)
    except ConfigError as err:
        print(f"niaf_train.demo: error: {err}", file=sys.stderr)
        return 2
    out = Path(cfg.training.output_dir)
    final_dir = Path(result["final_dir"])
    query = reload_and_query(final_dir, cfg, out / "demo_trajectories.png")
    try:
        loop = closed_loop(final_dir, cfg, out, episodes, replan)
        commands_png = plot_executed_commands(
            final_dir, out / "executed_commands.png",
            seed=next(iter(loop.values()))["benchmark_seed"])
    except EvalError as err:
        print(f"niaf_train.demo: error: {err}", file=sys.stderr)
        return 2
    m = result["metrics"]
    summary = {"metrics": m, "query": query, "train_seconds": result["train_seconds"],
               "closed_loop": {name: {"mean_success": r["mean_success"],
                                      "tasks": {t: {k: v for k, v in row.items() if k != "success_per_episode"}
                                                for t, row in r["tasks"].items()},
                                      "settings": r["settings"], "benchmark_seed": r["benchmark_seed"]}
                               for name, r in loop.items()},
               "wall_seconds": time.perf_counter() - start}
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    ratio = m["position_mse"] / m["baseline_position_mse"]
    print("\n=== NIAF on Meta-World: closed loop on held-out variations ===")
    print(format_table({name.split(" (")[0]: r for name, r in loop.items()},
                       f"success over {episodes} episodes per task [95% Wilson interval]"))
    print()
    for line in input_summary(cfg, loop):
        print(line)
    print("\nopen loop (held-out chunks, physical action units):")
    print(f"  position MSE {m['position_mse']:.5f} vs mean-action baseline {m['baseline_position_mse']:.5f} "
          f"(ratio {ratio:.2f}); mean squared jerk at 4x {m['mean_squared_jerk']:.4g} (per s^3)^2")
    print(f"checkpoint (Hub layout): {final_dir}")
    print(f"closed-loop results, videos: {out / 'closed_loop'}; figure: {out / 'closed_loop_success.png'}")
    print(f"executed commands at 80 Hz over one episode (function, held, interpolated): {commands_png}")
    print(f"wall time: {summary['wall_seconds']:.0f} s (training {result['train_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
