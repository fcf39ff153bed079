"""The LeRobot policy built from a niaf-train recipe, and niaf-train's optimiser and learning-rate schedule as
LeRobot presets (runs in the Python 3.12 LeRobot environment, see integrations/lerobot/ci.sh).

References: the recipe's YAML file read here with PyYAML (every ``model:`` key that is a NiafConfig argument),
the model niaf-train itself builds from the same recipe and dataset layout, and niaf-train's own optimiser and
scheduler (``make_optimizer_and_scheduler``) stepped side by side with LeRobot's presets.
"""

from __future__ import annotations

import inspect
import json
import shutil
from importlib import resources
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

pytest.importorskip("lerobot")

from lerobot.configs import FeatureType, PolicyFeature  # noqa: E402
from lerobot_policy_niaf.configuration_niaf import NiafConfig  # noqa: E402
from lerobot_policy_niaf.modeling_niaf import NiafPolicy  # noqa: E402
from lerobot_policy_niaf.processor_niaf import niaf_stats_from_lerobot  # noqa: E402
from niaf_train.tiny import sincos_2d_positions  # noqa: E402
from niaf_train.training.arguments import load_config  # noqa: E402
from niaf_train.training.building import build_processor_and_model  # noqa: E402
from niaf_train.training.loop import make_optimizer_and_scheduler  # noqa: E402

from modeling_niaf import NiafConfig as NiafModelConfig  # noqa: E402

CAMERA, ACTION_DIM, STATE_DIM, FPS, IMAGE = "observation.images.corner2", 4, 4, 80, 32
TASKS = ["reach the goal", "push the puck to the goal"]
NIAF_ARGUMENTS = set(inspect.signature(NiafModelConfig.__init__).parameters) - {"self", "kwargs"}


def _recipe_yaml(name: str) -> dict:
    return yaml.safe_load((resources.files("niaf_train") / "configs" / f"{name}.yaml").read_text(encoding="utf-8"))


def _lerobot_stats(rng: np.random.Generator) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for key, dim in (("action", ACTION_DIM), ("observation.state", STATE_DIM)):
        x = rng.normal(size=(300, dim)) * rng.uniform(0.1, 2.0, size=dim) + rng.normal(size=dim)
        out[key] = {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0), "count": np.array([300]),
                    **{f"q{p:02d}": np.quantile(x, p / 100, axis=0) for p in (1, 10, 50, 90, 99)}}
    return out


def _features() -> dict:
    return {
        "input_features": {CAMERA: PolicyFeature(type=FeatureType.VISUAL, shape=(3, IMAGE, IMAGE)),
                           "observation.state": PolicyFeature(type=FeatureType.STATE, shape=(STATE_DIM,))},
        "output_features": {"action": PolicyFeature(type=FeatureType.ACTION, shape=(ACTION_DIM,))},
    }


META = SimpleNamespace(fps=FPS, tasks=pd.DataFrame({"task_index": range(len(TASKS))}, index=TASKS))


def _policy(**config_kwargs) -> NiafPolicy:
    torch.manual_seed(0)
    config = NiafConfig(device="cpu", **_features(), **config_kwargs)
    return NiafPolicy(config, dataset_stats=_lerobot_stats(np.random.default_rng(0)), dataset_meta=META)


def _batch(seed: int = 1, n: int = 2) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {CAMERA: torch.rand(n, 3, IMAGE, IMAGE, generator=g), "observation.state": torch.randn(n, STATE_DIM, generator=g),
            "task": [TASKS[i % len(TASKS)] for i in range(n)]}


# ---------------------------------------------------------------------------------------------------------
def test_metaworld_pixels_recipe_builds_the_model_niaf_train_builds():
    policy = _policy(niaf_recipe="metaworld_pixels")
    built = policy.model.config.to_dict()
    # 1. every NiafConfig key of the recipe file, as written there
    model_section = _recipe_yaml("metaworld_pixels")["model"]
    keys = NIAF_ARGUMENTS & set(model_section)
    assert {"image_keypoints", "siren_omega0", "modulation_groups", "state_to_queries", "chunk_size"} <= keys
    for key in keys:
        assert built[key] == model_section[key], key
    vision = policy.model.config.backbone_config.vision_config
    assert (vision.image_size, vision.patch_size) == (model_section["tiny_image_size"], model_section["tiny_patch_size"])
    assert policy.model.config.backbone_config.text_config.hidden_size == model_section["tiny_hidden_size"]
    assert built["control_hz"] == FPS and built["num_cameras"] == 1 and built["state_dim"] == STATE_DIM
    assert policy.model.image_keypoints is not None  # the keypoint encoder exists
    assert policy.config.chunk_size == 8 and policy.config.action_delta_indices == list(range(8))
    # fixed sine-cosine patch positions, not trained
    tables = [m.position_embedding for m in policy.model.modules() if type(m).__name__ == "SiglipVisionEmbeddings"]
    assert len(tables) == 1 and not tables[0].weight.requires_grad
    grid = model_section["tiny_image_size"] // model_section["tiny_patch_size"]
    torch.testing.assert_close(tables[0].weight, sincos_2d_positions(grid, tables[0].weight.shape[1]), rtol=0, atol=0)
    # 2. the model niaf-train builds from the same recipe and dataset layout: the same NiafConfig and vocabulary
    cfg = load_config("metaworld_pixels.yaml", [])
    stats = niaf_stats_from_lerobot(_lerobot_stats(np.random.default_rng(0)), "QUANTILES", ACTION_DIM, STATE_DIM)
    layout = {"action_dim": ACTION_DIM, "state_dim": STATE_DIM, "fps": float(FPS), "cameras": [CAMERA]}
    processor, model = build_processor_and_model(cfg, layout, stats, TASKS)
    assert model.config.to_dict() == built
    assert processor.tokenizer.get_vocab() == policy.niaf_processor.tokenizer.get_vocab()
    assert processor.prompt_template == policy.niaf_processor.prompt_template
    names = {n: p.shape for n, p in model.named_parameters()}
    assert names == {n: p.shape for n, p in policy.model.named_parameters()}


