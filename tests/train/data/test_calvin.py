"""CALVIN loader: the real frame's schema, hand-computed chunks on a release-layout fixture, validation, safety."""

from __future__ import annotations

import math
import shlex
import zipfile
from pathlib import Path

import numpy as np
import pytest
from data_factories import calvin_real_frame, two_window_calvin_split, write_calvin_split
from data_factories import calvin_training_split as _calvin_split
from niaf_train.data.calvin import (
    CALVIN_FPS,
    CalvinFrameNaming,
    calvin_relative_action,
    iter_calvin_episodes,
    load_calvin,
    read_calvin_language,
    read_calvin_segments,
    read_calvin_statistics,
)
from niaf_train.data.chunking import dataset_fps, load_summary
from niaf_train.data.episodes import EpisodeError, LoadSummary
from niaf_train.data.safe_pickle import UnsafePickleError

REAL_KEYS = [
    "actions",
    "rel_actions",
    "robot_obs",
    "scene_obs",
    "rgb_static",
    "rgb_gripper",
    "rgb_tactile",
    "depth_static",
    "depth_gripper",
    "depth_tactile",
]


def _hand_rel_action(a: np.ndarray, o: np.ndarray) -> np.ndarray:
    """calvin_env's segment rule, written out element by element with the math module."""
    out = []
    for i in range(3):
        out.append(min(max(a[i] - o[i], -0.02), 0.02) / 0.02)
    for i in range(3, 6):
        d = a[i] - o[i]
        d = (d + math.pi) % (2 * math.pi) - math.pi
        out.append(min(max(d, -0.05), 0.05) / 0.05)
    out.append(a[6])
    return np.array(out, dtype=np.float64)


# ------------------------------------------------------------------------------------------------------------
# the real frame


def test_real_frame_keys_dtypes_and_shapes(fixtures_dir: Path) -> None:
    path = fixtures_dir / "calvin" / "episode_0358482.npz"
    with zipfile.ZipFile(path) as zf:  # archive order, as written by savez_compressed
        assert [n[:-4] for n in zf.namelist()] == REAL_KEYS
        assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in zf.infolist())
    with np.load(path, allow_pickle=False) as npz:
        for key in ("actions", "rel_actions", "robot_obs", "scene_obs"):
            assert npz[key].dtype == np.float64, key
        assert (npz["actions"].shape, npz["rel_actions"].shape) == ((7,), (7,))
        assert (npz["robot_obs"].shape, npz["scene_obs"].shape) == ((15,), (24,))
        assert npz["rgb_static"].dtype == np.uint8 and npz["rgb_static"].shape == (200, 200, 3)
        assert npz["rgb_gripper"].dtype == np.uint8 and npz["rgb_gripper"].shape == (84, 84, 3)
        assert npz["rgb_tactile"].shape == (160, 120, 6)
        assert npz["depth_static"].dtype == np.float32 and npz["depth_tactile"].shape == (160, 120, 2)
        # the first frame of the debug split: gripper open (+1), width ~0.08 m, last command open
        assert npz["actions"][6] == 1.0 and npz["robot_obs"][14] == 1.0
        assert npz["robot_obs"][6] == pytest.approx(0.08, abs=1e-3)


def test_real_frame_rel_actions_recomputed_exactly(fixtures_dir: Path) -> None:
    with np.load(fixtures_dir / "calvin" / "episode_0358482.npz", allow_pickle=False) as npz:
        actions, robot_obs, rel = npz["actions"], npz["robot_obs"], npz["rel_actions"]
    np.testing.assert_array_equal(_hand_rel_action(actions, robot_obs), rel)
    np.testing.assert_array_equal(calvin_relative_action(actions, robot_obs), rel)


def test_calvin_relative_action_clips_and_wraps() -> None:
    o = np.zeros(15)
    o[3] = 3.1
    a = np.array([0.05, -0.001, 0.0, -3.12, 0.01, -0.2, -1.0])
    # x clips at +0.02 -> 1; y = -0.001/0.02; Euler x: -3.12 - 3.1 wraps to 0.0632 -> clips -> 1;
    # Euler y 0.01/0.05 = 0.2; Euler z clips at -1; gripper copied
    expected = [1.0, -0.05, 0.0, 1.0, 0.2, -1.0, -1.0]
    np.testing.assert_allclose(calvin_relative_action(a, o), expected, rtol=0, atol=1e-12)
    batch = calvin_relative_action(np.stack([a, a]), np.stack([o, o]))
    assert batch.shape == (2, 7)


