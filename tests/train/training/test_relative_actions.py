"""Relative ("delta") actions end to end: config, ActionFunction offset, model inference, training pipeline."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from niaf_tiny_backbones import BACKBONES, make_inputs

from configuration_niaf import NiafConfig
from modeling_niaf import ActionFunction, NiafForActionFunction
from modeling_niaf.siren import ModulatedSiren

INDICES = [0, 2, None]  # action dim 0 relative to state 0, dim 1 to state 2, dim 2 (a gripper) absolute
# Hand-chosen statistics: QUANTILES maps q01 → -1, q99 → +1, so center = (q01 + q99) / 2, half = (q99 - q01) / 2.
ACTION_STATS = {"q01": [-1.0, 0.0, 2.0], "q99": [1.0, 4.0, 3.0]}  # center [0, 2, 2.5], half [1, 2, 0.5]
STATE_STATS = {"q01": [0.0, -2.0, 10.0, 1.0], "q99": [2.0, 2.0, 14.0, 3.0]}  # center [1, 0, 12, 2], half [1, 2, 2, 1]
ACTION_CENTER, ACTION_HALF = np.array([0.0, 2.0, 2.5]), np.array([1.0, 2.0, 0.5])
STATE_CENTER, STATE_HALF = np.array([1.0, 0.0, 12.0, 2.0]), np.array([1.0, 2.0, 2.0, 1.0])


def relative_config(**overrides) -> NiafConfig:
    kwargs = dict(
        backbone_config=BACKBONES["paligemma"](), action_dim=3, chunk_size=6, control_hz=10.0, siren_layers=2,
        siren_width=16, modulation_groups=4, use_state=True, state_dim=4, relative_action_state_indices=INDICES,
        normalization_stats={"action": ACTION_STATS, "state": STATE_STATS},
    )
    kwargs.update(overrides)
    return NiafConfig(**kwargs)


# --------------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("indices", "overrides", "message"),
    [
        ([0, 2], {}, r"NiafConfig: `relative_action_state_indices` has 2 entries but there are 3 action dims"),
        ([0, 4, None], {}, r"`relative_action_state_indices\[1\]` = 4 is not a state index in \[0, 4\)"),
        ([0, -1, None], {}, r"`relative_action_state_indices\[1\]` = -1 is not a state index"),
        ([0, 1.0, None], {}, r"`relative_action_state_indices\[1\]` must be an int state index or None, got float"),
        ([True, 1, None], {}, r"`relative_action_state_indices\[0\]` must be an int state index or None, got bool"),
        ([None, None, None], {}, r"`relative_action_state_indices` has no int entry"),
        ("0,1,2", {}, r"`relative_action_state_indices` must be None or a list of 3 entries"),
        ([0, 1, 2], {"use_state": False, "state_dim": None}, r"`relative_action_state_indices` needs `use_state=True`"),
    ],
)
def test_config_validation_names_the_argument(indices, overrides, message):
    with pytest.raises(ValueError, match=message):
        relative_config(relative_action_state_indices=indices, **overrides)


def test_config_json_round_trip_is_exact(tmp_path):
    cfg = relative_config()
    assert cfg.relative_action_state_indices == [0, 2, None]
    assert json.loads(cfg.to_json_string())["relative_action_state_indices"] == [0, 2, None]
    again = NiafConfig.from_dict(cfg.to_dict())
    assert again.relative_action_state_indices == [0, 2, None]
    cfg.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["relative_action_state_indices"] == [0, 2, None]
    loaded = NiafConfig.from_pretrained(tmp_path)
    assert loaded.relative_action_state_indices == [0, 2, None] and loaded.to_dict() == cfg.to_dict()
    # the default is unchanged: all absolute
    absolute = relative_config(relative_action_state_indices=None)
    assert absolute.relative_action_state_indices is None
    assert NiafConfig.from_dict(absolute.to_dict()).relative_action_state_indices is None


# --------------------------------------------------------------------------------------------------------
# ActionFunction / NumpyActionFunction with a position offset
# --------------------------------------------------------------------------------------------------------
OFFSET = np.array([[1.0, -2.0, 0.5], [10.0, 0.0, -3.0]])


def _function(offset=None, dtype=torch.float64) -> ActionFunction:
    torch.manual_seed(3)
    config = NiafConfig(siren_layers=3, siren_width=16, modulation_groups=4, action_dim=3, chunk_size=11, control_hz=20.0)
    siren = ModulatedSiren(config).to(dtype)
    shape = (2, config.siren_layers, config.siren_width)
    gamma, beta = torch.randn(shape, dtype=dtype) * 0.2, torch.randn(shape, dtype=dtype) * 0.2
    return ActionFunction(siren, gamma, beta, config.chunk_duration, np.array([0.5, -2.0, 10.0]),
                          np.array([0.1, 3.0, 0.5]), chunk_size=config.chunk_size, position_offset=offset)


def test_offset_moves_positions_only():
    fn, plain = _function(OFFSET), _function()
    raw = fn.siren(torch.linspace(-1, 1, 9, dtype=torch.float64), fn.gamma, fn.beta, derivatives=0)[0]
    traj, ref = fn(num_points=9, derivatives=3), plain(num_points=9, derivatives=3)
    # by hand: normalised SIREN output · half + center + the sample's offset
    hand = raw * torch.tensor([0.1, 3.0, 0.5]) + torch.tensor([0.5, -2.0, 10.0]) + torch.tensor(OFFSET)[:, None, :]
    torch.testing.assert_close(traj.position, hand)
    torch.testing.assert_close(traj.position, ref.position + torch.tensor(OFFSET)[:, None, :])
    for name in ("velocity", "acceleration", "jerk"):
        assert torch.equal(getattr(traj, name), getattr(ref, name)), name
    # normalised units: no offset at all
    norm, norm_ref = fn(num_points=9, denormalize=False), plain(num_points=9, denormalize=False)
    for name in ("position", "velocity", "acceleration", "jerk"):
        assert torch.equal(getattr(norm, name), getattr(norm_ref, name)), name
    assert np.array_equal(plain.position_offset, np.zeros((2, 3)))


def test_offset_shapes_and_errors():
    one = _function(np.array([1.0, 2.0, 3.0]))  # [D]: the same offset for every sample
    assert np.array_equal(one.position_offset, np.array([[1.0, 2.0, 3.0]] * 2))
    assert np.array_equal(_function(torch.tensor(OFFSET)).position_offset, OFFSET)
    for bad in (np.zeros((3, 3)), np.zeros((2, 2)), np.zeros((2, 3, 1)), np.zeros(2)):
        with pytest.raises(ValueError, match=r"`position_offset` must have shape \[B, D\] = \[2, 3\] or \[D\] = \[3\]"):
            _function(bad)
    with pytest.raises(ValueError, match="`position_offset` contains NaN"):
        _function(np.array([0.0, np.nan, 0.0]))


def test_getitem_keeps_the_samples_offset():
    fn = _function(OFFSET)
    full = fn(num_points=5)
    for index, rows in ((1, slice(1, 2)), (-1, slice(1, 2)), (0, slice(0, 1)), (slice(0, 2), slice(0, 2))):
        part = fn[index]
        assert np.array_equal(part.position_offset, OFFSET[rows])
        torch.testing.assert_close(part(num_points=5).position, full.position[rows])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_numpy_twin_and_at_match_torch_with_offset(dtype):
    fn = _function(OFFSET)
    twin = fn.to_numpy(dtype=dtype)
    tol = 1e-5 if dtype == np.float64 else 1e-4  # relative to each order's magnitude (jerk reaches ~1e5 here)
    assert np.array_equal(twin.position_offset, OFFSET)
    times = np.array([0.0, 0.13, 0.31, 0.5])
    ref = fn(times=times, derivatives=3).to_numpy()
    got = twin(times=times, derivatives=3)
    for name in ("position", "velocity", "acceleration", "jerk"):
        scale = max(1.0, float(np.abs(getattr(ref, name)).max()))
        np.testing.assert_allclose(getattr(got, name), getattr(ref, name), rtol=0, atol=tol * scale)
    np.testing.assert_allclose(twin(times=times, denormalize=False).position,
                               fn(times=times, denormalize=False).position.numpy(), rtol=0, atol=1e-5)
    for sample in (0, 1, -1):
        for j, t in enumerate(times):
            hot = twin.at(t, derivatives=3, sample=sample)
            expect = np.stack([getattr(ref, n)[sample, j] for n in ("position", "velocity", "acceleration", "jerk")])
            scale = np.maximum(1.0, np.abs(expect).max(axis=1, keepdims=True))
            np.testing.assert_allclose(hot / scale, expect / scale, rtol=0, atol=tol)
    # the offset itself, by difference against the same function without one
    plain = _function().to_numpy(dtype=dtype)
    np.testing.assert_allclose(twin.at(0.2, 0, sample=1)[0] - plain.at(0.2, 0, sample=1)[0], OFFSET[1], atol=1e-5)


def test_numpy_twin_action_center_can_still_be_replaced():
    """A shallow copy with a new action_center moves positions (the offset is added on top, not cached)."""
    twin = _function(OFFSET).to_numpy()
    before = twin.at(0.1, 1, sample=1).copy()
    shifted = copy.copy(twin)
    shifted.action_center = twin.action_center + np.array([1.0, 0.0, -1.0])
    np.testing.assert_allclose(shifted.at(0.1, 1, sample=1)[0], before[0] + [1.0, 0.0, -1.0], atol=1e-12)
    np.testing.assert_array_equal(shifted.at(0.1, 1, sample=1)[1], before[1])
    np.testing.assert_array_equal(twin.at(0.1, 1, sample=1), before)  # the original is untouched


# --------------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------------
def _model(**overrides) -> NiafForActionFunction:
    torch.manual_seed(0)
    model = NiafForActionFunction(relative_config(**overrides)).eval()
    with torch.no_grad():  # a fresh model has γ = β = 0; random heads make the output depend on the inputs
        for p in model.modulation_heads.parameters():
            p.normal_(0.0, 0.5)
    return model


RAW_STATE = torch.tensor([[1.5, -1.0, 13.0, 2.0], [0.2, 2.0, 10.5, 1.0]], dtype=torch.float64)


def _normalised_state() -> torch.Tensor:
    return ((RAW_STATE - torch.tensor(STATE_CENTER)) / torch.tensor(STATE_HALF)).float()


def test_generate_actions_adds_the_raw_state_back():
    model = _model()
    inputs = make_inputs("paligemma", batch=2)
    state = _normalised_state()
    traj = model.generate_actions(**inputs, state=state, num_points=7, derivatives=2)
    norm = model.generate_actions(**inputs, state=state, num_points=7, derivatives=2, denormalize=False)
    offset = torch.zeros(2, 3, dtype=torch.float64)
    offset[:, 0], offset[:, 1] = RAW_STATE[:, 0], RAW_STATE[:, 2]  # dim 2 (None) stays absolute: no offset
    hand = norm.position.double() * torch.tensor(ACTION_HALF) + torch.tensor(ACTION_CENTER) + offset[:, None, :]
    torch.testing.assert_close(traj.position.double(), hand, rtol=0, atol=1e-4)
    torch.testing.assert_close(traj.velocity.double(), norm.velocity.double() * torch.tensor(ACTION_HALF),
                               rtol=1e-6, atol=1e-4)
    # the same weights configured absolute: identical in dim 2, shifted by exactly the state in dims 0 and 1
    absolute = NiafForActionFunction(relative_config(relative_action_state_indices=None)).eval()
    absolute.load_state_dict(model.state_dict())
    plain = absolute.generate_actions(**inputs, state=state, num_points=7, derivatives=0)
    torch.testing.assert_close(traj.position[..., 2], plain.position[..., 2], rtol=0, atol=0)
    torch.testing.assert_close((traj.position - plain.position).double(), offset[:, None, :].expand(2, 7, 3),
                               rtol=0, atol=1e-4)
    center, half = model.state_affine()
    np.testing.assert_array_equal(center, STATE_CENTER)
    np.testing.assert_array_equal(half, STATE_HALF)
    np.testing.assert_allclose(model.predict_action_function(**inputs, state=state).position_offset,
                               offset.numpy(), atol=1e-5)
    assert not model.predict_action_function(**inputs, state=state, denormalize=False).position_offset.any()


def test_relative_round_trip_through_the_model_offset_is_exact():
    """to_relative (how targets are built) then the model's offset path (how positions come back) = identity.

    Float64 throughout, dyadic values and power-of-two half-ranges, so every step is exact and the comparison
    is bit for bit; by hand, the offset is the de-normalised state entries named by INDICES.
    """
    from configuration_niaf.normalization import relative_offset, to_absolute, to_relative

    model = _model()
    state = np.array([[1.5, -1.0, 13.0, 2.0], [0.25, 2.0, 10.5, 1.0]])  # [2, 4] physical, dyadic
    absolute = np.arange(2 * 5 * 3, dtype=np.float64).reshape(2, 5, 3) / 8.0 - 1.5  # [B, K, D] physical
    deltas = to_relative(absolute, state, INDICES)
    hand = absolute.copy()
    hand[..., 0] -= state[:, None, 0]
    hand[..., 1] -= state[:, None, 2]
    np.testing.assert_array_equal(deltas, hand)
    normalised = torch.as_tensor((state - STATE_CENTER) / STATE_HALF, dtype=torch.float64)  # the model input
    offset = model.relative_action_offset(normalised)  # [B, D]: de-normalise, then pick INDICES
    np.testing.assert_array_equal(offset, [[1.5, 13.0, 0.0], [0.25, 10.5, 0.0]])
    np.testing.assert_array_equal(offset, relative_offset(state, INDICES))
    np.testing.assert_array_equal(deltas + offset[:, None, :], absolute)
    np.testing.assert_array_equal(to_absolute(deltas, state, INDICES), absolute)
    # random (non-dyadic) values: the same up to float64 rounding
    rng = np.random.default_rng(4)
    absolute, state = rng.normal(size=(3, 6, 3)) * 5.0, rng.normal(size=(3, 4)) * 3.0
    offset = model.relative_action_offset(torch.as_tensor((state - STATE_CENTER) / STATE_HALF))
    np.testing.assert_allclose(to_relative(absolute, state, INDICES) + offset[:, None, :], absolute, rtol=0, atol=1e-13)


def test_missing_state_statistics_is_a_clear_error():
    model = _model(normalization_stats={"action": ACTION_STATS})
    inputs = make_inputs("paligemma", batch=2)
    with pytest.raises(ValueError, match=r"needs state statistics for normalization_mode=QUANTILES"):
        model.generate_actions(**inputs, state=_normalised_state())
    model.generate_actions(**inputs, state=_normalised_state(), denormalize=False)  # normalised deltas need none


def test_checkpoint_refuses_another_relative_setting(tmp_path):
    _model().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="`relative_action_state_indices` is None but the checkpoint"):
        NiafForActionFunction.from_pretrained(tmp_path, relative_action_state_indices=None)
    loaded = NiafForActionFunction.from_pretrained(tmp_path)
    assert loaded.config.relative_action_state_indices == INDICES


# --------------------------------------------------------------------------------------------------------
# NiafProcessor: absolute targets in, normalised deltas out
# --------------------------------------------------------------------------------------------------------
def _relative_processor(indices=(2, None, 0)):
    from niaf_tiny_backbones import image_tokens_per_image, make_image_processor, make_tokenizer

    from modeling_niaf import NiafProcessor

    return NiafProcessor(
        image_processor=make_image_processor("paligemma"), tokenizer=make_tokenizer(), image_token="<image>",
        image_seq_length=image_tokens_per_image("paligemma"), action_dim=3, state_dim=4,
        relative_action_state_indices=None if indices is None else list(indices),
    )


def test_processor_builds_normalised_deltas_from_absolute_targets(tmp_path):
    rng = np.random.default_rng(7)
    chunks = rng.normal(size=(40, 5, 3)) * [1.0, 3.0, 0.5] + [2.0, -1.0, 0.0]  # [N, K, D] absolute
    states = rng.normal(size=(40, 4)) * 2.0
    proc = _relative_processor()
    stats = proc.fit_stats(chunks, state=states)
    # by hand: dim 0 minus state 2, dim 1 absolute, dim 2 minus state 0, at every chunk point
    hand = chunks.copy()
    hand[..., 0] -= states[:, None, 2]
    hand[..., 2] -= states[:, None, 0]
    flat = hand.reshape(-1, 3)
    np.testing.assert_allclose(stats["action"]["q01"], np.quantile(flat, 0.01, axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats["action"]["mean"], flat.mean(0), rtol=1e-12)
    assert stats["action"]["count"] == [200]
    np.testing.assert_allclose(stats["state"]["mean"], states.mean(0), rtol=1e-12)
    center = (np.array(stats["action"]["q01"]) + np.array(stats["action"]["q99"])) / 2
    half = (np.array(stats["action"]["q99"]) - np.array(stats["action"]["q01"])) / 2
    obs = [[rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)] for _ in range(2)]
    batch = proc(images=obs, text=["pick", "place"], state=states[:2], actions=chunks[:2])
    np.testing.assert_allclose(batch["actions"].double().numpy(), (hand[:2] - center) / half, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="pass `state` too"):
        proc(images=obs, text=["pick", "place"], actions=chunks[:2])
    with pytest.raises(ValueError, match=r"pass action chunks \[N, K, D\] and the state"):
        proc.fit_stats(chunks[:, 0], state=states)
    # saved and reloaded with the setting
    proc.save_pretrained(tmp_path / "proc")
    loaded = type(proc).from_pretrained(tmp_path / "proc")
    assert loaded.relative_action_state_indices == [2, None, 0]
    again = loaded(images=obs, text=["pick", "place"], state=states[:2], actions=chunks[:2])
    torch.testing.assert_close(again["actions"], batch["actions"], rtol=0, atol=0)


def test_processor_refuses_bad_indices_and_a_model_with_another_setting():
    for indices, message in (((2, None), r"has 2 entries but there are 3 action dims"),
                             ((4, None, 0), r"NiafProcessor: `relative_action_state_indices\[0\]` = 4 is not a state index in \[0, 4\)"),
                             ((None, None, None), "has no int entry")):
        with pytest.raises(ValueError, match=message):
            _relative_processor(indices)
    proc = _relative_processor((0, 2, None))
    proc.set_stats({"action": ACTION_STATS, "state": STATE_STATS})
    proc.check_model_config(relative_config())  # the model's INDICES = [0, 2, None]
    with pytest.raises(ValueError, match=r"`relative_action_state_indices` is \[0, 2, None\] here but None"):
        proc.check_model_config(relative_config(relative_action_state_indices=None))


# --------------------------------------------------------------------------------------------------------
# Training pipeline: the delta transform and the statistics of the deltas
# --------------------------------------------------------------------------------------------------------
def test_delta_transform_on_a_hand_written_chunk():
    from configuration_niaf.normalization import to_absolute, to_relative

    def to_relative_actions(action, state, indices):  # as niaf-train calls it
        return to_relative(action, state, indices, name="model.relative_action_state_indices")

    action = np.array([[1.0, 10.0, 0.0], [1.5, 11.0, 1.0], [2.0, 12.5, 1.0]])  # K = 3, D = 3
    state = np.array([0.5, 7.0, 9.0, -1.0])  # S = 4
    # dim 0 - state[0] = a - 0.5; dim 1 - state[2] = a - 9; dim 2 unchanged
    expect = np.array([[0.5, 1.0, 0.0], [1.0, 2.0, 1.0], [1.5, 3.5, 1.0]])
    np.testing.assert_array_equal(to_relative_actions(action, state, INDICES), expect)
    assert action[0, 0] == 1.0  # the input is not modified
    other = np.array([2.0, 0.0, 10.0, 0.0])
    batched = to_relative_actions(torch.tensor(np.stack([action, action])), torch.tensor(np.stack([state, other])), INDICES)
    np.testing.assert_array_equal(batched[0], expect)
    np.testing.assert_array_equal(batched[1], [[-1.0, 0.0, 0.0], [-0.5, 1.0, 1.0], [0.0, 2.5, 1.0]])
    with pytest.raises(ValueError, match=r"relative_action_state_indices` has 2 entries but there are 3 action dims"):
        to_relative_actions(action, state, [0, 1])
    with pytest.raises(ValueError, match=r"relative_action_state_indices\[1\]` = 4 is not a state index in \[0, 4\)"):
        to_relative_actions(action, state, [0, 4, None])
    with pytest.raises(ValueError, match=r"`state` must be \[S\] for a \[K, D\] chunk"):
        to_relative_actions(action, np.stack([state, state]), INDICES)
    # the inverse, in the same module: exact on these values
    np.testing.assert_array_equal(to_absolute(expect, state, INDICES), action)


def test_stats_of_the_chunk_dataset_are_those_of_the_deltas():
    import datasets
    from niaf_train.data.stats import stats_from_chunk_dataset

    rng = np.random.default_rng(0)
    n, k = 7, 4
    action = rng.normal(size=(n, k, 3)).astype(np.float32)
    state = rng.normal(size=(n, 4)).astype(np.float32)
    pad = np.zeros((n, k), bool)
    pad[-1, 2:] = pad[-2, 3:] = True  # chunks at an episode end
    action[-1, 2:] = 1e6  # a padded point must not reach the statistics
    ds = datasets.Dataset.from_dict({"action": action, "observation.state": state, "action_is_pad": pad})
    got = stats_from_chunk_dataset(ds, relative_action_state_indices=INDICES)
    rows = []  # the deltas of every real chunk point, by a plain loop
    for r in range(n):
        for j in range(k):
            if not pad[r, j]:
                a = action[r, j].astype(np.float64)
                rows.append([a[0] - state[r, 0], a[1] - state[r, 2], a[2]])
    rows = np.asarray(rows)
    assert got["action"]["count"] == [n * k - 3]
    for key, fn in (("mean", np.mean), ("std", np.std), ("min", np.min), ("max", np.max)):
        np.testing.assert_allclose(got["action"][key], fn(rows, axis=0), rtol=1e-12, atol=1e-12)
    for key, q in (("q01", 0.01), ("q50", 0.5), ("q99", 0.99)):
        np.testing.assert_allclose(got["action"][key], np.quantile(rows, q, axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got["observation.state"]["mean"], state.astype(np.float64).mean(0), rtol=1e-12)
    # absolute (default): the first chunk point of each row, as before
    np.testing.assert_allclose(stats_from_chunk_dataset(ds)["action"]["mean"], action[:, 0].astype(np.float64).mean(0))


def test_training_config_key_is_checked_early(tmp_path):
    from niaf_train.training.arguments import ConfigError, build_config

    from configuration_niaf.normalization import check_relative_action_state_indices

    cfg = build_config(None, ["--model.use_state", "true", "--model.relative_action_state_indices", "0,2,null"])
    assert cfg.model.relative_action_state_indices == [0, 2, None]
    yaml_cfg = build_config({"model": {"use_state": True, "relative_action_state_indices": [1, None]}}, [])
    assert yaml_cfg.model.relative_action_state_indices == [1, None]
    with pytest.raises(ConfigError, match=r"model.relative_action_state_indices` needs `model.use_state: true"):
        build_config(None, ["--model.relative_action_state_indices", "0,2,null"])
    with pytest.raises(ConfigError, match=r"model.relative_action_state_indices` has no int entry"):
        build_config(None, ["--model.use_state", "true", "--model.relative_action_state_indices", "null,null"])
    with pytest.raises(ValueError, match=r"model.relative_action_state_indices` is set but there is no robot state "
                                         r"\(`observation.state`\)"):
        check_relative_action_state_indices([0, None], 2, None, name="model.relative_action_state_indices")


# --------------------------------------------------------------------------------------------------------
# End to end: niaf-train on a small LeRobot dataset → checkpoint → AutoModel → absolute positions
# --------------------------------------------------------------------------------------------------------
def _write_dataset(root):
    from data_factories import write_lerobot_v3_fixture

    rng = np.random.default_rng(0)
    episodes = []
    for i in range(4):
        steps = 10
        # joints far from 0 (the offset matters), moving smoothly; actions = next joint targets + a gripper
        state = np.array([5.0, 0.0, -3.0, 1.0]) + np.cumsum(rng.normal(scale=0.1, size=(steps, 4)), axis=0)
        action = np.stack([state[:, 0] + 0.05, state[:, 2] - 0.05, np.sign(rng.normal(size=steps))], axis=1)
        episodes.append({"action": action.astype(np.float32), "state": state.astype(np.float32),
                         "images": {"observation.images.top": rng.integers(0, 256, (steps, 16, 16, 3), dtype=np.uint8)},
                         "task": ["pick the cube", "open the drawer"][i % 2]})
    return write_lerobot_v3_fixture(root, episodes, fps=10.0)


def _args(root, tmp_path, out_name: str, indices: str) -> list[str]:
    return [
        "--data.source", "lerobot", "--data.path", str(root), "--data.velocity", "none", "--data.val_fraction", "0.25",
        "--cache_dir", str(tmp_path / "cache"), "--output_dir", str(tmp_path / out_name),
        "--model.use_state", "true", "--model.relative_action_state_indices", indices, "--model.chunk_size", "4",
        "--model.tiny_hidden_size", "32", "--model.siren_width", "16", "--model.modulation_groups", "4",
        "--max_steps", "4", "--per_device_batch_size", "8", "--learning_rate", "1e-3", "--report_to", "none",
        "--num_threads", "1", "--eval_num_points", "7",
    ]


def test_finetune_with_relative_actions_end_to_end(tmp_path):
    from niaf_train.data.chunking import with_torch_format
    from niaf_train.training.arguments import ConfigError, load_config
    from niaf_train.training.dataset import load_chunks, split_episodes
    from niaf_train.training.loop import train
    from transformers import AutoModel, AutoProcessor

    root = _write_dataset(tmp_path / "ds")
    # an index past the dataset's 4 state dims is refused before anything is written
    with pytest.raises(ConfigError, match=r"model.relative_action_state_indices\[1\]` = 4 is not a state index in "
                                          r"\[0, 4\)"):
        train(load_config(None, _args(root, tmp_path, "bad", "0,4,null")))
    assert not (tmp_path / "bad" / "run_config.json").exists()

    cfg = load_config(None, _args(root, tmp_path, "run", "0,2,null"))
    result = train(cfg)
    metrics, final = result["metrics"], tmp_path / "run" / "final"
    assert json.loads((final / "config.json").read_text())["relative_action_state_indices"] == [0, 2, None]
    assert json.loads((final / "processor_config.json").read_text())["relative_action_state_indices"] == [0, 2, None]
    assert "relative to the state at the observation time (action dim → state index: 0→0, 1→2" in (
        final / "README.md").read_text()

    # the saved action statistics are those of the deltas of every real chunk point of the training episodes
    dataset = load_chunks(cfg)
    train_rows, val_rows = split_episodes(dataset, cfg.data.val_fraction, cfg.training.seed)
    view = dataset.with_format("numpy")

    def deltas(rows):
        out, real = [], []
        for r in rows:
            a, s, pad = view[int(r)]["action"].astype(np.float64), view[int(r)]["observation.state"], view[int(r)]["action_is_pad"]
            out.append(np.stack([a[:, 0] - s[0], a[:, 1] - s[2], a[:, 2]], axis=1))
            real.append(~pad)
        return np.stack(out), np.stack(real)

    train_deltas, train_real = deltas(train_rows)
    saved = json.loads((final / "config.json").read_text())["normalization_stats"]["action"]
    np.testing.assert_allclose(saved["mean"], train_deltas[train_real].mean(0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(saved["q01"], np.quantile(train_deltas[train_real], 0.01, axis=0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(saved["q99"], np.quantile(train_deltas[train_real], 0.99, axis=0), rtol=1e-9, atol=1e-12)

    # a Hub user's reload: positions are the de-normalised delta plus the raw state of the relative dims
    model = AutoModel.from_pretrained(str(final), trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(str(final), trust_remote_code=True)
    assert model.config.relative_action_state_indices == [0, 2, None]
    rows = [with_torch_format(dataset)[int(i)] for i in val_rows]
    raw_state = np.stack([r["observation.state"].numpy() for r in rows]).astype(np.float64)
    inputs = processor(images=[[r["observation.images.top"].permute(1, 2, 0).numpy()] for r in rows],
                       text=[r["task"] for r in rows], state=raw_state)
    traj = model.generate_actions(**inputs, derivatives=1)
    norm = model.generate_actions(**inputs, derivatives=1, denormalize=False)
    center = (np.array(saved["q01"]) + np.array(saved["q99"])) / 2
    half = (np.array(saved["q99"]) - np.array(saved["q01"])) / 2
    offset = np.stack([raw_state[:, 0], raw_state[:, 2], np.zeros(len(rows))], axis=1)
    hand = norm.position.double().numpy() * half + center + offset[:, None, :]
    np.testing.assert_allclose(traj.position.double().numpy(), hand, rtol=0, atol=1e-4)
    np.testing.assert_allclose(traj.velocity.double().numpy(), norm.velocity.double().numpy() * half, rtol=1e-5, atol=1e-6)

    # held-out position MSE is the absolute error (offset cancels); the baseline is state + mean delta
    absolute = np.stack([r["action"].numpy() for r in rows]).astype(np.float64)
    real = ~np.stack([r["action_is_pad"].numpy() for r in rows])
    err = ((traj.position.double().numpy() - absolute) ** 2).mean(-1)[real].mean()
    assert metrics["position_mse"] == pytest.approx(err, rel=1e-4)
    val_deltas, _ = deltas(val_rows)
    baseline = ((val_deltas - np.array(saved["mean"])) ** 2).mean(-1)[real].mean()
    assert metrics["baseline_position_mse"] == pytest.approx(baseline, rel=1e-9)
