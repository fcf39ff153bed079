"""Write a tiny LeRobot v3 dataset of Meta-World demonstrations with pixels and a 4-d ``observation.state``
(LeRobot's Meta-World ``agent_pos``: hand x, y, z and gripper opening), for the LeRobot plugin's CI.

Runs with the niaf package's own environment (``niaf[train]``: metaworld>=3.1.1), not in the LeRobot one (whose
[metaworld] extra pins metaworld 3.0.0). The demonstrations come from ``niaf_train.data.metaworld`` (the recorder
of ``niaf-data metaworld``); their 39-d state is cut to its first 4 entries and the episodes are written with
the repository's writer ``niaf_train.data.lerobot_v3.write_lerobot_dataset``.

    python integrations/lerobot/tests/make_metaworld_dataset.py OUT [--episodes 3] [--image-size 32]
"""

from __future__ import annotations

import argparse
import dataclasses
import os

os.environ.setdefault("MUJOCO_GL", "egl")

from niaf_train.data.lerobot_v3 import write_lerobot_dataset  # noqa: E402
from niaf_train.data.metaworld import ACTION_NAMES, METAWORLD_FPS, STATE_NAMES, generate_episodes  # noqa: E402

AGENT_POS_DIMS = 4


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out")
    p.add_argument("--task", default="reach-v3")
    p.add_argument("--episodes", type=int, default=3)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    episodes = (
        dataclasses.replace(ep, states=ep.states[:, :AGENT_POS_DIMS].copy())
        for ep in generate_episodes([args.task], args.episodes, cameras=["corner2"], image_size=args.image_size,
                                    seed=args.seed, progress=False)
    )
    write_lerobot_dataset(args.out, episodes, fps=METAWORLD_FPS, robot_type="sawyer", action_names=ACTION_NAMES,
                          state_names=STATE_NAMES[:AGENT_POS_DIMS])
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
