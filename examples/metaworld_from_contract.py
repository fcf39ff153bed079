"""Run a NIAF Meta-World checkpoint in your own loop, from its ``observation_contract.json`` alone.

    python examples/metaworld_from_contract.py --checkpoint outputs/metaworld-tiny/final --episodes 10

Nothing here imports ``niaf_train``: the observation (camera, rendering, rotation, crop, resolution, state,
instruction), the meaning of an action and the timing of a chunk are read from the checkpoint's contract file,
and the model and processor load through ``AutoModel`` / ``AutoProcessor`` with ``trust_remote_code=True``, as
from the Hub. Needs ``metaworld``, ``mujoco`` and Pillow. Episodes follow the contract's held-out protocol
(benchmark seed, variation ``i % 50``, success within ``max_steps``); commands are the action function read at
every environment step after the observation (the function's own rate, 80 Hz), replanning every
``replan_every_env_steps`` steps.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("niaf.metaworld_from_contract")

CONTRACT_FILE = "observation_contract.json"
CONTRACT_FORMAT = "niaf-metaworld-observation-contract"


def load_contract(checkpoint: str | os.PathLike[str]) -> dict[str, Any]:
    """The contract of a local checkpoint folder; a one-line error names the file when it is missing or foreign."""
    path = Path(checkpoint) / CONTRACT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no observation contract (a checkpoint trained on Meta-World writes one)")
    contract = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(contract, dict) or contract.get("format") != CONTRACT_FORMAT:
        raise ValueError(f"{path}: expected a {CONTRACT_FORMAT!r} file")
    return contract


def held_out_seed(contract: dict[str, Any]) -> int:
    """The first benchmark seed >= 1000 that the training demonstrations did not use."""
    used = set(contract["evaluation"]["training_benchmark_seeds"])
    seed = 1000
    while seed in used:
        seed += 1
    return seed


class ContractScene:
    """One Meta-World MT1 task, observed as the contract says."""

    def __init__(self, contract: dict[str, Any], task: str, benchmark_seed: int) -> None:
        os.environ.setdefault("MUJOCO_GL", "egl")
        import metaworld
        import mujoco

        self.contract, self.task = contract, task
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.benchmark = metaworld.MT1(task, seed=benchmark_seed)
            self.env = self.benchmark.train_classes[task]()
            self.env.set_task(self.benchmark.train_tasks[0])
            self.env.reset()
        self.renderer = None
        cams = contract["cameras"]
        if cams:
            side = max(c["render_size"] for c in cams)
            model = self.env.model
            for cam in cams:  # a moved camera (the "lerobot" view): its world position, orientation unchanged
                if cam.get("camera_pos") is not None:
                    cid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, cam["camera"])
                    model.cam_pos[cid] = cam["camera_pos"]
            settings = cams[0]["renderer"]
            model.vis.quality.offsamples = settings["offscreen_multisamples"]
            model.vis.global_.offwidth = max(int(model.vis.global_.offwidth), side)
            model.vis.global_.offheight = max(int(model.vis.global_.offheight), side)
            self.renderer = mujoco.Renderer(model, side, side)
            flags = mujoco.mjtRndFlag
            for name, flag in (("shadow", flags.mjRND_SHADOW), ("reflection", flags.mjRND_REFLECTION),
                               ("skybox", flags.mjRND_SKYBOX), ("haze", flags.mjRND_HAZE)):
                self.renderer.scene.flags[flag] = int(bool(settings[name]))

    def reset(self, variation: int) -> np.ndarray:
        self.env.set_task(self.benchmark.train_tasks[variation])
        obs, _ = self.env.reset()
        return np.asarray(obs, dtype=np.float64)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, bool]:
        obs, _reward, _terminated, _truncated, info = self.env.step(action)
        return np.asarray(obs, dtype=np.float64), float(info.get("success", 0.0)) >= 1.0

    def _image(self, cam: dict[str, Any]) -> np.ndarray:
        from PIL import Image

        self.renderer.update_scene(self.env.data, camera=cam["camera"])
        frame = self.renderer.render()
        if cam["rotate_180"]:
            frame = frame[::-1, ::-1]
        size = cam["image_size"]
        h, w = frame.shape[:2]
        top, left, ch, cw = cam["crop"] if cam["crop"] is not None else (0.0, 0.0, 1.0, 1.0)
        if cam["crop"] is None and h == w == size:
            return np.ascontiguousarray(frame)
        y0, x0 = int(round(top * h)), int(round(left * w))
        y1, x1 = min(h, y0 + max(1, int(round(ch * h)))), min(w, x0 + max(1, int(round(cw * w))))
        box = Image.fromarray(np.ascontiguousarray(frame[y0:y1, x0:x1]))
        return np.asarray(box.resize((size, size), Image.Resampling.BOX))

    def observe(self, obs: np.ndarray) -> dict[str, Any]:
        """``{camera key: uint8 [S, S, 3], "observation.state": float32 [dim], "task": instruction}``."""
        out: dict[str, Any] = {
            "observation.state": np.asarray(obs, dtype=np.float32)[: self.contract["state"]["dim"]].copy(),
            "task": self.contract["instructions"][self.task],
        }
        for cam in self.contract["cameras"]:
            out[cam["key"]] = self._image(cam)
        return out

    def close(self) -> None:
        if self.renderer is not None:
            self.renderer.close()
        self.env.close()


def policy_inputs(processor: Any, model: Any, contract: dict[str, Any], observation: dict[str, Any]) -> dict[str, Any]:
    """The model's inputs for one observation (a batch of 1)."""
    import torch

    kwargs: dict[str, Any] = {"images": [[observation[c["key"]] for c in contract["cameras"]]],
                              "text": [observation["task"]]}
    if model.config.use_state:
        kwargs["state"] = torch.as_tensor(observation["observation.state"][None])
    return processor(**kwargs)


