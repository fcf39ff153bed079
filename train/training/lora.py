"""LoRA on the backbone of a NIAF policy, with the NIAF head always trained in full.

:func:`default_lora_targets` gives the default target modules of a backbone family (``modeling_niaf/backbones.py``
holds them, with the rest of what NIAF knows per family). The NIAF head (learned queries, ψ modulation heads,
SIREN prior, state projection) is in PEFT's ``modules_to_save``: trained in full, saved with the adapter, and
swapped in by ``merge_and_unload``.

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

from modeling_niaf import backbones
from modeling_niaf.backbones import SUPPORTED_MODEL_TYPES, family_of

logger = logging.getLogger(__name__)

COMPARISON_HEAD_MODULE = "action_head"
HEAD_MODULES = (*backbones.HEAD_MODULES, COMPARISON_HEAD_MODULE)
"""Top-level modules trained in full under LoRA (``modules_to_save``): NIAF's own (``backbones.HEAD_MODULES``) and
``action_head``, the head of a comparison model (``niaf_train.baselines``)."""


def default_lora_targets(family: str) -> str:
    """The default LoRA ``target_modules`` of a backbone ``model_type``, as a regex over full module names.

    LoRA goes on the attention projections of the backbone's language model (encoder and decoder for
    Florence-2); the vision tower stays frozen, the NIAF head is trained in full (``modules_to_save``). The
    names per family live in ``modeling_niaf/backbones.py``.

    Raises:
        ValueError: for a model type without a family; pass ``peft.target_modules`` explicitly then.
    """
    try:
        return family_of(family).lora_target_regex()
    except ValueError:
        raise ValueError(
            f"no default LoRA target modules for backbone family {family!r}; known: {list(SUPPORTED_MODEL_TYPES)}. "
            "Set `peft.target_modules`."
        ) from None


def head_modules(model: nn.Module) -> list[str]:
    """The NIAF head modules present in ``model`` (``state_projection`` only when ``use_state``)."""
    names = (*family_of(model.config.backbone_config).head_modules, COMPARISON_HEAD_MODULE)
    return [name for name in names if getattr(model, name, None) is not None]


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
    from peft import LoraConfig, get_peft_model  # optional dependency: peft

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
        from peft import PeftModel  # optional dependency: peft
    except ImportError:  # pragma: no cover - peft is a train extra
        return False
    return isinstance(model, PeftModel)


__all__ = ["HEAD_MODULES", "apply_lora", "default_lora_targets", "head_modules", "is_peft_model", "merge_lora"]
