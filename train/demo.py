"""The end-to-end default job: Meta-World demos → tiny NIAF fine-tune → Hub checkpoint → reload → 4× queries.

    python -m niaf_train.demo --output_dir outputs/metaworld-tiny            # ~30 s on 2 idle CPU cores
    python -m niaf_train.demo --output_dir DIR --max_steps 40 --data.metaworld_episodes_per_task 4   # a smoke run

Any ``niaf-train`` key can be overridden (``--section.key value``). Steps:

1. scripted-expert Meta-World demonstrations are generated once and cached (``~/.cache/niaf``);
2. a tiny NIAF is fine-tuned with ``niaf_train.finetune`` (config ``default.yaml``);
3. the final Hub-layout checkpoint is reloaded with ``AutoModel.from_pretrained(..., trust_remote_code=True)``
   and ``AutoProcessor`` — the same path a Hub user takes;
4. held-out chunks are queried at 4× the training rate (``4·(K-1)+1`` points) with analytic derivatives;
5. validation metrics are printed next to the mean-action baseline, and ``demo_trajectories.png`` is saved.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .training_config import ConfigError, load_config

logger = logging.getLogger("niaf_train.demo")


def reload_and_query(final_dir: Path, cfg: Any, out_png: Path, num_examples: int = 3) -> dict[str, Any]:
    """Reload the checkpoint through the Auto classes and query held-out chunks at 4× the training rate."""
    from transformers import AutoModel, AutoProcessor

    from .chunking import with_torch_format
    from .finetune import Collator, load_chunks, split_episodes

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


def _plot(traj: Any, at_k: Any, truth: np.ndarray, config: Any, path: Path, tasks: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, dims = truth.shape[0], truth.shape[-1]
    t_dense = np.asarray(traj.time).reshape(-1)
    t_k = np.arange(config.chunk_size) / config.control_hz
    fig, axes = plt.subplots(n, dims, figsize=(2.6 * dims, 2.0 * n), squeeze=False, sharex=True)
    for i in range(n):
        for d in range(dims):
            ax = axes[i, d]
            ax.plot(t_dense, traj.position[i, :, d], lw=1.2, label=f"NIAF, {len(t_dense)} queries")
            ax.plot(t_k, truth[i, :, d], "o", ms=3, color="k", label="expert (held out)")
            ax.tick_params(labelsize=6)
            if i == 0:
                ax.set_title(f"action dim {d}", fontsize=8)
            if d == 0:
                ax.set_ylabel(tasks[i][:22], fontsize=7)
    axes[0, 0].legend(fontsize=6)
    fig.suptitle(f"held-out Meta-World chunks: {config.chunk_size} points at {config.control_hz:g} Hz, "
                 f"queried at 4x", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    from .finetune import train

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
        cfg = load_config(config, argv)
        result = train(cfg)
    except ConfigError as err:
        print(f"niaf_train.demo: error: {err}", file=sys.stderr)
        return 2
    out = Path(cfg.training.output_dir)
    query = reload_and_query(Path(result["final_dir"]), cfg, out / "demo_trajectories.png")
    m = result["metrics"]
    summary = {"metrics": m, "query": query, "train_seconds": result["train_seconds"],
               "wall_seconds": time.perf_counter() - start}
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    ratio = m["position_mse"] / m["baseline_position_mse"]
    print("\n=== NIAF on Meta-World (held-out episodes, physical action units) ===")
    print(f"validation position MSE      {m['position_mse']:.5f}")
    print(f"mean-action baseline MSE     {m['baseline_position_mse']:.5f}   (model / baseline = {ratio:.2f})")
    if "velocity_mse" in m:
        print(f"validation velocity MSE      {m['velocity_mse']:.5f} (per s)^2")
    print(f"mean squared jerk (4x dense) {m['mean_squared_jerk']:.4g} (per s^3)^2")
    print(f"SPARC of speed profiles      {m['sparc']:.3f}   (closer to 0 = smoother)")
    print(f"queried {query['num_points']} points per chunk = {query['query_hz']:g} Hz "
          f"(trained on {query['chunk_size']} points at {query['control_hz']:g} Hz)")
    print(f"checkpoint (Hub layout): {result['final_dir']}\nplot: {out / 'demo_trajectories.png'}")
    print(f"wall time: {summary['wall_seconds']:.0f} s (training {result['train_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
