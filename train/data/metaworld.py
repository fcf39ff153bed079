"""Scripted Meta-World (v3, MT1) demonstrations rendered offscreen and written as a LeRobot v3.0 dataset.

Facts used (Meta-World v3, https://github.com/Farama-Foundation/Metaworld): an MT1 benchmark gives 50 variations of one skill; every task has a
bundled stateless expert (``metaworld.policies.ENV_POLICY_MAP``); the action is Box(-1, 1, (4,)) =
end-effector displacement dx, dy, dz (× 1 cm per step) + gripper effort (positive closes); one environment step
is 0.0025 s × 5 = 12.5 ms, so the true control rate is **80 Hz**; an episode may not exceed 500 steps.

Per recorded step t the episode holds:

* ``images[cam]``: uint8 [H, W, 3] of the scene *before* the action, upright. The corner cameras are mounted
  rolled by about 180° (their image-up axis points down in the world), so their images are rotated by 180°
  (height and width reversed). This is a rotation, not a mirror: a vertical flip alone would mirror the
  scene left-right. The rule is decided per camera from its orientation in the model, not from a name list;
* ``observation.state`` float32 [39]: Meta-World's own observation vector (:data:`STATE_NAMES`): end-effector
  position (m, world frame), gripper opening (0..1), the positions and quaternions of up to two objects, the
  same 18 values one step earlier, and the goal position. Goal and object positions are what a policy needs
  to solve a variation; in a 32 px image they are a few pixels;
* ``action`` float32 [4]: the expert's action clipped to [-1, 1], as the environment applies it.

An episode ends at the first step with ``info["success"]``; an expert that does not succeed within
``max_steps`` gives a failed episode, which is left out and counted (or kept with ``keep_failures=True``).
With ``stride`` s only every s-th step is rendered and recorded, and the dataset's fps is 80/s. Results are
deterministic for a given seed: the variation of episode i of a task is ``train_tasks[i % 50]`` of
``MT1(task, seed + i // 50)`` (an MT1 benchmark holds 50 variations; more episodes draw them from the next
benchmark seeds instead of repeating them) and the experts are deterministic. ``meta/info.json`` records the
benchmark seeds and the variations of every task under ``"metaworld"``, so a closed-loop evaluation can pick
variations disjoint from them (:mod:`niaf_train.evaluation`).

:class:`MetaWorldScene` is the one place that turns the simulator into an observation (camera, resolution,
rotation, state vector, instruction); the demonstration recorder and the closed-loop evaluation both use it,
so the two cannot drift apart.

Rendering runs through ``mujoco.Renderer`` with multisample anti-aliasing, shadows, reflections, skybox and
haze off (several times faster on a CPU renderer). ``MUJOCO_GL`` must be set before mujoco is imported;
it defaults to ``egl`` here. The camera view ``lerobot`` (:data:`CAMERA_VIEWS`) instead reproduces LeRobot's
Meta-World environment: corner2 moved, 480 px frames with MuJoCo's default visual settings, area-averaged. The
instruction set ``lerobot`` (:data:`INSTRUCTION_SETS`) likewise gives each task LeRobot's task string.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .episodes import Episode
from .lerobot_v3 import write_lerobot_dataset

logger = logging.getLogger(__name__)

METAWORLD_FPS = 80.0
"""Control rate of Meta-World: MuJoCo timestep 0.0025 s × frame_skip 5."""

MAX_PATH_LENGTH = 500
VARIATIONS_PER_BENCHMARK = 50
"""Variations (object and goal positions) of one ``metaworld.MT1`` benchmark."""
_FRAME_NAMES = ["hand.x", "hand.y", "hand.z", "gripper.open",
                "obj1.x", "obj1.y", "obj1.z", "obj1.qx", "obj1.qy", "obj1.qz", "obj1.qw",
                "obj2.x", "obj2.y", "obj2.z", "obj2.qx", "obj2.qy", "obj2.qz", "obj2.qw"]
STATE_NAMES = _FRAME_NAMES + [f"prev.{n}" for n in _FRAME_NAMES] + ["goal.x", "goal.y", "goal.z"]
"""Names of the 39 dimensions of Meta-World's observation vector, recorded as ``observation.state``: positions
in metres (world frame), gripper opening in [0, 1], quaternions (x, y, z, w); zeros where a task has no second
object; ``prev.*`` is the same frame one environment step (12.5 ms) earlier."""
STATE_DIM = len(STATE_NAMES)
AGENT_POS_NAMES = _FRAME_NAMES[:4]
"""What a real robot measures of itself: end-effector position (m) and gripper opening, the first 4 entries of
Meta-World's observation (LeRobot's Meta-World environment calls it ``agent_pos``). No object or goal position."""
STATE_KINDS: dict[str, list[str]] = {"full": STATE_NAMES, "agent_pos": AGENT_POS_NAMES}
"""``observation.state`` of a Meta-World policy: ``full`` (the 39-d privileged observation, with object and goal
positions) or ``agent_pos`` (hand position and gripper, 4-d: what a robot has; the goal must come from pixels)."""
ACTION_NAMES = ["ee.dx", "ee.dy", "ee.dz", "gripper.effort"]
DEFAULT_CAMERAS = ("corner2",)
DEFAULT_TASKS = ("reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-close-v3")

TASK_INSTRUCTIONS: dict[str, str] = {
    "reach-v3": "reach the red goal point",
    "push-v3": "push the puck to the goal",
    "pick-place-v3": "pick up the puck and place it at the goal",
    "door-open-v3": "open the door",
    "door-close-v3": "close the door",
    "drawer-open-v3": "open the drawer",
    "drawer-close-v3": "close the drawer",
    "button-press-v3": "press the button",
    "button-press-topdown-v3": "press the button from the top",
    "peg-insert-side-v3": "insert the peg into the hole from the side",
    "window-open-v3": "slide the window open",
    "window-close-v3": "slide the window closed",
    "faucet-open-v3": "turn the faucet on",
    "faucet-close-v3": "turn the faucet off",
    "coffee-push-v3": "push the mug under the coffee machine",
    "plate-slide-v3": "slide the plate into the goal",
    "sweep-into-v3": "sweep the puck into the hole",
    "basketball-v3": "dunk the ball into the basket",
    "lever-pull-v3": "pull the lever up",
    "handle-press-v3": "press the handle down",
}
"""Instruction per task; other tasks get :func:`instruction_for`'s generic sentence."""


