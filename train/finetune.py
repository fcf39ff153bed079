"""``niaf-train``: fine-tune a NIAF policy with Accelerate (one or many processes), optionally with LoRA.

    niaf-train --config train/configs/default.yaml --output_dir outputs/run --max_steps 300
    accelerate launch -m niaf_train.finetune --config train/configs/default.yaml [--section.key value ...]
    accelerate launch --num_processes 2 -m niaf_train.finetune --config ...          # DDP
    niaf-train --config ... --resume                                               # continue the last checkpoint

Keys and defaults: :mod:`niaf_train.training_config` (``niaf-train --help`` lists them). Flow:

1. configuration checked (unknown key, bad value, an output folder holding another run → error, nothing
   written);
2. demonstrations loaded (Meta-World ones generated once and cached) as a chunk dataset, split by episode
   into training and held-out evaluation episodes; normalisation statistics from the training episodes
   (of the delta targets with ``model.relative_action_state_indices``, :mod:`niaf_train.relative_actions`);
3. the dataset's action dimension, state dimension and cameras checked against the model;
4. training loop: AdamW (``method.md`` recipe), tri-stage LR, gradient accumulation and clipping, mixed
   precision (the SIREN head always in float32), gradient checkpointing, seeded sampling whose position is
   part of every checkpoint;
5. atomic checkpoints (Hub layout + optimizer / scheduler / RNG state, :mod:`niaf_train.checkpointing`),
   evaluation on held-out episodes (:mod:`niaf_train.trajectory_metrics`), TensorBoard or Trackio logs;
6. ``<output_dir>/final``: the trained model in Hub layout with its processor, statistics, a model card with
   the data, configuration and metrics, and ``metrics.json``; optionally pushed to the Hub.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import pickle
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import run_folder
from .relative_actions import check_relative_indices, to_relative_actions
from .run_folder import FINAL_DIR, HISTORY_FILE, LOCK_FILE, METRICS_FILE, RUN_CONFIG, SAMPLE_STREAM_KEYS
from .training_config import ConfigError, FinetuneConfig, help_text, load_config

logger = logging.getLogger("niaf_train.finetune")


# ----------------------------------------------------------------------------------------------------------
# Output folder
# ----------------------------------------------------------------------------------------------------------
def check_output_dir(cfg: FinetuneConfig) -> None:
    """Refuse an output folder holding another run (or anything else) unless resuming or overwriting.

    Raises:
        ConfigError: before anything is written.
    """
    t = cfg.training
    out = Path(t.output_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"training.output_dir {out} is a file")
    contents = [p.name for p in out.iterdir() if p.name != LOCK_FILE] if out.is_dir() else []
    if t.resume:
        if not (out / RUN_CONFIG).is_file():
            raise ConfigError(f"--resume: {out} holds no niaf-train run to resume from (no {RUN_CONFIG})")
        previous = json.loads((out / RUN_CONFIG).read_text(encoding="utf-8"))
        for section in ("model", "data"):
            if previous.get(section) != cfg.to_dict()[section]:
                changed = sorted(k for k in cfg.to_dict()[section]
                                 if previous.get(section, {}).get(k) != cfg.to_dict()[section][k])
                raise ConfigError(f"--resume: `{section}` settings differ from the run in {out}: {changed}")
        changed = [f"training.{k}" for k in SAMPLE_STREAM_KEYS if previous.get("training", {}).get(k) != getattr(t, k)]
        if changed:
            raise ConfigError(f"--resume: {changed} differ from the run in {out}; they change the sample stream")
        return
    if contents and not t.overwrite_output_dir:
        from .checkpointing import last_checkpoint

        what = "another niaf-train run" if RUN_CONFIG in contents else f"other files ({sorted(contents)[:5]})"
        if RUN_CONFIG in contents and last_checkpoint(out) is None and not (out / FINAL_DIR).is_dir():
            what += " that never completed a checkpoint (--resume starts it again from step 0)"
        raise ConfigError(
            f"training.output_dir {out} already holds {what}; choose a new folder, pass --resume to continue it, "
            "or --overwrite_output_dir to replace it"
        )
    if t.overwrite_output_dir:
        d = cfg.data
        inputs = [_cache_root(cfg)] + ([Path(d.path).expanduser()] if d.path else [])
        run_folder.check_overwrite(cfg, inputs)


# ----------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------
def _cache_root(cfg: FinetuneConfig) -> Path:
    from .chunking import niaf_cache_root

    return niaf_cache_root(cfg.data.cache_dir or None)


def metaworld_dataset_dir(cfg: FinetuneConfig) -> Path:
    """Folder of the generated Meta-World demonstrations, keyed by every generation setting."""
    d = cfg.data
    if d.path:
        return Path(d.path).expanduser()
    settings = {"tasks": d.metaworld_tasks, "episodes": d.metaworld_episodes_per_task, "size": d.metaworld_image_size,
                "camera": d.metaworld_camera, "stride": d.metaworld_stride, "seed": d.metaworld_seed,
                "noise": d.metaworld_action_noise, "v": 3}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    return _cache_root(cfg) / "metaworld" / f"metaworld-{key}"


def ensure_metaworld(cfg: FinetuneConfig) -> Path:
    """Generate the Meta-World demonstrations once (into a temporary folder renamed when complete)."""
    from .metaworld_demos import generate_metaworld_dataset

    target = metaworld_dataset_dir(cfg)
    if (target / "meta" / "info.json").is_file():
        logger.info("using cached Meta-World demonstrations %s", target)
        return target
    d = cfg.data
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    logger.info("generating Meta-World demonstrations (%s x %d episodes) into %s",
                d.metaworld_tasks, d.metaworld_episodes_per_task, target)
    generate_metaworld_dataset(tmp, tasks=d.metaworld_tasks, episodes_per_task=d.metaworld_episodes_per_task,
                               cameras=(d.metaworld_camera,), image_size=d.metaworld_image_size,
                               stride=d.metaworld_stride, seed=d.metaworld_seed,
                               action_noise=d.metaworld_action_noise)
    os.rename(tmp, target)
    return target


def data_provenance(cfg: FinetuneConfig) -> dict[str, Any] | None:
    """The ``"metaworld"`` record of a LeRobot dataset's ``info.json`` (benchmark seed, tasks, cameras, image
    size, stride and the variations it holds), or None for other data. Saved in the final checkpoint as
    ``training_data.json`` so that ``niaf-eval`` can keep its variations held out."""
    d = cfg.data
    if d.source == "metaworld":
        root = metaworld_dataset_dir(cfg)
    elif d.source == "lerobot" and d.path:
        root = Path(d.path).expanduser()
    else:
        return None
    from .metaworld_demos import read_provenance

    return read_provenance(root)


def load_chunks(cfg: FinetuneConfig) -> Any:
    """The chunk dataset of ``cfg.data`` (columns: :mod:`niaf_train.chunking`)."""
    d, k = cfg.data, cfg.model.chunk_size
    from .chunking import chunk_cache_dir

    cache = chunk_cache_dir(cfg.data.cache_dir or None)  # the same folder `niaf-data inspect` builds into
    common: dict[str, Any] = {"cache_dir": cache, "sample_every": d.sample_every}
    if d.source in ("metaworld", "lerobot", "libero_lerobot"):
        from .lerobot_v3 import load_lerobot, load_libero_lerobot

        root = ensure_metaworld(cfg) if d.source == "metaworld" else _data_root(d.path)
        if not (root / "meta" / "info.json").is_file():
            raise ConfigError(f"data.path {root}: not a LeRobot v3.0 dataset (no meta/info.json)")
        loader = load_libero_lerobot if d.source == "libero_lerobot" else load_lerobot
        return loader(root, k, d.chunk_stride, cameras=d.cameras, velocity=d.velocity, **common)
    if d.source == "libero":
        from .libero import load_libero

        return load_libero(_data_root(d.path), chunk_size=k, stride=d.chunk_stride, cameras=d.cameras, **common)
    if d.source == "calvin":
        from .calvin import load_calvin

        kwargs = {"cameras": d.cameras} if d.cameras else {}
        return load_calvin(_data_root(d.path), "training", chunk_size=k, stride=d.chunk_stride, **kwargs, **common)
    raise ConfigError(f"unknown data.source {d.source!r}")


def _data_root(path: str) -> Path:
    """``data.path``: a local folder, or a Hub dataset id ``user/name[@revision]`` fetched into the Hub cache."""
    from .hub_datasets import DatasetNotFoundError, resolve_dataset_path

    try:
        return resolve_dataset_path(path)
    except DatasetNotFoundError as err:
        raise ConfigError(f"data.path {err}") from None


def _hub_id(value: str | None) -> tuple[str, str | None] | None:
    """(repo id, revision) when ``value`` names a Hub repository rather than an existing local path."""
    from .hub_datasets import parse_hub_dataset_id

    if not value or Path(value).expanduser().exists():
        return None
    return parse_hub_dataset_id(value)


def card_metadata(cfg: FinetuneConfig, metrics: dict[str, float]) -> dict[str, Any]:
    """Model-card metadata of a run: ``base_model``, ``datasets`` (Hub ids only) and the model-index entries of
    the held-out ``metrics`` (keyword arguments of ``save_pretrained``)."""
    from modeling_niaf.hub import held_out_eval_results

    d, m = cfg.data, cfg.model
    dataset = _hub_id(d.path) if d.source != "metaworld" else None
    revision = None
    if d.source == "metaworld":
        kind, name = "metaworld", f"Meta-World {', '.join(d.metaworld_tasks)} (scripted experts, generated)"
    elif dataset is not None:
        (kind, revision), name = dataset, dataset[0]
    else:
        kind, name = d.source, f"{d.source} (local folder {Path(d.path).name})"
    backbone = _hub_id(m.backbone) if m.backbone != "tiny" else None
    return {
        "base_model": backbone[0] if backbone else None,
        "datasets": [dataset[0]] if dataset else None,
        "eval_results": held_out_eval_results(metrics, kind, name, dataset_revision=revision) if metrics else None,
    }


def public_config(cfg: FinetuneConfig) -> dict[str, dict[str, Any]]:
    """``cfg.to_dict()`` without local paths (output and cache folders, local data/backbone folders), for the
    model card: a Hub id stays, a local path becomes ``<local>/<folder name>``."""
    out = cfg.to_dict()

    def public(value: Any, local: bool = False) -> Any:
        if not value or (not local and (_hub_id(value) is not None or value == "tiny")):
            return value
        return f"<local>/{Path(value).name}"

    out["training"]["output_dir"] = public(out["training"]["output_dir"], local=True)
    out["data"]["cache_dir"] = public(out["data"]["cache_dir"], local=True)
    out["data"]["path"] = public(out["data"]["path"])
    out["model"]["backbone"] = public(out["model"]["backbone"])
    return out


def split_episodes(dataset: Any, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the training and held-out episodes (whole episodes, chosen with ``seed``)."""
    episodes = np.asarray(dataset.select_columns(["episode_index"]).with_format("numpy")["episode_index"])
    unique = np.unique(episodes)
    n_val = 0 if val_fraction <= 0 else max(1, int(round(val_fraction * len(unique))))
    if n_val >= len(unique):
        raise ConfigError(f"data.val_fraction {val_fraction} leaves no training episode of {len(unique)}")
    held_out = np.random.default_rng(seed).choice(unique, size=n_val, replace=False) if n_val else np.array([], int)
    is_val = np.isin(episodes, held_out)
    return np.nonzero(~is_val)[0], np.nonzero(is_val)[0]


