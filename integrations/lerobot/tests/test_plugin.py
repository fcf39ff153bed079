"""The LeRobot plugin (runs in the Python 3.12 LeRobot environment, see integrations/lerobot/ci.sh).

Offline and CPU-only; tiny random-weight NIAF models built in code. The end-to-end test (lerobot-train +
lerobot-eval) runs when ``NIAF_LEROBOT_DATASET`` names a local LeRobot v3 Meta-World dataset with a 4-d state.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

lerobot = pytest.importorskip("lerobot")

from lerobot.configs import PreTrainedConfig  # noqa: E402
from lerobot.policies.factory import get_policy_class, make_pre_post_processors  # noqa: E402
from lerobot.policies.utils import prepare_observation_for_inference  # noqa: E402
from lerobot.utils.import_utils import register_third_party_plugins  # noqa: E402
from niaf_train.tiny import make_tiny_image_processor, make_tiny_tokenizer, tiny_backbone_config  # noqa: E402

from modeling_niaf import NiafConfig as NiafModelConfig  # noqa: E402
from modeling_niaf import NiafForActionFunction, NiafProcessor  # noqa: E402

ACTION_DIM, STATE_DIM, K, HZ, IMAGE = 4, 5, 6, 20.0, 32
TASK = "reach the red goal point"


def _stats(rng: np.random.Generator, dim: int, constant_dims: tuple[int, ...] = ()) -> dict[str, list[float]]:
    x = rng.normal(size=(200, dim)) * rng.uniform(0.1, 2.0, size=dim) + rng.normal(size=dim)
    x[:, list(constant_dims)] = 0.25
    q = {f"q{p:02d}": np.quantile(x, p / 100, axis=0).tolist() for p in (1, 10, 50, 90, 99)}
    return {"min": x.min(0).tolist(), "max": x.max(0).tolist(), "mean": x.mean(0).tolist(),
            "std": x.std(0).tolist(), "count": [200], **q}


@pytest.fixture(scope="module")
def niaf_checkpoint(tmp_path_factory) -> Path:
    """A tiny NIAF checkpoint as niaf-train writes one (Hub layout, processor included), with a constant state
    dimension and a gripper dimension left unnormalised, so that every corner of NIAF's normalisation is used."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    stats = {"action": _stats(rng, ACTION_DIM), "state": _stats(rng, STATE_DIM, constant_dims=(4,))}
    backbone = tiny_backbone_config(32, 2, IMAGE, 8)
    config = NiafModelConfig(
        backbone_config=backbone, action_dim=ACTION_DIM, chunk_size=K, control_hz=HZ, siren_layers=2, siren_width=32,
        modulation_groups=8, use_state=True, state_dim=STATE_DIM, num_cameras=1, normalization_mode="QUANTILES",
        normalization_stats=stats, unnormalized_action_dims=[3],
    )
    model = NiafForActionFunction(config).eval()
    with torch.no_grad():  # the ψ heads start at zero (the shared prior); make the function depend on the input
        for p in model.modulation_heads.parameters():
            p.normal_(0.0, 0.05)
    processor = NiafProcessor.from_backbone_parts(
        backbone, make_tiny_image_processor(IMAGE), make_tiny_tokenizer(TASK.split()), num_cameras=1,
        action_dim=ACTION_DIM, state_dim=STATE_DIM, normalization_mode="QUANTILES", normalization_stats=stats,
        unnormalized_action_dims=[3], prompt_template="What action should the robot take to {instruction}?",
    )
    out = tmp_path_factory.mktemp("niaf") / "checkpoint"
    model.save_pretrained(out, processor=processor)
    return out


def _observation(rng: np.random.Generator, batch: int = 2) -> dict[str, np.ndarray]:
    return {
        "image": rng.integers(0, 256, size=(batch, 48, 40, 3), dtype=np.uint8),  # any size: the backbone resizes
        "state": rng.normal(size=(batch, STATE_DIM)).astype(np.float32),
    }


def _niaf_actions(checkpoint: Path, obs: dict[str, np.ndarray], **query) -> torch.Tensor:
    """Physical actions the NIAF way: NiafProcessor + generate_actions."""
    model = NiafForActionFunction.from_pretrained(checkpoint).eval()
    processor = NiafProcessor.from_pretrained(checkpoint)
    n = obs["image"].shape[0]
    inputs = processor(images=list(obs["image"]), text=[TASK] * n, state=obs["state"])
    return model.generate_actions(**inputs, derivatives=0, **query).position


def _lerobot_batch(obs: dict[str, np.ndarray]) -> dict:
    """What lerobot-eval hands the preprocessor: float [B, 3, H, W] images in [0, 1], physical state, task list."""
    image = torch.from_numpy(obs["image"]).permute(0, 3, 1, 2).float() / 255
    n = image.shape[0]
    return {"observation.image": image, "observation.state": torch.from_numpy(obs["state"]), "task": [TASK] * n}


def _load(folder: Path):
    policy = get_policy_class("niaf").from_pretrained(folder)
    pre, post = make_pre_post_processors(policy.config, pretrained_path=str(folder))
    return policy, pre, post