LEROBOT_TASK_INSTRUCTIONS: dict[str, str] = {
    "assembly-v3": "Pick up a nut and place it onto a peg",
    "basketball-v3": "Dunk the basketball into the basket",
    "bin-picking-v3": "Grasp the puck from one bin and place it into another bin",
    "box-close-v3": "Grasp the cover and close the box with it",
    "button-press-topdown-v3": "Press a button from the top",
    "button-press-topdown-wall-v3": "Bypass a wall and press a button from the top",
    "button-press-v3": "Press a button",
    "button-press-wall-v3": "Bypass a wall and press a button",
    "coffee-button-v3": "Push a button on the coffee machine",
    "coffee-pull-v3": "Pull a mug from a coffee machine",
    "coffee-push-v3": "Push a mug under a coffee machine",
    "dial-turn-v3": "Rotate a dial 180 degrees",
    "disassemble-v3": "Pick a nut out of a peg",
    "door-close-v3": "Close a door with a revolving joint",
    "door-lock-v3": "Lock the door by rotating the lock clockwise",
    "door-open-v3": "Open a door with a revolving joint",
    "door-unlock-v3": "Unlock the door by rotating the lock counter-clockwise",
    "drawer-close-v3": "Push and close a drawer",
    "drawer-open-v3": "Open a drawer",
    "faucet-close-v3": "Rotate the faucet clockwise",
    "faucet-open-v3": "Rotate the faucet counter-clockwise",
    "hammer-v3": "Hammer a screw on the wall",
    "hand-insert-v3": "Insert the gripper into a hole",
    "handle-press-side-v3": "Press a handle down sideways",
    "handle-press-v3": "Press a handle down",
    "handle-pull-side-v3": "Pull a handle up sideways",
    "handle-pull-v3": "Pull a handle up",
    "lever-pull-v3": "Pull a lever down 90 degrees",
    "peg-insert-side-v3": "Insert a peg sideways",
    "peg-unplug-side-v3": "Unplug a peg sideways",
    "pick-out-of-hole-v3": "Pick up a puck from a hole",
    "pick-place-v3": "Pick and place a puck to a goal",
    "pick-place-wall-v3": "Pick a puck, bypass a wall and place the puck",
    "plate-slide-back-side-v3": "Get a plate from the cabinet sideways",
    "plate-slide-back-v3": "Get a plate from the cabinet",
    "plate-slide-side-v3": "Slide a plate into a cabinet sideways",
    "plate-slide-v3": "Slide a plate into a cabinet",
    "push-back-v3": "Push the puck to a goal",
    "push-v3": "Push the puck to a goal",
    "push-wall-v3": "Bypass a wall and push a puck to a goal",
    "reach-v3": "Reach a goal position",
    "reach-wall-v3": "Bypass a wall and reach a goal",
    "shelf-place-v3": "Pick and place a puck onto a shelf",
    "soccer-v3": "Kick a soccer into the goal",
    "stick-pull-v3": "Grasp a stick and pull a box with the stick",
    "stick-push-v3": "Grasp a stick and push a box using the stick",
    "sweep-into-v3": "Sweep a puck into a hole",
    "sweep-v3": "Sweep a puck off the table",
    "window-close-v3": "Push and close a window",
    "window-open-v3": "Push and open a window",
}
"""The task string LeRobot's Meta-World environment gives a policy per MT1 task (lerobot 0.6.1,
``lerobot/envs/metaworld_config.json``, ``TASK_DESCRIPTIONS``: what ``lerobot-eval --env.type=metaworld`` passes
as the observation's ``task``), for the 50 tasks of Meta-World v3. ``push-v3`` and ``push-back-v3`` share one
string there, so one instruction names both."""

INSTRUCTION_SETS = ("niaf", "lerobot")
"""Which sentence an episode's instruction is (:func:`instruction_for`): ``niaf`` (default, :data:`TASK_INSTRUCTIONS`
and a generic sentence for other tasks) or ``lerobot`` (:data:`LEROBOT_TASK_INSTRUCTIONS`, the task strings of
LeRobot's Meta-World environment; a task without one is refused)."""


def check_instructions(instructions: str, tasks: Sequence[str] = ()) -> str:
    """``instructions`` if it names an :data:`INSTRUCTION_SETS` entry with a sentence for every task of ``tasks``,
    else a ValueError naming the setting or the first task without one."""
    if instructions not in INSTRUCTION_SETS:
        raise ValueError(f"instructions must be one of {list(INSTRUCTION_SETS)}, got {instructions!r}")
    for task in tasks:
        instruction_for(task, instructions)
    return instructions


def instruction_for(task: str, instructions: str = "niaf") -> str:
    """The instruction of an MT1 task in the sentence set ``instructions`` (:data:`INSTRUCTION_SETS`), e.g.
    ``"push-v3"`` → ``"push the puck to the goal"`` (``niaf``) or ``"Push the puck to a goal"`` (``lerobot``)."""
    if instructions == "lerobot":
        if task not in LEROBOT_TASK_INSTRUCTIONS:
            raise ValueError(f"task {task!r} has no LeRobot task string (instructions 'lerobot' know "
                             f"{len(LEROBOT_TASK_INSTRUCTIONS)} Meta-World tasks)")
        return LEROBOT_TASK_INSTRUCTIONS[task]
    if instructions != "niaf":
        raise ValueError(f"instructions must be one of {list(INSTRUCTION_SETS)}, got {instructions!r}")
    if task in TASK_INSTRUCTIONS:
        return TASK_INSTRUCTIONS[task]
    words = task.rsplit("-v", 1)[0].replace("-", " ")
    return f"{words} task"


