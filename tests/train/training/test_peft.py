"""LoRA on the backbone: head in modules_to_save; merged checkpoint reproduces the adapter model."""

from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("peft")


def _tiny_model():
    from niaf_train.tiny import tiny_backbone_config

    from modeling_niaf import NiafConfig, NiafForActionFunction

    cfg = NiafConfig(backbone_config=tiny_backbone_config(), action_dim=3, chunk_size=6, control_hz=10.0,
                     siren_width=32, modulation_groups=8, normalization_mode="IDENTITY")
    return NiafForActionFunction(cfg).eval()


def _inputs(seed: int = 0):
    from niaf_train.tiny import image_tokens

    g = torch.Generator().manual_seed(seed)
    n = image_tokens(32, 8)
    ids = torch.tensor([[511] * n + [5, 6, 7], [511] * n + [8, 9, 10]])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
            "pixel_values": torch.randn(2, 1, 3, 32, 32, generator=g)}


def test_default_targets_and_trainable_parts():
    from niaf_train.training.lora import apply_lora, default_lora_targets

    with pytest.raises(ValueError, match="no default LoRA"):
        default_lora_targets("mystery_vlm")
    peft_model = apply_lora(_tiny_model(), r=4, lora_alpha=8)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    lora = [n for n in trainable if "lora_" in n]
    assert lora and all(".language_model." in n for n in lora)  # not the vision tower
    for head in ("query_embeddings", "modulation_heads", "siren"):
        assert any(f"{head}.modules_to_save" in n for n in trainable), head
    frozen_backbone = [n for n, p in peft_model.named_parameters() if "backbone" in n and "lora_" not in n]
    assert frozen_backbone and not any(dict(peft_model.named_parameters())[n].requires_grad for n in frozen_backbone)


def test_merged_checkpoint_reproduces_adapter(tmp_path):
    from niaf_train.training.lora import apply_lora, merge_lora
    from peft import PeftModel
    from transformers import AutoModel

    torch.manual_seed(0)
    base = _tiny_model()
    base.save_pretrained(tmp_path / "base")
    peft_model = apply_lora(copy.deepcopy(base), r=4, lora_alpha=8)
    with torch.no_grad():  # a trained state: non-zero LoRA B and a moved head
        for name, p in peft_model.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                p.add_(0.05 * torch.randn_like(p))
    inputs = _inputs()
    expected = peft_model(**inputs).positions
    # the tolerance below must be far smaller than what LoRA + head training changed
    assert (expected - base(**inputs).positions).abs().max() > 1e-2

    peft_model.save_pretrained(tmp_path / "adapter")
    merged = merge_lora(copy.deepcopy(peft_model))
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    merged.save_pretrained(tmp_path / "merged")

    reloaded = AutoModel.from_pretrained(tmp_path / "merged", trust_remote_code=True).eval()
    # merging re-rounds W + BA in float32; the ω₀ = 30 SIREN amplifies that to ~1e-5
    torch.testing.assert_close(reloaded(**inputs).positions, expected, rtol=1e-3, atol=5e-5)

    # the adapter loads the way PEFT users expect, on top of the base checkpoint
    base_again = AutoModel.from_pretrained(tmp_path / "base", trust_remote_code=True)
    adapter = PeftModel.from_pretrained(base_again, tmp_path / "adapter").eval()
    torch.testing.assert_close(adapter(**inputs).positions, expected, rtol=1e-3, atol=5e-5)
