"""Typed configuration of ``niaf-train``: four dataclass sections, filled from a YAML file and ``--key value``.

A configuration file has the sections ``model``, ``data``, ``training`` and ``peft`` (all optional); a
command-line override names a key either fully (``--data.path DIR``, ``--training.learning_rate 1e-4``) or,
when the name is unique across sections, bare (``--output_dir out``, ``--max_steps 100``). Every key is
checked against the dataclass fields: an unknown key or a value of the wrong type is an error that names the
key and the file, raised before anything is built.

The ``model`` section is not written here key by key: :class:`ModelOptions` is the backbone options, every
argument of ``NiafConfig.__init__`` that the dataset does not decide (:class:`NiafConfigOptions`, names, types,
defaults and descriptions derived from `NiafConfig` itself; an argument added there is a key here) and the
comparison heads' options (defaults and choices from ``niaf_train.baselines``).

The parser is this module's own rather than ``transformers.HfArgumentParser`` or draccus (LeRobot's): the former
has flat keys (no ``--model.x``; a name in two sections collides) and takes YAML and command line separately;
draccus is a further dependency without the bare ``--max_steps`` form; and neither shows, in ``--help``, the value
each key has under the chosen config file next to the value without one.

Defaults follow the paper's fine-tuning recipe (arXiv 2603.01766): AdamW, lr 2e-5, betas (0.9, 0.95), weight decay 0, a
tri-stage schedule (linear warm-up, constant hold, exponential-style decay), bf16 autocast for the backbone with
the SIREN head in float32.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import re
import textwrap
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from configuration_niaf import NiafConfig
from configuration_niaf.normalization import NORMALIZATION_MODES

from ..baselines.functions import INTERPOLATIONS
from ..baselines.modeling_baselines import ACTION_HEADS, HEAD_DEFAULTS, WAYPOINT_LOSSES
from ..data.metaworld import (
    CAMERA_VIEWS,
    INSTRUCTION_SETS,
    camera_crops,
    check_camera_view,
    check_instructions,
)
from ..data.sources import SOURCES

DATA_SOURCES = tuple(SOURCES)  # the registry niaf-data reads too


NIAF_CONFIG_SET_BY_TRAINER = ("backbone_config", "action_dim", "control_hz", "state_dim", "num_cameras",
                              "normalization_stats")
"""`NiafConfig` arguments niaf-train sets from the backbone and the dataset; every other argument of
``NiafConfig.__init__`` is a key of the ``model`` section (:class:`NiafConfigOptions`)."""

TRAINING_DEFAULTS: dict[str, Any] = {"loss_weight_velocity": 0.0, "unnormalized_action_dims": []}
"""The ``model`` keys whose niaf-train default differs from `NiafConfig`'s. niaf-train has always trained the
position loss alone unless asked (NiafConfig's λ_v = 1.0 serves a config built by hand): changing it would change
what every config file without the key trains. ``[]`` and NiafConfig's None both mean "no dims"; ``[]`` is what
the ``run_config.json`` of existing runs holds, which ``--resume`` compares."""

TRAINING_NOTES: dict[str, str] = {
    "chunk_size": "niaf-train: the chunk points are source frames ``data.chunk_stride`` apart.",
    "state_to_queries": "niaf-train: ignored without ``use_state``; on in the Meta-World configs, off by default so "
                        "that other configs train the model they always trained.",
    "loss_weight_velocity": "niaf-train reads the dataset's velocity labels only when this is > 0; its default is "
                            "0.0 (NiafConfig's own: 1.0).",
}
"""What niaf-train adds to a `NiafConfig` argument's description (how it sets or uses it)."""

MODEL_CONSTANT_CHOICES: dict[str, tuple[str, ...]] = {"normalization_mode": NORMALIZATION_MODES}
"""Allowed values of `NiafConfig`'s string arguments, from the model's own constants."""


def config_argument_docs(config_class: type) -> dict[str, str]:
    """The ``Args:`` entries of a transformers-style config docstring, name → description on one line.

    An entry is ``name (`type`, defaults to x): text`` with its continuation lines indented deeper; the type and
    default in parentheses are dropped (niaf-train shows its own).
    """
    doc = inspect.cleandoc(config_class.__doc__ or "")
    if "\nArgs:" not in doc:
        return {}
    docs: dict[str, list[str]] = {}
    current = None
    for line in doc.split("\nArgs:", 1)[1].splitlines():
        entry = re.match(r"^ {4}(\w+) \((.+?)\):(.*)$", line)
        if entry:
            current = entry[1]
            docs[current] = [entry[3].strip()]
        elif current is not None and line.startswith(" " * 8):
            docs[current].append(line.strip())
        elif line.strip():  # the next section (Example:, ...) ends the arguments
            break
    return {name: " ".join(" ".join(parts).split()) for name, parts in docs.items()}


def _list_item(annotation: Any) -> Any:
    """The item type of a ``list[...]`` annotation (also as ``list[...] | None``); None for any other type."""
    options = (typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType)
               else (annotation,))
    for option in options:
        if typing.get_origin(option) is list:
            return typing.get_args(option)[0]
    return None