@dataclass
class GenerationSummary:
    """Per task: episodes attempted, successes, steps and variations of the kept episodes; failed ones left out."""

    attempted: dict[str, int] = field(default_factory=dict)
    succeeded: dict[str, int] = field(default_factory=dict)
    steps: dict[str, int] = field(default_factory=dict)
    failed: list[tuple[str, int]] = field(default_factory=list)
    variations: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    """Per task: benchmark seed (as a string) → the variations recorded from it."""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"attempted": self.attempted, "succeeded": self.succeeded, "steps": self.steps,
                "failed": [list(f) for f in self.failed], "variations": self.variations,
                "seconds": round(self.seconds, 2)}


def _import_metaworld():
    os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        import metaworld  # optional dependency: metaworld
        import mujoco  # optional dependency: mujoco
        from metaworld.policies import ENV_POLICY_MAP  # optional dependency: metaworld
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Meta-World demonstrations need `mujoco` and `metaworld` (pip install 'niaf[train]')"
        ) from err
    return metaworld, mujoco, ENV_POLICY_MAP


def check_state_kind(state: str) -> str:
    """``state`` if it names a :data:`STATE_KINDS` entry, else a ValueError naming the choices."""
    if state not in STATE_KINDS:
        raise ValueError(f"Meta-World state must be one of {sorted(STATE_KINDS)}, got {state!r}")
    return state


CAMERA_VIEWS = ("niaf", "lerobot")
"""How a Meta-World camera is placed and rendered (:func:`check_camera_view`):

* ``niaf`` (default): the cameras at their poses in Meta-World's model, rendered at the render size by
  :class:`_FastRenderer` (no anti-aliasing, shadows, reflections, skybox or haze);
* ``lerobot``: the view of LeRobot's Meta-World environment (``lerobot-eval --env.type=metaworld``, lerobot
  0.6.1): camera ``corner2`` moved to :data:`LEROBOT_CAMERA_POS`, rendered at 480 x 480 with MuJoCo's default
  visual settings (the model's 4x multisampling, shadows, reflections, skybox, haze), as gymnasium's offscreen
  viewer renders it, then flipped on both axes; the same frame, pixel for pixel, as LeRobot's ``pixels``
  observation of the same simulator state. A smaller ``image_size`` is that frame area-averaged (PIL BOX)."""
LEROBOT_CAMERA = "corner2"
"""The one camera of LeRobot's Meta-World environment (``MetaworldEnv(camera_name="corner2")``)."""
LEROBOT_CAMERA_POS = (0.75, 0.075, 0.7)
"""World position (m) to which LeRobot's ``MetaworldEnv`` moves ``corner2`` (``model.cam_pos[2]``); its orientation
and field of view (60°) stay those of Meta-World's model. Meta-World >= 3.1.1 names this pose camera ``corner4``."""
LEROBOT_RENDER_SIZE = 480
"""Side of LeRobot's Meta-World frames: Meta-World's default width and height, which LeRobot 0.6.1 does not set
(its ``observation_width``/``observation_height`` reach no renderer, and ``--env.*`` has no size option)."""


def check_camera_view(view: str, cameras: Sequence[str] = (LEROBOT_CAMERA,), crop: Sequence[float] | None = None,
                      image_size: int | None = None) -> str:
    """``view`` if it names a :data:`CAMERA_VIEWS` entry that fits ``cameras``, ``crop`` and ``image_size``, else
    a ValueError naming the argument: the ``lerobot`` view is LeRobot's one camera, whole and at most 480 px."""
    if view not in CAMERA_VIEWS:
        raise ValueError(f"camera view must be one of {list(CAMERA_VIEWS)}, got {view!r}")
    if view == "lerobot":
        if list(cameras) != [LEROBOT_CAMERA]:
            raise ValueError(f"camera view 'lerobot' has the one camera {LEROBOT_CAMERA!r} (LeRobot's Meta-World "
                             f"environment), got cameras {list(cameras)}")
        if crop is not None:
            raise ValueError("camera view 'lerobot' takes no crop (LeRobot's frames are whole)")
        if image_size is not None and not 1 <= int(image_size) <= LEROBOT_RENDER_SIZE:
            raise ValueError(f"image size must be in [1, {LEROBOT_RENDER_SIZE}] with camera view 'lerobot' "
                             f"(LeRobot renders {LEROBOT_RENDER_SIZE} px), got {image_size}")
    return view


def place_lerobot_camera(model: Any) -> int:
    """Move ``corner2`` of a Meta-World ``model`` to :data:`LEROBOT_CAMERA_POS`, as LeRobot's ``MetaworldEnv`` does;
    returns the camera's id. (LeRobot writes ``model.cam_pos[2]``; here the camera is found by name.)"""
    import mujoco  # optional dependency: mujoco

    cid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, LEROBOT_CAMERA)
    if cid < 0:
        raise ValueError(f"Meta-World has no camera {LEROBOT_CAMERA!r}")
    model.cam_pos[cid] = LEROBOT_CAMERA_POS
    return cid


def check_crop(crop: Sequence[float] | None) -> tuple[float, float, float, float] | None:
    """``crop`` as (top, left, height, width), fractions of the upright image, or a ValueError naming it."""
    if crop is None:
        return None
    values = tuple(float(c) for c in crop)
    if len(values) != 4 or not all(np.isfinite(values)):
        raise ValueError(f"crop must be 4 finite fractions (top, left, height, width), got {list(crop)}")
    top, left, height, width = values
    if not (0 <= top < 1 and 0 <= left < 1 and 0 < height <= 1 - top + 1e-9 and 0 < width <= 1 - left + 1e-9):
        raise ValueError(f"crop (top, left, height, width) must lie inside the image (fractions in [0, 1]), "
                         f"got {list(values)}")
    return values