def first_chunk(model: Any, processor: Any, contract: dict[str, Any], observation: dict[str, Any]) -> np.ndarray:
    """The K waypoints (physical actions, [K, D]) of the function planned from ``observation``."""
    import torch

    with torch.inference_mode():
        fn = model.predict_action_function(**policy_inputs(processor, model, contract, observation))
        return fn(derivatives=0).position[0].double().cpu().numpy()


def run_episode(model: Any, processor: Any, contract: dict[str, Any], scene: ContractScene, variation: int) -> bool:
    """One closed-loop episode: replan every ``replan_every_env_steps``; step n after an observation executes
    ``clip(A(n / env_hz))``."""
    import torch

    env_hz = contract["environment"]["env_hz"]
    replan = contract["timing"]["replan_every_env_steps"]
    low, high = contract["action"]["clip"]
    obs = scene.reset(variation)
    fn, since = None, 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for step in range(contract["environment"]["max_steps"]):
            if step % replan == 0:
                with torch.inference_mode():
                    fn = model.predict_action_function(**policy_inputs(processor, model, contract, scene.observe(obs)))
                fn = fn.to_numpy()
                since = 0
            t = min(since / env_hz, float(fn.chunk_duration))
            action = np.clip(fn.at(t, 0, 0)[0], low, high)
            obs, success = scene.step(action)
            since += 1
            if success:
                return True
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="local checkpoint folder with observation_contract.json")
    parser.add_argument("--episodes", type=int, default=10, help="held-out episodes per task")
    args = parser.parse_args(argv)
    if args.episodes < 1:
        print(f"metaworld_from_contract: error: --episodes must be >= 1, got {args.episodes}", file=sys.stderr)
        return 2
    try:
        contract = load_contract(args.checkpoint)
    except (OSError, ValueError) as err:
        print(f"metaworld_from_contract: error: {err}", file=sys.stderr)
        return 2
    from transformers import AutoModel, AutoProcessor

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    model = AutoModel.from_pretrained(args.checkpoint, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(args.checkpoint, trust_remote_code=True)
    seed = held_out_seed(contract)
    per_seed = contract["environment"]["variations_per_benchmark_seed"]
    for task in contract["environment"]["tasks"]:
        scene = ContractScene(contract, task, seed)
        try:
            wins = sum(run_episode(model, processor, contract, scene, i % per_seed) for i in range(args.episodes))
        finally:
            scene.close()
        logger.info("%s: %d/%d held-out episodes solved (benchmark seed %d)", task, wins, args.episodes, seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
