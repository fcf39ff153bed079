"""benchmarks/bench_data_scale.py in its reduced mode (a few thousand frames, in-process), so that it does not rot."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_data_scale", ROOT / "benchmarks" / "bench_data_scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reduced_mode_runs_and_writes_json(tmp_path, capsys):
    bench = _bench()
    result = bench.main([str(tmp_path / "out"), "--reduced"])
    saved = json.loads((tmp_path / "out" / "bench_data_scale.json").read_text())
    assert saved == json.loads(json.dumps(result))
    frames = saved["config"]["frames"]
    rows = {r["phase"]: r for r in saved["rows"]}
    assert list(rows) == ["generate", "build", "cached", "map/0", "map/2", "stream/0", "stream/2"]
    assert rows["build"]["samples"] == rows["cached"]["samples"] == frames  # stride 1: one sample per frame
    assert rows["generate"]["disk_bytes"] > 0 and rows["build"]["disk_bytes"] > 0
    for name in ("map/0", "map/2", "stream/0", "stream/2"):
        assert rows[name]["samples"] >= saved["config"]["read_samples"] and rows[name]["samples_per_s"] > 0
    for row in rows.values():
        assert row["peak_pss_bytes"] >= row["peak_anon_bytes"] > 0 and row["maxrss_bytes"] > 0
    printed = capsys.readouterr().out
    assert "samples/s" in printed and "peak anon MiB" in printed


def test_episode_lengths_sum_to_the_frames():
    bench = _bench()
    for frames in (2, 3, 199, 1000, 12345):
        lengths = bench.episode_lengths(frames, 100)
        assert sum(lengths) == frames and min(lengths) >= 2


def test_refuses_a_non_empty_folder(tmp_path):
    bench = _bench()
    (tmp_path / "keep.txt").write_text("user data")
    with pytest.raises(SystemExit, match="not an empty folder"):
        bench.main([str(tmp_path), "--reduced"])
    assert (tmp_path / "keep.txt").read_text() == "user data"
