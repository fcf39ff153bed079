"""Both directions between a NIAF checkpoint (``niaf-train`` output, Hub layout) and a LeRobot ``pretrained_model``
folder, with identical actions (tests/test_plugin.py checks it).

    niaf-lerobot to-lerobot NIAF_CHECKPOINT OUT [--image-keys observation.image]
    niaf-lerobot to-niaf PRETRAINED_MODEL OUT

A LeRobot folder holds ``config.json`` (``type: niaf``, the NIAF model config inside as ``niaf_config``),
``model.safetensors``, ``niaf_processor/`` (tokenizer, image processor, prompt) and the two processor pipelines
(``policy_preprocessor.json``, ``policy_postprocessor.json`` + their statistics) with NIAF's normalisation.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from lerobot.configs import FeatureType, PolicyFeature
from lerobot.utils.constants import ACTION, OBS_IMAGE, OBS_IMAGES, OBS_STATE

from .configuration_niaf import NiafConfig
from .modeling_niaf import NiafPolicy
from .processor_niaf import make_niaf_pre_post_processors

logger = logging.getLogger(__name__)


def default_image_keys(num_cameras: int) -> list[str]:
    """``observation.image`` for one camera (LeRobot's simulation environments, e.g. Meta-World), else
    ``observation.images.camera0`` ...; a deployment renames its keys with ``--rename_map``."""
    return [OBS_IMAGE] if num_cameras == 1 else [f"{OBS_IMAGES}.camera{i}" for i in range(num_cameras)]


def policy_from_niaf(checkpoint: str, image_keys: Sequence[str] | None = None, device: str = "cpu",
                     **config_kwargs) -> NiafPolicy:
    """A `NiafPolicy` holding the NIAF checkpoint's model and processor (weights loaded strictly by NIAF)."""
    from modeling_niaf import NiafForActionFunction, NiafProcessor

    model = NiafForActionFunction.from_pretrained(checkpoint)
    processor = NiafProcessor.from_pretrained(checkpoint)
    niaf = model.config
    if niaf.relative_action_state_indices is not None:
        raise ValueError(
            f"{checkpoint}: the model predicts actions relative to the state (relative_action_state_indices); "
            "LeRobot's pipelines here apply absolute actions only. Not converted."
        )
    keys = list(image_keys) if image_keys else default_image_keys(niaf.num_cameras)
    if len(keys) != niaf.num_cameras:
        raise ValueError(f"{checkpoint}: the model reads {niaf.num_cameras} camera(s); got image keys {keys}.")
    side = int(niaf.backbone_config.vision_config.image_size)
    inputs = {k: PolicyFeature(type=FeatureType.VISUAL, shape=(3, side, side)) for k in keys}
    if niaf.use_state:
        inputs[OBS_STATE] = PolicyFeature(type=FeatureType.STATE, shape=(niaf.state_dim,))
    config = NiafConfig(
        niaf_config=niaf.to_dict(), input_features=inputs,
        output_features={ACTION: PolicyFeature(type=FeatureType.ACTION, shape=(niaf.action_dim,))},
        chunk_size=niaf.chunk_size, device=device, **config_kwargs,
    )
    return NiafPolicy(config, niaf_model=model, niaf_processor=processor).eval()


def niaf_to_lerobot(checkpoint: str, out: str | Path, image_keys: Sequence[str] | None = None,
                    **config_kwargs) -> Path:
    """Write the NIAF checkpoint as a LeRobot ``pretrained_model`` folder ``out``; returns ``out``."""
    out = Path(out)
    policy = policy_from_niaf(checkpoint, image_keys, **config_kwargs)
    policy.save_pretrained(out)
    preprocessor, postprocessor = make_niaf_pre_post_processors(policy.config)
    preprocessor.save_pretrained(out)
    postprocessor.save_pretrained(out)
    logger.info("%s -> %s (LeRobot pretrained_model, type niaf)", checkpoint, out)
    return out


def lerobot_to_niaf(pretrained_model: str | Path, out: str | Path) -> Path:
    """Write a LeRobot NIAF ``pretrained_model`` folder (or Hub id) as a NIAF checkpoint (Hub layout, remote code,
    processor) in ``out``; returns ``out``."""
    out = Path(out)
    policy = NiafPolicy.from_pretrained(str(pretrained_model))
    processor = policy.niaf_processor
    processor.set_stats(policy.model.config.normalization_stats)
    policy.model.save_pretrained(str(out), processor=processor)
    logger.info("%s -> %s (NIAF checkpoint)", pretrained_model, out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="niaf-lerobot", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("to-lerobot", help="NIAF checkpoint -> LeRobot pretrained_model folder")
    a.add_argument("checkpoint")
    a.add_argument("out")
    a.add_argument("--image-keys", nargs="+", default=None,
                   help="LeRobot keys of the model's cameras, in its order (default: observation.image for one)")
    b = sub.add_parser("to-niaf", help="LeRobot pretrained_model folder -> NIAF checkpoint")
    b.add_argument("pretrained_model")
    b.add_argument("out")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for target in (args.out,):
        if Path(target).exists() and any(Path(target).iterdir()):
            print(f"niaf-lerobot: {target} exists and is not empty; nothing is overwritten.", file=sys.stderr)
            return 2
    if args.command == "to-lerobot":
        niaf_to_lerobot(args.checkpoint, args.out, args.image_keys)
    else:
        lerobot_to_niaf(args.pretrained_model, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
