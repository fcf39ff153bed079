"""NIAF under a 1 kHz joint impedance controller, against waypoint execution, on a simulated 6-joint arm.

    python examples/impedance_control/run.py --quick --output-dir out/impedance

Steps: (1) record demonstrations of the arm tracking random goal-directed motions (commanded joint
positions as actions, noisy measured joint positions and velocities as observations) and write them as a
LeRobot v3 dataset; (2) get a policy: a tiny NIAF fine-tuned on that dataset through the training entry point
(``niaf-train`` (``niaf_train.training``), L_pos + L_vel + L_jerk, config train_config.yaml), or with ``--policy oracle`` an
*oracle NIAF* (γ, β of a NIAF SIREN fitted to the reference; labelled as such everywhere); (3) run the
policy at 10 Hz in closed loop with the 1 kHz controller τ = Kp(q_d - q) + Kd(q̇_d - q̇) + bias, executing its
chunks three ways (NIAF runtime, zero-order-hold waypoints, linearly interpolated waypoints); (4) write
DIR/results.json, DIR/run_info.json and DIR/velocity_comparison.png. See README.md next to this file.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from arm import DOF, GOAL_SPAN, HOME, JOINT_NAMES, KD, KP, Arm, make_reference, record_demonstrations  # noqa: E402
from compare import LoopSettings, metrics, plot_velocities, run_method  # noqa: E402
from policies import ORACLE_LABEL, OracleNiafPolicy, SharedChunks, TrainedNiafPolicy  # noqa: E402

logger = logging.getLogger("impedance_control")

TRAIN_CONFIG = Path(__file__).resolve().parent / "train_config.yaml"

SIZES = {
    # demonstrations, their seconds, evaluation episodes, their seconds, oracle fit (Adam, L-BFGS) steps, image px,
    # optimiser steps of the NIAF fine-tune
    "smoke": dict(
        demos=4, demo_s=2.0, episodes=1, episode_s=2.0, fit_steps=(100, 100), image=32, train_steps=150
    ),
    "quick": dict(
        demos=48, demo_s=2.0, episodes=2, episode_s=3.0, fit_steps=(100, 200), image=64, train_steps=2000
    ),
    "full": dict(
        demos=64, demo_s=3.0, episodes=5, episode_s=4.0, fit_steps=(150, 300), image=64, train_steps=3000
    ),
}
METHODS = ("niaf", "waypoints_zoh", "waypoints_linear")
METHOD_TITLES = {
    "niaf": "NIAF function: position + analytic velocity through the streaming runtime (smooth switches)",
    "waypoints_zoh": "waypoints at the training rate: zero-order hold, finite-difference velocity",
    "waypoints_linear": "waypoints at the training rate: linear interpolation, finite-difference velocity",
}
REQUIRED_KEYS = ("tracking_rmse", "velocity_jitter", "peak_jerk", "boundary_velocity_jump")


def goal_segments(goals: np.ndarray) -> list[slice]:
    """Frame ranges [start, stop) of constant goal, in order (``goals``: [T, D] the goal at each frame)."""
    change = np.flatnonzero(np.any(goals[1:] != goals[:-1], axis=1)) + 1
    bounds = [0, *change.tolist(), len(goals)]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def write_dataset(demos, root: Path, fps: float) -> Path | None:
    """Write the demonstrations as a LeRobot v3 dataset, one episode per goal segment.

    observation.state = [q_d, q̇_d, q̈_d, goal], observation.velocity = measured joint velocities. Each
    demonstration is cut where its goal changes: a goal change is not visible before it happens, so a training
    chunk that straddles one would teach the policy to hedge every prediction against a change that may come
    (chunks are padded past an episode's end and the padded steps are left out of the loss, so no frame is
    lost). The segment after a change starts from the motion toward the previous goal, so mid-motion goal
    changes are in the data.
    """
    try:
        from niaf_train.data.episodes import Episode
        from niaf_train.data.lerobot_v3 import write_lerobot_dataset
    except ImportError as err:  # the data extra is part of the project; say so loudly if it is missing
        logger.warning("LeRobot v3 writer unavailable (%s); the demonstrations are not written to disk.", err)
        return None
    segments = [
        (i, k, seg) for i, d in enumerate(demos) for k, seg in enumerate(goal_segments(d.states[:, -DOF:]))
    ]
    episodes = (
        Episode(
            episode_id=f"{i}.{k}",
            source=f"impedance_control demo {i}, goal {k}",
            instruction="reach the goal joint configuration",
            fps=fps,
            actions=demos[i].actions[seg],
            states=demos[i].states[seg],
            velocities=demos[i].velocities[seg],
            images={} if demos[i].images is None else {"front": demos[i].images[seg]},
        )
        for i, k, seg in segments
    )
    names = [f"{j}.pos" for j in JOINT_NAMES]
    return write_lerobot_dataset(
        root,
        episodes,
        fps=fps,
        robot_type="niaf_arm6",
        action_names=names,
        state_names=[
            f"{j}.{part}" for part in ("cmd_pos", "cmd_vel", "cmd_acc", "goal") for j in JOINT_NAMES
        ],
        velocity_names=[f"{j}.vel" for j in JOINT_NAMES],
        total_episodes=len(segments),
    )


def oracle_normalisation() -> tuple[np.ndarray, np.ndarray]:
    """[D] center and half range (rad) of the oracle's action normalisation: the goal workspace HOME ± 1.1·span.

    The oracle is not trained on the dataset, so it normalises by the task's known workspace rather than by
    statistics of a few demonstrations (which would leave evaluation goals far outside [-1, 1]).
    """
    return HOME.copy(), 1.1 * GOAL_SPAN


def training_available() -> bool:
    try:
        import niaf_train.training.loop  # noqa: F401
    except ImportError:
        return False
    return True


def train_niaf(dataset: Path, out: Path, steps: int, seed: int) -> Path:
    """Fine-tune a tiny NIAF on the demonstrations through ``niaf-train`` (``niaf_train.training``); returns the final checkpoint."""
    from niaf_train.training.arguments import load_config
    from niaf_train.training.loop import train

    cfg = load_config(
        str(TRAIN_CONFIG),
        [
            "--data.path",
            str(dataset),
            "--data.cache_dir",
            str(out / "train_cache"),  # keeps the chunk cache with this run, not in ~/.cache
            "--training.output_dir",
            str(out / "train"),
            "--training.overwrite_output_dir",
            "true",
            "--training.max_steps",
            str(steps),
            "--training.seed",
            str(seed),
        ],
    )
    result = train(cfg)
    m = result["metrics"]
    logger.info(
        "trained NIAF: held-out position MSE %.4g rad² (mean-action baseline %.4g) in %.0f s",
        m["position_mse"],
        m["baseline_position_mse"],
        result["train_seconds"],
    )
    return Path(result["final_dir"])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", required=True, type=Path, help="where results.json and the figure go")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small run (a few minutes on CPU)")
    size.add_argument("--smoke", action="store_true", help="smallest run, for tests (well under a minute)")
    parser.add_argument(
        "--policy",
        choices=("auto", "oracle", "trained"),
        default="auto",
        help="auto: the trained NIAF when the training entry point is installed, else the oracle NIAF; "
        "trained: fine-tune a tiny NIAF on the demonstrations (error if training is unavailable); "
        "oracle: gamma/beta fitted to the reference (an upper bound, not a trained model)",
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="a NIAF checkpoint already fine-tuned on this example's data (e.g. an earlier DIR/train/final): "
        "used as the trained policy instead of fine-tuning again",
    )
    parser.add_argument(
        "--train-steps",
        type=int,
        default=None,
        help="optimiser steps of the NIAF fine-tune (default: per size)",
    )
    parser.add_argument(
        "--demos", type=int, default=None, help="number of demonstrations (default: per size)"
    )
    parser.add_argument(
        "--demo-seconds", type=float, default=None, help="length of each demonstration, s (default: per size)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.03, help="simulated inference latency, s")
    parser.add_argument(
        "--blend",
        type=float,
        default=None,
        help="NIAF runtime switch window at chunk switches, s (default 0.3)",
    )
    parser.add_argument(
        "--switch",
        choices=("crossfade", "offset_decay"),
        default=None,
        help="how the NIAF runtime switches to a new function (default offset_decay: the new motion at once, the "
        "offset to the old command removed over --blend; crossfade: mix old and new over --blend)",
    )
    parser.add_argument("--cutoff-hz", type=float, default=5.0, help="jitter = command power above this, Hz")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sz = dict(SIZES["smoke" if args.smoke else "quick" if args.quick else "full"])
    if args.demos is not None:
        sz["demos"] = args.demos
    if args.demo_seconds is not None:
        sz["demo_s"] = args.demo_seconds
    out: Path = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    settings = LoopSettings(latency=args.latency)
    if args.blend is not None:
        settings.blend_duration = args.blend
    if args.switch is not None:
        settings.switch = args.switch
    started = time.perf_counter()

    arm = Arm(seed=args.seed)
    try:
        # 1. demonstrations -> LeRobot v3
        demos = record_demonstrations(
            arm, sz["demos"], sz["demo_s"], settings.control_hz, seed=args.seed + 100, image_size=sz["image"]
        )
        dataset_dir = out / "dataset"
        if dataset_dir.exists():
            import shutil

            shutil.rmtree(dataset_dir)
        dataset = write_dataset(demos, dataset_dir, settings.control_hz)
        center, half = oracle_normalisation()

        # 2. policy
        use_trained = args.policy == "trained" or (args.policy == "auto" and training_available())
        trained = None
        train_seconds = None
        if args.checkpoint is not None:
            if args.policy == "oracle":
                raise SystemExit(
                    "--checkpoint is a trained policy; it cannot be combined with --policy oracle."
                )
            trained = TrainedNiafPolicy(args.checkpoint)
        elif use_trained:
            if dataset is None or not training_available():
                raise SystemExit(
                    "--policy trained needs the NIAF training entry point and the LeRobot writer "
                    "(pip install -e '.[train,data]')."
                )
            steps = args.train_steps or sz["train_steps"]
            t0 = time.perf_counter()
            trained = TrainedNiafPolicy(train_niaf(dataset, out, steps, args.seed))
            train_seconds = time.perf_counter() - t0
        elif args.policy == "auto":
            logger.warning("niaf_train.training is not installed; using the oracle NIAF (an upper bound)")
        policy_label = ORACLE_LABEL if trained is None else trained.label
        niaf_key = "niaf_oracle_runtime" if trained is None else "niaf_trained_runtime"

        # 3. closed loop, same references and noise for every method
        per_method: dict[str, list[dict]] = {m: [] for m in METHODS}
        first = None
        for e in range(sz["episodes"]):
            # the reference runs one chunk past the episode, so that the last chunks have a true future
            horizon = sz["episode_s"] + settings.chunk_size / settings.control_hz
            ref = make_reference(np.random.default_rng(args.seed + 10_000 + e), horizon, arm.dt)
            if trained is not None:
                # the NIAF run (first in METHODS) decides each chunk from its own observation; the waypoint
                # executors replay those same chunks
                policy = SharedChunks(trained, arm.dt)
            else:
                policy = OracleNiafPolicy(
                    ref,
                    settings.chunk_size,
                    settings.control_hz,
                    center,
                    half,
                    steps=sz["fit_steps"][0],
                    polish_steps=sz["fit_steps"][1],
                    seed=args.seed,
                )
                policy.prepare(settings.observation_times(sz["episode_s"]))
            rollouts, switches = {}, {}
            for m in METHODS:
                roll, sw = run_method(
                    arm,
                    ref,
                    policy,
                    m,
                    settings,
                    noise_seed=args.seed + 20_000 + e,
                    duration=sz["episode_s"],
                    image_size=None if trained is None else sz["image"],
                )
                per_method[m].append(metrics(roll, ref, sw, arm.dt, args.cutoff_hz))
                rollouts[m], switches[m] = roll, sw
            if first is None:
                first = (ref, rollouts, switches)
    finally:
        arm.close()

    # 4. results
    keys = {"niaf": niaf_key, "waypoints_zoh": "waypoints_zoh_fd", "waypoints_linear": "waypoints_linear_fd"}
    results = {}
    for m in METHODS:
        avg = {k: float(np.mean([r[k] for r in per_method[m]])) for k in per_method[m][0]}
        avg["description"] = METHOD_TITLES[m]
        avg["policy"] = policy_label
        results[keys[m]] = avg
    (out / "results.json").write_text(json.dumps(results, indent=2))
    niaf = results[niaf_key]
    ratios = {
        f"{key}": {
            "velocity_jitter": niaf["velocity_jitter"] / max(results[key]["velocity_jitter"], 1e-300),
            "boundary_velocity_jump": niaf["boundary_velocity_jump"]
            / max(results[key]["boundary_velocity_jump"], 1e-300),
            "peak_jerk": niaf["peak_jerk"] / max(results[key]["peak_jerk"], 1e-300),
        }
        for key in ("waypoints_zoh_fd", "waypoints_linear_fd")
    }
    info = {
        "policy": policy_label,
        "dataset": None if dataset is None else str(dataset),
        "size": "smoke" if args.smoke else "quick" if args.quick else "full",
        "demonstrations": sz["demos"],
        "eval_episodes": sz["episodes"],
        "episode_seconds": sz["episode_s"],
        "controller": {
            "rate_hz": 1.0 / arm.dt,
            "kp": KP.tolist(),
            "kd": KD.tolist(),
            "law": "tau = Kp (q_d - q) + Kd (qdot_d - qdot) + qfrc_bias",
        },
        "loop": vars(settings),
        "cutoff_hz": args.cutoff_hz,
        "ratios_niaf_over_baseline": ratios,
        "train_seconds": train_seconds,
        "train_checkpoint": None
        if trained is None
        else str(args.checkpoint if args.checkpoint is not None else out / "train" / "final"),
        "train_config": None if trained is None else str(TRAIN_CONFIG),
        "seconds": time.perf_counter() - started,
    }
    (out / "run_info.json").write_text(json.dumps(info, indent=2))
    ref, rollouts, switches = first
    joint = int(np.argmax(np.abs(ref.velocity).max(axis=0)))
    tag = "[oracle NIAF policy] " if trained is None else "[trained NIAF policy] "
    labels = {m: (tag if m == "niaf" else "") + METHOD_TITLES[m] for m in METHODS}
    plot_velocities(
        out / "velocity_comparison.png", rollouts, switches, labels, joint, JOINT_NAMES[joint], ref
    )

    print(f"policy: {policy_label}")
    print(f"{'method':24s} " + " ".join(f"{k:>24s}" for k in REQUIRED_KEYS))
    for key, r in results.items():
        print(f"{key:24s} " + " ".join(f"{r[k]:24.4g}" for k in REQUIRED_KEYS))
    for key, r in ratios.items():
        print(
            f"NIAF / {key}: jitter x{r['velocity_jitter']:.3g}, boundary jump x{r['boundary_velocity_jump']:.3g}, "
            f"peak jerk x{r['peak_jerk']:.3g}"
        )
    print(f"wrote {out / 'results.json'} and {out / 'velocity_comparison.png'} in {info['seconds']:.0f} s")
    assert DOF == len(JOINT_NAMES)
    return results


if __name__ == "__main__":
    main()
