"""Hub-native checkpoints: the saved folder is a complete remote-code repo that loads without this package.

The loading side runs in a subprocess whose import system cannot see this repository or the installed
package (the editable-install finder is removed and ``find_spec`` is asserted to fail), exactly as for a
downstream user who only has transformers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from test_modeling import make_model
from test_processing import FRAMES, images, make_processor

from modeling_niaf.hub import CODE_FILES

REPO_ROOT = Path(__file__).resolve().parents[2]

ISOLATE = """
import sys, importlib.util
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__ and "editable" not in repr(f)]
sys.path[:] = [p for p in sys.path if not p.startswith({root!r}) and "__editable__" not in p and p not in ("", ".")]
for name in ("modeling_niaf", "configuration_niaf", "niaf_train"):
    assert importlib.util.find_spec(name) is None, f"{{name}} is importable in the isolated interpreter"
"""

LOAD_AND_RUN = """
import os
import torch
torch.set_num_threads(min(2, os.cpu_count() or 1))  # as conftest.py: a convolution's sums depend on the thread count
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel, AutoProcessor
import numpy as np

source = {source!r}
config = AutoConfig.from_pretrained(source, trust_remote_code=True)
assert type(config).__name__ == "NiafConfig", type(config)
model = AutoModel.from_pretrained(source, trust_remote_code=True).eval()
assert type(model).__name__ == "NiafForActionFunction", type(model)
assert "transformers_modules" in type(model).__module__, type(model).__module__
processor = AutoProcessor.from_pretrained(source, trust_remote_code=True)
assert type(processor).__name__ == "NiafProcessor", type(processor)
inputs = load_file({inputs!r})
raw = load_file({raw!r})
obs = [[raw["img_0_0"].numpy(), raw["img_0_1"].numpy()], [raw["img_1_0"].numpy(), raw["img_1_1"].numpy()]]
batch = processor(images=obs, text=["pick up the red block", "open the drawer"], state=raw["state"].numpy())
with torch.no_grad():
    out = model(**inputs)
traj = model.generate_actions(**inputs, num_points=24, derivatives=3)
fn = model.predict_action_function(**inputs)
later = fn(num_points=24, derivatives=3)
result = {{"positions": out.positions, "gamma": out.gamma, "pos24": traj.position, "vel24": traj.velocity,
          "jerk24": traj.jerk, "later_vel24": later.velocity, "config_action_dim": torch.tensor(config.action_dim)}}
result.update({{"proc_" + k: v for k, v in batch.items()}})
save_file({{k: v.contiguous() for k, v in result.items()}}, {out!r})
"""


def _run_isolated(script: str, cwd: Path, env_extra: dict[str, str]) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONNOUSERSITE": "1"}, **env_extra)
    code = ISOLATE.format(root=str(REPO_ROOT)) + script
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"isolated load failed:\nSTDOUT:\n{proc.stdout[-3000:]}\nSTDERR:\n{proc.stderr[-6000:]}"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny Florence-2 NIAF (2 cameras + state + image keypoints, so that every optional module ships) saved
    with its processor; inputs and in-process outputs."""
    root = tmp_path_factory.mktemp("hub")
    proc = make_processor("florence2", num_cameras=2)
    torch.manual_seed(0)
    model = make_model("florence2", head_std=0.05, num_cameras=2, use_state=True, state_dim=2, image_keypoints=3,
                       normalization_stats=proc.normalization_stats)
    folder = root / f"niaf_ckpt_{uuid.uuid4().hex[:8]}"  # unique: transformers caches remote code by folder name
    model.save_pretrained(folder, processor=proc)
    obs = images(2, 2)
    state = FRAMES[:2, :2]
    batch = proc(images=obs, text=["pick up the red block", "open the drawer"], state=state)
    inputs = {k: v.contiguous() for k, v in batch.items()}
    save_file(inputs, root / "inputs.safetensors")
    raw = {f"img_{b}_{c}": torch.from_numpy(obs[b][c]) for b in range(2) for c in range(2)}
    raw["state"] = torch.from_numpy(np.ascontiguousarray(state))
    save_file(raw, root / "raw.safetensors")
    with torch.no_grad():
        out = model(**inputs)
    traj = model.generate_actions(**inputs, num_points=24, derivatives=3)
    expected = {"positions": out.positions, "gamma": out.gamma, "pos24": traj.position, "vel24": traj.velocity,
                "jerk24": traj.jerk}
    return {"root": root, "folder": folder, "inputs": inputs, "expected": expected, "model": model}