def config_options(config_class: type = NiafConfig) -> type:
    """A dataclass of a config class's arguments less :data:`NIAF_CONFIG_SET_BY_TRAINER`: the names, types and
    defaults of its ``__init__`` (defaults replaced by :data:`TRAINING_DEFAULTS`), the descriptions of its
    docstring's ``Args:`` (plus :data:`TRAINING_NOTES`) as ``__field_docs__``. Built from `NiafConfig`, it is
    :class:`NiafConfigOptions`: a new NiafConfig argument is a ``model`` key without further edits."""
    hints = typing.get_type_hints(config_class.__init__)
    docs = config_argument_docs(config_class)
    fields, field_doc = [], {}
    for name, param in inspect.signature(config_class.__init__).parameters.items():
        if name == "self" or param.kind is param.VAR_KEYWORD or name in NIAF_CONFIG_SET_BY_TRAINER:
            continue
        if param.default is param.empty:
            raise TypeError(f"{config_class.__name__} argument `{name}` has no default; niaf-train needs one")
        default = TRAINING_DEFAULTS.get(name, param.default)
        spec = (field(default_factory=lambda value=default: list(value)) if isinstance(default, list)
                else field(default=default))
        fields.append((name, hints[name], spec))
        text = docs.get(name, "")
        text = text[:1].upper() + text[1:] if text[:1].isascii() else text  # "feed ..." → "Feed ...", "λ_v" stays
        item = _list_item(hints[name])
        if item is not None:
            example = "0,1,null" if type(None) in typing.get_args(item) else "0,1"
            text += f" Command line: comma-separated, e.g. ``--model.{name} {example}``."
        field_doc[name] = " ".join(filter(None, (text, TRAINING_NOTES.get(name))))
    options = dataclasses.make_dataclass(f"{config_class.__name__}Options", fields)
    options.__module__ = __name__
    options.__doc__ = f"The arguments of {config_class.__name__} that a configuration sets (derived from it)."
    options.__field_docs__ = field_doc
    return options


NiafConfigOptions = config_options(NiafConfig)


@dataclass
class BackboneOptions:
    """Which backbone, and how its inputs are framed (the processor)."""

    backbone: str = "tiny"
    """"tiny" (a random PaliGemma-architecture backbone built in code), a Hub id / folder of a
    transformers vision-language model (e.g. ``microsoft/Florence-2-large``), or a NIAF checkpoint folder
    (``init_from_niaf: true``)."""
    init_from_niaf: bool = False
    """Treat ``backbone`` as a complete NIAF checkpoint to continue fine-tuning (its processor is reused)."""
    tiny_hidden_size: int = 32
    """Tiny backbone: hidden size of the language and vision towers."""
    tiny_num_layers: int = 2
    """Tiny backbone: transformer layers of the language model."""
    tiny_image_size: int = 32
    """Tiny backbone: input image side in pixels (images are resized to it)."""
    tiny_patch_size: int = 8
    """Tiny backbone: vision patch side in pixels ((image/patch)² image tokens per camera)."""
    tiny_vision_positions: str = "learned"
    """Tiny backbone: patch positions of the vision tower, "learned" (trained embeddings, SigLIP's own) or
    "sincos" (a fixed 2-D sine-cosine table, not trained: positions generalise to where no demonstration put
    an object)."""
    prompt_template: str = "what action should the robot take to {instruction} ?"
    """Text prompt around the task instruction; ``{instruction}`` is replaced by the episode's task."""
    image_seq_length: int | None = None
    """Placeholder tokens per image for fixed-size backbones (Florence-2-large: 577); None: derived."""
    image_token: str | None = None
    """The backbone's image placeholder token; None: family default."""
    torch_dtype: str = "float32"
    """Storage dtype of the backbone weights when loaded from a pretrained model (float32 / bfloat16)."""


