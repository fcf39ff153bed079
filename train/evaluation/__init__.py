"""Closed-loop evaluation of NIAF policies in a simulator (``niaf-eval``).

* :mod:`.closed_loop`: the episode runner. A policy is run every few environment steps on observations built
  by :class:`niaf_train.data.metaworld.MetaWorldScene` (the code that records the demonstrations); its action
  function goes through the streaming runtime (:class:`modeling_niaf.runtime.ActionStream`) and is queried at the
  environment's own step times.
* :mod:`.settings`, :mod:`.adapters`, :mod:`.policies`, :mod:`.checkpoint`: what the runner is given (the
  settings, the inputs a policy is shown, the policies, a checkpoint loaded as one and its held-out seeds).
* :mod:`.report`: success rates with Wilson intervals, ``results.json``, the figure and the rollout videos.
* :mod:`.cli`: the ``niaf-eval`` command line.
"""

from .closed_loop import (
    EXECUTIONS,
    POLICIES,
    EpisodeResult,
    EvalSettings,
    WaypointFunction,
    evaluate,
    first_observation,
    load_policy,
    training_record,
)
from .report import wilson_interval

__all__ = [
    "EXECUTIONS",
    "EpisodeResult",
    "EvalSettings",
    "POLICIES",
    "WaypointFunction",
    "evaluate",
    "first_observation",
    "load_policy",
    "training_record",
    "wilson_interval",
]