def dataset_layout(dataset: Any) -> dict[str, Any]:
    """Action dim D, state dim, cameras, whether velocities exist, the chunk rate (Hz)."""
    from .chunking import dataset_fps

    features = dataset.features
    action_shape = getattr(features["action"], "shape", None)
    row = dataset.select_columns(["action"]).with_format("numpy")[0]["action"]
    state_dim = None
    if "observation.state" in features:
        state_dim = int(np.asarray(dataset.select_columns(["observation.state"]).with_format("numpy")[0]
                                   ["observation.state"]).shape[-1])
    return {
        "action_dim": int(action_shape[-1]) if action_shape else int(np.asarray(row).shape[-1]),
        "state_dim": state_dim,
        "cameras": sorted(c for c in dataset.column_names if c.startswith("observation.images.")),
        "velocity": "velocity" in dataset.column_names,
        "fps": dataset_fps(dataset),
        "episodes": int(len(np.unique(dataset.select_columns(["episode_index"]).with_format("numpy")["episode_index"]))),
    }


class EpochSampler(torch.utils.data.Sampler[int]):
    """A fixed-seed permutation of ``indices`` per epoch (identical on every process; Accelerate shards it).

    ``epoch`` is set by the training loop before each pass; the order depends only on (seed, epoch), so a
    resumed run sees the same samples in the same order as an uninterrupted one.
    """

    def __init__(self, indices: np.ndarray, seed: int) -> None:
        self.indices = np.asarray(indices, dtype=np.int64)
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        return iter(self.indices[rng.permutation(len(self.indices))].tolist())


