"""A tiny random-weight NIAF backbone, tokenizer and image processor, built entirely in code.

Used by the embedded default training configuration (``niaf-train`` with ``model.backbone: tiny``), the test
suite and the benchmarks. Nothing here downloads anything: the backbone is a PaliGemma-architecture model
(SigLIP vision tower + Gemma decoder) with hidden size 32-128, the tokenizer is a word-level vocabulary built
from a word list, and the image processor is configured from explicit settings.

The tiny model is a real NIAF policy (same code path as a 3B backbone); it is small enough to learn a
Meta-World skill on 2 CPU cores in a few minutes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

IMAGE_TOKEN = "<image>"
SPECIAL_TOKENS = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
BASE_WORDS = (
    "what", "action", "should", "the", "robot", "take", "to", "?", "pick", "up", "put", "place", "push", "pull",
    "open", "close", "press", "reach", "slide", "turn", "insert", "at", "into", "in", "on", "from", "of", "a", "it",
    "goal", "red", "blue", "green", "block", "puck", "door", "drawer", "button", "window", "faucet", "lever",
    "handle", "mug", "plate", "ball", "basket", "hole", "peg", "side", "top", "point", "and", "down", "left",
    "right", "move", "grasp", "lift", "stack", "object",
)
"""Words always in the tiny vocabulary; instructions seen in training data are added on top."""


def words_of(texts: Iterable[str]) -> list[str]:
    """The whitespace/punctuation-split, lower-cased words of ``texts`` (the tiny tokenizer's pre-tokeniser)."""
    out: list[str] = []
    for text in texts:
        out.extend(w.lower() for w in re.findall(r"\w+|[^\w\s]", text))
    return out


def make_tiny_tokenizer(extra_words: Iterable[str] = (), vocab_size: int = 512) -> Any:
    """A word-level fast tokenizer with ids < ``vocab_size``; ``<image>`` has id ``vocab_size - 1``.

    Args:
        extra_words: more words to include (e.g. ``words_of(instructions)``); unknown words map to ``<unk>``.
        vocab_size: the backbone's vocabulary size.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers  # heavy: tokenizers
    from transformers import PreTrainedTokenizerFast  # heavy: transformers

    vocab = dict(SPECIAL_TOKENS)
    for word in list(BASE_WORDS) + sorted(set(extra_words)):
        if word not in vocab:
            vocab[word] = len(vocab)
    if len(vocab) >= vocab_size - 1:
        raise ValueError(f"tiny tokenizer: {len(vocab)} words do not fit a vocabulary of {vocab_size}")
    vocab[IMAGE_TOKEN] = vocab_size - 1
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>",
        additional_special_tokens=[IMAGE_TOKEN],
    )
    tokenizer.padding_side = "right"
    return tokenizer


def tiny_backbone_config(
    hidden_size: int = 32,
    num_layers: int = 2,
    image_size: int = 32,
    patch_size: int = 8,
    vocab_size: int = 512,
    *,
    num_heads: int | None = None,
    mlp_ratio: int = 2,
    vision_hidden_size: int | None = None,
    vision_layers: int | None = None,
    vision_heads: int | None = None,
) -> dict[str, Any]:
    """The one PaliGemma-architecture backbone config built in code (for ``NiafConfig(backbone_config=...)``):
    the default ``niaf-train`` config, the tests, the examples and the benchmarks all make theirs here.

    Args:
        hidden_size: width of the Gemma decoder (d), and of the vision tower unless ``vision_hidden_size``.
        num_layers: decoder layers (the vision tower has ``max(1, num_layers // 2)`` unless ``vision_layers``).
        image_size: side of the square input image in pixels.
        patch_size: vision patch side in pixels; an image gives ``(image_size // patch_size)²`` tokens.
        vocab_size: vocabulary size; the image token id is ``vocab_size - 1``.
        num_heads: decoder attention heads (default ``max(1, hidden_size // 16)``; one key/value head).
        mlp_ratio: MLP width / hidden width, in both towers.
        vision_hidden_size, vision_layers, vision_heads: the vision tower's own sizes when they differ.
    """
    if image_size % patch_size:
        raise ValueError(f"tiny backbone: image_size {image_size} must be a multiple of patch_size {patch_size}")
    heads = num_heads or max(1, hidden_size // 16)
    vision_hidden = vision_hidden_size or hidden_size
    return {
        "model_type": "paligemma",
        "image_token_index": vocab_size - 1,
        "projection_dim": hidden_size,
        "vision_config": {
            "model_type": "siglip_vision_model", "hidden_size": vision_hidden, "intermediate_size": mlp_ratio * vision_hidden,
            "num_hidden_layers": vision_layers or max(1, num_layers // 2), "num_attention_heads": vision_heads or heads,
            "image_size": image_size, "patch_size": patch_size, "projection_dim": hidden_size,
        },
        "text_config": {
            "model_type": "gemma", "vocab_size": vocab_size, "hidden_size": hidden_size,
            "intermediate_size": mlp_ratio * hidden_size, "num_hidden_layers": num_layers, "num_attention_heads": heads,
            "num_key_value_heads": 1, "head_dim": hidden_size // heads, "pad_token_id": 0,
        },
    }


def image_tokens(image_size: int, patch_size: int) -> int:
    """Image placeholder tokens per image of the tiny backbone."""
    return (image_size // patch_size) ** 2


def make_tiny_image_processor(image_size: int = 32) -> Any:
    """A SigLIP image processor resizing to ``image_size``² and scaling to [-1, 1]."""
    from transformers import SiglipImageProcessorPil  # heavy: transformers

    return SiglipImageProcessorPil(size={"height": image_size, "width": image_size})


__all__ = [
    "BASE_WORDS",
    "IMAGE_TOKEN",
    "image_tokens",
    "make_tiny_image_processor",
    "make_tiny_tokenizer",
    "tiny_backbone_config",
    "words_of",
]
