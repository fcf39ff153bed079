"""niaf-train end to end (shortened main job), configuration parsing and bad-input errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from niaf_train.training.arguments import ConfigError, build_config, load_config

pytest.importorskip("metaworld")

# A fast variant of the embedded default (train/configs/default.yaml): same data and pipeline, fewer steps.
SMALL = [
    "--data.metaworld_tasks", "reach-v3,push-v3", "--data.metaworld_episodes_per_task", "6",
    "--model.tiny_hidden_size", "32", "--model.siren_width", "32", "--model.modulation_groups", "8",
    "--training.per_device_batch_size", "16", "--training.report_to", "none", "--training.num_threads", "1",
]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("niaf_cache")


def test_metaworld_cache_folder_changes_only_for_settings_that_are_not_the_default():
    """The names below are those niaf 0.1 computed before camera views and instruction sets existed (commit
    e9efbc6): default settings keep their folder; LeRobot's task strings get a folder of their own."""
    from niaf_train.data.sources import metaworld_cache_dir
    from niaf_train.training.dataset import _metaworld_settings, metaworld_dataset_dir

    s = {"tasks": ["reach-v3", "push-v3"], "episodes": 30, "size": 32, "camera": "corner2", "stride": 4, "seed": 0,
         "noise": 0.0, "state": "full", "crop": None}
    name = lambda settings: metaworld_cache_dir(settings, "/c").name  # noqa: E731
    assert name(s) == name({**s, "view": "niaf", "instructions": "niaf"}) == "metaworld-79b840de8d6b"
    assert name({**s, "view": "lerobot", "instructions": "niaf"}) == "metaworld-f8559d9ef0a5"
    assert len({name(s), name({**s, "instructions": "lerobot"}), name({**s, "view": "lerobot"}),
                name({**s, "view": "lerobot", "instructions": "lerobot"})}) == 4
    cfg = build_config(None, ["--data.cache_dir", "/c"])  # niaf-train hands the option to the cache key
    settings = _metaworld_settings(cfg)
    assert settings["instructions"] == "niaf" and metaworld_dataset_dir(cfg) == metaworld_cache_dir(
        {k: v for k, v in settings.items() if k not in ("view", "instructions")}, "/c")
    lerobot = build_config(None, ["--data.cache_dir", "/c", "--data.metaworld_instructions", "lerobot"])
    assert metaworld_dataset_dir(lerobot) == metaworld_cache_dir({**settings, "instructions": "lerobot"}, "/c")