@dataclass
class ComparisonHeadOptions:
    """The head on the query outputs: NIAF's, or a comparison head (``niaf_train.baselines``)."""

    action_head: str = "niaf"
    """What turns the query outputs into actions: niaf (the modulated SIREN), or a comparison head on the same
    backbone, queries and data (``niaf_train.baselines``): waypoints (OFT-style parallel decoding), bspline
    (BEAST-CT-style control points of a clamped cubic B-spline), flow (π0-style flow matching, Euler steps)."""
    head_hidden_size: int = HEAD_DEFAULTS["head_hidden_size"]
    """Comparison heads: width of their MLP (the flow head's action network too)."""
    bspline_control_points: int = HEAD_DEFAULTS["bspline_control_points"]
    """bspline head: M control points per action dim (>= 4 for a cubic)."""
    waypoint_loss: str = HEAD_DEFAULTS["waypoint_loss"]
    """waypoints head: l1 (as OpenVLA-OFT) or l2 regression of the K waypoints."""
    chunk_interpolation: str = HEAD_DEFAULTS["chunk_interpolation"]
    """waypoints and flow heads: how their K waypoints are executed as a function of time (zoh or linear)."""
    flow_steps: int = HEAD_DEFAULTS["flow_steps"]
    """flow head: Euler steps at inference (π0: 10)."""


