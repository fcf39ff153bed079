"""Meta-World expert demonstrations: determinism, stride, camera orientation, LeRobot output."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
mujoco = pytest.importorskip("mujoco")
metaworld = pytest.importorskip("metaworld")

from niaf_train.data.chunking import dataset_fps  # noqa: E402
from niaf_train.data.lerobot_v3 import iter_lerobot_episodes, load_lerobot  # noqa: E402
from niaf_train.data.metaworld import (  # noqa: E402
    LEROBOT_CAMERA_POS,
    GenerationSummary,
    MetaWorldScene,
    camera_needs_rotation,
    check_camera_view,
    check_instructions,
    generate_episodes,
    generate_metaworld_dataset,
    instruction_for,
)

TASK = "reach-v3"


@pytest.fixture(scope="module")
def demos():
    summary = GenerationSummary()
    eps = list(generate_episodes([TASK], 2, cameras=("corner2",), image_size=32, seed=3, summary=summary,
                                 progress=False))
    return eps, summary


def test_demos_are_successful_deterministic_and_strided(demos):
    eps, summary = demos
    assert summary.succeeded == {TASK: 2} and not summary.failed
    for ep in eps:
        ep.validate()
        assert ep.fps == 80.0 and ep.instruction == "reach the red goal point"
        assert ep.images["corner2"].shape == (len(ep), 32, 32, 3)
        assert np.abs(ep.actions).max() <= 1.0
    # the recorded state is the observation before the action: consecutive end-effector positions differ
    # by at most the action scale (1 cm per step per axis, plus a little controller lag)
    step = np.abs(np.diff(eps[0].states[:, :3], axis=0)).max()
    assert 0 < step < 0.02
    again = list(generate_episodes([TASK], 2, cameras=(), seed=3, progress=False))
    np.testing.assert_array_equal(again[1].actions, eps[1].actions)
    strided = list(generate_episodes([TASK], 2, cameras=(), seed=3, stride=3, progress=False))
    assert strided[0].fps == pytest.approx(80.0 / 3)
    np.testing.assert_array_equal(strided[0].actions, eps[0].actions[::3])
    np.testing.assert_array_equal(strided[0].states, eps[0].states[::3])


def test_corner_cameras_are_rotated_by_180_degrees():
    bench = metaworld.MT1(TASK, seed=0)
    env = bench.train_classes[TASK]()
    env.set_task(bench.train_tasks[0])
    env.reset()
    m, d = env.model, env.data
    assert camera_needs_rotation(m, d, "corner2") and camera_needs_rotation(m, d, "corner")
    assert not camera_needs_rotation(m, d, "behindGripper")
    # independent pinhole projection: a point 10 cm above the hand must land *above* the hand once the image
    # is rotated by 180°; with the raw image (or a left-right mirror) the geometry says otherwise
    cid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, "corner2")
    R, p = d.cam_xmat[cid].reshape(3, 3), d.cam_xpos[cid]
    hand = d.xpos[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "hand")]

    def pixel(x, size=128):
        c = R.T @ (x - p)
        f = 0.5 * size / np.tan(np.deg2rad(m.cam_fovy[cid]) / 2)
        return size / 2 + f * c[0] / -c[2], size / 2 - f * c[1] / -c[2]  # (u right, v down) in the raw image

    (u0, v0), (_, v1) = pixel(hand), pixel(hand + [0, 0, 0.1])
    assert v1 > v0  # raw image: "up" goes down
    assert (128 - v1) < (128 - v0)  # after the 180° rotation: up is up
    # the rendered raw frame agrees with the projection (hand pixels near (u0, v0)), so the fix is a rotation
    r = mujoco.Renderer(m, 128, 128)
    r.enable_segmentation_rendering()
    r.update_scene(d, camera="corner2")
    seg = r.render()[..., 0]
    bid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "hand")
    vv, uu = np.nonzero(np.isin(seg, [g for g in range(m.ngeom) if m.geom_bodyid[g] == bid]))
    assert abs(uu.mean() - u0) < 8 and abs(vv.mean() - v0) < 8
    r.close()
    env.close()


def test_first_frame_equals_rotated_raw_render(demos):
    eps, _ = demos
    bench = metaworld.MT1(TASK, seed=3)
    env = bench.train_classes[TASK]()
    env.set_task(bench.train_tasks[0])
    env.reset()
    env.model.vis.quality.offsamples = 0
    r = mujoco.Renderer(env.model, 32, 32)
    for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION,
                 mujoco.mjtRndFlag.mjRND_SKYBOX, mujoco.mjtRndFlag.mjRND_HAZE):
        r.scene.flags[flag] = 0
    r.update_scene(env.data, camera="corner2")
    raw = r.render()
    np.testing.assert_array_equal(eps[0].images["corner2"][0], np.rot90(raw, 2))
    r.close()
    env.close()


def test_lerobot_view_is_the_pose_metaworld_names_corner4():
    """The ``lerobot`` view moves corner2 to LeRobot's position; Meta-World >= 3.1.1 defines that very pose as
    camera ``corner4`` (same position, orientation and field of view), an independent reference. The frame is
    that camera rendered at 480 px with MuJoCo's default settings, rotated by 180°, then area-averaged."""
    from PIL import Image

    with MetaWorldScene(TASK, 0, ("corner2",), 48, "agent_pos", camera_view="lerobot") as scene:
        m, d = scene.env.model, scene.env.data
        cid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, "corner2")
        assert cid == 2  # LeRobot writes model.cam_pos[2]: the index must be corner2's
        obs = scene.reset(4)
        np.testing.assert_array_equal(d.cam_xpos[cid], LEROBOT_CAMERA_POS)
        assert scene.render_size == 480 and scene.rotate == {"corner2": True}
        seen = scene.observe(obs)["observation.images.corner2"]
        ref = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, "corner4")
        if ref < 0:
            pytest.skip("this metaworld has no camera corner4 (added in 3.1.1)")
        np.testing.assert_allclose(d.cam_xpos[cid], d.cam_xpos[ref], atol=1e-12)
        np.testing.assert_allclose(d.cam_xmat[cid], d.cam_xmat[ref], atol=1e-12)
        assert m.cam_fovy[cid] == m.cam_fovy[ref] == 60.0
        r = mujoco.Renderer(m, 480, 480)  # MuJoCo's defaults, as gymnasium's offscreen viewer (and LeRobot)
        r.update_scene(d, camera="corner4")
        frame = np.rot90(r.render(), 2)
        r.close()
        boxed = np.asarray(Image.fromarray(np.ascontiguousarray(frame)).resize((48, 48), Image.Resampling.BOX))
        np.testing.assert_array_equal(seen, boxed)
        assert seen.std() > 10  # a scene, not a blank frame


