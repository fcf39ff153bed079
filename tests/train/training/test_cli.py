"""niaf-train's command line: destructive options check everything first, a resume continues the same run, and
every refusal is one line with exit status 2 (moved from test_hostile_inputs.py). Each case builds its input in
code; the expected messages name what the input got wrong.
"""

from __future__ import annotations

import numpy as np
import pytest
from data_factories import calvin_training_split as _calvin_split
from data_factories import tiny_lerobot_dataset as _lerobot_dataset


def _train_args(data, out, cache, *extra):
    return [
        "--config", "default.yaml", "--data.source", "lerobot", "--data.path", str(data), "--cache_dir", str(cache),
        "--model.tiny_hidden_size", "32", "--model.siren_width", "32", "--model.modulation_groups", "8",
        "--model.chunk_size", "4", "--training.per_device_batch_size", "4", "--training.report_to", "none",
        "--training.num_threads", "1", "--max_steps", "2", "--save_steps", "1", "--eval_steps", "0",
        "--logging_steps", "1", "--data.val_fraction", "0.25", "--output_dir", str(out), *extra,
    ]  # fmt: skip


def _niaf_train(capsys, *args):
    from niaf_train.training.cli import main

    capsys.readouterr()
    code = main(list(args))
    err = capsys.readouterr().err
    return code, err