def test_saved_folder_is_a_complete_hub_repo(saved):
    folder = saved["folder"]
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_niaf.NiafConfig", "AutoModel": "modeling_niaf.NiafForActionFunction"
    }
    assert config["model_type"] == "niaf" and config["architectures"] == ["NiafForActionFunction"]
    assert (folder / "model.safetensors").is_file() and not list(folder.glob("*.bin"))
    for name in CODE_FILES:
        assert (folder / name).is_file(), name
        text = (folder / name).read_text()
        # every import of our own modules is relative (or the tolerated try/except fallback)
        for line in text.splitlines():
            stripped = line.strip()
            if stripped.startswith(("from modeling_niaf", "import modeling_niaf", "from niaf_train")):
                pytest.fail(f"{name}: absolute import of our package: {stripped}")
            if stripped.startswith("from configuration_niaf"):
                assert line.startswith("    "), f"{name}: unguarded absolute import {stripped}"
    processor_config = json.loads((folder / "processor_config.json").read_text())
    assert processor_config["auto_map"] == {"AutoProcessor": "processing_niaf.NiafProcessor"}
    # the statistics are stored once, in config.json; the processor reads them from there
    assert "normalization_stats" not in processor_config
    assert config["normalization_stats"]["action"]["q01"] == saved["model"].config.normalization_stats["action"]["q01"]
    card = (folder / "README.md").read_text()
    header = card.split("---")[1]
    for needle in ("library_name: transformers", "pipeline_tag: robotics", "- niaf", "- robotics"):
        assert needle in header, needle
    assert "trust_remote_code=True" in card
    assert "| SIREN width H | 16 |" in card and "| query tokens Q = L·(G+1) | 10 |" in card


def test_isolated_interpreter_loads_folder_with_identical_outputs(saved):
    root = saved["root"]
    out = root / "isolated_folder.safetensors"
    script = LOAD_AND_RUN.format(source=str(saved["folder"]), inputs=str(root / "inputs.safetensors"),
                                 raw=str(root / "raw.safetensors"), out=str(out))
    _run_isolated(script, cwd=root, env_extra={"HF_HOME": str(root / "hf_home_folder")})
    _compare(load_file(out), saved)


def test_isolated_interpreter_loads_from_prefilled_hub_cache(saved):
    """As `from_pretrained("user/repo", trust_remote_code=True)` runs offline for a downstream user."""
    root = saved["root"]
    repo_id = f"niaf-tests/tiny-{uuid.uuid4().hex[:8]}"
    hf_home = root / "hf_home_cache"
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    shutil.copytree(saved["folder"], repo_dir / "snapshots" / commit)
    out = root / "isolated_cache.safetensors"
    script = LOAD_AND_RUN.format(source=repo_id, inputs=str(root / "inputs.safetensors"),
                                 raw=str(root / "raw.safetensors"), out=str(out))
    _run_isolated(script, cwd=root, env_extra={"HF_HOME": str(hf_home)})
    _compare(load_file(out), saved)



def _last_line_in_isolated_interpreter(root: Path, script: str, hf_home: str) -> str:
    """Run ``script`` after ISOLATE in a fresh interpreter without this package (own HF_HOME); its last line."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update({"HF_HUB_OFFLINE": "1", "PYTHONNOUSERSITE": "1", "HF_HOME": str(root / hf_home)})
    proc = subprocess.run([sys.executable, "-c", ISOLATE.format(root=str(REPO_ROOT)) + script], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]

def test_isolated_interpreter_with_old_transformers_gets_one_line_error(saved):
    """The shipped remote code checks the transformers version before building anything."""
    root = saved["root"]
    script = f"""
