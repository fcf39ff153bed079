"""``niaf-eval``: closed-loop evaluation of a NIAF checkpoint (or a baseline) on Meta-World v3 tasks.

    niaf-eval --checkpoint outputs/metaworld-tiny/final --tasks reach-v3 push-v3 --output-dir outputs/eval
    niaf-eval --checkpoint DIR --execute-hz 80 --output-dir outputs/eval-80hz        # 4x a 20 Hz training rate
    niaf-eval --checkpoint DIR --execution linear --output-dir outputs/eval-linear   # waypoints, interpolated
    niaf-eval --policy expert --tasks push-v3 --output-dir outputs/eval-expert       # the scripted upper bound
    niaf-eval --checkpoint DIR --ablate images --output-dir outputs/eval-black       # every frame black

Writes ``results.json`` (per task: success rate with a 95 % Wilson interval, mean steps to success, mean
squared jerk and SPARC of the executed actions; the settings, seeds and checkpoint), ``success.png`` and
``videos/<task>.mp4`` (first episode), and prints a summary table. Bad arguments exit 2 with one line.
"""

from __future__ import annotations

import argparse
import logging
import sys

from .checkpoint import training_record
from .report import format_table
from .run import evaluate_checkpoint
from .settings import ABLATIONS, EXECUTIONS, POLICIES, EvalError, EvalSettings


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="niaf-eval", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", help="NIAF checkpoint folder or Hub id (loaded with trust_remote_code=True)")
    p.add_argument("--policy", choices=POLICIES, default="niaf")
    p.add_argument("--tasks", nargs="+", default=None,
                   help="Meta-World MT1 tasks (default: the tasks of the checkpoint's training data)")
    p.add_argument("--episodes", type=int, default=50, help="held-out episodes per task")
    p.add_argument("--seed", type=int, default=None,
                   help="benchmark seed of the held-out variations (default: the first >= 1000 not used in training)")
    p.add_argument("--execution", choices=EXECUTIONS, default="function",
                   help="query the action function, or hold / interpolate its waypoints")
    p.add_argument("--execute-hz", type=float, default=None,
                   help="rate of new commands (divides 80 Hz; default: the training rate)")
    p.add_argument("--replan-every", type=int, default=8, help="environment steps (12.5 ms) between policy calls")
    p.add_argument("--latency-ms", type=float, default=0.0, help="simulated inference delay")
    p.add_argument("--blend-ms", type=float, default=0.0, help="ActionStream switch window (0 = switch at once)")
    p.add_argument("--switch", choices=("crossfade", "offset_decay"), default="offset_decay")
    p.add_argument("--max-steps", type=int, default=500)
    p.add_argument("--cameras", nargs="*", default=None, help="default: the training data's cameras")
    p.add_argument("--image-size", type=int, default=None, help="default: the training data's image size")
    p.add_argument("--train-data", default=None,
                   help="training dataset folder (default: the checkpoint's training_data.json) to keep seeds disjoint")
    p.add_argument("--ablate", nargs="+", choices=ABLATIONS, default=[],
                   help="inputs to withhold from the policy: images (black frames), state (its training mean), "
                        "instruction (empty), other_instruction (another task's); combinable")
    p.add_argument("--no-video", action="store_true")
    p.add_argument("--output-dir", required=True)
    return p


def settings_from_args(args: argparse.Namespace) -> EvalSettings:
    record = training_record(args.checkpoint, args.train_data) or {}
    tasks = args.tasks or record.get("tasks")
    if not tasks:
        raise EvalError("--tasks: none given and the checkpoint has no training record naming them")
    execute_hz = args.execute_hz
    if execute_hz is None:
        execute_hz = 80.0 / (int(record.get("stride", 4)) * int(record.get("chunk_stride", 1)))
    return EvalSettings(
        tasks=list(tasks), episodes=args.episodes, seed=args.seed, execution=args.execution, execute_hz=execute_hz,
        replan_every=args.replan_every, latency_ms=args.latency_ms, switch=args.switch, blend_ms=args.blend_ms,
        max_steps=args.max_steps,
        cameras=list(args.cameras) if args.cameras is not None else list(record.get("cameras", ["corner2"])),
        image_size=args.image_size or int(record.get("image_size", 32)), video=not args.no_video,
        crop=record.get("crop"), state=record.get("state", "full"), ablate=list(args.ablate),
        camera_view=record.get("camera_view", "niaf"), instructions=record.get("instructions", "niaf"),
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
        result = evaluate_checkpoint(args.checkpoint, settings, args.output_dir, policy=args.policy,
                                     train_data=args.train_data)
    except EvalError as err:
        print(f"niaf-eval: error: {err}", file=sys.stderr)
        return 2
    if args.policy == "expert":
        name = "expert (every step)"
    else:
        execution = "zoh" if args.policy == "random" and settings.execution == "function" else settings.execution
        name = f"{result.get('label', args.policy)} {execution}@{settings.execute_hz:g}Hz"
        if settings.ablate:
            name += f" without {'+'.join(settings.ablate)}"
    print(format_table({name: result}, f"closed-loop success, benchmark seed {result['benchmark_seed']}, "
                                        f"{settings.episodes} episodes per task"))
    print(f"results: {args.output_dir}/results.json ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
