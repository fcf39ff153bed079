"""niaf's ``lerobot`` instruction set is LeRobot's own Meta-World task strings (runs in the LeRobot environment).

The reference is lerobot itself: ``TASK_DESCRIPTIONS`` read from its ``metaworld_config.json``, and the
``task_description`` of a ``MetaworldEnv`` (what ``lerobot-eval --env.type=metaworld`` passes as the observation's
``task``). niaf ships its own copy of the strings (:data:`LEROBOT_TASK_INSTRUCTIONS`); every task it lists must
carry LeRobot's string, character for character.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
pytest.importorskip("lerobot")
pytest.importorskip("metaworld")

from lerobot.envs.metaworld import TASK_DESCRIPTIONS, MetaworldEnv  # noqa: E402
from niaf_train.data.metaworld import LEROBOT_TASK_INSTRUCTIONS, instruction_for  # noqa: E402

MT10 = ["reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-open-v3", "drawer-close-v3",
        "button-press-topdown-v3", "peg-insert-side-v3", "window-open-v3", "window-close-v3"]


def test_every_listed_task_has_lerobots_string():
    assert set(MT10) <= set(LEROBOT_TASK_INSTRUCTIONS)
    assert LEROBOT_TASK_INSTRUCTIONS == {t: TASK_DESCRIPTIONS[t] for t in LEROBOT_TASK_INSTRUCTIONS}
    assert {t: instruction_for(t, "lerobot") for t in TASK_DESCRIPTIONS} == TASK_DESCRIPTIONS  # none missing


@pytest.mark.parametrize("task", MT10)
def test_lerobot_envs_task_description_is_niafs_instruction(task):
    env = MetaworldEnv(task, obs_type="pixels_agent_pos")  # the simulator starts on the first reset, not here
    try:
        assert env.task_description == instruction_for(task, "lerobot")
    finally:
        env.close()