def camera_crops(crop: Sequence[float] | None, cameras: Sequence[str]) -> dict[str, tuple[float, ...] | None]:
    """The crop box of each camera: ``crop`` holds 4 fractions (one box for every camera), 4 per camera (in the
    order of ``cameras``), or is None (whole images)."""
    if crop is None:
        return {cam: None for cam in cameras}
    values = list(crop)
    if len(values) == 4:
        box = check_crop(values)
        return {cam: box for cam in cameras}
    if len(values) != 4 * len(cameras):
        raise ValueError(f"crop must hold 4 fractions (every camera) or 4 per camera ({4 * len(cameras)} for "
                         f"{list(cameras)}), got {len(values)}")
    return {cam: check_crop(values[4 * i:4 * i + 4]) for i, cam in enumerate(cameras)}


def crop_render_size(image_size: int, crop: Sequence[float] | None) -> int:
    """Side in pixels at which a camera is rendered so that the ``crop`` box is ``image_size`` pixels high."""
    if crop is None:
        return int(image_size)
    return max(int(image_size), int(round(image_size / min(crop[2], crop[3]))))


def crop_and_resize(image: np.ndarray, crop: Sequence[float] | None, image_size: int) -> np.ndarray:
    """The ``crop`` box (fractions of ``image``'s height and width) of an upright uint8 [H, W, 3] image, resized
    to ``image_size``² with area averaging (PIL BOX), so that small objects fade rather than vanish. Resolution
    independent: a 480 px frame of the same camera gives the same box as a 150 px one."""
    if crop is None and image.shape[0] == image.shape[1] == image_size:
        return image
    from PIL import Image  # lazy: Pillow, only for image features

    h, w = image.shape[:2]
    top, left, ch, cw = crop if crop is not None else (0.0, 0.0, 1.0, 1.0)
    y0, x0 = int(round(top * h)), int(round(left * w))
    y1, x1 = min(h, y0 + max(1, int(round(ch * h)))), min(w, x0 + max(1, int(round(cw * w))))
    box = Image.fromarray(np.ascontiguousarray(image[y0:y1, x0:x1]))
    return np.asarray(box.resize((image_size, image_size), Image.Resampling.BOX))


def camera_needs_rotation(model: Any, data: Any, camera: str) -> bool:
    """True when ``camera``'s image-up axis points downward in the world (the camera is rolled ~180°)."""
    import mujoco  # optional dependency: mujoco

    cid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
    if cid < 0:
        raise ValueError(f"Meta-World has no camera {camera!r}")
    # cam_xmat rows-major 3x3 whose columns are the camera axes in world coordinates; column 1 is image-up
    return float(np.asarray(data.cam_xmat[cid]).reshape(3, 3)[2, 1]) < 0.0


class _FastRenderer:
    """A ``mujoco.Renderer`` with anti-aliasing, shadows, reflections, skybox and haze off."""

    def __init__(self, model: Any, height: int, width: int) -> None:
        import mujoco  # optional dependency: mujoco

        samples = int(model.vis.quality.offsamples)
        model.vis.quality.offsamples = 0  # read once, by the renderer's context; restored for other renderers
        model.vis.global_.offwidth = max(int(model.vis.global_.offwidth), width)
        model.vis.global_.offheight = max(int(model.vis.global_.offheight), height)
        try:
            self.renderer = mujoco.Renderer(model, height, width)
        finally:
            model.vis.quality.offsamples = samples
        flags = mujoco.mjtRndFlag
        for flag in (flags.mjRND_SHADOW, flags.mjRND_REFLECTION, flags.mjRND_SKYBOX, flags.mjRND_HAZE):
            self.renderer.scene.flags[flag] = 0

    def render(self, data: Any, camera: str, rotate: bool) -> np.ndarray:
        self.renderer.update_scene(data, camera=camera)
        img = self.renderer.render()
        return np.ascontiguousarray(img[::-1, ::-1] if rotate else img)

    def close(self) -> None:
        self.renderer.close()


class LeRobotViewRenderer:
    """Renders a Meta-World scene as LeRobot's ``MetaworldEnv`` does (camera view ``lerobot``): a
    ``mujoco.Renderer`` of 480 x 480 with MuJoCo's default visual settings (nothing switched off, the model's
    multisampling kept), like gymnasium's ``OffScreenViewer``, and the frame flipped on both axes (LeRobot's rule
    for ``corner2``). The camera must already be placed (:func:`place_lerobot_camera`).

    ``render(data)`` is the uint8 [480, 480, 3] frame LeRobot's ``pixels`` observation holds for the state
    ``data``; :meth:`render` also takes :class:`_FastRenderer`'s (data, camera, rotate) arguments."""

    def __init__(self, model: Any, size: int = LEROBOT_RENDER_SIZE) -> None:
        import mujoco  # optional dependency: mujoco

        model.vis.global_.offwidth = max(int(model.vis.global_.offwidth), size)
        model.vis.global_.offheight = max(int(model.vis.global_.offheight), size)
        self.renderer = mujoco.Renderer(model, size, size)

    def render(self, data: Any, camera: str = LEROBOT_CAMERA, rotate: bool = True) -> np.ndarray:
        self.renderer.update_scene(data, camera=camera)
        img = self.renderer.render()
        return np.ascontiguousarray(img[::-1, ::-1] if rotate else img)

    def close(self) -> None:
        self.renderer.close()


