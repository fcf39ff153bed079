"""LoRA on the backbone of a NIAF policy, with the NIAF head always trained in full.

One function, :func:`default_lora_targets`, holds the default target modules per backbone family. The NIAF
head (learned queries, ψ modulation heads, SIREN prior, state projection) is in PEFT's ``modules_to_save``:
trained in full, saved with the adapter, and swapped in by ``merge_and_unload``.

Two ways to ship the result (``peft.save_merged``):

* merged (default): :func:`merge_lora` folds the LoRA deltas into the backbone weights and returns a plain
  :class:`NiafForActionFunction`, saved like any NIAF checkpoint (``AutoModel.from_pretrained(...,
  trust_remote_code=True)``);
* adapter: ``peft_model.save_pretrained(dir)`` writes ``adapter_config.json`` + ``adapter_model.safetensors``;
  load with ``PeftModel.from_pretrained(AutoModel.from_pretrained(base, trust_remote_code=True), dir)`` where
  ``base`` is the NIAF checkpoint the run started from (``niaf-train`` writes it to ``<output_dir>/base_model``).
"""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

logger = logging.getLogger(__name__)

HEAD_MODULES = ("query_embeddings", "modulation_heads", "siren", "state_projection", "action_head")
"""Top-level NIAF modules that are trained in full under LoRA (``modules_to_save``); ``action_head`` is the head
of a comparison model (``niaf_train.baselines``)."""

_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
_FAMILY_TARGETS: dict[str, tuple[str, ...]] = {
    # decoder-only language models (Gemma, Llama, Qwen): attention projections of the language model
    "paligemma": _ATTENTION,
    "smolvlm": _ATTENTION,
    "idefics3": _ATTENTION,
    "qwen2_vl": _ATTENTION,
    "qwen2_5_vl": _ATTENTION,
    "qwen3_vl": _ATTENTION,
    # Florence-2: BART-style encoder/decoder attention (self and cross) of the language model
    "florence2": ("q_proj", "k_proj", "v_proj", "out_proj"),
}


def default_lora_targets(family: str) -> str:
    """The default LoRA ``target_modules`` of a backbone family, as a regex over full module names.

    LoRA goes on the attention projections of the backbone's language model (encoder and decoder for
    Florence-2); the vision tower stays frozen, the NIAF head is trained in full (``modules_to_save``).

    Raises:
        ValueError: for a family without a default; pass ``peft.target_modules`` explicitly then.
    """
    if family not in _FAMILY_TARGETS:
        raise ValueError(
            f"no default LoRA target modules for backbone family {family!r}; known: {sorted(_FAMILY_TARGETS)}. "
            "Set `peft.target_modules`."
        )
    names = "|".join(_FAMILY_TARGETS[family])
    # only inside the language model of the backbone (not the vision tower, not the NIAF head)
    return rf"^backbone\.(.*\.)?language_model\..*\.({names})$"


def head_modules(model: nn.Module) -> list[str]:
    """The NIAF head modules present in ``model`` (``state_projection`` only when ``use_state``)."""
    return [name for name in HEAD_MODULES if getattr(model, name, None) is not None]


def apply_lora(
    model: nn.Module,
    r: int = 16,
    lora_alpha: int = 32,
    lora_dropout: float = 0.0,
    target_modules: list[str] | str | None = None,
) -> Any:
    """Wrap a :class:`NiafForActionFunction` with LoRA on its backbone; returns a ``peft.PeftModel``.

    Args:
        model: the NIAF policy.
        r, lora_alpha, lora_dropout: LoRA rank, scaling numerator (scale = alpha / r) and dropout.
        target_modules: module names or one regex; None: :func:`default_lora_targets` of the family.
    """
    from peft import LoraConfig, get_peft_model

    family = model.config.backbone_config.model_type
    targets: list[str] | str = target_modules if target_modules else default_lora_targets(family)
    if isinstance(targets, list) and len(targets) == 1 and any(c in targets[0] for c in "^$\\|("):
        targets = targets[0]  # one regex given on the command line
    config = LoraConfig(
        r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=targets,
        modules_to_save=head_modules(model), bias="none",
    )
    peft_model = get_peft_model(model, config)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in peft_model.parameters())
    if not any("lora_" in n for n, _ in peft_model.named_parameters()):
        raise ValueError(f"LoRA target modules {targets!r} matched no module of the {family} backbone")
    logger.info("LoRA r=%d alpha=%d on %s: %d trainable of %d parameters (%.2f%%)",
                r, lora_alpha, targets, trainable, total, 100.0 * trainable / max(total, 1))
    return peft_model


def merge_lora(peft_model: Any) -> nn.Module:
    """Fold the LoRA deltas into the weights and return the plain NIAF model (trained head swapped in)."""
    return peft_model.merge_and_unload()


def is_peft_model(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a train extra
        return False
    return isinstance(model, PeftModel)


__all__ = ["HEAD_MODULES", "apply_lora", "default_lora_targets", "head_modules", "is_peft_model", "merge_lora"]