def test_chunk_size_and_overrides_on_top_of_the_recipe():
    # an 80 Hz dataset: the recipe's 8 points at 20 Hz span 0.35 s = 29 frames, every frame supervised
    policy = _policy(niaf_recipe="metaworld_pixels", chunk_size=29, niaf_model_overrides="siren_width=32 image_keypoints=8")
    cfg = policy.model.config
    assert (cfg.chunk_size, cfg.control_hz, cfg.siren_width, cfg.image_keypoints) == (29, FPS, 32, 8)
    assert cfg.chunk_duration == pytest.approx(7 / 20)
    assert policy.config.action_delta_indices == list(range(29))
    assert cfg.siren_omega0 == 5.0 and cfg.state_to_queries  # the rest is the recipe's
    # the default recipe is niaf-train's default.yaml
    default = _policy().model.config.to_dict()
    section = _recipe_yaml("default")["model"]
    assert all(default[k] == section[k] for k in NIAF_ARGUMENTS & set(section))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"niaf_recipe": "no_such_recipe"}, "--policy.niaf_recipe no_such_recipe"),
     ({"niaf_model_overrides": "siren_widht=3"}, "siren_widht"),
     ({"niaf_model_overrides": "siren_width"}, "--policy.niaf_model_overrides"),
     ({"niaf_model_overrides": "siren_omega0=fast"}, "model.siren_omega0"),
     ({"chunk_size": 1}, "chunk_size")],
)
def test_bad_recipe_settings_are_refused_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        NiafConfig(device="cpu", **_features(), **kwargs)


def test_recipe_model_round_trip_is_strict_and_gives_identical_actions(tmp_path):
    recipe = tmp_path / "pixels.yaml"  # a recipe given as a path, gone when the policy is loaded again
    shutil.copy(resources.files("niaf_train") / "configs" / "metaworld_pixels.yaml", recipe)
    policy = _policy(niaf_recipe=str(recipe), chunk_size=29).eval()
    with torch.no_grad():  # the ψ heads start at zero (the shared prior); make the function depend on the input
        for p in policy.model.modulation_heads.parameters():
            p.normal_(0.0, 0.05)
    batch = _batch()
    before = policy.predict_action_chunk(batch)
    assert before.shape == (2, 29, ACTION_DIM)
    policy.save_pretrained(tmp_path / "saved")
    recipe.unlink()
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert saved["niaf_config"]["image_keypoints"] == 16 and saved["niaf_recipe_resolved"]["model"]["chunk_size"] == 29
    loaded = NiafPolicy.from_pretrained(tmp_path / "saved").eval()
    assert loaded.model.config.to_dict() == policy.model.config.to_dict()
    assert torch.equal(loaded.predict_action_chunk(batch), before)
    frozen = [n for n, p in loaded.model.named_parameters() if not p.requires_grad]
    assert frozen == [n for n, p in policy.model.named_parameters() if not p.requires_grad] and len(frozen) == 1
    assert loaded.config.get_optimizer_preset() == policy.config.get_optimizer_preset()


