"""The paper's head ablation on one backbone, in closed loop: NIAF vs waypoints (OFT), B-spline (BEAST-CT) and
flow matching (π0), each trained with niaf-train's own code on the same Meta-World demonstrations with the same
budget, then evaluated with niaf-eval on the same held-out variations at 1×, 2× and 4× the training rate.

    python benchmarks/bench_heads.py --quick                      # 3 tasks (reach, push, drawer-close), default.yaml
    python benchmarks/bench_heads.py                              # MT-10 (metaworld_mt10.yaml), 3 training seeds
    python benchmarks/bench_heads.py --quick --steps 20 --episodes 1 --seeds 1 --output-dir /tmp/bench  # smoke run
    python benchmarks/bench_heads.py --resume                     # continue an interrupted benchmark

For every head × training seed k (0 … seeds-1): ``niaf-train`` with the config file (``default.yaml`` for
``--quick``, ``metaworld_mt10.yaml`` otherwise) where only ``model.action_head`` and ``training.seed`` differ
(plus the overrides given here, identical for every head) into ``<output-dir>/<head>/seed<k>``; then
``niaf-eval``'s Python API (:func:`niaf_train.evaluation.run.evaluate_checkpoint`) on the same held-out benchmark
seed at the training rate (20 Hz with Meta-World's stride 4), 2× and 4× it, into
``<output-dir>/<head>/seed<k>/eval/<execution>@<hz>hz``. Executions: NIAF and B-spline query their continuous
function; waypoints are executed both held (zoh) and linearly interpolated (linear) — two rows; the flow head's
sampled chunk is interpolated linearly (as its function object does by default).

Prints and writes (``results.json``, ``results.md`` in the output folder) one table: closed-loop success per head
and rate (mean ± sample std over training seeds of the mean over tasks), mean squared jerk and SPARC of the
executed actions and the mean action jump at chunk switches (at 4×, all rates in ``results.md``), parameters in
the head (what replaces NIAF's ψ heads + SIREN; backbone, queries and state projection are shared), and the
inference latency per chunk (median wall time of ``predict_action_function`` + evaluating the chunk at its K
points on one observation: backbone pass + head, the flow head with its Euler steps; batch 1, this machine).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")

HEADS = ("niaf", "waypoints", "bspline", "flow")
EXECUTIONS = {"niaf": ("function",), "waypoints": ("zoh", "linear"), "bspline": ("function",), "flow": ("linear",)}
"""How each head's chunk is executed in closed loop (one table row per head × execution)."""
QUICK_TASKS = ("reach-v3", "push-v3", "drawer-close-v3")
RATE_MULTIPLES = (1, 2, 4)
LABELS = {("niaf", "function"): "NIAF (SIREN function)", ("waypoints", "zoh"): "waypoints, zoh (OFT)",
          ("waypoints", "linear"): "waypoints, linear (OFT)", ("bspline", "function"): "B-spline (BEAST-CT)",
          ("flow", "linear"): "flow matching, 10 Euler steps, linear (π0)"}

