"""LIBERO HDF5 loader: orientation, state layouts, instructions, demo order, chunks and validation."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from data_factories import libero_demo_arrays, write_libero_hdf5
from niaf_train.data.chunking import dataset_fps, load_summary
from niaf_train.data.episodes import EpisodeError, LoadSummary
from niaf_train.data.libero import (
    LIBERO_FPS,
    iter_libero_episodes,
    libero_instruction_from_filename,
    load_libero,
)

SPATIAL = "pick_up_the_black_bowl_next_to_the_ramekin_and_place_it_on_the_plate"
LIB10 = "KITCHEN_SCENE3_turn_on_the_stove_and_put_the_moka_pot_on_it"


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """Two task files; the first has demos written as demo_2, demo_10, demo_0 (lengths 12, 15, 10)."""
    root = tmp_path_factory.mktemp("libero_spatial")
    demos_a = {
        "demo_2": libero_demo_arrays(12, seed=2),
        "demo_10": libero_demo_arrays(15, seed=10),
        "demo_0": libero_demo_arrays(10, seed=0),
    }
    demos_b = {"demo_0": libero_demo_arrays(11, seed=20), "demo_1": libero_demo_arrays(13, seed=21)}
    write_libero_hdf5(
        root / f"{SPATIAL}_demo.hdf5",
        demos_a,
        "pick up the black bowl next to the ramekin and place it on the plate",
    )
    write_libero_hdf5(root / f"{LIB10}_demo.hdf5", demos_b, "turn on the stove and put the moka pot on it")
    return root, demos_a, demos_b


def test_fixture_is_stored_upside_down_like_the_simulator(suite) -> None:
    root, demos_a, _ = suite
    with h5py.File(root / f"{SPATIAL}_demo.hdf5", "r") as f:
        assert list(f["data"].keys()) == ["demo_0", "demo_10", "demo_2"]  # lexicographic, as h5py lists them
        assert f["data"].attrs["macros_image_convention"] == "opengl"
        raw = f["data/demo_2/obs/agentview_rgb"][()]
        assert raw.shape == (12, 128, 128, 3) and raw.dtype == np.uint8
        assert f["data/demo_2/actions"].dtype == np.float64
    upright = demos_a["demo_2"]["agentview_rgb"]
    # the bright block of the upright frame is at the bottom-right of the stored one
    assert (raw[:, -8:, -17:-1] == 255).all() and not (raw[:, :8, 1:17] == 255).all()
    np.testing.assert_array_equal(raw[:, ::-1, ::-1], upright)


def test_episodes_sorted_flipped_with_instruction_and_state(suite) -> None:
    root, demos_a, demos_b = suite
    episodes = list(iter_libero_episodes(root))
    # files sorted by name (KITCHEN... < pick...), demos by integer suffix
    assert [(e.metadata["file"][:7], e.episode_id) for e in episodes] == [
        ("KITCHEN", "demo_0"),
        ("KITCHEN", "demo_1"),
        ("pick_up", "demo_0"),
        ("pick_up", "demo_2"),
        ("pick_up", "demo_10"),
    ]
    assert [e.index for e in episodes] == [0, 1, 2, 3, 4]
    assert episodes[0].instruction == "turn on the stove and put the moka pot on it"
    assert episodes[3].instruction == "pick up the black bowl next to the ramekin and place it on the plate"
    assert all(e.fps == LIBERO_FPS == 20.0 for e in episodes)
    ep, d = episodes[4], demos_a["demo_10"]
    assert ep.source.endswith(f"{SPATIAL}_demo.hdf5")
    np.testing.assert_array_equal(ep.actions, d["actions"].astype(np.float32))
    assert ep.actions.dtype == np.float32 and ep.actions.shape == (15, 7)
    # 8-d state = ee_pos, axis-angle (ee_ori), finger qpos
    expected_state = np.concatenate([d["ee_pos"], d["ee_ori"], d["gripper_states"]], 1).astype(np.float32)
    np.testing.assert_array_equal(ep.states, expected_state)
    assert sorted(ep.images) == ["image", "wrist_image"]
    np.testing.assert_array_equal(ep.images["image"], d["agentview_rgb"])
    np.testing.assert_array_equal(ep.images["wrist_image"], d["eye_in_hand_rgb"])
    assert ep.images["image"][5][0, 0].tolist() == [5, 10, 7]
    np.testing.assert_array_equal(episodes[1].actions, demos_b["demo_1"]["actions"].astype(np.float32))


def test_options_raw_orientation_joint_state_and_image2(suite) -> None:
    root, demos_a, _ = suite
    (ep,) = list(
        iter_libero_episodes(
            root / f"{SPATIAL}_demo.hdf5",
            flip_images=False,
            state="joints_gripper",
            wrist_camera_name="image2",
            max_demos_per_file=1,
        )
    )
    d = demos_a["demo_0"]
    assert ep.episode_id == "demo_0" and sorted(ep.images) == ["image", "image2"]
    np.testing.assert_array_equal(ep.images["image2"], d["eye_in_hand_rgb"][:, ::-1, ::-1])
    np.testing.assert_array_equal(
        ep.states, np.concatenate([d["joint_states"], d["gripper_states"]], 1).astype(np.float32)
    )
    (ep,) = list(
        iter_libero_episodes(
            root / f"{SPATIAL}_demo.hdf5", state=None, cameras=["image"], max_demos_per_file=1
        )
    )
    assert ep.states is None and list(ep.images) == ["image"]


def test_instruction_from_filename() -> None:
    assert (
        libero_instruction_from_filename(f"x/{LIB10}_demo.hdf5")
        == "turn on the stove and put the moka pot on it"
    )
    assert libero_instruction_from_filename(f"{SPATIAL}_demo.hdf5") == (
        "pick up the black bowl next to the ramekin and place it on the plate"
    )
    assert libero_instruction_from_filename(
        "LIVING_ROOM_SCENE2_put_both_the_alphabet_soup_and_the_tomato_sauce_in_the_basket_demo.hdf5"
    ) == ("put both the alphabet soup and the tomato sauce in the basket")


def test_chunk_dataset_equals_hand_computed_windows(suite, tmp_path: Path) -> None:
    root, demos_a, demos_b = suite
    ds = load_libero(root, chunk_size=5, stride=2, cache_dir=tmp_path / "cache")
    assert dataset_fps(ds) == 10.0
    order = [demos_b["demo_0"], demos_b["demo_1"], demos_a["demo_0"], demos_a["demo_2"], demos_a["demo_10"]]
    assert len(ds) == sum((len(d["actions"]) + 1) // 2 for d in order)
    rows = ds.with_format("numpy")
    r = 0
    for e, d in enumerate(order):
        a = d["actions"].astype(np.float32)
        n = len(a)
        for t in range(0, n, 2):
            row = rows[r]
            want_idx = [min(t + 2 * k, t + 2 * ((n - 1 - t) // 2)) for k in range(5)]
            want_pad = [t + 2 * k >= n for k in range(5)]
            np.testing.assert_array_equal(row["action"], a[want_idx], err_msg=f"episode {e} t {t}")
            assert row["action_is_pad"].tolist() == want_pad
            assert int(row["episode_index"]) == e and int(row["frame_index"]) == t
            np.testing.assert_array_equal(row["observation.images.image"], d["agentview_rgb"][t])
            np.testing.assert_array_equal(row["observation.images.wrist_image"], d["eye_in_hand_rgb"][t])
            r += 1
    np.testing.assert_allclose(rows[len(ds) - 1]["tau"], [-1, -0.5, 0, 0.5, 1])


@pytest.mark.parametrize(
    ("case", "key", "expect"),
    [
        ("nan_action", "data/demo_1/actions", "non-finite"),
        ("inf_state", "data/demo_1/obs/ee_states", "non-finite"),
        ("missing_image", "data/demo_1/obs/eye_in_hand_rgb", "missing"),
        ("short_image", "data/demo_1/obs/agentview_rgb", "expected equal"),
        ("gray_image", "data/demo_1/obs/agentview_rgb", "last dimension 3"),
        ("one_step", "actions", "at least 2 steps"),
        ("action_dim", "actions", "first episode"),
    ],
)
def test_bad_demos_name_file_demo_and_key(tmp_path: Path, case: str, key: str, expect: str) -> None:
    good = libero_demo_arrays(6, seed=1)
    bad = libero_demo_arrays(1 if case == "one_step" else 6, seed=2)
    drop = ()
    if case == "nan_action":
        bad["actions"][3, 1] = np.nan
    elif case == "inf_state":
        bad["ee_pos"][2, 0] = np.inf
    elif case == "missing_image":
        drop = ("demo_1/obs/eye_in_hand_rgb",)
    elif case == "short_image":
        bad["agentview_rgb"] = bad["agentview_rgb"][:4]
    elif case == "gray_image":
        bad["agentview_rgb"] = bad["agentview_rgb"][..., :1]
    elif case == "action_dim":
        bad["actions"] = bad["actions"][:, :6]
    path = write_libero_hdf5(tmp_path / "task_demo.hdf5", {"demo_0": good, "demo_1": bad}, "do it", drop=drop)
    with pytest.raises(EpisodeError) as err:
        load_libero(path, chunk_size=3, cache_dir=tmp_path / "c1")
    assert err.value.source == str(path) and err.value.episode_id == "demo_1" and err.value.key == key
    assert expect in str(err.value)
    ds = load_libero(path, chunk_size=3, skip_invalid=True, cache_dir=tmp_path / "c2")
    assert len(ds) == 6 and set(ds["episode_index"]) == {0}
    summary = load_summary(ds)
    assert [(s.source, s.episode_id, s.key) for s in summary.skipped] == [(str(path), "demo_1", key)]


def test_unreadable_file_and_missing_problem_info(tmp_path: Path) -> None:
    good = tmp_path / "good_demo.hdf5"
    write_libero_hdf5(good, {"demo_0": libero_demo_arrays(5, seed=0)}, "stack it")
    broken = tmp_path / "broken_demo.hdf5"
    broken.write_bytes(b"\x89HDF\r\n\x1a\n not really")
    with pytest.raises(
        EpisodeError, match=r"broken_demo\.hdf5: episode \*: key '<file>': not a readable HDF5"
    ):
        list(iter_libero_episodes(tmp_path))
    summary = LoadSummary()
    kept = list(iter_libero_episodes(tmp_path, skip_invalid=True, summary=summary))
    assert [e.instruction for e in kept] == ["stack it"] and len(summary.skipped) == 1
    with h5py.File(good, "a") as f:
        del f["data"].attrs["problem_info"]
    with pytest.raises(EpisodeError, match="problem_info"):
        list(iter_libero_episodes(good))
    (ep,) = list(iter_libero_episodes(good, instruction_from="filename"))
    assert ep.instruction == "good"


def test_bad_options(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such LIBERO"):
        list(iter_libero_episodes(tmp_path / "nope.hdf5"))
    with pytest.raises(FileNotFoundError, match="no \\*.hdf5"):
        list(iter_libero_episodes(tmp_path))
    path = write_libero_hdf5(tmp_path / "t_demo.hdf5", {"demo_0": libero_demo_arrays(3, seed=0)}, "x")
    with pytest.raises(ValueError, match="state"):
        list(iter_libero_episodes(path, state="quaternion"))
    with pytest.raises(ValueError, match="wrist_camera_name"):
        list(iter_libero_episodes(path, wrist_camera_name="wrist"))


# ------------------------------------------------------------------------------------------------------------
# Hostile HDF5 files: external links, virtual datasets, FIFOs (moved from test_hostile_inputs.py)
# ------------------------------------------------------------------------------------------------------------
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

