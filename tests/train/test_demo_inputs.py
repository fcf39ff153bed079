"""The main job's statement of what its policy reads (issue 19: "the README says plainly which inputs the default
policy uses and what black frames do to it"; the main job prints the pixels policy's result next to its own)."""

from __future__ import annotations

import json

from niaf_train.demo import PIXELS_DOCUMENTED, input_summary
from niaf_train.training.arguments import load_config


def _loop(normal: float, black: float) -> dict:
    return {"NIAF @ 20 Hz (training rate)": {"mean_success": normal},
            "NIAF @ 80 Hz (4x)": {"mean_success": 0.5},
            "NIAF @ 20 Hz, black frames": {"mean_success": black},
            "scripted expert": {"mean_success": 1.0}}


def test_the_default_policy_is_named_privileged_and_points_to_the_documented_pixels_policy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no pixels run here
    lines = input_summary(load_config("default.yaml", []), _loop(0.96, 0.45))
    assert lines[0].startswith("inputs of this policy: Meta-World's 39-d privileged state (hand, object and goal")
    assert "corner2 at 32 px" in lines[0]
    assert lines[1] == "with every camera frame black: 45.0 % success (against 96.0 %)"
    assert "--config metaworld_pixels.yaml" in lines[2] and f"documented: {PIXELS_DOCUMENTED}" in lines[2]


def test_a_pixels_run_of_the_users_own_is_reported_instead(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / load_config("metaworld_pixels.yaml", []).training.output_dir
    run.mkdir(parents=True)
    (run / "demo_summary.json").write_text(json.dumps({"closed_loop": _loop(0.725, 0.1)}))
    line = input_summary(load_config("default.yaml", []), _loop(0.96, 0.45))[2]
    assert f"your run in {run.relative_to(tmp_path)}: 72.5 % mean at the training rate, 10.0 % with black frames" \
        in line
    (run / "demo_summary.json").write_text("{not json")  # unreadable: the documented result, and no crash
    assert "documented:" in input_summary(load_config("default.yaml", []), _loop(0.96, 0.45))[2]


def test_the_pixels_policy_says_the_goal_comes_from_its_cameras(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lines = input_summary(load_config("metaworld_pixels.yaml", []), _loop(0.7, 0.1))
    assert "4-d agent_pos (hand position and gripper only" in lines[0]
    assert "corner2, topview at 64 px (cropped to the workspace)" in lines[0]
    assert len(lines) == 2  # no pointer to itself


def test_the_documented_pixels_result_is_the_one_the_readme_shows():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    assert f"[documented: {PIXELS_DOCUMENTED}]" in readme  # the README's sample of the main job's output
