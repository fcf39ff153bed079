"""NIAF (Neural Implicit Action Fields) as a LeRobot policy plugin.

LeRobot imports this distribution (``lerobot_policy_niaf``) through ``register_third_party_plugins()``; importing
it registers ``--policy.type=niaf``. The policy class and the processor factory are found by LeRobot's naming
convention in the sibling modules ``modeling_niaf`` and ``processor_niaf``.
"""

from .configuration_niaf import NiafConfig

__all__ = ["NiafConfig"]
