"""What a run leaves for others: the exported model (LoRA merged or not), its card section and metadata, the
Hub upload."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

from modeling_niaf.hub import held_out_eval_results

from ..baselines import MODEL_ARGUMENT_KEYS
from ..data.hub_datasets import parse_hub_dataset_id
from ..data.metaworld import CONTRACT_FILE
from .arguments import FinetuneConfig
from .lora import is_peft_model

logger = logging.getLogger(__name__)


def _hub_id(value: str | None) -> tuple[str, str | None] | None:
    """(repo id, revision) when ``value`` names a Hub repository rather than an existing local path."""
    if not value or Path(value).expanduser().exists():
        return None
    return parse_hub_dataset_id(value)


def card_metadata(cfg: FinetuneConfig, metrics: dict[str, float]) -> dict[str, Any]:
    """Model-card metadata of a run: ``base_model``, ``datasets`` (Hub ids only) and the model-index entries of
    the held-out ``metrics`` (keyword arguments of ``save_pretrained``)."""
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
    if out["model"].get("action_head") == "niaf":  # a NIAF run's card lists no comparison-head option
        for key in ("action_head", *MODEL_ARGUMENT_KEYS):
            out["model"].pop(key, None)
    return out


def _export_model(model: Any, merge: bool) -> Any:
    """The plain NIAF model to save: LoRA merged into a copy when ``merge`` (training continues unmerged)."""
    if not is_peft_model(model):
        return model
    if merge:
        return copy.deepcopy(model).merge_and_unload()
    return model.get_base_model()


def training_card_section(cfg: FinetuneConfig, layout: dict[str, Any], n_train: int, n_val: int,
                          metrics: dict[str, float], step: int, datasets_meta: list[str],
                          contract: dict[str, Any] | None = None) -> str:
    """Markdown appended to the model card: data, configuration, evaluation metrics, and (Meta-World) the
    observation contract in words."""
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
                     f"{d.metaworld_image_size} px, camera(s) {', '.join(d.metaworld_camera)}, state {d.metaworld_state}"
                     f"{', LeRobot camera view' if d.metaworld_camera_view == 'lerobot' else ''}"
                     f"{', LeRobot task strings' if d.metaworld_instructions == 'lerobot' else ''}")
    if contract is not None:
        lines += contract_card_lines(contract)
    lines += ["", "### Evaluation on held-out episodes (physical units)", ""]
    if metrics:
        lines += ["| metric | value |", "|---|---|"] + [f"| {k} | {v:.5g} |" for k, v in metrics.items()]
        lines += ["", "`baseline_position_mse` is the error of always predicting the training mean action."]
    else:
        lines.append("No held-out episodes (val_fraction 0).")
    lines += ["", "### Configuration", "", "```json", json.dumps(public_config(cfg), indent=1), "```", ""]
    return "\n".join(lines)


def contract_card_lines(contract: dict[str, Any]) -> list[str]:
    """The observation contract (``observation_contract.json``) in words, for the model card."""
    st, act, tm = contract["state"], contract["action"], contract["timing"]
    lines = ["", "### Observation contract", "",
             f"`{CONTRACT_FILE}` holds, machine-readable, everything needed to build this policy's inputs and "
             "apply its outputs in your own Meta-World loop (`examples/metaworld_from_contract.py` in the NIAF "
             "repository is such a loop).", ""]
    for cam in contract["cameras"]:
        crop = (f", crop (top, left, height, width) {cam['crop']} of the upright frame" if cam["crop"] else "")
        moved = (f" moved to {cam['camera_pos']} (LeRobot's Meta-World view)" if cam.get("camera_pos") else "")
        look = ("MuJoCo's default visual settings" if cam.get("view") == "lerobot"
                else "anti-aliasing, shadows, reflections, skybox and haze off")
        lines.append(f"- `{cam['key']}`: camera `{cam['camera']}`{moved} rendered at {cam['render_size']} px "
                     f"({look})"
                     f"{', rotated 180°' if cam['rotate_180'] else ''}{crop}, resized to {cam['image_size']} px "
                     "(area averaging)")
    lines.append(f"- `{st['key']}`: {st['kind']} ({st['dim']}-d: {', '.join(st['names'][:6])}"
                 f"{', ...' if st['dim'] > 6 else ''}), {st['from_env_observation']}")
    lines.append("- instruction: " + "; ".join(f"{t}: \"{s}\"" for t, s in contract["instructions"].items()))
    lines.append(f"- actions are {act['kind']}s, not positions: {act['meaning']}; clipped to {act['clip']}")
    lines.append(f"- timing: chunk point k is the command for environment step {tm['env_steps_per_chunk_point']}·k "
                 f"after the observation ({tm['control_hz']:g} Hz, {tm['chunk_size']} points, "
                 f"{tm['chunk_duration_seconds']:.4g} s); the evaluation replans every "
                 f"{tm['replan_every_env_steps']} environment steps")
    ev = contract["evaluation"]
    lines.append(f"- held-out evaluation: trained on benchmark seeds {ev['training_benchmark_seeds']}; "
                 f"{ev['held_out_benchmark_seed']}; {ev['variation_of_episode']}; success = {ev['success']}")
    return lines


def push_final(folder: Path, repo_id: str, private: bool) -> None:
    """Upload the final checkpoint folder to the Hub (needs a token and network)."""
    from huggingface_hub import HfApi  # heavy: huggingface_hub

    api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message="Upload NIAF policy (niaf-train)")
    logger.info("pushed %s to https://huggingface.co/%s", folder, repo_id)
