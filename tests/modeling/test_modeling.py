"""NiafForActionFunction: query injection per backbone family, losses, inference, precision, loading."""

from __future__ import annotations

import copy
import json
import logging
import math
import warnings

import numpy as np
import pytest
import torch
from niaf_tiny_backbones import BACKBONES, IMAGE_TOKEN, make_inputs
from safetensors.torch import load_file, save_file

from configuration_niaf import NiafConfig
from modeling_niaf import ActionFunction, NiafForActionFunction
from modeling_niaf.modeling_niaf import _left_align

FAMILIES = list(BACKBONES)
DECODER_ONLY = [f for f in FAMILIES if f != "florence2"]
STATS = {"action": {"q01": [-1.0, 0.0, 2.0], "q99": [1.0, 4.0, 3.0]}}


def make_config(family: str, **overrides) -> NiafConfig:
    kwargs = dict(
        backbone_config=BACKBONES[family](), action_dim=3, chunk_size=6, control_hz=10.0, siren_layers=2,
        siren_width=16, modulation_groups=4,
    )
    kwargs.update(overrides)
    return NiafConfig(**kwargs)


def make_model(
    family: str, seed: int = 0, randomize_heads: bool = True, head_std: float = 0.5, **overrides
) -> NiafForActionFunction:
    torch.manual_seed(seed)
    model = NiafForActionFunction(make_config(family, **overrides)).eval()
    if randomize_heads:  # a fresh model has γ = β = 0; give the heads weights so that Z matters
        with torch.no_grad():
            for p in model.modulation_heads.parameters():
                p.normal_(0.0, head_std)
    return model


def capture_backbone_output(model):
    """Hook capturing the backbone's full last hidden state (prompt + extra tokens)."""
    store = {}

    def hook(_module, _args, output):
        store["h"] = output.last_hidden_state.detach().clone()

    target = model.backbone.language_model.get_decoder() if model.family == "florence2" else model.backbone
    return store, target.register_forward_hook(hook)


# --------------------------------------------------------------------------------------------------------
# Initialisation
# --------------------------------------------------------------------------------------------------------
def test_fresh_model_starts_at_the_motion_prior():
    model = make_model("paligemma", randomize_heads=False)
    cfg = model.config
    heads = model.modulation_heads
    for p in heads.parameters():
        assert torch.count_nonzero(p) == 0
    out = model(**make_inputs("paligemma"))
    assert torch.count_nonzero(out.gamma) == 0 and torch.count_nonzero(out.beta) == 0
    # SIREN init survives post_init: first layer U(±1/1), hidden U(±√(6/H)/ω₀)
    first, hidden = model.siren.layers[0].weight, model.siren.layers[1].weight
    assert first.abs().max() <= 1.0 and first.abs().max() > 0.5
    bound = math.sqrt(6 / cfg.siren_width) / cfg.siren_omega0
    assert hidden.abs().max() <= bound and hidden.abs().max() > 0.5 * bound
    std = model.query_embeddings.weight.std().item()
    assert abs(std - cfg.query_init_std) < 0.3 * cfg.query_init_std
    # the backbone's own init is not clobbered by our post_init: Gemma's RMSNorm stores (scale - 1) = 0
    norm = model.backbone.language_model.norm.weight
    assert torch.count_nonzero(norm) == 0


@pytest.mark.parametrize("family", FAMILIES)
def test_training_mode_forward_matches_eval_mode(family):
    """train() must work for every family (PaliGemma on transformers 5.4-5.8 needs `token_type_ids` then) and,
    without dropout in the tiny configs, give the same positions as eval()."""
    model = make_model(family)
    inputs = make_inputs(family)
    with torch.no_grad():
        expected = model(**inputs).positions
    model.train()
    out = model(**inputs, actions=torch.zeros(2, 6, 3))
    out.loss.backward()
    torch.testing.assert_close(out.positions.detach(), expected, rtol=1e-4, atol=1e-5)  # other kernels in train()
    assert float(out.loss_pos) == pytest.approx(float(expected.pow(2).sum(-1).mean()), rel=1e-4)
    assert model.query_embeddings.weight.grad.abs().sum() > 0


def test_zero_heads_have_nonzero_gradient():
    model = make_model("florence2", randomize_heads=False).train()
    out = model(**make_inputs("florence2"), actions=torch.randn(2, 6, 3))
    out.loss.backward()
    assert model.modulation_heads.beta_weight.grad.abs().sum() > 0
    assert model.modulation_heads.gamma_weight.grad.abs().sum() > 0


