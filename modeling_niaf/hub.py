"""The one place that knows the layout of a NIAF model repository on the Hugging Face Hub.

A saved NIAF checkpoint is a complete, self-contained transformers remote-code repo::

    config.json                 NiafConfig + auto_map (AutoConfig, AutoModel, AutoModelForActionFunction... see below)
    model.safetensors           backbone + queries + ψ heads + SIREN prior (sharded above the size limit)
    configuration_niaf.py       ┐
    modeling_niaf.py            │ remote code, flat siblings connected by single-dot relative imports
    siren.py                    │ (transformers' loader finds them with a regex; sub-packages and
    action_function.py          │  absolute imports of our own modules would break loading)
    normalization.py            │
    processing_niaf.py          │
    hub.py                      ┘ this file (modeling_niaf.py imports it for save_pretrained)
    processor_config.json, tokenizer*.json, ...   when a NiafProcessor is saved alongside
    README.md                   model card rendered from hub_cards/model_card.md

The installed package is split into two top-level packages (``configuration_niaf``, ``modeling_niaf``), so
``register_for_auto_class`` cannot be used (transformers would look for ``modeling_niaf/configuration_niaf.py``);
the ``auto_map`` is written here by hand instead. This file is itself shipped, so that a model loaded with
``trust_remote_code=True`` can be saved again; it imports nothing of ours.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers.utils import logging

logger = logging.get_logger(__name__)

CODE_FILES = (
    "configuration_niaf.py",
    "modeling_niaf.py",
    "siren.py",
    "action_function.py",
    "normalization.py",
    "processing_niaf.py",
    "hub.py",
)
"""Remote-code files copied flat into every checkpoint (the whitelist)."""

MODEL_AUTO_MAP = {
    "AutoConfig": "configuration_niaf.NiafConfig",
    "AutoModel": "modeling_niaf.NiafForActionFunction",
}
"""``auto_map`` of config.json. transformers has no Auto class for action prediction, so ``AutoModel`` points at
the full policy (with its head); the task class can also be named explicitly."""

PROCESSOR_AUTO_MAP = {"AutoProcessor": "processing_niaf.NiafProcessor"}
"""``auto_map`` written into processor_config.json."""

CARD_TEMPLATE_NAME = "model_card.md"

_FALLBACK_CARD = """---
library_name: transformers
pipeline_tag: robotics
tags: {tags}
---

# {model_name}

