"""Sharded training (FSDP) in the niaf-train loop: the parts that differ from one process or DDP.

Under FSDP every process holds a shard of each parameter, so two things the loop does on the main process alone
need all processes first:

* exporting a Hub folder or evaluating held-out episodes: the full weights are gathered
  (``accelerator.get_state_dict``, a collective every process joins) and loaded into a plain, unsharded copy of the
  model on the main process — one complete Hub folder, loadable without any of this machinery;
* ``accelerate launch`` with an FSDP config on a machine without CUDA: Accelerate (up to at least 1.16) only turns
  FSDP on for accelerator devices and otherwise runs plain DDP on CPU without saying so. :func:`enable_cpu_fsdp`
  switches its state to FSDP2 (``torch.distributed.fsdp.fully_shard``, which runs on CPU with gloo), so that the
  sharded code path — wrapping, gathering for export, sharded optimizer state, resume — is exercised by the tests
  on CPU. It is meant for testing; on GPUs Accelerate selects FSDP itself.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import torch

logger = logging.getLogger(__name__)


def fsdp_requested() -> bool:
    """Whether the launcher asked for FSDP (``accelerate launch`` with ``distributed_type: FSDP`` sets this)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def is_sharded(accelerator: Any) -> bool:
    from accelerate.utils import DistributedType  # heavy: accelerate

    return accelerator.distributed_type == DistributedType.FSDP


def enable_cpu_fsdp(accelerator: Any, mixed_precision: str = "no") -> bool:
    """Run FSDP2 on CPU processes (gloo) when the launcher asked for FSDP and Accelerate fell back to DDP.

    Returns True when it switched the state. Raises ValueError for an FSDP1 config (``fsdp_version: 1``), which
    torch does not run on CPU.
    """
    from accelerate.utils import DistributedType  # heavy: accelerate

    if not fsdp_requested() or torch.cuda.is_available() or accelerator.distributed_type != DistributedType.MULTI_CPU:
        return False
    from accelerate import FullyShardedDataParallelPlugin  # heavy: accelerate
    from accelerate.state import PartialState  # heavy: accelerate

    plugin = FullyShardedDataParallelPlugin()  # reads the FSDP_* variables the launcher set from the config file
    if getattr(plugin, "fsdp_version", 1) != 2:
        raise ValueError("FSDP on CPU processes needs `fsdp_version: 2` in the Accelerate config (FSDP1 needs CUDA)")
    if mixed_precision != "no":
        plugin.set_mixed_precision(mixed_precision)
    # Accelerate keeps the distributed type in two shared states; both must say FSDP or a later re-read of the
    # partial state silently turns the run back into DDP.
    accelerator.state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    accelerator.state.fsdp_plugin = plugin
    logger.info("FSDP2 on %d CPU processes (gloo)", accelerator.num_processes)
    return True


def freeze_unused_parameters(model: Any) -> int:
    """Freeze backbone parameters a NIAF forward never reaches; returns how many tensors were frozen.

    Under FSDP the optimizer state is saved and loaded per parameter, and a parameter that requires a gradient
    but never received one has no state: resuming then fails ("Missing optimizer state"). The known case is
    SigLIP's attention-pooling head (``vision_use_head``, e.g. the tiny backbone): NIAF reads the vision tower's
    patch features, never its pooled output. Training is unchanged (AdamW skips parameters without a gradient).
    """
    frozen = 0
    for name, param in model.named_parameters():
        if ".vision_model.head." in name or ".vision_tower.head." in name:
            if param.requires_grad:
                param.requires_grad_(False)
                frozen += 1
    if frozen:
        logger.info("FSDP: froze %d unused vision pooling-head tensors (no gradient ever reaches them)", frozen)
    return frozen


def full_model(accelerator: Any, model: Any, rebuild: Callable[[], Any]) -> Any:
    """The trained model with complete weights, for export or evaluation; call it on every process.

    Without FSDP: the unwrapped model itself (on every process). Under FSDP: the full state dict is gathered
    (every process takes part) and loaded into ``rebuild()`` — a fresh, unsharded model of the same structure —
    on the main process; the other processes get None. The copy costs one full model of host memory on the main
    process while it lives.
    """
    if not is_sharded(accelerator):
        return accelerator.unwrap_model(model)
    state = accelerator.get_state_dict(model)
    if not accelerator.is_main_process:
        return None
    plain = rebuild()
    missing, unexpected = plain.load_state_dict(state, strict=False, assign=True)
    # tied weights (e.g. an LM head sharing the input embedding) appear once in a gathered state dict
    missing = [k for k in missing if not _tied(plain, k)]
    if missing or unexpected:
        raise RuntimeError(f"gathering the FSDP model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return plain.eval()


def _tied(model: Any, key: str) -> bool:
    names = getattr(model, "_tied_weights_keys", None) or []
    return any(key.endswith(str(n)) for n in names)


__all__ = ["enable_cpu_fsdp", "freeze_unused_parameters", "fsdp_requested", "full_model", "is_sharded"]
