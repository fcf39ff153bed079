"""Checkpoints in the layout of earlier code, for tests that newer code still loads them.

``previous_checkpoints/<head>/`` holds, for NIAF (``niaf``) and each comparison head, what the code before
``NiafModel`` existed (commit 6e59daf) saved for the tiny model of ``tests/train/baselines/test_baselines.py``
(``_config(head)``, ``save_pretrained(folder, processor=_processor())``): its ``config.json`` as written, and
``weights.json``, the name → [shape..., dtype] of every tensor of its ``model.safetensors`` (read back with
``safetensors.safe_open``). The weights themselves (~230 kB each) are not stored: `write_previous_checkpoint`
writes a ``model.safetensors`` with exactly those names, shapes and dtypes and seeded random values.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

PREVIOUS_CHECKPOINTS = Path(__file__).resolve().parent / "previous_checkpoints"
PREVIOUS_HEADS = ("niaf", "waypoints", "bspline", "flow")

_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def previous_weight_names(head: str) -> dict[str, tuple[list[int], str]]:
    """Tensor name → (shape, safetensors dtype) of the previous code's ``model.safetensors`` for ``head``."""
    manifest = json.loads((PREVIOUS_CHECKPOINTS / head / "weights.json").read_text(encoding="utf-8"))
    return {name: (list(entry[:-1]), entry[-1]) for name, entry in manifest.items()}


def write_previous_checkpoint(head: str, folder: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """A checkpoint folder as the previous code saved it for ``head`` (config.json + model.safetensors, no
    remote code or processor); returns the tensors written, by name. Values ~ N(0, 0.1²), seeded."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(PREVIOUS_CHECKPOINTS / head / "config.json", folder / "config.json")
    generator = torch.Generator().manual_seed(seed)
    tensors = {
        name: (0.1 * torch.randn(shape, generator=generator)).to(_DTYPES[dtype])
        for name, (shape, dtype) in sorted(previous_weight_names(head).items())
    }
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return tensors
