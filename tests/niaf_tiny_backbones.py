"""Tiny random-weight backbone configs of every supported family, and raw model inputs for them.

Everything is built in code (no downloads). Each spec gives the backbone config dict (for
``NiafConfig(backbone_config=...)``) and a function that makes a batch of raw model inputs
(``input_ids`` with the right number of image placeholder tokens, ``pixel_values`` and the extras a family
needs) for ``num_cameras`` images per sample.
"""

from __future__ import annotations

from typing import Any

import torch

VOCAB = 300
IMAGE_TOKEN = 299
PAD = 0
HIDDEN = 32


def florence2_config() -> dict[str, Any]:
    return {
        "model_type": "florence2",
        "image_token_id": IMAGE_TOKEN,
        "vision_config": {
            "depths": [1, 1], "patch_size": [7, 3], "patch_stride": [4, 2], "patch_padding": [3, 1],
            "patch_prenorm": [False, True], "embed_dim": [16, 32], "num_heads": [2, 2], "num_groups": [2, 2],
            "window_size": 4, "projection_dim": HIDDEN, "drop_path_rate": 0.0, "max_position_embeddings": 16,
        },
        "text_config": {
            "vocab_size": VOCAB, "d_model": HIDDEN, "encoder_layers": 1, "decoder_layers": 1,
            "encoder_ffn_dim": 64, "decoder_ffn_dim": 64, "encoder_attention_heads": 2, "decoder_attention_heads": 2,
            "max_position_embeddings": 512, "dropout": 0.0, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2,
        },
    }


def paligemma_config() -> dict[str, Any]:
    from niaf_train.tiny import tiny_backbone_config

    return tiny_backbone_config(HIDDEN, num_layers=2, image_size=32, patch_size=16, vocab_size=VOCAB)


def qwen2_5_vl_config() -> dict[str, Any]:
    return {
        "model_type": "qwen2_5_vl",
        "image_token_id": IMAGE_TOKEN, "video_token_id": 298, "vision_start_token_id": 297, "vision_end_token_id": 296,
        "vision_config": {
            "depth": 1, "hidden_size": HIDDEN, "intermediate_size": 64, "num_heads": 2, "patch_size": 8,
            "spatial_merge_size": 2, "temporal_patch_size": 2, "out_hidden_size": HIDDEN, "window_size": 16,
            "fullatt_block_indexes": [0],
        },
        "text_config": {
            "vocab_size": VOCAB, "hidden_size": HIDDEN, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "num_key_value_heads": 1, "pad_token_id": PAD, "bos_token_id": 1,
            "eos_token_id": 2, "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        },
    }


def qwen3_vl_config() -> dict[str, Any]:
    return {
        "model_type": "qwen3_vl",
        "image_token_id": IMAGE_TOKEN, "video_token_id": 298, "vision_start_token_id": 297, "vision_end_token_id": 296,
        "vision_config": {
            "depth": 2, "hidden_size": HIDDEN, "intermediate_size": 64, "num_heads": 2, "patch_size": 8,
            "spatial_merge_size": 2, "temporal_patch_size": 2, "out_hidden_size": HIDDEN,
            "num_position_embeddings": 64, "deepstack_visual_indexes": [0],
        },
        "text_config": {
            "vocab_size": VOCAB, "hidden_size": HIDDEN, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16, "pad_token_id": PAD,
            "bos_token_id": 1, "eos_token_id": 2, "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3],
                                "mrope_interleaved": True},
        },
    }


def smolvlm_config() -> dict[str, Any]:
    return {
        "model_type": "smolvlm",
        "image_token_id": IMAGE_TOKEN, "scale_factor": 2, "pad_token_id": PAD,
        "vision_config": {
            "hidden_size": HIDDEN, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
            "image_size": 32, "patch_size": 8,
        },
        "text_config": {
            "model_type": "llama", "vocab_size": VOCAB, "hidden_size": HIDDEN, "intermediate_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "pad_token_id": PAD,
        },
    }


BACKBONES = {
    "florence2": florence2_config,
    "paligemma": paligemma_config,
    "qwen2_5_vl": qwen2_5_vl_config,
    "qwen3_vl": qwen3_vl_config,
    "smolvlm": smolvlm_config,
}