NIAF policy (Neural Implicit Action Fields). Load with
`AutoModel.from_pretrained("{repo_id}", trust_remote_code=True)`.
"""


def _code_sources(model: Any, processor: Any = None) -> dict[str, Path]:
    """Where each whitelisted file lives: next to the modeling module, the processor's module or the config class.

    A model loaded with ``trust_remote_code`` has only the files its import chain pulled in next to it;
    ``processing_niaf.py`` then lives next to the processor class (if one is given) or is left out with a
    warning, since the repo needs it only together with processor files.
    """
    folders = [Path(inspect.getfile(type(model))).resolve().parent]
    if processor is not None:
        folders.append(Path(inspect.getfile(type(processor))).resolve().parent)
    config_file = Path(inspect.getfile(type(model.config))).resolve()
    sources = {}
    for name in CODE_FILES:
        if name == "configuration_niaf.py":
            sources[name] = config_file
            continue
        found = next((folder / name for folder in folders if (folder / name).is_file()), None)
        if found is None:
            if name == "processing_niaf.py" and processor is None:
                logger.warning("save_for_hub: processing_niaf.py not found next to the model code; saved without it.")
                continue
            raise FileNotFoundError(f"save_for_hub: remote-code file {name} not found in {[str(f) for f in folders]}.")
        sources[name] = found
    return sources


def find_card_template() -> Path | None:
    """hub_cards/model_card.md of a source checkout (the repo root is the parent of this package)."""
    here = Path(__file__).resolve().parent
    candidates = [
        here.parent / "hub_cards" / CARD_TEMPLATE_NAME,  # source checkout / editable install
        here / "hub_cards" / CARD_TEMPLATE_NAME,  # wheel install: shipped as package data
    ]
    env = os.environ.get("NIAF_CARD_TEMPLATE")
    if env:
        candidates.insert(0, Path(env))
    for path in candidates:
        if path.is_file():
            return path
    return None


def _action_kind(config: Any) -> str:
    indices = getattr(config, "relative_action_state_indices", None)
    if indices is None:
        return "absolute"
    pairs = ", ".join(f"{i}→{s}" for i, s in enumerate(indices) if s is not None)
    return f"relative to the state at the observation time (action dim → state index: {pairs}; others absolute)"


def _head_table(config: Any) -> str:
    rows = [
        ("backbone", config.backbone_config.model_type),
        ("backbone hidden size d", config.hidden_size),
        ("SIREN layers L", config.siren_layers),
        ("SIREN width H", config.siren_width),
        ("ω₀", config.siren_omega0),
        ("modulation groups G", config.modulation_groups),
        ("query tokens Q = L·(G+1)", config.num_queries),
        ("action dim D", config.action_dim),
        ("chunk size K", config.chunk_size),
        ("control rate f (Hz)", config.control_hz),
        ("chunk duration T = (K-1)/f (s)", f"{config.chunk_duration:.4g}"),
        ("cameras", config.num_cameras),
        ("robot-state token", f"yes (dim {config.state_dim})" if config.use_state else "no"),
        ("normalisation", config.normalization_mode),
        ("actions", _action_kind(config)),
        ("loss weights λ_p / λ_v / λ_j",
         f"{config.loss_weight_position:g} / {config.loss_weight_velocity:g} / {config.loss_weight_jerk:g}"),
    ]
    lines = ["| setting | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)


def render_model_card(
    config: Any,
    repo_id: str = "<user>/<repo>",
    base_model: str | None = None,
    datasets: list[str] | None = None,
    license: str = "apache-2.0",
    extra_tags: list[str] | None = None,
    template: Path | None = None,
) -> str:
    """The model card (README.md) text: YAML metadata, usage snippet with trust_remote_code, head table."""
    tags = ["robotics", "vla", "niaf", "action-function", "siren"] + list(extra_tags or [])
    fields = {
        "repo_id": repo_id,
        "model_name": "NIAF policy" if repo_id == "<user>/<repo>" else repo_id.split("/")[-1],  # local save: no name yet
        "base_model_line": f"base_model: {base_model}" if base_model else "",
        "base_model": base_model or "a randomly initialised backbone",
        "datasets_block": ("datasets:\n" + "".join(f"- {d}\n" for d in datasets)).rstrip() if datasets else "",
        "license": license,
        "tags": json.dumps(tags),
        "tags_block": "tags:\n" + "\n".join(f"- {t}" for t in tags),
        "head_table": _head_table(config),
        "backbone_type": config.backbone_config.model_type,
        "num_points_4x": 4 * config.chunk_size,
        "chunk_size": config.chunk_size,
        "action_dim": config.action_dim,
    }
    template = template or find_card_template()
    if template is None:
        logger.warning("save_for_hub: hub_cards/%s not found; writing a minimal model card.", CARD_TEMPLATE_NAME)
        text = _FALLBACK_CARD
    else:
        text = Path(template).read_text(encoding="utf-8")
    for key, value in fields.items():
        text = text.replace("{" + key + "}", str(value))
    # Drop lines left empty by optional metadata in the YAML header.
    head, sep, body = text.partition("\n---\n")
    head = "\n".join(line for line in head.splitlines() if line.strip())
    return head + sep + body


def save_processor_for_hub(processor: Any, save_directory: str | os.PathLike) -> None:
    """Save a NiafProcessor and put its AutoProcessor ``auto_map`` into processor_config.json."""
    processor.save_pretrained(save_directory)
    path = Path(save_directory) / "processor_config.json"
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    data["auto_map"] = dict(PROCESSOR_AUTO_MAP)
    data["processor_class"] = type(processor).__name__
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def save_for_hub(
    model: Any,
    save_directory: str | os.PathLike,
    processor: Any = None,
    base_save: Callable[..., Any] | None = None,
    repo_id: str | None = None,
    base_model: str | None = None,
    datasets: list[str] | None = None,
    **save_kwargs: Any,
) -> None:
    """Write ``model`` (and ``processor``) as a complete Hub model repo into ``save_directory``.

    Args:
        model: a NIAF `PreTrainedModel`.
        save_directory: output folder (created).
        processor: optional [`NiafProcessor`]; its statistics must match the model's config.
        base_save: the plain `PreTrainedModel.save_pretrained` bound to ``model`` (weights + config); defaults
            to it. ``push_to_hub=True`` in ``save_kwargs`` uploads the folder afterwards, as transformers does.
        repo_id, base_model, datasets: model-card metadata (``base_model`` defaults to the backbone's
            ``_name_or_path`` when it is a Hub id).
    """
    save_directory = Path(save_directory)
    if save_directory.is_file():
        raise ValueError(f"save_for_hub: {save_directory} is a file, expected a folder.")
    if base_save is None:
        from transformers import PreTrainedModel

        def base_save(*a: Any, **k: Any) -> Any:
            return PreTrainedModel.save_pretrained(model, *a, **k)

    if processor is not None and hasattr(processor, "check_model_config"):
        processor.check_model_config(model.config)
    push = bool(save_kwargs.pop("push_to_hub", False))
    push_kwargs = {k: save_kwargs.pop(k) for k in ("commit_message", "private", "token", "create_pr") if k in save_kwargs}
    if push and repo_id is None:
        repo_id = save_kwargs.pop("repo_id", None) or save_directory.name
    save_directory.mkdir(parents=True, exist_ok=True)
    model.config.auto_map = dict(MODEL_AUTO_MAP)
    base_save(str(save_directory), **save_kwargs)
    for name, source in _code_sources(model, processor).items():
        shutil.copyfile(source, save_directory / name)
    if processor is not None:
        save_processor_for_hub(processor, save_directory)
    if base_model is None:
        name = getattr(model.config.backbone_config, "_name_or_path", "") or ""
        base_model = name if name.count("/") == 1 and not os.path.isdir(name) else None
    card = render_model_card(model.config, repo_id=repo_id or "<user>/<repo>", base_model=base_model, datasets=datasets)
    (save_directory / "README.md").write_text(card, encoding="utf-8")
    logger.info("Saved NIAF Hub repo to %s", save_directory)
    if push:
        from huggingface_hub import HfApi

        api = HfApi(token=push_kwargs.get("token"))
        api.create_repo(repo_id, private=push_kwargs.get("private"), exist_ok=True)
        api.upload_folder(
            repo_id=repo_id,
            folder_path=str(save_directory),
            commit_message=push_kwargs.get("commit_message", "Upload NIAF model"),
            create_pr=push_kwargs.get("create_pr", False),
        )


__all__ = [
    "CODE_FILES",
    "MODEL_AUTO_MAP",
    "PROCESSOR_AUTO_MAP",
    "find_card_template",
    "render_model_card",
    "save_for_hub",
    "save_processor_for_hub",
]