# ---------------------------------------------------------------------------------------------------------
def test_plugin_is_discovered():
    names = {d.metadata["Name"] for d in importlib.metadata.distributions()}
    assert "lerobot_policy_niaf" in names  # the distribution name LeRobot's discovery matches (underscored)
    register_third_party_plugins()
    assert "niaf" in PreTrainedConfig.get_known_choices()
    cls = get_policy_class("niaf")
    assert cls.__name__ == "NiafPolicy" and cls.__module__ == "lerobot_policy_niaf.modeling_niaf"
    from lerobot_policy_niaf.processor_niaf import make_niaf_pre_post_processors

    config = PreTrainedConfig.get_choice_class("niaf")(device="cpu")
    pre, post = make_niaf_pre_post_processors(config)
    # the step names lerobot-eval / lerobot-train override
    pre_names = {getattr(type(s), "_registry_name", None) for s in pre.steps}
    assert {"rename_observations_processor", "device_processor", "normalizer_processor"} <= pre_names
    assert {"unnormalizer_processor", "device_processor"} <= {getattr(type(s), "_registry_name", None) for s in post.steps}


def test_round_trip_gives_identical_actions(niaf_checkpoint, tmp_path):
    from lerobot_policy_niaf.convert import lerobot_to_niaf, niaf_to_lerobot

    obs = _observation(np.random.default_rng(1))
    expected = _niaf_actions(niaf_checkpoint, obs)

    folder = niaf_to_lerobot(str(niaf_checkpoint), tmp_path / "pretrained_model")
    assert (folder / "policy_preprocessor.json").is_file() and (folder / "niaf_processor").is_dir()
    policy, pre, post = _load(folder)
    batch = pre(_lerobot_batch(obs))
    got = post(policy.predict_action_chunk(batch))
    assert got.shape == expected.shape == (2, K, ACTION_DIM)
    # NiafProcessor normalises the state in float64 and rounds once; LeRobot's step computes the same formula in
    # float32: the normalised state can differ by one float32 ulp, hence a tolerance end to end ...
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    # ... and bit-identical actions from identical model inputs (same weights, same head, same de-normalisation)
    model = NiafForActionFunction.from_pretrained(niaf_checkpoint).eval()
    same_inputs = model.generate_actions(**policy.model_inputs(batch), derivatives=0).position
    assert torch.equal(got, same_inputs)

    back = lerobot_to_niaf(folder, tmp_path / "niaf_again")
    assert torch.equal(_niaf_actions(back, obs), expected)  # LeRobot -> NIAF: the very same checkpoint
    again = NiafModelConfig.from_pretrained(back)
    assert again.normalization_stats == NiafModelConfig.from_pretrained(niaf_checkpoint).normalization_stats


def test_normalisation_is_niaf_processors_exactly(niaf_checkpoint, tmp_path):
    from lerobot_policy_niaf.convert import niaf_to_lerobot

    processor = NiafProcessor.from_pretrained(niaf_checkpoint)
    folder = niaf_to_lerobot(str(niaf_checkpoint), tmp_path / "pm")
    _, pre, post = _load(folder)
    rng = np.random.default_rng(2)
    state = (rng.normal(size=(7, STATE_DIM)) * 3).astype(np.float32)
    batch = pre({"observation.image": torch.rand(7, 3, 8, 8), "observation.state": torch.from_numpy(state),
                 "task": [TASK] * 7})
    assert torch.equal(batch["observation.state"], torch.from_numpy(processor.normalize_state(state)))
    normalised = torch.from_numpy(rng.normal(size=(7, ACTION_DIM)).astype(np.float32))
    assert torch.equal(post(normalised), processor.denormalize_actions(normalised))


def test_strict_loading(niaf_checkpoint, tmp_path):
    from lerobot_policy_niaf.convert import niaf_to_lerobot
    from safetensors.torch import load_file, save_file

    folder = niaf_to_lerobot(str(niaf_checkpoint), tmp_path / "pm")
    cls = get_policy_class("niaf")
    with pytest.raises(ValueError, match="strict"):
        cls.from_pretrained(folder, strict=False)
    weights = load_file(folder / "model.safetensors")
    dropped = next(k for k in weights if "modulation_heads" in k)
    del weights[dropped]
    save_file(weights, folder / "model.safetensors")
    with pytest.raises(RuntimeError, match="Missing key"):
        cls.from_pretrained(folder)


def test_predict_action_chunk_at_any_rate(niaf_checkpoint, tmp_path):
    from lerobot_policy_niaf.convert import niaf_to_lerobot

    obs = _observation(np.random.default_rng(3))
    policy, pre, post = _load(niaf_to_lerobot(str(niaf_checkpoint), tmp_path / "pm"))
    chunk = post(policy.predict_action_chunk(pre(_lerobot_batch(obs)), rate_hz=4 * HZ))
    assert chunk.shape == (2, 4 * (K - 1) + 1, ACTION_DIM)  # 4x the training rate over the same chunk
    expected = _niaf_actions(niaf_checkpoint, obs, num_points=4 * (K - 1) + 1)
    torch.testing.assert_close(chunk, expected, rtol=0, atol=1e-5)  # τ from times vs. linspace: float rounding
    assert torch.equal(chunk[:, ::4], post(policy.predict_action_chunk(pre(_lerobot_batch(obs)))))