class Collator:
    """Rows of a chunk dataset (torch view) → model inputs via the :class:`NiafProcessor`.

    Physical actions/velocities/state are normalised by the processor; ``action_mask`` = not ``action_is_pad``.
    With relative actions the processor (its ``relative_action_state_indices``) turns the absolute chunks into
    deltas from the row's ``observation.state``; velocities are unchanged.
    """

    def __init__(self, processor: Any, cameras: list[str], use_state: bool, use_velocity: bool) -> None:
        self.processor = processor
        self.cameras = cameras
        self.use_state = use_state
        self.use_velocity = use_velocity
        if getattr(processor, "relative_action_state_indices", None) is not None and not use_state:
            raise ValueError("Collator: the processor makes relative actions, which need `use_state=True` (deltas "
                             "from the state).")

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        images = [[_hwc(row[c]) for c in self.cameras] for row in rows]
        kwargs: dict[str, Any] = {
            "images": images,
            "text": [row["task"] for row in rows],
            "actions": torch.stack([row["action"] for row in rows]),
            "action_mask": ~torch.stack([row["action_is_pad"] for row in rows]),
        }
        if self.use_state:
            kwargs["state"] = torch.stack([row["observation.state"] for row in rows])
        if self.use_velocity:
            kwargs["velocities"] = torch.stack([row["velocity"] for row in rows])
        batch = dict(self.processor(**kwargs))
        batch["sample_index"] = torch.tensor([int(row["index"]) for row in rows])
        return batch


def _hwc(image: torch.Tensor) -> np.ndarray:
    return image.permute(1, 2, 0).contiguous().numpy()


