"""The restricted unpickler: plain data and numpy objects load, anything else is refused unexecuted."""

from __future__ import annotations

import os
import pickle
import pickletools
import shlex
import subprocess
from pathlib import Path

import numpy as np
import pytest
from niaf_train.data.safe_pickle import UnsafePickleError, safe_load_npy, safe_loads


def _calvin_like_dict() -> dict:
    return {
        "language": {
            "ann": ["open the drawer", "push the red block left"],
            "task": ["open_drawer", "push_red_block_left"],
            "emb": np.arange(2 * 1 * 6, dtype=np.float32).reshape(2, 1, 6),
        },
        "info": {"indx": [(np.int64(10), np.int64(74)), (3, 40)], "episodes": []},
    }


def _assert_same(loaded: dict, expected: dict) -> None:
    assert loaded["language"]["ann"] == expected["language"]["ann"]
    assert loaded["language"]["task"] == expected["language"]["task"]
    emb = loaded["language"]["emb"]
    assert emb.dtype == np.float32 and emb.shape == (2, 1, 6)
    np.testing.assert_array_equal(emb, expected["language"]["emb"])
    assert [tuple(int(v) for v in t) for t in loaded["info"]["indx"]] == [(10, 74), (3, 40)]
    assert loaded["info"]["episodes"] == []


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_plain_data_round_trips_every_protocol(protocol: int) -> None:
    expected = _calvin_like_dict()
    extra = {"f": 1.5, "i": -3, "b": b"\x00\xff", "none": None, "t": True, "s": np.str_("x"), "c": 2 + 1j}
    loaded = safe_loads(pickle.dumps({**expected, **extra}, protocol=protocol))
    _assert_same(loaded, expected)
    assert {k: loaded[k] for k in extra} == extra


def test_npy_of_dict_written_by_np_save(tmp_path: Path) -> None:
    expected = _calvin_like_dict()
    path = tmp_path / "auto_lang_ann.npy"
    np.save(path, expected, allow_pickle=True)
    array = safe_load_npy(path)
    assert array.shape == () and array.dtype == object
    _assert_same(array.item(), expected)


def test_numeric_npy_goes_through_plain_np_load(tmp_path: Path) -> None:
    path = tmp_path / "ep_start_end_ids.npy"
    ids = np.array([[0, 9], [12, 30]], dtype=np.int64)
    np.save(path, ids)
    np.testing.assert_array_equal(safe_load_npy(path), ids)


def test_numpy1_module_spelling_is_accepted() -> None:
    """Files written by numpy 1.x name `numpy.core.multiarray`; numpy 2.x names `numpy._core.multiarray`."""
    stream = pickle.dumps(np.arange(4, dtype=np.int16), protocol=2)
    assert b"numpy._core.multiarray" in stream
    old = stream.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert list(pickletools.genops(old))[-1][0].name == "STOP"  # still a well-formed stream
    np.testing.assert_array_equal(safe_loads(old), np.arange(4, dtype=np.int16))


class _RunsCommand:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _CallsEval:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


class _SpawnsProcess:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (subprocess.Popen, (["sh", "-c", self.command],))


@pytest.mark.parametrize("factory", [_RunsCommand, _SpawnsProcess])
def test_malicious_npy_is_refused_without_running_anything(tmp_path: Path, factory) -> None:
    marker = tmp_path / "pwned"
    payload = {
        "language": {"ann": ["x"], "task": ["y"]},
        "info": {"indx": [factory(f"touch {shlex.quote(str(marker))}")]},
    }
    path = tmp_path / "auto_lang_ann.npy"
    # np.save pickles the 0-d object array; the malicious object sits inside the dict, like a tampered file.
    np.save(path, np.array(payload, dtype=object), allow_pickle=True)
    with pytest.raises(UnsafePickleError) as info:
        safe_load_npy(path)
    message = str(info.value)
    assert str(path) in message
    assert ("posix.system" in message or "os.system" in message) or "subprocess.Popen" in message
    assert not marker.exists()


def test_eval_is_refused() -> None:
    with pytest.raises(UnsafePickleError, match=r"builtins\.eval"):
        safe_loads(pickle.dumps([1, _CallsEval()]), source="evil.pkl")


def test_codecs_encode_only_for_latin1() -> None:
    import _codecs

    class _Rot13:
        def __reduce__(self):
            return (_codecs.encode, ("abc", "rot13"))

    with pytest.raises(UnsafePickleError, match="latin-1"):
        safe_loads(pickle.dumps(_Rot13(), protocol=2))


def test_corrupt_stream_names_the_source() -> None:
    stream = pickle.dumps({"a": [1, 2, 3]})
    with pytest.raises(pickle.UnpicklingError, match="broken.npy"):
        safe_loads(stream[: len(stream) // 2], source="broken.npy")


def test_not_an_npy_file(tmp_path: Path) -> None:
    path = tmp_path / "auto_lang_ann.npy"
    path.write_bytes(b"definitely not numpy")
    with pytest.raises(ValueError, match="not a valid .npy"):
        safe_load_npy(path)


# ------------------------------------------------------------------------------------------------------------
# Hand-made hostile pickle streams and .npy headers (moved from test_hostile_inputs.py)
# ------------------------------------------------------------------------------------------------------------
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