@dataclass
class ModelOptions(ComparisonHeadOptions, NiafConfigOptions, BackboneOptions):
    """What model is trained."""

    def niaf_config_kwargs(self) -> dict[str, Any]:
        """This section's `NiafConfig` arguments (every field of :class:`NiafConfigOptions`), by name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(NiafConfigOptions)}


@dataclass
class DataOptions:
    """Where the demonstrations come from and how they are chunked and split."""

    source: str = "metaworld"
    """One of metaworld (generated and cached), lerobot (v3.0 folder), libero (HDF5), libero_lerobot, calvin."""
    path: str | None = None
    """Dataset folder, or a Hub dataset id ``user/name[@revision]`` fetched into the Hub cache (lerobot / libero /
    libero_lerobot / calvin); for metaworld, where the generated LeRobot dataset is cached (default
    ``<cache_dir>/metaworld-<settings hash>``)."""
    cache_dir: str | None = None
    """Cache of chunk datasets and generated demonstrations (default ``~/.cache/niaf``)."""
    cameras: list[str] | None = None
    """Camera features to use, in order (LeRobot keys such as ``observation.images.top``); None: all."""
    chunk_stride: int = 1
    """Source frames between chunk points; the chunk control rate is fps / chunk_stride."""
    sample_every: int = 1
    """Source frames between consecutive training samples."""
    velocity: str = "auto"
    """LeRobot velocity labels: auto (use observation.velocity when present), require, none, or difference
    (finite differences of the actions at the source rate, for data without velocity labels)."""
    dense_every: int = 0
    """Dense supervision: keep every d-th source frame between chunk points as extra targets at the τ between
    them (d must divide ``chunk_stride``; 0: off). NIAF and the B-spline head are trained on them (positions,
    and velocities with ``loss_weight_velocity``); waypoint and flow heads output the K points only."""
    val_fraction: float = 0.1
    """Fraction of episodes held out for evaluation (at least one episode when > 0)."""
    max_val_samples: int = 256
    """Evaluation uses at most this many held-out chunks (evenly spaced)."""
    metaworld_tasks: list[str] = field(default_factory=lambda: ["reach-v3", "push-v3"])
    """Meta-World MT1 tasks to generate scripted-expert demonstrations for (comma-separated)."""
    metaworld_episodes_per_task: int = 30
    """Demonstrations generated per Meta-World task."""
    metaworld_image_size: int = 32
    """Rendered Meta-World image side in pixels."""
    metaworld_camera: list[str] = field(default_factory=lambda: ["corner2"])
    """Meta-World camera(s) to render, in order, comma-separated (e.g. corner2, topview, gripperPOV)."""
    metaworld_crop: list[float] | None = None
    """Box of each upright camera image the policy sees, as fractions (top, left, height, width), resized to
    metaworld_image_size: 4 values (every camera) or 4 per camera; None: the whole image."""
    metaworld_camera_view: str = "niaf"
    """How the Meta-World camera is placed and rendered: niaf (the model's camera poses, fast renderer) or lerobot
    (LeRobot's Meta-World view, as lerobot-eval --env.type=metaworld renders it: corner2 only, no crop, rendered
    480 px and area-averaged to metaworld_image_size)."""
    metaworld_instructions: str = "niaf"
    """The Meta-World episodes' instructions: niaf (niaf's sentences, e.g. "push the puck to the goal") or lerobot
    (the task strings lerobot-eval --env.type=metaworld gives the policy, e.g. "Push the puck to a goal")."""
    metaworld_state: str = "full"
    """Meta-World observation.state: full (39-d, with object and goal positions) or agent_pos (hand position and
    gripper, 4-d, what a robot measures: the goal must come from the images)."""
    metaworld_stride: int = 4
    """Record every n-th Meta-World step (80 Hz / n)."""
    metaworld_seed: int = 0
    """Seed of the Meta-World goal positions and expert noise."""
    metaworld_action_noise: float = 0.0
    """σ of Gaussian noise added to the actions the Meta-World expert executes (the recorded labels stay
    noise-free), so that the demonstrations show recoveries from small deviations."""
    num_workers: int = 0
    """DataLoader worker processes (0: load in the training process)."""


@dataclass
class TrainingOptions:
    """How it is trained, saved and evaluated."""

    output_dir: str = "outputs/niaf-train"
    """Run folder: checkpoints, logs, ``final/`` (the trained model in Hub layout)."""
    overwrite_output_dir: bool = False
    """Allow an output folder that holds another run (its checkpoints are deleted first)."""
    resume: bool = False
    """Continue from the last complete checkpoint in ``output_dir``."""
    max_steps: int = 300
    """Optimiser steps."""
    per_device_batch_size: int = 16
    """Chunks per batch on each process."""
    gradient_accumulation_steps: int = 1
    """Micro-batches summed before each optimiser step."""
    learning_rate: float = 2e-5
    """Peak AdamW learning rate of the backbone (and of the head unless ``head_learning_rate``)."""
    head_learning_rate: float | None = None
    """Learning rate of the queries, ψ heads, state projection and SIREN; None: ``learning_rate``."""
    adam_beta1: float = 0.9
    """AdamW β₁."""
    adam_beta2: float = 0.95
    """AdamW β₂."""
    adam_epsilon: float = 1e-8
    """AdamW ε."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay."""
    lr_scheduler: str = "tri_stage"
    """tri_stage (warm-up, hold, decay to ``final_lr_scale``), cosine, linear or constant."""
    warmup_ratio: float = 0.05
    """Fraction of the steps spent in the linear warm-up."""
    decay_ratio: float = 0.25
    """Tri-stage: fraction of the steps spent in the final decay."""
    final_lr_scale: float = 0.05
    """Learning rate at the end of the decay, as a fraction of the peak."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this value (0: no clipping)."""
    mixed_precision: str = "no"
    """no, bf16 or fp16: autocast for the backbone; the SIREN head and losses always run in float32."""
    gradient_checkpointing: bool = False
    """Recompute backbone activations in the backward pass (less memory, ~30% slower)."""
    seed: int = 0
    """Seed of initialisation, episode split and sampling order."""
    save_steps: int = 0
    """Checkpoint every N steps (0: only at the end)."""
    save_total_limit: int = 2
    """Keep this many step checkpoints (the final model is always kept)."""
    eval_steps: int = 0
    """Evaluate on held-out episodes every N steps (0: only at the end)."""
    logging_steps: int = 10
    """Log a line (losses, lr, grad norm, throughput) and the trackers every N steps."""
    report_to: str = "tensorboard"
    """tensorboard, trackio or none."""
    eval_num_points: int = 0
    """Dense query points per chunk for the smoothness metrics (0: 4·(K-1)+1, i.e. 4× the training rate)."""
    push_to_hub: bool = False
    """Upload ``final/`` to ``hub_model_id`` at the end (needs a token)."""
    hub_model_id: str | None = None
    """Hub repository of the trained model, e.g. ``user/niaf-metaworld`` (also names the model card)."""
    hub_private: bool = False
    """Create the Hub repository as private."""
    record_sample_ids: bool = False
    """Write the dataset rows each process trained on to ``output_dir/samples_rank<r>.txt`` and each process's
    final weights to ``weights_rank<r>.safetensors`` (for tests of data sharding and DDP synchronisation)."""
    ddp_find_unused_parameters: bool = True
    """DDP: tolerate backbone parameters that get no gradient (SigLIP pooling head, unused vision layers)."""
    image_shift: int = 0
    """Random-shift augmentation of training images: pad by this many pixels (edges repeated) and crop back at
    a random offset (0: off). Held-out evaluation sees the images as they are."""
    num_threads: int = 0
    """torch intra-op threads per process (0: leave torch's default)."""