def test_select_action_executes_the_function_as_lerobot_rollout_calls_it(niaf_checkpoint, tmp_path):
    """The policy's side of lerobot-rollout (SyncInferenceEngine): a robot frame [H, W, C] uint8 + state →
    prepare_observation_for_inference → preprocessor → select_action → postprocessor, at the loop's rate.
    Each command is the action function at that tick's time, not a waypoint from a queue."""
    from lerobot_policy_niaf.convert import niaf_to_lerobot

    folder = niaf_to_lerobot(str(niaf_checkpoint), tmp_path / "pm", n_action_steps=6, execute_hz=4 * HZ)
    policy, pre, post = _load(folder)
    assert policy.config.execute_hz == 4 * HZ and policy.config.n_action_steps == 6
    rng = np.random.default_rng(4)
    policy.reset()
    for _plan in range(2):  # two backbone passes, 6 ticks each
        obs = _observation(rng, batch=1)
        frame = {"observation.image": obs["image"][0], "observation.state": obs["state"][0]}
        expected = _niaf_actions(niaf_checkpoint, obs, times=np.arange(6) / (4 * HZ))[0]
        commands = []
        for tick in range(6):
            batch = prepare_observation_for_inference(dict(frame), torch.device("cpu"), TASK, "sawyer")
            with torch.inference_mode():
                action = post(policy.select_action(pre(batch)))
            assert action.shape == (1, ACTION_DIM)
            commands.append(action[0])
            torch.testing.assert_close(action[0], expected[tick], rtol=0, atol=1e-5)  # numpy evaluator
        # ticks at 4x the training rate fall between the training points: the command moves at every tick
        assert all(not torch.equal(a, b) for a, b in zip(commands, commands[1:], strict=False))


@pytest.mark.skipif(not os.environ.get("NIAF_LEROBOT_DATASET"), reason="set NIAF_LEROBOT_DATASET (see ci.sh)")
def test_lerobot_train_and_eval_on_metaworld(tmp_path):
    dataset = Path(os.environ["NIAF_LEROBOT_DATASET"])
    bindir = Path(sys.executable).parent
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "MUJOCO_GL": "egl",
           "WANDB_MODE": "disabled"}
    train_dir = tmp_path / "train"
    steps = 8
    # the pixels + proprioception recipe on the 80 Hz data: its 0.35 s chunk as 29 frames, replanning every 8 steps
    subprocess.run(
        [str(bindir / "lerobot-train"), "--policy.type=niaf", "--policy.push_to_hub=false", "--policy.device=cpu",
         "--policy.niaf_recipe=metaworld_pixels", "--policy.chunk_size=29", "--policy.n_action_steps=8",
         "--dataset.repo_id=local/metaworld_reach", f"--dataset.root={dataset}", f"--output_dir={train_dir}",
         f"--steps={steps}", "--batch_size=4", "--num_workers=0", f"--save_freq={steps}", "--log_freq=1",
         "--wandb.enable=false"],
        check=True, env=env,
    )
    pretrained = train_dir / "checkpoints" / "last" / "pretrained_model"
    config = json.loads((pretrained / "config.json").read_text())
    assert config["type"] == "niaf" and config["niaf_config"]["state_dim"] == 4
    niaf = config["niaf_config"]
    assert (niaf["chunk_size"], niaf["control_hz"], niaf["image_keypoints"], niaf["siren_omega0"]) == (29, 80.0, 16, 5.0)
    # lerobot-train ran niaf-train's AdamW and tri-stage schedule for --steps
    from niaf_train.training.loop import tri_stage_lambda

    train_config = json.loads((pretrained / "train_config.json").read_text())
    assert train_config["optimizer"]["lr"] == 2e-3 and train_config["optimizer"]["betas"] == [0.9, 0.95]
    assert train_config["scheduler"]["type"] == "niaf"
    state = json.loads((train_dir / "checkpoints" / "last" / "training_state" / "scheduler_state.json").read_text())
    expected = 2e-3 * tri_stage_lambda(steps, 0.05, 0.3, 0.05, "tri_stage")(steps)
    assert state["last_epoch"] == steps and state["_last_lr"] == [pytest.approx(expected, rel=1e-12)]
    eval_dir = tmp_path / "eval"
    subprocess.run(
        [str(bindir / "lerobot-eval"), f"--policy.path={pretrained}", "--policy.device=cpu",
         "--env.type=metaworld", "--env.task=reach-v3", "--eval.n_episodes=1", "--eval.batch_size=1",
         "--eval.use_async_envs=false", f"--output_dir={eval_dir}",
         '--rename_map={"observation.image": "observation.images.corner2"}'],
        check=True, env=env,
    )
    info = json.loads((eval_dir / "eval_info.json").read_text())
    overall = info.get("overall", info)
    assert "pc_success" in overall and 0.0 <= overall["pc_success"] <= 100.0
    assert overall["n_episodes"] == 1
