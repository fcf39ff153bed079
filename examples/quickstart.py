"""NIAF quick start: one observation → an action *function*, queried at 200 points with derivatives.

    python examples/quickstart.py                       # tiny random model, offline, CPU, a few seconds
    python examples/quickstart.py --checkpoint DIR_OR_ID  # a saved / Hub NIAF checkpoint (with its processor)
    python examples/quickstart.py --output-dir out/quickstart

Writes ``trajectory.png`` (position, velocity, acceleration, jerk per action dimension) and the model in Hub
layout (``save_pretrained``: config.json with auto_map, model.safetensors, remote code, processor, card) into
the output folder. The tiny model is untrained, so its trajectory is the random-init motion prior.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger("niaf.quickstart")


def build_tiny(seed: int = 0):
    """A tiny PaliGemma-backed NIAF (hidden 32, 2 layers, 32 px, 2 cameras) and its processor, built in code."""
    from niaf_train.tiny import tiny_backbone_config
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, SiglipImageProcessorPil

    from modeling_niaf import NiafConfig, NiafForActionFunction, NiafProcessor

    words = ["pick", "up", "the", "red", "block", "open", "drawer", "put", "it", "in", "to", "robot"]
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, **{w: 4 + i for i, w in enumerate(words)}, "<image>": 299}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>",
        additional_special_tokens=["<image>"],
    )
    backbone = tiny_backbone_config(32, num_layers=2, image_size=32, patch_size=16, vocab_size=300)
    rng = np.random.default_rng(seed)
    # Statistics from a made-up dataset of 7-D end-effector deltas + gripper, as a real run would compute them.
    frames = rng.normal(size=(2000, 7)) * np.array([0.02, 0.02, 0.02, 0.05, 0.05, 0.05, 1.0])
    processor = NiafProcessor(
        image_processor=SiglipImageProcessorPil(size={"height": 32, "width": 32}),
        tokenizer=tokenizer, prompt_template="{instruction}", image_token="<image>", image_seq_length=4,
        num_cameras=2, action_dim=7, normalization_mode="QUANTILES",
    )
    stats = processor.fit_stats(frames)
    config = NiafConfig(
        backbone_config=backbone, action_dim=7, chunk_size=50, control_hz=50.0, siren_layers=3, siren_width=64,
        modulation_groups=16, num_cameras=2, normalization_stats=stats,
    )
    torch.manual_seed(seed)
    model = NiafForActionFunction(config)
    with torch.no_grad():  # an untrained model sits exactly on the motion prior (γ = β = 0); nudge it to show modulation
        for p in model.modulation_heads.parameters():
            p.normal_(0.0, 0.05)
    return model.eval(), processor


def load(checkpoint: str):
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(checkpoint, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(checkpoint, trust_remote_code=True)
    return model, processor


TINY_ACTION_NAMES = ("Δx", "Δy", "Δz", "Δroll", "Δpitch", "Δyaw", "gripper")
"""The 7 action dims of the tiny model's made-up statistics: end-effector deltas and a gripper command."""
TINY_ACTION_UNITS = ("m", "m", "m", "rad", "rad", "rad", "1")


def plot(traj, path: Path, names=None, units=None, untrained: bool = False) -> None:
    """Save `make_figure` to ``path``."""
    import matplotlib.pyplot as plt

    fig = make_figure(traj, names, units, untrained)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def make_figure(traj, names=None, units=None, untrained: bool = False):
    """Position, velocity, acceleration and jerk (rows) of every action dimension (columns) of sample 0.

    ``names``/``units`` label the dims (default ``dim d`` in dataset units); dims with the same unit share the
    y-scale within a row, so their sizes compare at a glance. ``untrained`` says so in the title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.asarray(traj.time).reshape(-1)
    dims = traj.position.shape[-1]
    names = list(names) if names is not None else [f"dim {d}" for d in range(dims)]
    units = list(units) if units is not None else ["units"] * dims
    rows = [("position", ""), ("velocity", "/s"), ("acceleration", "/s²"), ("jerk", "/s³")]
    fig, axes = plt.subplots(len(rows), dims, figsize=(2.3 * dims, 7.5), sharex=True, squeeze=False)
    for r, (name, per) in enumerate(rows):
        values = np.asarray(getattr(traj, name)[0])
        for unit in dict.fromkeys(units):  # one y-range per unit within the row
            cols = [d for d in range(dims) if units[d] == unit]
            low, high = float(values[:, cols].min()), float(values[:, cols].max())
            pad = 0.05 * (high - low) or 0.05 * max(abs(high), 1e-12)
            for d in cols:
                axes[r, d].set_ylim(low - pad, high + pad)
        for d in range(dims):
            ax = axes[r, d]
            ax.plot(t, values[:, d], lw=1.2)
            if r == 0:
                ax.set_title(f"{names[d]} [{units[d]}]", fontsize=9)
            ax.set_ylabel(f"{name} [{units[d]}{per}]", fontsize=7)
            if r == len(rows) - 1:
                ax.set_xlabel("t [s]", fontsize=8)
            ax.tick_params(labelsize=6)
    title = f"NIAF action function: {len(t)} queries of one chunk, analytic derivatives"
    if untrained:
        title = ("UNTRAINED model (random weights): these curves are the random initial motion prior, not learned "
                 "behaviour\n" + title)
    fig.suptitle(title, fontsize=10, color="firebrick" if untrained else "black")
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="NIAF checkpoint folder or Hub id (default: a tiny random model)")
    parser.add_argument("--output-dir", default="outputs/quickstart", help="where the plot and the model go")
    parser.add_argument("--num-points", type=int, default=200, help="query points over the chunk")
    parser.add_argument("--instruction", default="pick up the red block")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    model, processor = load(args.checkpoint) if args.checkpoint else build_tiny()
    cfg = model.config
    rng = np.random.default_rng(1)
    side = 224
    cameras = [rng.integers(0, 255, size=(side, side, 3), dtype=np.uint8) for _ in range(cfg.num_cameras)]
    state = rng.normal(size=(1, cfg.state_dim)) if cfg.use_state else None
    inputs = processor(images=[cameras], text=[args.instruction], state=state)

    start = time.perf_counter()
    action_fn = model.predict_action_function(**inputs)  # the one backbone pass
    backbone_ms = 1e3 * (time.perf_counter() - start)
    start = time.perf_counter()
    traj = action_fn(num_points=args.num_points, derivatives=3)  # no backbone: just the SIREN
    query_ms = 1e3 * (time.perf_counter() - start)
    logger.info(
        "chunk: K=%d points at %.0f Hz (T=%.3f s); queried %d points (%.1f× the training rate)",
        cfg.chunk_size, cfg.control_hz, cfg.chunk_duration, args.num_points, (args.num_points - 1) / (cfg.chunk_size - 1),
    )
    logger.info("backbone + heads: %.1f ms, %d-point query with 3 derivatives: %.2f ms", backbone_ms, args.num_points, query_ms)
    logger.info("first action: %s", np.array2string(traj.position[0, 0].numpy(), precision=4))

    tiny = not args.checkpoint
    plot(traj.to_numpy(), out / "trajectory.png", names=TINY_ACTION_NAMES if tiny else None,
         units=TINY_ACTION_UNITS if tiny else None, untrained=tiny)
    if tiny:
        logger.info("the tiny model is untrained: its trajectory is the random initial motion prior")
    model.save_pretrained(out / "model", processor=processor)
    logger.info("wrote %s and the Hub-layout model in %s", out / "trajectory.png", out / "model")
    return out


if __name__ == "__main__":
    main()