@pytest.mark.parametrize("args, message", [
    (("fisheye",), "camera view must be one of ['niaf', 'lerobot'], got 'fisheye'"),
    (("lerobot", ["corner2", "topview"]), "has the one camera 'corner2'"),
    (("lerobot", ["corner2"], [0.1, 0.1, 0.5, 0.5]), "takes no crop"),
    (("lerobot", ["corner2"], None, 481), "image size must be in [1, 480]"),
])
def test_camera_view_refusals_name_the_setting(args, message):
    with pytest.raises(ValueError) as err:
        check_camera_view(*args)
    assert message in str(err.value)
    assert check_camera_view("niaf", ["topview", "corner"], [0.1, 0.1, 0.5, 0.5], 1000) == "niaf"


# The task strings of LeRobot's Meta-World environment for the MT-10 tasks, typed from lerobot 0.6.1's
# lerobot/envs/metaworld_config.json (TASK_DESCRIPTIONS); integrations/lerobot/tests checks the whole table there.
LEROBOT_MT10 = {
    "reach-v3": "Reach a goal position",
    "push-v3": "Push the puck to a goal",
    "pick-place-v3": "Pick and place a puck to a goal",
    "door-open-v3": "Open a door with a revolving joint",
    "drawer-open-v3": "Open a drawer",
    "drawer-close-v3": "Push and close a drawer",
    "button-press-topdown-v3": "Press a button from the top",
    "peg-insert-side-v3": "Insert a peg sideways",
    "window-open-v3": "Push and open a window",
    "window-close-v3": "Push and close a window",
}


def test_lerobot_instructions_cover_metaworld_and_are_lerobots_strings():
    from metaworld.env_dict import MT10_V3

    assert sorted(MT10_V3) == sorted(LEROBOT_MT10)
    assert {t: instruction_for(t, "lerobot") for t in MT10_V3} == LEROBOT_MT10
    assert check_instructions("lerobot", sorted(metaworld.MT1.ENV_NAMES)) == "lerobot"  # every MT1 task has one
    assert instruction_for("push-v3") == instruction_for("push-v3", "niaf") == "push the puck to the goal"
    with MetaWorldScene("push-v3", 0, (), instructions="lerobot") as scene:
        assert scene.observe(scene.reset(0))["task"] == "Push the puck to a goal"


@pytest.mark.parametrize("args, message", [
    (("klingon",), "instructions must be one of ['niaf', 'lerobot'], got 'klingon'"),
    (("lerobot", ["reach-v3", "fly-v3"]), "task 'fly-v3' has no LeRobot task string"),
])
def test_instruction_refusals_name_the_setting_or_task(args, message):
    with pytest.raises(ValueError) as err:
        check_instructions(*args)
    assert message in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ValueError, match="instructions must be one of"):
        MetaWorldScene(TASK, 0, (), instructions="klingon")
    assert check_instructions("niaf", ["fly-v3"]) == "niaf"  # niaf's generic sentence covers any name


def test_dataset_round_trip(tmp_path, demos):
    eps, _ = demos
    root, summary = generate_metaworld_dataset(tmp_path / "mw", [TASK], 2, cameras=("corner2",), image_size=32,
                                               seed=3, stride=2, progress=False)
    back = list(iter_lerobot_episodes(root))
    assert len(back) == 2 and back[0].fps == 40.0 and back[0].instruction == "reach the red goal point"
    np.testing.assert_array_equal(back[1].validate().actions, eps[1].actions[::2])
    np.testing.assert_array_equal(back[0].images["corner2"][1], eps[0].images["corner2"][2])
    ds = load_lerobot(root, chunk_size=4, cache_dir=tmp_path / "cache")
    assert dataset_fps(ds) == 40.0 and len(ds) == sum(len(e) for e in back)
    with pytest.raises(ValueError, match="unknown Meta-World MT1 task"):
        next(generate_episodes(["no-such-task-v3"], 1, progress=False))