@dataclass
class PeftOptions:
    """Parameter-efficient fine-tuning of the backbone (the NIAF head is always trained in full)."""

    method: str = "none"
    """none (full fine-tuning of everything) or lora."""
    r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA scaling α (the update is scaled by α/r)."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA input."""
    target_modules: list[str] | None = None
    """Module names (or one regex) inside the backbone; None: the family default (peft_utils)."""
    save_merged: bool = True
    """Final model: LoRA merged into the weights (True) or a PEFT adapter folder next to it (False)."""
    freeze_backbone: bool = False
    """With method none: train only the NIAF head (queries, ψ heads, SIREN)."""


@dataclass
class FinetuneConfig:
    model: ModelOptions = field(default_factory=ModelOptions)
    data: DataOptions = field(default_factory=DataOptions)
    training: TrainingOptions = field(default_factory=TrainingOptions)
    peft: PeftOptions = field(default_factory=PeftOptions)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)


SECTIONS: dict[str, type] = {
    "model": ModelOptions, "data": DataOptions, "training": TrainingOptions, "peft": PeftOptions,
}


class ConfigError(ValueError):
    """A bad configuration key or value; the message names the key and its origin."""


def _coerce(value: Any, annotation: Any, key: str, origin: str) -> Any:
    """Convert ``value`` (from YAML or a command-line string) to the field type ``annotation``."""
    hints = annotation
    options = typing.get_args(hints) if typing.get_origin(hints) in (typing.Union, types.UnionType) else (hints,)
    optional = type(None) in options
    options = tuple(o for o in options if o is not type(None))
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and optional):
        if optional:
            return None
        raise ConfigError(f"{origin}: `{key}` may not be null")
    target = options[0]
    base = typing.get_origin(target) or target
    try:
        if base is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
                return value.lower() in ("true", "1", "yes")
            raise ValueError
        if base is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if base is float:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
            if not math.isfinite(number):  # a NaN learning rate passes every `<= 0` check and trains garbage
                raise ConfigError(f"{origin}: `{key}` must be a finite number, got {value!r}")
            return number
        if base is str:
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise ValueError
            return str(value)
        if base is list:
            (item,) = typing.get_args(target) or (str,)
            if isinstance(value, str):
                value = [v for v in (p.strip() for p in value.split(",")) if v]
            if not isinstance(value, (list, tuple)):
                raise ValueError
            return [_coerce(v, item, key, origin) for v in value]
    except ConfigError:
        raise
    except (TypeError, ValueError):
        raise ConfigError(f"{origin}: `{key}` must be {_type_name(annotation)}, got {value!r}") from None
    raise ConfigError(f"{origin}: `{key}` has an unsupported type {annotation}")


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _fields(section: str) -> dict[str, Any]:
    cls = SECTIONS[section]
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _locate(key: str, origin: str) -> tuple[str, str]:
    """``section.name`` or a bare ``name`` unique across sections → (section, name)."""
    key = key.replace("-", "_")
    if "." in key:
        section, name = key.split(".", 1)
        if section not in SECTIONS:
            raise ConfigError(f"{origin}: unknown section {section!r} in `{key}`; sections are {sorted(SECTIONS)}")
        if name not in _fields(section):
            raise ConfigError(f"{origin}: unknown key `{key}`; `{section}` has {sorted(_fields(section))}")
        return section, name
    owners = [s for s in SECTIONS if key in _fields(s)]
    if not owners:
        raise ConfigError(f"{origin}: unknown key `{key}` (run niaf-train --help for the keys)")
    if len(owners) > 1:
        raise ConfigError(f"{origin}: `{key}` is ambiguous; write one of {[f'{s}.{key}' for s in owners]}")
    return owners[0], key