# --------------------------------------------------------------------------------------------------------
# Query injection (every family)
# --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_queries_see_each_other_and_the_prompt_never_sees_them(family):
    model = make_model(family)
    inputs = make_inputs(family)
    store, handle = capture_backbone_output(model)
    with torch.no_grad():
        z_ref = model.encode_queries(**inputs)
        h_ref = store["h"]
        # perturb the last query only (not by a constant vector: LayerNorm would remove that)
        model.query_embeddings.weight[-1] += torch.randn(model.query_embeddings.weight.shape[1])
        z_new = model.encode_queries(**inputs)
        h_new = store["h"]
    handle.remove()
    q = model.config.num_queries
    # query 0 attends to the last query: no causal mask among the queries
    assert (z_new[:, 0] - z_ref[:, 0]).abs().max() > 1e-4
    if family != "florence2":
        prompt_len = h_ref.shape[1] - q
        torch.testing.assert_close(h_new[:, :prompt_len], h_ref[:, :prompt_len], rtol=0, atol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_padding_is_invisible(family):
    """A padded sample gives the same Z as the same sample alone, and padded token ids do not matter."""
    model = make_model(family)
    inputs = make_inputs(family, batch=2, pad_last=3)
    with torch.no_grad():
        z = model.encode_queries(**inputs)
        alone = {k: v for k, v in inputs.items()}
        keep = inputs["attention_mask"][1].bool()
        alone["input_ids"] = inputs["input_ids"][1:, keep]
        alone["attention_mask"] = inputs["attention_mask"][1:, keep]
        if family in ("qwen2_5_vl", "qwen3_vl"):
            n = int(inputs["image_grid_thw"][1].prod())
            alone["pixel_values"] = inputs["pixel_values"][n:]
            alone["image_grid_thw"] = inputs["image_grid_thw"][1:]
        else:
            alone["pixel_values"] = inputs["pixel_values"][1:]
        z_alone = model.encode_queries(**alone)
        changed = dict(inputs)
        changed["input_ids"] = inputs["input_ids"].clone()
        changed["input_ids"][1, ~keep] = 123
        z_changed = model.encode_queries(**changed)
    torch.testing.assert_close(z[1:], z_alone, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(z_changed, z, rtol=0, atol=0)


@pytest.mark.parametrize("family", ["florence2", "paligemma", "qwen2_5_vl"])
def test_state_token_and_second_camera_reach_the_queries(family):
    model = make_model(family, use_state=True, state_dim=4, num_cameras=2)
    inputs = make_inputs(family, num_cameras=2)
    inputs["state"] = torch.randn(2, 4)
    with torch.no_grad():
        z = model.encode_queries(**inputs)
        other_state = dict(inputs, state=inputs["state"] + 1.0)
        assert (model.encode_queries(**other_state) - z).abs().max() > 1e-4
        # changing only the second (wrist) camera's pixels changes Z
        px = inputs["pixel_values"].clone()
        if family == "qwen2_5_vl":
            n = int(inputs["image_grid_thw"][1].prod())
            px[n : 2 * n] += 1.0  # sample 0, camera 1
        else:
            px[:, 1] += 1.0
        assert (model.encode_queries(**dict(inputs, pixel_values=px)) - z).abs().max() > 1e-4


def test_state_to_queries_adds_the_projected_state_to_every_query():
    """The extra tokens with ``state_to_queries``: [state token, queries + state token]; without it the queries are
    untouched (a checkpoint saved before the option existed loads with it off)."""
    plain = make_model("paligemma", use_state=True, state_dim=4)
    direct = make_model("paligemma", use_state=True, state_dim=4, state_to_queries=True)
    direct.load_state_dict(plain.state_dict())  # same weights: only the wiring differs
    state = torch.randn(2, 4)
    with torch.no_grad():
        a = plain._extra_tokens(2, state, torch.float32)
        b = direct._extra_tokens(2, state, torch.float32)
        token = state @ plain.state_projection.weight.T + plain.state_projection.bias  # by hand
    q = plain.config.num_queries
    assert a.shape == b.shape == (2, 1 + q, plain.config.backbone_config.text_config.hidden_size)
    torch.testing.assert_close(a[:, 0], token)
    torch.testing.assert_close(b[:, 0], token)
    torch.testing.assert_close(b[:, 1:], a[:, 1:] + token[:, None, :])
    assert NiafConfig.from_dict({k: v for k, v in plain.config.to_dict().items() if k != "state_to_queries"}
                                ).state_to_queries is False
    with pytest.raises(ValueError, match="state_to_queries=True` needs `use_state=True"):
        make_config("paligemma", state_to_queries=True)


def test_left_align_moves_right_padding():
    ids = torch.tensor([[5, 6, 7, 0, 0], [1, 2, 3, 4, 5], [0, 8, 9, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 1, 1, 0, 0]])
    new_ids, new_mask = _left_align(ids, mask)
    assert new_ids.tolist() == [[0, 0, 5, 6, 7], [1, 2, 3, 4, 5], [0, 0, 0, 8, 9]]
    assert new_mask.tolist() == [[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 1, 1]]


# --------------------------------------------------------------------------------------------------------
# Losses against independent references
# --------------------------------------------------------------------------------------------------------
def _double_siren(model):
    siren = copy.deepcopy(model.siren).double()
    return siren


def _autograd_derivatives(siren, gamma, beta, tau, order):
    """Nested autograd in float64: dᵏΦ/dτᵏ at every τ, [B, N, D] per order."""
    tau = tau.clone().requires_grad_(True)
    phi = siren(tau.unsqueeze(0).expand(gamma.shape[0], -1).contiguous(), gamma, beta)[0]
    outs = [phi.detach()]
    current = phi
    for _ in range(order):
        grads = []
        for d in range(current.shape[-1]):
            (g,) = torch.autograd.grad(current[..., d].sum(), tau, create_graph=True)
            grads.append(g)
        # each output depends only on its own τ (and the batch shares τ): undo the batch sum per sample
        current = torch.stack(grads, dim=-1).unsqueeze(0).expand_as(phi) if gamma.shape[0] == 1 else None
        outs.append(current.detach())
    return outs


def test_losses_match_an_independent_float64_reference():
    model = make_model("qwen3_vl", loss_weight_velocity=0.7, loss_weight_jerk=1e-3, loss_weight_position=2.0)
    inputs = make_inputs("qwen3_vl", batch=2)
    g = torch.Generator().manual_seed(1)
    actions, velocities = torch.randn(2, 6, 3, generator=g), torch.randn(2, 6, 3, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    with torch.no_grad():
        out = model(**inputs, actions=actions, velocities=velocities, action_mask=mask)
    siren = _double_siren(model)
    tau = torch.linspace(-1, 1, 6, dtype=torch.float64)
    c = 2.0 / ((6 - 1) / 10.0)  # 2/T with T = (K-1)/f
    ref_pos = ref_vel = ref_jerk = 0.0
    count = 0
    for b in range(2):
        gam, bet = out.gamma[b : b + 1].double(), out.beta[b : b + 1].double()
        phi, d1, _d2, d3 = _autograd_derivatives(siren, gam, bet, tau, 3)
        for k in range(6):
            if not mask[b, k]:
                continue
            count += 1
            ref_pos += ((phi[0, k] - actions[b, k].double()) ** 2).sum()
            ref_vel += ((c * d1[0, k] - velocities[b, k].double()) ** 2).sum()
            ref_jerk += ((c**3 * d3[0, k]) ** 2).sum()
    ref_pos, ref_vel, ref_jerk = ref_pos / count, ref_vel / count, ref_jerk / count
    torch.testing.assert_close(out.loss_pos.double(), ref_pos, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out.loss_vel.double(), ref_vel, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out.loss_jerk.double(), ref_jerk, rtol=2e-3, atol=1e-6)
    total = 2.0 * ref_pos + 0.7 * ref_vel + 1e-3 * ref_jerk
    torch.testing.assert_close(out.loss.double(), total, rtol=1e-3, atol=1e-6)


def test_dense_losses_match_an_independent_float64_reference():
    """Dense targets: L_pos, L_vel and L_jerk over the M dense points (masked), by hand in float64."""
    model = make_model("qwen3_vl", loss_weight_velocity=0.7, loss_weight_jerk=1e-3, loss_weight_position=2.0)
    inputs = make_inputs("qwen3_vl", batch=2)
    g = torch.Generator().manual_seed(2)
    actions = torch.randn(2, 6, 3, generator=g)
    m = 11  # K = 6 points every 2 source frames: M = (K-1)·2 + 1
    tau = torch.linspace(-1, 1, m)
    dense_actions, dense_velocities = torch.randn(2, m, 3, generator=g), torch.randn(2, m, 3, generator=g)
    dense_mask = torch.ones(2, m, dtype=torch.bool)
    dense_mask[1, 7:] = False
    with torch.no_grad():
        out = model(**inputs, actions=actions, dense_tau=tau, dense_actions=dense_actions,
                    dense_velocities=dense_velocities, dense_mask=dense_mask)
        plain = model(**inputs, actions=actions)
    torch.testing.assert_close(out.positions, plain.positions)  # `positions` stay the K chunk points
    siren = _double_siren(model)
    c = 2.0 / ((6 - 1) / 10.0)  # 2/T with T = (K-1)/f
    ref_pos = ref_vel = ref_jerk = 0.0
    count = 0
    for b in range(2):
        gam, bet = out.gamma[b : b + 1].double(), out.beta[b : b + 1].double()
        phi, d1, _d2, d3 = _autograd_derivatives(siren, gam, bet, tau.double(), 3)
        for j in range(m):
            if not dense_mask[b, j]:
                continue
            count += 1
            ref_pos += ((phi[0, j] - dense_actions[b, j].double()) ** 2).sum()
            ref_vel += ((c * d1[0, j] - dense_velocities[b, j].double()) ** 2).sum()
            ref_jerk += ((c**3 * d3[0, j]) ** 2).sum()
    ref_pos, ref_vel, ref_jerk = ref_pos / count, ref_vel / count, ref_jerk / count
    torch.testing.assert_close(out.loss_pos.double(), ref_pos, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out.loss_vel.double(), ref_vel, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out.loss_jerk.double(), ref_jerk, rtol=2e-3, atol=1e-6)
    torch.testing.assert_close(out.loss.double(), 2.0 * ref_pos + 0.7 * ref_vel + 1e-3 * ref_jerk, rtol=1e-3, atol=1e-6)
    # a padded dense point changes nothing; a real one does
    moved = dense_actions.clone()
    moved[1, 8] += 100.0
    with torch.no_grad():
        assert float(model(**inputs, actions=actions, dense_tau=tau, dense_actions=moved, dense_velocities=dense_velocities,
                           dense_mask=dense_mask).loss) == float(out.loss)
        moved[1, 3] += 1.0
        assert float(model(**inputs, actions=actions, dense_tau=tau, dense_actions=moved, dense_velocities=dense_velocities,
                           dense_mask=dense_mask).loss_pos) != float(out.loss_pos)
    with pytest.raises(ValueError, match="dense_actions"):
        model(**inputs, actions=actions, dense_tau=tau, dense_actions=dense_actions[:, :5])
    with pytest.raises(ValueError, match="need `dense_actions`"):
        model(**inputs, actions=actions, dense_tau=tau)
    bad = dense_actions.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="dense_actions"):
        model(**inputs, actions=actions, dense_tau=tau, dense_actions=bad)


def test_padded_steps_do_not_affect_loss_or_gradients():
    model = make_model("smolvlm", loss_weight_jerk=1e-4).train()
    inputs = make_inputs("smolvlm")
    actions = torch.randn(2, 6, 3)
    velocities = torch.randn(2, 6, 3)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[0, 4:] = False
    out1 = model(**inputs, actions=actions, velocities=velocities, action_mask=mask)
    out1.loss.backward()
    g1 = model.modulation_heads.beta_weight.grad.clone()
    model.zero_grad()
    a2, v2 = actions.clone(), velocities.clone()
    a2[0, 4:] += 100.0
    v2[0, 4:] -= 50.0
    out2 = model(**inputs, actions=a2, velocities=v2, action_mask=mask)
    out2.loss.backward()
    torch.testing.assert_close(out2.loss, out1.loss, rtol=0, atol=0)
    torch.testing.assert_close(model.modulation_heads.beta_weight.grad, g1, rtol=0, atol=0)
    # and an unmasked step does count
    a3 = actions.clone()
    a3[0, 1] += 1.0
    assert abs(float(model(**inputs, actions=a3, action_mask=mask).loss_pos - out1.loss_pos)) > 1e-3


@pytest.mark.parametrize("family", ["florence2", "qwen2_5_vl"])
def test_gradient_checkpointing_gives_same_loss_and_gradients(family):
    model = make_model(family).train()
    inputs = make_inputs(family)
    actions = torch.randn(2, 6, 3)

    def run():
        model.zero_grad()
        out = model(**inputs, actions=actions)
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return out.loss.detach(), grads

    from niaf_train.training.loop import set_activation_checkpointing

    loss_ref, grads_ref = run()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # no deprecated call on the way
        set_activation_checkpointing(model, True)
    checkpointing = "is_activation_checkpointing" if hasattr(type(model), "is_activation_checkpointing") else "is_gradient_checkpointing"
    assert getattr(model, checkpointing)
    loss_gc, grads_gc = run()
    set_activation_checkpointing(model, False)
    assert not getattr(model, checkpointing)
    torch.testing.assert_close(loss_gc, loss_ref, rtol=1e-6, atol=1e-7)
    assert grads_ref.keys() == grads_gc.keys()
    assert "query_embeddings.weight" in grads_ref
    for name in grads_ref:
        torch.testing.assert_close(grads_gc[name], grads_ref[name], rtol=1e-5, atol=1e-6, msg=name)


def test_bf16_backbone_with_fp32_head(tmp_path):
    model = make_model("paligemma")
    inputs = make_inputs("paligemma")
    with torch.no_grad():
        ref = model(**inputs)
    model.backbone.to(torch.bfloat16)
    model.query_embeddings.to(torch.bfloat16)
    with torch.no_grad():
        out = model(**inputs, actions=torch.randn(2, 6, 3))
    assert out.query_hidden_states.dtype == torch.bfloat16
    assert out.gamma.dtype == torch.float32 and out.positions.dtype == torch.float32
    assert torch.isfinite(out.loss)
    # bf16 changes the numbers a little, not the meaning
    torch.testing.assert_close(out.positions, ref.positions, rtol=0.1, atol=0.1)
    # loading in bf16 keeps the SIREN and the ψ heads in float32
    model = make_model("paligemma")
    model.save_pretrained(tmp_path / "ckpt_bf16")
    loaded = NiafForActionFunction.from_pretrained(tmp_path / "ckpt_bf16", dtype=torch.bfloat16)
    assert loaded.backbone.language_model.norm.weight.dtype == torch.bfloat16
    assert loaded.siren.layers[0].weight.dtype == torch.float32
    assert loaded.modulation_heads.beta_weight.dtype == torch.float32
    with torch.no_grad():
        assert torch.isfinite(loaded(**inputs).positions).all()


# --------------------------------------------------------------------------------------------------------
# Inference
# --------------------------------------------------------------------------------------------------------
def test_generate_actions_and_action_function():
    model = make_model("florence2", head_std=0.05, normalization_stats=STATS)
    inputs = make_inputs("florence2")
    calls = {"n": 0}
    handle = model.backbone.register_forward_pre_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1))
    enc_calls = {"n": 0}
    handle2 = model.backbone.language_model.get_encoder().register_forward_hook(
        lambda *_: enc_calls.__setitem__("n", enc_calls["n"] + 1)
    )
    with torch.no_grad():
        out = model(**inputs)
    assert enc_calls["n"] == 1
    fn = model.predict_action_function(**inputs)
    assert isinstance(fn, ActionFunction) and enc_calls["n"] == 2
    # K training points, physical units = normalised · half + center
    center = torch.tensor([0.0, 2.0, 2.5])
    half = torch.tensor([1.0, 2.0, 0.5])
    traj_k = fn(derivatives=1)
    torch.testing.assert_close(traj_k.position, out.positions * half + center, rtol=1e-5, atol=1e-6)
    # 4× the training rate (6 → 24 points) without re-running the backbone, derivatives per second
    traj = fn(num_points=24, derivatives=3)
    assert enc_calls["n"] == 2
    assert traj.position.shape == (2, 24, 3) and traj.jerk.shape == (2, 24, 3)
    # velocity: consistent with a finite difference of the dense position in seconds
    dense = fn(num_points=2001, derivatives=1)
    dt = float(dense.time[1] - dense.time[0])
    fd = (dense.position[:, 2:] - dense.position[:, :-2]) / (2 * dt)
    torch.testing.assert_close(fd, dense.velocity[:, 1:-1], rtol=2e-2, atol=2e-3 * float(dense.velocity.abs().max()))
    # generate_actions = predict_action_function + call
    gen = model.generate_actions(**inputs, num_points=24)
    torch.testing.assert_close(gen.position, traj.position)
    torch.testing.assert_close(gen.velocity, traj.velocity)
    by_time = model.generate_actions(**inputs, times=torch.tensor([0.0, 0.25, 0.5]), derivatives=0)
    by_tau = model.generate_actions(**inputs, tau=torch.tensor([-1.0, 0.0, 1.0]), derivatives=0)  # T = 0.5 s
    torch.testing.assert_close(by_time.position, by_tau.position)
    norm = model.generate_actions(**inputs, denormalize=False, derivatives=0)
    torch.testing.assert_close(norm.position, out.positions, rtol=1e-5, atol=1e-6)
    handle.remove()
    handle2.remove()