import transformers
transformers.__version__ = "4.57.6"  # what pip picks next to some other packages
from transformers import AutoModel
try:
    AutoModel.from_pretrained({str(saved["folder"])!r}, trust_remote_code=True)
except ImportError as err:
    print("ERROR:" + str(err))
else:
    raise SystemExit("loaded with transformers 4.57.6")
"""
    line = _last_line_in_isolated_interpreter(root, script, "hf_home_old")
    assert line == ("ERROR:NIAF needs transformers>=5.5.0, found transformers 4.57.6; "
                    "upgrade with: pip install -U 'transformers>=5.5.0'")


def test_isolated_interpreter_refuses_a_checkpoint_with_renamed_backbone_weights(saved):
    """The shipped remote code refuses what transformers would otherwise load with a re-initialised backbone."""
    root = saved["root"]
    folder = root / f"niaf_renamed_{uuid.uuid4().hex[:8]}"
    shutil.copytree(saved["folder"], folder)
    weights = load_file(folder / "model.safetensors")
    renamed = {k.replace("backbone.language_model.", "backbone.language_model.model."): v for k, v in weights.items()}
    moved = sum(k.startswith("backbone.language_model.") for k in weights)
    save_file(renamed, folder / "model.safetensors", metadata={"format": "pt"})
    script = f"""
from transformers import AutoModel
try:
    AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True)
except ValueError as err:
    print("ERROR:" + str(err))
else:
    raise SystemExit("loaded a checkpoint whose backbone weights do not match")