def test_config_keys_and_types(tmp_path):
    cfg = load_config("default.yaml", ["--output_dir", str(tmp_path / "o"), "--max_steps", "7",
                                       "--peft.method", "lora", "--data.metaworld_tasks", "reach-v3"])
    assert cfg.training.output_dir == str(tmp_path / "o") and cfg.training.max_steps == 7
    assert cfg.peft.method == "lora" and cfg.data.metaworld_tasks == ["reach-v3"]
    assert (cfg.training.adam_beta1, cfg.training.adam_beta2, cfg.training.weight_decay) == (0.9, 0.95, 0.0)
    with pytest.raises(ConfigError, match="unknown key `training.max_stepz`"):
        build_config(None, ["--training.max_stepz", "3"])
    with pytest.raises(ConfigError, match="unknown key `lerning_rate`"):
        build_config(None, ["--lerning_rate", "3"])
    with pytest.raises(ConfigError, match="training.max_steps` must be"):
        build_config(None, ["--max_steps", "three"])
    view = build_config(None, ["--data.metaworld_camera_view", "lerobot", "--data.metaworld_image_size", "128"])
    assert view.data.metaworld_camera_view == "lerobot"
    with pytest.raises(ConfigError, match=r"`data.metaworld_camera_view` must be one of \('niaf', 'lerobot'\)"):
        build_config(None, ["--data.metaworld_camera_view", "fisheye"])
    with pytest.raises(ConfigError, match="`data.metaworld_camera_view`: camera view 'lerobot' has the one camera"):
        build_config(None, ["--data.metaworld_camera_view", "lerobot", "--data.metaworld_camera", "corner2,topview"])
    words = build_config(None, ["--data.metaworld_instructions", "lerobot"])
    assert words.data.metaworld_instructions == "lerobot" and build_config(None, []).data.metaworld_instructions == "niaf"
    with pytest.raises(ConfigError, match=r"`data.metaworld_instructions` must be one of \('niaf', 'lerobot'\)"):
        build_config(None, ["--data.metaworld_instructions", "klingon"])
    with pytest.raises(ConfigError, match="`data.metaworld_instructions`: task 'fly-v3' has no LeRobot task string"):
        build_config(None, ["--data.metaworld_instructions", "lerobot", "--data.metaworld_tasks", "reach-v3,fly-v3"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  max_steps: 3\n  warmup_steps: 10\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown key `training.warmup_steps`"):
        load_config(str(bad), [])


def test_tri_stage_schedule():
    from niaf_train.training.loop import tri_stage_lambda

    f = tri_stage_lambda(100, 0.1, 0.2, 0.01, "tri_stage")
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(50) == 1.0 and f(79) == 1.0
    assert f(90) == pytest.approx(0.01**0.5) and f(100) == pytest.approx(0.01)


def test_output_dir_of_another_run_is_refused_untouched(tmp_path, cache_dir):
    from niaf_train.training.cli import main

    out = tmp_path / "run"
    out.mkdir()
    marker = out / "run_config.json"
    marker.write_text('{"other": "run"}')
    before = marker.stat().st_mtime_ns
    assert main(["--config", "default.yaml", "--output_dir", str(out), "--cache_dir", str(cache_dir)] + SMALL) == 2
    assert marker.read_text() == '{"other": "run"}' and marker.stat().st_mtime_ns == before
    assert sorted(p.name for p in out.iterdir()) == ["run_config.json"]


def test_action_dim_mismatch_is_refused(tmp_path, cache_dir):
    """A NIAF checkpoint with D=7 cannot be fine-tuned on the 4-D Meta-World actions."""
    from niaf_train.tiny import tiny_backbone_config
    from niaf_train.training.cli import main

    from modeling_niaf import NiafConfig, NiafForActionFunction

    ckpt = tmp_path / "d7"
    cfg = NiafConfig(backbone_config=tiny_backbone_config(), action_dim=7, chunk_size=8, control_hz=20.0,
                     siren_width=32, modulation_groups=8, normalization_mode="IDENTITY")
    NiafForActionFunction(cfg).save_pretrained(ckpt)
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="action_dim=7.*needs 4"):
        from niaf_train.training.loop import train

        train(load_config("default.yaml", ["--output_dir", str(out), "--cache_dir", str(cache_dir),
                                           "--model.backbone", str(ckpt), "--model.init_from_niaf", "true"] + SMALL))
    assert not (out / "final").exists() and not (out / "checkpoints").exists()
    assert main(["--config", "default.yaml", "--output_dir", str(tmp_path / "run2"), "--cache_dir", str(cache_dir),
                 "--model.backbone", str(ckpt), "--model.init_from_niaf", "true"] + SMALL) == 2


@pytest.mark.parametrize(("control_hz", "state_dim", "message"), [
    (10.0, 39, r"control_hz=10.0, the dataset/config needs 20.0 \(the data's fps"),
    (20.0, 4, "state_dim=4, the dataset/config needs 39"),
])
def test_continuing_a_checkpoint_at_another_rate_or_state_size_is_refused(tmp_path, cache_dir, control_hz, state_dim,
                                                                          message):
    """A 10 Hz checkpoint fine-tuned on 20 Hz data would keep control_hz 10 (times and velocities off by 2x)."""
    from niaf_train.tiny import tiny_backbone_config
    from niaf_train.training.loop import train

    from modeling_niaf import NiafConfig, NiafForActionFunction

    ckpt = tmp_path / "ckpt"
    cfg = NiafConfig(backbone_config=tiny_backbone_config(), action_dim=4, chunk_size=8, control_hz=control_hz,
                     siren_width=32, modulation_groups=8, use_state=True, state_dim=state_dim,
                     normalization_mode="IDENTITY")
    NiafForActionFunction(cfg).save_pretrained(ckpt)
    with pytest.raises(ConfigError, match=message):
        train(load_config("default.yaml", ["--output_dir", str(tmp_path / "run"), "--cache_dir", str(cache_dir),
                                           "--model.backbone", str(ckpt), "--model.init_from_niaf", "true"] + SMALL))


@pytest.mark.slow
def test_main_job_learns_and_reloads(tmp_path, cache_dir, capsys):
    """The README's first command, shortened: demos → fine-tune → Hub checkpoint → AutoModel → 4× queries →
    closed loop at the training rate and 4× it, next to the expert."""
    from niaf_train.demo import main

    out = tmp_path / "demo"
    rc = main(["--output_dir", str(out), "--cache_dir", str(cache_dir), "--max_steps", "150",
               "--learning_rate", "2e-3", "--save_steps", "0", "--eval_steps", "0", "--eval_episodes", "2"] + SMALL)
    assert rc == 0
    summary = json.loads((out / "demo_summary.json").read_text())
    m = summary["metrics"]
    # learning is visible: the held-out position error is well below always predicting the mean action
    assert m["position_mse"] < 0.75 * m["baseline_position_mse"], m
    assert np.isfinite(m["mean_squared_jerk"]) and m["sparc"] < 0
    assert summary["query"]["num_points"] == 4 * (8 - 1) + 1
    final = out / "final"
    config = json.loads((final / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_niaf.NiafForActionFunction"
    assert config["normalization_stats"]["action"]["q01"] and (final / "processor_config.json").is_file()
    card = (final / "README.md").read_text()
    assert "## Training" in card and "baseline_position_mse" in card and "reach-v3" in card
    assert json.loads((final / "metrics.json").read_text())["position_mse"] == pytest.approx(m["position_mse"])
    from huggingface_hub import ModelCard

    data = ModelCard.load(final / "README.md").data
    assert {r.metric_type: r.metric_value for r in data.eval_results}["position_mse"] == pytest.approx(m["position_mse"])
    assert data.pipeline_tag == "robotics" and data.base_model is None  # the tiny backbone is random
    assert str(tmp_path) not in card and str(cache_dir) not in card
    assert (out / "demo_trajectories.png").stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "mean-action baseline" in printed and "closed loop on held-out variations" in printed
    assert "inputs of this policy: Meta-World's 39-d privileged state" in printed  # what it reads, said plainly
    assert "with every camera frame black:" in printed and "--config metaworld_pixels.yaml" in printed
    loop = summary["closed_loop"]
    assert len(loop) == 4
    rates = sorted(r["settings"]["execute_hz"] for r in loop.values())
    assert rates == [20.0, 20.0, 80.0, 80.0]  # training rate, black frames, 4x, and the expert (every step)
    black = loop["NIAF @ 20 Hz, black frames"]
    assert black["settings"]["ablate"] == ["images"] and black["benchmark_seed"] == 1000
    assert "## Inputs the policy relies on (closed loop)" in (final / "README.md").read_text()
    expert = loop["scripted expert"]
    assert expert["tasks"]["reach-v3"]["success_rate"] == 1.0 and expert["benchmark_seed"] == 1000
    for folder in ("niaf_train_rate", "niaf_4x_rate"):
        results = json.loads((out / "closed_loop" / folder / "results.json").read_text())
        assert results["tasks"]["reach-v3"]["episodes"] == 2 and results["training_benchmark_seeds"] == [0]
        assert (out / "closed_loop" / folder / "videos" / "reach-v3.mp4").stat().st_size > 1000
    assert (out / "closed_loop_success.png").stat().st_size > 10_000
    assert (out / "executed_commands.png").stat().st_size > 10_000  # function vs held vs interpolated, 80 Hz
    from huggingface_hub import ModelCard

    index = ModelCard.load(final / "README.md").data.eval_results
    rates = {r.metric_name: r.metric_value for r in index if r.metric_type == "success_rate"}
    train_rate = loop["NIAF @ 20 Hz (training rate)"]["tasks"]["reach-v3"]["success_rate"]
    assert rates["success rate (reach-v3)"] == pytest.approx(train_rate)
    # the Meta-World demonstrations were cached: a second run would not regenerate them
    assert any((cache_dir / "metaworld").iterdir())
    assert os.environ.get("HF_HUB_OFFLINE") == "1"


def test_card_metadata_and_public_config_of_a_hub_dataset_run(tmp_path):
    from niaf_train.training.export import card_metadata, public_config

    cfg = build_config(None, ["--data.source", "lerobot", "--data.path", "someone/so101-pick@v2.0",
                              "--model.backbone", "google/paligemma-3b-pt-224", "--output_dir", str(tmp_path / "run"),
                              "--cache_dir", str(tmp_path / "cache")])
    meta = card_metadata(cfg, {"position_mse": 0.02, "baseline_position_mse": 0.08, "num_chunks": 64.0})
    assert meta["base_model"] == "google/paligemma-3b-pt-224" and meta["datasets"] == ["someone/so101-pick"]
    results = {(r.dataset_type, r.dataset_revision, r.metric_type): r.metric_value for r in meta["eval_results"]}
    assert results == {("someone/so101-pick", "v2.0", "position_mse"): 0.02,
                       ("someone/so101-pick", "v2.0", "baseline_position_mse"): 0.08}
    public = public_config(cfg)
    assert public["training"]["output_dir"] == "<local>/run" and public["data"]["cache_dir"] == "<local>/cache"
    assert public["data"]["path"] == "someone/so101-pick@v2.0"
    assert str(tmp_path) not in json.dumps(public)
    local = tmp_path / "my_data"
    local.mkdir()
    cfg = build_config(None, ["--data.source", "lerobot", "--data.path", str(local)])
    meta = card_metadata(cfg, {})
    assert meta == {"base_model": None, "datasets": None, "eval_results": None}
    assert public_config(cfg)["data"]["path"] == "<local>/my_data"
    # a NIAF run's card lists no comparison-head option; a comparison run's card does
    assert not {"action_head", "head_hidden_size", "flow_steps"} & set(public_config(cfg)["model"])
    flow = build_config(None, ["--data.source", "lerobot", "--data.path", str(local), "--model.action_head", "flow"])
    assert public_config(flow)["model"]["action_head"] == "flow" and public_config(flow)["model"]["flow_steps"] == 10


def test_help_shows_every_key_with_description_choices_and_the_value_in_force(capsys):
    from niaf_train.training.arguments import CHOICES, SECTIONS, _fields, field_docs
    from niaf_train.training.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help", "--max_steps", "7"])
    assert exit_info.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    in_force = load_config("default.yaml", ["--max_steps", "7"])
    plain = {s: cls() for s, cls in SECTIONS.items()}
    for section, cls in SECTIONS.items():
        docs = field_docs(cls)
        for name in _fields(section):
            assert docs.get(name), f"{section}.{name} has no description"
            i = next(i for i, line in enumerate(lines) if line.startswith(f"  --{section}.{name} "))
            value = getattr(getattr(in_force, section), name)
            shown = ",".join(map(str, value)) if isinstance(value, list) else ("null" if value is None else str(value))
            assert f"(default: {shown}" in lines[i], lines[i]
            assert ("without a config file" in lines[i]) == (value != getattr(plain[section], name)), lines[i]
            assert lines[i + 1].strip() == " ".join(docs[name].split())[: len(lines[i + 1].strip())]
    text = "\n".join(lines)
    assert "--training.max_steps int  (default: 7; without a config file: 300)" in text
    assert "--data.source str {" + ",".join(CHOICES["data.source"]) + "}" in text
    assert "--peft.method str {none,lora}  (default: none)" in text


@pytest.mark.slow  # end to end: niaf-train in subprocesses
def test_terminal_output_log_lines_parameter_counts_and_quiet_third_parties(tmp_path, cache_dir):
    """niaf-train as a user runs it: periodic lines with every term, on their own lines next to the bar."""
    import re
    import subprocess
    import sys

    from modeling_niaf import NiafForActionFunction

    out = tmp_path / "run"
    env = dict(os.environ, HF_HUB_OFFLINE="1", MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    cmd = [sys.executable, "-m", "niaf_train.training.cli", "--config", "default.yaml", "--output_dir", str(out),
           "--cache_dir", str(cache_dir), *SMALL, "--max_steps", "4", "--logging_steps", "2", "--eval_steps", "0",
           "--save_steps", "2", "--val_fraction", "0.2", "--model.loss_weight_jerk", "1e-7"]  # every term shows
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # what the terminal shows: the text after the last carriage return of each line
    shown = [line.rsplit("\r", 1)[-1] for line in proc.stderr.split("\n")]
    stamp = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ INFO niaf_train\.training\.loop: "
    steps = [line for line in shown if "| lr " in line]
    assert len(steps) == 2, proc.stderr[-3000:]
    number = r"[-+.e\d]+"
    for step, line in zip((2, 4), steps, strict=True):
        assert re.match(stamp + rf"step {step}/4 \| loss {number} \(pos {number}, jerk {number}\) \| lr {number} \| "
                        rf"grad_norm {number} \| {number} samples/s \| data {number} ms/step \(\d+%\)$", line), line
    history = [json.loads(r) for r in (out / "history.jsonl").read_text().splitlines()]
    logged = [r for r in history if "train/grad_norm" in r]
    assert [r["step"] for r in logged] == [2, 4]
    assert all(r["train/grad_norm"] > 0 and r["train/samples_per_second"] > 0 and 0 <= r["train/data_fraction"] < 1
               for r in logged)
    # parameter counts: the numbers of the model that was trained (full fine-tuning: all trainable)
    counts = [re.search(r"model: ([\d,]+) parameters, ([\d,]+) trainable \(100\.0%\)", line) for line in shown]
    total, trainable = next(m.groups() for m in counts if m)
    final = NiafForActionFunction.from_pretrained(out / "final")
    assert int(total.replace(",", "")) == int(trainable.replace(",", "")) == sum(p.numel() for p in final.parameters())
    cache_lines = [line for line in shown if "chunk cache " in line]
    assert len(cache_lines) == 1 and str(cache_dir / "chunks") in cache_lines[0]
    assert re.search(r"MB, corner2 \d+ image bytes per frame per camera \(png\)$", cache_lines[0]), cache_lines[0]
    # third-party INFO (PyOpenGL, Accelerate's checkpoint saving) stays out; our INFO lines are there
    assert not [line for line in shown if re.search(r" INFO (?!niaf_train|modeling_niaf)", line)], proc.stderr[-3000:]
    assert "OpenGL_accelerate" not in proc.stderr and "Saving current state" not in proc.stderr
    assert "Writing model shards" not in proc.stderr


def test_log_levels_from_the_environment(monkeypatch, capsys):
    import logging

    from niaf_train.console_logging import TqdmLoggingHandler, configure_logging
    from niaf_train.training.cli import main

    root = logging.getLogger()
    saved = (root.level, list(root.handlers), logging.getLogger("niaf_train").level)
    try:
        monkeypatch.setenv("NIAF_THIRD_PARTY_LOG_LEVEL", "info")
        monkeypatch.setenv("NIAF_LOG_LEVEL", "DEBUG")
        configure_logging()
        configure_logging()  # idempotent: one handler
        assert root.level == logging.INFO and logging.getLogger("niaf_train").level == logging.DEBUG
        assert sum(isinstance(h, TqdmLoggingHandler) for h in root.handlers) == 1
        monkeypatch.delenv("NIAF_THIRD_PARTY_LOG_LEVEL")
        monkeypatch.delenv("NIAF_LOG_LEVEL")
        configure_logging()
        assert root.level == logging.WARNING and logging.getLogger("niaf_train").level == logging.INFO
        monkeypatch.setenv("NIAF_THIRD_PARTY_LOG_LEVEL", "LOUD")
        assert main(["--max_steps", "1"]) == 2
        assert capsys.readouterr().err.strip() == (
            "niaf-train: error: NIAF_THIRD_PARTY_LOG_LEVEL='LOUD' is not a logging level; use DEBUG, INFO, WARNING "
            "or ERROR")
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
        logging.getLogger("niaf_train").setLevel(saved[2])


def test_an_error_mid_run_is_one_line_of_its_own_below_the_progress_bar(tmp_path, cache_dir, capsys, monkeypatch):
    from niaf_train.training import checkpointing
    from niaf_train.training.cli import main

    def refuse(*args, **kwargs):
        raise ConfigError("checkpoint refused (test)")

    monkeypatch.setattr(checkpointing, "commit", refuse)
    capsys.readouterr()
    code = main(["--config", "default.yaml", "--output_dir", str(tmp_path / "run"), "--cache_dir", str(cache_dir),
                 *SMALL, "--max_steps", "2", "--save_steps", "1", "--eval_steps", "0"])
    err = capsys.readouterr().err
    assert code == 2
    # what a terminal shows: each line after its last carriage return, cursor-movement escapes (tqdm moves up past
    # nested bars before it writes, depending on library versions) not being text
    import re

    shown = [re.sub(r"\x1b\[\d*[A-K]", "", line.rsplit("\r", 1)[-1]) for line in err.split("\n")]
    assert [line for line in shown if "error" in line][-1] == "niaf-train: error: checkpoint refused (test)", err[-1500:]
    assert not [line for line in shown if "niaf-train: error" in line and not line.startswith("niaf-train: error")]


def test_fixed_vision_positions_are_saved_untrained(tmp_path, cache_dir):
    """``model.tiny_vision_positions: sincos``: after training steps (Adam moves every trained weight by about
    the learning rate) the checkpoint's patch positions are still exactly the fixed table."""
    import torch
    from niaf_train.tiny import sincos_2d_positions
    from niaf_train.training.cli import main
    from safetensors.torch import load_file

    out = tmp_path / "run"
    assert main(["--config", "default.yaml", "--output_dir", str(out), "--cache_dir", str(cache_dir),
                 "--max_steps", "3", "--model.tiny_vision_positions", "sincos"] + SMALL) == 0
    weights = load_file(str(out / "final" / "model.safetensors"))
    (key,) = [k for k in weights if k.endswith("position_embedding.weight")]
    assert torch.equal(weights[key], sincos_2d_positions(4, 32))  # 32 px images in 8 px patches, hidden 32
