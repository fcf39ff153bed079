"""Published backbone architectures without their weights.

The vision-language backbones docs/scale.md names, as small JSON files holding the values of each model's published
``config.json`` (written by hand from the published values; nothing here is downloaded). They let you build the
real-size architecture with random weights — on the ``meta`` device to count parameters or plan memory without
allocating any, or on a real device to measure step time and memory before downloading gigabytes of weights:

```python
from modeling_niaf.published_backbones import niaf_with_random_backbone, parameter_count

parameter_count("qwen2_5_vl-3b")                       # 3,754,622,976, counted on the meta device
model = niaf_with_random_backbone("smolvlm-256m", action_dim=7, chunk_size=10, control_hz=20.0)
```

A checkpoint trained from such a model has a random backbone: use it for sizing and benchmarks only; train from
``NiafForActionFunction.from_pretrained_backbone(hub_id)`` for real work.

This sub-package is installed with ``modeling_niaf`` but not shipped to the Hub as remote code (the model does not
import it).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class PublishedBackbone:
    """One published backbone: its Hub id, the JSON file of its configuration and its published size.

    Attributes:
        name: short name used by this package (``"smolvlm-256m"``).
        hub_id: the Hub repository the configuration values come from.
        file: the JSON file (next to this module) with the configuration values.
        published_parameters: the published total parameter count of the whole vision-language model
            (language-model head included, counted once when tied to the input embeddings).
        source: where ``published_parameters`` comes from.
        image_size: the square input image side the model was pretrained at (pixels), used by the benchmarks.
        notes: where the JSON departs from, or is less certain than, the published file.
    """

    name: str
    hub_id: str
    file: str
    published_parameters: int
    source: str
    image_size: int
    notes: str = ""

    @property
    def path(self) -> Path:
        return _HERE / self.file

    def config_dict(self) -> dict[str, Any]:
        """The configuration values as stored (a fresh dict each call)."""
        return json.loads(self.path.read_text(encoding="utf-8"))


# Published totals. "Hub" means the parameter count the Hugging Face Hub page shows for the repository (computed
# by the Hub from the safetensors headers, rounded to 3 significant digits); "model card" means the number written
# in the model card's text. They were recalled, not fetched, in this session (no network): the test holds our
# count to 1 % of them, and each agrees to < 0.5 %, but a source that rounds to 2 digits (Florence-2's
# "0.23B" / "0.77B") is itself only known to about ±2 %.
PUBLISHED_BACKBONES: dict[str, PublishedBackbone] = {
    b.name: b
    for b in (
        PublishedBackbone(
            "florence2-base", "florence-community/Florence-2-base", "florence2_base.json", 230_000_000,
            "model card of microsoft/Florence-2-base: 'Florence-2-base 0.23B'", 768,
            notes="transformers-native layout (florence-community conversion). text vocab_size 51290 = the original "
                  "51289 tokens plus the <image> token (id 51289) the conversion adds; whether the converted "
                  "checkpoint pads the embedding further is not verified here (768 parameters per row).",
        ),
        PublishedBackbone(
            "florence2-large", "florence-community/Florence-2-large", "florence2_large.json", 770_000_000,
            "model card of microsoft/Florence-2-large: 'Florence-2-large 0.77B'", 768,
            notes="as florence2-base (vocab_size 51290).",
        ),
        PublishedBackbone(
            "paligemma-3b-224", "google/paligemma-3b-pt-224", "paligemma_3b_pt_224.json", 2_920_000_000,
            "Hub page of google/paligemma-3b-pt-224: 2.92B params", 224,
        ),
        PublishedBackbone(
            "qwen2_5_vl-3b", "Qwen/Qwen2.5-VL-3B-Instruct", "qwen2_5_vl_3b_instruct.json", 3_750_000_000,
            "Hub page of Qwen/Qwen2.5-VL-3B-Instruct: 3.75B params", 448,
            notes="the published config.json keeps the language-model keys at the top level (transformers 4.x "
                  "layout); here they sit in text_config, as transformers 5 reads them.",
        ),
        PublishedBackbone(
            "qwen3_vl-2b", "Qwen/Qwen3-VL-2B-Instruct", "qwen3_vl_2b_instruct.json", 2_130_000_000,
            "Hub page of Qwen/Qwen3-VL-2B-Instruct: 2.13B params (recalled with less certainty than the others)", 448,
        ),
        PublishedBackbone(
            "smolvlm-256m", "HuggingFaceTB/SmolVLM-256M-Instruct", "smolvlm_256m_instruct.json", 256_000_000,
            "Hub page and name of HuggingFaceTB/SmolVLM-256M-Instruct: 256M params", 512,
            notes="model_type idefics3, as the published config.json (Idefics3ForConditionalGeneration); "
                  "lm_head untied.",
        ),
        PublishedBackbone(
            "smolvlm-500m", "HuggingFaceTB/SmolVLM-500M-Instruct", "smolvlm_500m_instruct.json", 507_000_000,
            "Hub page of HuggingFaceTB/SmolVLM-500M-Instruct: 507M params", 512,
            notes="as smolvlm-256m.",
        ),
    )
}


def published_backbone(name: str) -> PublishedBackbone:
    """The entry of ``name`` (a short name or its Hub id).

    Raises:
        KeyError: one line naming the known names.
    """
    if name in PUBLISHED_BACKBONES:
        return PUBLISHED_BACKBONES[name]
    for entry in PUBLISHED_BACKBONES.values():
        if entry.hub_id == name:
            return entry
    raise KeyError(f"no published backbone {name!r}; known: {', '.join(PUBLISHED_BACKBONES)}")


def published_backbone_config(name: str) -> Any:
    """The transformers config of a published backbone, built from its JSON file (no download)."""
    from transformers import AutoConfig

    values = published_backbone(name).config_dict()
    model_type = values.pop("model_type")
    return AutoConfig.for_model(model_type, **values)


def build_backbone(name: str, device: Any = "meta", dtype: Any = None, with_lm_head: bool = False) -> Any:
    """The backbone with random weights: ``AutoModel`` (what NIAF uses) or, with ``with_lm_head``, the
    ``AutoModelForImageTextToText`` model the published parameter count refers to.

    ``device="meta"`` (the default) allocates no memory: use it to count parameters of multi-billion models.
    """
    import torch
    from transformers import AutoModel, AutoModelForImageTextToText

    config = published_backbone_config(name)
    factory = AutoModelForImageTextToText if with_lm_head else AutoModel
    with torch.device(device):
        model = factory.from_config(config)
    return model.to(dtype) if dtype is not None else model


def count_parameters(module: Any) -> int:
    """Parameters of ``module``, each shared (tied) tensor counted once (as ``nn.Module.parameters`` yields)."""
    return sum(p.numel() for p in module.parameters())


def parameter_count(name: str, with_lm_head: bool = True) -> int:
    """The parameter count of a published backbone, counted on the meta device (no memory allocated)."""
    return count_parameters(build_backbone(name, device="meta", with_lm_head=with_lm_head))


def niaf_with_random_backbone(name: str, device: Any = None, dtype: Any = None, **config_kwargs: Any) -> Any:
    """A [`NiafForActionFunction`] on a published backbone architecture with random weights.

    Args:
        name: a key of `PUBLISHED_BACKBONES` or its Hub id.
        device: where to build it (``"meta"`` for sizing without memory); default the current default device.
        dtype: storage dtype of the backbone weights (e.g. ``torch.bfloat16``); the NIAF head stays float32.
        **config_kwargs: [`NiafConfig`] fields (``action_dim``, ``chunk_size``, ``control_hz``, ...).
    """
    import torch

    from configuration_niaf import NiafConfig

    from ..modeling_niaf import NiafForActionFunction

    config = NiafConfig(backbone_config=published_backbone_config(name), **config_kwargs)
    if device is None:
        model = NiafForActionFunction(config)
    else:
        with torch.device(device):
            model = NiafForActionFunction(config)
    if dtype is not None:
        model.backbone.to(dtype)
    logger.info("built %s (%s) with random weights: %s parameters", name, published_backbone(name).hub_id,
                f"{count_parameters(model):,}")
    return model


__all__ = [
    "PUBLISHED_BACKBONES",
    "PublishedBackbone",
    "build_backbone",
    "count_parameters",
    "niaf_with_random_backbone",
    "parameter_count",
    "published_backbone",
    "published_backbone_config",
]