"""
    line = _last_line_in_isolated_interpreter(root, script, "hf_home_renamed")
    assert line.startswith("ERROR:NiafForActionFunction.from_pretrained(") and "transformers" in line
    # Florence-2 saves its tied embeddings once, so two more names are missing than were renamed
    assert f"{moved + 2} missing (backbone.language_model." in line
    assert f"{moved} unexpected (backbone.language_model.model." in line


def _compare(result: dict[str, torch.Tensor], saved: dict) -> None:
    for key, value in saved["expected"].items():
        torch.testing.assert_close(result[key], value, rtol=0, atol=0, msg=key)
    torch.testing.assert_close(result["later_vel24"], saved["expected"]["vel24"], rtol=0, atol=0)
    for key, value in saved["inputs"].items():
        torch.testing.assert_close(result["proc_" + key], value, rtol=0, atol=0, msg=key)


def test_installed_package_registers_auto_classes(saved):
    from transformers import AutoConfig, AutoModel, AutoProcessor

    import modeling_niaf

    modeling_niaf.register_auto_classes()  # also runs on the first use of a model-side name (test_deployment.py)

    folder = saved["folder"]
    config = AutoConfig.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    assert type(model).__module__ == "modeling_niaf.modeling_niaf"
    assert config.num_cameras == 2
    with torch.no_grad():
        torch.testing.assert_close(model(**saved["inputs"]).positions, saved["expected"]["positions"], rtol=0, atol=0)
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=False)
    assert type(processor).__name__ == "NiafProcessor"
    np.testing.assert_array_equal(processor.normalize_actions(FRAMES[:3]), make_processor().normalize_actions(FRAMES[:3]))


def _physical(processor, model, obs, state) -> dict[str, torch.Tensor]:
    """Raw observation → processor → one `generate_actions` call: physical positions and per-second derivatives."""
    inputs = processor(images=obs, text=["pick up the red block", "open the drawer"], state=state)
    traj = model.generate_actions(**inputs, num_points=16, derivatives=3)
    return {name: getattr(traj, name) for name in ("position", "velocity", "acceleration", "jerk")}


def test_statistics_are_stored_once_and_reproduce_physical_actions(saved):
    from transformers import AutoModel, AutoProcessor

    folder = saved["folder"]
    holders = [p.name for p in folder.iterdir() if p.suffix == ".json" and "normalization_stats" in json.loads(p.read_text())]
    assert holders == ["config.json"]
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    # (in this process the installed classes answer; the isolated-interpreter tests above run the shipped copies,
    # whose processor also reads config.json: its outputs there equal the ones computed here)
    assert processor.normalization_stats == saved["model"].config.normalization_stats
    obs, state = images(2, 2), FRAMES[:2, :2]
    before = _physical(make_processor("florence2", num_cameras=2), saved["model"], obs, state)
    after = _physical(processor, model, obs, state)
    for name, value in before.items():
        torch.testing.assert_close(after[name], value, rtol=0, atol=0, msg=name)


def test_old_layout_with_statistics_in_both_files_loads(saved):
    """Checkpoints saved before the statistics were stored once carry a copy in processor_config.json too."""
    from transformers import AutoProcessor

    from modeling_niaf import NiafProcessor

    folder = saved["root"] / f"niaf_old_layout_{uuid.uuid4().hex[:8]}"
    shutil.copytree(saved["folder"], folder)
    stats = json.loads((folder / "config.json").read_text())["normalization_stats"]
    path = folder / "processor_config.json"
    old = json.loads(path.read_text())
    old["normalization_stats"] = stats
    path.write_text(json.dumps(old))
    obs, state = images(2, 2), FRAMES[:2, :2]
    expected = _physical(make_processor("florence2", num_cameras=2), saved["model"], obs, state)
    for processor in (NiafProcessor.from_pretrained(folder), AutoProcessor.from_pretrained(folder, trust_remote_code=True)):
        assert processor.normalization_stats == stats
        got = _physical(processor, saved["model"], obs, state)
        for name, value in expected.items():
            torch.testing.assert_close(got[name], value, rtol=0, atol=0, msg=name)
    # config.json is the copy that counts: a stale processor copy is not compared, it is ignored
    old["normalization_stats"] = {"action": {k: [x + 1.0 for x in v] for k, v in stats["action"].items()}}
    path.write_text(json.dumps(old))
    assert NiafProcessor.from_pretrained(folder).normalization_stats == stats


def test_processor_without_statistics_anywhere_is_a_one_line_error(saved):
    from modeling_niaf import NiafProcessor

    folder = saved["root"] / f"niaf_no_stats_{uuid.uuid4().hex[:8]}"
    shutil.copytree(saved["folder"], folder)
    config = json.loads((folder / "config.json").read_text())
    config["normalization_stats"] = None
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"normalization_mode=QUANTILES needs statistics, but neither config.json nor "
                                         r"processor_config.json has `normalization_stats`") as err:
        NiafProcessor.from_pretrained(folder)
    assert "\n" not in str(err.value)
    # a processor_config.json for other shapes than the config.json whose statistics it would use
    config["normalization_stats"] = json.loads((saved["folder"] / "config.json").read_text())["normalization_stats"]
    config["action_dim"] = 4
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"processor_config.json has action_dim=3 but config.json, whose statistics it "
                                         r"uses, has action_dim=4"):
        NiafProcessor.from_pretrained(folder)
    # saving a processor's statistics with a model that has none would lose them: refused
    model = make_model("florence2", num_cameras=2, use_state=True, state_dim=2)
    with pytest.raises(ValueError, match="the processor has normalisation statistics but the model's config has none"):
        model.save_pretrained(saved["root"] / "refused", processor=make_processor("florence2", num_cameras=2))


def test_push_to_hub_uploads_the_complete_folder(saved, monkeypatch):
    uploaded = {}

    class FakeApi:
        def __init__(self, *a, **k):
            pass

        def create_repo(self, repo_id, **k):
            uploaded["repo"] = repo_id

        def upload_folder(self, repo_id, folder_path, **k):
            uploaded["files"] = sorted(p.name for p in Path(folder_path).iterdir())

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    target = saved["root"] / "push_src"
    saved["model"].save_pretrained(target, push_to_hub=True, repo_id="someone/niaf-tiny")
    assert uploaded["repo"] == "someone/niaf-tiny"
    for name in ("config.json", "model.safetensors", "README.md", *CODE_FILES):
        assert name in uploaded["files"], name
    assert "someone/niaf-tiny" in (target / "README.md").read_text()


def test_quickstart_example_runs_offline(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("niaf_quickstart_example", REPO_ROOT / "examples" / "quickstart.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = module.main(["--output-dir", str(tmp_path / f"qs_{uuid.uuid4().hex[:6]}")])
    assert (out / "trajectory.png").stat().st_size > 10_000
    assert json.loads((out / "model" / "config.json").read_text())["auto_map"]["AutoModel"].endswith("NiafForActionFunction")
    assert (out / "model" / "processor_config.json").is_file()


def test_model_card_metadata_round_trips_through_modelcard_load(saved):
    from huggingface_hub import ModelCard

    from modeling_niaf.hub import add_eval_results, closed_loop_eval_results, held_out_eval_results

    held_out = held_out_eval_results({"position_mse": 0.0213, "baseline_position_mse": 0.0785, "num_chunks": 96.0},
                                     dataset_type="someone/pusht-niaf", dataset_name="PushT (held-out episodes)")
    # the layout of niaf-eval's results.json: settings, per-task success rates, their mean (built here, no simulator)
    closed = closed_loop_eval_results(
        {"checkpoint": "final", "execute_hz": 80.0, "mean_success": 0.625,
         "tasks": {"reach-v3": {"success_rate": 0.9, "successes": 18, "episodes": 20, "wilson95": [0.7, 0.97]},
                   "push-v3": {"success_rate": 0.35, "successes": 7, "episodes": 20, "wilson95": [0.18, 0.57]}}},
        benchmark="metaworld")
    folder = saved["root"] / f"card_{uuid.uuid4().hex[:6]}"
    saved["model"].save_pretrained(folder, repo_id="someone/niaf-tiny", base_model="microsoft/Florence-2-base",
                                   datasets=["someone/pusht-niaf"], eval_results=held_out)
    card = ModelCard.load(folder / "README.md")
    data = card.data
    assert (data.library_name, data.pipeline_tag, data.license) == ("transformers", "robotics", "apache-2.0")
    assert data.base_model == "microsoft/Florence-2-base" and data.datasets == ["someone/pusht-niaf"]
    assert {"robotics", "niaf", "florence2"} <= set(data.tags)
    assert data.model_name == "niaf-tiny"
    assert {r.metric_type: r.metric_value for r in data.eval_results} == {
        "position_mse": 0.0213, "baseline_position_mse": 0.0785}
    assert "model-index:" in card.content
    assert "pip install torch \"transformers>=5.5.0\" pillow" in card.text
    assert str(saved["root"]) not in card.content and "/tmp" not in card.content

    add_eval_results(folder, closed)
    data = ModelCard.load(folder / "README.md").data
    rates = {(r.dataset_config, r.metric_name): r.metric_value for r in data.eval_results if r.metric_type == "success_rate"}
    assert rates == {("reach-v3", "success rate (reach-v3)"): 0.9, ("push-v3", "success rate (push-v3)"): 0.35,
                     (None, "success rate (mean)"): 0.625}
    assert len(data.eval_results) == 5  # the held-out entries are kept
    add_eval_results(folder, closed_loop_eval_results({"reach-v3": {"success_rate": 1.0}}, benchmark="metaworld"))
    data = ModelCard.load(folder / "README.md").data
    assert [r.metric_value for r in data.eval_results if r.dataset_config == "reach-v3"] == [1.0]
    with pytest.raises(ValueError, match="task 'push-v3' needs a 'success_rate' in \\[0, 1\\]"):
        closed_loop_eval_results({"tasks": {"push-v3": {"success_rate": 35}}}, benchmark="metaworld")


def test_local_save_card_has_no_model_index_and_names_the_random_backbone(saved):
    from huggingface_hub import ModelCard

    folder = saved["root"] / f"card_local_{uuid.uuid4().hex[:6]}"
    saved["model"].save_pretrained(folder)
    card = ModelCard.load(folder / "README.md")
    assert card.data.base_model is None and card.data.datasets is None and not card.data.eval_results
    assert "randomly initialised backbone" in card.text and "<user>/<repo>" in card.text


def test_quickstart_figure_names_dims_with_units_shares_scales_and_says_untrained():
    import importlib.util

    spec = importlib.util.spec_from_file_location("niaf_quickstart_fig", REPO_ROOT / "examples" / "quickstart.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model, processor = module.build_tiny()
    rng = np.random.default_rng(0)
    obs = [[rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(2)]]
    traj = model.generate_actions(**processor(images=obs, text=["pick up the red block"]), num_points=50).to_numpy()
    fig = module.make_figure(traj, module.TINY_ACTION_NAMES, module.TINY_ACTION_UNITS, untrained=True)
    axes = np.asarray(fig.axes).reshape(4, 7)
    assert [ax.get_title() for ax in axes[0]] == ["Δx [m]", "Δy [m]", "Δz [m]", "Δroll [rad]", "Δpitch [rad]",
                                                  "Δyaw [rad]", "gripper [1]"]
    assert axes[1, 3].get_ylabel() == "velocity [rad/s]" and axes[3, 0].get_ylabel() == "jerk [m/s³]"
    for row, name in enumerate(("position", "velocity", "acceleration", "jerk")):
        values = np.asarray(getattr(traj, name))[0]
        translation = {axes[row, d].get_ylim() for d in range(3)}
        rotation = {axes[row, d].get_ylim() for d in range(3, 6)}
        assert len(translation) == 1 and len(rotation) == 1  # one y-scale per unit in each row
        low, high = translation.pop()
        assert low <= values[:, :3].min() and high >= values[:, :3].max()
    assert fig._suptitle.get_text().startswith("UNTRAINED model (random weights)")
    trained = module.make_figure(traj)
    assert "UNTRAINED" not in trained._suptitle.get_text() and trained.axes[0].get_title() == "dim 0 [units]"


def test_entry_files_import_every_flat_file_they_need_directly():
    """transformers 5.5 copies only the *direct* relative imports of a local checkpoint's module file (and of the
    configuration file, into the same folder) into its module cache, then imports the whole chain: every flat file
    reachable from modeling_niaf.py or processing_niaf.py must be imported directly by it or by the configuration."""
    import re

    files = {p.stem: p for folder in ("modeling_niaf", "configuration_niaf")
             for p in (REPO_ROOT / folder).glob("*.py") if p.stem != "__init__"}

    def direct(name: str) -> set[str]:
        return set(re.findall(r"^\s*from\s+\.(\w+)\s+import", files[name].read_text(encoding="utf-8"), flags=re.M))

    def reachable(name: str) -> set[str]:
        seen, todo = set(), [name]
        while todo:
            for imported in direct(todo.pop()) - seen:
                seen.add(imported)
                todo.append(imported)
        return seen

    copied_with_config = direct("configuration_niaf") | {"configuration_niaf"}
    for entry in ("modeling_niaf", "processing_niaf"):
        missing = reachable(entry) - direct(entry) - copied_with_config
        assert not missing, f"{entry}.py reaches {sorted(missing)} only through another flat file"


@pytest.mark.parametrize("damage", ["truncated", "oversized_header", "short_header", "garbage_header"])
def test_damaged_model_safetensors_is_one_line_naming_the_file(tmp_path, damage):
    from modeling_niaf import NiafForActionFunction

    folder = tmp_path / "ckpt"
    make_model("florence2").save_pretrained(folder)
    path = folder / "model.safetensors"
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "oversized_header":
        path.write_bytes((10**12).to_bytes(8, "little") + data[8:])
    elif damage == "short_header":
        path.write_bytes(data[:5])
    else:
        n = int.from_bytes(data[:8], "little")
        path.write_bytes(data[:8] + b"\xff" * n + data[8 + n:])
    with pytest.raises(ValueError) as err:
        NiafForActionFunction.from_pretrained(folder)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and "\n" not in message and "expected a safetensors file" in message
