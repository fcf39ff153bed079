"""NIAF models: a vision-language backbone whose learned query tokens modulate a shared SIREN.

Shipped to the Hub as remote code, flat next to ``configuration_niaf.py``, ``siren.py``,
``action_function.py`` and ``normalization.py``.
"""

from __future__ import annotations

from torch import nn
from transformers import PreTrainedModel
from transformers.utils import logging

try:  # Hub copy: the configuration file sits next to this one
    from .configuration_niaf import NiafConfig
except ImportError:  # installed package: the configuration is its own top-level package
    from configuration_niaf.configuration_niaf import NiafConfig

from .siren import ModulatedSiren, SineLinear, SirenReadout

logger = logging.get_logger(__name__)


class NiafPreTrainedModel(PreTrainedModel):
    """Weight initialisation and class attributes shared by NIAF models."""

    config_class = NiafConfig
    base_model_prefix = "niaf"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True
    _no_split_modules: list[str] = []
    # The SIREN and its derivative recursion must never run in half precision.
    _keep_in_fp32_modules = ["siren"]

    def _init_weights(self, module: nn.Module) -> None:
        # SIREN layers first: transformers' default would redraw them from N(0, 0.02).
        if isinstance(module, (SineLinear, SirenReadout)):
            module.reset_parameters()
            return
        super()._init_weights(module)


class NiafSirenHead(NiafPreTrainedModel):
    """Only the shared SIREN prior: evaluate it with externally given γ, β.

    Useful for tests, benchmarks and for exporting the motion prior; the full policy is
    [`NiafForActionFunction`].
    """

    def __init__(self, config: NiafConfig) -> None:
        super().__init__(config)
        self.siren = ModulatedSiren(config)
        self.post_init()

    def forward(self, tau, gamma, beta, derivatives: int = 0):
        return self.siren(tau, gamma, beta, derivatives=derivatives)


__all__ = ["NiafPreTrainedModel", "NiafSirenHead"]
