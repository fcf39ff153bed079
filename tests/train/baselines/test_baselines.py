"""Comparison heads: B-spline maths against scipy, the flow sampler against known fields, the
waypoint loss and masking, save → reload of every head, NIAF checkpoints unchanged, niaf-train / niaf-eval wiring."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from niaf_train.baselines import (
    COMPARISON_HEADS,
    NiafBaselineForActionFunction,
    action_head_settings,
    checkpoint_action_head,
    head_parameter_count,
    load_model,
    load_processor,
)
from niaf_train.baselines.bspline import bspline_basis, clamped_knots
from niaf_train.baselines.functions import BasisActionFunction, spline_basis, waypoint_basis
from niaf_train.baselines.heads import FlowHead, euler_sample
from safetensors.torch import load_file

from modeling_niaf import NiafConfig, NiafForActionFunction, NiafProcessor

scipy_interpolate = pytest.importorskip("scipy.interpolate")

K, D, STATE = 8, 4, 39
HZ = 20.0
T = (K - 1) / HZ


# ---------------------------------------------------------------------------------------------------------------
# B-spline maths
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("m", [4, 6, 9])
def test_bspline_basis_values_and_derivatives_match_scipy(m):
    rng = np.random.default_rng(m)
    c = rng.normal(size=(m, 3))
    knots = clamped_knots(m)
    assert knots[:4].tolist() == [-1.0] * 4 and knots[-4:].tolist() == [1.0] * 4 and len(knots) == m + 4
    reference = scipy_interpolate.BSpline(knots, c, 3, extrapolate=True)
    tau = np.concatenate([np.linspace(-1, 1, 101), [-1.0, 1.0, -1.3, 1.25], knots[4:-4]])
    basis = bspline_basis(tau, m, derivatives=3)
    assert basis.shape == (4, len(tau), m)
    for order in range(4):
        np.testing.assert_allclose(basis[order] @ c, reference(tau, nu=order), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(basis[0].sum(-1), 1.0, atol=1e-12)  # partition of unity
    np.testing.assert_allclose(basis[0][[0, 100]] @ c, c[[0, -1]], atol=1e-12)  # clamped: ends = end control points


def test_cubic_bspline_is_c2_at_interior_knots():
    m = 7
    c = np.random.default_rng(1).normal(size=(m, 2))
    eps = 1e-9
    for knot in clamped_knots(m)[4:-4]:
        left = bspline_basis(np.array([knot - eps]), m, derivatives=3)[:, 0] @ c
        right = bspline_basis(np.array([knot + eps]), m, derivatives=3)[:, 0] @ c
        np.testing.assert_allclose(left[:3], right[:3], atol=1e-6)  # value, velocity, acceleration continuous
        assert np.abs(left[3] - right[3]).max() > 1e-3  # jerk jumps (piecewise constant)


def test_spline_function_units_denormalisation_offset_and_numpy_twin():
    m = 6
    rng = np.random.default_rng(2)
    control = torch.tensor(rng.normal(size=(2, m, D)), dtype=torch.float32)
    center, half = rng.normal(size=D), rng.uniform(0.5, 2.0, size=D)
    offset = rng.normal(size=(2, D))
    fn = BasisActionFunction(control, spline_basis(m), T, center, half, chunk_size=K, position_offset=offset)
    times = np.linspace(0.0, T, 13)
    traj = fn(times=times, derivatives=3)
    assert traj.position.shape == (2, 13, D) and traj.position.dtype == torch.float32
    knots = clamped_knots(m)
    tau = 2 * times / T - 1
    for b in range(2):
        spline = scipy_interpolate.BSpline(knots, control[b].double().numpy(), 3)
        want = spline(tau) * half + center + offset[b]
        np.testing.assert_allclose(traj.position[b].numpy(), want, rtol=1e-5, atol=1e-5)
        for order, name in ((1, "velocity"), (2, "acceleration"), (3, "jerk")):
            want = spline(tau, nu=order) * (2 / T) ** order * half  # per second, no offset
            np.testing.assert_allclose(getattr(traj, name)[b].numpy(), want, rtol=1e-5, atol=1e-4)
    normalised = fn(times=times, derivatives=0, denormalize=False).position
    np.testing.assert_allclose(normalised[1].numpy(), scipy_interpolate.BSpline(knots, control[1].double().numpy(), 3)(tau),
                               atol=1e-6)
    fast = fn.to_numpy()
    for b in range(2):
        for t in (0.0, 0.1234, T):
            row = fast.at(t, 3, b)
            want = fn[b](times=[t], derivatives=3)
            np.testing.assert_allclose(row[0], want.position[0, 0].numpy(), rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(row[3], want.jerk[0, 0].numpy(), rtol=1e-5, atol=1e-3)
    assert len(fn) == 2 and len(fn[1:]) == 1
    default = fn(derivatives=0)
    assert default.position.shape == (2, K, D)  # the K training points by default
    with pytest.raises(ValueError, match="leaves the chunk"):
        fn(times=[T + 0.1])


@pytest.mark.parametrize("mode", ["zoh", "linear"])
def test_waypoint_chunks_are_executed_like_niaf_eval_executes_waypoints(mode):
    from niaf_train.evaluation import WaypointFunction

    rng = np.random.default_rng(3)
    waypoints = torch.tensor(rng.normal(size=(1, K, D)), dtype=torch.float32)
    center, half = rng.normal(size=D), rng.uniform(0.5, 2.0, size=D)
    fn = BasisActionFunction(waypoints, waypoint_basis(K, mode), T, center, half, chunk_size=K)
    physical = waypoints[0].double().numpy() * half + center
    reference = WaypointFunction(physical, 1.0 / HZ, mode)
    times = np.linspace(0, T, 29)
    got = fn(times=times, derivatives=3)
    want = reference(times=times, derivatives=3)
    np.testing.assert_allclose(got.position[0].numpy(), want.position, atol=1e-5)
    np.testing.assert_allclose(got.velocity[0].numpy(), want.velocity, atol=1e-4)
    np.testing.assert_allclose(fn(derivatives=0).position[0].numpy(), physical, atol=1e-5)  # τ_k → the waypoints
    ref = reference(times=[0.17], derivatives=1)
    np.testing.assert_allclose(fn.to_numpy().at(0.17, 1, 0), np.stack([ref.position[0], ref.velocity[0]]), atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# Flow sampler
# ---------------------------------------------------------------------------------------------------------------
def test_euler_sampler_integrates_known_fields_exactly():
    x0 = torch.randn(3, K, D, dtype=torch.float64)
    a = torch.randn(3, K, D, dtype=torch.float64)
    # the straight path's constant velocity a - x0: exact for any step count
    for steps in (1, 10):
        np.testing.assert_allclose(euler_sample(lambda x, t: a - x0, x0, steps).numpy(), a.numpy(), atol=1e-12)
    # a field affine in t: v = a + 2t·b; Euler with N steps gives x0 + a + b(N-1)/N exactly (Σ 2 i/N · 1/N)
    b = torch.randn(3, K, D, dtype=torch.float64)
    got = euler_sample(lambda x, t: a + 2 * t[:, None, None] * b, x0, 10)
    np.testing.assert_allclose(got.numpy(), (x0 + a + b * 9 / 10).numpy(), atol=1e-12)
    # a linear field v = λx: x0 (1 + λ/N)^N
    got = euler_sample(lambda x, t: -0.7 * x, x0, 10)
    np.testing.assert_allclose(got.numpy(), (x0 * (1 - 0.07) ** 10).numpy(), rtol=1e-12)


def test_flow_head_samples_from_seeded_noise_with_its_network_swapped():
    head = FlowHead(num_queries=5, hidden_size=8, chunk_size=K, action_dim=D, width=16, steps=10)
    z = torch.randn(2, 5, 8)
    target = torch.randn(2, K, D)
    x0 = torch.randn((2, K, D), generator=torch.Generator().manual_seed(7))
    head.velocity = lambda x, t, c: target - x0  # the exact straight-path velocity
    out = head.sample(z, generator=torch.Generator().manual_seed(7))
    np.testing.assert_allclose(out.numpy(), target.numpy(), atol=1e-5)
    pred, wanted = FlowHead(5, 8, K, D, 16).loss_terms(z, target)
    assert pred.shape == wanted.shape == (2, K, D)


# ---------------------------------------------------------------------------------------------------------------
# Tiny models
# ---------------------------------------------------------------------------------------------------------------
def _stats():
    return {"action": {"min": [-1.0, -2.0, -0.5, -1.0], "max": [1.0, 2.0, 0.5, 1.0]},
            "state": {"min": [-1.0] * STATE, "max": [1.0] * STATE}}


def _processor():
    from niaf_train.tiny import (
        IMAGE_TOKEN,
        image_tokens,
        make_tiny_image_processor,
        make_tiny_tokenizer,
        words_of,
    )

    return NiafProcessor(
        image_processor=make_tiny_image_processor(32), tokenizer=make_tiny_tokenizer(words_of(["reach the goal"])),
        image_token=IMAGE_TOKEN, image_seq_length=image_tokens(32, 8), num_cameras=1, action_dim=D, state_dim=STATE,
        normalization_mode="MIN_MAX", normalization_stats=_stats(), prompt_template="{instruction}",
    )


def _config(action_head: str | None, **extra) -> NiafConfig:
    from niaf_train.tiny import tiny_backbone_config

    head = {"action_dim": D, "chunk_size": K, "control_hz": HZ, "siren_layers": 2, "siren_width": 16,
            "modulation_groups": 4, "use_state": True, "state_dim": STATE, "state_to_queries": True,
            "normalization_mode": "MIN_MAX", "normalization_stats": _stats(), "siren_omega0": 5.0}
    if action_head is not None:
        head.update({"action_head": action_head, "head_hidden_size": 32, **extra})
    return NiafConfig(backbone_config=tiny_backbone_config(32, 1, 32, 8), **head)


def _batch(processor, n=2, actions=True):
    rng = np.random.default_rng(0)
    kwargs = {"images": [[rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)] for _ in range(n)],
              "text": ["reach the goal"] * n, "state": torch.tensor(rng.uniform(-1, 1, (n, STATE)), dtype=torch.float32)}
    if actions:
        kwargs["actions"] = torch.tensor(rng.uniform(-1, 1, (n, K, D)), dtype=torch.float32)
        kwargs["action_mask"] = torch.ones(n, K, dtype=torch.bool)
    return dict(processor(**kwargs))


@pytest.mark.parametrize("loss", ["l1", "l2"])
def test_waypoint_loss_and_masking(loss):
    model = NiafBaselineForActionFunction(_config("waypoints", waypoint_loss=loss))
    processor = _processor()
    batch = _batch(processor)
    batch["action_mask"][0, 5:] = False
    out = model(**batch)
    assert out.positions.shape == (2, K, D)
    err = out.positions.detach() - batch["actions"]
    per = err.abs().sum(-1) if loss == "l1" else err.pow(2).sum(-1)
    mask = batch["action_mask"].float()
    torch.testing.assert_close(out.loss_pos.detach(), (per * mask).sum() / mask.sum())
    out.loss.backward()
    grads = [p.grad.clone() for p in model.action_head.parameters()]
    model.zero_grad()
    batch["actions"][0, 5:] += 10.0  # padded steps: no effect on the loss or the gradient
    out2 = model(**batch)
    torch.testing.assert_close(out2.loss, out.loss)
    out2.loss.backward()
    for g, p in zip(grads, model.action_head.parameters(), strict=True):
        torch.testing.assert_close(p.grad, g)
    # the chunk function at τ_k returns the waypoints (normalised)
    fn = model.predict_action_function(**batch, denormalize=False)
    torch.testing.assert_close(fn(derivatives=0).position, out.positions.detach(), atol=1e-5, rtol=1e-5)


def test_bspline_losses_use_the_spline_and_its_velocity():
    model = NiafBaselineForActionFunction(_config("bspline", bspline_control_points=5))
    processor = _processor()
    batch = _batch(processor)
    batch["velocities"] = torch.randn(2, K, D)
    out = model(**batch)
    control = model.action_head(model.encode_queries(**{k: batch[k] for k in
                                                       ("input_ids", "attention_mask", "pixel_values", "state")}))
    tau = np.linspace(-1, 1, K)
    knots = clamped_knots(5)
    for b in range(2):
        spline = scipy_interpolate.BSpline(knots, control[b].detach().double().numpy(), 3)
        np.testing.assert_allclose(out.positions[b].detach().numpy(), spline(tau), atol=1e-5)
        np.testing.assert_allclose(out.velocities[b].detach().numpy(), spline(tau, nu=1) * 2 / T, atol=1e-4)
    want = ((out.velocities - batch["velocities"]) ** 2).sum(-1).mean()
    torch.testing.assert_close(out.loss_vel, want)
    torch.testing.assert_close(out.loss, out.loss_pos + out.loss_vel)  # λ_p = λ_v = 1


def test_bspline_dense_losses_use_the_spline_between_chunk_points():
    """Dense targets at τ between the chunk points: the B-spline is fitted there (scipy by hand); the waypoint and
    flow heads have K outputs and ignore them."""
    model = NiafBaselineForActionFunction(_config("bspline", bspline_control_points=5))
    batch = _batch(_processor())
    m = 2 * (K - 1) + 1
    tau = torch.linspace(-1, 1, m)
    g = torch.Generator().manual_seed(3)
    dense = {"dense_tau": tau, "dense_actions": torch.randn(2, m, D, generator=g),
             "dense_velocities": torch.randn(2, m, D, generator=g), "dense_mask": torch.ones(2, m, dtype=torch.bool)}
    dense["dense_mask"][1, m - 3:] = False
    out = model(**batch, **dense)
    control = model.action_head(model.encode_queries(**{k: batch[k] for k in
                                                       ("input_ids", "attention_mask", "pixel_values", "state")}))
    knots = clamped_knots(5)
    pos = vel = 0.0
    for b in range(2):
        spline = scipy_interpolate.BSpline(knots, control[b].detach().double().numpy(), 3)
        keep = dense["dense_mask"][b].numpy()
        pos += ((spline(tau.double().numpy()) - dense["dense_actions"][b].double().numpy()) ** 2).sum(-1)[keep].sum()
        vel += ((spline(tau.double().numpy(), nu=1) * 2 / T - dense["dense_velocities"][b].double().numpy()) ** 2
                ).sum(-1)[keep].sum()
    count = float(dense["dense_mask"].sum())
    np.testing.assert_allclose(float(out.loss_pos.detach()), pos / count, rtol=1e-5)
    np.testing.assert_allclose(float(out.loss_vel.detach()), vel / count, rtol=1e-5)
    for kind in ("waypoints", "flow"):
        other = NiafBaselineForActionFunction(_config(kind))
        torch.manual_seed(0)
        with_dense = other(**batch, **dense).loss
        torch.manual_seed(0)
        torch.testing.assert_close(with_dense, other(**batch).loss)


@pytest.mark.parametrize("kind", COMPARISON_HEADS)
def test_comparison_head_checkpoint_saves_and_reloads(kind, tmp_path):
    model = NiafBaselineForActionFunction(_config(kind)).eval()
    processor = _processor()
    model.save_pretrained(tmp_path, processor=processor)
    config = json.loads((tmp_path / "config.json").read_text())
    # NIAF's auto_map and code travel along only so that AutoModel reaches NIAF's loader, which names the right one
    assert config["action_head"] == kind and config["auto_map"]["AutoModel"].endswith("NiafForActionFunction")
    assert (tmp_path / "modeling_niaf.py").is_file()
    assert "auto_map" not in json.loads((tmp_path / "processor_config.json").read_text())
    assert checkpoint_action_head(tmp_path) == kind
    loaded = load_model(tmp_path).eval()
    assert type(loaded) is NiafBaselineForActionFunction and loaded.action_head_kind == kind
    reference = model.state_dict()
    for name, tensor in loaded.state_dict().items():
        torch.testing.assert_close(tensor, reference[name], rtol=0, atol=0, msg=name)
    batch = _batch(load_processor(tmp_path), actions=False)
    a = model.predict_action_function(**batch)(num_points=15, derivatives=1)
    b = loaded.predict_action_function(**batch)(num_points=15, derivatives=1)
    torch.testing.assert_close(a.position, b.position, rtol=0, atol=0)
    torch.testing.assert_close(a.velocity, b.velocity, rtol=0, atol=0)
    generated = loaded.generate_actions(**batch, num_points=15, derivatives=1)  # NIAF's one-call API works too
    torch.testing.assert_close(generated.position, b.position, rtol=0, atol=0)
    assert 0 < head_parameter_count(loaded) == sum(p.numel() for p in loaded.action_head.parameters())
    with pytest.raises(ValueError, match=f"holds a '{kind}' comparison head.*niaf_train.baselines.load_model"):
        NiafForActionFunction.from_pretrained(tmp_path)  # NIAF's class names the loader instead of the weights
    if kind == COMPARISON_HEADS[0]:  # the same through AutoModel in a fresh Python, where nothing is registered
        script = ("from transformers import AutoModel\n"
                  f"AutoModel.from_pretrained({str(tmp_path)!r}, trust_remote_code=True)\n")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode != 0
        assert f"holds a '{kind}' comparison head" in done.stderr and "niaf_train.baselines.load_model" in done.stderr


@pytest.mark.parametrize("kind", COMPARISON_HEADS)
def test_comparison_heads_are_task_models_on_the_base_not_niaf_subclasses(kind, tmp_path):
    """A comparison head is NiafModel + its head: no ψ heads, no SIREN, no `modulations`; NiafModel loads the
    shared part of its checkpoint, equal to the head model's."""
    from modeling_niaf import NiafModel

    assert not issubclass(NiafBaselineForActionFunction, NiafForActionFunction)
    model = NiafBaselineForActionFunction(_config(kind)).eval()
    assert isinstance(model, NiafModel) and not isinstance(model, NiafForActionFunction)
    assert not any(hasattr(model, name) for name in ("modulation_heads", "siren", "modulations"))
    names = set(model.state_dict())
    base_names = set(NiafModel(_config(kind)).state_dict())
    assert names - base_names == {n for n in names if n.startswith("action_head.")} != set()
    model.save_pretrained(tmp_path, processor=_processor())
    base, info = NiafModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    batch = _batch(_processor(), actions=False)
    with torch.no_grad():
        torch.testing.assert_close(base.eval()(**batch).query_hidden_states, model.encode_queries(**batch),
                                   rtol=0, atol=0)


