"""The one place that knows the layout of a NIAF model repository on the Hugging Face Hub.

A saved NIAF checkpoint is a complete, self-contained transformers remote-code repo::

    config.json                 NiafConfig + auto_map (AutoConfig, AutoModel, AutoModelForActionFunction... see below);
                                the checkpoint's one copy of the normalisation statistics (``normalization_stats``)
    model.safetensors           backbone + queries + ψ heads + SIREN prior (sharded above the size limit)
    configuration_niaf.py       ┐
    modeling_niaf.py            │ remote code, flat siblings connected by single-dot relative imports
    siren.py                    │ (transformers' loader finds them with a regex; sub-packages and
    action_function.py          │  absolute imports of our own modules would break loading)
    numpy_function.py           │ (action_function.py imports it: the numpy twin and ActionTrajectory)
    backbones.py                │
    normalization.py            │
    processing_niaf.py          │
    hub.py                      ┘ this file (modeling_niaf.py imports it for save_pretrained)
    processor_config.json, tokenizer*.json, ...   when a NiafProcessor is saved alongside (without statistics:
                                the processor reads them from config.json when loaded)
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
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from transformers.utils import logging

logger = logging.get_logger(__name__)

CODE_FILES = (
    "configuration_niaf.py",
    "modeling_niaf.py",
    "siren.py",
    "keypoints.py",
    "action_function.py",
    "numpy_function.py",
    "backbones.py",
    "normalization.py",
    "processing_niaf.py",
    "hub.py",
)
"""Remote-code files copied flat into every checkpoint (the whitelist): every module of this package that the
remote code imports. ``runtime.py`` and ``__init__.py`` are not among them (the loaded model never imports them)."""

MODEL_AUTO_MAP = {
    "AutoConfig": "configuration_niaf.NiafConfig",
    "AutoModel": "modeling_niaf.NiafForActionFunction",
}
"""``auto_map`` of config.json. transformers has no Auto class for action prediction, so ``AutoModel`` points at
the full policy (with its head), not at the base ``NiafModel`` as transformers' own models do: every NIAF
checkpoint has loaded as the policy through ``AutoModel``. The base (backbone + queries → Z) is loaded by naming
it, ``NiafModel.from_pretrained``, which ships in the same ``modeling_niaf.py``."""

PROCESSOR_AUTO_MAP = {"AutoProcessor": "processing_niaf.NiafProcessor"}
"""``auto_map`` written into processor_config.json."""

CARD_TEMPLATE_NAME = "model_card.md"

_FALLBACK_CARD = """# {model_name}