def build_config(yaml_data: dict[str, Any] | None, overrides: list[str], origin: str = "<config>") -> FinetuneConfig:
    """A :class:`FinetuneConfig` from parsed YAML (``{section: {key: value}}``) and ``--key value`` tokens."""
    values: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    for section, body in (yaml_data or {}).items():
        if section not in SECTIONS:
            raise ConfigError(f"{origin}: unknown section {section!r}; expected {sorted(SECTIONS)}")
        if body is None:
            continue
        if not isinstance(body, dict):
            raise ConfigError(f"{origin}: section `{section}` must be a mapping, got {type(body).__name__}")
        for key, value in body.items():
            sec, name = _locate(f"{section}.{key}", origin)
            values[sec][name] = _coerce(value, _fields(sec)[name], f"{sec}.{name}", origin)
    i = 0
    while i < len(overrides):
        token = overrides[i]
        if not token.startswith("--"):
            raise ConfigError(f"command line: expected `--key value`, got {token!r}")
        key, eq, inline = token[2:].partition("=")
        if eq:
            raw, i = inline, i + 1
        elif i + 1 < len(overrides) and not overrides[i + 1].startswith("--"):
            raw, i = overrides[i + 1], i + 2
        else:
            raw, i = "true", i + 1  # a bare flag: --resume
        sec, name = _locate(key, "command line")
        values[sec][name] = _coerce(raw, _fields(sec)[name], f"{sec}.{name}", "command line")
    cfg = FinetuneConfig(**{s: SECTIONS[s](**values[s]) for s in SECTIONS})
    validate_config(cfg)
    return cfg


def load_config(path: str | None, overrides: list[str]) -> FinetuneConfig:
    """Read a YAML file (or none: the embedded defaults) and apply command-line overrides."""
    data: dict[str, Any] | None = None
    origin = "<defaults>"
    if path is not None:
        import yaml  # optional dependency: pyyaml

        file = Path(path)
        if not file.is_file():
            packaged = resources.files("niaf_train") / "configs" / path
            if not packaged.is_file():
                raise ConfigError(f"config file {path} not found (nor as a packaged config in niaf_train/configs)")
            text, origin = packaged.read_text(encoding="utf-8"), f"niaf_train/configs/{path}"
        else:
            text, origin = file.read_text(encoding="utf-8"), str(file)
        data = yaml.safe_load(text) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{origin}: expected a mapping of sections, got {type(data).__name__}")
    return build_config(data, overrides, origin)