# ------------------------------------------------------------------------------------------------------------
# release layout


@pytest.fixture(scope="module")
def calvin_split(tmp_path_factory, fixtures_dir: Path):
    root = tmp_path_factory.mktemp("task_D_D")
    real = calvin_real_frame(fixtures_dir)
    info = write_calvin_split(
        root / "training",
        real,
        segments=[(100, 111), (120, 127)],
        annotations=[
            (100, 106, "open the drawer", "open_drawer"),
            (104, 111, "push the red block to the left", "push_red_block_left"),
            (121, 127, "turn on the led", "turn_on_led"),
        ],
    )
    return root, info


def _expected_chunks(values: np.ndarray, chunk_size: int, stride: int = 1):
    """Hand-rolled chunks of one episode: values at t + k*stride, last real value repeated past the end."""
    n = len(values)
    out = []
    for t in range(0, n, stride):
        rows, pads = [], []
        last_real = t
        for k in range(chunk_size):
            f = t + k * stride
            if f < n:
                last_real = f
                rows.append(values[f])
                pads.append(False)
            else:
                rows.append(values[last_real])
                pads.append(True)
        out.append((t, np.array(rows), pads))
    return out


def test_fixture_matches_the_release_schema(calvin_split) -> None:
    root, info = calvin_split
    split = root / "training"
    with zipfile.ZipFile(split / "episode_0000100.npz") as zf:
        assert [n[:-4] for n in zf.namelist()] == REAL_KEYS
    ids = np.load(split / "ep_start_end_ids.npy")
    assert ids.dtype == np.int64 and ids.tolist() == [[100, 111], [120, 127]]
    assert np.load(split / "ep_lens.npy").tolist() == [12, 8]
    # the gap between segments really has no files
    assert not (split / "episode_0000112.npz").exists()
    lang = read_calvin_language(split)
    assert lang.ann == ["open the drawer", "push the red block to the left", "turn on the led"]
    assert lang.task == ["open_drawer", "push_red_block_left", "turn_on_led"]
    assert lang.indx.tolist() == [[100, 106], [104, 111], [121, 127]]
    np.testing.assert_array_equal(read_calvin_segments(split), [[100, 111], [120, 127]])
    # every written rel_action is CALVIN's rule applied to the same frame
    for fid, (a, o, r) in info["frames"].items():
        np.testing.assert_array_equal(_hand_rel_action(a, o), r, err_msg=str(fid))
    # and the fixture exercises clipping (|pos diff| > 2 cm) and angle wrapping (diff near 2π)
    rel = np.stack([r for _, _, r in info["frames"].values()])
    assert (np.abs(rel[:, :3]) == 1.0).any() and (np.abs(rel[:, 3:6]) == 1.0).any()
    assert set(rel[:, 6].tolist()) == {-1.0, 1.0}


def test_naming_is_learned_from_the_first_file(tmp_path: Path, fixtures_dir: Path) -> None:
    real = calvin_real_frame(fixtures_dir)
    split = tmp_path / "validation"
    write_calvin_split(
        split,
        real,
        segments=[(7, 9)],
        annotations=[(7, 9, "lift the block", "lift_red_block_table")],
        prefix="frame_",
        digits=5,
    )
    assert sorted(p.name for p in split.glob("*.npz")) == [
        "frame_00007.npz",
        "frame_00008.npz",
        "frame_00009.npz",
    ]
    assert CalvinFrameNaming.detect(split) == CalvinFrameNaming("frame_", 5)
    (ep,) = list(iter_calvin_episodes(split))
    assert ep.metadata["frame_files"] == "frame_00007.npz..frame_00009.npz"


