"""`niaf-data inspect` and `niaf-data stats` on the CALVIN and LIBERO formats (fixtures written by the tests)."""

from __future__ import annotations

import json

import numpy as np
from data_factories import calvin_real_frame, libero_demo_arrays, write_calvin_split, write_libero_hdf5
from niaf_train.data.cli import main


def _run(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_libero_inspect_and_stats_through_the_cli(tmp_path, capsys):
    demos = {f"demo_{i}": libero_demo_arrays(12 + i, seed=i) for i in range(2)}
    folder = tmp_path / "libero_spatial"
    folder.mkdir()
    write_libero_hdf5(folder / "pick_up_the_bowl_demo.hdf5", demos, "pick up the bowl")
    cache = str(tmp_path / "cache")

    code, out, err = _run(capsys, ["inspect", "--format", "libero", str(folder), "--chunk-size", "5", "--cache-dir", cache])
    assert code == 0, err
    report = json.loads(out)
    assert (report["episodes"], report["frames"], report["samples"]) == (2, 25, 25)
    assert report["fps"] == 20.0
    assert report["features"]["action"] == {"dtype": "float32", "shape": [5, 7]}

    out_file = tmp_path / "stats.json"
    code, _, err = _run(capsys, ["stats", "--format", "libero", str(folder), "--out", str(out_file), "--cache-dir", cache])
    assert code == 0, err
    stats = json.loads(out_file.read_text())
    actions = np.concatenate([d["actions"] for d in demos.values()]).astype(np.float32)
    np.testing.assert_allclose(stats["action"]["min"], actions.min(0), rtol=1e-6)
    np.testing.assert_allclose(stats["action"]["max"], actions.max(0), rtol=1e-6)
    np.testing.assert_allclose(stats["action"]["mean"], actions.mean(0), rtol=1e-5, atol=1e-6)


def test_calvin_inspect_and_stats_through_the_cli(tmp_path, capsys, fixtures_dir):
    root = tmp_path / "task_D_D"
    write_calvin_split(
        root / "training", calvin_real_frame(fixtures_dir), segments=[(100, 129)],
        annotations=[(100, 120, "open the drawer", "open_drawer")],
    )
    cache = str(tmp_path / "cache")
    code, out, err = _run(capsys, ["inspect", "--format", "calvin", str(root), "--chunk-size", "10", "--cache-dir", cache])
    assert code == 0, err
    report = json.loads(out)
    assert report["episodes"] == 1 and report["fps"] == 30.0
    assert report["features"]["action"] == {"dtype": "float32", "shape": [10, 7]}
    assert set(report["features"]) >= {"observation.images.rgb_static", "observation.images.rgb_gripper"}

    out_file = tmp_path / "stats.json"
    code, _, err = _run(capsys, ["stats", "--format", "calvin", str(root), "--out", str(out_file), "--cache-dir", cache])
    assert code == 0, err
    stats = json.loads(out_file.read_text())
    # rel_actions of the annotated window's frames, read back from the files the fixture wrote
    rel = np.stack([np.load(root / "training" / f"episode_{i:07d}.npz")["rel_actions"] for i in range(100, 121)])
    np.testing.assert_allclose(stats["action"]["min"], rel.min(0).astype(np.float32), rtol=1e-6)
    np.testing.assert_allclose(stats["action"]["max"], rel.max(0).astype(np.float32), rtol=1e-6)
