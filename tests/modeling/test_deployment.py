"""The deployment side: numpy action function + streaming runtime import and run without torch or transformers.

A function predicted by a tiny random model (torch side) is written with ``to_dict`` / ``save`` and read back by
``from_dict`` / ``load`` (a) in a fresh interpreter whose import system refuses torch and transformers, and (b)
in process, against the model's own ``generate_actions`` in float64. (c) Hostile or broken data is refused with
one line naming the key or file. Import *times* are measured by ``benchmarks/bench_import.py``, not here.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from niaf_tiny_backbones import make_inputs
from test_modeling import STATS, make_model

from modeling_niaf import NumpyActionFunction
from modeling_niaf.numpy_function import FORMAT_VERSION, LIMITS, MAX_DERIVATIVE_ORDER

REPO = Path(__file__).resolve().parents[2]
NAMES = ("position", "velocity", "acceleration", "jerk")

BLOCK_TORCH = """
import sys
class _Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers"):
            raise ImportError(f"{name} is blocked in this interpreter")
        return None
sys.meta_path.insert(0, _Blocked())
sys.path.insert(0, REPO)
"""


def _run_blocked(script: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONNOUSERSITE": "1"})
    code = f"REPO = {str(REPO)!r}\n" + BLOCK_TORCH + textwrap.dedent(script)
    return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def model_and_inputs():
    """A tiny random Florence-2 NIAF in float64 (backbone, ψ heads and SIREN) and a batch of 2 inputs."""
    model = make_model("florence2", head_std=0.05, normalization_stats=STATS).double()
    inputs = {k: (v.double() if v.is_floating_point() else v) for k, v in make_inputs("florence2").items()}
    return model, inputs


def _times(fn) -> np.ndarray:
    return np.linspace(0.0, fn.chunk_duration, 13)


# --------------------------------------------------------------------------------------------------------
# (a) a control process without torch and transformers
# --------------------------------------------------------------------------------------------------------
def test_blocked_interpreter_loads_evaluates_and_streams_a_saved_function(model_and_inputs, tmp_path):
    model, inputs = model_and_inputs
    fn = model.predict_action_function(**inputs)
    fn.to_numpy().save(tmp_path / "plan.npz")
    fn[0].to_numpy().save(tmp_path / "first.npz")
    (tmp_path / "plan.json").write_text(json.dumps(fn[1].to_numpy().to_dict()))
    times = _times(fn)
    script = f"""
        import json
        import numpy as np
        import modeling_niaf
        import modeling_niaf.numpy_function
        import modeling_niaf.runtime
        from modeling_niaf import ActionStream, NumpyActionFunction

        for name in ("torch", "transformers"):
            try:
                __import__(name)
            except ImportError:
                pass
            else:
                raise SystemExit(name + " is importable: the block does not work")
        try:
            modeling_niaf.NiafForActionFunction
        except ImportError:
            pass
        else:
            raise SystemExit("the model side imported without torch")

        both = NumpyActionFunction.load("plan.npz")
        second = NumpyActionFunction.from_dict(json.loads(open("plan.json").read()))
        times = np.array({times.tolist()!r})
        traj = both(times=times, derivatives=3)
        hot = np.stack([second.at(t, derivatives=3) for t in times], axis=1)  # [4, N, D]
        np.savez("out.npz", **{{n: getattr(traj, n) for n in {NAMES!r}}}, hot=hot)

        stream = ActionStream(traj.position[0, 0], start_time=0.0, blend_duration=0.0)
        assert stream.submit(NumpyActionFunction.load("first.npz"), observation_time=0.0, now=0.01)
        commands = [stream.command(0.01 + 0.002 * k) for k in range(5)]
        assert all(c.mode == "track" and np.all(np.isfinite(c.position)) for c in commands), commands
        assert stream.submit(second, observation_time=0.02, now=0.03)
        commands += [stream.command(0.03 + 0.002 * k) for k in range(5)]
        np.save("stream.npy", np.stack([c.position for c in commands]))
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "configuration_niaf"))
        assert not loaded, loaded
        print("ok")
    """
    proc = _run_blocked(script, tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]
    out = np.load(tmp_path / "out.npz")
    ref = fn(times=times, derivatives=3)
    for k, name in enumerate(NAMES):
        expected = getattr(ref, name).numpy()
        np.testing.assert_allclose(out[name], expected, rtol=1e-12, atol=1e-12 * np.abs(expected).max(), err_msg=name)
        np.testing.assert_allclose(out["hot"][k], expected[1], rtol=1e-12, atol=1e-12 * np.abs(expected).max(),
                                   err_msg=f"at(): {name}")
    # the stream tracked sample 0, then switched (no blend) to sample 1 observed at 0.02 s
    positions = np.load(tmp_path / "stream.npy")
    np.testing.assert_allclose(positions[0], fn(times=[0.01], derivatives=0).position[0, 0].numpy(), rtol=1e-12)
    np.testing.assert_allclose(positions[-1], fn[1](times=[0.03 + 0.008 - 0.02], derivatives=0).position[0, 0].numpy(),
                               rtol=1e-12)


# --------------------------------------------------------------------------------------------------------
# (b) round trip through JSON text against the model's generate_actions
# --------------------------------------------------------------------------------------------------------
def test_json_round_trip_equals_generate_actions_in_float64(model_and_inputs):
    model, inputs = model_and_inputs
    twin = model.predict_action_function(**inputs).to_numpy()
    assert twin.dtype == np.float64
    text = json.dumps(twin.to_dict())
    loaded = NumpyActionFunction.from_dict(json.loads(text))
    times = np.linspace(0.0, model.config.chunk_duration, 17)
    ref = model.generate_actions(**inputs, times=torch.from_numpy(times), derivatives=3)
    got, direct = loaded(times=times, derivatives=3), twin(times=times, derivatives=3)
    for name in NAMES:
        expected = getattr(ref, name).numpy()
        np.testing.assert_allclose(getattr(got, name), expected, rtol=1e-11, atol=1e-11 * np.abs(expected).max(),
                                   err_msg=name)
        np.testing.assert_array_equal(getattr(got, name), getattr(direct, name), err_msg=name)  # bit-identical
    norm = loaded(num_points=7, denormalize=False)
    np.testing.assert_allclose(norm.position, model.generate_actions(**inputs, num_points=7, denormalize=False,
                                                                     derivatives=0).position.numpy(), rtol=1e-11)


@pytest.mark.parametrize("suffix", [".json", ".npz"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_file_round_trip_is_bit_identical_with_offsets(model_and_inputs, tmp_path, suffix, dtype):
    model, inputs = model_and_inputs
    fn = model.predict_action_function(**inputs)
    twin = fn.to_numpy(dtype=dtype)
    offset = np.array([[0.1, -0.2, 0.3], [1.0, 2.0, 3.0]]) / 3.0  # floats without a short decimal form
    with_offset = NumpyActionFunction.from_dict({**twin.to_dict(), "position_offset": offset.tolist()})
    with_offset.save(tmp_path / f"plan{suffix}")
    loaded = NumpyActionFunction.load(tmp_path / f"plan{suffix}")
    assert loaded.dtype == np.dtype(dtype) and loaded.chunk_size == fn.chunk_size
    assert loaded.to_dict() == with_offset.to_dict()
    a, b = with_offset(num_points=9), loaded(num_points=9)
    for name in NAMES:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    np.testing.assert_array_equal(loaded.at(0.1, derivatives=3, sample=1), with_offset.at(0.1, derivatives=3, sample=1))
    shift = loaded(num_points=9).position - twin(num_points=9).position
    np.testing.assert_allclose(shift, np.broadcast_to(offset[:, None, :], shift.shape), atol=1e-6)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left behind


def test_function_built_from_float32_arrays_round_trips_exactly():
    rng = np.random.default_rng(0)
    f32 = lambda *shape: rng.normal(size=shape).astype(np.float32)  # noqa: E731
    fn = NumpyActionFunction(
        weights=[f32(8, 1), f32(8, 8)], biases=[f32(8), f32(8)], readout_weight=f32(2, 8), readout_bias=f32(2),
        omega_0=30.0, gamma=f32(1, 2, 8) * 0.1, beta=f32(1, 2, 8) * 0.1, chunk_duration=0.45,
        action_center=f32(2), action_half_range=np.abs(f32(2)), chunk_size=10, dtype=np.float32,
    )
    again = NumpyActionFunction.from_dict(json.loads(json.dumps(fn.to_dict())))
    for name in NAMES:
        np.testing.assert_array_equal(getattr(again(num_points=11), name), getattr(fn(num_points=11), name))


def test_numpy_side_constants_match_the_model_side():
    from configuration_niaf.configuration_niaf import HEAD_LIMITS
    from modeling_niaf.siren import MAX_DERIVATIVE_ORDER as SIREN_MAX

    assert MAX_DERIVATIVE_ORDER == SIREN_MAX
    assert LIMITS == {"omega_0": HEAD_LIMITS["siren_omega0"], "chunk_size": HEAD_LIMITS["chunk_size"]}


# --------------------------------------------------------------------------------------------------------
# (c) hostile or broken data
# --------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def good(model_and_inputs):
    model, inputs = model_and_inputs
    return model.predict_action_function(**inputs).to_numpy().to_dict()  # B = 2, L = 2, H = 16, D = 3


def _bad(good: dict, **changes) -> dict:
    data = json.loads(json.dumps(good))
    for key, value in changes.items():
        if value is _DROP:
            del data[key]
        else:
            data[key] = value
    return data


_DROP = object()


@pytest.mark.parametrize(
    "changes, needle",
    [
        ({"format": "pickle"}, "key 'format' must be 'niaf-numpy-action-function'"),
        ({"format_version": FORMAT_VERSION + 1}, "key 'format_version' must be 1"),
        ({"format_version": True}, "key 'format_version' must be 1"),
        ({"gamma": _DROP}, "missing keys ['gamma']"),
        ({"extra": 1}, "unknown keys ['extra']"),
        ({"dtype": "float16"}, "key 'dtype' must be 'float32' or 'float64'"),
        ({"omega_0": -30.0}, "key 'omega_0' must be a finite number > 0 and <= 1000"),
        ({"omega_0": 1e300}, "key 'omega_0' must be a finite number > 0 and <= 1000"),
        ({"omega_0": 10**400}, "key 'omega_0' must be a finite number > 0"),
        ({"omega_0": [30.0]}, "key 'omega_0' must be a finite number > 0"),
        ({"chunk_duration": float("nan")}, "key 'chunk_duration' must be a number of seconds in [0.0001, 10000]"),
        ({"chunk_duration": "0.45"}, "key 'chunk_duration' must be a number of seconds in [0.0001, 10000]"),
        ({"chunk_size": True}, "key 'chunk_size' must be an int (K)"),
        ({"chunk_size": 2.5}, "key 'chunk_size' must be an int (K) in 1..10000"),
        ({"chunk_size": 10**30}, "key 'chunk_size' must be an int (K) in 1..10000"),
        ({"gamma": [[[0.0] * 16] * 2, [[0.0] * 15] * 2]}, "key 'gamma' must be a numeric array [B, L, H], got ragged"),
        ({"gamma": [[["x"] * 16] * 2] * 2}, "key 'gamma' must be a numeric array [B, L, H], got dtype <U1"),
        ({"beta": [[[True] * 16] * 2] * 2}, "key 'beta' must be a numeric array"),
        ({"beta": [[[0.0] * 16] * 2] * 3}, "key 'beta' must have shape [B, L, H] = [2, 2, 16], got [3, 2, 16]"),
        ({"gamma": [[[float("inf")] * 16] * 2] * 2}, "key 'gamma' contains NaN or inf"),
        ({"gamma": [[[10**400] * 16] * 2] * 2}, "key 'gamma' must be a numeric array"),
        ({"weights": "abc"}, "key 'weights' must be a list of L = 2 arrays"),
        ({"biases": [[0.0] * 16]}, "key 'biases' must be a list of L = 2 arrays"),
        ({"weights": [[[0.0, 0.0]] * 16, [[0.0] * 16] * 16]}, "key weights[0] must have shape [H, in] = [16, 1]"),
        ({"readout_weight": [[0.0] * 15] * 3}, "key 'readout_weight' must have shape [D, H] = [3, 16]"),
        ({"readout_bias": [0.0] * 4}, "key 'readout_bias' must have shape [D] = [3]"),
        ({"position_offset": [0.0, 0.0, 0.0]}, "key 'position_offset' must have shape [B, D] = [2, 3]"),
        ({"action_half_range": None}, "key 'action_half_range' must be a numeric array"),
    ],
)
def test_from_dict_refuses_bad_data_in_one_line(good, changes, needle):
    with pytest.raises(ValueError) as err:
        NumpyActionFunction.from_dict(_bad(good, **changes))
    message = str(err.value)
    assert message.startswith("NumpyActionFunction.from_dict: ") and "\n" not in message, message
    assert needle in message, message


def test_from_dict_refuses_a_non_mapping():
    with pytest.raises(ValueError, match="expected a dict as written by NumpyActionFunction.to_dict, got list"):
        NumpyActionFunction.from_dict([1, 2, 3])


def _npy_bytes(header: dict, payload: bytes) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + payload


def test_load_refuses_broken_and_hostile_files(good, tmp_path):
    def refused(path: Path, needle: str) -> None:
        with pytest.raises(ValueError) as err:
            NumpyActionFunction.load(path)
        message = str(err.value)
        assert message.startswith(f"NumpyActionFunction.load({str(path)!r}): ") and "\n" not in message, message
        assert needle in message, message

    refused(tmp_path / "plan.pkl", "expected a .json or .npz file")
    with pytest.raises(FileNotFoundError, match="no such file"):
        NumpyActionFunction.load(tmp_path / "absent.json")
    text = json.dumps(good)
    (tmp_path / "cut.json").write_text(text[: len(text) // 2])
    refused(tmp_path / "cut.json", "not valid JSON text")
    (tmp_path / "deep.json").write_text("[" * 200_000 + "]" * 200_000)
    refused(tmp_path / "deep.json", "not valid JSON text")
    (tmp_path / "list.json").write_text("[1, 2]")
    refused(tmp_path / "list.json", "expected a dict")
    (tmp_path / "nan.json").write_text(json.dumps(_bad(good, omega_0=float("nan"))))
    refused(tmp_path / "nan.json", "key 'omega_0' must be a finite number > 0")

    (tmp_path / "text.npz").write_text("not a zip file")
    refused(tmp_path / "text.npz", "not a readable NumpyActionFunction .npz")
    marker = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    np.savez(tmp_path / "pickled.npz", metadata=np.array("{}"), gamma=np.array([Payload()], dtype=object))
    refused(tmp_path / "pickled.npz", "Object arrays cannot be loaded when allow_pickle=False")
    assert not marker.exists()
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as zf:  # a header claiming 8 TB over 16 bytes of data
        zf.writestr("gamma.npy", _npy_bytes({"descr": "<f8", "fortran_order": False, "shape": (10**12,)}, b"\0" * 16))
    refused(tmp_path / "huge.npz", "member gamma.npy claims 8000000000000 bytes")
    np.savez(tmp_path / "nometa.npz", gamma=np.zeros((2, 2, 16)))
    refused(tmp_path / "nometa.npz", "missing the 'metadata' entry")
    meta = {k: good[k] for k in ("format", "format_version", "dtype", "omega_0", "chunk_duration", "chunk_size")}
    arrays = {k: np.asarray(good[k]) for k in ("action_center", "action_half_range", "position_offset",
                                                "readout_weight", "readout_bias", "gamma", "beta")}
    layers = {f"{key}_{i}": np.asarray(good[key][i]) for key in ("weights", "biases") for i in range(2)}
    np.savez(tmp_path / "layers.npz", metadata=np.array(json.dumps({**meta, "num_layers": 3})), **arrays, **layers)
    refused(tmp_path / "layers.npz", "missing arrays ['weights_2']")
    np.savez(tmp_path / "ok.npz", metadata=np.array(json.dumps({**meta, "num_layers": 2})), **arrays, **layers)
    NumpyActionFunction.load(tmp_path / "ok.npz")  # the hand-written layout above is the saved one
    np.savez(tmp_path / "short.npz", metadata=np.array(json.dumps({**meta, "num_layers": 2})),
             **{**arrays, "gamma": np.zeros((2, 1, 16))}, **layers)
    refused(tmp_path / "short.npz", "key 'beta' must have shape [B, L, H] = [2, 1, 16]")


# --------------------------------------------------------------------------------------------------------
# The package namespace: public API only, Auto classes registered by the model side
# --------------------------------------------------------------------------------------------------------
def test_public_names_and_auto_registration_on_first_model_side_use(tmp_path):
    script = """
        import sys
        sys.path.insert(0, REPO_ROOT)
        import modeling_niaf
        assert "torch" not in sys.modules and "configuration_niaf" not in sys.modules
        assert set(modeling_niaf.__all__) <= set(dir(modeling_niaf))
        try:
            modeling_niaf.ModulatedSiren
        except AttributeError as err:
            assert "from modeling_niaf.siren import ModulatedSiren" in str(err), err
        else:
            raise SystemExit("a building block is exported at the top level")
        from transformers import AutoConfig
        try:
            AutoConfig.for_model("niaf")
        except ValueError:
            pass
        else:
            raise SystemExit("niaf registered before the model side was used")
        from modeling_niaf import NiafForActionFunction
        from transformers.models.auto.modeling_auto import MODEL_MAPPING
        config = AutoConfig.for_model("niaf", action_dim=2)
        assert type(config).__name__ == "NiafConfig", type(config)
        assert MODEL_MAPPING[type(config)] is NiafForActionFunction
        print("ok")
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update({"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    code = f"REPO_ROOT = {str(REPO)!r}\n" + textwrap.dedent(script)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]


# --------------------------------------------------------------------------------------------------------
# Bounded memory, degenerate durations, argument types, batch indexing, FIFOs, the key at fault
# --------------------------------------------------------------------------------------------------------
def _wide(batch: int, layers: int, width: int, dim: int = 4, seed: int = 0) -> dict:
    """A function whose per-sample weights (B·L·H²) would be far larger than its arrays (L·H² + B·L·H)."""
    rng = np.random.default_rng(seed)
    weights = [rng.uniform(-1, 1, (width, 1))] + [rng.uniform(-0.01, 0.01, (width, width)) for _ in range(layers - 1)]
    return dict(weights=weights, biases=[rng.uniform(-1, 1, width) for _ in range(layers)],
                readout_weight=rng.normal(0, 0.01, (dim, width)), readout_bias=np.zeros(dim), omega_0=30.0,
                gamma=rng.normal(0, 0.1, (batch, layers, width)), beta=rng.normal(0, 0.1, (batch, layers, width)),
                chunk_duration=0.5, action_center=np.zeros(dim), action_half_range=np.ones(dim))


def test_load_allocates_in_proportion_to_the_file_not_to_per_sample_weights(tmp_path):
    """B = 64, L = 3, H = 384: per-sample weights would be 64·3·384²·8 B = 226 MB from 4.6 MB of arrays. Loading
    and evaluating stay within a small multiple of the arrays, and the modulation form gives the per-sample
    weights' numbers."""
    import tracemalloc

    kwargs = _wide(64, 3, 384)
    NumpyActionFunction(**kwargs).save(tmp_path / "wide.npz")
    arrays = sum(np.asarray(v).nbytes for v in kwargs.values() if isinstance(v, np.ndarray))
    arrays += sum(w.nbytes for w in kwargs["weights"]) + sum(b.nbytes for b in kwargs["biases"])
    tracemalloc.start()
    try:
        fn = NumpyActionFunction.load(tmp_path / "wide.npz")
        fn.at(0.2, 3, sample=63)
        fn(num_points=20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 6 * arrays < 64 * 3 * 384 * 384 * 8 / 5, (peak, arrays)
    # reference: the per-sample modulated weights, built explicitly for one sample
    s, t = 17, np.array([0.0, 0.13, 0.5])
    h = np.sin(30.0 * (1 + kwargs["gamma"][s, 0]) * kwargs["weights"][0][:, 0] * (2 * t[:, None] / 0.5 - 1)
               + 30.0 * (kwargs["biases"][0] + kwargs["beta"][s, 0]))
    for layer in (1, 2):
        w = 30.0 * (1 + kwargs["gamma"][s, layer])[:, None] * kwargs["weights"][layer]
        h = np.sin(h @ w.T + 30.0 * (kwargs["biases"][layer] + kwargs["beta"][s, layer]))
    want = h @ kwargs["readout_weight"].T
    got = fn(times=np.broadcast_to(t, (64, 3)).copy(), derivatives=0).position[s]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)


def test_memory_cap_bounds_what_a_function_holds_and_a_call_allocates(good, tmp_path, monkeypatch):
    from modeling_niaf import numpy_function

    fn = NumpyActionFunction.from_dict(good)
    with pytest.raises(ValueError, match="query points would need about .* MAX_MEMORY_BYTES"):
        fn(num_points=10**10)  # refused before np.linspace allocates 80 GB
    with pytest.raises(ValueError, match="query points would need"):
        fn(tau=np.zeros(2 * 10**7))
    monkeypatch.setattr(numpy_function, "MAX_MEMORY_BYTES", 5_000)
    with pytest.raises(ValueError, match=r"^NumpyActionFunction.from_dict: the function would hold \d+ bytes"):
        NumpyActionFunction.from_dict(good)
    fn.save(tmp_path / "plan.npz")
    with pytest.raises(ValueError, match="the function would hold"):
        NumpyActionFunction.load(tmp_path / "plan.npz")
    with pytest.raises(ValueError, match="the function would hold"):
        NumpyActionFunction(**_wide(4, 2, 64))


@pytest.mark.parametrize("duration", [1e-300, 0.0, -1.0, float("inf"), float("nan"), 1e300, "0.45", True])
def test_degenerate_chunk_durations_are_refused_everywhere(good, duration):
    with pytest.raises(ValueError, match=r"chunk_duration.* must be a number of seconds in \[0.0001, 10000\]"):
        NumpyActionFunction.from_dict(_bad(good, chunk_duration=duration))
    with pytest.raises(ValueError, match="chunk_duration"):
        NumpyActionFunction(**{**_wide(1, 2, 8), "chunk_duration": duration})


def test_numpy_scalars_are_accepted_and_wrong_types_named(good):
    fn = NumpyActionFunction(**{**_wide(1, 2, 8), "chunk_duration": np.float32(0.5)})
    assert fn.chunk_duration == float(np.float32(0.5))
    out = fn.at(np.float32(0.25), np.int64(3), np.int64(0))
    assert out.shape == (4, 4) and np.all(np.isfinite(out))
    np.testing.assert_array_equal(fn.at(0.25, 3, -1), out)  # a negative sample counts from the end
    assert fn(times=[0.1], derivatives=np.int64(2)).acceleration.shape == (1, 1, 4)
    for kwargs, needle in [({"derivatives": 1.5}, "`derivatives` must be an int in 0..3, got 1.5"),
                           ({"derivatives": True}, "`derivatives` must be an int"),
                           ({"sample": 5}, "`sample` must be an int in -1..0 (Python indexing; the batch holds 1 "
                                           "function(s)), got 5"),
                           ({"sample": -2}, "`sample` must be an int in -1..0"),
                           ({"sample": 0.0}, "`sample` must be an int"),
                           ({"time": "0.1"}, "`time` must be a real number of seconds")]:
        with pytest.raises(ValueError) as err:
            fn.at(**{"time": 0.1, **kwargs})
        assert needle in str(err.value)
    with pytest.raises(ValueError, match="`derivatives` must be an int in 0..3, got 1.5"):
        fn(times=[0.1], derivatives=1.5)


def test_indexing_a_batch_out_of_range_is_an_error(model_and_inputs):
    model, inputs = model_and_inputs
    fn = model.predict_action_function(**inputs)  # B = 2
    assert len(fn[1]) == 1 and len(fn[-2]) == 1 and len(fn[np.int64(1)]) == 1 and len(fn[0:5]) == 2
    torch.testing.assert_close(fn[-1].gamma, fn.gamma[1:2])
    for index in (2, -3, 10**6):
        with pytest.raises(IndexError, match=f"sample {index} is out of range for a batch of 2"):
            fn[index]
    for index in (slice(2, 5), slice(1, 1)):
        with pytest.raises(IndexError, match="selects no sample of a batch of 2"):
            fn[index]
    for index in (True, 0.0, np.array([0])):
        with pytest.raises(TypeError, match="index must be an int or a slice"):
            fn[index]


def test_a_fifo_or_folder_as_plan_file_is_named_not_waited_on(tmp_path):
    os.mkfifo(tmp_path / "plan.npz")
    (tmp_path / "dir.json").mkdir()
    for name, kind in (("plan.npz", "a FIFO"), ("dir.json", "a folder")):
        with pytest.raises(ValueError) as err:
            NumpyActionFunction.load(tmp_path / name)
        message = str(err.value)
        assert message == (f"NumpyActionFunction.load({str(tmp_path / name)!r}): {kind}, not a regular file written "
                           "by NumpyActionFunction.save")


@pytest.mark.parametrize("key", ["readout_weight", "readout_bias", "action_center", "action_half_range"])
def test_a_missing_row_is_blamed_on_the_key_that_lacks_it(good, key):
    """D is what most keys agree on: the one key with a row too few is the one named."""
    data = _bad(good)
    data[key] = data[key][:-1]
    with pytest.raises(ValueError) as err:
        NumpyActionFunction.from_dict(data)
    assert f"key '{key}' must have shape" in str(err.value) and "= [3" in str(err.value), str(err.value)
