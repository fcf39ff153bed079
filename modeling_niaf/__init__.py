"""NIAF: Neural Implicit Action Fields (arXiv 2603.01766) for transformers.

Importing this package registers `NiafConfig` with transformers' Auto API (model type ``"niaf"``).
"""

from configuration_niaf import NORMALIZATION_MODES, NiafConfig

from .action_function import ActionFunction, ActionTrajectory, NumpyActionFunction
from .modeling_niaf import NiafPreTrainedModel, NiafSirenHead
from .normalization import AffineNormalizer, affine_from_stats
from .siren import ModulatedSiren, SineLinear, SirenReadout


def _register_auto_classes() -> None:
    from transformers import AutoConfig

    try:
        AutoConfig.register("niaf", NiafConfig)
    except ValueError:  # already registered (re-import)
        pass


_register_auto_classes()

__all__ = [
    "ActionFunction",
    "ActionTrajectory",
    "AffineNormalizer",
    "ModulatedSiren",
    "NORMALIZATION_MODES",
    "NiafConfig",
    "NiafPreTrainedModel",
    "NiafSirenHead",
    "NumpyActionFunction",
    "SineLinear",
    "SirenReadout",
    "affine_from_stats",
]
