"""Hostile inputs: each class of input that used to be accepted, crash or hang is refused by name,
rebuilt, or held to a bound. Every case builds its input in code; the expected numbers come from the input
itself (the limits it was given, the size it claims), never from the code under test.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import numpy as np
import pytest


# ============================================================================================================
# 5. The streaming runtime bounds what it commands
# ============================================================================================================
@dataclass
class _Traj:
    position: np.ndarray
    velocity: np.ndarray
    acceleration: np.ndarray
    jerk: np.ndarray


class _BumpFunction:
    """p(t) = c + h·exp(-((t - t0)/w)²/2) per dimension, exact derivatives: a narrow bump between probe points.

    With ``raise_between`` = (lo, hi) it raises RuntimeError when asked for a time in (lo, hi); with
    ``nan_between`` it returns NaN there.
    """

    def __init__(self, center, height, t0, width, chunk_duration=0.45, raise_between=None, nan_between=None):
        self.c = np.asarray(center, dtype=np.float64)
        self.h = np.asarray(height, dtype=np.float64)
        self.t0, self.w = t0, width
        self.chunk_duration = chunk_duration
        self.raise_between, self.nan_between = raise_between, nan_between

    def exact(self, t):
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))[:, None]
        u = (t - self.t0) / self.w
        g = np.exp(-0.5 * u * u)
        d1 = -u / self.w * g
        d2 = (u * u - 1.0) / self.w**2 * g
        d3 = (3.0 * u - u**3) / self.w**3 * g
        return self.c + self.h * g, self.h * d1, self.h * d2, self.h * d3

    def __call__(self, times=None, derivatives=3, **kwargs):
        times = np.asarray(times, dtype=np.float64)
        if self.raise_between is not None:
            lo, hi = self.raise_between
            if np.any((times > lo) & (times < hi)):
                raise RuntimeError("simulated failure inside the chunk")
        p, v, a, j = self.exact(times)
        if self.nan_between is not None:
            lo, hi = self.nan_between
            p[(times > lo) & (times < hi)] = np.nan
        return _Traj(p[None], v[None], a[None], j[None])


def _run(stream, times):
    cmds = [stream.command(t) for t in times]
    out = {k: np.stack([getattr(c, k) for c in cmds]) for k in ("position", "velocity", "acceleration")}
    out["limited"] = np.array([c.limited for c in cmds])
    out["mode"] = [c.mode for c in cmds]
    return out


def _assert_within(c, times, lower=None, upper=None, vmax=None, amax=None):
    """Every command within the limits, in its fields and in the motion between consecutive commands."""
    dt = np.diff(times)[:, None]
    slack = 1.0 + 1e-9
    for name in ("position", "velocity", "acceleration"):
        assert np.all(np.isfinite(c[name])), name
    if lower is not None:
        assert np.all(c["position"] >= lower) and np.all(c["position"] <= upper)
    if vmax is not None:
        assert np.all(np.abs(c["velocity"]) <= vmax * slack)
        assert np.all(np.abs(np.diff(c["position"], axis=0)) <= vmax * dt * slack + 1e-12)
    if amax is not None:
        assert np.all(np.abs(c["acceleration"]) <= amax * slack)
        assert np.all(np.abs(np.diff(c["velocity"], axis=0)) <= amax * dt * slack + 1e-12)


def test_runtime_function_outside_the_limits_between_probe_points_is_clamped(caplog):
    from modeling_niaf.runtime import ActionStream

    # probes at multiples of 0.03 s (16 points over 0.45 s); the bump of height 5 sits at 0.2151 s, width 0.7 ms:
    # position, velocity and acceleration at the nearest probe (u = 7.3 widths away) are below 1e-2.
    fn = _BumpFunction(center=[0.0, 0.2], height=[5.0, 0.0], t0=0.2151, width=0.0007)
    probe_p = fn.exact(np.linspace(0.0, 0.45, 16))[0]
    assert np.all(np.abs(probe_p) < 1.0)
    lower, upper, vmax, amax = np.full(2, -1.0), np.full(2, 1.0), 2.0, 50.0
    stream = ActionStream(
        np.array([0.0, 0.2]),
        0.0,
        blend_duration=0.0,
        position_limits=(lower, upper),
        max_velocity=vmax,
        max_acceleration=amax,
    )
    assert stream.submit(fn, 0.0, 0.0)  # inside the limits at every probe point
    times = np.arange(0.0, 0.45, 1e-3)
    src_p, src_v = fn.exact(times)[:2]
    assert src_p[:, 0].max() > 4.9 and np.abs(src_v[:, 0]).max() > 1000.0  # the source does leave the limits
    with caplog.at_level(logging.WARNING, logger="modeling_niaf.runtime"):
        c = _run(stream, times)
    _assert_within(c, times, lower, upper, vmax, amax)
    assert c["limited"].any() and stream.num_limited == int(c["limited"].sum())
    assert "dims [0]" in stream.last_violation and "held to the limits" in caplog.text
    # away from the bump the function is followed exactly; dimension 1 is never touched
    calm = times < 0.19
    np.testing.assert_array_equal(c["position"][calm], src_p[calm])
    np.testing.assert_array_equal(c["position"][:, 1], src_p[:, 1])
    # after the bump the limiter converges back to the function and then passes it through exactly
    assert not c["limited"][-1]
    np.testing.assert_array_equal(c["position"][-20:], src_p[-20:])


@pytest.mark.parametrize("switch", ["crossfade", "offset_decay"])
def test_runtime_switch_between_stationary_plans_respects_velocity_and_acceleration(switch):
    from modeling_niaf.runtime import ActionStream

    here = _BumpFunction(center=[0.0], height=[0.0], t0=0.0, width=1.0, chunk_duration=2.0)
    there = _BumpFunction(center=[1.0], height=[0.0], t0=0.0, width=1.0, chunk_duration=2.0)
    times = np.arange(0.1, 2.0, 1e-3)

    def stream_with(**limits):
        stream = ActionStream(np.zeros(1), 0.0, blend_duration=0.05, max_latency=1.0, switch=switch, **limits)
        assert stream.submit(here, 0.0, 0.0) and stream.command(0.05).position[0] == 0.0
        assert stream.submit(there, 0.1, 0.1)
        return stream, _run(stream, times)

    _, raw = stream_with()
    assert np.abs(raw["velocity"]).max() > 30.0  # the unlimited switch: about 1.875·Δp/T_b = 37.5
    stream, c = stream_with(max_velocity=2.0, max_acceleration=20.0)
    _assert_within(c, times, vmax=2.0, amax=20.0)
    assert c["limited"].any()
    # it still arrives: 1 at 2/s with 20/s² takes 0.6 s; the command then holds the new plan exactly
    arrived = times > 0.1 + 0.8
    np.testing.assert_array_equal(c["position"][arrived], 1.0)
    np.testing.assert_array_equal(c["velocity"][arrived], 0.0)
    assert not c["limited"][arrived].any()


@pytest.mark.parametrize("fault", ["raises", "nan"])
def test_runtime_function_failing_between_probe_points_leaves_a_safe_command(fault, caplog):
    from modeling_niaf.runtime import ActionStream

    window = (0.2101, 0.2102)  # between the probe points 0.21 and 0.24
    kw = {"raise_between": window} if fault == "raises" else {"nan_between": window}
    fn = _BumpFunction(center=[0.3, -0.3], height=[0.5, 0.5], t0=0.2, width=0.1, **kw)
    stream = ActionStream(np.zeros(2), 0.0, blend_duration=0.0, stop_duration=0.1, max_velocity=20.0)
    assert stream.submit(fn, 0.0, 0.0)
    times = np.arange(0.2, 0.5, 1e-5)
    with caplog.at_level(logging.ERROR, logger="modeling_niaf.runtime"):
        c = _run(stream, times)  # no exception reaches the control loop
    assert stream.num_faults == 1 and (
        "RuntimeError" in stream.last_fault or "non-finite" in stream.last_fault
    )
    assert "stopping from the last good command" in caplog.text
    _assert_within(c, times, vmax=20.0)
    assert c["mode"][-1] == "hold"
    np.testing.assert_array_equal(c["velocity"][-1], 0.0)
    # the first command ever can be the failing one: the stream holds its initial position
    first = ActionStream(np.array([0.1, 0.2]), 0.0, blend_duration=0.0)
    assert first.submit(fn, 0.0, 0.0)
    cmd = first.command(0.21015)
    np.testing.assert_array_equal(cmd.position, [0.1, 0.2])
    np.testing.assert_array_equal(cmd.velocity, 0.0)
    assert first.num_faults == 1


def test_runtime_refuses_fast_acceleration_and_unreachable_start():
    from modeling_niaf.runtime import ActionStream

    stream = ActionStream(np.zeros(1), 0.0, max_acceleration=1.0)
    fast = _BumpFunction(center=[0.0], height=[0.1], t0=0.2, width=0.05)  # peak |a| = 0.1/0.05² = 40
    assert not stream.submit(fast, 0.0, 0.0)
    assert "acceleration limit exceeded" in stream.last_refusal

    def raises_type_error(times=None, derivatives=3, **kw):
        raise TypeError("not a number")

    raises_type_error.chunk_duration = 0.5
    assert not stream.submit(raises_type_error, 0.0, 0.0)  # any exception is a refusal, not a crash
    assert "TypeError" in stream.last_refusal
    with pytest.raises(ValueError, match="`initial_position`.*outside `position_limits`"):
        ActionStream(np.array([2.0]), position_limits=(np.array([-1.0]), np.array([1.0])))
    with pytest.raises(ValueError, match="max_acceleration"):
        ActionStream(np.zeros(1), max_acceleration=float("nan"))


# ============================================================================================================
# 4. Model and processor: refuse at load time what would give silent wrong actions
# ============================================================================================================
def _tiny_model(**overrides):
    import torch
    from niaf_tiny_backbones import BACKBONES

    from configuration_niaf import NiafConfig
    from modeling_niaf import NiafForActionFunction

    kwargs = dict(
        backbone_config=BACKBONES["paligemma"](),
        action_dim=3,
        chunk_size=6,
        control_hz=10.0,
        siren_layers=2,
        siren_width=16,
        modulation_groups=4,
    )
    kwargs.update(overrides)
    torch.manual_seed(0)
    return NiafForActionFunction(NiafConfig(**kwargs)).eval()


@pytest.mark.parametrize("where", ["siren.layers.0.weight", "modulation_heads.beta_weight"])
def test_checkpoint_with_non_finite_weights_is_refused_naming_the_key(tmp_path, where):
    import torch
    from safetensors.torch import load_file, save_file

    from modeling_niaf import NiafForActionFunction

    model = _tiny_model()
    model.save_pretrained(tmp_path)
    NiafForActionFunction.from_pretrained(tmp_path)  # the clean checkpoint loads
    weights = load_file(tmp_path / "model.safetensors")
    weights[where] = weights[where].clone()
    weights[where].view(-1)[3] = float("nan") if "siren" in where else float("inf")
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=rf"weight `{where}` holds NaN or inf") as err:
        NiafForActionFunction.from_pretrained(tmp_path)
    assert str(tmp_path) in str(err.value) and "\n" not in str(err.value)
    assert torch.isfinite(model.siren.layers[0].weight).all()  # the original was not touched


@pytest.mark.parametrize(
    "key, value",
    [
        ("siren_omega0", 1e300),
        ("siren_layers", 200_000),
        ("siren_width", 10**7),
        ("chunk_size", 10**9),
        ("num_cameras", 1000),
        ("control_hz", float("inf")),
    ],
)
def test_head_settings_outside_sane_bounds_are_refused_at_load(tmp_path, key, value):
    import json

    from modeling_niaf import NiafForActionFunction

    _tiny_model().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config[key] = value
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=rf"`{key}` must be"):
        NiafForActionFunction.from_pretrained(tmp_path)


def test_zero_range_or_nan_statistics():
    from configuration_niaf.normalization import MIN_STATE_HALF_RANGE, AffineNormalizer

    stats = {"q01": [0.0, 2.0], "q99": [1.0, 2.0]}  # dim 1 never moved in the data
    state = AffineNormalizer.from_stats(stats, "QUANTILES", 2, feature="state")
    # a deviation of 1e-3 in the constant dimension stays 1e-3, not 1e-3 / 1e-8 = 1e5
    np.testing.assert_allclose(state.normalize(np.array([0.5, 2.001])), [0.0, 0.001], atol=1e-12)
    assert MIN_STATE_HALF_RANGE <= 1e-6
    action = AffineNormalizer.from_stats(stats, "QUANTILES", 2, feature="action")
    assert action.denormalize(np.array([0.3, 0.7]))[1] == pytest.approx(
        2.0, abs=1e-7
    )  # outputs stay the constant
    bad = {"q01": [0.0, float("nan")], "q99": [1.0, 2.0]}
    with pytest.raises(ValueError, match=r"'state' stats 'q01' is NaN or inf in dims \[1\]"):
        AffineNormalizer.from_stats(bad, "QUANTILES", 2, feature="state")
    with pytest.raises(ValueError, match=r"normalization_stats\['action'\]\['q01'\]` is not finite"):
        _tiny_model(normalization_stats={"action": {"q01": [0.0, float("nan"), 0.0], "q99": [1.0, 1.0, 1.0]}})


def test_token_ids_outside_the_vocabulary_are_refused():
    import torch
    from niaf_tiny_backbones import VOCAB, make_inputs

    model = _tiny_model()
    inputs = make_inputs("paligemma")
    with torch.no_grad():
        model(**inputs)
    for bad in (VOCAB, 10**12, -1):
        hostile = dict(inputs, input_ids=inputs["input_ids"].clone())
        hostile["input_ids"][0, -1] = bad
        with pytest.raises(
            ValueError,
            match=rf"`input_ids` holds token ids .* outside the backbone's vocabulary \[0, {VOCAB}\)",
        ):
            model(**hostile)
    with pytest.raises(ValueError, match="`input_ids` must be a LongTensor"):
        model(**dict(inputs, input_ids=inputs["input_ids"].float()))


def _processor(**kw):
    from niaf_tiny_backbones import image_tokens_per_image, make_image_processor, make_tokenizer

    from modeling_niaf import NiafProcessor

    kwargs = dict(
        image_processor=make_image_processor("paligemma"),
        tokenizer=make_tokenizer(),
        image_token="<image>",
        image_seq_length=image_tokens_per_image("paligemma"),
        num_cameras=1,
        action_dim=3,
        normalization_mode="IDENTITY",
    )
    kwargs.update(kw)
    return NiafProcessor(**kwargs)


def test_images_in_common_layouts_are_read_alike_and_the_rest_refused_by_name():
    import torch
    from PIL import Image

    proc = _processor()
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    reference = proc(images=[hwc], text="open the drawer")["pixel_values"]
    assert reference.abs().max() > 0.5  # not a black frame
    as_float = hwc.astype(np.float32) / 255.0
    layouts = {
        "uint8 CHW": np.moveaxis(hwc, -1, 0),
        "float HWC": as_float,
        "float CHW tensor (LeRobot)": torch.from_numpy(np.moveaxis(as_float, -1, 0).copy()),
        "float64 CHW": np.moveaxis(as_float, -1, 0).astype(np.float64),
        "PIL RGB": Image.fromarray(hwc),
    }
    for name, image in layouts.items():
        got = proc(images=[image], text="open the drawer")["pixel_values"]
        torch.testing.assert_close(got, reference, rtol=0, atol=0, msg=name)
    hostile = {
        "empty": (np.zeros((0, 0, 3), np.uint8), r"is empty \(0×0 pixels\)"),
        "grayscale": (np.zeros((32, 32), np.uint8), r"has shape \(32, 32\); expected an RGB frame"),
        "grayscale 1-channel": (
            np.zeros((32, 32, 1), np.uint8),
            r"has shape \(32, 32, 1\); expected an RGB frame",
        ),
        "RGBA": (np.zeros((32, 32, 4), np.uint8), r"has shape \(32, 32, 4\); expected an RGB frame"),
        "PIL L": (Image.fromarray(hwc[..., 0]), "is a PIL image in mode 'L'"),
        "float 0-255": (
            hwc.astype(np.float32),
            r"is a float32 frame with values in \[0, 255\]; float frames must lie in \[0, 1\]",
        ),
        "float NaN": (
            np.full((32, 32, 3), np.nan, np.float32),
            r"is a float32 frame with values in \[nan, nan\]",
        ),
        "int64": (hwc.astype(np.int64), "has dtype int64"),
        "string": ("frame.png", "must be a PIL image, a numpy array or a torch tensor"),
    }
    for _name, (image, message) in hostile.items():
        with pytest.raises(ValueError, match=r"`images\[0\]\[0\]` " + message):
            proc(images=[image], text="open the drawer")


def test_prompt_templates_and_sequence_lengths_that_would_allocate_gigabytes_are_refused():
    from modeling_niaf.processing_niaf import MAX_IMAGE_SEQ_LENGTH

    for template in (
        "{instruction:>999999999}",
        "{instruction!r}",
        "{instruction.__class__}",
        "{0} {instruction}",
        "{instruction} {other}",
        "no slot",
        "{instruction",
    ):
        with pytest.raises(ValueError, match="`prompt_template`"):
            _processor(prompt_template=template)
    _processor(prompt_template="What should the robot do to {instruction}? {{literal braces}}")
    for length in (10**9, 0, True, 2.5):
        with pytest.raises(ValueError, match="`image_seq_length` must be an int in"):
            _processor(image_seq_length=length)
    _processor(image_seq_length=MAX_IMAGE_SEQ_LENGTH)
    with pytest.raises(ValueError, match="`num_cameras` must be <= 16"):
        _processor(num_cameras=10**6)


# ============================================================================================================
# 1. Pickled and binary data files: the restricted unpickler, .npy headers, FIFOs, links out of the dataset
# ============================================================================================================
class _Reduce:
    """Pickles as ``func(*args)`` (and a BUILD with ``state`` when given): hand-made hostile streams."""

    def __init__(self, func, args, state=None):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


def _reconstruct():
    return np.ndarray((0,)).__reduce__()[0]


@pytest.mark.parametrize(
    "case, message",
    [
        # object array over raw bytes: its "pointers" are 0x4141...; touching them would kill the process
        ("ndarray_object_from_bytes", r"numpy\.ndarray\(\.\.\.\) called from a pickle"),
        ("ndarray_zero_stride", r"numpy\.ndarray\(\.\.\.\) called from a pickle"),
        ("reconstruct_object_from_bytes", "must be built from a list of 4 elements"),
        ("reconstruct_wrong_size", r"needs 8000000000000 bytes, the stream holds 8"),
        ("reconstruct_other_args", r"only numpy's own _reconstruct"),
        ("structured_dtype", "only plain numeric, string and object dtypes"),
        ("build_on_a_dict", "refused to set the state of a dict"),
        ("shared_nested_lists", "expands to more than"),
        ("deep_nesting", "nests deeper than 100 levels"),
        ("cycle", "reference cycle"),
    ],
)
def test_restricted_unpickler_refuses_hostile_streams(case, message):
    import pickle

    from niaf_train.data.safe_pickle import UnsafePickleError, safe_loads

    o8 = np.dtype("O")
    if case == "ndarray_object_from_bytes":
        stream = pickle.dumps(_Reduce(np.ndarray, ((4,), o8, b"A" * 32)))
    elif case == "ndarray_zero_stride":
        stream = pickle.dumps(_Reduce(np.ndarray, ((10**12,), np.dtype("f8"), b"\0" * 8, 0, (0,))))
    elif case == "reconstruct_object_from_bytes":
        stream = pickle.dumps(
            _Reduce(_reconstruct(), (np.ndarray, (0,), b"b"), (1, (4,), o8, False, b"A" * 32))
        )
    elif case == "reconstruct_wrong_size":
        state = (1, (10**12,), np.dtype("f8"), False, b"\0" * 8)
        stream = pickle.dumps(_Reduce(_reconstruct(), (np.ndarray, (0,), b"b"), state))
    elif case == "reconstruct_other_args":
        stream = pickle.dumps(_Reduce(_reconstruct(), (np.ndarray, (10**12,), b"b")))
    elif case == "structured_dtype":
        stream = pickle.dumps(np.zeros(2, dtype=[("a", "f4"), ("b", "O")]))
    elif case == "build_on_a_dict":
        stream = b"\x80\x02}}b."  # EMPTY_DICT EMPTY_DICT BUILD STOP
    elif case == "shared_nested_lists":
        x: list = []
        for _ in range(64):
            x = [x, x]  # 64 levels, 2**64 leaves once expanded; the stream is a few hundred bytes
        stream = pickle.dumps(x)
        assert len(stream) < 1000
    elif case == "deep_nesting":
        depth = 200_000
        stream = b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"."  # EMPTY_LIST ×N, APPEND ×(N-1)
    else:
        x = []
        x.append(x)
        stream = pickle.dumps(x)
    with pytest.raises(UnsafePickleError, match=message) as err:
        safe_loads(stream, source="auto_lang_ann.npy")
    assert str(err.value).startswith("auto_lang_ann.npy: ") and "\n" not in str(err.value)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_restricted_unpickler_still_reads_what_numpy_writes(protocol):
    import pickle

    from niaf_train.data.safe_pickle import safe_loads

    shared = "the same string object twice"
    data = {
        "f64": np.linspace(0.0, 1.0, 7),
        "fortran": np.asfortranarray(np.arange(12, dtype=np.int16).reshape(3, 4)),
        "big_endian": np.arange(5, dtype=">i4"),
        "unicode": np.array(["open", "drawer"]),
        "bytes": np.array([b"ab", b"c"]),
        "bool": np.array([True, False]),
        "complex": np.array([1 + 2j]),
        "objects": np.array([{"a": 1}, [1, 2], "s"], dtype=object),
        "scalars": [np.float32(1.5), np.int64(-3), np.str_("x"), np.bool_(True)],
        "empty": np.zeros((0, 3)),
        "shared": [shared, shared],
    }
    loaded = safe_loads(pickle.dumps(data, protocol=protocol))
    for key, value in data.items():
        if isinstance(value, np.ndarray):
            assert loaded[key].dtype == value.dtype and loaded[key].shape == value.shape, key
            assert loaded[key].tolist() == value.tolist(), key
            assert loaded[key].flags.writeable
        else:
            assert loaded[key] == value, key
    assert loaded["fortran"].flags.f_contiguous


def _write_npy_header(path, shape, descr="<f8", payload=b"\0" * 8):
    from numpy.lib import format as npy_format

    with open(path, "wb") as fh:
        npy_format.write_array_header_1_0(fh, {"descr": descr, "fortran_order": False, "shape": shape})
        fh.write(payload)


def test_npy_header_claiming_terabytes_is_a_named_error(tmp_path):
    from niaf_train.data.calvin import read_calvin_segments
    from niaf_train.data.safe_pickle import safe_load_npy

    path = tmp_path / "ep_start_end_ids.npy"
    _write_npy_header(path, (10**11, 2), "<i8")
    with pytest.raises(
        ValueError, match=r"ep_start_end_ids\.npy: the \.npy header claims shape \(100000000000, 2\)"
    ):
        read_calvin_segments(tmp_path)
    np.save(path, np.array([[0, 3]]))
    assert safe_load_npy(path).tolist() == [[0, 3]]


def _calvin_split(tmp_path, fixtures_dir, mutate=None):
    from data_factories import two_window_calvin_split

    return two_window_calvin_split(tmp_path / "training", fixtures_dir, mutate)


def _replace_member(npz_path, key, raw):
    """Rewrite one member of an .npz (a zip) with ``raw`` bytes, keeping the others."""
    import zipfile

    with zipfile.ZipFile(npz_path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    members[key + ".npy"] = raw
    with zipfile.ZipFile(npz_path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)


@pytest.mark.parametrize("member", ["rel_actions", "rgb_static"])
def test_calvin_frame_header_claiming_terabytes_is_skippable(tmp_path, fixtures_dir, member):
    import io

    from niaf_train.data.calvin import iter_calvin_episodes
    from niaf_train.data.episodes import EpisodeError, LoadSummary
    from numpy.lib import format as npy_format

    split = _calvin_split(tmp_path, fixtures_dir)
    raw = io.BytesIO()
    descr = "<f8" if member == "rel_actions" else "|u1"
    shape = (10**12,) if member == "rel_actions" else (10**6, 10**6, 3)
    npy_format.write_array_header_1_0(raw, {"descr": descr, "fortran_order": False, "shape": shape})
    raw.write(b"\0" * 64)
    _replace_member(split / "episode_0000009.npz", member, raw.getvalue())
    with pytest.raises(
        EpisodeError, match=rf"episode_0000009\.npz: episode ann_1: key '{member}': .*header claims"
    ):
        list(iter_calvin_episodes(split))
    summary = LoadSummary()
    kept = list(iter_calvin_episodes(split, skip_invalid=True, summary=summary))
    assert [e.episode_id for e in kept] == ["ann_0"] and summary.skipped[0].key == member


def test_calvin_zip_member_claiming_more_than_deflate_can_produce_is_refused(tmp_path, fixtures_dir):
    import io
    import struct
    import zipfile

    from niaf_train.data.calvin import iter_calvin_episodes
    from niaf_train.data.episodes import EpisodeError
    from numpy.lib import format as npy_format

    split = _calvin_split(tmp_path, fixtures_dir)
    frame = split / "episode_0000009.npz"
    claimed = 0xF0000000  # 4 GiB in the zip directory, where the member stores a few hundred bytes
    raw = io.BytesIO()  # a header consistent with the claim: 1 × 1,342,177,000 RGB pixels
    npy_format.write_array_header_1_0(
        raw, {"descr": "|u1", "fortran_order": False, "shape": (1, 1342177000, 3)}
    )
    raw.write(b"\0" * 64)
    with zipfile.ZipFile(frame) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    members["rgb_static.npy"] = raw.getvalue()
    with zipfile.ZipFile(frame, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    blob = bytearray(frame.read_bytes())
    central = blob.index(b"PK\x01\x02")  # central directory entries, one per member
    while blob[central + 46 : central + 46 + len(b"rgb_static.npy")] != b"rgb_static.npy":
        central = blob.index(b"PK\x01\x02", central + 4)
    struct.pack_into("<I", blob, central + 24, claimed)  # uncompressed size in the central directory
    frame.write_bytes(bytes(blob))
    with zipfile.ZipFile(frame) as zf:
        assert zf.getinfo("rgb_static.npy").file_size == claimed
    with pytest.raises(
        EpisodeError, match=r"episode_0000009\.npz: episode ann_1: key 'rgb_static': zip member claims"
    ):
        list(iter_calvin_episodes(split))


@pytest.mark.parametrize("kind", ["fifo", "symlink_out", "symlink_in"])
def test_calvin_frames_that_are_fifos_or_symlinks_out_of_the_root_are_refused(tmp_path, fixtures_dir, kind):
    import os
    import shutil

    from niaf_train.data.calvin import iter_calvin_episodes
    from niaf_train.data.episodes import EpisodeError

    split = _calvin_split(tmp_path / "data", fixtures_dir)
    frame = split / "episode_0000009.npz"
    outside = tmp_path / "elsewhere" / "episode_0000009.npz"
    outside.parent.mkdir()
    shutil.move(frame, outside)
    if kind == "fifo":
        os.mkfifo(frame)  # opening it for reading would block forever
        expect = "a FIFO; expected a regular .npz frame file"
    elif kind == "symlink_out":
        frame.symlink_to(outside)
        expect = "outside the dataset folder"
    else:  # a symlink that stays inside the dataset folder is fine
        inside = split / "store" / "frame9.npz"
        inside.parent.mkdir()
        shutil.move(outside, inside)
        frame.symlink_to(inside)
        assert len(list(iter_calvin_episodes(split))) == 2
        return
    with pytest.raises(EpisodeError, match=rf"episode_0000009\.npz: episode ann_1: key '<file>': .*{expect}"):
        list(iter_calvin_episodes(split))


def test_libero_external_links_virtual_datasets_and_fifos_are_refused(tmp_path):
    import os

    import h5py
    from data_factories import libero_demo_arrays, write_libero_hdf5
    from niaf_train.data.episodes import EpisodeError, LoadSummary
    from niaf_train.data.libero import iter_libero_episodes

    suite = tmp_path / "suite"
    suite.mkdir()
    path = suite / "pick_up_the_bowl_demo.hdf5"
    demos = {f"demo_{i}": libero_demo_arrays(6, seed=i, hw=(8, 8)) for i in range(2)}
    write_libero_hdf5(path, demos, "pick up the bowl")
    secret = tmp_path / "secret.hdf5"
    with h5py.File(secret, "w") as fh:
        fh["actions"] = np.ones((6, 7))
    assert len(list(iter_libero_episodes(suite))) == 2
    with h5py.File(path, "a") as fh:
        del fh["data/demo_1/actions"]
        fh["data/demo_1/actions"] = h5py.ExternalLink(str(secret), "/actions")
    with pytest.raises(
        EpisodeError, match=r"demo_1: key 'data/demo_1/actions': an HDF5 external link to .*secret"
    ):
        list(iter_libero_episodes(suite))
    summary = LoadSummary()
    assert [e.episode_id for e in iter_libero_episodes(suite, skip_invalid=True, summary=summary)] == [
        "demo_0"
    ]
    with h5py.File(path, "a") as fh:
        del fh["data/demo_1/actions"]
        layout = h5py.VirtualLayout(shape=(6, 7), dtype="f8")
        layout[:] = h5py.VirtualSource(str(secret), "actions", shape=(6, 7))
        fh["data/demo_1"].create_virtual_dataset("actions", layout)
    with pytest.raises(EpisodeError, match="virtual dataset or one with external storage"):
        list(iter_libero_episodes(suite))
    path.unlink()
    os.mkfifo(path)  # opening it would block the loader forever
    with pytest.raises(
        EpisodeError, match=r"pick_up_the_bowl_demo\.hdf5: episode \*: key '<file>': not a regular file"
    ):
        list(iter_libero_episodes(suite))


# ============================================================================================================
# 2 and 3. niaf-train's output folder: destructive options check first; a resume continues the same run
# ============================================================================================================
def _lerobot_dataset(root, seed=3):
    from data_factories import random_lerobot_episodes, write_lerobot_v3_fixture

    src = random_lerobot_episodes(n=4, lengths=[9, 10, 11, 12], d=4, s=3, hw=(16, 16), seed=seed)
    return write_lerobot_v3_fixture(root, src, fps=20)


def _train_args(data, out, cache, *extra):
    return [
        "--config", "default.yaml", "--data.source", "lerobot", "--data.path", str(data), "--cache_dir", str(cache),
        "--model.tiny_hidden_size", "32", "--model.siren_width", "32", "--model.modulation_groups", "8",
        "--model.chunk_size", "4", "--training.per_device_batch_size", "4", "--training.report_to", "none",
        "--training.num_threads", "1", "--max_steps", "2", "--save_steps", "1", "--eval_steps", "0",
        "--logging_steps", "1", "--data.val_fraction", "0.25", "--output_dir", str(out), *extra,
    ]  # fmt: skip


def _niaf_train(capsys, *args):
    from niaf_train.training.cli import main

    capsys.readouterr()
    code = main(list(args))
    err = capsys.readouterr().err
    return code, err


def _error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("niaf-train: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    return lines[0]


def test_overwrite_output_dir_checks_everything_first_and_deletes_only_a_run(tmp_path, capsys):
    data, cache, out = _lerobot_dataset(tmp_path / "ds"), tmp_path / "cache", tmp_path / "run"
    assert _niaf_train(capsys, *_train_args(data, out, cache))[0] == 0
    finished = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert (
        finished == ["checkpoint-000001", "checkpoint-000002"]
        and (out / "final" / "model.safetensors").is_file()
    )

    # a typo in the data path: refused before anything of the finished run is touched
    code, err = _niaf_train(
        capsys, *_train_args(tmp_path / "dss", out, cache, "--overwrite_output_dir", "true")
    )
    assert code == 2 and "dss" in _error_line(err)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == finished and (out / "final").is_dir()

    # a folder holding something a run does not write is not deleted
    (out / "notes.txt").write_text("mine")
    code, err = _niaf_train(capsys, *_train_args(data, out, cache, "--overwrite_output_dir", "true"))
    assert code == 2 and "notes.txt" in _error_line(err) and (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()

    # nor one that contains the dataset (or the chunk cache)
    inner = _lerobot_dataset(out / "data")
    code, err = _niaf_train(capsys, *_train_args(inner, out, cache, "--overwrite_output_dir", "true"))
    assert code == 2 and "contains" in _error_line(err) and (inner / "meta" / "info.json").is_file()
    code, err = _niaf_train(capsys, *_train_args(data, out, out / "cache", "--overwrite_output_dir", "true"))
    assert code == 2 and "contains" in _error_line(err)
    shutil_rmtree(out / "data")

    # a real run is replaced once everything is checked: its old checkpoints are gone
    code, err = _niaf_train(
        capsys, *_train_args(data, out, cache, "--overwrite_output_dir", "true", "--max_steps", "1")
    )
    assert code == 0, err[-2000:]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-000001"]


def shutil_rmtree(path):
    import shutil

    shutil.rmtree(path)


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


def test_resume_refuses_another_data_or_sample_stream(tmp_path, capsys):
    import shutil

    data, cache, out = _lerobot_dataset(tmp_path / "ds"), tmp_path / "cache", tmp_path / "run"
    assert _niaf_train(capsys, *_train_args(data, out, cache, "--max_steps", "1"))[0] == 0
    for flag, value in (("--seed", "1"), ("--training.per_device_batch_size", "2")):
        code, err = _niaf_train(capsys, *_train_args(data, out, cache, "--resume", "true", flag, value))
        assert code == 2 and flag.split(".")[-1].lstrip("-") in _error_line(err) and "sample stream" in err
    # the dataset at the same path changed (one more episode): refused, naming the fingerprint file
    shutil.rmtree(data)
    _lerobot_dataset(data, seed=4)
    code, err = _niaf_train(capsys, *_train_args(data, out, cache, "--resume", "true"))
    assert code == 2 and "the training data changed" in _error_line(err) and "run_fingerprint.json" in err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-000001"]  # untouched


def test_resume_of_a_run_saved_before_an_option_existed(tmp_path, capsys):
    """A run_config.json without a key a newer niaf-train added resumes when the option keeps its default; a
    changed value of that option is still refused by name."""
    import json

    data, cache, out = _lerobot_dataset(tmp_path / "ds"), tmp_path / "cache", tmp_path / "run"
    assert _niaf_train(capsys, *_train_args(data, out, cache, "--max_steps", "1"))[0] == 0
    run_config = out / "run_config.json"
    saved = json.loads(run_config.read_text())
    for key in ("action_head", "head_hidden_size", "bspline_control_points", "waypoint_loss", "flow_steps"):
        del saved["model"][key]
    run_config.write_text(json.dumps(saved))
    code, err = _niaf_train(capsys, *_train_args(data, out, cache, "--resume", "true", "--model.action_head", "bspline"))
    assert code == 2 and "action_head" in _error_line(err) and "differ" in err
    code, err = _niaf_train(capsys, *_train_args(data, out, cache, "--resume", "true"))
    assert code == 0, err
    assert (out / "checkpoints" / "checkpoint-000002").is_dir()


def test_resume_checks_the_checkpoint_up_front(tmp_path, capsys):
    data, cache, out = _lerobot_dataset(tmp_path / "ds"), tmp_path / "cache", tmp_path / "run"
    assert _niaf_train(capsys, *_train_args(data, out, cache))[0] == 0
    state = out / "checkpoints" / "checkpoint-000002" / "training_state"
    optimizer = state / "optimizer.bin"
    optimizer.write_bytes(optimizer.read_bytes()[: optimizer.stat().st_size // 2])
    code, err = _niaf_train(capsys, *_train_args(data, out, cache, "--resume", "true", "--max_steps", "3"))
    assert code == 2 and "optimizer.bin is truncated" in _error_line(err)
    (state / "random_states_0.pkl").unlink()
    code, err = _niaf_train(capsys, *_train_args(data, out, cache, "--resume", "true", "--max_steps", "3"))
    assert code == 2 and "random_states_0.pkl is missing" in _error_line(err)


def test_run_killed_in_its_first_checkpoint_can_resume(tmp_path, capsys):
    import json

    from niaf_train.training.arguments import load_config

    data, cache, out = _lerobot_dataset(tmp_path / "ds"), tmp_path / "cache", tmp_path / "run"
    # what a SIGKILL during the first checkpoint write leaves: the run's config and a temporary folder
    cfg = load_config("default.yaml", _train_args(data, out, cache)[2:])
    (out / "checkpoints" / ".tmp-checkpoint-000001" / "training_state").mkdir(parents=True)
    (out / "run_config.json").write_text(json.dumps(cfg.to_dict()))
    code, err = _niaf_train(capsys, *_train_args(data, out, cache))
    assert code == 2 and "--resume starts it again from step 0" in _error_line(err)
    code, err = _niaf_train(capsys, *_train_args(data, out, cache, "--resume", "true"))
    assert code == 0, err[-2000:]
    assert (out / "final" / "model.safetensors").is_file()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "checkpoint-000001",
        "checkpoint-000002",
    ]


def test_two_runs_on_one_folder_and_unwritable_disks_are_refused(tmp_path, capsys, monkeypatch):
    import errno
    from collections import namedtuple

    from niaf_train.training import run_folder

    data, cache, out = _lerobot_dataset(tmp_path / "ds"), tmp_path / "cache", tmp_path / "run"
    holder = run_folder.RunLock(out).acquire()  # another run holds the folder
    try:
        code, err = _niaf_train(capsys, *_train_args(data, out, cache))
        assert code == 2 and "in use by another niaf-train run" in _error_line(err)
        assert not (out / "checkpoints").exists()
    finally:
        holder.release()
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(run_folder.shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 1000, 1000))
    code, err = _niaf_train(capsys, *_train_args(data, out, cache))
    assert code == 2 and "GiB free, a run needs about" in _error_line(err)
    monkeypatch.undo()

    def read_only(path, mode="r", *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(run_folder, "open", read_only, raising=False)
    code, err = _niaf_train(capsys, *_train_args(data, out, cache))
    assert code == 2 and "cannot write .tmp-write-probe (Read-only file system)" in _error_line(err)
    monkeypatch.undo()

    # the disk fills up during a checkpoint write: the file and the cause, no traceback
    from niaf_train.training import checkpointing

    def full_disk(output_dir, step, *args, **kwargs):
        raise OSError(
            errno.ENOSPC, "No space left on device", str(checkpointing.temporary_dir(output_dir, step))
        )

    monkeypatch.setattr(checkpointing, "commit", full_disk)
    code, err = _niaf_train(capsys, *_train_args(data, out, cache, "--overwrite_output_dir", "true"))
    assert code == 1 and ".tmp-checkpoint-000001: No space left on device" in _error_line(err)


@pytest.mark.parametrize("key", ["--learning_rate", "--training.warmup_ratio", "--training.final_lr_scale"])
def test_non_finite_learning_rates_and_schedules_are_config_errors(tmp_path, capsys, key):
    data = _lerobot_dataset(tmp_path / "ds")
    for value in ("nan", "inf", "-inf"):
        code, err = _niaf_train(capsys, *_train_args(data, tmp_path / "run", tmp_path / "cache", key, value))
        assert (
            code == 2
            and "must be a finite number" in _error_line(err)
            and key.split(".")[-1].lstrip("-") in err
        )
    assert not (tmp_path / "run").exists()


# ============================================================================================================
# 6. Data that is accepted but wrong: refuse or rebuild, naming the file
# ============================================================================================================
def _rewrite_parquet(path, change):
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    pq.write_table(change(table), path)


def test_episode_listed_twice_in_meta_episodes_is_refused(tmp_path):
    import pyarrow as pa
    from niaf_train.data.lerobot_v3 import load_lerobot

    root = _lerobot_dataset(tmp_path / "ds")
    meta = root / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
    _rewrite_parquet(meta, lambda t: pa.concat_tables([t, t.slice(1, 1)]))
    with pytest.raises(
        ValueError, match=r"file-000\.parquet: episode_index 1 is listed twice in meta/episodes"
    ):
        load_lerobot(root, 4, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("column, kind", [("action", "string"), ("observation.state", "bool")])
def test_actions_as_strings_or_state_as_booleans_are_refused(tmp_path, column, kind):
    import pyarrow as pa
    import pyarrow.compute as pc
    from niaf_train.data.episodes import EpisodeError
    from niaf_train.data.lerobot_v3 import load_lerobot

    root = _lerobot_dataset(tmp_path / "ds")
    data = root / "data" / "chunk-000" / "file-001.parquet"

    def change(table):
        values = table[column].combine_chunks()
        flat = values.flatten()
        flat = pc.cast(flat, pa.string()) if kind == "string" else pc.greater(flat, 0.0)
        new = pa.FixedSizeListArray.from_arrays(flat, values.type.list_size)
        return table.set_column(table.schema.get_field_index(column), column, new)

    _rewrite_parquet(data, change)
    with pytest.raises(
        EpisodeError, match=rf"file-001\.parquet: episode 2: key '{column}'.*stored as {kind}"
    ):
        load_lerobot(root, 4, cache_dir=tmp_path / "cache")
    kept = load_lerobot(root, 4, cache_dir=tmp_path / "cache", skip_invalid=True)
    assert sorted(set(kept["episode_index"])) == [0, 1]


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


@pytest.mark.parametrize(
    "template, field",
    [
        ("data/chunk-{chunk_index:03d}/file-{file_index:0999999999d}.parquet", "file_index:0999999999d"),
        ("data/{episode_index.__class__}.parquet", "episode_index.__class__"),
        ("data/{episode_index!r}.parquet", "episode_index!r"),
        ("data/{secret}.parquet", "secret"),
    ],
)
def test_path_templates_that_allocate_or_reach_into_objects_are_refused(tmp_path, template, field):
    import json

    from niaf_train.data.lerobot_v3 import load_lerobot

    root = _lerobot_dataset(tmp_path / "ds")
    info = json.loads((root / "meta" / "info.json").read_text())
    info["data_path"] = template
    (root / "meta" / "info.json").write_text(json.dumps(info))
    with pytest.raises(
        ValueError, match=r"info\.json: data_path template field \{" + re.escape(field) + r"\}"
    ):
        load_lerobot(root, 4, cache_dir=tmp_path / "cache")


def test_changed_data_file_with_same_size_and_mtime_rebuilds_the_cache(tmp_path):
    import os

    from niaf_train.data.chunking import file_fingerprint

    path = tmp_path / "frame.bin"
    path.write_bytes(b"0123456789")
    st = path.stat()
    before = file_fingerprint([path])
    path.write_bytes(b"9876543210")  # same size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the old modification time
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    assert file_fingerprint([path]) != before

    # end to end: one action's sign flipped in a LeRobot data file, same size, old modification time
    import pyarrow as pa
    import pyarrow.parquet as pq
    from niaf_train.data.lerobot_v3 import load_lerobot

    root = _lerobot_dataset(tmp_path / "ds")
    reference = np.asarray(load_lerobot(root, 4, cache_dir=tmp_path / "cache").with_format("numpy")["action"])
    data = root / "data" / "chunk-000" / "file-000.parquet"
    st = data.stat()
    table = pq.read_table(data)
    column = table["action"].combine_chunks()
    flat = column.flatten().to_numpy().copy()
    flat[5] = -flat[5]
    flipped = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), column.type.list_size)
    pq.write_table(table.set_column(table.schema.get_field_index("action"), "action", flipped), data)
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns))
    if data.stat().st_size != st.st_size:
        pytest.skip("this pyarrow version changes the file size; the unit check above still holds")
    again = np.asarray(load_lerobot(root, 4, cache_dir=tmp_path / "cache").with_format("numpy")["action"])
    changed = np.argwhere(again != reference)
    assert len(changed) and np.all(again[tuple(changed.T)] == -reference[tuple(changed.T)])


def test_truncated_cache_is_rebuilt_and_a_truncated_second_file_is_named(tmp_path, caplog):
    from niaf_train.data.episodes import EpisodeError
    from niaf_train.data.lerobot_v3 import load_lerobot

    root = _lerobot_dataset(tmp_path / "ds")
    first = load_lerobot(root, 4, cache_dir=tmp_path / "cache")
    reference = np.asarray(first.with_format("numpy")["action"])
    (arrow,) = (tmp_path / "cache").rglob("data.arrow")
    del first
    arrow.write_bytes(arrow.read_bytes()[: arrow.stat().st_size // 2])
    with caplog.at_level(logging.WARNING, logger="niaf_train.data.chunking"):
        again = load_lerobot(root, 4, cache_dir=tmp_path / "cache")
    assert "rebuilding it" in caplog.text
    np.testing.assert_array_equal(np.asarray(again.with_format("numpy")["action"]), reference)

    second = root / "data" / "chunk-000" / "file-001.parquet"  # episodes 2 and 3
    second.write_bytes(second.read_bytes()[:100])
    with pytest.raises(EpisodeError, match=r"file-001\.parquet: episode 2: key 'data': unreadable"):
        load_lerobot(root, 4, cache_dir=tmp_path / "cache2")


# ============================================================================================================
# The command lines answer every class above with one line and exit status 2
# ============================================================================================================
def test_cli_refusals_are_one_line_with_exit_status_2(tmp_path, fixtures_dir, capsys):
    import pickle

    from niaf_train.data.cli import main as niaf_data
    from numpy.lib import format as npy_format

    split = _calvin_split(tmp_path, fixtures_dir)
    x: list = []
    for _ in range(64):
        x = [x, x]
    with open(split / "lang_annotations" / "auto_lang_ann.npy", "wb") as fh:
        npy_format.write_array_header_1_0(fh, {"descr": "|O", "fortran_order": False, "shape": ()})
        fh.write(pickle.dumps(np.array({"language": {"ann": x}}, dtype=object)))
    capsys.readouterr()
    assert niaf_data(["inspect", "--format", "calvin", str(split)]) == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1
        and "auto_lang_ann.npy: the pickled data expands" in err
        and "Traceback" not in err
    )

    data = _lerobot_dataset(tmp_path / "ds")
    code, err = _niaf_train(
        capsys, *_train_args(data, tmp_path / "run", tmp_path / "cache", "--siren_omega0", "1e300")
    )
    assert code == 2 and "model: NiafConfig: `siren_omega0` must be <= 1000" in _error_line(err)
    code, err = _niaf_train(
        capsys, *_train_args(tmp_path, tmp_path / "run2", tmp_path / "cache", "--data.source", "calvin")
    )
    assert code == 2 and "auto_lang_ann.npy: the pickled data expands" in _error_line(err)
