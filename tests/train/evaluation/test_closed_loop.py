"""Closed-loop evaluation (niaf-eval): observation parity with the demonstrations, held-out seeds, query times,
results file, video, figure, bad arguments."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
pytest.importorskip("metaworld")

from niaf_train.data.metaworld import STATE_DIM, STATE_NAMES, generate_episodes  # noqa: E402
from niaf_train.evaluation import (  # noqa: E402
    EvalSettings,
    WaypointFunction,
    first_observation,
    wilson_interval,
)
from niaf_train.evaluation.closed_loop import EvalError, resolve_seed  # noqa: E402

TASK = "reach-v3"


# ---------------------------------------------------------------------------------------------------------------
# Pure pieces
# ---------------------------------------------------------------------------------------------------------------
def test_wilson_interval_against_closed_forms():
    z = 1.959963984540054
    # k = 0: [0, z²/(n + z²)]; k = n: [n/(n + z²), 1] (the interval's known closed forms at the edges)
    assert wilson_interval(0, 10) == pytest.approx((0.0, z * z / (10 + z * z)))
    assert wilson_interval(50, 50) == pytest.approx((50 / (50 + z * z), 1.0))
    # general case, by the textbook formula written out independently
    k, n = 37, 50
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert wilson_interval(k, n) == pytest.approx((centre - half, centre + half))
    lo, hi = wilson_interval(13, 50)
    lo2, hi2 = wilson_interval(37, 50)
    assert lo == pytest.approx(1 - hi2) and hi == pytest.approx(1 - lo2)  # symmetric in k ↔ n - k
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(51, 50)


def test_waypoint_function_holds_and_interpolates():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(5, 4))
    dt = 0.05
    times = np.linspace(0, 0.2, 37)
    zoh = WaypointFunction(w, dt, "zoh")(times=times, derivatives=3)
    lin = WaypointFunction(w, dt, "linear")(times=times, derivatives=3)
    k = np.minimum(np.floor(times / dt + 1e-9).astype(int), 4)
    np.testing.assert_allclose(zoh.position, w[k])
    assert np.all(zoh.velocity == 0)
    for d in range(4):
        np.testing.assert_allclose(lin.position[:, d], np.interp(times, np.arange(5) * dt, w[:, d]), atol=1e-12)
    inside = np.minimum(k, 3)
    np.testing.assert_allclose(lin.velocity, (w[inside + 1] - w[inside]) / dt)
    assert WaypointFunction(w, dt, "zoh").chunk_duration == pytest.approx(0.2)


def test_state_names_describe_metaworld_observation():
    assert STATE_DIM == 39 and len(set(STATE_NAMES)) == 39
    assert STATE_NAMES[:4] == ["hand.x", "hand.y", "hand.z", "gripper.open"]
    assert STATE_NAMES[-3:] == ["goal.x", "goal.y", "goal.z"]


def test_held_out_seed_resolution():
    record = {"benchmark_seeds": [1000]}
    assert resolve_seed(None, None) == 1000
    assert resolve_seed(None, record) == 1001  # the default skips a seed used in training
    assert resolve_seed(7, record) == 7
    with pytest.raises(EvalError, match="--seed 1000: the training demonstrations"):
        resolve_seed(1000, record)
    assert resolve_seed(None, {"benchmark_seeds": [1000, 1001, 1003]}) == 1002


def test_train_data_record_errors_name_the_argument_and_file(tmp_path):
    from niaf_train.evaluation import training_record

    with pytest.raises(EvalError, match=r"--train-data .*: not a LeRobot dataset"):
        training_record(train_data=tmp_path)
    (tmp_path / "meta").mkdir()
    info = tmp_path / "meta" / "info.json"
    info.write_text("{not json")
    with pytest.raises(EvalError, match=r"--train-data .*info\.json: not valid JSON"):
        training_record(train_data=tmp_path)
    info.write_text('{"fps": 20}')
    with pytest.raises(EvalError, match="no 'metaworld' record"):
        training_record(train_data=tmp_path)
    info.write_text('{"metaworld": {"benchmark_seeds": [3, 4]}}')
    assert training_record(train_data=tmp_path) == {"benchmark_seeds": [3, 4]}


def test_settings_take_the_camera_view_of_the_training_record(tmp_path):
    """A dataset written with --camera-view lerobot is evaluated in that view; a record without one (earlier
    versions) in the default view."""
    from niaf_train.evaluation.cli import build_parser, settings_from_args

    (tmp_path / "meta").mkdir()
    info = tmp_path / "meta" / "info.json"
    argv = ["--train-data", str(tmp_path), "--policy", "expert", "--output-dir", str(tmp_path / "out")]
    record = {"benchmark_seeds": [0], "tasks": [TASK], "cameras": ["corner2"], "image_size": 64, "state": "agent_pos"}
    info.write_text(json.dumps({"metaworld": {**record, "camera_view": "lerobot"}}))
    settings = settings_from_args(build_parser().parse_args(argv))
    assert (settings.camera_view, settings.image_size, settings.state) == ("lerobot", 64, "agent_pos")
    info.write_text(json.dumps({"metaworld": record}))
    assert settings_from_args(build_parser().parse_args(argv)).camera_view == "niaf"


def test_niaf_eval_gives_the_policy_the_instructions_of_the_training_record(tmp_path):
    """A dataset written with --instructions lerobot is evaluated with LeRobot's task strings: the observation the
    policy is handed carries "Reach a goal position" (lerobot 0.6.1's string for reach-v3); a record without the
    key (earlier versions) gives niaf's sentence."""
    from niaf_train.evaluation.cli import build_parser, settings_from_args
    from niaf_train.evaluation.closed_loop import evaluate
    from niaf_train.evaluation.policies import ExpertPolicy

    class Recorder(ExpertPolicy):
        observation_due = True  # asks for the rendered observation at every step, as a chunk policy when it plans
        seen: list[str] = []

        def select_action(self, observation):
            self.seen.append(observation["task"])
            return super().select_action(observation)

    (tmp_path / "meta").mkdir()
    info = tmp_path / "meta" / "info.json"
    argv = ["--train-data", str(tmp_path), "--policy", "expert", "--output-dir", str(tmp_path / "out"),
            "--cameras", "--max-steps", "3", "--episodes", "1", "--no-video"]
    record = {"benchmark_seeds": [0], "tasks": [TASK], "cameras": [], "state": "agent_pos"}
    for extra, expected in (({"instructions": "lerobot"}, "Reach a goal position"), ({}, "reach the red goal point")):
        info.write_text(json.dumps({"metaworld": {**record, **extra}}))
        settings = settings_from_args(build_parser().parse_args(argv))
        assert settings.instructions == extra.get("instructions", "niaf")
        policy = Recorder()
        policy.seen = []
        evaluate(policy, settings, 1000, progress=False)
        assert policy.seen == [expected] * 3


def test_settings_refuse_rates_that_do_not_divide_80hz():
    with pytest.raises(EvalError, match="--execute-hz must divide"):
        EvalSettings(tasks=[TASK], execute_hz=30).check()
    with pytest.raises(EvalError, match="--execution"):
        EvalSettings(tasks=[TASK], execution="spline").check()
    assert EvalSettings(tasks=[TASK], execute_hz=20).query_period == 4


# ---------------------------------------------------------------------------------------------------------------
# Observation parity: evaluation starts from exactly what the demonstration recorder records
# ---------------------------------------------------------------------------------------------------------------
def test_first_eval_observation_equals_first_recorded_frame():
    seed, variation = 17, 3
    eps = list(generate_episodes([TASK], variation + 1, cameras=("corner2",), image_size=32, seed=seed,
                                 progress=False))
    recorded = eps[variation]
    assert recorded.metadata["variation"] == variation
    obs = first_observation(TASK, seed, variation, ["corner2"], 32)
    np.testing.assert_array_equal(obs["observation.images.corner2"], recorded.images["corner2"][0])
    np.testing.assert_array_equal(obs["observation.state"], recorded.states[0])
    assert obs["task"] == recorded.instruction
    assert obs["observation.state"].shape == (STATE_DIM,)
    # the goal is in the state (what the policy needs and a 32 px image barely shows)
    assert np.linalg.norm(obs["observation.state"][36:39]) > 0


# ---------------------------------------------------------------------------------------------------------------
# A tiny trained checkpoint, end to end
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from niaf_train.training.arguments import load_config
    from niaf_train.training.loop import train

    root = tmp_path_factory.mktemp("closed_loop")
    cfg = load_config("default.yaml", [
        "--output_dir", str(root / "run"), "--max_steps", "4", "--data.metaworld_tasks", TASK,
        "--data.metaworld_episodes_per_task", "3", "--model.tiny_hidden_size", "32", "--model.siren_width", "32",
        "--model.modulation_groups", "8", "--training.per_device_batch_size", "8", "--training.report_to", "none",
        "--training.num_threads", "1", "--training.save_steps", "0", "--training.eval_steps", "0",
        "--data.cache_dir", str(root / "cache"),
    ])
    return Path(train(cfg)["final_dir"])


def test_checkpoint_records_its_training_variations(checkpoint):
    record = json.loads((checkpoint / "training_data.json").read_text())
    assert record["benchmark_seeds"] == [0] and record["tasks"] == [TASK]
    assert record["variations"][TASK] == {"0": [0, 1, 2]} and record["stride"] * record["chunk_stride"] == 4 and record["cameras"] == ["corner2"]


def test_execute_hz_queries_the_function_at_the_requested_times(checkpoint):
    """Executed actions equal the policy's function evaluated (by the torch model, independently of the stream)
    at the last command time, held for 80/execute_hz steps."""
    import torch
    from niaf_train.data.metaworld import MetaWorldScene
    from niaf_train.evaluation.closed_loop import load_policy, run_episode

    settings = EvalSettings(tasks=[TASK], execute_hz=40, replan_every=6, max_steps=20, video=False)
    policy = load_policy(checkpoint, settings)
    seen: list[tuple[int, dict]] = []
    original = policy.plan

    def spy(observations):
        seen.append((len(executed_steps), observations[0]))
        return original(observations)

    executed_steps: list[int] = []
    policy.plan = spy
    with MetaWorldScene(TASK, 1000, ["corner2"], 32) as scene:
        result = run_episode(scene, 0, policy, settings, frame_hook=lambda _o, _s: executed_steps.append(1))
    assert len(result.actions) == result.steps == 20
    model, processor = policy.model, policy.processor
    for n in range(20):
        q = n - n % 2  # the last command read (every 2nd step at 40 Hz)
        plan_step, obs = [(s, o) for s, o in seen if s <= q][-1]
        t = (q - plan_step) / 80.0
        batch = processor(images=[[obs["observation.images.corner2"]]], text=[obs["task"]],
                          state=torch.as_tensor(obs["observation.state"][None]))
        want = model.generate_actions(**batch, times=[t], derivatives=0).position[0, 0].double().numpy()
        np.testing.assert_allclose(result.actions[n], np.clip(want, -1, 1), atol=2e-5)
    assert [s for s, _ in seen] == [0, 6, 12, 18]


def _runner_before(scene, variation, policy, settings, query_log):
    """The episode loop as run_episode ran it before the policies had select_action (its code at the split): the
    reference for the LeRobot-shaped interface. Returns (actions [steps, 4], success, steps, mean switch jump)."""
    import warnings

    from niaf_train.evaluation.closed_loop import ExpertPolicy

    from modeling_niaf.runtime import ActionStream

    obs = scene.reset(variation)
    dt = 1.0 / 80.0
    executed = []
    success, steps = False, settings.max_steps
    expert = scene.expert() if isinstance(policy, ExpertPolicy) else None
    stream = ActionStream(np.zeros(4), 0.0, blend_duration=settings.blend_ms * 1e-3,
                          max_latency=max(1.0, 2 * settings.latency_ms * 1e-3), switch=settings.switch)
    pending, current_fn, held, switch_jumps = [], None, np.zeros(4), []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for step in range(settings.max_steps):
            t = step * dt
            if expert is not None:
                held = np.clip(np.asarray(expert.get_action(obs), dtype=np.float64), -1.0, 1.0)
            else:
                if step % settings.replan_every == 0:
                    pending.append((step + settings.latency_steps, t, policy.plan([scene.observe(obs)])[0]))
                ready = [p for p in pending if p[0] <= step]
                pending = [p for p in pending if p[0] > step]
                for _, t_obs, fn in ready:
                    had_plan = stream.num_accepted > 0
                    if stream.submit(fn, observation_time=t_obs, now=t):
                        current_fn = (fn, t_obs)
                        if had_plan:
                            after = fn(times=np.array([t - t_obs]), derivatives=3).position[0]
                            switch_jumps.append(float(np.linalg.norm((after - held)[:3])))
                if step % settings.query_period == 0:
                    held = np.clip(stream.command(t).position, -1.0, 1.0)
                    query_log.append((t, current_fn))
            executed.append(held.copy())
            obs, success, truncated = scene.step(held)
            if success or truncated:
                steps = step + 1
                break
    return np.asarray(executed), bool(success), steps, float(np.mean(switch_jumps)) if switch_jumps else None


@pytest.mark.parametrize("policy_kind, overrides", [
    ("niaf", {"execution": "function", "execute_hz": 40, "replan_every": 6}),
    ("niaf", {"execution": "zoh", "replan_every": 8, "latency_ms": 30.0, "blend_ms": 50.0, "switch": "crossfade"}),
    ("niaf", {"execution": "linear", "execute_hz": 20, "replan_every": 5, "latency_ms": 12.5}),
    ("random", {"execution": "linear", "execute_hz": 40, "replan_every": 7, "latency_ms": 20.0}),
    ("expert", {}),
])
def test_select_action_reproduces_the_runner_of_before(checkpoint, policy_kind, overrides):
    """run_episode through reset() / select_action() executes exactly the commands (bit for bit), success, steps,
    switch jumps and command reads of the loop it had before, on the tiny checkpoint and the baselines."""
    from niaf_train.data.metaworld import MetaWorldScene
    from niaf_train.evaluation.closed_loop import ExpertPolicy, RandomPolicy, load_policy, run_episode

    settings = EvalSettings(tasks=[TASK], max_steps=30, video=False, **overrides)
    settings.check()

    def make():
        if policy_kind == "niaf":
            return load_policy(checkpoint, settings)
        return RandomPolicy(8, 20.0, settings.execution, seed=7) if policy_kind == "random" else ExpertPolicy()

    before_log: list = []
    with MetaWorldScene(TASK, 1000, ["corner2"], 32) as scene:
        actions, success, steps, jump = _runner_before(scene, 3, make(), settings, before_log)
    now_log: list = []
    with MetaWorldScene(TASK, 1000, ["corner2"], 32) as scene:
        result = run_episode(scene, 3, make(), settings, query_log=now_log)
    np.testing.assert_array_equal(result.actions, actions)
    assert (result.success, result.steps, result.switch_action_jump) == (success, steps, jump)
    assert [(t, fn and fn[1]) for t, fn in now_log] == [(t, fn and fn[1]) for t, fn in before_log]
    assert len(actions) == steps and (policy_kind == "expert" or len(now_log) > 0)
    if policy_kind != "expert":
        assert jump is not None  # the case switched plans at least once


def test_policies_step_like_lerobot_policies():
    """reset() with no argument uses the defaults (replan every 8 steps, a command read every step); a step
    that plans needs its observation, the others do not; stepping before reset() is refused."""
    from niaf_train.evaluation.closed_loop import ExpertPolicy, RandomPolicy

    policy = RandomPolicy(4, 20.0, "zoh", seed=0)
    with pytest.raises(RuntimeError, match=r"RandomPolicy.select_action: call reset\(\)"):
        policy.select_action({})
    policy.reset()
    assert policy.observation_due
    with pytest.raises(ValueError, match="step 0 plans a new action function; it needs the observation"):
        policy.select_action(None)
    waypoints = np.random.default_rng(0).uniform(-1, 1, (4, 4))  # what the policy draws first
    commands = [policy.select_action({} if policy.observation_due else None) for _ in range(8)]
    # zero-order hold of 20 Hz waypoints read at 80 Hz: each waypoint for 4 steps
    np.testing.assert_array_equal(np.stack(commands), np.repeat(waypoints[:2], 4, axis=0))
    assert policy.queried and policy.current_fn[1] == 0.0 and policy.observation_due
    with pytest.raises(ValueError, match="pass scene="):
        ExpertPolicy().reset()


def test_niaf_eval_writes_results_video_and_figure(checkpoint, tmp_path, capsys):
    import av
    from niaf_train.evaluation.cli import main

    out = tmp_path / "eval"
    rc = main(["--checkpoint", str(checkpoint), "--episodes", "2", "--max-steps", "12", "--execute-hz", "80",
               "--output-dir", str(out)])
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    task = results["tasks"][TASK]
    assert results["benchmark_seed"] == 1000 and results["training_benchmark_seeds"] == [0]
    assert task["episodes"] == 2 and task["variations"] == [0, 1] and 0 <= task["success_rate"] <= 1
    lo, hi = task["wilson95"]
    assert (lo, hi) == pytest.approx(wilson_interval(task["successes"], 2))
    assert results["settings"]["execute_hz"] == 80 and results["checkpoint"] == str(checkpoint)
    assert np.isfinite(task["mean_squared_jerk"]) and np.isfinite(task["sparc"])
    with av.open(str(out / "videos" / f"{TASK}.mp4")) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    first_len = 12 if not task["success_per_episode"][0] else None
    if first_len is not None:
        assert len(frames) == first_len
    assert frames[0].shape[0] > 0 and frames[0].shape[1] == 2 * frames[0].shape[0]
    assert (out / "success.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert TASK in printed and "mean" in printed
    # the same folder again is refused (nothing is overwritten)
    assert main(["--checkpoint", str(checkpoint), "--episodes", "1", "--output-dir", str(out)]) == 2
    assert "already holds results.json, success.png, videos/reach-v3.mp4" in capsys.readouterr().err


def test_niaf_eval_refuses_training_seed_unknown_task_and_wrong_layout(checkpoint, tmp_path, capsys):
    from niaf_train.evaluation.cli import main

    assert main(["--checkpoint", str(checkpoint), "--seed", "0", "--output-dir", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("niaf-eval: error: --seed 0") and "\n" not in err
    assert main(["--checkpoint", str(checkpoint), "--tasks", "fly-v3", "--episodes", "1",
                 "--output-dir", str(tmp_path / "b")]) == 2
    assert "--tasks: unknown Meta-World MT1 task(s) ['fly-v3']" in capsys.readouterr().err
    # a checkpoint whose action layout is not Meta-World's (7-d actions), with the same processor files
    import shutil

    from modeling_niaf import NiafConfig, NiafForActionFunction

    cfg = NiafConfig.from_pretrained(str(checkpoint))
    stats = {k: list(v) + [0.0] * 3 for k, v in cfg.normalization_stats["action"].items()}
    cfg.action_dim, cfg.normalization_stats = 7, {**cfg.normalization_stats, "action": stats}
    other = tmp_path / "ckpt7"
    NiafForActionFunction(cfg).save_pretrained(other)
    for f in checkpoint.iterdir():
        if f.name.startswith(("processor", "tokenizer", "special_tokens")) or f.name == "training_data.json":
            shutil.copy(f, other / f.name)
    processor_config = json.loads((other / "processor_config.json").read_text())
    processor_config["action_dim"] = 7  # the processor takes the model's 7-d statistics from config.json
    (other / "processor_config.json").write_text(json.dumps(processor_config))
    assert main(["--checkpoint", str(other), "--episodes", "1", "--output-dir", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "--checkpoint" in err and "action_dim 7, Meta-World needs 4" in err


def test_expert_and_random_baselines_run_in_the_same_harness(tmp_path):
    from niaf_train.evaluation.run import evaluate_checkpoint

    settings = EvalSettings(tasks=[TASK], episodes=2, video=False)
    expert = evaluate_checkpoint(None, settings, tmp_path / "expert", policy="expert", progress=False)
    assert expert["tasks"][TASK]["success_rate"] == 1.0  # the scripted expert solves reach
    settings = EvalSettings(tasks=[TASK], episodes=2, max_steps=40, video=False)
    rand = evaluate_checkpoint(None, settings, tmp_path / "random", policy="random", progress=False)
    assert rand["tasks"][TASK]["episodes"] == 2 and rand["benchmark_seed"] == expert["benchmark_seed"]


# ---------------------------------------------------------------------------------------------------------------
# Evaluation integrity: provenance, distinct trials, limits, the output folder, early refusals
# ---------------------------------------------------------------------------------------------------------------
def _copy_checkpoint(checkpoint: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(checkpoint, dest)
    return dest


@pytest.mark.parametrize("edit, message", [
    (lambda r: {**r, "benchmark_seeds": "1000"}, "'benchmark_seeds' must be a non-empty list of integers"),
    (lambda r: {**r, "benchmark_seeds": [True]}, "'benchmark_seeds' entry must be a benchmark seed"),
    (lambda r: {**r, "benchmark_seeds": [0.0]}, "'benchmark_seeds' entry must be a benchmark seed"),
    (lambda r: {**r, "benchmark_seeds": [-1]}, "'benchmark_seeds' entry must be a benchmark seed"),
    (lambda r: {**r, "benchmark_seeds": None}, "'benchmark_seeds' must be a non-empty list"),
    (lambda r: None, "expected a JSON object"),
    (lambda r: [0], "expected a JSON object"),
    (lambda r: {k: v for k, v in r.items() if k != "benchmark_seeds"}, "no 'benchmark_seeds'"),
    (lambda r: {**r, "stride": "4"}, "'stride' must be a positive integer"),
    (lambda r: {**r, "tasks": "reach-v3"}, "'tasks' must be a list of non-empty strings"),
    (lambda r: {**r, "variations": {"reach-v3": {"7": [0]}}}, "has seed '7', which is not among"),
    (lambda r: {**r, "variations": {"reach-v3": {"0": [50]}}}, "must be a list of variations 0..49"),
    (lambda r: {**r, "variations": {"push-v3": {"0": [1]}}}, "names task 'push-v3', which is not in 'tasks'"),
    # well-formed, but not what the model card says the run generated (seed 0, 3 episodes of reach-v3)
    (lambda r: {**r, "benchmark_seeds": [1000], "variations": {}}, "disagree on the benchmark seeds: [1000]"),
    (lambda r: {**r, "tasks": ["push-v3"], "variations": {}}, "disagree on 'tasks'"),
    (lambda r: {**r, "stride": 2}, "disagree on 'stride'"),
    (lambda r: {**r, "camera_view": "fisheye"}, "'camera_view': camera view must be one of"),
    (lambda r: {**r, "camera_view": "lerobot"}, "disagree on 'camera_view'"),
    (lambda r: {**r, "instructions": "klingon"}, "'instructions': instructions must be one of ['niaf', 'lerobot']"),
    (lambda r: {**r, "instructions": "lerobot"}, "disagree on 'instructions'"),
])
def test_edited_training_record_is_refused_before_the_model_loads(checkpoint, tmp_path, capsys, edit, message):
    """A malformed or disagreeing training_data.json is one line naming the file; no model is loaded and no
    output folder is made."""
    from niaf_train.evaluation.cli import main

    ckpt = _copy_checkpoint(checkpoint, tmp_path / "ckpt")
    record = json.loads((ckpt / "training_data.json").read_text())
    (ckpt / "training_data.json").write_text(json.dumps(edit(record)))
    out = tmp_path / "eval"
    assert main(["--checkpoint", str(ckpt), "--episodes", "1", "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("niaf-eval: error: ") and "\n" not in err and message in err, err
    assert "training_data.json" in err and not out.exists()


@pytest.mark.parametrize("text", ["", "{", "null", "not json", '{"benchmark_seeds": [0]} trailing', "\ud800"])
def test_unreadable_training_record_is_one_line(checkpoint, tmp_path, capsys, text):
    from niaf_train.evaluation.cli import main

    ckpt = _copy_checkpoint(checkpoint, tmp_path / "ckpt")
    (ckpt / "training_data.json").write_bytes(text.encode("utf-8", "surrogatepass"))
    assert main(["--checkpoint", str(ckpt), "--output-dir", str(tmp_path / "eval")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("niaf-eval: error: --checkpoint") and "training_data.json" in err and "\n" not in err


def test_every_record_of_the_checkpoint_excludes_its_seeds(checkpoint, tmp_path):
    """Without training_data.json the model card still names the training seeds; a --train-data dataset that
    disagrees with the checkpoint's records is refused."""
    from niaf_train.evaluation.closed_loop import training_record

    ckpt = _copy_checkpoint(checkpoint, tmp_path / "ckpt")
    (ckpt / "training_data.json").unlink()
    record = training_record(ckpt)
    assert record["benchmark_seeds"] == [0] and record["tasks"] == [TASK]
    with pytest.raises(EvalError, match="--seed 0: the training demonstrations include"):
        resolve_seed(0, record)
    other = tmp_path / "data"
    (other / "meta").mkdir(parents=True)
    (other / "meta" / "info.json").write_text(json.dumps({"metaworld": {"benchmark_seeds": [5], "tasks": [TASK]}}))
    with pytest.raises(EvalError, match="disagree on the benchmark seeds"):
        training_record(ckpt, other)


def test_more_episodes_than_variations_draw_new_held_out_seeds(tmp_path):
    """120 episodes = 50 + 50 + 20 distinct variations from three seeds none of which training used; summarize
    refuses repeated trials."""
    from niaf_train.evaluation import closed_loop
    from niaf_train.evaluation.closed_loop import EpisodeResult, resolve_seeds
    from niaf_train.evaluation.report import summarize

    record = {"benchmark_seeds": [1000, 1002]}
    assert resolve_seeds(None, record, 120) == [1001, 1003, 1004]
    assert resolve_seeds(1001, record, 101) == [1001, 1003, 1004]
    assert resolve_seeds(None, None, 50) == [1000]
    with pytest.raises(EvalError, match="--seed 4294967295: 2 held-out benchmark seeds"):
        resolve_seeds(2**32 - 1, None, 51)
    ran: list[tuple[int, int]] = []

    class FakeScene:
        def __init__(self, task, seed, *_observation_settings):  # cameras, size, state, crop, view, instructions
            self.task, self.benchmark_seed, self.num_variations = task, seed, 50

        def close(self):
            pass

    def fake_episode(scene, variation, policy, settings, frame_hook=None):
        ran.append((scene.benchmark_seed, variation))
        return EpisodeResult(scene.task, variation, variation % 2 == 0, 1, 0.0, 0.0)

    settings = EvalSettings(tasks=[TASK], episodes=120, video=False)
    original = closed_loop.MetaWorldScene, closed_loop.run_episode
    closed_loop.MetaWorldScene, closed_loop.run_episode = FakeScene, fake_episode
    try:
        results = closed_loop.evaluate(None, settings, resolve_seeds(None, record, 120), progress=False)
    finally:
        closed_loop.MetaWorldScene, closed_loop.run_episode = original
    assert len(set(ran)) == 120 and [s for s, _ in ran].count(1004) == 20
    summary = summarize(results)["tasks"][TASK]
    assert summary["episodes"] == 120 and summary["benchmark_seeds"][50] == 1003
    repeated = {TASK: [EpisodeResult(TASK, 3, True, 1, 0.0, 0.0, benchmark_seed=1000)] * 2}
    with pytest.raises(ValueError, match="more than once"):
        summarize(repeated)


@pytest.mark.parametrize("override, message", [
    ({"episodes": 10**12}, "--episodes must be an integer in [1, 5000]"),
    ({"episodes": 2.0}, "--episodes must be an integer"),
    ({"episodes": True}, "--episodes must be an integer"),
    ({"seed": 2**32}, "--seed must be an integer in [0, 4294967295]"),
    ({"seed": -1}, "--seed must be an integer"),
    ({"latency_ms": 1e308}, "--latency-ms must be in [0, 6250] ms"),
    ({"latency_ms": "5"}, "--latency-ms must be a number"),
    ({"blend_ms": 1e9}, "--blend-ms must be in [0, 6250] ms"),
    ({"replan_every": 10**9}, "--replan-every must be an integer in [1, 500]"),
    ({"image_size": 10**6}, "--image-size must be an integer in [1, 1024]"),
    ({"tasks": ["reach-v3", "reach-v3"]}, "--tasks: ['reach-v3'] given more than once"),
    ({"tasks": ["fly-v3"]}, "--tasks: unknown Meta-World MT1 task(s) ['fly-v3']"),
    ({"camera_view": "lerobot", "cameras": ["topview"]}, "camera view 'lerobot' has the one camera 'corner2'"),
    ({"camera_view": "lerobot", "image_size": 512}, "image size must be in [1, 480] with camera view 'lerobot'"),
    ({"instructions": "klingon"}, "the instructions (the training record's, with --tasks): instructions must be one"),
])
def test_settings_state_and_enforce_their_limits(override, message):
    settings = EvalSettings(**{"tasks": [TASK], **override})
    with pytest.raises(EvalError) as err:
        settings.check()
    assert message in str(err.value)


@pytest.mark.parametrize("argv, message", [
    (["--seed", str(2**32)], "--seed must be an integer in [0, 4294967295]"),
    (["--seed", "0"], "--seed 0: the training demonstrations include"),
    (["--latency-ms", "1e308"], "--latency-ms must be in [0, 6250] ms"),
    (["--episodes", "1000000000000"], "--episodes must be an integer in [1, 5000]"),
    (["--cameras", "nowhere"], "--cameras: Meta-World has no camera 'nowhere'"),
])
def test_niaf_eval_refuses_arguments_before_loading_and_leaves_no_folder(checkpoint, tmp_path, capsys, monkeypatch,
                                                                          argv, message):
    from niaf_train.evaluation import closed_loop, run
    from niaf_train.evaluation.cli import main

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(closed_loop, "load_policy", no_load)
    monkeypatch.setattr(run, "load_policy", no_load)
    out = tmp_path / "new" / "eval"
    assert main(["--checkpoint", str(checkpoint), *argv, "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"niaf-eval: error: {message}") and "\n" not in err, err
    assert not (tmp_path / "new").exists()


def test_output_folder_is_locked_and_nothing_in_it_is_overwritten(tmp_path):
    """A second evaluation on a folder in use is refused; an earlier figure or video is never overwritten; a
    refused run leaves no folder it made."""
    from niaf_train.evaluation.run import LOCK_FILE, OutputLock, evaluate_checkpoint

    settings = EvalSettings(tasks=[TASK], episodes=1, max_steps=5, video=True)
    out = tmp_path / "eval"
    held = OutputLock(out).acquire()
    try:
        with pytest.raises(EvalError, match="is in use by another niaf-eval run"):
            evaluate_checkpoint(None, settings, out, policy="expert", progress=False)
    finally:
        held.release()
    assert not out.exists()  # the lock made the folder, and nothing else was written: removed again
    for earlier in ("success.png", f"videos/{TASK}.mp4"):
        folder = tmp_path / earlier.replace("/", "_")
        (folder / earlier).parent.mkdir(parents=True)
        (folder / earlier).write_bytes(b"earlier work")
        with pytest.raises(EvalError, match=f"already holds {earlier}"):
            evaluate_checkpoint(None, settings, folder, policy="expert", progress=False)
        assert (folder / earlier).read_bytes() == b"earlier work" and not (folder / "results.json").exists()
    result = evaluate_checkpoint(None, settings, out, policy="expert", progress=False)
    assert result["benchmark_seeds"] == [1000] and (out / "results.json").is_file() and (out / LOCK_FILE).exists()
