"""A pixels + proprioception Meta-World checkpoint: the 4-d agent_pos state, the image crop, input ablations
(``niaf-eval --ablate``) and the checkpoint's observation contract, reproduced by a loop that imports no
``niaf_train``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
pytest.importorskip("metaworld")

from niaf_train.data.metaworld import (  # noqa: E402
    AGENT_POS_NAMES,
    CONTRACT_FILE,
    STATE_NAMES,
    MetaWorldScene,
    check_crop,
    crop_and_resize,
    crop_render_size,
)
from niaf_train.evaluation import EvalSettings, first_observation  # noqa: E402
from niaf_train.evaluation.closed_loop import EvalError, ObservationAblation  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
TASK = "push-v3"
CROP = [0.34, 0.38, 0.36, 0.36]


def test_agent_pos_is_the_hand_and_gripper_of_the_full_observation():
    assert AGENT_POS_NAMES == STATE_NAMES[:4] == ["hand.x", "hand.y", "hand.z", "gripper.open"]
    with MetaWorldScene(TASK, 1000, [], 32, "full") as full, MetaWorldScene(TASK, 1000, [], 32, "agent_pos") as pos:
        a, b = full.observe(full.reset(4)), pos.observe(pos.reset(4))
    assert b["observation.state"].shape == (4,)
    np.testing.assert_array_equal(b["observation.state"], a["observation.state"][:4])
    with pytest.raises(ValueError, match="state must be one of"):
        MetaWorldScene(TASK, 1000, [], 32, "goal")


def test_crop_and_resize_average_the_box_by_hand():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    # box rows 10..30, columns 20..40 (fractions of 40 px), resized 20 -> 5: each output pixel is a 4x4 mean
    out = crop_and_resize(image, (0.25, 0.5, 0.5, 0.5), 5)
    want = image[10:30, 20:40].astype(np.float64).reshape(5, 4, 5, 4, 3).mean(axis=(1, 3))
    assert out.shape == (5, 5, 3) and out.dtype == np.uint8
    assert np.max(np.abs(out - want)) <= 1.0  # PIL averages in 8-bit fixed point: within one grey level
    assert crop_and_resize(image, None, 40) is image
    assert crop_render_size(64, CROP) == round(64 / 0.36) and crop_render_size(64, None) == 64
    for bad in ([0.5, 0.5, 0.6, 0.1], [0.1, 0.1, 0.0, 0.5], [0.1, 0.1, 0.5], [0.1, float("nan"), 0.5, 0.5]):
        with pytest.raises(ValueError, match="crop"):
            check_crop(bad)


def test_the_crop_shows_the_goal_that_the_whole_frame_barely_does():
    """The goal marker's footprint (pixels that change when the goal site is moved away) in the cropped 64 px
    view is many times its footprint in the whole 64 px frame."""
    import mujoco

    def footprint(crop):
        with MetaWorldScene(TASK, 1000, ["corner2"], 64, "agent_pos", crop) as scene:
            obs = scene.reset(0)
            m, d = scene.env.model, scene.env.data
            site = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, "goal")
            with_goal = scene.observe(obs)["observation.images.corner2"].astype(int)
            keep = m.site_pos[site].copy()
            m.site_pos[site] = [10.0, 10.0, -10.0]
            mujoco.mj_forward(m, d)
            without = scene.observe(obs)["observation.images.corner2"].astype(int)
            m.site_pos[site] = keep
            return int((np.abs(with_goal - without).sum(-1) > 30).sum())

    whole, cropped = footprint(None), footprint(CROP)
    assert cropped >= 4 * max(whole, 1), (whole, cropped)


def test_observation_ablation_withholds_each_input():
    obs = {"observation.images.corner2": np.full((4, 4, 3), 200, np.uint8), "observation.state": np.ones(4, np.float32),
           "task": "push the puck to the goal"}
    mean = np.array([0.1, 0.2, 0.3, 0.4])
    out = ObservationAblation(["images", "state"], mean, ["push-v3", "reach-v3"])(obs)
    assert not out["observation.images.corner2"].any() and out["observation.images.corner2"].dtype == np.uint8
    np.testing.assert_array_equal(out["observation.state"], mean.astype(np.float32))
    assert out["task"] == obs["task"] and obs["observation.images.corner2"].all()  # the input is not modified
    assert ObservationAblation(["instruction"])(obs)["task"] == ""
    swapped = ObservationAblation(["other_instruction"], tasks=["push-v3", "reach-v3"])(obs)["task"]
    assert swapped == "reach the red goal point"
    # a task without a written instruction gets instruction_for's generic sentence, and is swapped too
    from niaf_train.data.metaworld import TASK_INSTRUCTIONS, instruction_for

    assert "hammer-v3" not in TASK_INSTRUCTIONS
    generic = ObservationAblation(["other_instruction"], tasks=["hammer-v3", "push-v3"])
    assert generic({**obs, "task": instruction_for("hammer-v3")})["task"] == obs["task"]
    lone = ObservationAblation(["other_instruction"], tasks=["push-v3"])(obs)["task"]
    assert lone not in ("", obs["task"])
    with pytest.raises(EvalError, match="--ablate must be among"):
        EvalSettings(tasks=[TASK], ablate=["pixels"]).check()
    with pytest.raises(EvalError, match="no state statistics"):
        ObservationAblation(["state"])


# ---------------------------------------------------------------------------------------------------------------
# A tiny pixels + agent_pos checkpoint
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from niaf_train.training.arguments import load_config
    from niaf_train.training.loop import train

    root = tmp_path_factory.mktemp("pixels")
    cfg = load_config("metaworld_pixels.yaml", [
        "--output_dir", str(root / "run"), "--max_steps", "3", "--data.metaworld_tasks", TASK,
        "--data.metaworld_camera", "corner2", "--data.metaworld_crop", ",".join(map(str, CROP)),
        "--data.metaworld_episodes_per_task", "2", "--data.metaworld_image_size", "32",
        "--model.tiny_image_size", "32", "--model.tiny_hidden_size", "32", "--model.siren_width", "32",
        "--model.modulation_groups", "8", "--training.per_device_batch_size", "4", "--training.report_to", "none",
        "--training.num_threads", "1", "--training.save_steps", "0", "--training.eval_steps", "0",
        "--data.cache_dir", str(root / "cache"),
    ])
    return Path(train(cfg)["final_dir"])


def test_checkpoint_carries_its_observation_contract(checkpoint):
    from niaf_train.data.metaworld import CONTRACT_FORMAT

    contract = json.loads((checkpoint / CONTRACT_FILE).read_text())
    assert contract["format"] == CONTRACT_FORMAT and contract["version"] == 1
    (cam,) = contract["cameras"]
    assert cam["camera"] == "corner2" and cam["rotate_180"] is True and cam["crop"] == CROP
    assert cam["image_size"] == 32 and cam["render_size"] == round(32 / 0.36)
    assert contract["state"] == {**contract["state"], "kind": "agent_pos", "dim": 4, "names": AGENT_POS_NAMES}
    assert contract["instructions"] == {TASK: "push the puck to the goal"}
    assert contract["action"]["kind"] == "displacement command" and contract["action"]["clip"] == [-1.0, 1.0]
    timing = contract["timing"]
    assert timing["control_hz"] == 20 and timing["env_steps_per_chunk_point"] == 4 and timing["chunk_size"] == 8
    assert timing["replan_every_env_steps"] == 8
    # the default recipe records at 80 Hz and keeps every 4th frame as a chunk point: the same 20 Hz chunk
    from niaf_train.data.metaworld import observation_contract

    dense = observation_contract({"tasks": [TASK], "cameras": [], "stride": 1, "chunk_stride": 4,
                                  "benchmark_seeds": [0]}, 8)["timing"]
    assert dense["control_hz"] == 20 and dense["env_steps_per_chunk_point"] == 4
    assert contract["evaluation"]["training_benchmark_seeds"] == [0]
    card = (checkpoint / "README.md").read_text()
    assert "### Observation contract" in card and "displacement command" in card
    assert "state=robot_state" in card  # the usage snippet passes the state the model reads


def test_a_loop_built_from_the_contract_alone_matches_niaf_eval(checkpoint, tmp_path):
    """examples/metaworld_from_contract.py, in a Python where ``niaf_train`` cannot be imported, builds the same
    first observation and the same first chunk as niaf-eval."""
    from niaf_train.evaluation.closed_loop import load_policy

    script = f"""
