"""`torch.compile` of the training forward on the tiny config: same loss and gradients, no graph break in NIAF code.

The backend is ``aot_eager`` by default (Dynamo capture + AOTAutograd's forward/backward graphs, no C++ compiler
needed, so it runs on any CI machine with pip packages only); set ``NIAF_COMPILE_BACKEND=inductor`` to check the
default backend too (it needs a C++ compiler and a few minutes on 2 CPU cores).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from niaf_train.tiny import tiny_backbone_config

import modeling_niaf
from modeling_niaf import NiafConfig, NiafForActionFunction

BACKEND = os.environ.get("NIAF_COMPILE_BACKEND", "aot_eager")
NIAF_DIR = Path(modeling_niaf.__file__).resolve().parent
IMAGE_TOKEN = 511  # tiny_backbone_config's image token: the last id of its 512-token vocabulary


def tiny_training_batch(batch: int = 3) -> tuple[NiafForActionFunction, dict[str, torch.Tensor]]:
    """The default niaf-train recipe in miniature: PaliGemma-architecture backbone, state token added to the
    queries, position + velocity + jerk losses, one right-padded prompt and one padded chunk step."""
    torch.manual_seed(0)
    config = NiafConfig(
        backbone_config=tiny_backbone_config(32, 2, 32, 8), action_dim=4, chunk_size=8, control_hz=20.0,
        siren_layers=2, siren_width=16, modulation_groups=4, siren_omega0=5.0, use_state=True, state_dim=5,
        state_to_queries=True, loss_weight_velocity=0.1, loss_weight_jerk=1e-9,
    )
    model = NiafForActionFunction(config).train()
    with torch.no_grad():  # a fresh model has γ = β = 0: give the heads weights so that every path carries gradient
        for p in model.modulation_heads.parameters():
            p.normal_(0.0, 0.05)
    g = torch.Generator().manual_seed(1)
    ids = torch.cat([torch.full((batch, 16), IMAGE_TOKEN), torch.randint(4, 100, (batch, 6), generator=g)], dim=1)
    mask = torch.ones_like(ids)
    mask[-1, -2:] = 0  # right padding: _left_align must roll this row
    action_mask = torch.ones(batch, 8, dtype=torch.bool)
    action_mask[0, -2:] = False
    inputs = {
        "input_ids": ids, "attention_mask": mask,
        "pixel_values": torch.randn(batch, 1, 3, 32, 32, generator=g), "state": torch.randn(batch, 5, generator=g),
        "actions": torch.randn(batch, 8, 4, generator=g) * 0.5, "velocities": torch.randn(batch, 8, 4, generator=g),
        "action_mask": action_mask,
    }
    return model, inputs


def loss_and_grads(model: torch.nn.Module, params: dict[str, torch.Tensor], inputs: dict) -> tuple[dict, dict]:
    for p in params.values():
        p.grad = None
    out = model(**inputs)
    out.loss.backward()
    losses = {k: getattr(out, k).detach().clone() for k in ("loss", "loss_pos", "loss_vel", "loss_jerk")}
    return losses, {n: p.grad.detach().clone() for n, p in params.items() if p.grad is not None}


@pytest.mark.slow
def test_compiled_training_forward_matches_eager_without_graph_breaks_in_niaf_code():
    model, inputs = tiny_training_batch()
    model.check_inputs(**inputs)  # the value checks run here, outside the compiled region
    params = dict(model.named_parameters())
    eager_losses, eager_grads = loss_and_grads(model, params, inputs)
    assert eager_grads, "no gradient reached the parameters"

    # Every graph break and where Dynamo hit it (innermost user frame). The backbone (transformers) may break
    # the graph; NIAF's own code (validation, query injection, heads, SIREN, losses) must not.
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model)(**inputs)
    in_niaf = [
        f"{r.reason.splitlines()[0]} at {r.user_stack[-1].filename}:{r.user_stack[-1].lineno}"
        for r in explained.break_reasons
        if r.user_stack and Path(r.user_stack[-1].filename).resolve().is_relative_to(NIAF_DIR)
    ]
    assert not in_niaf, "graph breaks in NIAF code:\n" + "\n".join(in_niaf)

    torch._dynamo.reset()
    compiled = torch.compile(model, backend=BACKEND)
    compiled_losses, compiled_grads = loss_and_grads(compiled, params, inputs)
    # inductor fuses and reorders float32 sums: agreement to float32 rounding, relative to each tensor's scale
    # (with an absolute floor for gradients that are zero in exact arithmetic, e.g. SigLIP's key biases)
    for key, value in eager_losses.items():
        torch.testing.assert_close(compiled_losses[key], value, rtol=1e-5, atol=1e-6, msg=key)
    assert compiled_grads.keys() == eager_grads.keys()
    for name, grad in eager_grads.items():
        scale = float(grad.abs().max())
        torch.testing.assert_close(compiled_grads[name], grad, rtol=1e-4, atol=1e-5 * scale + 1e-6, msg=name)
    torch._dynamo.reset()


def test_value_checks_are_skipped_only_when_switched_off_and_check_inputs_still_refuses():
    model, inputs = tiny_training_batch()
    bad = dict(inputs, actions=inputs["actions"].clone())
    bad["actions"][1, 2, 0] = float("nan")
    with pytest.raises(ValueError, match="`actions` contains NaN"):
        model(**bad)
    with pytest.raises(ValueError, match="`actions` contains NaN"):
        model.check_inputs(**bad)
    with pytest.raises(ValueError, match="`actions` contains NaN"):  # what a collator calls, picklable
        model.input_value_checker()(**bad, sample_index=torch.arange(3))
    model.check_inputs_in_forward = False  # a training loop whose collator checked the batch
    assert torch.isnan(model(**bad).loss)
