"""Backbone families: everything NIAF knows about a vision-language model type, behind one interface.

One [`BackboneFamily`] per supported transformers ``model_type`` says

* how the learned queries are injected: encoder-decoder (Florence-2: the queries are the decoder inputs) or
  decoder-only (queries appended after the prompt), and whether positions are 3-D multimodal rotary
  (M-RoPE, Qwen-VL: ``get_rope_index``);
* the pixel layout: one image per camera, ``[B, num_cameras, 3, H, W]``, or Qwen-VL's flattened patches
  ``[Σ t·h·w, C·t·p·p]`` with ``image_grid_thw``; whether the backbone takes the 5-D tensor natively;
* the image placeholder token, the tokens framing each image and the number of placeholders per image,
  read from the backbone config (and checked against the backbone's own processor where it states one);
* the prompt framing the backbone was pretrained with (PaliGemma: image tokens, ``<bos>``, prompt, ``"\\n"``;
  Florence-2: image tokens, ``<s>``, prompt, ``</s>``; Qwen-VL and SmolVLM: their chat template), stored in a
  [`NiafProcessor`] as ``prompt_frame``;
* the default LoRA target modules and which modules are NIAF's own head (trained in full under LoRA).

[`family_of`] finds the family of a backbone config; the model, the processor
(`NiafProcessor.from_pretrained_backbone`) and the training code all read from here. Torch-free: this module
imports nothing beyond the standard library, so a deployment process can use it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

HEAD_MODULES = ("query_embeddings", "modulation_heads", "siren", "state_projection", "image_keypoints")
"""NIAF's own top-level modules (not the backbone): trained in full under LoRA (PEFT's ``modules_to_save``) and
given the head learning rate. The same for every family."""

ENCODER_DECODER = "encoder_decoder"
DECODER_ONLY = "decoder_only"
PER_CAMERA = "per_camera"
PATCHES = "patches"

_PROMPT_SENTINEL = "NIAFPROMPTSENTINEL"
_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class BackboneFamily:
    """What NIAF needs to know about one family of vision-language backbones.

    Attributes:
        name: the family's name in messages.
        model_types: the transformers ``model_type`` values of the family.
        injection: ``"encoder_decoder"`` (queries are the decoder inputs, attending to each other and to the
            encoded image + prompt) or ``"decoder_only"`` (queries appended after the prompt, 4-D mask).
        mrope: decoder-only with 3-D multimodal rotary positions (positions from ``get_rope_index``).
        pixel_layout: ``"per_camera"`` (``pixel_values`` [B, num_cameras, 3, H, W]) or ``"patches"``
            (flattened patches [Σ t·h·w, C·t·p·p] + ``image_grid_thw`` [B·num_cameras, 3]).
        multi_image_native: the backbone itself takes [B, images, 3, H, W] (else NIAF flattens the cameras
            into the batch for the vision tower).
        framing: ``"paligemma"``, ``"florence2"`` or ``"chat"`` (the backbone processor's chat template).
        chat_image_marker: for ``"chat"`` framing, what the chat template writes per image: ``"block"``
            (start token + image token + end token, Qwen-VL) or ``"token"`` (the image token, SmolVLM).
        lora_target_modules: module names LoRA adapts by default, inside the backbone's language model.
        language_model: the name of the backbone's language-model module (``text_model`` in SmolVLM/Idefics3).
        head_modules: NIAF's own modules (see `HEAD_MODULES`).
    """

    name: str
    model_types: tuple[str, ...]
    injection: str
    mrope: bool
    pixel_layout: str
    multi_image_native: bool
    framing: str
    lora_target_modules: tuple[str, ...]
    chat_image_marker: str = "block"
    language_model: str = "language_model"
    head_modules: tuple[str, ...] = HEAD_MODULES

    # --------------------------------------------------------------------------------------------------
    # Model side
    # --------------------------------------------------------------------------------------------------
    @property
    def encoder_decoder(self) -> bool:
        return self.injection == ENCODER_DECODER

    def lora_target_regex(self) -> str:
        """The default LoRA ``target_modules`` as a regex over full module names of a NIAF model.

        Only the attention projections inside ``backbone.…<language_model>`` (encoder and decoder for
        Florence-2): the vision tower stays frozen and the NIAF head is trained in full.
        """
        names = "|".join(self.lora_target_modules)
        return rf"^backbone\.(.*\.)?{self.language_model}\..*\.({names})$"

    # --------------------------------------------------------------------------------------------------
    # Processor side
    # --------------------------------------------------------------------------------------------------
    def image_seq_length(self, backbone_config: Any, image_processor: Any = None) -> int | None:
        """Image placeholder tokens per image, from the backbone config; None when it follows the image size
        (Qwen-VL: ``image_grid_thw``). Florence-2 also needs the image processor's image size."""
        if self.pixel_layout == PATCHES:
            return None
        vision = _get(backbone_config, "vision_config")
        if self.framing == "paligemma":
            return (_get(vision, "image_size") // _get(vision, "patch_size")) ** 2
        if self.name == "smolvlm":
            side = _get(vision, "image_size") // _get(vision, "patch_size")
            return int(side * side / _get(backbone_config, "scale_factor") ** 2)
        # Florence-2: DaViT downsamples by the product of its stage strides, plus one pooled token
        if image_processor is None:
            raise ValueError(f"{self.name}: the image-token count needs the image processor (its image size).")
        height, width = _image_size(image_processor, self.name)
        stride = math.prod(_get(vision, "patch_stride"))
        return (height // stride) * (width // stride) + 1

    def image_tokens(self, backbone_config: Any, tokenizer: Any, base_processor: Any = None) -> tuple[str, str | None, str | None]:
        """(image token, token(s) before each image, token(s) after each image) as the backbone was pretrained.

        The image token is the tokenizer's token for the config's ``image_token_id``; Qwen-VL frames each image
        with ``vision_start_token_id`` / ``vision_end_token_id``; SmolVLM/Idefics3 with
        ``<fake_token_around_image><global-img>`` … ``<fake_token_around_image>`` (one image per camera, no
        splitting into tiles).
        """
        image_token = _token_for_id(tokenizer, _get(backbone_config, "image_token_id"), self.name, "image_token_id")
        start = end = None
        if self.mrope:
            start = _token_for_id(tokenizer, _get(backbone_config, "vision_start_token_id"), self.name, "vision_start_token_id")
            end = _token_for_id(tokenizer, _get(backbone_config, "vision_end_token_id"), self.name, "vision_end_token_id")
        elif self.name == "smolvlm":
            fake = _named_token(base_processor, tokenizer, "fake_image_token", "<fake_token_around_image>", self.name)
            glob = _named_token(base_processor, tokenizer, "global_image_token", "<global-img>", self.name)
            start, end = fake + glob, fake
        return image_token, start, end

    def prompt_frame(
        self,
        tokenizer: Any,
        num_cameras: int,
        image_token: str,
        image_start_token: str | None = None,
        image_end_token: str | None = None,
        chat_template: str | None = None,
    ) -> str:
        """The pretrained prompt framing as a format string with ``{images}`` (the image blocks of all cameras)
        and ``{prompt}`` (the formatted instruction); the tokenizer then adds no special tokens of its own.

        PaliGemma: ``{images}<bos>{prompt}\\n``; Florence-2: ``{images}<s>{prompt}</s>``; chat families: the
        chat template rendered for one user turn holding ``num_cameras`` images then the prompt, with the
        generation prompt (e.g. Qwen-VL's ``<|im_start|>assistant\\n``).
        """
        if self.framing in ("paligemma", "florence2"):
            bos = _special(tokenizer, "bos_token", self.name)
            tail = "\n" if self.framing == "paligemma" else _special(tokenizer, "eos_token", self.name)
            return "{images}" + _escape(bos) + "{prompt}" + _escape(tail)
        if not chat_template:
            raise ValueError(
                f"{self.name}: the backbone's processor has no chat template, so the pretrained prompt framing is "
                "unknown; load a processor that has one or pass prompt_frame='...{images}...{prompt}...'."
            )
        content = [{"type": "image"} for _ in range(num_cameras)] + [{"type": "text", "text": _PROMPT_SENTINEL}]
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], chat_template=chat_template, add_generation_prompt=True,
            tokenize=False,
        )
        if self.chat_image_marker == "block":
            marker = (image_start_token or "") + image_token + (image_end_token or "")
        else:
            marker = image_token
        frame = _escape(rendered)
        images, prompt = _escape(marker * num_cameras), _escape(_PROMPT_SENTINEL)
        if frame.count(images) != 1 or frame.count(prompt) != 1:
            raise ValueError(
                f"{self.name}: the chat template does not render {num_cameras} image(s) as {marker!r} followed by the "
                f"text; got {rendered[:200]!r}. Pass prompt_frame='...{{images}}...{{prompt}}...' explicitly."
            )
        return frame.replace(images, "{images}").replace(prompt, "{prompt}")

    def niaf_processor_kwargs(
        self,
        backbone_config: Any,
        image_processor: Any,
        tokenizer: Any,
        num_cameras: int = 1,
        chat_template: str | None = None,
        base_processor: Any = None,
        prompt_frame: str | None = None,
    ) -> dict[str, Any]:
        """The [`NiafProcessor`] arguments that match this backbone: ``image_token``, ``image_seq_length``,
        ``image_start_token``, ``image_end_token`` and ``prompt_frame``.

        The image-token count comes from the backbone config; a backbone processor that states its own
        (``image_seq_length``, ``image_seq_len``, ``num_image_tokens``) must agree. SmolVLM/Idefics3 image
        processors are switched to one image per camera (``do_image_splitting = False``). A given
        ``prompt_frame`` is used as it is (e.g. for a chat family whose processor has no chat template).
        """
        image_token, start, end = self.image_tokens(backbone_config, tokenizer, base_processor)
        length = self.image_seq_length(backbone_config, image_processor)
        if length is not None:
            for owner in (base_processor, image_processor):
                for attr in ("image_seq_length", "image_seq_len", "num_image_tokens"):
                    stated = getattr(owner, attr, None) if owner is not None else None
                    if isinstance(stated, int) and stated != length:
                        raise ValueError(
                            f"{self.name}: the backbone config gives {length} image tokens per image but its processor's "
                            f"{attr} is {stated}; the processor does not belong to this backbone."
                        )
        if getattr(image_processor, "do_image_splitting", False):
            image_processor.do_image_splitting = False  # NIAF reads one image per camera
        if prompt_frame is None:
            prompt_frame = self.prompt_frame(tokenizer, num_cameras, image_token, start, end, chat_template)
        return {
            "image_token": image_token, "image_seq_length": length, "image_start_token": start,
            "image_end_token": end, "prompt_frame": prompt_frame,
        }


FAMILIES: tuple[BackboneFamily, ...] = (
    BackboneFamily(
        name="florence2", model_types=("florence2",), injection=ENCODER_DECODER, mrope=False,
        pixel_layout=PER_CAMERA, multi_image_native=False, framing="florence2",
        # BART-style attention (self and cross) of encoder and decoder
        lora_target_modules=("q_proj", "k_proj", "v_proj", "out_proj"),
    ),
    BackboneFamily(
        name="paligemma", model_types=("paligemma",), injection=DECODER_ONLY, mrope=False,
        pixel_layout=PER_CAMERA, multi_image_native=False, framing="paligemma", lora_target_modules=_ATTENTION,
    ),
    BackboneFamily(
        name="qwen_vl", model_types=("qwen2_vl", "qwen2_5_vl", "qwen3_vl"), injection=DECODER_ONLY, mrope=True,
        pixel_layout=PATCHES, multi_image_native=False, framing="chat", chat_image_marker="block",
        lora_target_modules=_ATTENTION,
    ),
    BackboneFamily(
        name="smolvlm", model_types=("smolvlm", "idefics3"), injection=DECODER_ONLY, mrope=False,
        pixel_layout=PER_CAMERA, multi_image_native=True, framing="chat", chat_image_marker="token",
        lora_target_modules=_ATTENTION, language_model="text_model",
    ),
)

_BY_MODEL_TYPE = {model_type: family for family in FAMILIES for model_type in family.model_types}
SUPPORTED_MODEL_TYPES = tuple(sorted(_BY_MODEL_TYPE))


def family_of(config: Any) -> BackboneFamily:
    """The family of a backbone: a ``PretrainedConfig``, a config dict or a ``model_type`` string.

    Raises:
        ValueError: one line naming the unsupported model type and the supported ones.
    """
    if isinstance(config, str):
        model_type = config
    elif isinstance(config, Mapping):
        model_type = config.get("model_type")
    else:
        model_type = getattr(config, "model_type", None)
    family = _BY_MODEL_TYPE.get(model_type)
    if family is None:
        raise ValueError(
            f"backbone model_type {model_type!r} is not supported by NIAF; supported: {', '.join(SUPPORTED_MODEL_TYPES)}."
        )
    return family


def model_types_where(**attributes: Any) -> tuple[str, ...]:
    """The model types of the families whose attributes equal ``attributes`` (e.g. ``pixel_layout="patches"``)."""
    return tuple(
        model_type for family in FAMILIES if all(getattr(family, k) == v for k, v in attributes.items())
        for model_type in family.model_types
    )


# ------------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------------
def _get(config: Any, key: str) -> Any:
    value = config.get(key) if isinstance(config, Mapping) else getattr(config, key, None)
    if value is None:
        raise ValueError(f"backbone config has no `{key}`, which NIAF needs for this family.")
    return value


def _escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def _token_for_id(tokenizer: Any, token_id: Any, family: str, key: str) -> str:
    token = tokenizer.convert_ids_to_tokens(int(token_id))
    if not token or token == getattr(tokenizer, "unk_token", None):
        raise ValueError(f"{family}: the tokenizer has no token with id {token_id} (the backbone config's `{key}`).")
    return str(token)


def _named_token(processor: Any, tokenizer: Any, attr: str, default: str, family: str) -> str:
    token = getattr(processor, attr, None) if processor is not None else None
    token = token or default
    if token not in tokenizer.get_vocab():
        raise ValueError(f"{family}: the tokenizer does not know {token!r} ({attr}).")
    return token


def _special(tokenizer: Any, name: str, family: str) -> str:
    token = getattr(tokenizer, name, None)
    if not token:
        raise ValueError(f"{family}: the tokenizer has no {name}, which the pretrained prompt framing needs.")
    return str(token)


def _image_size(image_processor: Any, family: str) -> tuple[int, int]:
    order = ("crop_size", "size") if getattr(image_processor, "do_center_crop", False) else ("size", "crop_size")
    for attr in order:
        size = getattr(image_processor, attr, None)
        if isinstance(size, Mapping) and "height" in size and "width" in size:
            return int(size["height"]), int(size["width"])
        if hasattr(size, "height") and getattr(size, "height", None) and getattr(size, "width", None):
            return int(size.height), int(size.width)
    raise ValueError(f"{family}: cannot read the image size (height, width) of {type(image_processor).__name__}.")


__all__ = [
    "FAMILIES",
    "HEAD_MODULES",
    "SUPPORTED_MODEL_TYPES",
    "BackboneFamily",
    "family_of",
    "model_types_where",
]
