"""A run killed with SIGKILL mid-way and resumed ends where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytest.importorskip("metaworld")

ARGS = [
    "--config", "default.yaml", "--data.metaworld_tasks", "reach-v3", "--data.metaworld_episodes_per_task", "4",
    "--model.tiny_hidden_size", "32", "--model.siren_width", "32", "--model.modulation_groups", "8",
    "--training.per_device_batch_size", "8", "--training.report_to", "none", "--training.num_threads", "1",
    "--max_steps", "30", "--save_steps", "5", "--eval_steps", "0", "--logging_steps", "1", "--learning_rate", "1e-3",
]


def _run(out: Path, cache: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, HF_HUB_OFFLINE="1", MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    cmd = [sys.executable, "-m", "niaf_train.training.cli", *ARGS, "--output_dir", str(out), "--cache_dir", str(cache), *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _history(out: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


@pytest.mark.slow  # end to end: niaf-train in subprocesses
def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    cache = tmp_path / "cache"
    ref = _run(tmp_path / "ref", cache)
    _, err = ref.communicate(timeout=400)
    assert ref.returncode == 0, err[-3000:]

    killed = _run(tmp_path / "run", cache)
    ckpts = tmp_path / "run" / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and not (ckpts / "checkpoint-000010" / "trainer_state.json").exists():
        time.sleep(0.05)
    assert killed.poll() is None, "the run finished before it could be killed"
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)
    assert not (tmp_path / "run" / "final").exists()
    complete = sorted(p.name for p in ckpts.iterdir() if not p.name.startswith(".tmp-"))
    assert complete and all((ckpts / c / "model" / "model.safetensors").is_file() for c in complete)

    # a plain restart refuses the folder; --resume continues it
    again = _run(tmp_path / "run", cache)
    _, err = again.communicate(timeout=120)
    assert again.returncode == 2 and "--resume" in err
    resumed = _run(tmp_path / "run", cache, "--resume")
    _, err = resumed.communicate(timeout=400)
    assert resumed.returncode == 0, err[-3000:]
    assert not any(p.name.startswith(".tmp-") for p in ckpts.iterdir())

    ref_loss, run_loss = _history(tmp_path / "ref"), _history(tmp_path / "run")
    assert sorted(run_loss) == list(range(1, 31))
    for step in range(1, 31):
        assert run_loss[step] == pytest.approx(ref_loss[step], rel=1e-4, abs=1e-6), step
    a = load_file(str(tmp_path / "ref" / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "run" / "final" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("text", ["{", "null", "[1, 2]", '{"model": 3}', "\xff"])
def test_garbage_run_config_on_resume_is_one_line(tmp_path, text):
    from niaf_train.training.arguments import ConfigError, build_config
    from niaf_train.training.run_folder import check_output_dir

    out = tmp_path / "run"
    out.mkdir()
    (out / "run_config.json").write_bytes(text.encode("latin-1"))
    cfg = build_config(None, ["--training.output_dir", str(out), "--training.resume", "true"])
    with pytest.raises(ConfigError) as err:
        check_output_dir(cfg)
    message = str(err.value)
    assert message.startswith(f"--resume: {out / 'run_config.json'}") and "\n" not in message, message


def test_disk_full_while_writing_a_checkpoint_is_one_line_exit_1(tmp_path, capsys, monkeypatch):
    """torch.save reports a full disk as a RuntimeError from inline_container.cc: niaf-train names the
    checkpoint folder and the cause in one line and exits 1."""
    import torch
    from niaf_train.training.cli import main

    def full_disk(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 512 vs 384")

    monkeypatch.setattr(torch, "save", full_disk)
    out = tmp_path / "run"
    code = main(["--output_dir", str(out), "--max_steps", "2", "--data.metaworld_tasks", "reach-v3",
                 "--data.metaworld_episodes_per_task", "2", "--model.tiny_hidden_size", "32",
                 "--model.siren_width", "32", "--model.modulation_groups", "8", "--training.per_device_batch_size",
                 "4", "--training.report_to", "none", "--training.num_threads", "1", "--training.save_steps", "1",
                 "--training.eval_steps", "0", "--data.cache_dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len([line for line in err if "error" in line]) == 1, err
    line = [line for line in err if "niaf-train: error" in line][0]
    assert "checkpoint" in line and "no space left on the device" in line and "inline_container" not in line