logger = logging.getLogger("bench_heads")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help=f"{len(QUICK_TASKS)} tasks {QUICK_TASKS} with default.yaml")
    p.add_argument("--config", default=None, help="niaf-train config (default: default.yaml with --quick, "
                                                  "metaworld_mt10.yaml otherwise)")
    p.add_argument("--tasks", nargs="+", default=None, help="Meta-World tasks (default: --quick's or the config's)")
    p.add_argument("--heads", nargs="+", choices=HEADS, default=list(HEADS))
    p.add_argument("--seeds", type=int, default=3, help="training seeds 0 … seeds-1 per head")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps per run (default: the config's)")
    p.add_argument("--episodes", type=int, default=50, help="held-out closed-loop episodes per task and rate")
    p.add_argument("--eval-seed", type=int, default=None,
                   help="benchmark seed of the held-out variations (default: niaf-eval's, the first >= 1000 unused)")
    p.add_argument("--replan-every", type=int, default=8, help="environment steps between policy calls")
    p.add_argument("--latency-ms", type=float, default=0.0,
                   help="also evaluate every head at 4x with this simulated inference delay (0: no such run)")
    p.add_argument("--latency-repeats", type=int, default=20)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--output-dir", default="outputs/bench_heads")
    p.add_argument("--resume", action="store_true", help="skip trainings and evaluations whose results exist")
    p.add_argument("overrides", nargs="*", help="extra niaf-train overrides applied to every run, after --, "
                                                "e.g. -- --training.per_device_batch_size 16")
    args = p.parse_args(argv)
    if args.seeds < 1 or args.episodes < 1 or (args.steps is not None and args.steps < 1):
        p.error("--seeds, --episodes and --steps must be >= 1")
    if not (0.0 <= args.latency_ms <= 1000.0):
        p.error(f"--latency-ms must be in [0, 1000] ms, got {args.latency_ms:g}")
    args.config = args.config or ("default.yaml" if args.quick else "metaworld_mt10.yaml")
    return args


# ------------------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------------------
def run_overrides(args: argparse.Namespace, head: str, seed: int, run_dir: Path) -> list[str]:
    """niaf-train overrides of one run: identical for every head except ``model.action_head`` and ``training.seed``."""
    out = ["--model.action_head", head, "--training.seed", str(seed), "--training.output_dir", str(run_dir),
           "--training.report_to", "none", "--training.save_steps", "0", "--training.eval_steps", "0"]
    tasks = args.tasks or (list(QUICK_TASKS) if args.quick else None)
    if tasks:
        out += ["--data.metaworld_tasks", ",".join(tasks)]
    if args.steps is not None:
        out += ["--training.max_steps", str(args.steps)]
    if args.threads:
        out += ["--training.num_threads", str(args.threads)]
    return out + list(args.overrides)


def train_run(args: argparse.Namespace, head: str, seed: int, run_dir: Path) -> tuple[Path, Any]:
    """Train (or, with --resume, reuse) one run; returns its final checkpoint folder and config."""
    from niaf_train.training.arguments import load_config
    from niaf_train.training.loop import train

    overrides = run_overrides(args, head, seed, run_dir)
    final = run_dir / "final"
    if args.resume and (final / "config.json").is_file():
        cfg = load_config(args.config, overrides)
        previous = json.loads((run_dir / "run_config.json").read_text(encoding="utf-8"))
        wanted = cfg.to_dict()
        changed = [f"{s}.{k}" for s in ("model", "data", "training") for k in wanted[s]
                   if k not in ("output_dir", "overwrite_output_dir", "resume")
                   and previous.get(s, {}).get(k) != wanted[s][k]]
        if changed:
            from niaf_train.training.arguments import ConfigError

            raise ConfigError(f"--resume: {run_dir} was trained with other settings ({changed}); use a new --output-dir")
        logger.info("resume: %s already trained", run_dir)
        return final, cfg
    if run_dir.exists() and any(run_dir.iterdir()):
        overrides += ["--training.overwrite_output_dir", "true"]  # an interrupted run: start it again
    cfg = load_config(args.config, overrides)
    print(f"[bench_heads] training {head} seed {seed}: {cfg.training.max_steps} steps -> {run_dir}", flush=True)
    train(cfg)
    return final, cfg


# ------------------------------------------------------------------------------------------------------------
# Evaluation, latency, parameters
# ------------------------------------------------------------------------------------------------------------
def rate_keys(train_hz: float, latency_ms: float) -> list[tuple[str, float, float]]:
    """(key, execution rate, simulated latency) of every evaluation: 1×, 2×, 4× the training rate, and with
    ``latency_ms`` > 0 also 4× with that inference delay. Keys are the rates in Hz (``"80"``) or ``"80+50ms"``."""
    keys = [(f"{train_hz * m:g}", train_hz * m, 0.0) for m in RATE_MULTIPLES]
    if latency_ms > 0:
        fast = train_hz * RATE_MULTIPLES[-1]
        keys.append((f"{fast:g}+{latency_ms:g}ms", fast, latency_ms))
    return keys


def evaluate_run(args: argparse.Namespace, head: str, final: Path, cfg: Any, run_dir: Path) -> dict[str, Any]:
    """niaf-eval at 1×, 2×, 4× the training rate for each execution of ``head``: {execution: {hz: results}}."""
    from niaf_train.evaluation import EvalSettings
    from niaf_train.evaluation.closed_loop import load_policy
    from niaf_train.evaluation.run import RESULTS_FILE, evaluate_checkpoint
    from niaf_train.training.dataset import metaworld_control_hz

    d = cfg.data
    train_hz = metaworld_control_hz(cfg)
    out: dict[str, Any] = {}
    for execution in EXECUTIONS[head]:
        policy = None
        out[execution] = {}
        for key, hz, latency in rate_keys(train_hz, args.latency_ms):
            folder = run_dir / "eval" / f"{execution}@{key.replace(' ', '')}"
            if args.resume and (folder / RESULTS_FILE).is_file():
                out[execution][key] = json.loads((folder / RESULTS_FILE).read_text(encoding="utf-8"))
                continue
            settings = EvalSettings(tasks=list(d.metaworld_tasks), episodes=args.episodes, seed=args.eval_seed,
                                    execution=execution, execute_hz=hz, replan_every=args.replan_every,
                                    latency_ms=latency, cameras=list(d.metaworld_camera),
                                    image_size=d.metaworld_image_size, video=False, state=d.metaworld_state,
                                    crop=d.metaworld_crop, camera_view=d.metaworld_camera_view,
                                    instructions=d.metaworld_instructions)
            if folder.exists():  # an interrupted evaluation (no results.json): run it again
                import shutil

                shutil.rmtree(folder)
            policy = policy or load_policy(final, settings)
            policy.execution = execution
            print(f"[bench_heads] evaluating {head} ({execution}) at {key}: {args.episodes} episodes x "
                  f"{len(settings.tasks)} tasks", flush=True)
            out[execution][key] = evaluate_checkpoint(str(final), settings, folder, policy_object=policy,
                                                            progress=False)
    return out


def measure_head(final: Path, cfg: Any, eval_seed: int, repeats: int) -> dict[str, float]:
    """Head parameters and latency per chunk (ms, median) on the first held-out observation of the first task."""
    import torch
    from niaf_train.baselines import checkpoint_action_head, head_parameter_count, load_model, load_processor
    from niaf_train.evaluation import first_observation

    d = cfg.data
    model = load_model(final).eval()
    if checkpoint_action_head(final) == "niaf":
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(str(final), trust_remote_code=True)
    else:
        processor = load_processor(final)
    obs = first_observation(d.metaworld_tasks[0], eval_seed, 0, list(d.metaworld_camera), d.metaworld_image_size,
                            d.metaworld_state, d.metaworld_crop)
    kwargs: dict[str, Any] = {"images": [[obs[f"observation.images.{c}"] for c in d.metaworld_camera]], "text": [obs["task"]]}
    if model.config.use_state:
        kwargs["state"] = torch.as_tensor(obs["observation.state"][None])
    batch = processor(**kwargs)

    def chunk() -> None:
        fn = model.predict_action_function(**batch)
        fn(derivatives=1)  # the chunk at its K points: NIAF's SIREN runs here, the others' basis

    times = []
    with torch.inference_mode():
        chunk()  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            chunk()
            times.append(time.perf_counter() - start)
    total = sum(p.numel() for p in model.parameters())
    return {"head_parameters": head_parameter_count(model), "total_parameters": total,
            "latency_ms": 1e3 * statistics.median(times)}


# ------------------------------------------------------------------------------------------------------------
# Aggregation and table
# ------------------------------------------------------------------------------------------------------------
def _mean_over_tasks(result: dict[str, Any], key: str) -> float:
    values = [t[key] for t in result["tasks"].values() if t.get(key) is not None and math.isfinite(t[key])]
    return float(sum(values) / len(values)) if values else float("nan")


def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def aggregate(runs: dict[str, dict[int, dict[str, Any]]], rates: list[str]) -> list[dict[str, Any]]:
    """One row per head × execution: mean ± std over training seeds of every metric at every rate."""
    rows = []
    for head, seeds in runs.items():
        for execution in EXECUTIONS[head]:
            row: dict[str, Any] = {"head": head, "execution": execution, "label": LABELS[(head, execution)],
                                   "seeds": sorted(seeds), "rates": {}}
            for hz in rates:
                cell = {}
                results = [seeds[s]["eval"][execution][hz] for s in sorted(seeds)]
                cell["success"] = _mean_std([r["mean_success"] for r in results])
                for key in ("mean_squared_jerk", "sparc", "switch_action_jump"):
                    cell[key] = _mean_std([_mean_over_tasks(r, key) for r in results])
                cell["per_task_success"] = {t: _mean_std([r["tasks"][t]["success_rate"] for r in results])
                                            for t in results[0]["tasks"]}
                row["rates"][hz] = cell
            row["head_parameters"] = seeds[min(seeds)]["measure"]["head_parameters"]
            row["total_parameters"] = seeds[min(seeds)]["measure"]["total_parameters"]
            row["latency_ms"] = statistics.median(seeds[s]["measure"]["latency_ms"] for s in seeds)
            rows.append(row)
    return rows


def _pm(value: tuple[float, float], scale: float = 1.0, digits: int = 1) -> str:
    mean, std = value
    if not math.isfinite(mean):
        return "–"
    return f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}"


