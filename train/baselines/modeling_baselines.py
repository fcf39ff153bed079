"""NIAF's backbone, learned queries and state pathway with a comparison head instead of the ψ heads + SIREN.

[`NiafBaselineForActionFunction`] is a task model on NIAF's base [`NiafModel`], a sibling of
[`NiafForActionFunction`]: it keeps everything up to Z = the backbone's outputs at the Q learned query tokens
(``encode_queries``: the same queries, the same state token, the same masks, the same processor and normalised
targets) and NIAF's action-policy API ([`NiafActionPolicyMixin`]: the checks, ``forward``,
``predict_action_function``, ``generate_actions``, the units); only what turns Z into actions differs
(:mod:`.heads`). Its ``predict_action_function`` returns a [`BasisActionFunction`] with NIAF's call signature,
so niaf-train's evaluation, niaf-eval and ``ActionStream`` use it unchanged.

Checkpoints: ``config.json`` is a [`NiafConfig`] with the extra keys ``action_head`` (``waypoints``, ``bspline``
or ``flow``), the head's settings and ``loader`` (:data:`LOADER`, the function that loads it, which NIAF's
``from_pretrained`` names when it is given such a checkpoint). Load with :func:`niaf_train.baselines.load_model`
(or this class's ``from_pretrained``) and the processor with :func:`niaf_train.baselines.load_processor`.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from modeling_niaf.hub import MODEL_AUTO_MAP, code_sources
from modeling_niaf.modeling_niaf import (
    DenseTargets,
    NiafActionFunctionOutput,
    NiafActionPolicyMixin,
    NiafModel,
    dense_supervised_losses,
)

from .functions import INTERPOLATIONS, BasisActionFunction, spline_basis, waypoint_basis
from .heads import BaselineHead, BSplineHead, FlowHead, WaypointHead

logger = logging.getLogger(__name__)

COMPARISON_HEADS = ("waypoints", "bspline", "flow")
ACTION_HEADS = ("niaf", *COMPARISON_HEADS)
"""Values of ``model.action_head`` / ``config.action_head``; ``niaf`` (or no key at all) is NIAF itself."""

HEAD_DEFAULTS: dict[str, Any] = {
    "head_hidden_size": 256,
    "bspline_control_points": 6,
    "waypoint_loss": "l1",
    "chunk_interpolation": "linear",
    "flow_steps": 10,
    "flow_seed": 0,
}
"""Settings of the comparison heads stored in config.json next to ``action_head`` (defaults for absent keys)."""

WAYPOINT_LOSSES = ("l1", "l2")

LOADER = "niaf_train.baselines.load_model"
"""Written into a comparison checkpoint's config.json as ``loader``: what NIAF's ``from_pretrained`` tells a
caller to load it with (the model layer does not know the training package)."""


def head_setting(config: Any, name: str) -> Any:
    return getattr(config, name, HEAD_DEFAULTS[name])


def check_head_config(config: Any) -> str:
    """``config.action_head`` of a comparison-head config, with its settings checked (ValueError naming the key)."""
    kind = getattr(config, "action_head", None)
    if kind not in COMPARISON_HEADS:
        raise ValueError(f"config.action_head must be one of {COMPARISON_HEADS} for a comparison-head model, got "
                         f"{kind!r} (a NIAF model is NiafForActionFunction)")
    width = head_setting(config, "head_hidden_size")
    if isinstance(width, bool) or not isinstance(width, int) or not 1 <= width <= 65536:
        raise ValueError(f"config.head_hidden_size must be an int in [1, 65536], got {width!r}")
    m = head_setting(config, "bspline_control_points")
    if kind == "bspline" and (isinstance(m, bool) or not isinstance(m, int) or not 4 <= m <= 1024):
        raise ValueError(f"config.bspline_control_points must be an int in [4, 1024] (a cubic needs 4), got {m!r}")
    if head_setting(config, "waypoint_loss") not in WAYPOINT_LOSSES:
        raise ValueError(f"config.waypoint_loss must be one of {WAYPOINT_LOSSES}, got {head_setting(config, 'waypoint_loss')!r}")
    if head_setting(config, "chunk_interpolation") not in INTERPOLATIONS:
        raise ValueError(f"config.chunk_interpolation must be one of {INTERPOLATIONS}, "
                         f"got {head_setting(config, 'chunk_interpolation')!r}")
    steps = head_setting(config, "flow_steps")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 1000:
        raise ValueError(f"config.flow_steps must be an int in [1, 1000], got {steps!r}")
    return kind


def build_head(config: Any) -> BaselineHead:
    kind = check_head_config(config)
    q, d, k, dim = config.num_queries, config.hidden_size, config.chunk_size, config.action_dim
    width = head_setting(config, "head_hidden_size")
    if kind == "waypoints":
        return WaypointHead(q, d, k, dim, width)
    if kind == "bspline":
        return BSplineHead(q, d, head_setting(config, "bspline_control_points"), dim, width)
    return FlowHead(q, d, k, dim, width, head_setting(config, "flow_steps"))


class NiafBaselineForActionFunction(NiafActionPolicyMixin, NiafModel):
    """NIAF's base (backbone + learned queries (+ state token)) + one comparison head (``config.action_head``).

    Same inputs as [`NiafForActionFunction`]. ``forward`` takes the same normalised targets and ``action_mask``:

    * ``waypoints``: L1 (default, as OFT) or squared-L2 error of the K waypoints (``config.waypoint_loss``);
    * ``bspline``: NIAF's losses on the spline at τ_k: λ_p·L_pos (+ λ_v·L_vel with velocities, + λ_j·L_jerk);
    * ``flow``: the flow-matching loss ‖v - (a - x₀)‖² at a random time (``loss_pos`` holds it).

    Every loss term is summed over action dimensions and averaged over valid (sample, step) pairs, as NIAF's.
    """

    _keep_in_fp32_modules = ["action_head"]
    _keep_in_fp32_modules_strict = ["action_head"]
    _keys_to_ignore_on_load_unexpected = None  # strict: every weight of the checkpoint is this head's

    def __init__(self, config: Any) -> None:
        check_head_config(config)  # before the backbone is built: a NIAF config is refused at once
        super().__init__(config)

    def _build_head(self, config: Any) -> None:
        """The comparison head, built where NIAF builds its ψ heads and SIREN (after the shared part, before
        the weights are initialised)."""
        self.action_head_kind = check_head_config(config)
        self.action_head = build_head(config)

    def _init_weights(self, module: nn.Module) -> None:
        # the head's Linear layers are re-drawn by the head itself (visited after its children)
        if isinstance(module, BaselineHead):
            module.reset_parameters()
            return
        super()._init_weights(module)

    # ------------------------------------------------------------------------------------------------------
    # Parameters of the head (for reports): what replaces NIAF's ψ heads + SIREN
    # ------------------------------------------------------------------------------------------------------
    def head_parameters(self) -> int:
        return sum(p.numel() for p in self.action_head.parameters())

    # ------------------------------------------------------------------------------------------------------
    # Training
    # ------------------------------------------------------------------------------------------------------
    def _chunk_tau(self) -> torch.Tensor:
        return self.training_tau()

    def _chunk_and_losses(
        self,
        z: torch.Tensor,
        actions: torch.Tensor | None,
        velocities: torch.Tensor | None,
        action_mask: torch.Tensor | None,
        dense: DenseTargets | None = None,
    ) -> NiafActionFunctionOutput:
        """The head's chunk and losses (the shared `forward`, `NiafActionPolicyMixin`'s, does the checks and the
        backbone pass). ``positions`` [B, K, D] are the chunk at τ_k; for ``flow`` only without targets (sampling
        its Euler steps at every training step would only cost time).

        Dense targets (``dense``, between the chunk points): the B-spline is a function of τ and is trained on
        them exactly as NIAF is (`dense_supervised_losses`); the waypoint and flow heads output the K points
        only, so they ignore them (using them would take (K-1)·s/d + 1 outputs instead of K)."""
        cfg = self.config
        kind = self.action_head_kind
        out = NiafActionFunctionOutput(query_hidden_states=z)
        if actions is None:
            traj = self._function(self._coefficients(z), None, None, None)(derivatives=1, denormalize=False)
            out.positions, out.velocities = traj.position, traj.velocity
            return out
        target = actions.to(torch.float32)

        def masked(per_element: torch.Tensor) -> torch.Tensor:
            return self.masked_step_mean(per_element, action_mask)

        loss_vel = loss_jerk = None
        if kind == "waypoints":
            positions = self.action_head(z)
            err = positions - target
            loss_pos = masked(err.abs() if head_setting(cfg, "waypoint_loss") == "l1" else err.pow(2))
            loss = cfg.loss_weight_position * loss_pos
            out.positions = positions
        elif kind == "bspline":
            control = self.action_head(z)  # [B, M, D]
            has_vel = velocities is not None or (dense is not None and dense.velocities is not None)
            order = 3 if cfg.loss_weight_jerk > 0 else (1 if has_vel else 0)
            per_second = cfg.tau_to_seconds

            def at(tau: Any) -> list[torch.Tensor]:  # [position, per s, per s², per s³] at tau [N]: [B, N, D] each
                basis = torch.as_tensor(self._basis(np.asarray(tau, dtype=np.float64), order), dtype=control.dtype,
                                        device=control.device)  # [k+1, N, M]
                values = torch.einsum("jkm,bmd->jbkd", basis, control)
                return [values[i] * per_second**i for i in range(order + 1)]

            chunk = at(self._chunk_tau().numpy())
            out.positions = chunk[0]
            if velocities is not None:
                out.velocities = chunk[1]
            dense_values = None if dense is None else at(dense.tau.detach().to("cpu", torch.float64).numpy())
            loss, loss_pos, loss_vel, loss_jerk = dense_supervised_losses(
                cfg, chunk, target, velocities, action_mask, dense_values, dense)
        else:  # flow
            predicted, wanted = self.action_head.loss_terms(z, target)
            loss_pos = masked((predicted - wanted).pow(2))
            loss = cfg.loss_weight_position * loss_pos
        out.loss, out.loss_pos, out.loss_vel, out.loss_jerk = loss, loss_pos, loss_vel, loss_jerk
        return out

    # ------------------------------------------------------------------------------------------------------
    # Inference
    # ------------------------------------------------------------------------------------------------------
    def _basis(self, tau: Any, order: int) -> Any:
        return self._basis_function()(tau, order)

    def _basis_function(self) -> Any:
        cfg = self.config
        if self.action_head_kind == "bspline":
            return spline_basis(head_setting(cfg, "bspline_control_points"))
        return waypoint_basis(cfg.chunk_size, head_setting(cfg, "chunk_interpolation"))

    def _coefficients(self, z: torch.Tensor) -> torch.Tensor:
        """[B, M, D] normalised coefficients of the chunk function (control points or waypoints)."""
        if self.action_head_kind == "flow":
            generator = torch.Generator().manual_seed(int(head_setting(self.config, "flow_seed")))
            return self.action_head.sample(z, generator=generator)
        return self.action_head(z)

    def _function(self, coefficients: torch.Tensor, center: Any, half: Any, offset: Any) -> BasisActionFunction:
        cfg = self.config
        return BasisActionFunction(coefficients, self._basis_function(), cfg.chunk_duration, center, half,
                                   chunk_size=cfg.chunk_size, position_offset=offset, kind=self.action_head_kind)

    def _action_function(self, z: torch.Tensor, center: Any, half: Any, offset: Any) -> BasisActionFunction:
        """The batch's chunks as a [`BasisActionFunction`] (the shared `predict_action_function` does the backbone
        pass and the units: the checkpoint's statistics and relative-action offset exactly as NIAF's). ``flow``
        samples its ``flow_steps`` Euler steps from noise seeded with ``config.flow_seed``, so the same observation
        always gives the same chunk."""
        return self._function(self._coefficients(z).float(), center, half, offset)

    # ------------------------------------------------------------------------------------------------------
    # Saving: plain weights + config (+ processor), never NIAF's remote code
    # ------------------------------------------------------------------------------------------------------
    def save_pretrained(self, save_directory: Any, *args: Any, processor: Any = None, repo_id: str | None = None,
                        base_model: str | None = None, datasets: Any = None, eval_results: Any = None,
                        **kwargs: Any) -> None:
        """Weights (safetensors) + config.json (with ``action_head``) + the processor, and a short README.
        NIAF's Hub code cannot build this head; reload with :func:`niaf_train.baselines.load_model`. The folder
        still carries NIAF's ``auto_map`` and remote-code files, only so that ``AutoModel.from_pretrained(...,
        trust_remote_code=True)`` in a fresh Python reaches NIAF's loader, which names that function (config.json's
        ``loader``), instead of transformers' "unknown model type". The card metadata arguments of NIAF's save are accepted and ignored;
        ``push_to_hub`` is refused (upload the folder yourself)."""
        if kwargs.pop("push_to_hub", False):
            raise ValueError("comparison-head checkpoints are research artefacts: save locally, then upload the folder "
                             "(huggingface_hub.upload_folder); push_to_hub is not supported")
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        self.config.auto_map = dict(MODEL_AUTO_MAP)
        self.config.loader = LOADER
        super().save_pretrained(str(out), *args, **kwargs)
        for name, source in code_sources(self, processor).items():
            shutil.copyfile(source, out / name)
        if processor is not None:
            if hasattr(processor, "check_model_config"):
                processor.check_model_config(self.config)
            processor.save_pretrained(str(out))
        card = (f"# NIAF comparison head: `{self.action_head_kind}`\n\n"
                f"A research baseline trained with `niaf-train --model.action_head {self.action_head_kind}`: NIAF's "
                "backbone, learned query tokens and data pipeline with a comparison head instead of the modulated "
                "SIREN (see `niaf_train.baselines`). NIAF's remote code cannot build this head; load it with the "
                "installed package:\n\n"
                "```python\nfrom niaf_train.baselines import load_model, load_processor\n"
                "model, processor = load_model(path), load_processor(path)\n```\n")
        (out / "README.md").write_text(card, encoding="utf-8")


__all__ = ["ACTION_HEADS", "COMPARISON_HEADS", "HEAD_DEFAULTS", "LOADER", "NiafBaselineForActionFunction",
           "build_head", "check_head_config"]
