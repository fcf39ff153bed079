"""Two DDP processes (gloo on CPU) through `accelerate launch`: equal weights, disjoint samples."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

pytest.importorskip("metaworld")


@pytest.mark.slow  # end to end: niaf-train in subprocesses
def test_two_process_ddp(tmp_path):
    out, cache = tmp_path / "ddp", tmp_path / "cache"
    launcher = shutil.which("accelerate")
    cmd = [launcher] if launcher else [sys.executable, "-m", "accelerate.commands.launch"]
    if launcher:
        cmd.append("launch")
    # --multi_gpu selects the torchrun launcher; without CUDA, Accelerate runs DDP on CPU with gloo
    cmd += ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
            "--dynamo_backend", "no", "--main_process_port", "29517", "-m", "niaf_train.training.cli",
            "--config", "default.yaml", "--data.metaworld_tasks", "reach-v3", "--data.metaworld_episodes_per_task", "4",
            "--model.tiny_hidden_size", "32", "--model.siren_width", "32", "--model.modulation_groups", "8",
            "--training.per_device_batch_size", "4", "--training.report_to", "none", "--training.num_threads", "1",
            "--max_steps", "6", "--save_steps", "0", "--eval_steps", "0", "--learning_rate", "1e-3",
            "--training.record_sample_ids", "true", "--output_dir", str(out), "--cache_dir", str(cache)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-4000:]

    w0 = load_file(str(out / "weights_rank0.safetensors"))
    w1 = load_file(str(out / "weights_rank1.safetensors"))
    initial_differs = False
    for key in w0:
        assert torch.equal(w0[key], w1[key]), key  # DDP keeps the replicas bit-identical
    saved = load_file(str(out / "final" / "model.safetensors"))
    head = [k for k in w0 if k.startswith("siren.") or k.startswith("modulation_heads.")]
    assert head and all(torch.equal(saved[k].float(), w0[k]) for k in head)
    # training moved the zero-initialised ψ heads
    initial_differs = any(w0[k].abs().sum() > 0 for k in head if k.startswith("modulation_heads."))
    assert initial_differs

    s0 = [set(map(int, line.split())) for line in (out / "samples_rank0.txt").read_text().splitlines()]
    s1 = [set(map(int, line.split())) for line in (out / "samples_rank1.txt").read_text().splitlines()]
    assert len(s0) == len(s1) == 6
    for a, b in zip(s0, s1, strict=True):
        assert a and b and not (a & b)  # each step, the two processes trained on different samples
