"""Checkpoints in the layout of earlier code, for tests that newer code still loads them.

``previous_checkpoints/<head>/`` holds, for NIAF (``niaf``) and each comparison head, what the code before
``NiafModel`` existed (commit 6e59daf) saved for the tiny model of ``tests/train/baselines/test_baselines.py``
(``_config(head)``, ``save_pretrained(folder, processor=_processor())``, transformers 5.25.0): its ``config.json``
as written, and ``weights.json``, the name → [shape..., dtype] of every tensor of its ``model.safetensors`` (read
back with ``safetensors.safe_open``). The weights themselves (~230 kB each) are not stored: `write_previous_checkpoint`
writes a ``model.safetensors`` with those names, shapes and dtypes and seeded random values.

The names under ``backbone.`` are transformers' (the VLM's own parameter names, which change between
transformers versions; a checkpoint is then refused, naming the keys, with any NIAF code). Under the transformers
version that saved the fixture they are used as recorded; under another one (the CI's floor run) they are the
names that version writes for the same backbone config, still under ``backbone.``. NIAF's own names (queries, state
projection, heads) are always the recorded ones.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch
import transformers
from safetensors import safe_open
from safetensors.torch import save_file

PREVIOUS_CHECKPOINTS = Path(__file__).resolve().parent / "previous_checkpoints"
PREVIOUS_HEADS = ("niaf", "waypoints", "bspline", "flow")

_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def recorded_weight_names(head: str) -> dict[str, tuple[list[int], str]]:
    """Tensor name → (shape, safetensors dtype) of the previous code's ``model.safetensors`` for ``head``."""
    manifest = json.loads((PREVIOUS_CHECKPOINTS / head / "weights.json").read_text(encoding="utf-8"))
    return {name: (list(entry[:-1]), entry[-1]) for name, entry in manifest.items()}


def saved_with_this_transformers(head: str) -> bool:
    """Whether the installed transformers is the version that saved the fixture of ``head``."""
    config = json.loads((PREVIOUS_CHECKPOINTS / head / "config.json").read_text(encoding="utf-8"))
    return config.get("transformers_version") == transformers.__version__


def _installed_backbone_names(head: str) -> dict[str, tuple[list[int], str]]:
    """``backbone.`` + the names the installed transformers saves for the fixture's backbone config."""
    from transformers import AutoModel

    from configuration_niaf import NiafConfig

    backbone = AutoModel.from_config(NiafConfig.from_pretrained(PREVIOUS_CHECKPOINTS / head).backbone_config)
    with tempfile.TemporaryDirectory() as folder:
        backbone.save_pretrained(folder)
        with safe_open(str(Path(folder) / "model.safetensors"), "pt") as weights:
            return {f"backbone.{k}": (list(weights.get_slice(k).get_shape()), weights.get_slice(k).get_dtype())
                    for k in weights.keys()}


def previous_weight_names(head: str) -> dict[str, tuple[list[int], str]]:
    """The names, shapes and dtypes a checkpoint of ``head`` saved by the previous code has under the installed
    transformers (see the module docstring)."""
    recorded = recorded_weight_names(head)
    if saved_with_this_transformers(head):
        return recorded
    own = {name: entry for name, entry in recorded.items() if not name.startswith("backbone.")}
    return {**_installed_backbone_names(head), **own}


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
