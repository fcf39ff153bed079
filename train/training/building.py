"""The processor and model of a run: from a backbone (tiny, a Hub/local VLM, or a NIAF checkpoint to continue)."""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch

from ..baselines import action_head_settings  # NIAF (unchanged config) or a comparison head
from ..tiny import (
    make_tiny_image_processor,
    make_tiny_tokenizer,
    tiny_backbone_config,
    use_fixed_vision_positions,
    words_of,
)
from .arguments import ConfigError, FinetuneConfig
from .lora import HEAD_MODULES  # NIAF's own modules and a comparison model's action_head


def build_processor_and_model(cfg: FinetuneConfig, layout: dict[str, Any], stats: dict[str, Any], tasks: list[str]):
    """A fresh (or loaded) :class:`NiafProcessor` and :class:`NiafForActionFunction` for the dataset layout."""
    # lazy: modeling_niaf's names register the Auto classes (transformers' processing stack)
    from modeling_niaf import NiafConfig, NiafForActionFunction, NiafProcessor

    m = cfg.model
    state_dim = layout["state_dim"] if m.use_state else None
    if m.use_state and layout["state_dim"] is None:
        raise ConfigError("model.use_state is true but the dataset has no observation.state")
    # every NiafConfig argument of the model section, then those the backbone and the dataset decide
    head = {
        **m.niaf_config_kwargs(), "state_to_queries": bool(m.use_state and m.state_to_queries),
        "action_dim": layout["action_dim"], "control_hz": layout["fps"], "state_dim": state_dim,
        "num_cameras": len(layout["cameras"]), "normalization_stats": stats,
    }
    # the processor takes the config's arguments it shares (units, shapes, cameras) and the prompt
    shared = inspect.signature(NiafProcessor.__init__).parameters.keys() & head.keys()
    proc_kwargs = {**{key: head[key] for key in sorted(shared)}, "prompt_template": m.prompt_template}
    model_class, head = action_head_settings(m, head)
    if m.init_from_niaf:
        from transformers import AutoProcessor  # heavy: transformers

        existing = NiafConfig.from_pretrained(m.backbone)
        # control_hz: a 10 Hz head fine-tuned on 20 Hz data would keep reporting 10 Hz times and velocities
        for key in ("action_dim", "chunk_size", "control_hz", "use_state", "state_dim", "num_cameras",
                    "relative_action_state_indices"):
            have, need = getattr(existing, key), head[key]
            same = math.isclose(have, need, rel_tol=1e-9) if key == "control_hz" else have == need
            if not same:
                hint = (" (the data's fps; set data.chunk_stride so that fps / chunk_stride matches the checkpoint)"
                        if key == "control_hz" else "")
                raise ConfigError(f"model.backbone {m.backbone}: the checkpoint has {key}={have}, "
                                  f"the dataset/config needs {need}{hint}")
        try:
            processor = AutoProcessor.from_pretrained(m.backbone, trust_remote_code=True)
        except OSError as err:
            raise ConfigError(f"model.backbone {m.backbone}: no NiafProcessor saved with the checkpoint ({err})") from err
        if existing.relative_action_state_indices is not None and (
            not hasattr(processor, "relative_actions")
            or processor.relative_action_state_indices != existing.relative_action_state_indices
        ):
            raise ConfigError(
                f"model.backbone {m.backbone}: the checkpoint's model uses relative actions but its processor does not "
                "build them (saved by an older niaf); load it and save it again with this version (model.save_pretrained"
                "(dir, processor=processor) after setting processor.relative_action_state_indices)"
            )
        # keep the checkpoint's statistics: the model was trained in those units
        return processor, NiafForActionFunction.from_pretrained(m.backbone)
    if m.backbone == "tiny":
        tokenizer = make_tiny_tokenizer(words_of(tasks + [m.prompt_template.replace("{instruction}", "")]))
        backbone_config = tiny_backbone_config(m.tiny_hidden_size, m.tiny_num_layers, m.tiny_image_size,
                                               m.tiny_patch_size)
        # a PaliGemma-architecture backbone: image tokens, count and prompt framing come from backbones.py
        processor = NiafProcessor.from_backbone_parts(
            backbone_config, make_tiny_image_processor(m.tiny_image_size), tokenizer, **proc_kwargs
        )
        config = NiafConfig(backbone_config=backbone_config, **head)
        model = model_class(config)
        if m.tiny_vision_positions == "sincos":
            use_fixed_vision_positions(model)
        return processor, model
    # the backbone's own processor, framed as the backbone was pretrained (backbones.py); config overrides win
    processor = NiafProcessor.from_pretrained_backbone(
        m.backbone, image_token=m.image_token, image_seq_length=m.image_seq_length, **proc_kwargs
    )
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[m.torch_dtype]
    model = model_class.from_pretrained_backbone(m.backbone, backbone_kwargs={"dtype": dtype}, **head)
    return processor, model


def head_parameter(name: str) -> bool:
    """Whether a (possibly PEFT-prefixed) parameter belongs to the NIAF head rather than the backbone."""
    parts = name.split(".")
    return any(p in HEAD_MODULES for p in parts[:6]) and "backbone" not in parts[:4]
