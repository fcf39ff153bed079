"""``niaf-data``: inspect datasets, write their statistics, generate Meta-World demonstrations.

Subcommands::

    niaf-data inspect  --format {calvin,libero,libero-lerobot,lerobot} PATH [--chunk-size K] [--stride S] ...
    niaf-data stats    --format ... PATH [--out FILE] [--overwrite] [--relative-action-state-indices 0,1,null]
    niaf-data metaworld --tasks reach-v3 push-v3 --episodes 50 --out DIR [--image-size 96] [--stride 1] ...
    niaf-data metaworld --tasks reach-v3 --state agent_pos --image-size 64 --crop 0.34 0.38 0.36 0.36 --out DIR
    niaf-data metaworld --tasks reach-v3 push-v3 --state agent_pos --camera-view lerobot --image-size 96 --out DIR
    niaf-data metaworld --tasks reach-v3 push-v3 --camera-view lerobot --instructions lerobot --out DIR

``inspect`` builds (or reuses from the cache) the chunk dataset exactly as training will, validating every
episode, and prints one JSON object on stdout: episode/frame/sample counts, skipped episodes with their
reasons, the features with shapes, the control rate and per-dimension statistics. Any problem with the data
ends the command with exit status 2 and a one-line message on stderr naming the file, episode and key.

With ``--relative-action-state-indices`` (the same list as ``model.relative_action_state_indices`` in
niaf-train) the ``action`` statistics are those of the delta targets a_i(t_k) - state_s(t_obs) over every real
chunk point, as training computes them. ``stats`` then needs ``--out``: delta statistics are not the dataset's
own ``meta/stats.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import pickle
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from configuration_niaf.normalization import check_relative_action_state_indices

from .chunking import cache_size_report, chunk_cache_dir, chunk_dataset_meta, load_summary
from .hub_datasets import DatasetNotFoundError, resolve_dataset_path
from .metaworld import (
    DEFAULT_TASKS,
    INSTRUCTION_SETS,
    check_camera_view,
    check_instructions,
    generate_metaworld_dataset,
)
from .sources import LoadOptions, get_source, load_source
from .stats import merge_stats_json, stats_from_chunk_dataset, write_stats_json

FORMATS = ("calvin", "libero", "libero_lerobot", "libero-lerobot", "lerobot")  # data.sources names (+ old spelling)
RELATIVE_FLAG = "--relative-action-state-indices"

logger = logging.getLogger("niaf_train.data.cli")


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def _load(args: argparse.Namespace, *, for_stats: bool = False):
    """Build the chunk dataset of ``args.path`` through the source registry (:mod:`.sources`), as niaf-train does."""
    source = get_source(args.format)
    if (args.state_only or args.fps is not None) and "fps" not in source.options:
        raise CliError(f"--state-only and --fps apply to the lerobot formats, not {args.format}")
    try:
        path = resolve_dataset_path(args.path)  # a folder, or a Hub dataset id user/name[@revision]
    except DatasetNotFoundError as err:
        raise CliError(str(err)) from None
    options = LoadOptions(
        chunk_size=args.chunk_size, stride=args.stride, skip_invalid=args.skip_invalid,
        # the cache niaf-train uses too (<cache root>/chunks), so that training reuses what inspect built
        cache_dir=chunk_cache_dir(args.cache_dir), max_episodes=args.max_episodes, fps=args.fps,
        cameras=() if (args.state_only or for_stats) else None,
        split=args.split if "split" in source.options else None,
    )
    return load_source(source.name, path, options)


def _positive_int(text: str) -> int:
    """argparse type of counts: a negative count would silently drop the last episodes (``[:-1]``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _parse_relative(text: str | None) -> list[int | None] | None:
    """``"0,1,null"`` → [0, 1, None]; None stays None."""
    if text is None:
        return None
    out: list[int | None] = []
    for item in text.split(","):
        item = item.strip()
        if item.lower() in ("null", "none"):
            out.append(None)
            continue
        try:
            out.append(int(item))
        except ValueError:
            raise CliError(
                f"{RELATIVE_FLAG}: expected comma-separated state indices or null (e.g. 0,1,2,null), got {text!r}"
            ) from None
    return out


def _relative_stats(dataset: Any, indices: list[int | None] | None) -> dict[str, dict[str, list]]:
    """Per-dimension statistics, of the deltas when ``indices`` is given (checked against the data first)."""
    if indices is not None:
        if len(dataset) == 0:
            raise CliError("the dataset has no samples")
        row = dataset.select_columns([c for c in ("action", "observation.state") if c in dataset.column_names])
        first = row.with_format("numpy")[0]
        state = first.get("observation.state")
        try:
            check_relative_action_state_indices(indices, int(np.asarray(first["action"]).shape[-1]),
                                                None if state is None else int(np.asarray(state).shape[-1]),
                                                name=RELATIVE_FLAG)
        except ValueError as err:
            raise CliError(str(err)) from err
    return stats_from_chunk_dataset(dataset, relative_action_state_indices=indices)


def _feature_table(dataset: Any) -> dict[str, dict[str, Any]]:
    import datasets  # heavy: datasets (pyarrow, fsspec)

    cams = chunk_dataset_meta(dataset).get("cameras", {})
    out: dict[str, dict[str, Any]] = {}
    for name, feat in dataset.features.items():
        if isinstance(feat, datasets.Image):
            out[name] = {"dtype": "image", "shape": cams.get(name.removeprefix("observation.images."))}
        elif isinstance(feat, (datasets.Array2D, datasets.Array3D)):
            out[name] = {"dtype": feat.dtype, "shape": list(feat.shape)}
        elif isinstance(feat, datasets.List):
            out[name] = {"dtype": getattr(feat.feature, "dtype", "?"), "shape": [feat.length]}
        elif isinstance(feat, datasets.Value):
            out[name] = {"dtype": feat.dtype, "shape": []}
        else:
            out[name] = {"dtype": type(feat).__name__, "shape": None}
    return out


def cmd_inspect(args: argparse.Namespace) -> dict[str, Any]:
    indices = _parse_relative(args.relative_action_state_indices)
    ds = _load(args)
    meta = chunk_dataset_meta(ds)
    summary = load_summary(ds)
    report = {
        "format": args.format,
        "path": args.path if not Path(args.path).exists() else str(Path(args.path).resolve()),
        "episodes": summary.episodes,
        "frames": summary.frames,
        "samples": summary.samples,
        "skipped_episodes": len(summary.skipped),
        "skipped": summary.to_dict()["skipped"],
        "fps": meta["fps"],
        "source_fps": meta["source_fps"],
        "chunk_size": meta["chunk_size"],
        "stride": meta["stride"],
        "has_velocity": meta["has_velocity"],
        "features": _feature_table(ds),
        "cache": cache_size_report(ds),
        "relative_action_state_indices": indices,
        "statistics": _relative_stats(ds, indices),
    }
    return report


def cmd_stats(args: argparse.Namespace) -> dict[str, Any]:
    indices = _parse_relative(args.relative_action_state_indices)
    if indices is not None and args.out is None:
        raise CliError(f"{RELATIVE_FLAG} writes statistics of delta actions, not the dataset's own stats.json; pass "
                       "--out FILE")
    if args.out is None:
        if get_source(args.format).name not in ("lerobot", "libero_lerobot"):
            raise CliError(f"--out is required for format {args.format}")
        if not Path(args.path).exists():
            raise CliError(f"{args.path} is not a local folder (a Hub dataset id?): pass --out FILE; the Hub cache is "
                           "not written to")
        args.out = str(Path(args.path) / "meta" / "stats.json")
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise CliError(f"{out} exists; pass --overwrite to replace it")
    ds = _load(args, for_stats=True)
    stats = _relative_stats(ds, indices)
    merged: dict[str, Any] = {}
    if out.exists():  # --overwrite: merge into it (features not computed here are kept) after a backup
        merged = merge_stats_json(out, stats)
    else:
        write_stats_json(out, stats)
    # with deltas, "action" counts every real chunk point; the state has one entry per sampled frame
    frames = stats["observation.state"]["count"][0] if indices is not None else stats["action"]["count"][0]
    return {"written": str(out), "features": sorted(stats), "frames": frames,
            "relative_action_state_indices": indices,
            **{k: merged[k] for k in ("backup", "kept") if k in merged}}


def cmd_metaworld(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise CliError(f"{out} exists and is not empty; choose a new --out folder")
    try:
        check_camera_view(args.camera_view, args.cameras, args.crop, args.image_size)
    except ValueError as err:
        raise CliError(f"--camera-view {args.camera_view}: {err}") from None
    try:
        check_instructions(args.instructions, args.tasks)
    except ValueError as err:
        raise CliError(f"--instructions {args.instructions}: {err}") from None
    root, summary = generate_metaworld_dataset(
        out, args.tasks, args.episodes, cameras=args.cameras, image_size=args.image_size, stride=args.stride,
        seed=args.seed, max_steps=args.max_steps, keep_failures=args.keep_failures, progress=not args.quiet,
        state=args.state, crop=args.crop, camera_view=args.camera_view, instructions=args.instructions,
    )
    return {"out": str(root), "fps": 80.0 / args.stride, **summary.to_dict()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="niaf-data", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level on stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    def data_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("path", help="dataset folder (CALVIN split root, LIBERO .hdf5 file/folder, LeRobot root), or "
                                    "a Hub dataset id user/name[@revision] (fetched into the Hub cache; offline: "
                                    "from it)")
        p.add_argument("--format", required=True, choices=FORMATS)
        p.add_argument("--chunk-size", type=int, default=10, help="K, actions per sample (default 10)")
        p.add_argument("--stride", type=int, default=1, help="frames between chunk points (default 1)")
        p.add_argument("--skip-invalid", action="store_true", help="skip bad episodes (listed) instead of failing")
        p.add_argument("--cache-dir", default=None,
                       help="cache root shared with niaf-train's data.cache_dir; chunk datasets go to <root>/chunks "
                            "(default $NIAF_CACHE or ~/.cache/niaf)")
        p.add_argument("--split", default="training", help="CALVIN split folder (default training)")
        p.add_argument("--state-only", action="store_true", help="lerobot formats: read no images/videos")
        p.add_argument("--fps", type=float, default=None,
                       help="lerobot formats: true control rate when info.json's fps is wrong (libero-lerobot: 20)")
        p.add_argument("--max-episodes", type=_positive_int, default=None,
                       help="read only the first N episodes (LIBERO: demos per file)")
        p.add_argument(RELATIVE_FLAG, default=None, metavar="I,J,...",
                       help="action statistics of deltas from these state indices, one per action dim, null = "
                            "absolute (as model.relative_action_state_indices in niaf-train), e.g. 0,1,2,null")

    p_inspect = sub.add_parser("inspect", help="validate a dataset and print a JSON summary")
    data_args(p_inspect)
    p_stats = sub.add_parser("stats", help="compute per-dimension statistics and write stats.json")
    data_args(p_stats)
    p_stats.add_argument("--out", default=None, help="stats.json path (default PATH/meta/stats.json for lerobot)")
    p_stats.add_argument("--overwrite", action="store_true", help="update an existing stats.json: computed features are replaced, the others kept; the old file is "
                         "backed up as stats.json.bak")
    p_mw = sub.add_parser("metaworld", help="generate Meta-World expert demonstrations as a LeRobot v3 dataset")
    p_mw.add_argument("--tasks", nargs="+", default=None, help="MT1 task names (default: 5 tasks)")
    p_mw.add_argument("--episodes", type=int, default=50, help="episodes per task (default 50)")
    p_mw.add_argument("--out", required=True, help="new output folder")
    p_mw.add_argument("--cameras", nargs="*", default=["corner2"], help="cameras (default corner2; none: state only)")
    p_mw.add_argument("--image-size", type=int, default=96, help="image height = width in pixels (default 96)")
    p_mw.add_argument("--stride", type=int, default=1, help="record every s-th 80 Hz step (fps 80/s)")
    p_mw.add_argument("--state", choices=("full", "agent_pos"), default="full",
                      help="observation.state: full (39-d, with object and goal positions) or agent_pos (hand "
                           "position and gripper, 4-d, as LeRobot's Meta-World)")
    p_mw.add_argument("--crop", type=float, nargs="+", default=None,
                      help="box of each upright image the policy sees: top left height width as fractions (4 values "
                           "for every camera, or 4 per camera), resized to --image-size")
    p_mw.add_argument("--camera-view", choices=("niaf", "lerobot"), default="niaf",
                      help="niaf (default: the model's camera poses, fast renderer) or lerobot (LeRobot's Meta-World "
                           "view: corner2 moved and rendered 480 px as lerobot-eval sees it, area-averaged to "
                           "--image-size; one camera, no crop)")
    p_mw.add_argument("--instructions", choices=INSTRUCTION_SETS, default="niaf",
                      help="the episodes' instructions: niaf (default: niaf's sentences, e.g. 'push the puck to the "
                           "goal') or lerobot (the task strings lerobot-eval --env.type=metaworld gives, e.g. 'Push "
                           "the puck to a goal')")
    p_mw.add_argument("--seed", type=int, default=0)
    p_mw.add_argument("--max-steps", type=int, default=500)
    p_mw.add_argument("--keep-failures", action="store_true", help="also keep episodes the expert failed")
    p_mw.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``niaf-data``; returns the exit status (0 ok, 2 bad data or arguments)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.command == "metaworld" and args.tasks is None:
        args.tasks = list(DEFAULT_TASKS)
    for name in ("chunk_size", "stride", "episodes", "image_size"):
        value = getattr(args, name, None)
        if value is not None and value < (2 if name == "chunk_size" else 1):
            parser.error(f"--{name.replace('_', '-')} must be >= {2 if name == 'chunk_size' else 1}, got {value}")
    handler = {"inspect": cmd_inspect, "stats": cmd_stats, "metaworld": cmd_metaworld}[args.command]
    try:
        result = handler(args)
    except CliError as err:
        print(f"niaf-data: error: {err}", file=sys.stderr)
        return 2
    except (ValueError, OSError, KeyError, ImportError, pickle.UnpicklingError) as err:
        # EpisodeError is a ValueError whose message names file, episode and key
        print(f"niaf-data {args.command}: error: {err}", file=sys.stderr)
        return 2
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
