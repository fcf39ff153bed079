"""``niaf-train``: fine-tune a NIAF policy with Accelerate (one or many processes), optionally with LoRA.

    niaf-train --config train/configs/default.yaml --output_dir outputs/run --max_steps 300
    accelerate launch -m niaf_train.training.cli --config train/configs/default.yaml [--section.key value ...]
    accelerate launch --num_processes 2 -m niaf_train.training.cli --config ...          # DDP
    niaf-train --config ... --resume                                                    # continue the last checkpoint

Keys and defaults: :mod:`niaf_train.training.arguments` (``niaf-train --help`` lists them); the run itself:
:func:`niaf_train.training.loop.train`.
"""

from __future__ import annotations

import argparse
import sys

from ..console_logging import configure_logging, print_error
from .arguments import ConfigError, FinetuneConfig, help_text, load_config
from .loop import train


def parse_args(argv: list[str] | None) -> FinetuneConfig:
    parser = argparse.ArgumentParser(
        prog="niaf-train", add_help=False,
        description="Fine-tune a NIAF policy. Every configuration key can be overridden with --section.key VALUE "
                    "(or --key VALUE when unique), e.g. --output_dir out --max_steps 100 --data.path DIR.",
    )
    parser.add_argument(
        "--config",
        default="default.yaml",
        help="YAML file, or the name of a packaged config (default: default.yaml, the embedded tiny Meta-World run)",
    )
    parser.add_argument("-h", "--help", action="store_true",
                        help="show this help with every configuration key, its values in force and exit")
    args, rest = parser.parse_known_args(argv)
    if args.help:
        parser.print_help()
        # the values in force come from the config file (with any overrides given next to --help)
        print("\n" + help_text(load_config(args.config, rest), f"{args.config} and the command line"))
        raise SystemExit(0)
    return load_config(args.config, rest)


def main(argv: list[str] | None = None) -> int:
    try:
        configure_logging()
    except ValueError as err:  # a bad NIAF_LOG_LEVEL / NIAF_THIRD_PARTY_LOG_LEVEL
        print_error(f"niaf-train: error: {err}")
        return 2
    try:
        cfg = parse_args(argv)
        result = train(cfg)
    except ConfigError as err:  # also mid-run: printed on its own line, not glued onto the progress bar
        print_error(f"niaf-train: error: {err}")
        return 2
    except OSError as err:  # a read-only or full disk mid-run: the file and the cause, not a traceback
        where = f"{err.filename}: " if err.filename else ""
        print_error(f"niaf-train: error: {where}{err.strerror or err}")
        return 1
    metrics = result["metrics"]
    if metrics and result["process_index"] == 0:
        print(f"final checkpoint: {result['final_dir']}")
        print(f"validation position MSE: {metrics['position_mse']:.5g}   "
              f"mean-action baseline: {metrics['baseline_position_mse']:.5g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