NIAF policy (Neural Implicit Action Fields). Install `pip install {install_requirements}`, then load with
`AutoModel.from_pretrained("{repo_id}", trust_remote_code=True)`.
"""

CARD_TAGS = ("robotics", "vla", "niaf", "action-function", "siren")
"""Tags of every NIAF model card (the backbone family and caller's tags are added)."""


def code_sources(model: Any, processor: Any = None) -> dict[str, Path]:
    """Where each whitelisted file lives: next to the modeling module, the processor's module or the config class
    (``normalization.py`` sits next to ``configuration_niaf.py`` in the installed package).

    A model loaded with ``trust_remote_code`` has only the files its import chain pulled in next to it;
    ``processing_niaf.py`` then lives next to the processor class (if one is given) or is left out with a
    warning, since the repo needs it only together with processor files.
    """
    folders = [Path(inspect.getfile(type(model))).resolve().parent]
    if processor is not None:
        folders.append(Path(inspect.getfile(type(processor))).resolve().parent)
    config_file = Path(inspect.getfile(type(model.config))).resolve()
    folders.append(config_file.parent)
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
        return "as recorded in the training data (not made relative to the state)"
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
        ("robot-state token", (f"yes (dim {config.state_dim})" + (", also added to every query"
                                if getattr(config, "state_to_queries", False) else "")) if config.use_state else "no"),
        ("normalisation", config.normalization_mode),
        ("actions", _action_kind(config)),
        ("loss weights λ_p / λ_v / λ_j",
         f"{config.loss_weight_position:g} / {config.loss_weight_velocity:g} / {config.loss_weight_jerk:g}"),
    ]
    lines = ["| setting | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)


def _min_transformers(config: Any) -> str:
    """`MIN_TRANSFORMERS_VERSION` of the configuration module the config comes from (installed or Hub copy)."""
    module = inspect.getmodule(type(config))
    return getattr(module, "MIN_TRANSFORMERS_VERSION", None) or "5.5.0"


def install_requirements(config: Any) -> str:
    """The pip requirements a bare Python needs to run the remote code and processor of this checkpoint."""
    return f"torch \"transformers>={_min_transformers(config)}\" pillow"


def held_out_eval_results(
    metrics: Mapping[str, float], dataset_type: str, dataset_name: str, dataset_revision: str | None = None
) -> list[Any]:
    """`huggingface_hub.EvalResult` entries (model-index) for metrics on held-out episodes.

    Args:
        metrics: ``{metric: value}`` as niaf-train's ``metrics.json`` (``position_mse``, ``velocity_mse``,
            ``baseline_position_mse``, ...); counts such as ``num_chunks`` are left out.
        dataset_type: the Hub dataset id, or the data source name for local data (e.g. ``metaworld``).
        dataset_name: a readable name of the data.
    """
    from huggingface_hub import EvalResult

    return [
        EvalResult(
            task_type="robotics", task_name="action chunk prediction (held-out episodes)",
            dataset_type=dataset_type, dataset_name=dataset_name, dataset_split="held-out episodes",
            dataset_revision=dataset_revision, metric_type=name, metric_name=name, metric_value=float(value),
        )
        for name, value in metrics.items()
        if not name.startswith("num_") and isinstance(value, (int, float))
    ]


def closed_loop_eval_results(results: Mapping[str, Any], benchmark: str) -> list[Any]:
    """`huggingface_hub.EvalResult` entries (model-index) for closed-loop success rates.

    Args:
        results: the parsed ``results.json`` / ``eval_results.json`` of a closed-loop evaluation: per-task
            ``{"success_rate": float in [0, 1], ...}`` either under ``"tasks"`` (as niaf-eval writes it, with
            the mean over tasks as ``"mean_success"`` or ``"success_rate"`` next to it; other keys such as the
            settings are ignored) or as the top-level mapping ``{task: {...}}``.
        benchmark: the environment suite, e.g. ``metaworld`` (the model-index ``dataset.type``).

    Raises:
        ValueError: naming the task whose entry has no ``success_rate`` in [0, 1].
    """
    from huggingface_hub import EvalResult

    tasks = results.get("tasks", results) if isinstance(results, Mapping) else None
    if not isinstance(tasks, Mapping) or not tasks:
        raise ValueError(
            "closed-loop results: expected {'tasks': {task: {'success_rate': x}}} or {task: {'success_rate': x}}, "
            f"got {type(results).__name__}"
        )
    entries = []
    for task, entry in tasks.items():
        rate = entry.get("success_rate") if isinstance(entry, Mapping) else None
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= float(rate) <= 1.0:
            raise ValueError(f"closed-loop results: task {task!r} needs a 'success_rate' in [0, 1], got {entry!r}")
        entries.append(EvalResult(
            task_type="robotics", task_name="closed-loop task success", dataset_type=benchmark,
            dataset_name=f"{benchmark} {task}", dataset_config=str(task), metric_type="success_rate",
            metric_name=f"success rate ({task})", metric_value=float(rate),
        ))
    overall = results.get("mean_success", results.get("success_rate")) if "tasks" in results else None
    if isinstance(overall, (int, float)) and not isinstance(overall, bool) and 0.0 <= float(overall) <= 1.0:
        entries.append(EvalResult(
            task_type="robotics", task_name="closed-loop task success", dataset_type=benchmark,
            dataset_name=f"{benchmark} (all tasks)", metric_type="success_rate", metric_name="success rate (mean)",
            metric_value=float(overall),
        ))
    return entries


def build_card_data(
    config: Any,
    model_name: str,
    base_model: str | None = None,
    datasets: list[str] | None = None,
    license: str = "apache-2.0",
    extra_tags: list[str] | None = None,
    eval_results: list[Any] | None = None,
) -> Any:
    """The card's YAML metadata as a `huggingface_hub.ModelCardData` (model-index from ``eval_results``)."""
    from huggingface_hub import ModelCardData

    tags = list(dict.fromkeys([*CARD_TAGS, config.backbone_config.model_type, *(extra_tags or [])]))
    return ModelCardData(
        library_name="transformers", pipeline_tag="robotics", license=license, base_model=base_model or None,
        datasets=list(datasets) if datasets else None, tags=tags, model_name=model_name,
        eval_results=list(eval_results) if eval_results else None,
    )


def render_model_card(
    config: Any,
    repo_id: str = "<user>/<repo>",
    base_model: str | None = None,
    datasets: list[str] | None = None,
    license: str = "apache-2.0",
    extra_tags: list[str] | None = None,
    template: Path | None = None,
    eval_results: list[Any] | None = None,
) -> str:
    """The model card (README.md) text: `ModelCardData` metadata, then usage snippet and head table.

    Args:
        config: the model's NiafConfig.
        repo_id: Hub id used in the usage snippet (``<user>/<repo>`` for a local save).
        base_model: the backbone's Hub id when the backbone started from pretrained weights.
        datasets: Hub dataset ids the model was trained on.
        eval_results: `held_out_eval_results` / `closed_loop_eval_results` entries for the model-index.
    """
    from huggingface_hub import ModelCard

    local = repo_id == "<user>/<repo>"
    model_name = "NIAF policy" if local else repo_id.split("/")[-1]  # local save: no name yet
    fields = {
        "repo_id": repo_id,
        "model_name": model_name,
        "base_model": f"[{base_model}](https://huggingface.co/{base_model})" if base_model else
                      "a randomly initialised backbone",
        "install_requirements": install_requirements(config),
        "min_transformers": _min_transformers(config),
        "head_table": _head_table(config),
        "backbone_type": config.backbone_config.model_type,
        "num_points_4x": 4 * config.chunk_size,
        "chunk_size": config.chunk_size,
        "action_dim": config.action_dim,
        "state_argument": (f", state=robot_state  # [1, {config.state_dim}]: the model reads the robot state"
                           if config.use_state else ""),
    }
    template = template or find_card_template()
    if template is None:
        logger.warning("save_for_hub: hub_cards/%s not found; writing a minimal model card.", CARD_TEMPLATE_NAME)
        body = _FALLBACK_CARD
    else:
        body = Path(template).read_text(encoding="utf-8")
    for key, value in fields.items():
        body = body.replace("{" + key + "}", str(value))
    data = build_card_data(config, model_name, base_model, datasets, license, extra_tags, eval_results)
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body.lstrip()}"))