class MetaWorldScene:
    """One MT1 task of one benchmark seed, with the cameras a policy sees: the simulator side of a NIAF episode.

    The demonstration recorder and the closed-loop evaluation both build their observations here
    (:meth:`observe`), so camera, resolution, rotation, state vector and instruction are the same in training
    and evaluation by construction.

    Args:
        task: MT1 task name, e.g. ``"push-v3"``.
        benchmark_seed: seed of ``metaworld.MT1`` (it draws the 50 variations).
        cameras: Meta-World camera names; empty for state-only observations.
        image_size: H = W of the images the policy sees, in pixels.
        state: ``observation.state`` kind (:data:`STATE_KINDS`): ``full`` (39-d, privileged) or ``agent_pos``
            (4-d, what a robot measures).
        crop: (top, left, height, width) box of the upright camera image, as fractions, that the policy sees
            (the cameras are rendered at :func:`crop_render_size` of the smallest box and each box resized to
            ``image_size``): 4 values for every camera, or 4 per camera (:func:`camera_crops`); None: the whole
            image.
        camera_view: :data:`CAMERA_VIEWS`: ``niaf`` (the model's camera poses, fast renderer) or ``lerobot``
            (LeRobot's Meta-World view: ``corner2`` moved and rendered at 480 px as LeRobot renders it, then
            area-averaged to ``image_size``).
        instructions: :data:`INSTRUCTION_SETS`: the sentence :meth:`observe` gives as ``task``: ``niaf``
            (:data:`TASK_INSTRUCTIONS`) or ``lerobot`` (LeRobot's task string, :data:`LEROBOT_TASK_INSTRUCTIONS`).
    """

    def __init__(self, task: str, benchmark_seed: int, cameras: Sequence[str] = DEFAULT_CAMERAS,
                 image_size: int = 96, state: str = "full", crop: Sequence[float] | None = None,
                 camera_view: str = "niaf", instructions: str = "niaf") -> None:
        metaworld, _mujoco, policy_map = _import_metaworld()
        known = set(metaworld.MT1.ENV_NAMES)
        if task not in known or task not in policy_map:
            raise ValueError(f"unknown Meta-World MT1 task {task!r}; choose from {sorted(known)}")
        if image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {image_size}")
        self.task = task
        self.benchmark_seed = int(benchmark_seed)
        self.cameras = tuple(cameras)
        self.image_size = int(image_size)
        self.state = check_state_kind(state)
        self.crops = camera_crops(crop, self.cameras)
        self.camera_view = check_camera_view(camera_view, self.cameras, crop, self.image_size)
        self.instructions = check_instructions(instructions)
        self.instruction = instruction_for(task, instructions)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.benchmark = metaworld.MT1(task, seed=self.benchmark_seed)
            self.env = self.benchmark.train_classes[task]()
            self.env.set_task(self.benchmark.train_tasks[0])
            self.env.reset()
        self._policy_class = policy_map[task]
        # render_size: side in pixels at which every camera is rendered (before its crop is resized to image_size)
        if self.camera_view == "lerobot":
            place_lerobot_camera(self.env.model)
            _mujoco.mj_forward(self.env.model, self.env.data)  # camera poses of the current state
            self.render_size = LEROBOT_RENDER_SIZE
            self.renderer: Any = LeRobotViewRenderer(self.env.model, self.render_size)
            self.rotate = {LEROBOT_CAMERA: True}  # LeRobot flips corner2 on both axes
        else:
            self.render_size = max([crop_render_size(self.image_size, box) for box in self.crops.values()]
                                   or [self.image_size])
            self.renderer = (_FastRenderer(self.env.model, self.render_size, self.render_size) if self.cameras
                             else None)
            self.rotate = {c: camera_needs_rotation(self.env.model, self.env.data, c) for c in self.cameras}
        self.steps = 0

    @property
    def num_variations(self) -> int:
        return len(self.benchmark.train_tasks)

    def expert(self) -> Any:
        """A fresh scripted expert for this task (stateless: ``get_action(obs_vector)``)."""
        return self._policy_class()

    def reset(self, variation: int) -> np.ndarray:
        """Start variation ``variation`` (0..49); returns Meta-World's observation vector [39]."""
        if not 0 <= variation < self.num_variations:
            raise ValueError(f"variation must be in [0, {self.num_variations}), got {variation}")
        self.env.set_task(self.benchmark.train_tasks[variation])
        obs, _ = self.env.reset()
        self.steps = 0
        return np.asarray(obs, dtype=np.float64)

    def observe(self, obs: np.ndarray) -> dict[str, Any]:
        """The policy's view of the current state: ``{"observation.state": float32 [39] or [4] (``state``),
        "task": str, "observation.images.<cam>": uint8 [image_size, image_size, 3] upright (and cropped)}``."""
        state = np.asarray(obs, dtype=np.float32)[: len(STATE_KINDS[self.state])].copy()
        out: dict[str, Any] = {"observation.state": state, "task": self.instruction}
        for cam in self.cameras:
            frame = self.renderer.render(self.env.data, cam, self.rotate[cam])
            out[f"observation.images.{cam}"] = crop_and_resize(frame, self.crops[cam], self.image_size)
        return out

    def step(self, action: np.ndarray) -> tuple[np.ndarray, bool, bool]:
        """Apply ``action`` (clipped to [-1, 1]); returns (observation vector, success, truncated)."""
        action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        obs, _reward, _terminated, truncated, info = self.env.step(action)
        self.steps += 1
        return np.asarray(obs, dtype=np.float64), float(info.get("success", 0.0)) >= 1.0, bool(truncated)

    def close(self) -> None:
        if self.renderer is not None:
            self.renderer.close()
            self.renderer = None
        self.env.close()

    def __enter__(self) -> MetaWorldScene:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def rollout(
    scene: MetaWorldScene,
    variation: int,
    stride: int = 1,
    max_steps: int = MAX_PATH_LENGTH,
    action_noise: float = 0.0,
    rng: np.random.Generator | None = None,
) -> tuple[dict[str, np.ndarray], bool]:
    """Run the scripted expert on ``variation`` until success or ``max_steps``.

    With ``action_noise`` σ > 0 the environment executes the expert's action plus Gaussian noise of standard
    deviation σ (in action units, drawn per environment step from ``rng``), while the recorded action is the
    expert's own, noise-free one for the state it saw: the demonstrations then also show how the expert
    recovers from the small deviations a learned policy makes (noise injection, as in DART).

    Returns ``({"state": [T, 39], "action": [T, 4], "images.<cam>": [T, H, W, 3]}, success)`` with one row per
    recorded step (every ``stride``-th environment step, starting at 0), observed by :meth:`MetaWorldScene.observe`.
    """
    if action_noise < 0 or not np.isfinite(action_noise):
        raise ValueError(f"action_noise must be a finite number >= 0, got {action_noise}")
    if action_noise > 0 and rng is None:
        raise ValueError("rollout: action_noise > 0 needs an `rng`")
    policy = scene.expert()
    obs = scene.reset(variation)
    states, actions = [], []
    frames: dict[str, list[np.ndarray]] = {c: [] for c in scene.cameras}
    success = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the experts warn about gains being "too high" on every call
        for step in range(max_steps):
            action = np.clip(np.asarray(policy.get_action(obs), dtype=np.float64), -1.0, 1.0)
            if step % stride == 0:
                seen = scene.observe(obs)
                states.append(seen["observation.state"])
                actions.append(action.copy())
                for cam in scene.cameras:
                    frames[cam].append(seen[f"observation.images.{cam}"])
            executed = action + rng.normal(0.0, action_noise, size=action.shape) if action_noise > 0 else action
            obs, success, truncated = scene.step(executed)
            if success or truncated:
                break
    out = {"state": np.asarray(states, np.float32), "action": np.asarray(actions, np.float32)}
    for cam in scene.cameras:
        out[f"images.{cam}"] = np.stack(frames[cam])
    return out, success