import sys
sys.modules["niaf_train"] = None  # importing it fails
sys.path.insert(0, {str(ROOT / "examples")!r})
import numpy as np
from transformers import AutoModel, AutoProcessor
import metaworld_from_contract as ex
contract = ex.load_contract({str(checkpoint)!r})
seed = ex.held_out_seed(contract)
scene = ex.ContractScene(contract, {TASK!r}, seed)
obs = scene.observe(scene.reset(3))
scene.close()
model = AutoModel.from_pretrained({str(checkpoint)!r}, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained({str(checkpoint)!r}, trust_remote_code=True)
chunk = ex.first_chunk(model, processor, contract, obs)
np.savez({str(tmp_path / "mine.npz")!r}, image=obs["observation.images.corner2"], state=obs["observation.state"],
         chunk=chunk, seed=seed, task=obs["task"])
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=300)
    mine = np.load(tmp_path / "mine.npz")
    settings = EvalSettings(tasks=[TASK], cameras=["corner2"], image_size=32, crop=CROP, state="agent_pos", video=False)
    assert int(mine["seed"]) == 1000
    theirs = first_observation(TASK, 1000, 3, ["corner2"], 32, "agent_pos", CROP)
    np.testing.assert_array_equal(mine["image"], theirs["observation.images.corner2"])
    np.testing.assert_array_equal(mine["state"], theirs["observation.state"])
    assert str(mine["task"]) == theirs["task"]
    policy = load_policy(checkpoint, settings)
    policy.execution = "zoh"  # the plan's K waypoints
    (plan,) = policy.plan([theirs])
    np.testing.assert_allclose(mine["chunk"], plan.waypoints, atol=1e-6)