def add_eval_results(folder: str | os.PathLike, eval_results: list[Any]) -> None:
    """Add model-index entries to the card (README.md) of a saved checkpoint, e.g. after a closed-loop run.

    Entries with the same task, dataset, config and metric as an existing one replace it.
    """
    from huggingface_hub import ModelCard

    path = Path(folder) / "README.md"
    if not path.is_file():
        raise FileNotFoundError(f"add_eval_results: {path} does not exist (save the checkpoint first)")
    card = ModelCard.load(path)

    def key(r: Any) -> tuple:
        return (r.task_type, r.dataset_type, r.dataset_config, r.dataset_split, r.metric_type, r.metric_name)

    new = {key(r) for r in eval_results}
    kept = [r for r in (card.data.eval_results or []) if key(r) not in new]
    card.data.eval_results = kept + list(eval_results)
    if not card.data.model_name:
        card.data.model_name = Path(folder).resolve().name
    path.write_text(str(card), encoding="utf-8")


def save_processor_for_hub(processor: Any, save_directory: str | os.PathLike) -> None:
    """Save a NiafProcessor next to its model: ``auto_map`` in processor_config.json, and no statistics there.

    The statistics are stored once, in the model's config.json; `NiafProcessor.from_pretrained` reads them
    from there, so the two cannot disagree and nothing has to compare them.
    """
    processor.save_pretrained(save_directory)
    path = Path(save_directory) / "processor_config.json"
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    data.pop("normalization_stats", None)
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
    eval_results: list[Any] | None = None,
    **save_kwargs: Any,
) -> None:
    """Write ``model`` (and ``processor``) as a complete Hub model repo into ``save_directory``.

    Args:
        model: a NIAF `PreTrainedModel`.
        save_directory: output folder (created).
        processor: optional [`NiafProcessor`] for the same shapes and mode (`check_model_config`); it is saved
            without statistics, since the model's config.json holds the checkpoint's one copy.
        base_save: the plain `PreTrainedModel.save_pretrained` bound to ``model`` (weights + config); defaults
            to it. ``push_to_hub=True`` in ``save_kwargs`` uploads the folder afterwards, as transformers does.
        repo_id, base_model, datasets, eval_results: model-card metadata (`render_model_card`; ``base_model``
            defaults to the backbone's ``_name_or_path`` when it is a Hub id).
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
        if getattr(processor, "normalization_stats", None) and not model.config.normalization_stats:
            raise ValueError(
                "save_for_hub: the processor has normalisation statistics but the model's config has none; a checkpoint "
                "stores them once, in config.json: set model.config.normalization_stats = processor.normalization_stats."
            )
    push = bool(save_kwargs.pop("push_to_hub", False))
    push_kwargs = {k: save_kwargs.pop(k) for k in ("commit_message", "private", "token", "create_pr") if k in save_kwargs}
    if push and repo_id is None:
        repo_id = save_kwargs.pop("repo_id", None) or save_directory.name
    save_directory.mkdir(parents=True, exist_ok=True)
    model.config.auto_map = dict(MODEL_AUTO_MAP)
    base_save(str(save_directory), **save_kwargs)
    for name, source in code_sources(model, processor).items():
        shutil.copyfile(source, save_directory / name)
    if processor is not None:
        save_processor_for_hub(processor, save_directory)
    if base_model is None:
        name = getattr(model.config.backbone_config, "_name_or_path", "") or ""
        base_model = name if name.count("/") == 1 and not os.path.isdir(name) else None
    card = render_model_card(model.config, repo_id=repo_id or "<user>/<repo>", base_model=base_model, datasets=datasets,
                             eval_results=eval_results)
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


SAFETENSORS_MAX_HEADER = 100_000_000
"""The largest header the safetensors format allows (bytes); a larger claim is a damaged file."""


def check_weight_files(folder: str | os.PathLike) -> None:
    """Refuse a local checkpoint whose ``*.safetensors`` files are truncated or damaged, in one line naming the
    file and what was expected, before transformers reads them (its error names neither).

    Checked per file: the 8-byte header length (at most :data:`SAFETENSORS_MAX_HEADER` and within the file),
    the header (a JSON object) and every tensor's data range (within the file).
    """
    root = Path(folder)
    if not root.is_dir():
        return
    for path in sorted(root.glob("*.safetensors")):
        size = path.stat().st_size
        expected = "a safetensors file (8-byte header length, JSON header, tensor data)"
        try:
            with open(path, "rb") as fh:
                head = fh.read(8)
                n = int.from_bytes(head, "little") if len(head) == 8 else -1
                if n < 0 or n > SAFETENSORS_MAX_HEADER or 8 + n > size:
                    raise ValueError(f"{path}: truncated or damaged ({size} bytes; its header claims "
                                     f"{max(n, 0)} bytes, at most {SAFETENSORS_MAX_HEADER}); expected {expected}")
                header = json.loads(fh.read(n))
            ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, IndexError, AttributeError) as err:
            raise ValueError(f"{path}: damaged header ({type(err).__name__}); expected {expected}") from None
        if 8 + n + max(ends, default=0) > size:
            raise ValueError(f"{path}: truncated ({size} bytes, its tensors need {8 + n + max(ends)}); expected "
                             f"{expected}")


__all__ = [
    "check_weight_files",
    "CARD_TAGS",
    "CODE_FILES",
    "MODEL_AUTO_MAP",
    "PROCESSOR_AUTO_MAP",
    "add_eval_results",
    "build_card_data",
    "closed_loop_eval_results",
    "find_card_template",
    "held_out_eval_results",
    "install_requirements",
    "render_model_card",
    "save_for_hub",
    "save_processor_for_hub",
]