def test_lang_episodes_hold_the_window_frames(calvin_split) -> None:
    root, info = calvin_split
    episodes = list(iter_calvin_episodes(root, "training"))
    assert [e.instruction for e in episodes] == [
        "open the drawer",
        "push the red block to the left",
        "turn on the led",
    ]
    assert [(e.metadata["start_frame"], e.metadata["end_frame"]) for e in episodes] == [
        (100, 106),
        (104, 111),
        (121, 127),
    ]
    assert [e.index for e in episodes] == [0, 1, 2] and all(e.fps == 30.0 for e in episodes)
    ep = episodes[1]
    assert ep.actions.dtype == np.float32 and ep.actions.shape == (8, 7)
    expected = np.stack([info["frames"][f][2] for f in range(104, 112)]).astype(np.float32)
    np.testing.assert_array_equal(ep.actions, expected)
    np.testing.assert_array_equal(
        ep.states, np.stack([info["frames"][f][1] for f in range(104, 112)]).astype(np.float32)
    )
    # lazy images: frame t of the episode is file start + t (marker pixel written by the factory)
    assert ep.images["rgb_static"].shape == (8, 200, 200, 3)
    assert ep.images["rgb_gripper"].shape == (8, 84, 84, 3)
    for t in (0, 5, 7):
        assert ep.images["rgb_static"][t][0, 0].tolist() == info["markers"][104 + t]
        assert ep.images["rgb_gripper"][t][0, 0].tolist() == info["markers"][104 + t]
    np.testing.assert_array_equal(ep.images["rgb_static"][3][1:], info["real"]["rgb_static"][1:])


def test_lang_chunk_dataset_equals_hand_computed_windows(calvin_split, tmp_path: Path) -> None:
    root, info = calvin_split
    ds = load_calvin(root, chunk_size=4, cache_dir=tmp_path / "cache")
    assert dataset_fps(ds) == CALVIN_FPS
    windows = [
        (0, 100, 106, "open the drawer"),
        (1, 104, 111, "push the red block to the left"),
        (2, 121, 127, "turn on the led"),
    ]
    assert len(ds) == sum(e - s + 1 for _, s, e, _ in windows)
    rows = ds.with_format("numpy")
    r = 0
    for ann, start, end, text in windows:
        rel = np.stack([info["frames"][f][2] for f in range(start, end + 1)])
        robot_obs = np.stack([info["frames"][f][1] for f in range(start, end + 1)])
        for t, chunk, pads in _expected_chunks(rel, 4):
            row = rows[r]
            assert row["task"] == text
            assert int(row["episode_index"]) == ann and int(row["frame_index"]) == t
            np.testing.assert_array_equal(row["action"], chunk.astype(np.float32), err_msg=f"{ann}/{t}")
            assert row["action_is_pad"].tolist() == pads
            np.testing.assert_array_equal(row["observation.state"], robot_obs[t].astype(np.float32))
            assert row["observation.images.rgb_static"].shape == (200, 200, 3)
            assert row["observation.images.rgb_static"][0, 0].tolist() == info["markers"][start + t]
            assert row["observation.images.rgb_gripper"][0, 0].tolist() == info["markers"][start + t]
            r += 1
    # the window ends are padded by repeating the last real rel_action, never by reading past the window
    last = rows[6]  # window 0, t = 6: frame 106 only
    assert last["action_is_pad"].tolist() == [False, True, True, True]
    np.testing.assert_array_equal(
        last["action"], np.repeat(info["frames"][106][2][None].astype(np.float32), 4, 0)
    )
    assert "velocity" not in ds.column_names


def test_all_mode_covers_every_segment_frame_and_options(calvin_split, tmp_path: Path) -> None:
    root, info = calvin_split
    ds = load_calvin(
        root,
        chunk_size=3,
        stride=2,
        mode="all",
        action_key="actions",
        state="robot_no_joints",
        cameras=("rgb_gripper",),
        cache_dir=tmp_path / "cache",
    )
    assert dataset_fps(ds) == 15.0
    assert [c for c in ds.column_names if c.startswith("observation.images")] == [
        "observation.images.rgb_gripper"
    ]
    rows = ds.with_format("numpy")
    r = 0
    for seg, (start, end) in enumerate([(100, 111), (120, 127)]):
        absolute = np.stack([info["frames"][f][0] for f in range(start, end + 1)])
        for t, chunk, pads in _expected_chunks(absolute, 3, stride=2):
            row = rows[r]
            assert row["task"] == "" and int(row["episode_index"]) == seg and int(row["frame_index"]) == t
            np.testing.assert_array_equal(row["action"], chunk.astype(np.float32))
            assert row["action_is_pad"].tolist() == pads
            o = info["frames"][start + t][1]
            np.testing.assert_array_equal(row["observation.state"], np.r_[o[:7], o[14]].astype(np.float32))
            r += 1
    assert r == len(ds) == 6 + 4


