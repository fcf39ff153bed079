"""The niaf-data command: inspect / stats / metaworld."""

from __future__ import annotations

import json

import numpy as np
import pytest
from data_factories import calvin_training_split as _calvin_split
from data_factories import random_lerobot_episodes, write_lerobot_v3_fixture
from data_factories import tiny_lerobot_dataset as _lerobot_dataset
from niaf_train.data.cli import main


def _run(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_inspect_lerobot_prints_counts_features_and_statistics(tmp_path, capsys):
    src = random_lerobot_episodes(n=3, lengths=[5, 7, 6], velocity=True, seed=11)
    root = write_lerobot_v3_fixture(tmp_path / "ds", src, fps=30, velocity=True)
    code, out, err = _run(capsys, ["inspect", "--format", "lerobot", str(root), "--chunk-size", "4",
                                   "--cache-dir", str(tmp_path / "c")])
    assert code == 0, err
    report = json.loads(out)
    assert (report["episodes"], report["frames"], report["samples"], report["skipped_episodes"]) == (3, 18, 18, 0)
    assert report["fps"] == 30.0 and report["has_velocity"] is True
    assert report["features"]["action"] == {"dtype": "float32", "shape": [4, 6]}
    assert report["features"]["observation.images.top"] == {"dtype": "image", "shape": [12, 10, 3]}
    assert report["features"]["observation.state"]["shape"] == [6]
    actions = np.concatenate([e["action"] for e in src]).astype(np.float64)
    np.testing.assert_allclose(report["statistics"]["action"]["q99"], np.quantile(actions, 0.99, axis=0), rtol=1e-6)
    vel = np.concatenate([e["velocity"] for e in src]).astype(np.float64)
    np.testing.assert_allclose(report["statistics"]["observation.velocity"]["mean"], vel.mean(0), rtol=1e-5)


def test_inspect_bad_dataset_exits_nonzero_with_a_named_error(tmp_path, capsys):
    src = random_lerobot_episodes(n=2, seed=12)
    src[1]["state"][3, 1] = np.inf
    root = write_lerobot_v3_fixture(tmp_path / "bad", src)
    code, out, err = _run(capsys, ["inspect", "--format", "lerobot", str(root), "--cache-dir", str(tmp_path / "c")])
    assert code == 2 and out == ""
    assert "file-000.parquet: episode 1: key 'states'" in err and "non-finite" in err
    code, out, _ = _run(capsys, ["inspect", "--format", "lerobot", str(root), "--skip-invalid",
                                 "--cache-dir", str(tmp_path / "c")])
    report = json.loads(out)
    assert code == 0 and report["episodes"] == 1 and report["skipped"][0]["episode_id"] == "1"
    code, _, err = _run(capsys, ["inspect", "--format", "lerobot", str(tmp_path / "missing")])
    assert code == 2 and "no such file or folder" in err
    code, _, err = _run(capsys, ["inspect", "--format", "lerobot", str(tmp_path)])
    assert code == 2 and "meta/info.json" in err


def test_inspect_libero_lerobot_uses_20_hz(tmp_path, capsys):
    src = random_lerobot_episodes(n=1, d=7, s=8, lengths=[6], image_keys=("observation.images.image",), seed=13)
    root = write_lerobot_v3_fixture(tmp_path / "lib", src, fps=10, image_keys=("observation.images.image",))
    code, out, err = _run(capsys, ["inspect", "--format", "libero-lerobot", str(root), "--stride", "2",
                                   "--cache-dir", str(tmp_path / "c")])
    assert code == 0, err
    report = json.loads(out)
    assert report["source_fps"] == 20.0 and report["fps"] == 10.0 and report["samples"] == 3


def test_stats_writes_and_refuses_to_overwrite(tmp_path, capsys):
    src = random_lerobot_episodes(n=2, seed=14)
    root = write_lerobot_v3_fixture(tmp_path / "ds", src)
    out_file = root / "meta" / "stats.json"
    code, out, err = _run(capsys, ["stats", "--format", "lerobot", str(root), "--cache-dir", str(tmp_path / "c")])
    assert code == 0, err
    stats = json.loads(out_file.read_text())
    states = np.concatenate([e["state"] for e in src]).astype(np.float64)
    np.testing.assert_allclose(stats["observation.state"]["min"], states.min(0), rtol=1e-6)
    np.testing.assert_allclose(stats["observation.state"]["q01"], np.quantile(states, 0.01, axis=0), rtol=1e-6)
    assert stats["action"]["count"] == [15]
    code, _, err = _run(capsys, ["stats", "--format", "lerobot", str(root), "--cache-dir", str(tmp_path / "c")])
    assert code == 2 and "--overwrite" in err
    code, _, _ = _run(capsys, ["stats", "--format", "lerobot", str(root), "--overwrite",
                               "--cache-dir", str(tmp_path / "c")])
    assert code == 0


def _hand_deltas(src, chunk_size, indices):
    """Every real chunk point's delta a_i(t+k) - state_s(t), built from the source episodes by hand."""
    rows = []
    for e in src:
        a, st = e["action"].astype(np.float64), e["state"].astype(np.float64)
        for t in range(len(a)):
            for k in range(chunk_size):
                if t + k >= len(a):
                    break  # padded past the episode end: not a training target
                rows.append([a[t + k, i] - (st[t, j] if j is not None else 0.0) for i, j in enumerate(indices)])
    return np.array(rows)


def test_relative_statistics_are_those_of_the_deltas(tmp_path, capsys):
    src = random_lerobot_episodes(n=2, lengths=[6, 8], d=3, s=4, seed=15)
    root = write_lerobot_v3_fixture(tmp_path / "ds", src)
    indices = [2, 0, None]
    hand = _hand_deltas(src, 4, indices)
    cache = ["--cache-dir", str(tmp_path / "c"), "--chunk-size", "4"]
    code, out, err = _run(capsys, ["inspect", "--format", "lerobot", str(root), *cache,
                                   "--relative-action-state-indices", "2, 0,null"])
    assert code == 0, err
    report = json.loads(out)
    assert report["relative_action_state_indices"] == indices
    action = report["statistics"]["action"]
    assert action["count"] == [len(hand)]  # 6·4 - 6 + 8·4 - 6 real chunk points
    np.testing.assert_allclose(action["mean"], hand.mean(0), rtol=1e-6)
    np.testing.assert_allclose(action["q01"], np.quantile(hand, 0.01, axis=0), rtol=1e-6)
    np.testing.assert_allclose(action["q99"], np.quantile(hand, 0.99, axis=0), rtol=1e-6)
    states = np.concatenate([e["state"] for e in src]).astype(np.float64)
    np.testing.assert_allclose(report["statistics"]["observation.state"]["mean"], states.mean(0), rtol=1e-6)

    # stats: written only to an explicit --out, never over the dataset's own stats.json
    code, _, err = _run(capsys, ["stats", "--format", "lerobot", str(root), *cache,
                                 "--relative-action-state-indices", "2,0,null"])
    assert code == 2 and "--relative-action-state-indices writes statistics of delta actions" in err
    assert not (root / "meta" / "stats.json").exists()
    out_file = tmp_path / "delta_stats.json"
    code, out, err = _run(capsys, ["stats", "--format", "lerobot", str(root), *cache, "--out", str(out_file),
                                   "--relative-action-state-indices", "2,0,null"])
    assert code == 0, err
    assert json.loads(out)["frames"] == 14
    np.testing.assert_allclose(json.loads(out_file.read_text())["action"]["max"], hand.max(0), rtol=1e-6)

    # bad lists name the flag and what was expected
    for text, message in (("2,x,null", "expected comma-separated state indices or null"),
                          ("2,0", "has 2 entries but there are 3 action dims"),
                          ("2,4,null", "`--relative-action-state-indices[1]` = 4 is not a state index in [0, 4)"),
                          ("null,null,null", "has no int entry")):
        code, out, err = _run(capsys, ["inspect", "--format", "lerobot", str(root), *cache,
                                       "--relative-action-state-indices", text])
        assert code == 2 and out == "" and message in err, (text, err)


def test_metaworld_command_state_only(tmp_path, capsys):
    pytest.importorskip("metaworld")
    out_dir = tmp_path / "mw"
    code, out, err = _run(capsys, ["metaworld", "--tasks", "reach-v3", "--episodes", "1", "--out", str(out_dir),
                                   "--cameras", "--stride", "4", "--quiet"])
    assert code == 0, err
    report = json.loads(out)
    assert report["fps"] == 20.0 and report["succeeded"] == {"reach-v3": 1}
    info = json.loads((out_dir / "meta" / "info.json").read_text())
    assert info["fps"] == 20 and info["robot_type"] == "sawyer" and info["total_frames"] == report["steps"]["reach-v3"]
    code, _, err = _run(capsys, ["metaworld", "--tasks", "reach-v3", "--episodes", "1", "--out", str(out_dir)])
    assert code == 2 and "not empty" in err


def test_metaworld_command_lerobot_camera_view(tmp_path, capsys):
    """--camera-view lerobot is recorded in info.json (niaf-eval reads it from there); cameras it cannot show are
    refused in one line, before anything is generated."""
    pytest.importorskip("metaworld")
    out_dir = tmp_path / "mw"
    code, out, err = _run(capsys, ["metaworld", "--tasks", "reach-v3", "--episodes", "1", "--out", str(out_dir),
                                   "--camera-view", "lerobot", "--image-size", "16", "--stride", "20",
                                   "--state", "agent_pos", "--quiet"])
    assert code == 0, err
    info = json.loads((out_dir / "meta" / "info.json").read_text())
    assert info["metaworld"]["camera_view"] == "lerobot" and info["metaworld"]["state"] == "agent_pos"
    assert info["features"]["observation.images.corner2"]["shape"][:2] == [16, 16]
    for extra, message in ((["--cameras", "topview"], "--camera-view lerobot: camera view 'lerobot' has the one "
                                                      "camera 'corner2'"),
                           (["--crop", "0.1", "0.1", "0.5", "0.5"], "takes no crop"),
                           (["--image-size", "640"], "image size must be in [1, 480]")):
        code, out, err = _run(capsys, ["metaworld", "--tasks", "reach-v3", "--episodes", "1", "--camera-view",
                                       "lerobot", "--out", str(tmp_path / "refused"), *extra])
        assert code == 2 and out == "" and message in err and err.count("\n") == 1, err
        assert not (tmp_path / "refused").exists()


def test_metaworld_command_lerobot_instructions(tmp_path, capsys):
    """--instructions lerobot writes LeRobot's task strings as the episodes' instructions (read back from the
    written dataset; the strings are those of lerobot 0.6.1's metaworld_config.json) and records the choice in
    info.json; the default records nothing; a bad value, or a task without a LeRobot string, exits 2 in one line."""
    pytest.importorskip("metaworld")
    from niaf_train.data.lerobot_v3 import iter_lerobot_episodes

    out_dir = tmp_path / "mw"
    code, out, err = _run(capsys, ["metaworld", "--tasks", "reach-v3", "push-v3", "--episodes", "1", "--cameras",
                                   "--stride", "20", "--instructions", "lerobot", "--out", str(out_dir), "--quiet"])
    assert code == 0, err
    assert [e.instruction for e in iter_lerobot_episodes(out_dir)] == ["Reach a goal position",
                                                                      "Push the puck to a goal"]
    assert json.loads((out_dir / "meta" / "info.json").read_text())["metaworld"]["instructions"] == "lerobot"
    code, out, err = _run(capsys, ["metaworld", "--tasks", "reach-v3", "--episodes", "1", "--cameras", "--stride",
                                   "20", "--out", str(tmp_path / "default"), "--quiet"])
    assert code == 0, err
    assert "instructions" not in json.loads((tmp_path / "default" / "meta" / "info.json").read_text())["metaworld"]
    assert [e.instruction for e in iter_lerobot_episodes(tmp_path / "default")] == ["reach the red goal point"]
    with pytest.raises(SystemExit) as exit_:
        main(["metaworld", "--tasks", "reach-v3", "--instructions", "klingon", "--out", str(tmp_path / "refused")])
    assert exit_.value.code == 2 and "--instructions: invalid choice: 'klingon'" in capsys.readouterr().err
    code, out, err = _run(capsys, ["metaworld", "--tasks", "fly-v3", "--instructions", "lerobot", "--out",
                                   str(tmp_path / "refused")])
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert "--instructions lerobot: task 'fly-v3' has no LeRobot task string" in err
    assert not (tmp_path / "refused").exists()


def _prefill_hub_cache(hub_cache, repo_id: str, folder, revision: str = "main") -> str:
    """Lay ``folder`` out as huggingface_hub's cache holds a downloaded dataset repo (refs/<revision> → snapshot)."""
    import shutil

    commit = "89abcdef0123456789abcdef0123456789abcdef"
    repo = hub_cache / ("datasets--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / revision).write_text(commit)
    shutil.copytree(folder, repo / "snapshots" / commit)
    return str(repo / "snapshots" / commit)


def test_one_chunk_cache_for_inspect_and_train_with_its_size(tmp_path, capsys):
    """niaf-data inspect builds the cache; niaf-train's loader finds and reuses the very same folder."""
    from niaf_train.training.arguments import build_config
    from niaf_train.training.dataset import load_chunks

    src = random_lerobot_episodes(n=3, lengths=[9, 8, 10], seed=21)
    root = write_lerobot_v3_fixture(tmp_path / "ds", src, fps=20)
    cache = tmp_path / "niaf_cache"
    code, out, err = _run(capsys, ["inspect", "--format", "lerobot", str(root), "--chunk-size", "5",
                                   "--cache-dir", str(cache)])
    assert code == 0, err
    report = json.loads(out)["cache"]
    built = sorted(p.name for p in (cache / "chunks").iterdir() if p.is_dir())
    assert len(built) == 1 and report["folder"] == str(cache / "chunks" / built[0])
    assert report["bytes"] == sum(f.stat().st_size for f in (cache / "chunks" / built[0]).glob("*.arrow"))
    assert report["image_format"] == "png"
    # per frame and camera: the PNG bytes of each sample's image (27 samples, one camera), from the Arrow table
    import datasets

    ds = datasets.Dataset.from_file(str(cache / "chunks" / built[0] / "data.arrow"))
    png = sum(len(row["bytes"]) for row in ds.with_format("arrow")["observation.images.top"].to_pylist())
    assert report["image_bytes_per_frame_per_camera"]["top"] == pytest.approx(
        ds.data.column("observation.images.top").nbytes / len(ds))
    assert png / len(ds) <= report["image_bytes_per_frame_per_camera"]["top"] < png / len(ds) + 64
    cfg = build_config(None, ["--data.source", "lerobot", "--data.path", str(root), "--data.cache_dir", str(cache),
                              "--model.chunk_size", "5"])
    train_ds = load_chunks(cfg)
    assert train_ds.cache_files[0]["filename"] == str(cache / "chunks" / built[0] / "data.arrow")
    assert sorted(p.name for p in (cache / "chunks").iterdir() if p.is_dir()) == built
    assert sorted(p.name for p in cache.iterdir()) == ["chunks"]


def test_hub_dataset_id_from_a_prefilled_cache_offline(tmp_path, capsys, monkeypatch):
    from huggingface_hub import constants
    from niaf_train.data.hub_datasets import parse_hub_dataset_id
    from niaf_train.training.arguments import ConfigError, build_config
    from niaf_train.training.dataset import load_chunks

    assert parse_hub_dataset_id("someone/so101-pick") == ("someone/so101-pick", None)
    assert parse_hub_dataset_id("someone/so101-pick@v2.0") == ("someone/so101-pick", "v2.0")
    assert parse_hub_dataset_id("data/a/b") is None and parse_hub_dataset_id("./x/y") is None
    src = random_lerobot_episodes(n=2, lengths=[7, 6], seed=22)
    local = write_lerobot_v3_fixture(tmp_path / "ds", src, fps=10)
    hub_cache = tmp_path / "hf_home" / "hub"
    snapshot = _prefill_hub_cache(hub_cache, "someone/tiny-robot", local, revision="v1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # "someone/tiny-robot" is not a local folder here
    cache = ["--cache-dir", str(tmp_path / "c"), "--chunk-size", "3"]
    code, out, err = _run(capsys, ["inspect", "--format", "lerobot", "someone/tiny-robot@v1", *cache])
    assert code == 0, err
    report = json.loads(out)
    assert report["path"] == "someone/tiny-robot@v1" and (report["episodes"], report["frames"]) == (2, 13)
    # the same rows as the local copy
    code, out, _ = _run(capsys, ["inspect", "--format", "lerobot", snapshot, *cache])
    assert json.loads(out)["statistics"] == report["statistics"]
    # not in the cache (another revision / another id): one line naming the id and what to do, exit 2
    code, out, err = _run(capsys, ["inspect", "--format", "lerobot", "someone/tiny-robot", *cache])
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "someone/tiny-robot: not a local folder, and as a Hub dataset id someone/tiny-robot: offline" in err
    assert "not in the Hub cache" in err and "hf download someone/tiny-robot --repo-type dataset" in err
    code, _, err = _run(capsys, ["stats", "--format", "lerobot", "someone/tiny-robot@v1", *cache])
    assert code == 2 and "pass --out FILE" in err
    # niaf-train's data.path takes the same ids
    cfg = build_config(None, ["--data.source", "lerobot", "--data.path", "someone/tiny-robot@v1",
                              "--data.cache_dir", str(tmp_path / "c"), "--model.chunk_size", "3"])
    assert len(load_chunks(cfg)) == 13
    with pytest.raises(ConfigError, match="data.path someone/other: not a local folder"):
        load_chunks(build_config(None, ["--data.source", "lerobot", "--data.path", "someone/other"]))


@pytest.mark.parametrize("revision", ["../../../outside", "v1/../../../../outside", ".hidden", "x.lock",
                                      "main~1", "a//b"])
def test_hub_revision_that_is_no_ref_name_is_refused_before_the_cache_is_read(tmp_path, capsys, monkeypatch, revision):
    """A revision is a commit hash or a git ref name, checked before huggingface_hub joins it into cache paths;
    niaf-train then leaves no output folder (not even its lock file)."""
    from huggingface_hub import constants
    from niaf_train.training.arguments import ConfigError, build_config
    from niaf_train.training.loop import train

    src = random_lerobot_episodes(n=2, lengths=[7, 6], seed=23)
    local = write_lerobot_v3_fixture(tmp_path / "ds", src, fps=10)
    hub_cache = tmp_path / "hf_home" / "hub"
    _prefill_hub_cache(hub_cache, "someone/tiny-robot", local, revision="v1")
    # what the traversal would reach: a ref-like file outside the cache naming a dataset outside it
    (tmp_path / "outside").write_text(str(local))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(capsys, ["inspect", "--format", "lerobot", f"someone/tiny-robot@{revision}",
                                   "--cache-dir", str(tmp_path / "c"), "--chunk-size", "3"])
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert f"revision {revision!r} is not a commit hash or a git branch/tag name" in err
    run_dir = tmp_path / "runs" / "new"
    cfg = build_config(None, ["--data.source", "lerobot", "--data.path", f"someone/tiny-robot@{revision}",
                              "--data.cache_dir", str(tmp_path / "c"), "--model.chunk_size", "3",
                              "--training.output_dir", str(run_dir)])
    with pytest.raises(ConfigError, match="is not a commit hash or a git branch/tag name"):
        train(cfg)
    assert not (tmp_path / "runs").exists()


def test_hub_ref_that_points_outside_the_cache_is_refused(tmp_path, capsys, monkeypatch):
    """A tampered refs/<branch> naming a folder outside the cache's snapshots is refused, not read."""
    from huggingface_hub import constants

    src = random_lerobot_episodes(n=2, lengths=[7, 6], seed=24)
    local = write_lerobot_v3_fixture(tmp_path / "ds", src, fps=10)
    hub_cache = tmp_path / "hf_home" / "hub"
    _prefill_hub_cache(hub_cache, "someone/tiny-robot", local, revision="main")
    ref = hub_cache / "datasets--someone--tiny-robot" / "refs" / "main"
    ref.write_text("../../../../ds")  # snapshots/<this> is the dataset outside the cache
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(capsys, ["inspect", "--format", "lerobot", "someone/tiny-robot",
                                   "--cache-dir", str(tmp_path / "c"), "--chunk-size", "3"])
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert "refusing to read outside the Hub cache" in err or "from the cache failed" in err


# ------------------------------------------------------------------------------------------------------------
# Destructive options and bad counts (moved from test_hostile_inputs.py)
# ------------------------------------------------------------------------------------------------------------
def test_data_cli_stats_overwrite_merges_and_keeps_a_backup(tmp_path, capsys):
    import json

    from niaf_train.data.cli import main

    root = _lerobot_dataset(tmp_path / "ds")
    stats_path = root / "meta" / "stats.json"
    original = {
        "observation.images.top": {"mean": [[[0.5]], [[0.5]], [[0.5]]], "std": [[[0.2]], [[0.2]], [[0.2]]]},
        "action": {"mean": [9.0, 9.0, 9.0, 9.0]},
    }
    stats_path.write_text(json.dumps(original))
    assert main(["stats", "--format", "lerobot", str(root), "--chunk-size", "4"]) == 2  # no --overwrite
    assert json.loads(stats_path.read_text()) == original
    assert main(["stats", "--format", "lerobot", str(root), "--chunk-size", "4", "--overwrite"]) == 0
    result = json.loads(capsys.readouterr().out)
    merged = json.loads(stats_path.read_text())
    assert merged["observation.images.top"] == original["observation.images.top"]  # kept, not dropped
    assert merged["action"]["mean"] != [9.0] * 4 and "q01" in merged["action"]  # recomputed
    assert json.loads((root / "meta" / "stats.json.bak").read_text()) == original
    assert result["backup"].endswith("stats.json.bak") and result["kept"] == ["observation.images.top"]


def test_negative_max_episodes_is_refused(tmp_path, fixtures_dir, capsys):
    from data_factories import libero_demo_arrays, write_libero_hdf5
    from niaf_train.data.calvin import iter_calvin_episodes
    from niaf_train.data.cli import main
    from niaf_train.data.libero import iter_libero_episodes

    split = _calvin_split(tmp_path, fixtures_dir)
    assert len(list(iter_calvin_episodes(split, max_episodes=1))) == 1
    with pytest.raises(ValueError, match=r"max_episodes=-1: expected a positive int"):
        list(iter_calvin_episodes(split, max_episodes=-1))
    demos = {f"demo_{i}": libero_demo_arrays(6, seed=i, hw=(8, 8)) for i in range(2)}
    suite = tmp_path / "suite"
    suite.mkdir()
    write_libero_hdf5(suite / "open_the_drawer_demo.hdf5", demos, "open the drawer")
    assert len(list(iter_libero_episodes(suite, max_demos_per_file=1))) == 1
    with pytest.raises(ValueError, match=r"max_demos_per_file=-1: expected a positive int"):
        list(iter_libero_episodes(suite, max_demos_per_file=-1))
    with pytest.raises(SystemExit) as exit_:
        main(["inspect", "--format", "calvin", str(split), "--max-episodes", "-1"])
    assert exit_.value.code == 2 and "expected a positive integer, got -1" in capsys.readouterr().err