def _g(value: tuple[float, float]) -> str:
    mean, std = value
    return "–" if not math.isfinite(mean) else f"{mean:.3g} ± {std:.2g}"


def _rate_label(key: str, train_hz: float) -> str:
    hz, _, latency = key.partition("+")
    return f"{hz} Hz ({float(hz) / train_hz:g}×" + (f", {latency} latency)" if latency else ")")


def format_tables(rows: list[dict[str, Any]], rates: list[str], train_hz: float) -> str:
    fast = [hz for hz in rates if "+" not in hz][-1]
    head = ["head (execution)"] + [f"success @ {_rate_label(hz, train_hz)} %" for hz in rates] + [
        f"sq. jerk @ {fast} Hz", f"SPARC @ {fast} Hz", f"switch jump @ {fast} Hz", "head params", "latency / chunk ms"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["label"]] + [_pm(r["rates"][hz]["success"], 100.0) for hz in rates]
        c = r["rates"][fast]
        cells += [_g(c["mean_squared_jerk"]), _g(c["sparc"]), _g(c["switch_action_jump"]),
                  f"{r['head_parameters']:,}", f"{r['latency_ms']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Smoothness of the executed actions at every rate (mean squared jerk (units/s³)², SPARC, mean "
              "|Δ(dx, dy, dz)| at chunk switches):", ""]
    sub = ["head (execution)"] + [f"{name} @ {_rate_label(hz, train_hz)}" for hz in rates
                                  for name in ("jerk", "SPARC", "jump")]
    lines += ["| " + " | ".join(sub) + " |", "|" + "---|" * len(sub)]
    for r in rows:
        cells = [r["label"]]
        for hz in rates:
            c = r["rates"][hz]
            cells += [_g(c["mean_squared_jerk"]), _g(c["sparc"]), _g(c["switch_action_jump"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def budget_line(cfg: Any, args: argparse.Namespace, eval_seed: int) -> str:
    t, d = cfg.training, cfg.data
    return (f"Budget per run: {t.max_steps} optimiser steps, batch {t.per_device_batch_size}, AdamW lr "
            f"{t.learning_rate:g} ({t.lr_scheduler}, warm-up {t.warmup_ratio:g}, decay {t.decay_ratio:g}), "
            f"{args.seeds} training seed(s) per head ({', '.join(map(str, range(args.seeds)))}); data: "
            f"{len(d.metaworld_tasks)} Meta-World task(s) ({', '.join(d.metaworld_tasks)}), "
            f"{d.metaworld_episodes_per_task} scripted demonstrations each, chunks at {80 / (d.metaworld_stride * d.chunk_stride):g} Hz, "
            f"config {args.config}; evaluation: {args.episodes} held-out episode(s) per task and rate on benchmark "
            f"seed {eval_seed}, replanning every {args.replan_every} environment steps (80 Hz). Success: mean ± "
            "sample std over training seeds of the mean over tasks.")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from niaf_train.evaluation.closed_loop import EvalError
    from niaf_train.training.arguments import ConfigError

    out = Path(args.output_dir)
    if out.is_dir() and any(out.iterdir()) and not args.resume:
        print(f"bench_heads: error: --output-dir {out} is not empty; pass --resume to continue it or choose a new "
              "folder", file=sys.stderr)
        return 2
    command = "python benchmarks/bench_heads.py " + " ".join(sys.argv[1:] if argv is None else argv)
    start = time.perf_counter()
    runs: dict[str, dict[int, dict[str, Any]]] = {}
    cfg = None
    try:
        for head in args.heads:
            runs[head] = {}
            for seed in range(args.seeds):
                run_dir = out / head / f"seed{seed}"
                final, cfg = train_run(args, head, seed, run_dir)
                evals = evaluate_run(args, head, final, cfg, run_dir)
                first = next(iter(next(iter(evals.values())).values()))
                measure = measure_head(final, cfg, int(first["benchmark_seed"]), args.latency_repeats)
                runs[head][seed] = {"final": str(final), "eval": evals, "measure": measure}
    except (ConfigError, EvalError) as err:
        print(f"bench_heads: error: {err}", file=sys.stderr)
        return 2
    assert cfg is not None
    train_hz = 80.0 / (cfg.data.metaworld_stride * cfg.data.chunk_stride)
    rates = [key for key, _hz, _latency in rate_keys(train_hz, args.latency_ms)]
    rows = aggregate(runs, rates)
    eval_seed = int(next(iter(next(iter(runs.values()))[0]["eval"].values()))[rates[0]]["benchmark_seed"])
    budget = budget_line(cfg, args, eval_seed)
    table = format_tables(rows, rates, train_hz)
    minutes = (time.perf_counter() - start) / 60
    markdown = (f"# Head ablation on one backbone (closed loop, Meta-World)\n\n`{command}`\n\n{budget}\n\n{table}\n\n"
                f"Latency: median of {args.latency_repeats} calls of `predict_action_function` + the chunk at its K "
                f"points, batch 1, on this machine (torch threads {args.threads or 'default'}). Wall time of the "
                f"benchmark: {minutes:.1f} min.\n")
    out.mkdir(parents=True, exist_ok=True)
    if "niaf" in runs and 0 in runs["niaf"]:  # what each execution sends to the robot over one episode
        from niaf_train.evaluation.command_plot import plot_executed_commands

        waypoints = runs.get("waypoints", {}).get(0, {}).get("final")
        figure = plot_executed_commands(runs["niaf"][0]["final"], out / "executed_commands.png", seed=eval_seed,
                                        waypoint_checkpoint=waypoints)
        markdown += f"\nExecuted commands over one held-out episode at 80 Hz (training seed 0): `{figure.name}`.\n"
    (out / "results.md").write_text(markdown, encoding="utf-8")
    public = {head: {seed: {"final": r["final"], "measure": r["measure"],
                            "eval": {ex: {hz: {k: v for k, v in res.items() if k != "settings"}
                                          for hz, res in by_hz.items()} for ex, by_hz in r["eval"].items()}}
                     for seed, r in seeds.items()} for head, seeds in runs.items()}
    (out / "results.json").write_text(json.dumps(
        {"command": command, "budget": budget, "config": cfg.to_dict(), "rates_hz": rates, "rows": rows,
         "runs": public, "minutes": minutes}, indent=1, default=str) + "\n", encoding="utf-8")
    print("\n" + markdown)
    print(f"results: {out / 'results.json'}, {out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
