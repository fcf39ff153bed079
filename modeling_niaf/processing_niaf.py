"""NiafProcessor: the backbone's image processor + tokenizer, the prompt, and the action/state normalisation.

Shipped to the Hub as remote code (``processor_config.json`` carries its ``auto_map``). One call turns a batch of
observations (camera images, instruction, optional robot state) and, for training, the target chunk into the
tensors that [`NiafForActionFunction.forward`] takes:

===================  =====================================================  =============================
key                  shape                                                  units
===================  =====================================================  =============================
``input_ids``        [B, L]                                                 token ids (image placeholders
                                                                             expanded, one block per camera)
``attention_mask``   [B, L]
``pixel_values``     [B, C, 3, H, W] (Qwen-VL: [Σ t·h·w, 3·t·p·p] patches)   the image processor's output
``image_grid_thw``   [B·C, 3] (Qwen-VL only)
``state``            [B, state_dim]                                         normalised
``actions``          [B, K, D]                                              normalised (deltas from the
                                                                             state with relative actions)
``velocities``       [B, K, D]                                              normalised units per second
``action_mask``      [B, K] bool                                            True = real step
===================  =====================================================  =============================

Normalisation uses LeRobot's mode names (QUANTILES with q01/q99 by default, MIN_MAX, MEAN_STD, IDENTITY); every
mode is affine per dimension, so `denormalize_actions` is the exact inverse and a velocity is only scaled. The
transforms, the statistics and their computation live in ``normalization.py``; this class applies them.

Statistics are stored once per checkpoint: saved with a model (``model.save_pretrained(dir, processor=...)``),
``processor_config.json`` carries none and `from_pretrained` takes them from the same folder's ``config.json``
(the model's ``normalization_stats``); a processor saved on its own keeps them in ``processor_config.json``.
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import BatchFeature, ProcessorMixin
from transformers.utils import logging

try:  # Hub copy: the units module sits next to this one
    from .normalization import (
        AffineNormalizer,
        check_mode,
        check_normalization_stats,
        check_relative_action_state_indices,
        compute_stats,
        to_relative,
    )
except ImportError:  # installed package: it lives in the torch-free configuration_niaf package
    from configuration_niaf.normalization import (
        AffineNormalizer,
        check_mode,
        check_normalization_stats,
        check_relative_action_state_indices,
        compute_stats,
        to_relative,
    )

from .backbones import family_of

logger = logging.get_logger(__name__)

MAX_IMAGE_SEQ_LENGTH = 16_384
"""Most placeholder tokens per image (Florence-2 at 768 px: 577; PaliGemma-896: 4096)."""
MAX_CAMERAS = 16
MAX_PROMPT_TEMPLATE_CHARS = 100_000
IMAGE_BACKENDS = ("pil", "torchvision")
"""transformers' image processor backends: the PIL/NumPy class (``...ImageProcessorPil``, "slow") and the torchvision
class (``...ImageProcessor``, "fast"). They resize differently (up to 2/255 per pixel after SigLIP scaling)."""
LEGACY_IMAGE_BACKEND = "pil"
"""The backend of a processor saved before ``image_backend`` was recorded: the PIL class, which niaf-train's tiny
backbone always used and which transformers picks wherever torchvision is not installed (niaf's own environments)."""


def _format_fields(text: Any, key: str, expected: str) -> list[tuple[str, str, str | None]]:
    """``(name, format spec, conversion)`` of every field of the format string ``text``; a ValueError naming
    ``key`` for a non-string, an over-long string or an unparsable one (``expected`` says what it must be)."""
    if not isinstance(text, str) or len(text) > MAX_PROMPT_TEMPLATE_CHARS:
        raise ValueError(
            f"NiafProcessor: `{key}` must be {expected} of at most {MAX_PROMPT_TEMPLATE_CHARS} characters, got "
            f"{type(text).__name__} of length {len(text) if hasattr(text, '__len__') else '?'}."
        )
    try:
        return [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(text) if name is not None]
    except ValueError as err:
        raise ValueError(f"NiafProcessor: `{key}` is not a valid format string ({err}): {text[:80]!r}.") from None


def check_prompt_template(template: Any) -> str:
    """Return ``template`` if it is a format string whose only field is a plain ``{instruction}``.

    A conversion or format spec (``{instruction:>999999999}``), attribute access, positional or other named
    fields are refused: formatting such a template can allocate gigabytes or reach into the instruction object.
    """
    fields = _format_fields(template, "prompt_template", "a string")
    bad = [f"{{{name}{'!' + conv if conv else ''}{':' + spec if spec else ''}}}" for name, spec, conv in fields
           if name != "instruction" or spec or conv]
    if bad or not fields:
        raise ValueError(
            f"NiafProcessor: `prompt_template` must contain '{{instruction}}' and no other field, conversion or format "
            f"spec; got {template[:80]!r}" + (f" with {bad[:3]}." if bad else ".")
        )
    return template


def check_prompt_frame(frame: Any) -> str | None:
    """Return ``frame`` if it is None or a format string whose fields are exactly ``{images}`` and ``{prompt}``,
    each once, without conversion or format spec (as `check_prompt_template`)."""
    if frame is None:
        return None
    fields = _format_fields(frame, "prompt_frame", "None or a string")
    if sorted(name for name, _, _ in fields) != ["images", "prompt"] or any(spec or conv for _, spec, conv in fields):
        raise ValueError(
            "NiafProcessor: `prompt_frame` must contain '{images}' and '{prompt}' once each and no other field, "
            f"conversion or format spec; got {frame[:80]!r}."
        )
    return frame


def image_backend_of(image_processor: Any) -> str | None:
    """``"pil"`` or ``"torchvision"``: the backend of a transformers image processor (its ``backend``, else its
    class name: ``...Pil`` / ``...Fast``); None for one that says neither (e.g. a remote-code class)."""
    backend = getattr(image_processor, "backend", None)
    if backend in IMAGE_BACKENDS:
        return backend
    name = type(image_processor).__name__
    if name.endswith("Pil"):
        return "pil"
    if name.endswith("Fast"):
        return "torchvision"
    return None


def _image_processor_class_name(image_processor: Any, backend: str) -> str | None:
    """The name of the transformers class of ``image_processor``'s kind with ``backend``: from transformers'
    backend table (``IMAGE_PROCESSOR_MAPPING_NAMES``), else by its naming rule (``X`` torchvision, ``XPil`` PIL)."""
    name = type(image_processor).__name__
    try:
        from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING_NAMES
    except ImportError:  # pragma: no cover - the table moved
        IMAGE_PROCESSOR_MAPPING_NAMES = {}
    for classes in IMAGE_PROCESSOR_MAPPING_NAMES.values():
        if isinstance(classes, Mapping) and name in classes.values() and classes.get(backend):
            return classes[backend]
    for suffix in ("Pil", "Fast"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name + "Pil" if backend == "pil" else name


def with_image_backend(image_processor: Any, backend: str) -> Any:
    """``image_processor`` with ``backend`` (``"pil"`` or ``"torchvision"``): itself if it has it, else the same
    settings (``to_dict``) in transformers' class for that backend. Where that class cannot be built (torchvision
    not installed, a class transformers does not know) it is returned as it is, with a warning: the pixels then
    differ slightly from those the checkpoint was trained on."""
    current = image_backend_of(image_processor)
    if current is None or current == backend:  # None: a class of no known backend (remote code) is kept as it is
        return image_processor
    import transformers

    name = _image_processor_class_name(image_processor, backend)
    converted, reason = None, f"transformers has no class {name!r}"
    target = getattr(transformers, name, None) if name else None
    if target is not None:
        try:
            settings = {k: v for k, v in image_processor.to_dict().items() if k != "image_processor_type"}
            converted = target.from_dict(settings)
        except Exception as err:  # a dummy class (torchvision missing) raises ImportError; odd settings others
            converted, reason = None, f"{type(err).__name__}: {err}"
    if converted is not None and image_backend_of(converted) == backend:
        return converted
    if converted is not None:  # transformers gave its fallback class (torchvision not installed)
        reason = f"transformers gave {type(converted).__name__} for {name!r} (is torchvision installed?)"
    logger.warning(
        "NiafProcessor: the checkpoint's image processor used the %s backend, but %s; using %s (%s backend): "
        "pixel values can differ from training by up to 2/255.",
        backend, reason, type(image_processor).__name__, current,
    )
    return image_processor


class NiafProcessor(ProcessorMixin):
    r"""Image processor + tokenizer of the backbone, prompt formatting and action/state normalisation.

    Args:
        image_processor: the backbone's image processor (e.g. from ``microsoft/Florence-2-large`` or
            ``google/paligemma-3b-pt-224``).
        tokenizer: the backbone's tokenizer; it must know ``image_token``.
        prompt_template: format string with ``{instruction}``, e.g. ``"What action should the robot take to
            {instruction}?"``.
        image_token: the backbone's image placeholder token (``"<image>"``, ``"<|image_pad|>"``...).
        image_seq_length: placeholder tokens per image for fixed-size backbones (Florence-2: 577 at 768 px,
            PaliGemma-224: 256); None for Qwen-VL, where the count follows ``image_grid_thw``.
        image_start_token, image_end_token: optional tokens framing each image (Qwen-VL:
            ``<|vision_start|>`` / ``<|vision_end|>``).
        num_cameras: images per observation, in a fixed order (e.g. static, wrist).
        action_dim, state_dim: feature dimensions (state_dim None when no state is used).
        normalization_mode: QUANTILES (q01 → -1, q99 → +1; default), MIN_MAX, MEAN_STD or IDENTITY.
        normalization_stats: ``{"action": {...}, "state": {...}}`` in LeRobot's stats.json layout.
        unnormalized_action_dims: action dims left as they are (e.g. a binary gripper).
        max_length: optional prompt length limit; longer prompts raise instead of being cut silently.
        relative_action_state_indices: as ``NiafConfig.relative_action_state_indices`` (one entry per action
            dim: a state index or None). Then ``__call__`` turns absolute target ``actions`` into deltas from
            ``state`` before normalising them, and the action statistics must be those of the deltas
            (`fit_stats` computes them from chunks).
        prompt_frame: the prompt framing the backbone was pretrained with, a format string with ``{images}``
            (the image blocks of all cameras) and ``{prompt}`` (the formatted ``prompt_template``), e.g.
            PaliGemma's ``"{images}<bos>{prompt}\n"`` or a Qwen-VL chat turn; the tokenizer then adds no special
            tokens of its own. None (the default, and processors saved before it existed): the image blocks
            followed by the prompt, special tokens added by the tokenizer. `from_pretrained_backbone` sets it
            from ``backbones.py``.
        image_backend: the image processor's backend, ``"pil"`` or ``"torchvision"``; None (the default) takes
            that of ``image_processor``. Saved in ``processor_config.json``, so a reloaded processor preprocesses
            with the class it was trained with whether or not torchvision is installed (transformers would otherwise
            pick torchvision wherever it is available); given and different from ``image_processor``'s, the image
            processor is rebuilt with that backend from its own settings. A processor saved without it loads with
            ``"pil"`` (`LEGACY_IMAGE_BACKEND`).
    """

    def __init__(
        self,
        image_processor: Any = None,
        tokenizer: Any = None,
        prompt_template: str = "{instruction}",
        image_token: str = "<image>",
        image_seq_length: int | None = None,
        image_start_token: str | None = None,
        image_end_token: str | None = None,
        num_cameras: int = 1,
        action_dim: int = 7,
        state_dim: int | None = None,
        normalization_mode: str = "QUANTILES",
        normalization_stats: dict[str, dict[str, list[float]]] | None = None,
        unnormalized_action_dims: list[int] | None = None,
        max_length: int | None = None,
        relative_action_state_indices: list[int | None] | None = None,
        prompt_frame: str | None = None,
        image_backend: str | None = None,
        **kwargs: Any,
    ) -> None:
        check_prompt_template(prompt_template)
        if image_backend is not None and image_backend not in IMAGE_BACKENDS:
            raise ValueError(f"NiafProcessor: `image_backend` must be one of {IMAGE_BACKENDS} or None, got {image_backend!r}.")
        if image_processor is not None and image_backend is not None:
            image_processor = with_image_backend(image_processor, image_backend)
        check_prompt_frame(prompt_frame)
        check_mode(normalization_mode, "NiafProcessor")
        for name, value in (("num_cameras", num_cameras), ("action_dim", action_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"NiafProcessor: `{name}` must be a positive int, got {value!r}.")
        if num_cameras > MAX_CAMERAS:
            raise ValueError(f"NiafProcessor: `num_cameras` must be <= {MAX_CAMERAS}, got {num_cameras}.")
        if image_seq_length is not None and (
            isinstance(image_seq_length, bool)
            or not isinstance(image_seq_length, int)
            or not 1 <= image_seq_length <= MAX_IMAGE_SEQ_LENGTH
        ):
            raise ValueError(
                f"NiafProcessor: `image_seq_length` must be an int in [1, {MAX_IMAGE_SEQ_LENGTH}] or None, got "
                f"{image_seq_length!r}."
            )
        if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1):
            raise ValueError(f"NiafProcessor: `max_length` must be a positive int or None, got {max_length!r}.")
        self.prompt_template = prompt_template
        self.image_token = image_token
        self.image_seq_length = image_seq_length
        self.image_start_token = image_start_token
        self.image_end_token = image_end_token
        self.prompt_frame = prompt_frame
        self.num_cameras = num_cameras
        self.action_dim = action_dim
        self.state_dim = state_dim
        self.normalization_mode = normalization_mode
        self.unnormalized_action_dims = sorted(unnormalized_action_dims or [])
        self.max_length = max_length
        self.relative_action_state_indices = self._check_relative(relative_action_state_indices)
        self.normalization_stats = None
        super().__init__(image_processor, tokenizer, **kwargs)
        self.image_backend = image_backend_of(self.image_processor)
        if image_token not in self.tokenizer.get_vocab():
            raise ValueError(f"NiafProcessor: the tokenizer does not know the image token {image_token!r}.")
        self.set_stats(normalization_stats)

    # ------------------------------------------------------------------------------------------------------
    # Construction from a backbone
    # ------------------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained_backbone(
        cls, backbone_name_or_path: str, backbone_kwargs: dict[str, Any] | None = None, **processor_kwargs: Any
    ) -> NiafProcessor:
        """The processor that matches ``NiafForActionFunction.from_pretrained_backbone(backbone_name_or_path)``.

        Loads the backbone's config and its own processor (``AutoConfig`` / ``AutoProcessor``) and sets image
        token, image tokens per image, image start/end tokens and the prompt framing the backbone was pretrained
        with, as ``backbones.py`` describes its family.

        Args:
            backbone_name_or_path: Hub id (e.g. ``"google/paligemma-3b-pt-224"``) or local folder of a
                transformers-native vision-language model with its processor.
            backbone_kwargs: passed to ``AutoConfig`` / ``AutoProcessor.from_pretrained`` (``revision``,
                ``cache_dir``, ``local_files_only``, ...).
            **processor_kwargs: the other [`NiafProcessor`] arguments (``num_cameras``, ``action_dim``,
                ``prompt_template``, statistics, ...); a backbone-derived one given here overrides the default.
        """
        from transformers import AutoConfig, AutoProcessor

        backbone_kwargs = dict(backbone_kwargs or {})
        config = AutoConfig.from_pretrained(backbone_name_or_path, **backbone_kwargs)
        family_of(config)  # an unsupported model type fails before the processor is loaded
        base = AutoProcessor.from_pretrained(backbone_name_or_path, **backbone_kwargs)
        image_processor = getattr(base, "image_processor", None)
        tokenizer = getattr(base, "tokenizer", None)
        if image_processor is None or tokenizer is None:
            raise ValueError(
                f"NiafProcessor.from_pretrained_backbone({backbone_name_or_path!r}): AutoProcessor gave a "
                f"{type(base).__name__} without an image processor and a tokenizer."
            )
        return cls.from_backbone_parts(
            config, image_processor, tokenizer, chat_template=getattr(base, "chat_template", None),
            base_processor=base, **processor_kwargs,
        )

    @classmethod
    def from_backbone_parts(
        cls,
        backbone_config: Any,
        image_processor: Any,
        tokenizer: Any,
        chat_template: str | None = None,
        base_processor: Any = None,
        **processor_kwargs: Any,
    ) -> NiafProcessor:
        """As `from_pretrained_backbone`, from a backbone config (or config dict), image processor and tokenizer in
        hand (e.g. built in code); ``chat_template`` is the backbone processor's, needed by chat-framed families (Qwen-VL,
        SmolVLM). Arguments in ``processor_kwargs`` that are not None override the derived ones."""
        family = family_of(backbone_config)
        if isinstance(backbone_config, Mapping):  # a config dict (as NiafConfig takes): its transformers config
            from transformers import AutoConfig

            spec = dict(backbone_config)
            backbone_config = AutoConfig.for_model(spec.pop("model_type"), **spec)
        derived = family.niaf_processor_kwargs(
            backbone_config, image_processor, tokenizer, num_cameras=processor_kwargs.get("num_cameras", 1),
            chat_template=chat_template, base_processor=base_processor,
            prompt_frame=processor_kwargs.get("prompt_frame"),
        )
        # an explicit (not None) argument overrides what the family derives
        derived.update({k: v for k, v in processor_kwargs.items() if v is not None or k not in derived})
        return cls(image_processor=image_processor, tokenizer=tokenizer, **derived)

    # ------------------------------------------------------------------------------------------------------
    # Statistics
    # ------------------------------------------------------------------------------------------------------
    def set_stats(self, stats: Mapping[str, Mapping[str, Sequence[float]]] | None) -> None:
        """Install statistics (``{"action": {...}, "state": {...}}``) and rebuild the normalisers.

        They are checked and stored as `NiafConfig` stores them (``normalization.check_normalization_stats``:
        plain floats, one entry per dimension, the mode's keys present, ``count`` dropped).
        """
        dims = {"action": self.action_dim, "state": self.state_dim}
        self.normalization_stats = check_normalization_stats(stats, self.normalization_mode, dims, "NiafProcessor")
        stats = self.normalization_stats or {}
        mode = self.normalization_mode
        self._action_norm = None
        self._state_norm = None
        if mode == "IDENTITY" or "action" in stats:
            self._action_norm = AffineNormalizer.from_stats(
                stats.get("action"), mode, self.action_dim, self.unnormalized_action_dims, feature="action"
            )
        if self.state_dim is not None and (mode == "IDENTITY" or "state" in stats):
            self._state_norm = AffineNormalizer.from_stats(stats.get("state"), mode, self.state_dim, feature="state")

    @classmethod
    def get_processor_dict(cls, pretrained_model_name_or_path: Any, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """`ProcessorMixin.get_processor_dict`, with the statistics taken from the checkpoint's one copy.

        A NIAF ``config.json`` next to ``processor_config.json`` holds the statistics
        (``normalization_stats``) whenever the processor was saved with its model; they are used, and a copy in
        ``processor_config.json`` (checkpoints saved before statistics were stored once) is ignored. Without a
        NIAF config.json, the processor's own copy is used (a processor saved on its own). Raises a ValueError
        when neither file has statistics but ``normalization_mode`` needs them.

        A ``processor_config.json`` without ``image_backend`` (saved before it was recorded) loads with
        `LEGACY_IMAGE_BACKEND` (``"pil"``), whatever transformers would pick.
        """
        processor_dict, rest = super().get_processor_dict(pretrained_model_name_or_path, **kwargs)
        processor_dict.setdefault("image_backend", LEGACY_IMAGE_BACKEND)  # saved before the backend was recorded
        from transformers.utils import cached_file

        hub_keys = ("cache_dir", "force_download", "proxies", "token", "local_files_only", "revision", "subfolder")
        path = None
        if not Path(str(pretrained_model_name_or_path)).is_file():  # a folder or a Hub id, not a processor JSON file
            path = cached_file(pretrained_model_name_or_path, "config.json", _raise_exceptions_for_missing_entries=False,
                               **{k: kwargs[k] for k in hub_keys if kwargs.get(k) is not None})
        model_config = json.loads(Path(path).read_text(encoding="utf-8")) if path else {}
        model_stats = model_config.get("normalization_stats") if model_config.get("model_type") == "niaf" else None
        if model_stats is not None:
            for key in ("action_dim", "state_dim"):  # the statistics' shapes
                theirs = model_config.get(key)
                if theirs is not None and processor_dict.get(key, theirs) != theirs:
                    raise ValueError(
                        f"NiafProcessor.from_pretrained({str(pretrained_model_name_or_path)!r}): processor_config.json "
                        f"has {key}={processor_dict[key]} but config.json, whose statistics it uses, has {key}={theirs}."
                    )
            processor_dict["normalization_stats"] = model_stats
        elif "normalization_stats" not in processor_dict:  # saved with a model (hub.py) whose config has none
            mode = processor_dict.get("normalization_mode", "QUANTILES")
            if mode != "IDENTITY":
                raise ValueError(
                    f"NiafProcessor.from_pretrained({str(pretrained_model_name_or_path)!r}): normalization_mode={mode} "
                    "needs statistics, but neither config.json nor processor_config.json has `normalization_stats`."
                )
        return processor_dict, rest

    def fit_stats(self, actions: Any, state: Any = None) -> dict[str, dict[str, list[float]]]:
        """Compute statistics from a dataset's frames (actions [N, D], state [N, S]), install and return them.

        Returned in LeRobot's layout (with ``count``); installed as `set_stats` keeps them (without).

        With ``relative_action_state_indices`` the action statistics are those of the deltas at every chunk
        point: pass chunks ``actions`` [N, K, D] with the state at each chunk's observation, [N, S].
        """
        if self.relative_action_state_indices is not None:
            if state is None or np.ndim(actions) != 3:
                raise ValueError(
                    "NiafProcessor.fit_stats: with `relative_action_state_indices` pass action chunks [N, K, D] and "
                    f"the state at each chunk's observation [N, S]; got actions of shape {np.shape(actions)} and "
                    f"{'no state' if state is None else f'state of shape {np.shape(state)}'}."
                )
            deltas = self.relative_actions(actions, state)
            stats = {"action": compute_stats(deltas.reshape(-1, deltas.shape[-1]), "action")}
        else:
            stats = {"action": compute_stats(actions, "action")}
        if state is not None:
            stats["state"] = compute_stats(state, "state")
        self.set_stats(stats)
        return stats

    def _check_relative(self, indices: Any) -> list[int | None] | None:
        if indices is not None and self.state_dim is None:
            raise ValueError("NiafProcessor: `relative_action_state_indices` needs `state_dim`: the deltas are taken "
                             "from the state.")
        try:
            return check_relative_action_state_indices(indices, self.action_dim, self.state_dim or 0)
        except ValueError as err:
            raise ValueError(f"NiafProcessor: {err}") from None

    def relative_actions(self, actions: Any, state: Any) -> np.ndarray:
        """Physical absolute chunks [B, K, D] (or [K, D]) → physical deltas from ``state`` [B, S] (or [S]).

        Uses ``relative_action_state_indices``; float64 numpy. Raises a ValueError if the processor has none or
        the shapes do not match.
        """
        indices = self.relative_action_state_indices
        if indices is None:
            raise ValueError("NiafProcessor.relative_actions: the processor has no `relative_action_state_indices`.")
        return to_relative(_checked(actions, "actions", self.action_dim), _checked(state, "state", self.state_dim),
                           indices)

    def check_model_config(self, config: Any) -> None:
        """Raise a ValueError if this processor would feed ``config``'s model other shapes or another mode.

        The statistics are not compared: a checkpoint stores them once (the model's config.json), and a
        processor loaded from it uses those.
        """
        for name in ("action_dim", "num_cameras", "normalization_mode"):
            if getattr(config, name) != getattr(self, name):
                raise ValueError(
                    f"NiafProcessor: `{name}` is {getattr(self, name)!r} here but {getattr(config, name)!r} in the "
                    "model config; use the processor saved with the checkpoint."
                )
        if config.use_state and config.state_dim != self.state_dim:
            raise ValueError(f"NiafProcessor: `state_dim` is {self.state_dim} here but {config.state_dim} in the model config.")
        if list(config.unnormalized_action_dims) != list(self.unnormalized_action_dims):
            raise ValueError("NiafProcessor: `unnormalized_action_dims` differ from the model config.")
        theirs_rel = getattr(config, "relative_action_state_indices", None)
        if theirs_rel != self.relative_action_state_indices:
            raise ValueError(
                f"NiafProcessor: `relative_action_state_indices` is {self.relative_action_state_indices!r} here but "
                f"{theirs_rel!r} in the model config; the targets would be built in other units."
            )
        image_token_id = getattr(config.backbone_config, "image_token_id", None)
        if image_token_id is not None and self.tokenizer.convert_tokens_to_ids(self.image_token) != image_token_id:
            raise ValueError(
                f"NiafProcessor: image token {self.image_token!r} has id "
                f"{self.tokenizer.convert_tokens_to_ids(self.image_token)}, the backbone expects {image_token_id}."
            )

    # ------------------------------------------------------------------------------------------------------
    # Normalisation (exact inverses)
    # ------------------------------------------------------------------------------------------------------
    def _norm(self, feature: str) -> AffineNormalizer:
        norm = self._action_norm if feature == "action" else self._state_norm
        if norm is None:
            raise ValueError(
                f"NiafProcessor: no {feature} statistics for normalization_mode={self.normalization_mode}; compute "
                f"them with `fit_stats` or pass `normalization_stats`."
            )
        return norm

    def normalize_actions(self, actions: Any) -> Any:
        """Physical → normalised, [..., D] (numpy or torch)."""
        return self._norm("action").normalize(_checked(actions, "actions", self.action_dim))

    def denormalize_actions(self, actions: Any) -> Any:
        """Normalised → physical, [..., D]: the exact inverse of `normalize_actions`."""
        return self._norm("action").denormalize(_checked(actions, "actions", self.action_dim))

    def normalize_velocities(self, velocities: Any) -> Any:
        """Physical units per second → normalised units per second (scale only: an offset has no derivative)."""
        return self._norm("action").normalize_derivative(_checked(velocities, "velocities", self.action_dim))

    def denormalize_velocities(self, velocities: Any) -> Any:
        """Normalised units per second → physical units per second."""
        return self._norm("action").denormalize_derivative(_checked(velocities, "velocities", self.action_dim))

    def normalize_state(self, state: Any) -> Any:
        return self._norm("state").normalize(_checked(state, "state", self.state_dim))

    def denormalize_state(self, state: Any) -> Any:
        return self._norm("state").denormalize(_checked(state, "state", self.state_dim))

    # ------------------------------------------------------------------------------------------------------
    # Prompt and images
    # ------------------------------------------------------------------------------------------------------
    def _image_block(self, num_tokens: int) -> str:
        return (self.image_start_token or "") + self.image_token * num_tokens + (self.image_end_token or "")

    def _group_images(self, images: Any, batch: int) -> list[Any]:
        if self.num_cameras == 1 and (not isinstance(images, (list, tuple)) or len(images) == 0
                                      or not isinstance(images[0], (list, tuple))):
            images = [[im] for im in (images if isinstance(images, (list, tuple)) else [images])]
        if not isinstance(images, (list, tuple)) or len(images) != batch:
            raise ValueError(
                f"NiafProcessor: `images` must hold one entry per instruction ({batch}), each a list of "
                f"{self.num_cameras} camera image(s); got {type(images).__name__} of length "
                f"{len(images) if hasattr(images, '__len__') else '?'}."
            )
        for b, obs in enumerate(images):
            if not isinstance(obs, (list, tuple)) or len(obs) != self.num_cameras:
                raise ValueError(
                    f"NiafProcessor: wrong number of images for sample {b}: expected {self.num_cameras} "
                    f"(num_cameras), got {len(obs) if isinstance(obs, (list, tuple)) else 1}."
                )
        flat = [(im, f"images[{b}][{c}]") for b, obs in enumerate(images) for c, im in enumerate(obs)]
        if all(_is_uint8_chw_tensor(im) for im, _ in flat):
            # a dataset's CHW uint8 tensors go to the image processor as they are (same pixel_values as HWC)
            return [_rgb_uint8_chw_tensor(im, name) for im, name in flat]
        return [_rgb_uint8_hwc(im, name) for im, name in flat]

    def __call__(
        self,
        images: Any = None,
        text: str | Sequence[str] | None = None,
        state: Any = None,
        actions: Any = None,
        velocities: Any = None,
        action_mask: Any = None,
        return_tensors: str = "pt",
        **kwargs: Any,
    ) -> BatchFeature:
        """Build the model inputs for a batch of observations (and targets).

        Args:
            images: per sample a list of ``num_cameras`` RGB images: PIL images in mode RGB, uint8 arrays or
                tensors [H, W, 3] (or [3, H, W]) with values 0-255, or float arrays / tensors [3, H, W] (LeRobot's
                layout) or [H, W, 3] with values in [0, 1]. Anything else (grayscale, RGBA, empty frames, floats
                outside [0, 1], other dtypes) raises a ValueError naming the image. With one camera a flat list
                of images is accepted.
            text: the instruction(s), formatted into ``prompt_template``.
            state: [B, state_dim] physical robot state (normalised here).
            actions: [B, K, D] physical target actions, absolute (normalised here; with
                ``relative_action_state_indices`` first made deltas from ``state``, which is then required).
            velocities: [B, K, D] physical target velocities per second (scaled here).
            action_mask: [B, K], True for real steps.
        """
        if kwargs:
            raise ValueError(f"NiafProcessor got unexpected arguments {sorted(kwargs)}.")
        if return_tensors != "pt":
            raise ValueError(f"NiafProcessor: only return_tensors='pt' is supported, got {return_tensors!r}.")
        if text is None:
            raise ValueError("NiafProcessor: `text` (the instruction) is required.")
        texts = [text] if isinstance(text, str) else list(text)
        if images is None:
            raise ValueError(f"NiafProcessor: `images` is required ({self.num_cameras} per observation).")
        flat = self._group_images(images, len(texts))
        pixel = self.image_processor(flat, return_tensors="pt")
        data: dict[str, Any] = {}
        if "image_grid_thw" in pixel:
            grid = pixel["image_grid_thw"]
            merge = int(getattr(self.image_processor, "merge_size", 1)) ** 2
            counts = (grid.prod(dim=-1) // merge).tolist()
            data["pixel_values"] = pixel["pixel_values"]
            data["image_grid_thw"] = grid
        else:
            if self.image_seq_length is None:
                raise ValueError("NiafProcessor: `image_seq_length` is required for backbones with fixed-size images.")
            counts = [self.image_seq_length] * len(flat)
            pv = pixel["pixel_values"]
            data["pixel_values"] = pv.reshape(len(texts), self.num_cameras, *pv.shape[-3:])
        prompts = []
        for b, instruction in enumerate(texts):
            blocks = "".join(self._image_block(int(n)) for n in counts[b * self.num_cameras : (b + 1) * self.num_cameras])
            prompt = self.prompt_template.format(instruction=instruction)
            prompts.append(blocks + prompt if self.prompt_frame is None else self.prompt_frame.format(images=blocks, prompt=prompt))
        # a frame carries the backbone's own special tokens (bos, chat markers): the tokenizer adds none
        tokens = self.tokenizer(prompts, padding=True, return_tensors="pt", add_special_tokens=self.prompt_frame is None)
        if self.max_length is not None and tokens["input_ids"].shape[1] > self.max_length:
            raise ValueError(
                f"NiafProcessor: prompt of {tokens['input_ids'].shape[1]} tokens exceeds max_length={self.max_length}."
            )
        data["input_ids"] = tokens["input_ids"]
        data["attention_mask"] = tokens["attention_mask"]
        if state is not None:
            data["state"] = torch.as_tensor(np.asarray(self.normalize_state(_as_array(state))), dtype=torch.float32)
        if actions is not None:
            if self.relative_action_state_indices is not None:
                if state is None:
                    raise ValueError(
                        "NiafProcessor: `actions` are made relative to the state (relative_action_state_indices); "
                        "pass `state` too."
                    )
                actions = self.relative_actions(actions, state)
            data["actions"] = torch.as_tensor(np.asarray(self.normalize_actions(_as_array(actions))), dtype=torch.float32)
        if velocities is not None:
            data["velocities"] = torch.as_tensor(
                np.asarray(self.normalize_velocities(_as_array(velocities))), dtype=torch.float32
            )
        if action_mask is not None:
            data["action_mask"] = torch.as_tensor(np.asarray(action_mask), dtype=torch.bool)
        return BatchFeature(data=data)


def _is_uint8_chw_tensor(image: Any) -> bool:
    """A uint8 torch tensor [3, H, W] that `_rgb_uint8_hwc` would read as CHW (its last axis is not 3)."""
    return (
        isinstance(image, torch.Tensor) and image.dtype == torch.uint8 and image.ndim == 3
        and image.shape[0] == 3 and image.shape[-1] != 3
    )


def _rgb_uint8_chw_tensor(image: torch.Tensor, name: str) -> torch.Tensor:
    """A uint8 [3, H, W] frame (see `_is_uint8_chw_tensor`) as a contiguous CPU tensor, for the image processor.

    Image processors read CHW tensors directly: no HWC numpy round trip, identical ``pixel_values``.
    """
    if image.shape[1] == 0 or image.shape[2] == 0:
        raise ValueError(f"NiafProcessor: `{name}` is empty ({image.shape[1]}×{image.shape[2]} pixels).")
    return image.detach().cpu().contiguous()


def _rgb_uint8_hwc(image: Any, name: str) -> np.ndarray:
    """One camera frame in a common layout → a [H, W, 3] uint8 array, so that the image processor rescales once.

    Accepted: PIL images in mode RGB; uint8 [H, W, 3] or [3, H, W]; float [H, W, 3] or [3, H, W] in [0, 1]
    (LeRobot's tensors). A float frame handed to an image processor unchanged would be divided by 255 a second
    time (a black image); the rest is refused, naming ``name``.
    """
    if hasattr(image, "mode") and hasattr(image, "size") and hasattr(image, "convert"):  # a PIL image
        if image.mode != "RGB":
            raise ValueError(
                f"NiafProcessor: `{name}` is a PIL image in mode {image.mode!r}; pass RGB (e.g. image.convert('RGB'))."
            )
        array = np.asarray(image)
    elif isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        array = (image.float() if image.dtype == torch.bfloat16 else image).numpy()
    elif isinstance(image, np.ndarray):
        array = image
    else:
        raise ValueError(
            f"NiafProcessor: `{name}` must be a PIL image, a numpy array or a torch tensor, got {type(image).__name__}."
        )
    if array.ndim != 3 or 3 not in (array.shape[0], array.shape[-1]):
        raise ValueError(
            f"NiafProcessor: `{name}` has shape {array.shape}; expected an RGB frame [H, W, 3] or [3, H, W] "
            "(grayscale or RGBA frames are not accepted)."
        )
    if array.shape[-1] != 3:  # [3, H, W]
        array = np.moveaxis(array, 0, -1)
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"NiafProcessor: `{name}` is empty ({array.shape[0]}×{array.shape[1]} pixels).")
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype.kind == "f":
        lo, hi = float(np.min(array)), float(np.max(array))
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"NiafProcessor: `{name}` is a {array.dtype} frame with values in [{lo:g}, {hi:g}]; float frames must "
                "lie in [0, 1] (pass 0-255 pixels as uint8)."
            )
        return np.ascontiguousarray(np.rint(array.astype(np.float64) * 255.0).astype(np.uint8))
    raise ValueError(
        f"NiafProcessor: `{name}` has dtype {array.dtype}; expected uint8 (0-255) or float (0-1) pixels."
    )


def _as_array(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=np.float64)


def _checked(value: Any, name: str, dim: int | None) -> Any:
    if not hasattr(value, "shape"):
        value = np.asarray(value, dtype=np.float64)
    if dim is not None and (value.ndim == 0 or value.shape[-1] != dim):
        raise ValueError(f"NiafProcessor: `{name}` must have last dimension {dim}, got shape {tuple(value.shape)}.")
    finite = torch.isfinite(value).all() if isinstance(value, torch.Tensor) else np.isfinite(value).all()
    if not bool(finite):
        raise ValueError(f"NiafProcessor: `{name}` contains NaN or inf.")
    return value


__all__ = ["NiafProcessor", "check_prompt_frame", "check_prompt_template"]
