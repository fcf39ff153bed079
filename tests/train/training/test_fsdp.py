"""FSDP (FSDP2 over gloo, 2 CPU processes) through `accelerate launch` with the shipped test config: the loss
trajectory matches one process at the same global batch, the final checkpoint is one complete Hub folder that a
fresh interpreter loads, and a run resumed from a mid-run sharded checkpoint ends where the uninterrupted one did."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytest.importorskip("metaworld")
accelerate = pytest.importorskip("accelerate")
from packaging.version import Version  # noqa: E402

if Version(accelerate.__version__) < Version("1.6"):  # FSDP2 in Accelerate; the floor 0.34 only has FSDP1 (CUDA)
    pytest.skip(f"FSDP2 needs accelerate >= 1.6 (found {accelerate.__version__})", allow_module_level=True)

REPO = Path(__file__).resolve().parents[3]
FSDP_CONFIG = REPO / "train" / "configs" / "accelerate" / "fsdp_cpu_test.yaml"
STEPS = 6
COMMON = ["--config", "default.yaml", "--data.metaworld_tasks", "reach-v3", "--data.metaworld_episodes_per_task", "4",
          "--model.tiny_hidden_size", "32", "--model.siren_width", "32", "--model.modulation_groups", "8",
          "--training.report_to", "none", "--training.num_threads", "1", "--max_steps", str(STEPS),
          "--save_steps", "3", "--eval_steps", "0", "--logging_steps", "1", "--learning_rate", "1e-3"]
ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def _launch(out: Path, cache: Path, port: int, *extra: str) -> None:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(FSDP_CONFIG),
           "--main_process_port", str(port), "-m", "niaf_train.training.cli", *COMMON,
           "--training.per_device_batch_size", "4", "--output_dir", str(out), "--cache_dir", str(cache), *extra]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "FSDP2 on 2 CPU processes" in proc.stderr  # sharded, not silently DDP


def _losses(out: Path) -> list[float]:
    rows = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    return [r["train/loss"] for r in rows if "train/loss" in r]


@pytest.mark.slow  # four niaf-train runs in subprocesses, about 2 minutes on 2 cores
def test_fsdp_two_cpu_processes(tmp_path):
    cache = tmp_path / "cache"
    single, sharded = tmp_path / "single", tmp_path / "fsdp"
    # one process with 2 accumulated micro-batches of 4 = 2 processes x 4: Accelerate gives each process alternate
    # batches of 4 from the same sampler, so each optimiser step sees the same chunks, and each loss (a masked mean
    # per micro-batch) is weighted the same way
    proc = subprocess.run([sys.executable, "-m", "niaf_train.training.cli", *COMMON,
                           "--training.per_device_batch_size", "4", "--training.gradient_accumulation_steps", "2",
                           "--output_dir", str(single),
                           "--cache_dir", str(cache)], env=ENV, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-4000:]
    _launch(sharded, cache, 29541)

    # the loss trajectory matches (the sums are reduced in another order)
    a, b = _losses(single), _losses(sharded)
    assert len(a) == len(b) == STEPS
    assert a[-1] < a[0] and b[-1] < b[0]
    assert b == pytest.approx(a, rel=1e-3, abs=1e-5), (a, b)

    # one complete Hub folder with full (gathered) weights, close to the single-process weights
    final = sharded / "final"
    w_fsdp, w_single = load_file(str(final / "model.safetensors")), load_file(str(single / "final" / "model.safetensors"))
    assert w_fsdp.keys() == w_single.keys()
    for key in w_fsdp:
        assert w_fsdp[key].shape == w_single[key].shape, key
        assert torch.allclose(w_fsdp[key].float(), w_single[key].float(), atol=1e-4, rtol=1e-3), key

    # it loads in a fresh interpreter through remote code, nothing of this process imported
    script = (
        "import torch\nfrom transformers import AutoModel, AutoProcessor\n"
        f"m = AutoModel.from_pretrained({str(final)!r}, trust_remote_code=True)\n"
        f"p = AutoProcessor.from_pretrained({str(final)!r}, trust_remote_code=True)\n"
        "assert 'transformers_modules' in type(m).__module__\n"
        "print(sum(x.numel() for x in m.parameters()))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env={**ENV, "PYTHONPATH": ""},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert int(proc.stdout.split()[-1]) == sum(v.numel() for v in w_fsdp.values())

    # resume: drop the last checkpoint and the final folder, resume from the sharded step-3 state
    resumed = tmp_path / "resumed"
    shutil.copytree(sharded, resumed)
    shutil.rmtree(resumed / "final")
    shutil.rmtree(resumed / "checkpoints" / f"checkpoint-{STEPS:06d}")
    (resumed / "history.jsonl").unlink()
    _launch(resumed, cache, 29542, "--resume")
    assert _losses(resumed)[-3:] == pytest.approx(b[-3:], rel=1e-5, abs=1e-6)
    w_resumed = load_file(str(resumed / "final" / "model.safetensors"))
    for key in w_fsdp:
        assert torch.allclose(w_resumed[key], w_fsdp[key], atol=1e-6), key
