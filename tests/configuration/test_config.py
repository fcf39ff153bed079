"""NiafConfig: derived quantities, validation, exact JSON round trip, no torch import of its own."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from configuration_niaf import NiafConfig

REPO = Path(__file__).resolve().parents[2]

STATS = {"action": {"q01": [-1.5, 0.0, 2.0], "q99": [1.5, 0.25, 2.5], "mean": [0.1, 0.2, 0.3], "std": [1.0, 0.5, 0.1]}}


def test_derived_quantities():
    c = NiafConfig(chunk_size=50, control_hz=50.0, siren_layers=3, modulation_groups=64, siren_width=256)
    assert c.num_queries == 3 * 65 == 195
    assert c.chunk_duration == pytest.approx(49 / 50)  # T = (K-1)/f
    assert c.tau_to_seconds == pytest.approx(2 / 0.98)
    c10 = NiafConfig(chunk_size=10, control_hz=30.0)
    assert c10.chunk_duration == pytest.approx(0.3)  # K=10 at 30 Hz → T = 0.3 s
    assert c10.hidden_size == 1024  # default Florence-2 config: d_model of the language model


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"siren_width": 100, "modulation_groups": 64}, "modulation_groups"),
        ({"chunk_size": 1}, "chunk_size"),
        ({"chunk_size": 2.5}, "chunk_size"),
        ({"control_hz": 0}, "control_hz"),
        ({"control_hz": float("nan")}, "control_hz"),
        ({"siren_omega0": -30.0}, "siren_omega0"),
        ({"siren_layers": 0}, "siren_layers"),
        ({"action_dim": 0}, "action_dim"),
        ({"action_dim": True}, "action_dim"),
        ({"use_state": True}, "state_dim"),
        ({"use_state": "yes", "state_dim": 3}, "use_state"),
        ({"num_cameras": 0}, "num_cameras"),
        ({"normalization_mode": "minmax"}, "normalization_mode"),
        ({"loss_weight_jerk": -1e-3}, "loss_weight_jerk"),
        ({"loss_weight_velocity": "1"}, "loss_weight_velocity"),
        ({"query_init_std": 0.0}, "query_init_std"),
        ({"unnormalized_action_dims": [7]}, "unnormalized_action_dims"),
        ({"unnormalized_action_dims": [1, 1]}, "unnormalized_action_dims"),
        ({"backbone_config": {"hidden_size": 3}}, "model_type"),
        ({"backbone_config": {"model_type": "not-a-model"}}, "backbone_config"),
        ({"backbone_config": 3}, "backbone_config"),
        ({"action_dim": 3, "normalization_stats": {"actions": STATS["action"]}}, "unknown feature"),
        ({"action_dim": 4, "normalization_stats": STATS}, "expected 4"),
        ({"action_dim": 3, "normalization_stats": {"action": {"q01": [0, 0, float("inf")], "q99": [1, 1, 1]}}}, "finite"),
        ({"action_dim": 3, "normalization_stats": {"action": {"min": [0, 0, 0]}}, "normalization_mode": "MIN_MAX"}, "max"),
        ({"action_dim": 3, "normalization_stats": {"action": {"q01": [0, 0, 0], "q99": [1, 1, 1], "p50": [0, 0, 0]}}}, "p50"),
    ],
)
def test_validation_names_the_field(kwargs, name):
    with pytest.raises(ValueError, match=name):
        NiafConfig(**kwargs)


@pytest.mark.parametrize(
    "backbone",
    [
        None,
        {"model_type": "paligemma", "text_config": {"model_type": "gemma", "hidden_size": 64, "num_hidden_layers": 1}},
        {"model_type": "qwen2_5_vl", "text_config": {"hidden_size": 64, "num_hidden_layers": 1}},
        {"model_type": "smolvlm"},
    ],
)
def test_json_round_trip_is_exact(tmp_path, backbone):
    c = NiafConfig(
        backbone_config=backbone,
        action_dim=3,
        chunk_size=50,
        control_hz=49.5,
        use_state=True,
        state_dim=2,
        normalization_stats={**STATS, "state": {"q01": [0.1 + 0.2, -1e-9], "q99": [1 / 3, 2.0]}},
        unnormalized_action_dims=[2],
        loss_weight_jerk=1e-4,
    )
    text = c.to_json_string()
    again = NiafConfig.from_dict(json.loads(text))
    assert again.to_json_string() == text
    c.save_pretrained(tmp_path)
    loaded = NiafConfig.from_pretrained(tmp_path)
    assert loaded.to_json_string() == text
    assert loaded.normalization_stats["state"]["q01"][0] == 0.1 + 0.2  # floats survive bit-exactly
    assert type(loaded.backbone_config) is type(c.backbone_config)
    assert json.loads(text)["num_queries"] == c.num_queries


def test_auto_config_knows_niaf_after_registration(tmp_path):
    from transformers import AutoConfig

    import modeling_niaf

    modeling_niaf.register_auto_classes()

    NiafConfig(action_dim=2).save_pretrained(tmp_path)
    cfg = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(cfg, NiafConfig) and cfg.action_dim == 2


def test_configuration_module_imports_without_torch():
    """Run in a fresh interpreter where torch cannot be imported at all."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None  # `import torch` raises ImportError and find_spec("torch") is None
        sys.path.insert(0, {str(REPO)!r})
        from configuration_niaf import NiafConfig
        c = NiafConfig(action_dim=4, chunk_size=5)
        assert c.num_queries == 195, c.num_queries
        assert sys.modules["torch"] is None
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")


def test_configuration_source_has_no_torch_import():
    source = (REPO / "configuration_niaf" / "configuration_niaf.py").read_text()
    assert "import torch" not in source


def test_units_module_imports_without_torch_or_transformers():
    """configuration_niaf.normalization (statistics, transforms) serves niaf-data and a deployment process alone."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None
        sys.modules["transformers"] = None
        sys.path.insert(0, {str(REPO)!r})
        from configuration_niaf.normalization import AffineNormalizer, compute_stats, to_absolute, to_relative
        stats = compute_stats([[0.0, 1.0], [2.0, 5.0]])
        norm = AffineNormalizer.from_stats(stats, "MIN_MAX", 2)
        import numpy as np
        assert norm.normalize(np.array([2.0, 5.0])).tolist() == [1.0, 1.0]
        chunk = [[1.0, 2.0], [3.0, 4.0]]
        assert to_absolute(to_relative(chunk, [0.5], [0, None]), [0.5], [0, None]).tolist() == chunk
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")
