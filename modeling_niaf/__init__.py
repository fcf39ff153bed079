"""NIAF: Neural Implicit Action Fields (arXiv 2603.01766) for transformers.

Importing this package registers `NiafConfig` (model type ``"niaf"``) and `NiafForActionFunction` with
transformers' Auto API, so an installed package loads NIAF checkpoints with ``AutoModel.from_pretrained``
even without ``trust_remote_code``.
"""

from configuration_niaf import NiafConfig
from configuration_niaf.normalization import NORMALIZATION_MODES, AffineNormalizer, affine_from_stats

from .action_function import ActionFunction, ActionTrajectory, NumpyActionFunction
from .hub import render_model_card, save_for_hub
from .modeling_niaf import (
    NiafActionFunctionOutput,
    NiafForActionFunction,
    NiafModulationHeads,
    NiafPreTrainedModel,
    NiafQueryEmbeddings,
    NiafSirenHead,
)
from .processing_niaf import NiafProcessor
from .siren import ModulatedSiren, SineLinear, SirenReadout


def _register_auto_classes() -> None:
    from transformers import AutoConfig, AutoModel, AutoProcessor

    for register in (
        lambda: AutoConfig.register("niaf", NiafConfig),
        lambda: AutoModel.register(NiafConfig, NiafForActionFunction),
        lambda: AutoProcessor.register(NiafConfig, NiafProcessor),
    ):
        try:
            register()
        except ValueError:  # already registered (re-import)
            pass


_register_auto_classes()

__all__ = [
    "ActionFunction",
    "ActionTrajectory",
    "AffineNormalizer",
    "ModulatedSiren",
    "NORMALIZATION_MODES",
    "NiafActionFunctionOutput",
    "NiafConfig",
    "NiafForActionFunction",
    "NiafModulationHeads",
    "NiafPreTrainedModel",
    "NiafProcessor",
    "NiafQueryEmbeddings",
    "NiafSirenHead",
    "NumpyActionFunction",
    "SineLinear",
    "SirenReadout",
    "affine_from_stats",
    "render_model_card",
    "save_for_hub",
]