def test_denormalize_without_stats_is_an_error():
    model = make_model("paligemma")
    with pytest.raises(ValueError, match="normalization_stats"):
        model.generate_actions(**make_inputs("paligemma"))
    traj = model.generate_actions(**make_inputs("paligemma"), denormalize=False)
    assert traj.denormalized is False


# --------------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------------
def test_bad_inputs_raise_clear_errors():
    model = make_model("paligemma", num_cameras=2)
    inputs = make_inputs("paligemma", num_cameras=2)
    with pytest.raises(ValueError, match="pixel_values"):
        model(**{k: v for k, v in inputs.items() if k != "pixel_values"})
    with pytest.raises(ValueError, match="wrong number of images"):
        model(**dict(inputs, pixel_values=inputs["pixel_values"][:, :1]))
    with pytest.raises(ValueError, match="action_dim=3"):
        model(**inputs, actions=torch.randn(2, 6, 4))
    with pytest.raises(ValueError, match="chunk_size=6"):
        model(**inputs, actions=torch.randn(2, 5, 3))
    bad = torch.randn(2, 6, 3)
    bad[1, 2, 0] = float("nan")
    with pytest.raises(ValueError, match="`actions` contains NaN"):
        model(**inputs, actions=bad)
    with pytest.raises(ValueError, match="`state` was given"):
        model(**inputs, state=torch.randn(2, 4))
    ids = inputs["input_ids"].clone()
    ids[0, 0] = 5  # one image token fewer in sample 0
    with pytest.raises(ValueError, match="image tokens"):
        model(**dict(inputs, input_ids=ids))
    with pytest.raises(ValueError, match="image_grid_thw"):
        qwen = make_model("qwen2_5_vl")
        q_inputs = make_inputs("qwen2_5_vl")
        qwen(**dict(q_inputs, image_grid_thw=q_inputs["image_grid_thw"][:1]))
    with_state = make_model("smolvlm", use_state=True, state_dim=4)
    with pytest.raises(ValueError, match="`state` \\[B, 4\\] is required"):
        with_state(**make_inputs("smolvlm"))


