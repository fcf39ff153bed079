"""NIAF: Neural Implicit Action Fields (arXiv 2603.01766) for transformers.

The package imports lazily (PEP 562): ``import modeling_niaf`` costs nothing, and a name is imported on first
use. The deployment side, `NumpyActionFunction`, `ActionTrajectory`, `ActionStream` and `JointCommand`
(``modeling_niaf.numpy_function``, ``modeling_niaf.runtime``), needs numpy only: a control process never
imports torch or transformers through it.

The first use of a model-side name (`NiafConfig`, `NiafModel`, `NiafForActionFunction`, `NiafProcessor`,
`ActionFunction`, ...) imports torch and transformers and registers the model type ``"niaf"`` with
transformers' `AutoConfig`, `AutoModel` and `AutoProcessor`, so that an installed package loads NIAF
checkpoints without ``trust_remote_code``. Code that only calls the Auto classes registers explicitly with
[`register_auto_classes`].

Building blocks (`ModulatedSiren`, `AffineNormalizer`, ...) are imported from their submodules
(``modeling_niaf.siren``, ``configuration_niaf.normalization``, ...).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from configuration_niaf import NiafConfig

    from .action_function import ActionFunction
    from .hub import render_model_card, save_for_hub
    from .modeling_niaf import (
        NiafActionFunctionOutput,
        NiafForActionFunction,
        NiafModel,
        NiafModelOutput,
        NiafPreTrainedModel,
    )
    from .numpy_function import ActionTrajectory, NumpyActionFunction
    from .processing_niaf import NiafProcessor
    from .runtime import ActionStream, JointCommand

_NUMPY_SIDE = {
    "ActionTrajectory": "modeling_niaf.numpy_function",
    "NumpyActionFunction": "modeling_niaf.numpy_function",
    "ActionStream": "modeling_niaf.runtime",
    "JointCommand": "modeling_niaf.runtime",
}
"""Public names that need numpy only: importing them registers nothing and imports no torch."""

_MODEL_SIDE = {
    "NiafConfig": "configuration_niaf",
    "NiafPreTrainedModel": "modeling_niaf.modeling_niaf",
    "NiafModel": "modeling_niaf.modeling_niaf",
    "NiafModelOutput": "modeling_niaf.modeling_niaf",
    "NiafForActionFunction": "modeling_niaf.modeling_niaf",
    "NiafActionFunctionOutput": "modeling_niaf.modeling_niaf",
    "NiafProcessor": "modeling_niaf.processing_niaf",
    "ActionFunction": "modeling_niaf.action_function",
    "save_for_hub": "modeling_niaf.hub",
    "render_model_card": "modeling_niaf.hub",
}
"""Public names of the torch side: the first access also runs [`register_auto_classes`]."""

_SUBMODULE_ONLY = {
    "ModulatedSiren": "siren", "SineLinear": "siren", "SirenReadout": "siren",
    "NiafModulationHeads": "modeling_niaf", "NiafQueryEmbeddings": "modeling_niaf", "NiafSirenHead": "modeling_niaf",
    "AffineNormalizer": "configuration_niaf.normalization", "affine_from_stats": "configuration_niaf.normalization",
}
"""Names the package exported before 0.1.0 became lazy; they live in their submodules (named in the error)."""

_registered = False


def register_auto_classes() -> None:
    """Register `NiafConfig` (model type ``"niaf"``), `NiafForActionFunction` and `NiafProcessor` with
    transformers' `AutoConfig`, `AutoModel` and `AutoProcessor`. Idempotent; imports torch and transformers.

    `AutoModel` gives the policy, as the ``auto_map`` of every saved checkpoint does (``hub.MODEL_AUTO_MAP``):
    transformers has no Auto class for action prediction, and ``AutoModel.from_pretrained`` has always returned
    a NIAF checkpoint's policy. The base alone is `NiafModel.from_pretrained`.

    Runs by itself on the first use of a model-side name of this package; call it when your code only uses
    the Auto classes, e.g. ``AutoModel.from_pretrained(folder)`` without ``trust_remote_code``.
    """
    global _registered
    if _registered:
        return
    from transformers import AutoConfig, AutoModel, AutoProcessor

    from configuration_niaf import NiafConfig

    from .modeling_niaf import NiafForActionFunction
    from .processing_niaf import NiafProcessor

    for register in (
        lambda: AutoConfig.register("niaf", NiafConfig),
        lambda: AutoModel.register(NiafConfig, NiafForActionFunction),
        lambda: AutoProcessor.register(NiafConfig, NiafProcessor),
    ):
        try:
            register()
        except ValueError:  # already registered (e.g. by an earlier copy of this package)
            pass
    _registered = True


def __getattr__(name: str) -> Any:
    module = _NUMPY_SIDE.get(name) or _MODEL_SIDE.get(name)
    if module is None:
        if name in _SUBMODULE_ONLY:
            sub = _SUBMODULE_ONLY[name]
            raise AttributeError(f"module 'modeling_niaf' does not export {name!r} (a building block, not public "
                                 f"API): use `from {sub if '.' in sub else 'modeling_niaf.' + sub} import {name}`")
        raise AttributeError(f"module 'modeling_niaf' has no attribute {name!r}")
    if name in _MODEL_SIDE:
        register_auto_classes()
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later accesses skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "ActionFunction",
    "ActionStream",
    "ActionTrajectory",
    "JointCommand",
    "NiafActionFunctionOutput",
    "NiafConfig",
    "NiafForActionFunction",
    "NiafModel",
    "NiafModelOutput",
    "NiafPreTrainedModel",
    "NiafProcessor",
    "NumpyActionFunction",
    "register_auto_classes",
    "render_model_card",
    "save_for_hub",
]