@pytest.mark.parametrize("kind", COMPARISON_HEADS)
def test_comparison_checkpoint_saved_by_the_previous_code_loads_strictly(kind, tmp_path):
    """``tests/previous_checkpoints/<kind>`` is what the code before NiafModel saved (its config.json names no
    ``loader``): ``load_model`` loads it with no missing, unexpected or mismatched key and saves every tensor
    back under the same name; NIAF's class still refuses it, naming the class its config.json says saved it."""
    from checkpoint_fixtures import write_previous_checkpoint
    from niaf_train.baselines import LOADER

    written = write_previous_checkpoint(kind, tmp_path / "previous")
    assert "loader" not in json.loads((tmp_path / "previous" / "config.json").read_text())
    model, info = NiafBaselineForActionFunction.from_pretrained(tmp_path / "previous", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert type(load_model(tmp_path / "previous")) is NiafBaselineForActionFunction
    model.save_pretrained(tmp_path / "again", processor=_processor())
    again = load_file(tmp_path / "again" / "model.safetensors")
    assert sorted(again) == sorted(written)
    for name, tensor in written.items():
        torch.testing.assert_close(again[name], tensor, rtol=0, atol=0, msg=name)
    assert json.loads((tmp_path / "again" / "config.json").read_text())["loader"] == LOADER
    assert LOADER == f"{load_model.__module__}.{load_model.__name__}"  # the text names the function that loads it
    with pytest.raises(ValueError, match=f"holds a '{kind}' comparison head.*NiafBaselineForActionFunction"):
        NiafForActionFunction.from_pretrained(tmp_path / "previous")


def test_niaf_config_and_checkpoint_unchanged(tmp_path):
    from niaf_train.training.arguments import ModelOptions

    head = {"action_dim": D, "chunk_size": K}
    cls, kwargs = action_head_settings(ModelOptions(), head)
    assert cls is NiafForActionFunction and kwargs == head  # nothing added for NIAF
    cls, kwargs = action_head_settings(ModelOptions(action_head="flow"), head)
    assert cls is NiafBaselineForActionFunction and kwargs["action_head"] == "flow" and kwargs["flow_steps"] == 10
    model = NiafForActionFunction(_config(None))
    model.save_pretrained(tmp_path / "niaf", processor=_processor())
    config = json.loads((tmp_path / "niaf" / "config.json").read_text())
    assert "action_head" not in config and "auto_map" in config
    assert checkpoint_action_head(tmp_path / "niaf") == "niaf"
    assert "NiafForActionFunction" in type(load_model(tmp_path / "niaf")).__name__
    with pytest.raises(ValueError, match="action_head"):
        NiafBaselineForActionFunction(_config(None))


def test_action_head_config_errors_name_the_key_and_values():
    from niaf_train.training.arguments import ConfigError, load_config

    with pytest.raises(ConfigError) as err:
        load_config("default.yaml", ["--model.action_head", "diffusion"])
    message = str(err.value)
    assert "\n" not in message and "model.action_head" in message and "'bspline'" in message and "'diffusion'" in message
    with pytest.raises(ConfigError, match="model.bspline_control_points"):
        load_config("default.yaml", ["--model.action_head", "bspline", "--model.bspline_control_points", "3"])
    with pytest.raises(ConfigError, match="model.waypoint_loss"):
        load_config("default.yaml", ["--model.waypoint_loss", "huber"])
    assert load_config("default.yaml", ["--model.action_head", "flow"]).model.action_head == "flow"


# ---------------------------------------------------------------------------------------------------------------
# niaf-eval runs a comparison-head checkpoint
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind,execution", [("bspline", "function"), ("waypoints", "zoh"), ("flow", "linear")])
def test_niaf_eval_policy_runs_a_comparison_head_checkpoint(kind, execution, tmp_path):
    os.environ.setdefault("MUJOCO_GL", "egl")
    pytest.importorskip("metaworld")
    from niaf_train.data.metaworld import MetaWorldScene
    from niaf_train.evaluation import EvalSettings
    from niaf_train.evaluation.closed_loop import load_policy, run_episode

    model = NiafBaselineForActionFunction(_config(kind))
    model.config.normalization_stats = {"action": {"min": [-1.0] * D, "max": [1.0] * D},
                                        "state": _stats()["state"]}
    processor = _processor()
    processor.normalization_stats = model.config.normalization_stats
    model.save_pretrained(tmp_path, processor=processor)
    settings = EvalSettings(tasks=["reach-v3"], execution=execution, execute_hz=40, max_steps=12, video=False)
    policy = load_policy(tmp_path, settings)
    assert isinstance(policy.model, NiafBaselineForActionFunction)
    with MetaWorldScene("reach-v3", 1000, ["corner2"], 32) as scene:
        result = run_episode(scene, 0, policy, settings)
    assert result.steps == 12 and result.actions.shape == (12, D) and np.isfinite(result.actions).all()


@pytest.mark.slow
def test_niaf_train_and_niaf_eval_run_a_comparison_head_end_to_end(tmp_path, capsys):
    """niaf-train --model.action_head bspline → a plain checkpoint (no remote code) → niaf-eval's command line."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    pytest.importorskip("metaworld")
    from niaf_train.evaluation.cli import main as eval_main
    from niaf_train.training.arguments import load_config
    from niaf_train.training.loop import train

    cfg = load_config("default.yaml", [
        "--output_dir", str(tmp_path / "run"), "--max_steps", "3", "--model.action_head", "bspline",
        "--data.metaworld_tasks", "reach-v3", "--data.metaworld_episodes_per_task", "3",
        "--model.tiny_hidden_size", "32", "--model.head_hidden_size", "32", "--training.per_device_batch_size", "8",
        "--training.report_to", "none", "--training.num_threads", "1", "--training.save_steps", "0",
        "--training.eval_steps", "0", "--data.cache_dir", str(tmp_path / "cache"),
    ])
    result = train(cfg)
    final = tmp_path / "run" / "final"
    assert np.isfinite(result["metrics"]["position_mse"])
    assert checkpoint_action_head(final) == "bspline" and (final / "modeling_niaf.py").is_file()  # names load_model
    assert (final / "training_data.json").is_file()
    rc = eval_main(["--checkpoint", str(final), "--episodes", "1", "--max-steps", "10", "--execute-hz", "80",
                    "--no-video", "--output-dir", str(tmp_path / "eval")])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["tasks"]["reach-v3"]["episodes"] == 1 and results["benchmark_seed"] == 1000
    assert results["label"] == "bspline" and "bspline function@80Hz" in printed.out  # named by its head