def test_cache_is_reused_and_invalidated(calvin_split, tmp_path: Path) -> None:
    root, _ = calvin_split
    first = load_calvin(root, chunk_size=4, cache_dir=tmp_path / "c", max_episodes=1)
    again = load_calvin(root, chunk_size=4, cache_dir=tmp_path / "c", max_episodes=1)
    assert again.cache_files[0]["filename"] == first.cache_files[0]["filename"]
    other = load_calvin(root, chunk_size=5, cache_dir=tmp_path / "c", max_episodes=1)
    assert other.cache_files[0]["filename"] != first.cache_files[0]["filename"]


def test_statistics_yaml(calvin_split, tmp_path: Path) -> None:
    root, info = calvin_split
    stats = read_calvin_statistics(root / "training")
    np.testing.assert_array_equal(stats["robot_obs"]["mean"], info["stats"]["robot_obs_mean"])
    np.testing.assert_array_equal(stats["robot_obs"]["std"], info["stats"]["robot_obs_std"])
    assert stats["scene_obs"]["mean"].shape == (24,)
    np.testing.assert_array_equal(stats["actions"]["min"], info["stats"]["act_min_bound"])
    # the flat layout and `action_*_bound` spelling of other writers
    flat = tmp_path / "statistics.yaml"
    flat.write_text(
        "robot_obs:\n  _target_: calvin_agent.utils.transforms.NormalizeVector\n"
        f"  mean: {[0.5] * 15}\n  std: {[2.0] * 15}\n"
        f"action_min_bound: {[-1] * 7}\naction_max_bound: {[1] * 7}\n"
    )
    stats = read_calvin_statistics(flat)
    assert stats["robot_obs"]["std"].tolist() == [2.0] * 15 and stats["actions"]["max"].tolist() == [1.0] * 7
    flat.write_text("robot_obs: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ValueError, match="statistics"):
        read_calvin_statistics(flat)


# ------------------------------------------------------------------------------------------------------------
# safety and validation


def test_malicious_annotation_file_is_refused(tmp_path: Path, fixtures_dir: Path) -> None:
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {shlex.quote(str(marker))}",))

    split = tmp_path / "training"
    write_calvin_split(
        split, calvin_real_frame(fixtures_dir), segments=[(0, 3)], annotations=[(0, 3, "x", "y")]
    )
    lang_file = split / "lang_annotations" / "auto_lang_ann.npy"
    np.save(
        lang_file,
        np.array({"language": {"ann": ["x"], "task": [Payload()]}, "info": {"indx": [(0, 3)]}}, dtype=object),
        allow_pickle=True,
    )
    with pytest.raises(UnsafePickleError, match="auto_lang_ann.npy") as err:
        list(iter_calvin_episodes(split))
    assert "system" in str(err.value)
    with pytest.raises(UnsafePickleError):
        load_calvin(split, chunk_size=2, cache_dir=tmp_path / "cache")
    assert not marker.exists()


def _broken_split(tmp_path: Path, fixtures_dir: Path, name: str, mutate) -> Path:
    return two_window_calvin_split(tmp_path / name, fixtures_dir, mutate)


@pytest.mark.parametrize(
    ("case", "mutate", "key", "expect"),
    [
        (
            "nan",
            lambda fid, d: d["rel_actions"].__setitem__(2, np.nan) if fid == 9 else None,
            "rel_actions",
            "non-finite",
        ),
        (
            "inf_state",
            lambda fid, d: d["robot_obs"].__setitem__(0, np.inf) if fid == 10 else None,
            "robot_obs",
            "non-finite",
        ),
        ("missing_key", lambda fid, d: d.pop("rgb_gripper") if fid == 9 else None, "rgb_gripper", "missing"),
        (
            "image_shape",
            lambda fid, d: d.__setitem__("rgb_static", d["rgb_static"][:100]) if fid == 10 else None,
            "rgb_static",
            "differs",
        ),
        (
            "image_channels",
            lambda fid, d: d.__setitem__("rgb_static", d["rgb_static"][..., :1]) if fid == 8 else None,
            "rgb_static",
            "(H, W, 3)",
        ),
        (
            "action_dim",
            lambda fid, d: d.__setitem__("rel_actions", d["rel_actions"][:6]) if fid == 11 else None,
            "rel_actions",
            "expected a float array (7,)",
        ),
    ],
)
def test_bad_frames_name_file_episode_and_key(tmp_path, fixtures_dir, case, mutate, key, expect) -> None:
    split = _broken_split(tmp_path, fixtures_dir, case, mutate)
    with pytest.raises(EpisodeError) as err:
        list(iter_calvin_episodes(split))
    assert err.value.episode_id == "ann_1" and err.value.key == key
    assert ".npz" in err.value.source and expect in str(err.value)
    # skip_invalid: the good window survives, the bad one is counted
    summary = LoadSummary()
    kept = list(iter_calvin_episodes(split, skip_invalid=True, summary=summary))
    assert [e.episode_id for e in kept] == ["ann_0"]
    assert [(s.episode_id, s.key) for s in summary.skipped] == [("ann_1", key)]
    ds = load_calvin(split, chunk_size=3, skip_invalid=True, cache_dir=tmp_path / "cache")
    assert len(ds) == 6 and set(ds["task"]) == {"good window"}
    s = load_summary(ds)
    assert s.episodes == 1 and [(k.episode_id, k.key) for k in s.skipped] == [("ann_1", key)]
    with pytest.raises(EpisodeError, match="ann_1"):
        load_calvin(split, chunk_size=3, cache_dir=tmp_path / "cache2")


def test_unreadable_and_missing_frame_files(tmp_path: Path, fixtures_dir: Path) -> None:
    split = _broken_split(tmp_path, fixtures_dir, "corrupt", None)
    (split / "episode_0000009.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(EpisodeError, match=r"episode_0000009\.npz: episode ann_1: .*unreadable"):
        list(iter_calvin_episodes(split))
    (split / "episode_0000009.npz").unlink()
    with pytest.raises(EpisodeError, match=r"episode_0000009\.npz: episode ann_1: .*missing"):
        list(iter_calvin_episodes(split))


def test_windows_shorter_than_two_steps_or_across_segments(tmp_path: Path, fixtures_dir: Path) -> None:
    split = tmp_path / "training"
    write_calvin_split(
        split,
        calvin_real_frame(fixtures_dir),
        segments=[(0, 4), (6, 9)],
        annotations=[(0, 4, "ok", "a"), (3, 7, "across the gap", "b"), (9, 9, "one frame", "c")],
    )
    with pytest.raises(EpisodeError, match="does not lie inside one segment") as err:
        list(iter_calvin_episodes(split))
    assert err.value.episode_id == "ann_1" and err.value.key == "info.indx"
    ds = load_calvin(split, chunk_size=2, skip_invalid=True, cache_dir=tmp_path / "cache")
    assert set(ds["task"]) == {"ok"}
    assert sorted((s.episode_id, s.key) for s in load_summary(ds).skipped) == [
        ("ann_1", "info.indx"),
        ("ann_2", "actions"),
    ]


def test_bad_options_and_layout(tmp_path: Path, calvin_split) -> None:
    root, _ = calvin_split
    with pytest.raises(ValueError, match="mode"):
        list(iter_calvin_episodes(root, mode="vis"))
    with pytest.raises(ValueError, match="cameras"):
        list(iter_calvin_episodes(root, cameras=("rgb_tactile",)))
    with pytest.raises(FileNotFoundError, match="ep_start_end_ids"):
        list(iter_calvin_episodes(tmp_path))


def test_lazy_image_decoding_errors_name_file_and_episode(tmp_path: Path, fixtures_dir: Path) -> None:
    split = _broken_split(tmp_path, fixtures_dir, "lazy", None)
    (ep, _) = list(iter_calvin_episodes(split))
    (split / "episode_0000002.npz").unlink()  # vanishes after indexing, before decoding
    assert ep.images["rgb_static"][1][0, 0].tolist() == [8, 0, 1]
    with pytest.raises(EpisodeError, match=r"episode_0000002\.npz: episode ann_0: key 'rgb_static'"):
        ep.images["rgb_static"][2]


# ------------------------------------------------------------------------------------------------------------
# Hostile frame files: headers and zip members claiming terabytes, FIFOs, links out of the dataset (moved from test_hostile_inputs.py)
# ------------------------------------------------------------------------------------------------------------
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

