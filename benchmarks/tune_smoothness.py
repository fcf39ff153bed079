"""Choose NIAF's defaults by closed-loop success and executed smoothness together (docs/benchmarks.md, "Dense
supervision and smoothness"): train one candidate recipe (the main job's ``default.yaml`` plus overrides), then
evaluate the same checkpoint on the same held-out variations three ways:

* the function at the training rate (20 Hz: its chunk points held);
* the function at 4x (80 Hz, every simulator step);
* its chunk points linearly interpolated at 80 Hz (how a waypoint policy of the same chunk is executed).

    python benchmarks/tune_smoothness.py --name dense1 --episodes 20 -- --data.dense_every 1
    python benchmarks/tune_smoothness.py --table                 # the table of every run so far

Each run writes ``<output-dir>/<name>/`` (the training run, ``eval/<execution>@<hz>hz/results.json``) and appends
one line to ``<output-dir>/runs.jsonl``: the overrides, success per task and in the mean, and the mean squared jerk
of the executed dx/dy/dz commands ((1/s³)², the mean over tasks of niaf-eval's per-task mean).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")

RUNS = (("function", 20.0), ("function", 80.0), ("linear", 80.0))


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    tasks = results["tasks"]
    jerk = [row["mean_squared_jerk"] for row in tasks.values() if row.get("mean_squared_jerk") is not None]
    return {"success": {t: row["success_rate"] for t, row in tasks.items()}, "mean_success": results["mean_success"],
            "mean_squared_jerk": sum(jerk) / len(jerk) if jerk else None,
            "mean_squared_jerk_per_task": {t: row.get("mean_squared_jerk") for t, row in tasks.items()}}


def run(args: argparse.Namespace, overrides: list[str]) -> dict[str, Any]:
    from niaf_train.evaluation import EvalSettings
    from niaf_train.evaluation.closed_loop import load_policy
    from niaf_train.evaluation.run import evaluate_checkpoint
    from niaf_train.training.arguments import load_config
    from niaf_train.training.loop import train

    out = Path(args.output_dir) / args.name
    cfg = load_config(args.config, ["--output_dir", str(out), *overrides])
    start = time.perf_counter()
    result = train(cfg)
    train_seconds = time.perf_counter() - start
    final = Path(result["final_dir"])
    d = cfg.data
    row: dict[str, Any] = {"name": args.name, "overrides": overrides, "tasks": list(d.metaworld_tasks),
                           "episodes": args.episodes, "train_seconds": round(train_seconds, 1),
                           "open_loop": result["metrics"], "eval": {}}
    policies: dict[str, Any] = {}
    for execution, hz in RUNS:
        settings = EvalSettings(tasks=list(d.metaworld_tasks), episodes=args.episodes, execution=execution,
                                execute_hz=hz, cameras=list(d.metaworld_camera), image_size=d.metaworld_image_size,
                                video=False, state=d.metaworld_state, crop=d.metaworld_crop,
                                camera_view=d.metaworld_camera_view, instructions=d.metaworld_instructions)
        if execution not in policies:
            policies[execution] = load_policy(final, settings)
        res = evaluate_checkpoint(str(final), settings, out / "eval" / f"{execution}@{hz:g}hz",
                                  policy_object=policies[execution], progress=False)
        row["eval"][f"{execution}@{hz:g}"] = summarise(res)
        row["benchmark_seed"] = res["benchmark_seed"]
    row["wall_seconds"] = round(time.perf_counter() - start, 1)
    with open(Path(args.output_dir) / "runs.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    return row


def table(output_dir: Path) -> str:
    lines = ["| run | overrides | success 20 Hz | success 80 Hz | linear 80 Hz | jerk 80 Hz (per task) | "
             "jerk linear 80 Hz (per task) | jerk ratio linear / function |", "|---|---|---|---|---|---|---|---|"]
    path = output_dir / "runs.jsonl"
    for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
        r = json.loads(line)
        e = r["eval"]
        f20, f80, lin = e["function@20"], e["function@80"], e["linear@80"]
        ratio = lin["mean_squared_jerk"] / f80["mean_squared_jerk"] if f80["mean_squared_jerk"] else float("nan")
        per_task = lambda s: " / ".join(f"{100 * v:.0f}" for v in s["success"].values())  # noqa: E731
        jerks = lambda s: " / ".join(f"{v:.2g}" for v in s.get("mean_squared_jerk_per_task", {}).values())  # noqa: E731
        lines.append(f"| {r['name']} | `{' '.join(r['overrides']) or '(default)'}` | {100 * f20['mean_success']:.1f} % "
                     f"({per_task(f20)}) | {100 * f80['mean_success']:.1f} % ({per_task(f80)}) | "
                     f"{100 * lin['mean_success']:.1f} % ({per_task(lin)}) | {f80['mean_squared_jerk']:.2g} "
                     f"({jerks(f80)}) | {lin['mean_squared_jerk']:.2g} ({jerks(lin)}) | {ratio:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, overrides = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", help="run folder name under --output-dir")
    p.add_argument("--config", default="default.yaml")
    p.add_argument("--episodes", type=int, default=20, help="held-out episodes per task and execution")
    p.add_argument("--output-dir", default="outputs/tune_smoothness")
    p.add_argument("--table", action="store_true", help="print the table of every run so far and exit")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.table:
        print(table(Path(args.output_dir)))
        return 0
    if not args.name:
        p.error("--name is required")
    row = run(args, overrides)
    print(json.dumps({k: row[k] for k in ("name", "eval", "train_seconds", "wall_seconds")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
