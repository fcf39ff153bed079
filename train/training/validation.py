"""Held-out evaluation during training: open-loop metrics on chunks of held-out episodes, in physical units.

Closed-loop evaluation (the policy acting in a simulator) is :mod:`niaf_train.evaluation`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from configuration_niaf.normalization import to_relative


@torch.no_grad()
def evaluate_model(model: Any, processor: Any, loader: Any, baseline: np.ndarray, num_points: int) -> dict[str, float]:
    """Metrics on held-out chunks, in physical units (positions, velocities per second, jerk per second³).

    ``baseline`` [D] is the training mean action: ``baseline_position_mse`` is the error of always predicting it.
    With relative actions (``model.config.relative_action_state_indices``) positions are compared as deltas
    from the observation state: the model's absolute positions minus the state, against the batch's delta
    targets. The offset cancels, so ``position_mse`` equals the absolute error, and ``baseline`` (the mean
    delta) is the error of predicting state + mean delta.
    """
    # lazy: trajectory_metrics imports datasets and evaluate
    from ..evaluation.trajectory_metrics import trajectory_metrics

    was_training = model.training
    model.eval()
    relative = model.config.relative_action_state_indices
    preds, refs, masks, pvel, rvel, dvel, djerk, norm_err = [], [], [], [], [], [], [], []
    dense_dt = None
    for batch in loader:
        batch = {k: v.to(next(model.parameters()).device) for k, v in batch.items() if k != "sample_index"}
        fn = model.predict_action_function(**batch, denormalize=True)
        at_k = fn(derivatives=1)
        dense = fn(num_points=num_points, derivatives=3)
        dense_dt = float(dense.time[1] - dense.time[0])
        actions = processor.denormalize_actions(batch["actions"].double()).cpu().numpy()
        position = at_k.position.double().cpu().numpy()
        if relative is not None:  # absolute prediction → delta, like the targets (physical state from the processor)
            position = to_relative(position, processor.denormalize_state(batch["state"].double()), relative)
        preds.append(position)
        refs.append(actions)
        masks.append(batch["action_mask"].cpu().numpy())
        # the same function in normalised units (no offset): no second backbone pass
        norm_pred = fn(derivatives=0, denormalize=False).position
        norm_err.append(((norm_pred.float() - batch["actions"].float()) ** 2).mean(-1)[batch["action_mask"]].cpu().numpy())
        if "velocities" in batch:
            pvel.append(at_k.velocity.double().cpu().numpy())
            rvel.append(processor.denormalize_velocities(batch["velocities"].double()).cpu().numpy())
        dvel.append(dense.velocity.double().cpu().numpy())
        djerk.append(dense.jerk.double().cpu().numpy())
    if was_training:
        model.train()
    cat = np.concatenate
    metrics = trajectory_metrics(
        cat(preds), cat(refs), cat(masks), cat(pvel) if pvel else None, cat(rvel) if rvel else None,
        dense_velocities=cat(dvel), dense_jerk=cat(djerk), dense_dt=dense_dt, baseline=baseline,
    )
    metrics["position_mse_normalized"] = float(cat(norm_err).mean())
    metrics["num_chunks"] = float(sum(len(p) for p in preds))
    return metrics