CHOICES: dict[str, tuple[str, ...]] = {
    "data.source": DATA_SOURCES,
    "data.velocity": ("auto", "require", "none", "difference"),
    "training.mixed_precision": ("no", "bf16", "fp16"),
    "training.lr_scheduler": ("tri_stage", "cosine", "linear", "constant"),
    "training.report_to": ("tensorboard", "trackio", "none"),
    "peft.method": ("none", "lora"),
    **{f"model.{name}": options for name, options in MODEL_CONSTANT_CHOICES.items()},
    "model.torch_dtype": ("float32", "bfloat16", "float16"),
    "model.action_head": ACTION_HEADS,
    "model.waypoint_loss": WAYPOINT_LOSSES,
    "model.chunk_interpolation": INTERPOLATIONS,
    "model.tiny_vision_positions": ("learned", "sincos"),
    "data.metaworld_state": ("full", "agent_pos"),
    "data.metaworld_camera_view": CAMERA_VIEWS,
    "data.metaworld_instructions": INSTRUCTION_SETS,
}
"""Allowed values of the keys that take one of a fixed set of strings (checked and shown by ``--help``)."""


def validate_config(cfg: FinetuneConfig) -> None:
    """Value checks that need no data or model (raised before any work starts)."""
    t, d, p, m = cfg.training, cfg.data, cfg.peft, cfg.model
    for key, options in CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value not in options:
            raise ConfigError(f"`{key}` must be one of {options}, got {value!r}")
    if d.source != "metaworld" and not d.path:
        raise ConfigError(f"`data.path` is required for data.source={d.source!r}")
    if d.metaworld_crop is not None:
        try:
            camera_crops(d.metaworld_crop, d.metaworld_camera)
        except ValueError as err:
            raise ConfigError(f"`data.metaworld_crop`: {err}") from None
    if d.metaworld_camera_view in CAMERA_VIEWS:
        try:
            check_camera_view(d.metaworld_camera_view, d.metaworld_camera, d.metaworld_crop, d.metaworld_image_size)
        except ValueError as err:
            raise ConfigError(f"`data.metaworld_camera_view`: {err}") from None
    try:
        check_instructions(d.metaworld_instructions, d.metaworld_tasks)
    except ValueError as err:
        raise ConfigError(f"`data.metaworld_instructions`: {err}") from None
    for key, value, low in (
        ("training.max_steps", t.max_steps, 1), ("training.per_device_batch_size", t.per_device_batch_size, 1),
        ("training.gradient_accumulation_steps", t.gradient_accumulation_steps, 1),
        ("training.save_steps", t.save_steps, 0), ("training.eval_steps", t.eval_steps, 0),
        ("training.logging_steps", t.logging_steps, 1), ("data.chunk_stride", d.chunk_stride, 1),
        ("data.sample_every", d.sample_every, 1), ("model.chunk_size", m.chunk_size, 2), ("peft.r", p.r, 1),
        ("data.max_val_samples", d.max_val_samples, 1), ("training.save_total_limit", t.save_total_limit, 1),
        ("model.head_hidden_size", m.head_hidden_size, 1), ("model.bspline_control_points", m.bspline_control_points, 4),
        ("model.flow_steps", m.flow_steps, 1), ("training.image_shift", t.image_shift, 0),
    ):
        if value < low:
            raise ConfigError(f"`{key}` must be >= {low}, got {value}")
    if d.dense_every < 0 or (d.dense_every and d.chunk_stride % d.dense_every):
        raise ConfigError(f"`data.dense_every` must be 0 (off) or a divisor of data.chunk_stride={d.chunk_stride}, "
                          f"got {d.dense_every}")
    if not 0.0 <= d.val_fraction < 1.0:
        raise ConfigError(f"`data.val_fraction` must be in [0, 1), got {d.val_fraction}")
    if t.learning_rate <= 0:
        raise ConfigError(f"`training.learning_rate` must be > 0, got {t.learning_rate}")
    if t.head_learning_rate is not None and t.head_learning_rate <= 0:
        raise ConfigError(f"`training.head_learning_rate` must be > 0 or null, got {t.head_learning_rate}")
    for key, value, low, high in (
        ("training.warmup_ratio", t.warmup_ratio, 0.0, 1.0), ("training.decay_ratio", t.decay_ratio, 0.0, 1.0),
        ("training.final_lr_scale", t.final_lr_scale, 0.0, 1.0), ("training.adam_beta1", t.adam_beta1, 0.0, 1.0),
        ("training.adam_beta2", t.adam_beta2, 0.0, 1.0), ("training.adam_epsilon", t.adam_epsilon, 0.0, 1.0),
        ("training.weight_decay", t.weight_decay, 0.0, float("inf")),
        ("training.max_grad_norm", t.max_grad_norm, 0.0, float("inf")),
    ):
        if not low <= value <= high:
            raise ConfigError(f"`{key}` must be in [{low}, {high}], got {value}")
    if t.warmup_ratio + (t.decay_ratio if t.lr_scheduler == "tri_stage" else 0.0) > 1.0:
        raise ConfigError("`training.warmup_ratio` + `training.decay_ratio` must not exceed 1")
    rel = m.relative_action_state_indices
    if rel is not None:
        key = "model.relative_action_state_indices"
        if not m.use_state:
            raise ConfigError(f"`{key}` needs `model.use_state: true` (the deltas are taken from observation.state)")
        if any(s is not None and s < 0 for s in rel):
            raise ConfigError(f"`{key}` entries must be state indices >= 0 or null, got {rel}")
        if all(s is None for s in rel):
            raise ConfigError(f"`{key}` has no int entry; leave it null for absolute actions")
    if m.action_head != "niaf" and (m.init_from_niaf or t.push_to_hub):
        raise ConfigError(f"`model.action_head` {m.action_head!r} trains a comparison head from the backbone; it cannot "
                          "be combined with model.init_from_niaf or training.push_to_hub")
    if t.push_to_hub and not t.hub_model_id:
        raise ConfigError("`training.push_to_hub` needs `training.hub_model_id` (e.g. user/niaf-metaworld)")


