"""niaf-train's ``model`` section is derived from `NiafConfig`: one source for the model's hyperparameters."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
from niaf_train.baselines import ACTION_HEADS, HEAD_DEFAULTS, MODEL_ARGUMENT_KEYS
from niaf_train.training.arguments import (
    CHOICES,
    NIAF_CONFIG_SET_BY_TRAINER,
    TRAINING_DEFAULTS,
    ComparisonHeadOptions,
    ModelOptions,
    NiafConfigOptions,
    build_config,
    config_argument_docs,
    config_options,
    field_docs,
)

from configuration_niaf import NiafConfig
from configuration_niaf.normalization import NORMALIZATION_MODES


def _niaf_arguments() -> dict[str, inspect.Parameter]:
    params = inspect.signature(NiafConfig.__init__).parameters
    return {n: p for n, p in params.items() if n != "self" and p.kind is not p.VAR_KEYWORD}


def test_every_niaf_config_argument_is_a_model_key_with_niaf_configs_default_and_description():
    arguments = _niaf_arguments()
    derived = {f.name: f for f in dataclasses.fields(NiafConfigOptions)}
    assert set(derived) == set(arguments) - set(NIAF_CONFIG_SET_BY_TRAINER)
    assert set(NIAF_CONFIG_SET_BY_TRAINER) <= set(arguments)  # no stale name in the exclusion list
    model_keys = {f.name for f in dataclasses.fields(ModelOptions)}
    assert set(derived) <= model_keys and not set(NIAF_CONFIG_SET_BY_TRAINER) & model_keys
    plain = ModelOptions()
    for name in derived:
        expected = TRAINING_DEFAULTS.get(name, arguments[name].default)
        assert getattr(plain, name) == expected, name
    # the one deliberate difference of value: niaf-train trains the position loss alone unless asked
    assert arguments["loss_weight_velocity"].default == 1.0 and plain.loss_weight_velocity == 0.0
    assert arguments["unnormalized_action_dims"].default is None and plain.unnormalized_action_dims == []
    docs, model_docs = config_argument_docs(NiafConfig), field_docs(ModelOptions)
    assert set(arguments) <= set(docs), set(arguments) - set(docs)  # NiafConfig documents every argument
    for name in derived:
        first_words = " ".join(docs[name].split()[1:4])  # after a possibly capitalised first word
        assert first_words in model_docs[name], (name, model_docs[name])


def test_choices_and_comparison_head_defaults_come_from_the_models_constants():
    assert CHOICES["model.action_head"] is ACTION_HEADS
    assert CHOICES["model.normalization_mode"] is NORMALIZATION_MODES
    plain = ModelOptions()
    for name in MODEL_ARGUMENT_KEYS:
        assert getattr(plain, name) == HEAD_DEFAULTS[name], name
    assert {f.name for f in dataclasses.fields(ComparisonHeadOptions)} == {"action_head", *MODEL_ARGUMENT_KEYS}


def test_a_new_config_argument_needs_no_edit_in_niaf_train():
    """An argument added to a config class (documented in its docstring) becomes a key with its type, default
    and description."""

    class WiderConfig(NiafConfig):
        r"""A config with one argument more.

        Args:
            action_dim (`int`, defaults to 7): dimension D of an action.
            head_dropout (`float`, defaults to 0.1): dropout on the query outputs,
                during training only.
            anchors (`list[int]`, *optional*): anchor dims.
        """

        def __init__(self, action_dim: int = 7, head_dropout: float = 0.1, anchors: list[int] | None = None,
                     **kwargs):
            super().__init__(action_dim=action_dim, **kwargs)

    options = config_options(WiderConfig)
    fields = {f.name: f for f in dataclasses.fields(options)}
    assert set(fields) == {"head_dropout", "anchors"}  # action_dim is set from the dataset
    assert fields["head_dropout"].default == 0.1 and fields["head_dropout"].type is float
    assert options.__field_docs__["head_dropout"] == "Dropout on the query outputs, during training only."
    assert "comma-separated" in options.__field_docs__["anchors"] and options().anchors is None


def test_yaml_and_command_line_set_the_derived_keys():
    cfg = build_config({"model": {"query_init_std": 0.05, "unnormalized_action_dims": [3]}},
                       ["--model.loss_weight_velocity", "0.5", "--model.relative_action_state_indices", "0,null",
                        "--use_state"], "test.yaml")
    m = cfg.model
    assert (m.query_init_std, m.unnormalized_action_dims, m.loss_weight_velocity) == (0.05, [3], 0.5)
    assert m.relative_action_state_indices == [0, None] and m.use_state is True
    assert m.niaf_config_kwargs()["query_init_std"] == 0.05
    assert set(m.niaf_config_kwargs()) == {f.name for f in dataclasses.fields(NiafConfigOptions)}


@pytest.mark.parametrize("action_head", ["niaf", "bspline"])
def test_every_model_key_reaches_the_built_config_and_the_shared_ones_the_processor(action_head):
    from niaf_train.training.building import build_processor_and_model

    overrides = {
        "chunk_size": 5, "siren_layers": 2, "siren_width": 16, "siren_omega0": 7.0, "modulation_groups": 4,
        "use_state": True, "state_to_queries": True, "normalization_mode": "IDENTITY",
        "unnormalized_action_dims": [3], "relative_action_state_indices": [0, None, None, None],
        "loss_weight_position": 0.5, "loss_weight_velocity": 0.25, "loss_weight_jerk": 1e-3,
        "query_init_std": 0.05, "image_keypoints": 2, "image_keypoint_channels": 8,
    }
    # a NiafConfig argument added without a value here fails this test: give it a non-default one above
    assert set(overrides) == {f.name for f in dataclasses.fields(NiafConfigOptions)}
    args = [f"--model.{k}={','.join('null' if x is None else str(x) for x in v) if isinstance(v, list) else v}"
            for k, v in overrides.items()]
    cfg = build_config({"model": {"tiny_hidden_size": 16, "tiny_num_layers": 1}},
                       args + ["--model.action_head", action_head])
    layout = {"action_dim": 4, "state_dim": 6, "fps": 20.0, "cameras": ["observation.images.top"]}
    processor, model = build_processor_and_model(cfg, layout, {}, ["reach"])
    for name, value in overrides.items():
        assert getattr(model.config, name) == value, name
    assert (model.config.action_dim, model.config.state_dim, model.config.control_hz) == (4, 6, 20.0)
    assert getattr(model.config, "action_head", "niaf") == action_head
    for name in ("normalization_mode", "unnormalized_action_dims", "relative_action_state_indices"):
        assert getattr(processor, name) == overrides[name], name
    assert (processor.action_dim, processor.state_dim, processor.num_cameras) == (4, 6, 1)