def _error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("niaf-train: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    return lines[0]


def test_overwrite_output_dir_checks_everything_first_and_deletes_only_a_run(tmp_path, capsys):
    data, cache, out = _lerobot_dataset(tmp_path / "ds"), tmp_path / "cache", tmp_path / "run"
    assert _niaf_train(capsys, *_train_args(data, out, cache))[0] == 0
    finished = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert (
        finished == ["checkpoint-000001", "checkpoint-000002"]
        and (out / "final" / "model.safetensors").is_file()
    )

    # a typo in the data path: refused before anything of the finished run is touched
    code, err = _niaf_train(
        capsys, *_train_args(tmp_path / "dss", out, cache, "--overwrite_output_dir", "true")
    )
    assert code == 2 and "dss" in _error_line(err)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == finished and (out / "final").is_dir()

    # a folder holding something a run does not write is not deleted
    (out / "notes.txt").write_text("mine")
    code, err = _niaf_train(capsys, *_train_args(data, out, cache, "--overwrite_output_dir", "true"))
    assert code == 2 and "notes.txt" in _error_line(err) and (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()

    # nor one that contains the dataset (or the chunk cache)
    inner = _lerobot_dataset(out / "data")
    code, err = _niaf_train(capsys, *_train_args(inner, out, cache, "--overwrite_output_dir", "true"))
    assert code == 2 and "contains" in _error_line(err) and (inner / "meta" / "info.json").is_file()
    code, err = _niaf_train(capsys, *_train_args(data, out, out / "cache", "--overwrite_output_dir", "true"))
    assert code == 2 and "contains" in _error_line(err)
    shutil_rmtree(out / "data")

    # a real run is replaced once everything is checked: its old checkpoints are gone
    code, err = _niaf_train(
        capsys, *_train_args(data, out, cache, "--overwrite_output_dir", "true", "--max_steps", "1")
    )
    assert code == 0, err[-2000:]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-000001"]


def shutil_rmtree(path):
    import shutil

    shutil.rmtree(path)


def test_resume_refuses_another_data_or_sample_stream(tmp_path, capsys):
    import shutil

    data, cache, out = _lerobot_dataset(tmp_path / "ds"), tmp_path / "cache", tmp_path / "run"
    assert _niaf_train(capsys, *_train_args(data, out, cache, "--max_steps", "1"))[0] == 0
    for flag, value in (("--seed", "1"), ("--training.per_device_batch_size", "2")):
        code, err = _niaf_train(capsys, *_train_args(data, out, cache, "--resume", "true", flag, value))
        assert code == 2 and flag.split(".")[-1].lstrip("-") in _error_line(err) and "sample stream" in err
    # the dataset at the same path changed (one more episode): refused, naming the fingerprint file
    shutil.rmtree(data)
    _lerobot_dataset(data, seed=4)
    code, err = _niaf_train(capsys, *_train_args(data, out, cache, "--resume", "true"))
    assert code == 2 and "the training data changed" in _error_line(err) and "run_fingerprint.json" in err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-000001"]  # untouched


def test_resume_of_a_run_saved_before_an_option_existed(tmp_path, capsys):
    """A run_config.json without a key a newer niaf-train added resumes when the option keeps its default; a
    changed value of that option is still refused by name."""
    import json

    data, cache, out = _lerobot_dataset(tmp_path / "ds"), tmp_path / "cache", tmp_path / "run"
    assert _niaf_train(capsys, *_train_args(data, out, cache, "--max_steps", "1"))[0] == 0
    run_config = out / "run_config.json"
    saved = json.loads(run_config.read_text())
    for key in ("action_head", "head_hidden_size", "bspline_control_points", "waypoint_loss", "flow_steps"):
        del saved["model"][key]
    run_config.write_text(json.dumps(saved))
    code, err = _niaf_train(capsys, *_train_args(data, out, cache, "--resume", "true", "--model.action_head", "bspline"))
    assert code == 2 and "action_head" in _error_line(err) and "differ" in err
    code, err = _niaf_train(capsys, *_train_args(data, out, cache, "--resume", "true"))
    assert code == 0, err
    assert (out / "checkpoints" / "checkpoint-000002").is_dir()


def test_resume_checks_the_checkpoint_up_front(tmp_path, capsys):
    data, cache, out = _lerobot_dataset(tmp_path / "ds"), tmp_path / "cache", tmp_path / "run"
    assert _niaf_train(capsys, *_train_args(data, out, cache))[0] == 0
    state = out / "checkpoints" / "checkpoint-000002" / "training_state"
    optimizer = state / "optimizer.bin"
    optimizer.write_bytes(optimizer.read_bytes()[: optimizer.stat().st_size // 2])
    code, err = _niaf_train(capsys, *_train_args(data, out, cache, "--resume", "true", "--max_steps", "3"))
    assert code == 2 and "optimizer.bin is truncated" in _error_line(err)
    (state / "random_states_0.pkl").unlink()
    code, err = _niaf_train(capsys, *_train_args(data, out, cache, "--resume", "true", "--max_steps", "3"))
    assert code == 2 and "random_states_0.pkl is missing" in _error_line(err)


def test_run_killed_in_its_first_checkpoint_can_resume(tmp_path, capsys):
    import json

    from niaf_train.training.arguments import load_config

    data, cache, out = _lerobot_dataset(tmp_path / "ds"), tmp_path / "cache", tmp_path / "run"
    # what a SIGKILL during the first checkpoint write leaves: the run's config and a temporary folder
    cfg = load_config("default.yaml", _train_args(data, out, cache)[2:])
    (out / "checkpoints" / ".tmp-checkpoint-000001" / "training_state").mkdir(parents=True)
    (out / "run_config.json").write_text(json.dumps(cfg.to_dict()))
    code, err = _niaf_train(capsys, *_train_args(data, out, cache))
    assert code == 2 and "--resume starts it again from step 0" in _error_line(err)
    code, err = _niaf_train(capsys, *_train_args(data, out, cache, "--resume", "true"))
    assert code == 0, err[-2000:]
    assert (out / "final" / "model.safetensors").is_file()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "checkpoint-000001",
        "checkpoint-000002",
    ]


def test_two_runs_on_one_folder_and_unwritable_disks_are_refused(tmp_path, capsys, monkeypatch):
    import errno
    from collections import namedtuple

    from niaf_train.training import run_folder

    data, cache, out = _lerobot_dataset(tmp_path / "ds"), tmp_path / "cache", tmp_path / "run"
    holder = run_folder.RunLock(out).acquire()  # another run holds the folder
    try:
        code, err = _niaf_train(capsys, *_train_args(data, out, cache))
        assert code == 2 and "in use by another niaf-train run" in _error_line(err)
        assert not (out / "checkpoints").exists()
    finally:
        holder.release()
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(run_folder.shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 1000, 1000))
    code, err = _niaf_train(capsys, *_train_args(data, out, cache))
    assert code == 2 and "GiB free, a run needs about" in _error_line(err)
    monkeypatch.undo()

    def read_only(path, mode="r", *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(run_folder, "open", read_only, raising=False)
    code, err = _niaf_train(capsys, *_train_args(data, out, cache))
    assert code == 2 and "cannot write .tmp-write-probe (Read-only file system)" in _error_line(err)
    monkeypatch.undo()

    # the disk fills up during a checkpoint write: the file and the cause, no traceback
    from niaf_train.training import checkpointing

    def full_disk(output_dir, step, *args, **kwargs):
        raise OSError(
            errno.ENOSPC, "No space left on device", str(checkpointing.temporary_dir(output_dir, step))
        )

    monkeypatch.setattr(checkpointing, "commit", full_disk)
    code, err = _niaf_train(capsys, *_train_args(data, out, cache, "--overwrite_output_dir", "true"))
    assert code == 1 and ".tmp-checkpoint-000001: No space left on device" in _error_line(err)


@pytest.mark.parametrize("key", ["--learning_rate", "--training.warmup_ratio", "--training.final_lr_scale"])
def test_non_finite_learning_rates_and_schedules_are_config_errors(tmp_path, capsys, key):
    data = _lerobot_dataset(tmp_path / "ds")
    for value in ("nan", "inf", "-inf"):
        code, err = _niaf_train(capsys, *_train_args(data, tmp_path / "run", tmp_path / "cache", key, value))
        assert (
            code == 2
            and "must be a finite number" in _error_line(err)
            and key.split(".")[-1].lstrip("-") in err
        )
    assert not (tmp_path / "run").exists()


def test_cli_refusals_are_one_line_with_exit_status_2(tmp_path, fixtures_dir, capsys):
    import pickle

    from niaf_train.data.cli import main as niaf_data
    from numpy.lib import format as npy_format

    split = _calvin_split(tmp_path, fixtures_dir)
    x: list = []
    for _ in range(64):
        x = [x, x]
    with open(split / "lang_annotations" / "auto_lang_ann.npy", "wb") as fh:
        npy_format.write_array_header_1_0(fh, {"descr": "|O", "fortran_order": False, "shape": ()})
        fh.write(pickle.dumps(np.array({"language": {"ann": x}}, dtype=object)))
    capsys.readouterr()
    assert niaf_data(["inspect", "--format", "calvin", str(split)]) == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1
        and "auto_lang_ann.npy: the pickled data expands" in err
        and "Traceback" not in err
    )

    data = _lerobot_dataset(tmp_path / "ds")
    code, err = _niaf_train(
        capsys, *_train_args(data, tmp_path / "run", tmp_path / "cache", "--siren_omega0", "1e300")
    )
    assert code == 2 and "model: NiafConfig: `siren_omega0` must be <= 1000" in _error_line(err)
    code, err = _niaf_train(
        capsys, *_train_args(tmp_path, tmp_path / "run2", tmp_path / "cache", "--data.source", "calvin")
    )
    assert code == 2 and "auto_lang_ann.npy: the pickled data expands" in _error_line(err)