# ----------------------------------------------------------------------------------------------------------
# Model and processor
# ----------------------------------------------------------------------------------------------------------
def build_processor_and_model(cfg: FinetuneConfig, layout: dict[str, Any], stats: dict[str, Any], tasks: list[str]):
    """A fresh (or loaded) :class:`NiafProcessor` and :class:`NiafForActionFunction` for the dataset layout."""
    from modeling_niaf import NiafConfig, NiafForActionFunction, NiafProcessor

    m = cfg.model
    state_dim = layout["state_dim"] if m.use_state else None
    if m.use_state and layout["state_dim"] is None:
        raise ConfigError("model.use_state is true but the dataset has no observation.state")
    head = {
        "action_dim": layout["action_dim"], "chunk_size": m.chunk_size, "control_hz": layout["fps"],
        "siren_layers": m.siren_layers, "siren_width": m.siren_width, "siren_omega0": m.siren_omega0,
        "modulation_groups": m.modulation_groups, "use_state": m.use_state, "state_dim": state_dim,
        "state_to_queries": bool(m.use_state and m.state_to_queries),
        "num_cameras": len(layout["cameras"]), "normalization_mode": m.normalization_mode,
        "normalization_stats": stats, "unnormalized_action_dims": m.unnormalized_action_dims,
        "relative_action_state_indices": m.relative_action_state_indices,
        "loss_weight_position": m.loss_weight_position, "loss_weight_velocity": m.loss_weight_velocity,
        "loss_weight_jerk": m.loss_weight_jerk,
    }
    from .baselines import action_head_settings  # NIAF (unchanged config) or a comparison head (issue 15)

    model_class, head = action_head_settings(m, head)
    proc_kwargs = {
        "num_cameras": len(layout["cameras"]), "action_dim": layout["action_dim"], "state_dim": state_dim,
        "normalization_mode": m.normalization_mode, "normalization_stats": stats,
        "unnormalized_action_dims": m.unnormalized_action_dims, "prompt_template": m.prompt_template,
        "relative_action_state_indices": m.relative_action_state_indices,
    }
    if m.init_from_niaf:
        from transformers import AutoProcessor

        existing = NiafConfig.from_pretrained(m.backbone)
        # control_hz: a 10 Hz head fine-tuned on 20 Hz data would keep reporting 10 Hz times and velocities
        for key in ("action_dim", "chunk_size", "control_hz", "use_state", "state_dim", "num_cameras",
                    "relative_action_state_indices"):
            have, need = getattr(existing, key), head[key]
            same = math.isclose(have, need, rel_tol=1e-9) if key == "control_hz" else have == need
            if not same:
                hint = (" (the data's fps; set data.chunk_stride so that fps / chunk_stride matches the checkpoint)"
                        if key == "control_hz" else "")
                raise ConfigError(f"model.backbone {m.backbone}: the checkpoint has {key}={have}, "
                                  f"the dataset/config needs {need}{hint}")
        try:
            processor = AutoProcessor.from_pretrained(m.backbone, trust_remote_code=True)
        except OSError as err:
            raise ConfigError(f"model.backbone {m.backbone}: no NiafProcessor saved with the checkpoint ({err})") from err
        if existing.relative_action_state_indices is not None and (
            not hasattr(processor, "relative_actions")
            or processor.relative_action_state_indices != existing.relative_action_state_indices
        ):
            raise ConfigError(
                f"model.backbone {m.backbone}: the checkpoint's model uses relative actions but its processor does not "
                "build them (saved by an older niaf); load it and save it again with this version (model.save_pretrained"
                "(dir, processor=processor) after setting processor.relative_action_state_indices)"
            )
        # keep the checkpoint's statistics: the model was trained in those units
        return processor, NiafForActionFunction.from_pretrained(m.backbone)
    if m.backbone == "tiny":
        from .tiny import (
            IMAGE_TOKEN,
            image_tokens,
            make_tiny_image_processor,
            make_tiny_tokenizer,
            tiny_backbone_config,
            words_of,
        )

        tokenizer = make_tiny_tokenizer(words_of(tasks + [m.prompt_template.replace("{instruction}", "")]))
        processor = NiafProcessor(
            image_processor=make_tiny_image_processor(m.tiny_image_size), tokenizer=tokenizer,
            image_token=IMAGE_TOKEN, image_seq_length=image_tokens(m.tiny_image_size, m.tiny_patch_size), **proc_kwargs,
        )
        config = NiafConfig(backbone_config=tiny_backbone_config(m.tiny_hidden_size, m.tiny_num_layers,
                                                                  m.tiny_image_size, m.tiny_patch_size), **head)
        return processor, model_class(config)
    from transformers import AutoProcessor

    base = AutoProcessor.from_pretrained(m.backbone)
    family_defaults = {"florence2": ("<image>", 577), "paligemma": ("<image>", None)}
    family = None
    try:
        from transformers import AutoConfig

        family = AutoConfig.from_pretrained(m.backbone).model_type
    except (OSError, ValueError):
        pass
    token, length = family_defaults.get(family, ("<|image_pad|>", None))
    image_seq_length = m.image_seq_length or length or getattr(base, "image_seq_length", None)
    kwargs: dict[str, Any] = {}
    if family in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl"):
        kwargs = {"image_start_token": "<|vision_start|>", "image_end_token": "<|vision_end|>"}
    processor = NiafProcessor(image_processor=base.image_processor, tokenizer=base.tokenizer,
                              image_token=m.image_token or token, image_seq_length=image_seq_length,
                              **kwargs, **proc_kwargs)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[m.torch_dtype]
    model = model_class.from_pretrained_backbone(m.backbone, backbone_kwargs={"dtype": dtype}, **head)
    return processor, model


def head_parameter(name: str) -> bool:
    """Whether a (possibly PEFT-prefixed) parameter belongs to the NIAF head rather than the backbone."""
    from .peft_utils import HEAD_MODULES

    parts = name.split(".")
    return any(p in HEAD_MODULES for p in parts[:6]) and "backbone" not in parts[:4]