IMAGE_SIDE = {"florence2": 64, "paligemma": 32, "qwen2_5_vl": 32, "qwen3_vl": 32, "smolvlm": 32}


def image_tokens_per_image(family: str) -> int:
    side = IMAGE_SIDE[family]
    if family == "florence2":
        return (side // 8) ** 2 + 1
    if family == "paligemma":
        return (side // 16) ** 2
    if family in ("qwen2_5_vl", "qwen3_vl"):
        return (side // 8) ** 2 // 4
    if family == "smolvlm":
        return (side // 8) ** 2 // 4
    raise KeyError(family)


def make_inputs(
    family: str, batch: int = 2, num_cameras: int = 1, text_len: int = 5, pad_last: int = 0, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Raw inputs: prompt = camera images' placeholder tokens then ``text_len`` text tokens.

    ``pad_last`` right-pads the last sample by that many tokens (mask 0), to exercise padding.
    """
    g = torch.Generator().manual_seed(seed)
    side = IMAGE_SIDE[family]
    n_img = image_tokens_per_image(family)
    rows = []
    for _ in range(batch):
        if family in ("qwen2_5_vl", "qwen3_vl"):  # each image framed by vision start / end tokens, as Qwen prompts are
            ids = ([297] + [IMAGE_TOKEN] * n_img + [296]) * num_cameras
        else:
            ids = [IMAGE_TOKEN] * (n_img * num_cameras)
        ids = ids + torch.randint(3, 290, (text_len,), generator=g).tolist()
        rows.append(ids)
    input_ids = torch.tensor(rows)
    attention_mask = torch.ones_like(input_ids)
    if pad_last:
        input_ids[-1, -pad_last:] = PAD
        attention_mask[-1, -pad_last:] = 0
    out: dict[str, torch.Tensor] = {"input_ids": input_ids, "attention_mask": attention_mask}
    if family in ("qwen2_5_vl", "qwen3_vl"):
        grid = side // 8
        n_patches = grid * grid
        out["pixel_values"] = torch.randn(batch * num_cameras * n_patches, 3 * 2 * 8 * 8, generator=g)
        out["image_grid_thw"] = torch.tensor([[1, grid, grid]] * (batch * num_cameras))
    else:
        # SmolVLM drops all-zero images as padding: random images never are.
        out["pixel_values"] = torch.randn(batch, num_cameras, 3, side, side, generator=g)
    return out


# --------------------------------------------------------------------------------------------------------
# A tokenizer and image processors built in code (no downloads)
# --------------------------------------------------------------------------------------------------------
WORDS = ["pick", "up", "the", "red", "blue", "block", "open", "drawer", "put", "it", "in", "what", "action",
         "should", "robot", "take", "to", "?"]


def make_tokenizer():
    """A word-level fast tokenizer over a tiny vocabulary whose ids fit the tiny backbones (< 300).

    ``<image>`` has id 299 (IMAGE_TOKEN); ``<vision_start>``/``<vision_end>`` 297/296 as in the Qwen configs.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": PAD, "<s>": 1, "</s>": 2, "<unk>": 3}
    for i, word in enumerate(WORDS):
        vocab[word] = 4 + i
    vocab.update({"<image>": IMAGE_TOKEN, "<video>": 298, "<vision_start>": 297, "<vision_end>": 296})
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>",
        additional_special_tokens=["<image>", "<video>", "<vision_start>", "<vision_end>"],
    )
    tokenizer.padding_side = "right"
    return tokenizer


def make_image_processor(family: str):
    """An image processor from explicit settings matching the tiny backbone's image size."""
    from transformers import Qwen2VLImageProcessorPil, SiglipImageProcessorPil

    side = IMAGE_SIDE[family]
    if family in ("qwen2_5_vl", "qwen3_vl"):
        return Qwen2VLImageProcessorPil(
            patch_size=8, merge_size=2, temporal_patch_size=2, min_pixels=side * side, max_pixels=side * side
        )
    return SiglipImageProcessorPil(size={"height": side, "width": side})