def test_the_policy_sees_niaf_trains_pixels_before_and_after_a_save(tmp_path):
    """The fresh policy preprocesses images with the image processor class niaf-train builds (the PIL one), and
    the saved policy reloads that class although torchvision is installed here (transformers' own choice would be
    the torchvision class, whose resizing differs by up to 2/255): bit-identical pixel values throughout."""
    pytest.importorskip("torchvision")  # LeRobot's environment has it; that is what the check is about
    policy = _policy(niaf_recipe="metaworld_pixels")
    cfg = load_config("metaworld_pixels.yaml", [])
    stats = niaf_stats_from_lerobot(_lerobot_stats(np.random.default_rng(0)), "QUANTILES", ACTION_DIM, STATE_DIM)
    layout = {"action_dim": ACTION_DIM, "state_dim": STATE_DIM, "fps": float(FPS), "cameras": [CAMERA]}
    processor, _ = build_processor_and_model(cfg, layout, stats, TASKS)
    batch = _batch(n=3)
    reference = processor(images=[[image] for image in batch[CAMERA]], text=batch["task"])["pixel_values"]
    assert torch.equal(policy.model_inputs(batch)["pixel_values"], reference)
    policy.save_pretrained(tmp_path / "saved")
    loaded = NiafPolicy.from_pretrained(tmp_path / "saved")
    assert type(loaded.niaf_processor.image_processor) is type(processor.image_processor)
    assert loaded.niaf_processor.image_backend == "pil"
    assert torch.equal(loaded.model_inputs(batch)["pixel_values"], reference)


@pytest.mark.parametrize("steps", [6000, 137, 8, 1])
@pytest.mark.parametrize("recipe", ["metaworld_pixels", "default"])
def test_optimizer_and_schedule_follow_niaf_train(recipe, steps):
    config = NiafConfig(device="cpu", niaf_recipe=recipe, **_features())
    torch.manual_seed(0)
    net_lerobot = torch.nn.Linear(3, 2)
    net_niaf = torch.nn.Linear(3, 2)
    net_niaf.load_state_dict(net_lerobot.state_dict())
    optimizer = config.get_optimizer_preset().build(list(net_lerobot.parameters()))
    scheduler = config.get_scheduler_preset().build(optimizer, steps)
    niaf_optimizer, niaf_scheduler = make_optimizer_and_scheduler(
        load_config(f"{recipe}.yaml", ["--max_steps", str(steps)]), net_niaf, 1)
    for key in ("betas", "eps", "weight_decay", "lr"):
        assert optimizer.defaults[key] == niaf_optimizer.param_groups[0][key if key != "lr" else "initial_lr"], key
    t = _recipe_yaml(recipe)["training"]
    assert config.get_optimizer_preset().grad_clip_norm == t["max_grad_norm"]
    ours, theirs = [], []
    for _ in range(steps):
        ours.append(optimizer.param_groups[0]["lr"])
        theirs.append(niaf_optimizer.param_groups[0]["lr"])
        for net, opt, sched in ((net_lerobot, optimizer, scheduler), (net_niaf, niaf_optimizer, niaf_scheduler)):
            opt.zero_grad()
            net(torch.ones(1, 3)).sum().backward()
            opt.step()
            sched.step()
    np.testing.assert_array_equal(np.array(ours), np.array(theirs))
    assert np.max(ours) == pytest.approx(t["learning_rate"])
    if steps >= 100:  # the three stages, as the recipe's ratios put them
        warm, decay = round(t["warmup_ratio"] * steps), round(t["decay_ratio"] * steps)
        assert ours[0] == pytest.approx(t["learning_rate"] / warm)
        assert ours[warm] == ours[steps - decay - 1] == t["learning_rate"]
        assert ours[steps - decay] == t["learning_rate"] > ours[steps - decay + 1] > ours[-1]
    torch.testing.assert_close(net_lerobot.weight, net_niaf.weight, rtol=0, atol=0)  # same AdamW updates


def test_scheduler_state_survives_a_save_and_load():
    config = NiafConfig(device="cpu", niaf_recipe="metaworld_pixels", **_features())
    net = torch.nn.Linear(2, 2)
    optimizer = config.get_optimizer_preset().build(list(net.parameters()))
    scheduler = config.get_scheduler_preset().build(optimizer, 100)
    for _ in range(80):
        optimizer.step()
        scheduler.step()
    state = json.loads(json.dumps(scheduler.state_dict()))  # LeRobot writes it as JSON
    fresh = config.get_scheduler_preset().build(config.get_optimizer_preset().build(list(net.parameters())), 100)
    fresh.load_state_dict(state)
    assert fresh.get_last_lr() == scheduler.get_last_lr()
    assert fresh.lr_lambdas[0](90) == scheduler.lr_lambdas[0](90) < 1.0


def test_head_learning_rate_gives_niaf_trains_parameter_groups(tmp_path):
    recipe = _recipe_yaml("metaworld_pixels")
    recipe["training"]["head_learning_rate"] = 5e-3
    path = tmp_path / "head_lr.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    policy = _policy(niaf_recipe=str(path))
    optimizer = policy.config.get_optimizer_preset().build(policy.get_optim_params())
    niaf_optimizer, _ = make_optimizer_and_scheduler(load_config(str(path), []), policy.model, 1)

    def groups(opt):
        return [(g.get("initial_lr", g["lr"]), {id(p) for p in g["params"]}) for g in opt.param_groups]

    assert groups(optimizer) == groups(niaf_optimizer)
    assert [lr for lr, _ in groups(optimizer)] == [2e-3, 5e-3]
