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
