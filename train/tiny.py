"""A tiny random-weight NIAF backbone, tokenizer and image processor, built entirely in code.

Used by the embedded default training configuration (``niaf-train`` with ``model.backbone: tiny``), the test
suite and the benchmarks. Nothing here downloads anything: the backbone is a PaliGemma-architecture model
(SigLIP vision tower + Gemma decoder) with hidden size 32-128, the tokenizer is a word-level vocabulary built
from a word list, and the image processor is configured from explicit settings.

The tiny model is a real NIAF policy (same code path as a 3B backbone); it is small enough to learn a
Meta-World skill on 2 CPU cores in a few minutes.
"""

from __future__ import annotations

import math
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


def sincos_2d_positions(grid: int, dim: int) -> Any:
    """A fixed 2-D sine-cosine position table for a ``grid`` × ``grid`` patch layout, shape ``(grid², dim)``.

    Row ``r·grid + c`` (patch row ``r``, column ``c``) holds ``sin``/``cos`` of ``c`` and of ``r`` at ``dim // 4``
    geometric frequencies from 1 down to ``1 / grid`` radians per patch: the first half of the channels encodes the
    column, the second half the row. Nearby patches get similar codes, so a query that attends to one patch can
    read its position out linearly — a vision tower trained from scratch otherwise has to learn a separate
    embedding for each patch from the few demonstrations that put an object there.

    Args:
        grid: patches per image side.
        dim: embedding width, a multiple of 4.
    """
    import torch  # heavy: torch (the tokenizer and processor helpers here do not need it)

    if grid < 1:
        raise ValueError(f"sincos_2d_positions: grid {grid} must be >= 1 (patches per image side)")
    if dim < 4 or dim % 4:
        raise ValueError(f"sincos_2d_positions: dim {dim} must be a positive multiple of 4")
    quarter = dim // 4
    freq = torch.logspace(0.0, -math.log10(max(grid, 2)), quarter, dtype=torch.float64)  # radians per patch
    coords = torch.arange(grid, dtype=torch.float64)
    row, col = torch.meshgrid(coords, coords, indexing="ij")
    parts = []
    for axis in (col.reshape(-1), row.reshape(-1)):
        angle = axis[:, None] * freq[None, :]
        parts += [torch.sin(angle), torch.cos(angle)]
    return torch.cat(parts, dim=1).float()


def use_fixed_vision_positions(model: Any) -> int:
    """Replace the learned patch-position embeddings of every SigLIP vision tower in ``model`` by the fixed
    :func:`sincos_2d_positions` table, and stop training them. Returns how many tables were replaced.

    The table is stored in the weights (a checkpoint reloads it as is); only ``requires_grad`` is not saved, so a
    run that continues from such a checkpoint trains it unless it calls this again.
    """
    import torch  # heavy: torch (the tokenizer and processor helpers here do not need it)

    replaced = 0
    for module in model.modules():
        table = getattr(module, "position_embedding", None)
        if type(module).__name__ != "SiglipVisionEmbeddings" or not isinstance(table, torch.nn.Embedding):
            continue
        grid = module.image_size // module.patch_size
        with torch.no_grad():
            table.weight.copy_(sincos_2d_positions(grid, table.weight.shape[1]).to(table.weight.dtype))
        table.weight.requires_grad_(False)
        replaced += 1
    return replaced


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
    "sincos_2d_positions",
    "tiny_backbone_config",
    "use_fixed_vision_positions",
    "words_of",
]