def field_docs(cls: type) -> dict[str, str]:
    """The attribute docstrings of a dataclass (the string literal under each field), one line each; of its
    dataclass bases too, and of a derived one (:class:`NiafConfigOptions`) from its ``__field_docs__``."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        if "__field_docs__" in vars(klass):
            docs.update(klass.__field_docs__)
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        for node, after in zip(body, body[1:], strict=False):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                    and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
                docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def _show(value: Any) -> str:
    if isinstance(value, list):
        return ",".join("null" if v is None else str(v) for v in value) or "[]"
    return "null" if value is None else str(value)


def help_text(cfg: FinetuneConfig | None = None, origin: str = "dataclass defaults", width: int = 110) -> str:
    """Every key with its type, allowed values, description and the value in force (for ``--help``).

    ``cfg`` is the configuration the command would run with (e.g. the default config file); its values are
    shown as the defaults, with the dataclass default next to them where the file overrides it.
    """
    cfg = cfg or FinetuneConfig()
    lines = [f"configuration keys (values in force: {origin}; override with --section.key VALUE):"]
    for section, cls in SECTIONS.items():
        lines += ["", f"{section}: {' '.join((cls.__doc__ or '').split())}"]
        docs = field_docs(cls)
        plain = cls()
        for name, annotation in _fields(section).items():
            key = f"{section}.{name}"
            value = getattr(getattr(cfg, section), name)
            head = f"  --{key} {_type_name(annotation)}"
            if key in CHOICES:
                head += " {" + ",".join(CHOICES[key]) + "}"
            head += f"  (default: {_show(value)}"
            if value != getattr(plain, name):
                head += f"; without a config file: {_show(getattr(plain, name))}"
            lines.append(head + ")")
            lines += textwrap.wrap(docs.get(name, ""), width=width, initial_indent=" " * 6, subsequent_indent=" " * 6)
    return "\n".join(lines)


__all__ = [
    "BackboneOptions",
    "ComparisonHeadOptions",
    "ConfigError",
    "DataOptions",
    "FinetuneConfig",
    "ModelOptions",
    "NiafConfigOptions",
    "PeftOptions",
    "TrainingOptions",
    "CHOICES",
    "NIAF_CONFIG_SET_BY_TRAINER",
    "TRAINING_DEFAULTS",
    "build_config",
    "config_argument_docs",
    "config_options",
    "field_docs",
    "help_text",
    "load_config",
    "validate_config",
]