# --------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------
def test_checkpoint_with_other_head_settings_is_refused(tmp_path):
    model = make_model("smolvlm", normalization_stats=STATS)
    path = tmp_path / "ckpt_refuse"
    model.save_pretrained(path)
    with pytest.raises(ValueError, match="`action_dim` is 4"):
        NiafForActionFunction.from_pretrained(path, action_dim=4)
    other = {"action": {"q01": [-2.0, 0.0, 2.0], "q99": [1.0, 4.0, 3.0]}}
    with pytest.raises(ValueError, match="normalization_stats"):
        NiafForActionFunction.from_pretrained(path, normalization_stats=other)
    cfg = NiafConfig.from_pretrained(path)
    cfg.normalization_mode = "MIN_MAX"
    with pytest.raises(ValueError, match="normalization_mode"):
        NiafForActionFunction.from_pretrained(path, config=cfg)
    # the same values are fine, and the weights round-trip exactly
    loaded = NiafForActionFunction.from_pretrained(path, normalization_stats=copy.deepcopy(STATS)).eval()
    inputs = make_inputs("smolvlm")
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).positions, model(**inputs).positions, rtol=0, atol=0)


def test_checkpoint_without_head_weights_is_refused_unless_reinitialising(tmp_path, caplog):
    model = make_model("florence2")
    path = tmp_path / "ckpt_nohead"
    model.save_pretrained(path)
    weights = load_file(path / "model.safetensors")
    kept = {k: v for k, v in weights.items() if not k.startswith(("siren.", "modulation_heads."))}
    dropped = len(weights) - len(kept)
    assert dropped > 0
    save_file(kept, path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=rf"{dropped} missing \(modulation_heads\.beta_bias, .* and {dropped - 4} more\)"):
        NiafForActionFunction.from_pretrained(path)
    from transformers.utils import logging as hf_logging

    hf_logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING):
            loaded = NiafForActionFunction.from_pretrained(path, ignore_mismatched_sizes=True)
    finally:
        hf_logging.disable_propagation()
    assert "siren.readout.weight" in caplog.text and "MISSING" in caplog.text
    cfg = loaded.config
    first, hidden = loaded.siren.layers[0].weight, loaded.siren.layers[1].weight
    assert 0.5 < first.abs().max() <= 1.0
    bound = math.sqrt(6 / cfg.siren_width) / cfg.siren_omega0
    assert 0.5 * bound < hidden.abs().max() <= bound
    assert torch.count_nonzero(loaded.modulation_heads.gamma_weight) == 0
    torch.testing.assert_close(loaded.query_embeddings.weight, model.query_embeddings.weight)