def tri_stage_lambda(total: int, warmup_ratio: float, decay_ratio: float, final_scale: float, kind: str):
    """LR multiplier per optimiser step: tri-stage (linear warm-up, hold, exponential decay to
    ``final_scale``), cosine, linear (both after warm-up) or constant."""
    warm = int(round(warmup_ratio * total))
    decay = int(round(decay_ratio * total)) if kind == "tri_stage" else total - warm
    hold_end = total - decay

    def scale(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if kind == "constant":
            return 1.0
        if kind == "tri_stage":
            if step < hold_end:
                return 1.0
            frac = (step - hold_end) / max(decay, 1)
            return float(final_scale ** min(frac, 1.0))
        frac = min((step - warm) / max(total - warm, 1), 1.0)
        if kind == "cosine":
            return final_scale + (1 - final_scale) * 0.5 * (1 + math.cos(math.pi * frac))
        return 1.0 - (1 - final_scale) * frac

    return scale


# ----------------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate_model(model: Any, processor: Any, loader: Any, baseline: np.ndarray, num_points: int) -> dict[str, float]:
    """Metrics on held-out chunks, in physical units (positions, velocities per second, jerk per second³).

    ``baseline`` [D] is the training mean action: ``baseline_position_mse`` is the error of always predicting it.
    With relative actions (``model.config.relative_action_state_indices``) positions are compared as deltas
    from the observation state: the model's absolute positions minus the state, against the batch's delta
    targets. The offset cancels, so ``position_mse`` equals the absolute error, and ``baseline`` (the mean
    delta) is the error of predicting state + mean delta.
    """
    from .trajectory_metrics import trajectory_metrics

    was_training = model.training
    model.eval()
    relative = model.config.relative_action_state_indices
    preds, refs, masks, pvel, rvel, dvel, djerk, norm_err = [], [], [], [], [], [], [], []
    dense_dt = None
    for batch in loader:
        batch = {k: v.to(next(model.parameters()).device) for k, v in batch.items() if k != "sample_index"}
        fn = model.predict_action_function(**batch, denormalize=True)
        at_k = fn(derivatives=1)
        dense = fn(num_points=num_points, derivatives=3)
        dense_dt = float(dense.time[1] - dense.time[0])
        actions = processor.denormalize_actions(batch["actions"].double()).cpu().numpy()
        position = at_k.position.double().cpu().numpy()
        if relative is not None:  # absolute prediction → delta, like the targets (physical state from the processor)
            position = to_relative_actions(position, processor.denormalize_state(batch["state"].double()), relative)
        preds.append(position)
        refs.append(actions)
        masks.append(batch["action_mask"].cpu().numpy())
        norm_pred = model.predict_action_function(**batch, denormalize=False)(derivatives=0).position
        norm_err.append(((norm_pred.float() - batch["actions"].float()) ** 2).mean(-1)[batch["action_mask"]].cpu().numpy())
        if "velocities" in batch:
            pvel.append(at_k.velocity.double().cpu().numpy())
            rvel.append(processor.denormalize_velocities(batch["velocities"].double()).cpu().numpy())
        dvel.append(dense.velocity.double().cpu().numpy())
        djerk.append(dense.jerk.double().cpu().numpy())
    if was_training:
        model.train()
    cat = np.concatenate
    metrics = trajectory_metrics(
        cat(preds), cat(refs), cat(masks), cat(pvel) if pvel else None, cat(rvel) if rvel else None,
        dense_velocities=cat(dvel), dense_jerk=cat(djerk), dense_dt=dense_dt, baseline=baseline,
    )
    metrics["position_mse_normalized"] = float(cat(norm_err).mean())
    metrics["num_chunks"] = float(sum(len(p) for p in preds))
    return metrics


# ----------------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> FinetuneConfig:
    parser = argparse.ArgumentParser(
        prog="niaf-train", add_help=False,
        description="Fine-tune a NIAF policy. Every configuration key can be overridden with --section.key VALUE "
                    "(or --key VALUE when unique), e.g. --output_dir out --max_steps 100 --data.path DIR.",
    )
    parser.add_argument(
        "--config",
        default="default.yaml",
        help="YAML file, or the name of a packaged config (default: default.yaml, the embedded tiny Meta-World run)",
    )
    parser.add_argument("-h", "--help", action="store_true",
                        help="show this help with every configuration key, its values in force and exit")
    args, rest = parser.parse_known_args(argv)
    if args.help:
        parser.print_help()
        # the values in force come from the config file (with any overrides given next to --help)
        print("\n" + help_text(load_config(args.config, rest), f"{args.config} and the command line"))
        raise SystemExit(0)
    return load_config(args.config, rest)


def _flat(cfg: FinetuneConfig) -> dict[str, Any]:
    out = {}
    for section, body in cfg.to_dict().items():
        for key, value in body.items():
            out[f"{section}.{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return out


def train(cfg: FinetuneConfig) -> dict[str, Any]:
    """Run a fine-tuning job; returns ``{"metrics": ..., "final_dir": ..., "history": [...]}`` on every process.

    The output folder is checked, then locked for the run (by the launch's rank 0) and checked again, so that
    two runs started on one folder cannot both write it.
    """
    check_output_dir(cfg)
    lock = None
    if int(os.environ.get("RANK", "0")) == 0:
        lock = run_folder.RunLock(Path(cfg.training.output_dir)).acquire()
    try:
        return _train(cfg)
    finally:
        if lock is not None:
            lock.release()


def _train(cfg: FinetuneConfig) -> dict[str, Any]:
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed
    from tqdm.auto import tqdm

    from . import checkpointing as ckpt
    from .chunking import with_torch_format
    from .stats import stats_from_chunk_dataset, to_normalization_stats

    t, d, m, p = cfg.training, cfg.data, cfg.model, cfg.peft
    check_output_dir(cfg)
    out = Path(t.output_dir)
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    report = None if t.report_to == "none" else t.report_to
    # Launched as several processes on a machine without CUDA (torchrun, or `accelerate launch --multi_gpu`):
    # Accelerate needs cpu=True to run DDP with gloo instead of silently training N independent copies.
    multi_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    from accelerate.utils import DistributedDataParallelKwargs

    # Vision-language backbones carry parameters a NIAF forward never uses (e.g. SigLIP's pooling head).
    ddp = DistributedDataParallelKwargs(find_unused_parameters=t.ddp_find_unused_parameters)
    accelerator = Accelerator(
        cpu=multi_cpu, kwargs_handlers=[ddp], mixed_precision=t.mixed_precision, gradient_accumulation_steps=t.gradient_accumulation_steps,
        log_with=report, project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
    )
    main = accelerator.is_main_process
    set_seed(t.seed)

    # ---- data -------------------------------------------------------------------------------------------
    with accelerator.main_process_first():
        try:
            dataset = load_chunks(cfg)
        except (ValueError, OSError, pickle.UnpicklingError) as err:  # named data errors: one line, exit 2
            if isinstance(err, ConfigError):
                raise
            raise ConfigError(f"data: {err}") from None
    layout = dataset_layout(dataset)
    cameras = d.cameras if d.cameras else layout["cameras"]
    if d.cameras:
        cameras = [c if c.startswith("observation.images.") else f"observation.images.{c}" for c in d.cameras]
        missing = [c for c in cameras if c not in layout["cameras"]]
        if missing:
            raise ConfigError(f"data.cameras {missing} not in the dataset (it has {layout['cameras']})")
    if not cameras:
        raise ConfigError("the dataset has no camera feature; NIAF needs at least one image per observation")
    layout["cameras"] = cameras
    from .chunking import cache_size_report

    cache = cache_size_report(dataset)
    logger.info("chunk cache %s: %.2f MB, %s image bytes per frame per camera (%s)", cache["folder"],
                cache["bytes"] / 1e6, ", ".join(f"{c} {b:.0f}" for c, b in cache["image_bytes_per_frame_per_camera"].items()),
                cache["image_format"])
    use_velocity = layout["velocity"] and m.loss_weight_velocity > 0
    if d.velocity == "require" and not layout["velocity"]:
        raise ConfigError("data.velocity=require but the dataset has no velocity labels")
    relative = m.relative_action_state_indices
    if relative is not None:
        try:
            check_relative_indices(relative, layout["action_dim"], layout["state_dim"])
        except ValueError as err:
            raise ConfigError(str(err)) from None
    train_rows, val_rows = split_episodes(dataset, d.val_fraction, t.seed)
    fingerprint = run_folder.run_fingerprint(cfg, run_folder.data_digest(dataset, train_rows, val_rows),
                                             accelerator.num_processes)
    last = ckpt.last_checkpoint(out) if t.resume else None
    if last is not None:
        run_folder.check_resume_fingerprint(out, fingerprint)
        run_folder.check_training_state(last, accelerator.num_processes)
    elif t.resume:
        logger.warning("--resume: %s holds no complete checkpoint; starting the run again from step 0", out)
    train_set = dataset.select(train_rows)
    # with relative actions: statistics (and the mean-action baseline) of the deltas; the cache stays absolute
    train_stats = stats_from_chunk_dataset(train_set, relative_action_state_indices=relative)
    stats = to_normalization_stats(train_stats)
    stats = {k: v for k, v in stats.items() if k in ("action", "state")}
    if not m.use_state:
        stats.pop("state", None)
    tasks = sorted(set(dataset.select_columns(["task"])["task"]))
    try:
        processor, model = build_processor_and_model(cfg, layout, stats, tasks)
    except ValueError as err:  # NiafConfig / NiafProcessor refusals (a head setting out of bounds, ...)
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"model: {err}") from None
    if model.config.action_dim != layout["action_dim"]:
        raise ConfigError(f"the dataset's action dim {layout['action_dim']} differs from the model's "
                          f"{model.config.action_dim}")
    logger.info("data: %d training chunks, %d held-out chunks, %d episodes, D=%d, %s, %.3g Hz, velocity labels: %s",
                len(train_rows), len(val_rows), layout["episodes"], layout["action_dim"], cameras, layout["fps"],
                layout["velocity"])
    out.mkdir(parents=True, exist_ok=True)
    run_folder.check_writable(out, 2 * run_folder.checkpoint_bytes(model))
    accelerator.wait_for_everyone()
    if main:  # everything is checked: only now may a previous run be replaced
        if t.overwrite_output_dir and not t.resume:
            run_folder.clear_run(out)
        (out / RUN_CONFIG).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n", encoding="utf-8")
        if last is None:
            run_folder.write_fingerprint(out, fingerprint)
        ckpt.remove_stale_temporaries(out)

    # ---- model ------------------------------------------------------------------------------------------
    if t.gradient_checkpointing:
        model.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    base_model = model
    if p.method == "lora":
        from .peft_utils import apply_lora

        if main and not p.save_merged:
            base_model.save_pretrained(out / "base_model", processor=processor)
        model = apply_lora(model, p.r, p.lora_alpha, p.lora_dropout, p.target_modules)
    elif p.freeze_backbone:
        for param in model.backbone.parameters():
            param.requires_grad_(False)
    from .console_logging import count_parameters, format_step_line

    total_params, trainable_params = count_parameters(model)
    logger.info("model: %s parameters, %s trainable (%.1f%%)", f"{total_params:,}", f"{trainable_params:,}",
                100.0 * trainable_params / max(total_params, 1))
    head_params = [q for n, q in model.named_parameters() if q.requires_grad and head_parameter(n)]
    body_params = [q for n, q in model.named_parameters() if q.requires_grad and not head_parameter(n)]
    groups = [{"params": body_params, "lr": t.learning_rate}, {"params": head_params, "lr": t.head_learning_rate or t.learning_rate}]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], betas=(t.adam_beta1, t.adam_beta2),
                                  eps=t.adam_epsilon, weight_decay=t.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, tri_stage_lambda(t.max_steps, t.warmup_ratio, t.decay_ratio, t.final_lr_scale, t.lr_scheduler))

    collate = Collator(processor, cameras, m.use_state, use_velocity)
    torch_view = with_torch_format(dataset)
    sampler = EpochSampler(train_rows, t.seed)
    train_loader = torch.utils.data.DataLoader(
        torch_view, batch_size=t.per_device_batch_size, sampler=sampler, collate_fn=collate,
        drop_last=len(train_rows) >= t.per_device_batch_size * accelerator.num_processes, num_workers=d.num_workers,
    )
    val_loader = None
    if len(val_rows):
        pick = val_rows[np.linspace(0, len(val_rows) - 1, min(d.max_val_samples, len(val_rows))).round().astype(int)]
        val_collate = Collator(processor, cameras, m.use_state, layout["velocity"])
        val_loader = torch.utils.data.DataLoader(torch.utils.data.Subset(torch_view, np.unique(pick).tolist()),
                                                 batch_size=32, collate_fn=val_collate)
    baseline = np.asarray(train_stats["action"]["mean"], dtype=np.float64)
    model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)
    batches_per_epoch = len(train_loader)
    if batches_per_epoch == 0:
        raise ConfigError(f"{len(train_rows)} training chunks make no batch of {t.per_device_batch_size}")

    # ---- resume -----------------------------------------------------------------------------------------
    step, consumed, history = 0, 0, []
    if last is not None:
        try:
            accelerator.load_state(str(last / "training_state"))
        except Exception as err:  # torch / safetensors raise many types for a damaged state
            raise ConfigError(f"--resume: {last / 'training_state'} could not be loaded ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''})") from None
        state = ckpt.read_trainer_state(last)
        step, consumed, history = int(state["step"]), int(state["micro_batches"]), list(state["history"])
        logger.info("resumed from %s at step %d", last, step)
    if report:
        accelerator.init_trackers("niaf", config=_flat(cfg))
    sample_log = open(out / f"samples_rank{accelerator.process_index}.txt", "a") if t.record_sample_ids else None  # noqa: SIM115

    def save_checkpoint(at_step: int) -> None:
        tmp = ckpt.temporary_dir(out, at_step)
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp / "training_state"))
        if main:
            unwrapped = accelerator.unwrap_model(model)
            export = _export_model(unwrapped, p.method == "lora")
            export.save_pretrained(tmp / "model", processor=processor)
            ckpt.commit(out, at_step, {"step": at_step, "micro_batches": consumed, "history": history}, t.save_total_limit)
        accelerator.wait_for_everyone()

    # ---- loop -------------------------------------------------------------------------------------------
    model.train()
    bar = tqdm(total=t.max_steps, initial=step, desc="niaf-train", unit="step", disable=not main)
    running: dict[str, float] = {}
    n_running = 0
    start = time.perf_counter()
    # throughput and time spent waiting for batches, per logging interval
    interval_start, data_seconds, interval_samples = start, 0.0, 0
    while step < t.max_steps:
        epoch, offset = divmod(consumed, batches_per_epoch)
        sampler.epoch = epoch
        loader = accelerator.skip_first_batches(train_loader, offset) if offset else train_loader
        for batch, waited in _timed(loader):
            data_seconds += waited
            sample_ids = batch.pop("sample_index")
            interval_samples += len(sample_ids) * accelerator.num_processes
            if sample_log is not None:
                sample_log.write(" ".join(str(int(i)) for i in sample_ids) + "\n")
            with accelerator.accumulate(model):
                output = model(**batch)
                accelerator.backward(output.loss)
                if accelerator.sync_gradients:  # max_norm inf: only measured, not clipped
                    norm = accelerator.clip_grad_norm_(model.parameters(), t.max_grad_norm or math.inf)
                    if norm is not None:
                        running["grad_norm"] = running.get("grad_norm", 0.0) + float(norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            consumed += 1
            for name in ("loss", "loss_pos", "loss_vel", "loss_jerk"):
                value = getattr(output, name)
                if value is not None:
                    running[name] = running.get(name, 0.0) + float(value.detach())
            n_running += 1
            if not accelerator.sync_gradients:
                continue
            step += 1
            bar.update(1)
            if step % t.logging_steps == 0 or step == t.max_steps:
                logs = {f"train/{k}": accelerator.reduce(torch.tensor(v / n_running, device=accelerator.device),
                                                         "mean").item() for k, v in running.items()}
                logs["train/lr"] = scheduler.get_last_lr()[0]
                now = time.perf_counter()
                steps_in_interval = max(1, n_running // t.gradient_accumulation_steps)
                # grad_norm was summed once per optimiser step, the losses once per micro-batch
                if "train/grad_norm" in logs:
                    logs["train/grad_norm"] *= n_running / steps_in_interval
                logs["train/samples_per_second"] = interval_samples / max(now - interval_start, 1e-9)
                logs["train/data_seconds_per_step"] = data_seconds / steps_in_interval
                logs["train/data_fraction"] = data_seconds / max(now - interval_start, 1e-9)
                history.append({"step": step, **logs})
                bar.set_postfix(loss=f"{logs['train/loss']:.4f}")
                logger.info(format_step_line(step, t.max_steps, logs))
                interval_start, data_seconds, interval_samples = now, 0.0, 0
                if report:
                    accelerator.log(logs, step=step)
                running, n_running = {}, 0
            if val_loader is not None and t.eval_steps and step % t.eval_steps == 0 and step < t.max_steps:
                if main:
                    metrics = evaluate_model(accelerator.unwrap_model(model), processor, val_loader, baseline,
                                             _num_points(t, m))
                    history.append({"step": step, **{f"eval/{k}": v for k, v in metrics.items()}})
                    logger.info("step %d eval: %s", step, _fmt(metrics))
                    if report:
                        accelerator.log({f"eval/{k}": v for k, v in metrics.items()}, step=step)
                accelerator.wait_for_everyone()
            if t.save_steps and step % t.save_steps == 0 and step < t.max_steps:
                save_checkpoint(step)
            if step >= t.max_steps:
                break
    bar.close()
    if sample_log is not None:
        sample_log.close()
        from safetensors.torch import save_file

        weights = {k: v.detach().float().cpu().contiguous() for k, v in accelerator.unwrap_model(model).state_dict().items()}
        save_file(weights, str(out / f"weights_rank{accelerator.process_index}.safetensors"))
    train_seconds = time.perf_counter() - start

    # ---- final ------------------------------------------------------------------------------------------
    save_checkpoint(step)
    result: dict[str, Any] = {"final_dir": str(out / FINAL_DIR), "history": history, "train_seconds": train_seconds}
    metrics: dict[str, float] = {}
    if main:
        unwrapped = accelerator.unwrap_model(model)
        if val_loader is not None:
            metrics = evaluate_model(unwrapped, processor, val_loader, baseline, _num_points(t, m))
            history.append({"step": step, **{f"eval/{k}": v for k, v in metrics.items()}})
            logger.info("final eval: %s", _fmt(metrics))
            if report:
                accelerator.log({f"eval/{k}": v for k, v in metrics.items()}, step=step)
        export = _export_model(unwrapped, p.method == "lora" and p.save_merged)
        tmp = out / (ckpt.TMP_PREFIX + FINAL_DIR)
        shutil.rmtree(tmp, ignore_errors=True)
        datasets_meta = [cfg.data.source] if cfg.data.source != "metaworld" else ["metaworld (scripted experts)"]
        export.save_pretrained(tmp, processor=processor, repo_id=t.hub_model_id, **card_metadata(cfg, metrics))
        if p.method == "lora" and not p.save_merged:
            unwrapped.save_pretrained(tmp / "adapter")
        (tmp / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        provenance = data_provenance(cfg)
        if provenance is not None:
            from .evaluation.closed_loop import TRAINING_RECORD

            (tmp / TRAINING_RECORD).write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
        with open(tmp / "README.md", "a", encoding="utf-8") as card:
            card.write(training_card_section(cfg, layout, len(train_rows), len(val_rows), metrics, step, datasets_meta))
        ckpt.atomic_replace_dir(tmp, out / FINAL_DIR)
        with open(out / HISTORY_FILE, "w", encoding="utf-8") as f:
            for row in history:
                f.write(json.dumps(row) + "\n")
        if t.push_to_hub:
            push_final(out / FINAL_DIR, t.hub_model_id, t.hub_private)
    accelerator.wait_for_everyone()
    if report:
        accelerator.end_training()
    result["metrics"] = metrics
    result["process_index"] = accelerator.process_index
    result["baseline"] = baseline.tolist()
    return result


def _timed(loader: Any) -> Iterator[tuple[Any, float]]:
    """Yield (batch, seconds spent waiting for it) from ``loader``."""
    iterator = iter(loader)
    while True:
        started = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            return
        yield batch, time.perf_counter() - started


def _num_points(t: Any, m: Any) -> int:
    return t.eval_num_points or 4 * (m.chunk_size - 1) + 1


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())


def _export_model(model: Any, merge: bool) -> Any:
    """The plain NIAF model to save: LoRA merged into a copy when ``merge`` (training continues unmerged)."""
    from .peft_utils import is_peft_model

    if not is_peft_model(model):
        return model
    if merge:
        import copy

        return copy.deepcopy(model).merge_and_unload()
    return model.get_base_model()


def training_card_section(cfg: FinetuneConfig, layout: dict[str, Any], n_train: int, n_val: int,
                          metrics: dict[str, float], step: int, datasets_meta: list[str]) -> str:
    """Markdown appended to the model card: data, configuration, evaluation metrics."""
    d, t, p = cfg.data, cfg.training, cfg.peft
    lines = ["", "## Training", "",
             f"Fine-tuned with `niaf-train` for {step} optimiser steps "
             f"(batch {t.per_device_batch_size} per device × {t.gradient_accumulation_steps} accumulation, "
             f"AdamW lr {t.learning_rate:g}, betas ({t.adam_beta1}, {t.adam_beta2}), weight decay {t.weight_decay:g}, "
             f"{t.lr_scheduler} schedule, mixed precision {t.mixed_precision}, "
             f"{f'LoRA r={p.r}' if p.method == 'lora' else 'full fine-tuning'}).", "",
             "### Data", "",
             f"- source: {d.source} {public_config(cfg)['data']['path'] or ''} ({', '.join(datasets_meta)})",
             f"- {layout['episodes']} episodes; {n_train} training chunks, {n_val} held-out chunks "
             f"(val_fraction {d.val_fraction}, whole episodes)",
             f"- action dim {layout['action_dim']}, cameras {layout['cameras']}, chunk rate {layout['fps']:g} Hz, "
             f"velocity labels: {'yes' if layout['velocity'] else 'no'}"]
    if d.source == "metaworld":
        lines.append(f"- Meta-World tasks {d.metaworld_tasks}, {d.metaworld_episodes_per_task} episodes each, "
                     f"{d.metaworld_image_size} px, camera {d.metaworld_camera}")
    lines += ["", "### Evaluation on held-out episodes (physical units)", ""]
    if metrics:
        lines += ["| metric | value |", "|---|---|"] + [f"| {k} | {v:.5g} |" for k, v in metrics.items()]
        lines += ["", "`baseline_position_mse` is the error of always predicting the training mean action."]
    else:
        lines.append("No held-out episodes (val_fraction 0).")
    lines += ["", "### Configuration", "", "```json", json.dumps(public_config(cfg), indent=1), "```", ""]
    return "\n".join(lines)


def push_final(folder: Path, repo_id: str, private: bool) -> None:
    """Upload the final checkpoint folder to the Hub (needs a token and network)."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message="Upload NIAF policy (niaf-train)")
    logger.info("pushed %s to https://huggingface.co/%s", folder, repo_id)


def main(argv: list[str] | None = None) -> int:
    from .console_logging import configure_logging, print_error

    try:
        configure_logging()
    except ValueError as err:  # a bad NIAF_LOG_LEVEL / NIAF_THIRD_PARTY_LOG_LEVEL
        print_error(f"niaf-train: error: {err}")
        return 2
    try:
        cfg = parse_args(argv)
        result = train(cfg)
    except ConfigError as err:  # also mid-run: printed on its own line, not glued onto the progress bar
        print_error(f"niaf-train: error: {err}")
        return 2
    except OSError as err:  # a read-only or full disk mid-run: the file and the cause, not a traceback
        where = f"{err.filename}: " if err.filename else ""
        print_error(f"niaf-train: error: {where}{err.strerror or err}")
        return 1
    metrics = result["metrics"]
    if metrics and result["process_index"] == 0:
        print(f"final checkpoint: {result['final_dir']}")
        print(f"validation position MSE: {metrics['position_mse']:.5g}   "
              f"mean-action baseline: {metrics['baseline_position_mse']:.5g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
