"""Published backbone architectures (modeling_niaf/published_backbones): built from the stored configuration
values with random weights, on the meta device, their parameter counts within 1 % of the published totals."""

from __future__ import annotations

import pytest

from modeling_niaf.backbones import family_of
from modeling_niaf.published_backbones import (
    PUBLISHED_BACKBONES,
    count_parameters,
    niaf_with_random_backbone,
    parameter_count,
    published_backbone,
    published_backbone_config,
)

NAMES = list(PUBLISHED_BACKBONES)


def _config_or_skip(name: str):
    try:
        return published_backbone_config(name)
    except (ValueError, KeyError, TypeError) as err:  # a transformers version that lacks the family
        import transformers

        pytest.skip(f"transformers {transformers.__version__} cannot build {name}: {err}"[:200])


def test_the_readme_backbones_are_all_there():
    hub_ids = {b.hub_id for b in PUBLISHED_BACKBONES.values()}
    assert {"florence-community/Florence-2-base", "florence-community/Florence-2-large", "google/paligemma-3b-pt-224",
            "Qwen/Qwen2.5-VL-3B-Instruct", "HuggingFaceTB/SmolVLM-256M-Instruct",
            "HuggingFaceTB/SmolVLM-500M-Instruct"} <= hub_ids
    assert any(b.hub_id.startswith("Qwen/Qwen3-VL-2B") for b in PUBLISHED_BACKBONES.values())
    assert published_backbone("google/paligemma-3b-pt-224").name == "paligemma-3b-224"
    with pytest.raises(KeyError, match="known: florence2-base"):
        published_backbone("nope")


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_matches_the_published_total(name):
    config = _config_or_skip(name)
    family_of(config)  # a supported NIAF family
    ours = parameter_count(name)  # on the meta device: no memory for the 3-4 B models
    published = PUBLISHED_BACKBONES[name].published_parameters
    assert abs(ours / published - 1) < 0.01, (name, ours, published)


@pytest.mark.parametrize("name", NAMES)
def test_niaf_on_the_meta_device(name):
    _config_or_skip(name)
    model = niaf_with_random_backbone(name, device="meta", action_dim=7, chunk_size=10, control_hz=20.0)
    assert all(p.device.type == "meta" for p in model.parameters())
    backbone = count_parameters(model.backbone)
    # NIAF keeps the backbone without its language-model head; with a tied head the totals agree
    full = parameter_count(name, with_lm_head=True)
    config = published_backbone_config(name)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    text = config.text_config
    vocab, hidden = text.vocab_size, getattr(text, "hidden_size", None) or text.d_model
    assert full - backbone == (0 if tied else vocab * hidden)
    # the head: queries + ψ heads + SIREN, a few million parameters at most
    head = count_parameters(model) - backbone
    assert 0 < head < 0.02 * backbone + 5e6