def test_checkpoint_with_renamed_backbone_weights_is_refused_naming_keys_and_versions(tmp_path):
    """What a checkpoint saved under another transformers major version looks like: same tensors, other names."""
    import transformers

    model = make_model("paligemma")
    path = tmp_path / "ckpt_renamed"
    model.save_pretrained(path)
    weights = load_file(path / "model.safetensors")
    renamed = {k.replace("backbone.language_model.", "backbone.language_model.model."): v for k, v in weights.items()}
    moved = sum(k.startswith("backbone.language_model.") for k in weights)
    assert moved > 4
    save_file(renamed, path / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((path / "config.json").read_text())
    config["transformers_version"] = "4.57.6"  # as written by the version that used the other names
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError) as err:
        NiafForActionFunction.from_pretrained(path)
    message = str(err.value)
    assert f"{moved} missing (backbone.language_model." in message
    assert f"{moved} unexpected (backbone.language_model.model." in message
    assert f"saved with transformers 4.57.6, this is {transformers.__version__}" in message
    assert "ignore_mismatched_sizes=True" in message and "\n" not in message
    # the same file loads (weights re-initialised, on purpose) when asked for, and reports what it skipped
    loaded, info = NiafForActionFunction.from_pretrained(path, ignore_mismatched_sizes=True, output_loading_info=True)
    assert len(info["missing_keys"]) == moved and len(info["unexpected_keys"]) == moved
    # an intact checkpoint loads exactly, also with output_loading_info
    model.save_pretrained(tmp_path / "ckpt_ok")
    loaded, info = NiafForActionFunction.from_pretrained(tmp_path / "ckpt_ok", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    torch.testing.assert_close(loaded.backbone.language_model.norm.weight, model.backbone.language_model.norm.weight)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_round_trips_without_missing_or_unexpected_keys(tmp_path, family):
    model = make_model(family)
    model.save_pretrained(tmp_path / f"ckpt_{family}")
    _, info = NiafForActionFunction.from_pretrained(tmp_path / f"ckpt_{family}", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info


def test_transformers_version_check_names_the_floor():
    from configuration_niaf.configuration_niaf import MIN_TRANSFORMERS_VERSION, check_transformers_version

    check_transformers_version(MIN_TRANSFORMERS_VERSION)
    check_transformers_version("5.24.0.dev0")
    with pytest.raises(ImportError) as err:
        check_transformers_version("4.57.6")
    assert str(err.value) == (
        f"NIAF needs transformers>={MIN_TRANSFORMERS_VERSION}, found transformers 4.57.6; "
        f"upgrade with: pip install -U 'transformers>={MIN_TRANSFORMERS_VERSION}'"
    )


def test_from_pretrained_backbone_copies_the_weights(tmp_path):
    from transformers import AutoModel
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    spec = BACKBONES["paligemma"]()
    model_type = spec.pop("model_type")
    torch.manual_seed(3)
    backbone = AutoModel.from_config(CONFIG_MAPPING[model_type](**spec))
    backbone.save_pretrained(tmp_path / "tiny_paligemma")
    model = NiafForActionFunction.from_pretrained_backbone(
        str(tmp_path / "tiny_paligemma"), action_dim=2, chunk_size=4, siren_layers=1, siren_width=8,
        modulation_groups=2,
    )
    ref = backbone.state_dict()
    for name, value in model.backbone.state_dict().items():
        torch.testing.assert_close(value, ref[name], rtol=0, atol=0, msg=name)
    assert model.config.backbone_config.image_token_id == IMAGE_TOKEN


def test_modulation_heads_stay_float32_under_bf16_autocast():
    from modeling_niaf.modeling_niaf import NiafModulationHeads

    heads = NiafModulationHeads(num_layers=2, num_groups=4, width=16, hidden_size=8)
    with torch.no_grad():
        for p in heads.parameters():
            p.normal_()
    z = torch.randn(3, 2 * 5, 8)
    ref_gamma, ref_beta = heads(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        gamma, beta = heads(z)
    assert gamma.dtype == beta.dtype == torch.float32
    torch.testing.assert_close(gamma, ref_gamma, rtol=0, atol=0)
    torch.testing.assert_close(beta, ref_beta, rtol=0, atol=0)


@pytest.mark.parametrize("family", ["florence2", "paligemma", "qwen2_5_vl"])
def test_transformers_conventions_base_prefix_no_split_and_return_dict(family):
    model = make_model(family).eval()
    # base_model_prefix names the attribute that holds the backbone
    assert getattr(model, model.base_model_prefix) is model.backbone
    # device_map splitting follows the backbone's own unsplittable blocks
    backbone_blocks = set(model.backbone._no_split_modules or [])
    assert backbone_blocks, f"{family}: the backbone declares no unsplittable modules"
    assert backbone_blocks <= set(model._no_split_modules)
    inputs = make_inputs(family)
    actions = torch.randn(2, model.config.chunk_size, model.config.action_dim)
    with torch.no_grad():
        out = model(**inputs, actions=actions)
        tup = model(**inputs, actions=actions, return_dict=False)
    assert isinstance(tup, tuple)
    assert len(tup) == len(out.to_tuple())
    for a, b in zip(tup, out.to_tuple(), strict=True):
        torch.testing.assert_close(a, b)


# ------------------------------------------------------------------------------------------------------------
# Hostile checkpoints and inputs: refused at load time, naming the key (moved from test_hostile_inputs.py)
# ------------------------------------------------------------------------------------------------------------
def _tiny_model(**overrides):
    import torch
    from niaf_tiny_backbones import BACKBONES

    from configuration_niaf import NiafConfig
    from modeling_niaf import NiafForActionFunction

    kwargs = dict(
        backbone_config=BACKBONES["paligemma"](),
        action_dim=3,
        chunk_size=6,
        control_hz=10.0,
        siren_layers=2,
        siren_width=16,
        modulation_groups=4,
    )
    kwargs.update(overrides)
    torch.manual_seed(0)
    return NiafForActionFunction(NiafConfig(**kwargs)).eval()


@pytest.mark.parametrize("where", ["siren.layers.0.weight", "modulation_heads.beta_weight"])
def test_checkpoint_with_non_finite_weights_is_refused_naming_the_key(tmp_path, where):
    import torch
    from safetensors.torch import load_file, save_file

    from modeling_niaf import NiafForActionFunction

    model = _tiny_model()
    model.save_pretrained(tmp_path)
    NiafForActionFunction.from_pretrained(tmp_path)  # the clean checkpoint loads
    weights = load_file(tmp_path / "model.safetensors")
    weights[where] = weights[where].clone()
    weights[where].view(-1)[3] = float("nan") if "siren" in where else float("inf")
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=rf"weight `{where}` holds NaN or inf") as err:
        NiafForActionFunction.from_pretrained(tmp_path)
    assert str(tmp_path) in str(err.value) and "\n" not in str(err.value)
    assert torch.isfinite(model.siren.layers[0].weight).all()  # the original was not touched


@pytest.mark.parametrize(
    "key, value",
    [
        ("siren_omega0", 1e300),
        ("siren_layers", 200_000),
        ("siren_width", 10**7),
        ("chunk_size", 10**9),
        ("num_cameras", 1000),
        ("control_hz", float("inf")),
    ],
)
def test_head_settings_outside_sane_bounds_are_refused_at_load(tmp_path, key, value):
    import json

    from modeling_niaf import NiafForActionFunction

    _tiny_model().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config[key] = value
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=rf"`{key}` must be"):
        NiafForActionFunction.from_pretrained(tmp_path)


def test_zero_range_or_nan_statistics():
    from configuration_niaf.normalization import MIN_STATE_HALF_RANGE, AffineNormalizer

    stats = {"q01": [0.0, 2.0], "q99": [1.0, 2.0]}  # dim 1 never moved in the data
    state = AffineNormalizer.from_stats(stats, "QUANTILES", 2, feature="state")
    # a deviation of 1e-3 in the constant dimension stays 1e-3, not 1e-3 / 1e-8 = 1e5
    np.testing.assert_allclose(state.normalize(np.array([0.5, 2.001])), [0.0, 0.001], atol=1e-12)
    assert MIN_STATE_HALF_RANGE <= 1e-6
    action = AffineNormalizer.from_stats(stats, "QUANTILES", 2, feature="action")
    assert action.denormalize(np.array([0.3, 0.7]))[1] == pytest.approx(
        2.0, abs=1e-7
    )  # outputs stay the constant
    bad = {"q01": [0.0, float("nan")], "q99": [1.0, 2.0]}
    with pytest.raises(ValueError, match=r"'state' stats 'q01' is NaN or inf in dims \[1\]"):
        AffineNormalizer.from_stats(bad, "QUANTILES", 2, feature="state")
    with pytest.raises(ValueError, match=r"normalization_stats\['action'\]\['q01'\]` is not finite"):
        _tiny_model(normalization_stats={"action": {"q01": [0.0, float("nan"), 0.0], "q99": [1.0, 1.0, 1.0]}})


def test_token_ids_outside_the_vocabulary_are_refused():
    import torch
    from niaf_tiny_backbones import VOCAB, make_inputs

    model = _tiny_model()
    inputs = make_inputs("paligemma")
    with torch.no_grad():
        model(**inputs)
    for bad in (VOCAB, 10**12, -1):
        hostile = dict(inputs, input_ids=inputs["input_ids"].clone())
        hostile["input_ids"][0, -1] = bad
        with pytest.raises(
            ValueError,
            match=rf"`input_ids` holds token ids .* outside the backbone's vocabulary \[0, {VOCAB}\)",
        ):
            model(**hostile)
    with pytest.raises(ValueError, match="`input_ids` must be a LongTensor"):
        model(**dict(inputs, input_ids=inputs["input_ids"].float()))



# --------------------------------------------------------------------------------------------------------
# The base model: NiafModel returns Z; NiafForActionFunction is the base plus the ψ heads and the SIREN
# --------------------------------------------------------------------------------------------------------
HEAD_MODULES = ("modulation_heads", "siren")


@pytest.mark.parametrize("family", ["florence2", "paligemma"])
def test_niaf_model_returns_z_of_shape_batch_queries_hidden(family):
    """The base holds the backbone, the queries and the state pathway and no head; its forward is the policy's
    backbone pass: Z [B, Q, d] with Q = L·(G+1) query tokens and d the backbone's hidden size."""
    from modeling_niaf import NiafModel, NiafModelOutput

    policy = make_model(family, use_state=True, state_dim=4)
    cfg = policy.config
    base = NiafModel(cfg).eval()
    assert not any(hasattr(base, name) for name in HEAD_MODULES) and isinstance(policy, NiafModel)
    shared = {k: v for k, v in policy.state_dict().items() if not k.startswith(tuple(f"{m}." for m in HEAD_MODULES))}
    assert set(base.state_dict()) == set(shared) and len(shared) < len(policy.state_dict())
    base.load_state_dict(shared, strict=True)
    inputs = dict(make_inputs(family, batch=3), state=torch.randn(3, 4))
    with torch.no_grad():
        out = base(**inputs)
        as_tuple = base(**inputs, return_dict=False)
        z_policy = policy(**inputs).query_hidden_states
    assert isinstance(out, NiafModelOutput)
    q = cfg.siren_layers * (cfg.modulation_groups + 1)
    assert cfg.num_queries == q == 10
    d = policy.backbone.get_input_embeddings().embedding_dim  # the width of the tokens the backbone reads
    assert out.query_hidden_states.shape == (3, q, d) and d == cfg.hidden_size
    torch.testing.assert_close(out.query_hidden_states, z_policy, rtol=0, atol=0)
    assert len(as_tuple) == 1
    torch.testing.assert_close(as_tuple[0], out.query_hidden_states, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"NiafModel.forward got unexpected arguments \['actions'\]"):
        base(**inputs, actions=torch.zeros(3, cfg.chunk_size, cfg.action_dim))
    with pytest.raises(ValueError, match=r"`state` \[B, 4\] is required"):  # the policy's input checks
        base(**make_inputs(family))


def test_niaf_model_loads_the_shared_part_of_a_policy_checkpoint(tmp_path):
    from modeling_niaf import NiafModel

    policy = make_model("paligemma")
    policy.save_pretrained(tmp_path / "ckpt")
    base, info = NiafModel.from_pretrained(tmp_path / "ckpt", output_loading_info=True)
    assert type(base) is NiafModel
    # the head's weights are left out on purpose; nothing of the base is missing
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    for name, tensor in base.state_dict().items():
        torch.testing.assert_close(tensor, policy.state_dict()[name], rtol=0, atol=0, msg=name)
    inputs = make_inputs("paligemma")
    with torch.no_grad():
        torch.testing.assert_close(base.eval()(**inputs).query_hidden_states, policy.encode_queries(**inputs),
                                   rtol=0, atol=0)
    # the policy itself stays strict: a checkpoint of the base alone misses the head
    base.save_pretrained(tmp_path / "base")
    with pytest.raises(ValueError, match=r"NiafForActionFunction.from_pretrained\(.*missing \(modulation_heads\."):
        NiafForActionFunction.from_pretrained(tmp_path / "base")


def test_a_checkpoint_saved_by_the_previous_code_loads_strictly_with_unchanged_names(tmp_path):
    """``tests/previous_checkpoints/niaf`` is what the code before NiafModel saved: the policy loads it with no
    missing, unexpected or mismatched key and saves every tensor back under the same name, unchanged."""
    from checkpoint_fixtures import write_previous_checkpoint

    written = write_previous_checkpoint("niaf", tmp_path / "previous")
    model, info = NiafForActionFunction.from_pretrained(tmp_path / "previous", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    model.save_pretrained(tmp_path / "again")
    again = load_file(tmp_path / "again" / "model.safetensors")
    assert sorted(again) == sorted(written)
    for name, tensor in written.items():
        torch.testing.assert_close(again[name], tensor, rtol=0, atol=0, msg=name)
    torch.testing.assert_close(model.siren.readout.weight, written["siren.readout.weight"], rtol=0, atol=0)
    torch.testing.assert_close(model.query_embeddings.weight, written["query_embeddings.weight"], rtol=0, atol=0)