def test_niaf_eval_ablate_images_feeds_black_frames_and_records_it(checkpoint, tmp_path):
    from niaf_train.evaluation.closed_loop import load_policy
    from niaf_train.evaluation.run import evaluate_checkpoint

    settings = EvalSettings(tasks=[TASK], episodes=1, max_steps=9, cameras=["corner2"], image_size=32, crop=CROP,
                            state="agent_pos", ablate=["images", "state"], video=False)
    policy = load_policy(checkpoint, settings)
    seen = []
    plan = policy.plan
    policy.plan = lambda observations: (seen.extend(policy.ablation(o) for o in observations), plan(observations))[1]
    result = evaluate_checkpoint(str(checkpoint), settings, tmp_path / "eval", policy_object=policy, progress=False)
    assert len(seen) == 2  # steps 0 and 8
    assert all(not o["observation.images.corner2"].any() for o in seen)
    mean = np.asarray(policy.model.config.normalization_stats["state"]["mean"], dtype=np.float32)
    assert all(np.array_equal(o["observation.state"], mean) for o in seen)
    written = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert written["settings"]["ablate"] == ["images", "state"] == result["settings"]["ablate"]
    assert written["settings"]["state"] == "agent_pos" and written["settings"]["crop"] == CROP


def test_niaf_eval_reads_state_and_crop_from_the_checkpoint(checkpoint, tmp_path, capsys):
    from niaf_train.evaluation.cli import main

    assert main(["--checkpoint", str(checkpoint), "--episodes", "1", "--max-steps", "5", "--no-video",
                 "--ablate", "images", "--output-dir", str(tmp_path / "e")]) == 0
    written = json.loads((tmp_path / "e" / "results.json").read_text())
    assert written["settings"]["state"] == "agent_pos" and written["settings"]["crop"] == CROP
    assert "without images" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["--checkpoint", str(checkpoint), "--ablate", "goal", "--output-dir", str(tmp_path / "f")])
    assert exit_info.value.code == 2


def test_executed_command_figure_observes_as_the_checkpoint_was_trained(checkpoint, tmp_path):
    """The main job's executed-commands figure runs a pixels + agent_pos checkpoint with its own state kind and
    crop (it used to build 39-d states and whole frames, and the checkpoint refused them)."""
    from niaf_train.evaluation.command_plot import plot_executed_commands

    png = plot_executed_commands(checkpoint, tmp_path / "executed_commands.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_contract_of_the_lerobot_view_rebuilds_its_frames():
    """The contract of data written with --camera-view lerobot --instructions lerobot names the moved camera, the
    renderer settings and LeRobot's task string; the example's loop built from it alone sees what niaf-eval sees."""
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import metaworld_from_contract as ex
    finally:
        sys.path.remove(str(ROOT / "examples"))
    from niaf_train.data.metaworld import LEROBOT_CAMERA_POS, observation_contract

    record = {"benchmark_seeds": [0], "tasks": [TASK], "cameras": ["corner2"], "image_size": 32, "stride": 1,
              "state": "agent_pos", "camera_view": "lerobot", "instructions": "lerobot"}
    contract = observation_contract(record, chunk_size=8)
    assert contract["instructions"] == {TASK: "Push the puck to a goal"} and contract["instructions_from"] == "lerobot"
    (cam,) = contract["cameras"]
    assert cam["view"] == "lerobot" and cam["camera_pos"] == list(LEROBOT_CAMERA_POS) and cam["render_size"] == 480
    assert cam["renderer"] == {"offscreen_multisamples": 4, "shadow": True, "reflection": True, "skybox": True,
                               "haze": True} and cam["rotate_180"] and cam["crop"] is None
    scene = ex.ContractScene(contract, TASK, 1000)
    try:
        mine = scene.observe(scene.reset(3))
    finally:
        scene.close()
    theirs = first_observation(TASK, 1000, 3, ["corner2"], 32, "agent_pos", None, "lerobot", "lerobot")
    np.testing.assert_array_equal(mine["observation.images.corner2"], theirs["observation.images.corner2"])
    assert mine["task"] == theirs["task"] == "Push the puck to a goal"
