"""niaf's ``lerobot`` camera view is LeRobot's Meta-World frame, pixel for pixel (runs in the LeRobot environment).

LeRobot's ``MetaworldEnv`` (lerobot 0.6.1, metaworld 3.0.0) is the reference: its ``pixels`` observation after a
reset and after steps. niaf renders the same simulator state two ways: with :class:`LeRobotViewRenderer` on
LeRobot's own MuJoCo model and data, and through a separate :class:`MetaWorldScene` (its own environment, its own
camera placement) put into the same variation and driven by the same actions. Both must equal LeRobot's frame
exactly at 480 px; at a smaller size the scene's image is LeRobot's frame area-averaged with PIL (BOX).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
pytest.importorskip("lerobot")
pytest.importorskip("metaworld")

from lerobot.envs.metaworld import MetaworldEnv  # noqa: E402
from niaf_train.data.metaworld import LEROBOT_CAMERA_POS, LeRobotViewRenderer, MetaWorldScene  # noqa: E402
from PIL import Image  # noqa: E402

ACTIONS = np.array([[0.6, -0.4, 0.3, 0.2], [0.6, -0.4, 0.3, 0.2], [-1.0, 1.0, -0.5, -1.0]], np.float32)


@pytest.mark.parametrize("task", ["reach-v3", "push-v3"])
def test_lerobot_view_is_lerobot_envs_frame(task):
    env = MetaworldEnv(task, obs_type="pixels_agent_pos")
    obs, _ = env.reset(seed=1000)  # lerobot-eval's first seed
    inner = env._env
    np.testing.assert_array_equal(inner.model.cam_pos[2], LEROBOT_CAMERA_POS)  # the pose LeRobot sets
    own = LeRobotViewRenderer(inner.model)
    # a separate niaf scene in the same variation (LeRobot's seeded draw), reset as Meta-World resets
    scene = MetaWorldScene(task, 0, ("corner2",), 480, "agent_pos", camera_view="lerobot")
    small = MetaWorldScene(task, 0, ("corner2",), 96, "agent_pos", camera_view="lerobot")
    try:
        niaf_obs = []
        for s in (scene, small):
            s.env._last_rand_vec = np.array(inner._last_rand_vec, copy=True)  # frozen: reset() reuses it
            o, _ = s.env.reset()
            niaf_obs.append(o)
        # Meta-World's reset runs reset_model twice (SawyerXYZEnv.reset, then MujocoEnv.reset); with LeRobot's
        # seeded draws the goal site's rendered position (data.site_xpos) is then the first draw's, the goal the
        # second's, until the first step re-places the sites. niaf's frozen variation has no such lag: copy that
        # one stale site position, and check that nothing else differs.
        stale = np.nonzero(np.abs(inner.data.site_xpos - scene.env.data.site_xpos).max(axis=1) > 0)[0]
        assert [inner.model.site(int(i)).name for i in stale] in ([], ["goal"])
        np.testing.assert_array_equal(scene.env._target_pos, inner._target_pos)
        for s in (scene, small):
            s.env.data.site_xpos[:] = inner.data.site_xpos
        for t in range(len(ACTIONS) + 1):
            pixels = obs["pixels"]
            assert pixels.shape == (480, 480, 3) and pixels.dtype == np.uint8
            np.testing.assert_array_equal(own.render(inner.data), pixels, err_msg=f"{task} step {t}: renderer")
            seen = scene.observe(niaf_obs[0])
            np.testing.assert_array_equal(seen["observation.images.corner2"], pixels,
                                          err_msg=f"{task} step {t}: MetaWorldScene")
            np.testing.assert_allclose(seen["observation.state"], obs["agent_pos"], rtol=0, atol=1e-6)
            boxed = np.asarray(Image.fromarray(pixels).resize((96, 96), Image.Resampling.BOX))
            np.testing.assert_array_equal(small.observe(niaf_obs[1])["observation.images.corner2"], boxed)
            if t < len(ACTIONS):
                obs, *_ = env.step(ACTIONS[t])
                # the float32 action LeRobot passes (MetaWorldScene.step's float64 one moves the mocap by ~1e-9 m
                # differently, which changes a pixel by 1 here and there: another state, not another renderer)
                niaf_obs = [s.env.step(ACTIONS[t])[0] for s in (scene, small)]
                np.testing.assert_array_equal(scene.env.data.qpos, inner.data.qpos)
    finally:
        own.close()
        scene.close()
        small.close()
        env.close()