def generate_episodes(
    tasks: Sequence[str] = DEFAULT_TASKS,
    episodes_per_task: int = 50,
    *,
    cameras: Sequence[str] = DEFAULT_CAMERAS,
    image_size: int = 96,
    stride: int = 1,
    seed: int = 0,
    max_steps: int = MAX_PATH_LENGTH,
    keep_failures: bool = False,
    summary: GenerationSummary | None = None,
    progress: bool = True,
    action_noise: float = 0.0,
    state: str = "full",
    crop: Sequence[float] | None = None,
    camera_view: str = "niaf",
    instructions: str = "niaf",
) -> Iterator[Episode]:
    """Yield expert demonstrations as :class:`Episode` (fps = 80 / stride), task by task.

    Args:
        tasks: MT1 task names (``metaworld.MT1.ENV_NAMES``), e.g. ``"reach-v3"``.
        episodes_per_task: episodes per task; episode i uses variation ``i % 50`` of benchmark seed
            ``seed + i // 50``.
        cameras: Meta-World camera names (``corner``, ``corner2``, ``corner3``, ``corner4``, ``topview``,
            ``behindGripper``, ``gripperPOV``); empty for state-only demonstrations.
        image_size: H = W of the rendered images in pixels.
        stride: record every ``stride``-th environment step only (rendering only those).
        seed: seed of the first MT1 benchmark (task variations); more than 50 episodes use the next seeds.
        max_steps: step limit per episode (<= 500).
        keep_failures: also yield episodes whose expert did not succeed (default: leave them out, counted
            in ``summary.failed`` and logged).
        summary: filled with per-task counts when given.
        progress: show a tqdm bar.
        action_noise: σ of the Gaussian noise added to the executed (not the recorded) expert actions; see
            :func:`rollout`. The noise of episode i is seeded by (seed, task, i).
        state: recorded ``observation.state`` (:data:`STATE_KINDS`); the expert always reads the full one.
        crop: the box of each camera image the policy sees (:class:`MetaWorldScene`).
        camera_view: how the cameras are placed and rendered (:data:`CAMERA_VIEWS`; ``lerobot``: LeRobot's view).
        instructions: the episodes' instructions (:data:`INSTRUCTION_SETS`; ``lerobot``: LeRobot's task strings).
    """
    from tqdm.auto import tqdm  # lazy: tqdm.auto probes for notebook support

    metaworld, _mujoco, policy_map = _import_metaworld()
    if not 1 <= max_steps <= MAX_PATH_LENGTH:
        raise ValueError(f"max_steps must be in [1, {MAX_PATH_LENGTH}], got {max_steps}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if episodes_per_task < 1:
        raise ValueError(f"episodes_per_task must be >= 1, got {episodes_per_task}")
    check_state_kind(state)
    camera_crops(crop, cameras)
    check_camera_view(camera_view, cameras, crop, image_size)
    known = set(metaworld.MT1.ENV_NAMES)
    unknown = [t for t in tasks if t not in known or t not in policy_map]
    if unknown:
        raise ValueError(f"unknown Meta-World MT1 task(s) {unknown}; choose from {sorted(known)}")
    check_instructions(instructions, tasks)
    summary = summary if summary is not None else GenerationSummary()
    fps = METAWORLD_FPS / stride
    start = time.perf_counter()
    bar = tqdm(total=len(tasks) * episodes_per_task, desc="metaworld demos", unit="ep", disable=not progress)
    index = 0
    for task in tasks:
        summary.attempted.setdefault(task, 0)
        summary.succeeded.setdefault(task, 0)
        summary.steps.setdefault(task, 0)
        summary.variations.setdefault(task, {})
        scene: MetaWorldScene | None = None
        try:
            for i in range(episodes_per_task):
                bench_seed = seed + i // VARIATIONS_PER_BENCHMARK
                if scene is None or scene.benchmark_seed != bench_seed:
                    if scene is not None:
                        scene.close()
                    scene = MetaWorldScene(task, bench_seed, cameras, image_size, state, crop, camera_view,
                                           instructions)
                variation = i % scene.num_variations
                rng = np.random.default_rng([seed, zlib.crc32(task.encode()), i]) if action_noise > 0 else None
                rec, success = rollout(scene, variation, stride, max_steps, action_noise, rng)
                summary.attempted[task] += 1
                bar.update(1)
                if success:
                    summary.succeeded[task] += 1
                else:
                    summary.failed.append((task, i))
                    logger.warning("metaworld %s episode %d (seed %d, variation %d): expert did not succeed in %d steps%s",
                                   task, i, bench_seed, variation, max_steps, "" if keep_failures else "; left out")
                    if not keep_failures:
                        continue
                if len(rec["action"]) < 2:
                    logger.warning("metaworld %s episode %d: only %d recorded step(s) at stride %d; left out",
                                   task, i, len(rec["action"]), stride)
                    summary.failed.append((task, i))
                    continue
                summary.steps[task] += len(rec["action"])
                summary.variations[task].setdefault(str(bench_seed), []).append(variation)
                yield Episode(
                    episode_id=f"{task}/{i}",
                    source=f"metaworld://{task}?seed={bench_seed}&variation={variation}",
                    instruction=scene.instruction,
                    fps=fps,
                    actions=rec["action"],
                    states=rec["state"],
                    images={c: rec[f"images.{c}"] for c in cameras},
                    index=index,
                    metadata={"task": task, "benchmark_seed": bench_seed, "variation": variation, "success": success},
                )
                index += 1
        finally:
            if scene is not None:
                scene.close()
    bar.close()
    summary.seconds = time.perf_counter() - start


TRAINING_RECORD = "training_data.json"
"""File in a checkpoint folder: where its Meta-World demonstrations came from (benchmark seed, variations)."""
CONTRACT_FILE = "observation_contract.json"
"""File in a checkpoint trained on Meta-World: everything a user's own loop needs to build the policy's inputs and
to apply its outputs (:func:`observation_contract`)."""
CONTRACT_FORMAT = "niaf-metaworld-observation-contract"


def observation_contract(record: dict[str, Any], chunk_size: int, replan_every: int = 8) -> dict[str, Any]:
    """The observation contract of a policy trained on the Meta-World demonstrations of ``record`` (the
    ``"metaworld"`` entry of the dataset's ``info.json``): cameras (rendering, rotation, crop, resolution), state,
    instructions, what an action means, the time alignment of a chunk and the held-out evaluation protocol, as
    plain JSON. A loop built from this alone (``examples/metaworld_from_contract.py``) reproduces ``niaf-eval``'s
    observations and actions.

    Args:
        record: the dataset's Meta-World record (:func:`read_provenance`).
        chunk_size: K, points per chunk (the model's ``chunk_size``).
        replan_every: environment steps between two policy calls in the evaluation protocol.
    """
    tasks = list(record["tasks"])
    cameras = list(record.get("cameras") or [])
    image_size = int(record.get("image_size", 32))
    crop = record.get("crop")
    crops = camera_crops(crop, cameras)
    state = check_state_kind(record.get("state", "full"))
    view = check_camera_view(record.get("camera_view", "niaf"), cameras or [LEROBOT_CAMERA], crop, image_size)
    instructions = check_instructions(record.get("instructions", "niaf"), tasks)
    # recorded every `stride` environment steps; a chunk point every `chunk_stride` recorded frames
    stride = int(record.get("stride", 1)) * int(record.get("chunk_stride", 1))
    rotate: dict[str, bool] = {}
    render_size = image_size
    multisamples = 0
    if cameras:
        with MetaWorldScene(tasks[0], 0, cameras, image_size, state, crop, view) as scene:
            rotate = dict(scene.rotate)
            render_size = scene.render_size
            multisamples = int(scene.env.model.vis.quality.offsamples)
    control_hz = METAWORLD_FPS / stride
    return {
        "format": CONTRACT_FORMAT,
        "version": 1,
        "environment": {
            "suite": "metaworld", "benchmark": "MT1", "tasks": tasks, "env_hz": METAWORLD_FPS,
            "env_step_seconds": 1.0 / METAWORLD_FPS, "max_steps": MAX_PATH_LENGTH,
            "variations_per_benchmark_seed": VARIATIONS_PER_BENCHMARK,
            "task_setup": "env = MT1(task, seed=benchmark_seed).train_classes[task](); "
                          "env.set_task(benchmark.train_tasks[variation]); obs, _ = env.reset()",
        },
        "cameras": [{
            "key": f"observation.images.{cam}", "camera": cam,
            "render_size": render_size,
            "view": view,
            "camera_pos": list(LEROBOT_CAMERA_POS) if view == "lerobot" else None,
            "camera_pos_means": "world position (m) the camera is moved to before rendering (model.cam_pos); "
                                "null: the model's own pose",
            "renderer": ({"offscreen_multisamples": 0, "shadow": False, "reflection": False, "skybox": False,
                          "haze": False} if view == "niaf" else
                         {"offscreen_multisamples": multisamples, "shadow": True, "reflection": True,
                          "skybox": True, "haze": True}),
            "rotate_180": bool(rotate.get(cam, False)),
            "rotate_180_means": "image[::-1, ::-1] of the rendered frame (the camera is mounted rolled ~180°)",
            "crop": list(crops[cam]) if crops[cam] is not None else None,
            "crop_means": "(top, left, height, width) fractions of the upright rendered frame; pixel box "
                          "round(top*H) : round(top*H) + max(1, round(height*H)), likewise for columns",
            "image_size": image_size,
            "resize": "PIL Image.resize((image_size, image_size), Image.Resampling.BOX) of the crop",
            "format": "uint8 RGB, [H, W, 3], upright",
        } for cam in cameras],
        "state": {
            "key": "observation.state", "kind": state, "dim": len(STATE_KINDS[state]), "names": STATE_KINDS[state],
            "from_env_observation": f"obs[:{len(STATE_KINDS[state])}] of Meta-World's 39-d observation vector",
            "units": "metres (world frame); gripper opening in [0, 1]",
        },
        "instructions": {task: instruction_for(task, instructions) for task in tasks},
        "instructions_from": instructions,
        "instructions_from_means": "niaf: niaf-data's own sentences; lerobot: the task strings of LeRobot's "
                                   "Meta-World environment (what lerobot-eval passes as the observation's task)",
        "action": {
            "key": "action", "names": ACTION_NAMES, "kind": "displacement command",
            "meaning": "per environment step (12.5 ms): end-effector target displacement dx, dy, dz (x 1 cm; "
                       "Meta-World's action scale) and gripper effort (> 0 closes)",
            "clip": [-1.0, 1.0],
        },
        "timing": {
            "control_hz": control_hz, "env_steps_per_chunk_point": stride, "chunk_size": int(chunk_size),
            "chunk_duration_seconds": (int(chunk_size) - 1) / control_hz,
            "time_zero": "the observation: chunk point k is the command for environment step k * "
                         "env_steps_per_chunk_point after the observation; tau = -1 + 2 t / chunk_duration",
            "replan_every_env_steps": int(replan_every),
            "command": "between policy calls, step n (n = 0, 1, ... env steps after the observation) executes "
                       "clip(A(t = n / env_hz), -1, 1); at the training rate the function is read every "
                       "env_steps_per_chunk_point steps and held in between",
        },
        "evaluation": {
            "training_benchmark_seeds": [int(s) for s in record.get("benchmark_seeds", [])],
            "held_out_benchmark_seed": "the first seed >= 1000 not among training_benchmark_seeds",
            "variation_of_episode": "episode i runs variation i % 50 of the held-out benchmark seed",
            "success": "info['success'] >= 1 at any step within max_steps",
        },
    }


def read_provenance(root: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``"metaworld"`` record of a dataset's ``meta/info.json`` (benchmark seeds, tasks, cameras, image size,
    stride, variations per task and seed), or None when the file or the record is absent."""
    info = Path(root) / "meta" / "info.json"
    if not info.is_file():
        return None
    try:
        data = json.loads(info.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{info}: not valid JSON ({err})") from None
    record = data.get("metaworld") if isinstance(data, dict) else None
    if record is not None and not isinstance(record, dict):
        raise ValueError(f"{info}: 'metaworld' must be an object, got {type(record).__name__}")
    return record


def generate_metaworld_dataset(
    out: str | os.PathLike[str],
    tasks: Sequence[str] = DEFAULT_TASKS,
    episodes_per_task: int = 50,
    *,
    cameras: Sequence[str] = DEFAULT_CAMERAS,
    image_size: int = 96,
    stride: int = 1,
    seed: int = 0,
    max_steps: int = MAX_PATH_LENGTH,
    keep_failures: bool = False,
    progress: bool = True,
    action_noise: float = 0.0,
    state: str = "full",
    crop: Sequence[float] | None = None,
    camera_view: str = "niaf",
    instructions: str = "niaf",
) -> tuple[Path, GenerationSummary]:
    """Generate demonstrations (see :func:`generate_episodes`) into a new LeRobot v3.0 folder ``out``.

    The dataset has ``fps`` = 80 / stride, ``robot_type`` "sawyer", ``observation.state`` (names
    ``STATE_KINDS[state]``), ``action`` (names :data:`ACTION_NAMES`), one PNG image feature
    ``observation.images.<camera>`` per camera, one task per Meta-World task, and ``info["metaworld"]``: the
    benchmark seeds, tasks, cameras, image size, crop, state kind, stride and the variations recorded per task and
    seed (what a closed-loop evaluation must not reuse), and the camera view and the instruction set
    (``instructions``) when they are not the default ``niaf``. Returns (out, summary).
    """
    camera_crops(crop, cameras)
    check_state_kind(state)
    check_camera_view(camera_view, cameras, crop, image_size)
    check_instructions(instructions, tasks)
    summary = GenerationSummary()
    episodes = generate_episodes(tasks, episodes_per_task, cameras=cameras, image_size=image_size, stride=stride,
                                 seed=seed, max_steps=max_steps, keep_failures=keep_failures, summary=summary,
                                 progress=progress, action_noise=action_noise, state=state, crop=crop,
                                 camera_view=camera_view, instructions=instructions)

    def provenance() -> dict[str, Any]:  # called after the last episode, when the variations are known
        seeds = sorted({int(s) for per_task in summary.variations.values() for s in per_task})
        view = {"camera_view": camera_view} if camera_view != "niaf" else {}  # older records: the niaf view
        if instructions != "niaf":  # older records: niaf's sentences
            view["instructions"] = instructions
        return {"metaworld": {**view, "benchmark_seeds": seeds, "tasks": list(tasks), "cameras": list(cameras),
                              "image_size": int(image_size), "stride": int(stride),
                              "state": state, "crop": list(crop) if crop is not None else None,
                              "action_noise": float(action_noise), "variations": {t: {k: sorted(v) for k, v in per.items()}
                                             for t, per in summary.variations.items()}}}

    root = write_lerobot_dataset(out, episodes, fps=METAWORLD_FPS / stride, robot_type="sawyer",
                                 action_names=ACTION_NAMES, state_names=STATE_KINDS[state],
                                 extra_info=provenance)
    kept = sum(summary.attempted.values()) - len(summary.failed)
    logger.info("metaworld: %d episodes kept of %d in %.1f s -> %s", kept, sum(summary.attempted.values()),
                summary.seconds, root)
    return root, summary


__all__ = [
    "ACTION_NAMES",
    "CAMERA_VIEWS",
    "CONTRACT_FILE",
    "AGENT_POS_NAMES",
    "DEFAULT_CAMERAS",
    "DEFAULT_TASKS",
    "GenerationSummary",
    "INSTRUCTION_SETS",
    "LEROBOT_CAMERA",
    "LEROBOT_CAMERA_POS",
    "LEROBOT_RENDER_SIZE",
    "LEROBOT_TASK_INSTRUCTIONS",
    "LeRobotViewRenderer",
    "METAWORLD_FPS",
    "MetaWorldScene",
    "STATE_DIM",
    "STATE_KINDS",
    "STATE_NAMES",
    "TRAINING_RECORD",
    "TASK_INSTRUCTIONS",
    "camera_crops",
    "camera_needs_rotation",
    "check_camera_view",
    "check_crop",
    "check_instructions",
    "check_state_kind",
    "crop_and_resize",
    "generate_episodes",
    "generate_metaworld_dataset",
    "instruction_for",
    "observation_contract",
    "place_lerobot_camera",
    "read_provenance",
    "rollout",
]
