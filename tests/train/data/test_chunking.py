"""Episode validation, chunking and the cached chunk-dataset builder."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from data_factories import make_episode
from data_factories import tiny_lerobot_dataset as _lerobot_dataset
from niaf_train.data.chunking import (
    build_chunk_dataset,
    check_control_hz,
    chunk_dataset_meta,
    chunk_episode,
    chunk_indices,
    dataset_fps,
    file_fingerprint,
    fingerprint,
    load_summary,
    tau_grid,
    with_torch_format,
)
from niaf_train.data.episodes import Episode, EpisodeError, LazyFrames


def test_tau_grid_hand_values():
    np.testing.assert_array_equal(tau_grid(5), np.array([-1.0, -0.5, 0.0, 0.5, 1.0], dtype=np.float32))
    np.testing.assert_allclose(tau_grid(3), [-1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="chunk_size"):
        tau_grid(1)


def test_chunk_indices_hand_written():
    idx, pad = chunk_indices(length=7, start=4, chunk_size=4, stride=2)
    # frames 4, 6, (8), (10): the last real chunk point is 6
    assert idx.tolist() == [4, 6, 6, 6]
    assert pad.tolist() == [False, False, True, True]
    idx, pad = chunk_indices(length=5, start=0, chunk_size=3, stride=1)
    assert idx.tolist() == [0, 1, 2] and not pad.any()
    idx, pad = chunk_indices(length=5, start=4, chunk_size=3, stride=1)
    assert idx.tolist() == [4, 4, 4] and pad.tolist() == [False, True, True]


def test_chunk_episode_against_hand_written_chunks():
    T, D = 5, 2
    actions = np.arange(T * D, dtype=np.float32).reshape(T, D)  # row t = [2t, 2t+1]
    vel = actions + 100
    img = np.stack([np.full((2, 2, 3), t, np.uint8) for t in range(T)])
    ep = Episode("e", "mem", "go", 10.0, actions, states=actions[:, :1] * 3, velocities=vel, images={"c": img})
    samples = list(chunk_episode(ep.validate(), chunk_size=3, stride=2))
    assert [s["frame_index"] for s in samples] == [0, 2, 4]  # sample_every defaults to the stride
    np.testing.assert_array_equal(samples[1]["action"], [[4, 5], [8, 9], [8, 9]])
    np.testing.assert_array_equal(samples[1]["action_is_pad"], [False, False, True])
    np.testing.assert_array_equal(samples[1]["velocity"], [[104, 105], [108, 109], [0, 0]])
    np.testing.assert_array_equal(samples[2]["action"], [[8, 9]] * 3)
    np.testing.assert_array_equal(samples[2]["velocity"], [[108, 109], [0, 0], [0, 0]])
    np.testing.assert_array_equal(samples[1]["observation.state"], [12.0])
    assert samples[2]["images"]["c"][0, 0, 0] == 4
    assert samples[1]["timestamp"] == pytest.approx(0.2)
    every = list(chunk_episode(ep, chunk_size=3, stride=2, sample_every=1))
    assert [s["frame_index"] for s in every] == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(every[1]["action"], [[2, 3], [6, 7], [6, 7]])


@pytest.mark.parametrize(
    "mutate, key, expected",
    [
        (lambda e: e.actions.__setitem__((3, 1), np.nan), "actions", "non-finite"),
        (lambda e: e.states.__setitem__((2, 0), np.inf), "states", "non-finite"),
        (lambda e: e.velocities.__setitem__((0, 0), -np.inf), "velocities", "non-finite"),
        (lambda e: setattr(e, "actions", e.actions[:1]), "actions", "at least 2 steps"),
        (lambda e: setattr(e, "states", e.states[:-1]), "states", "expected equal lengths"),
        (lambda e: setattr(e, "velocities", e.velocities[:, :2]), "velocities", "action dimension"),
        (lambda e: e.images.__setitem__("top", e.images["top"][..., :1]), "images.top", r"\[T, H, W, 3\]"),
        (lambda e: e.images.__setitem__("top", e.images["top"][:-2]), "images.top", "expected equal lengths"),
        (lambda e: e.images.__setitem__("top", e.images["top"].astype(np.float32)), "images.top", "uint8"),
        (lambda e: setattr(e, "fps", 0.0), "fps", "positive"),
    ],
)
def test_validate_names_file_episode_key(mutate, key, expected):
    ep = make_episode("ep7")
    mutate(ep)
    with pytest.raises(EpisodeError, match=expected) as info:
        ep.validate()
    msg = str(info.value)
    assert msg.startswith("memory://episode-ep7: episode ep7: key ")
    assert repr(key) in msg and info.value.key == key


def test_validate_image_shape_against_first_episode():
    ep = make_episode("b", image_hw=(8, 8))
    with pytest.raises(EpisodeError, match=r"frame shape \(8, 8, 3\), expected \(16, 16, 3\)"):
        ep.validate(image_shapes={"top": (16, 16, 3)})


def _expected_rows(episodes, K, stride):
    """Independent reference: plain Python loops over frames."""
    rows = []
    for e_i, ep in enumerate(episodes):
        T = len(ep)
        for t in range(0, T, stride):
            act, vel, pad = [], [], []
            last = t
            for k in range(K):
                f = t + k * stride
                if f < T:
                    last = f
                    act.append(ep.actions[f]), vel.append(ep.velocities[f]), pad.append(False)
                else:
                    act.append(ep.actions[last]), vel.append(np.zeros(ep.action_dim)), pad.append(True)
            rows.append(dict(e=e_i, t=t, action=np.array(act), velocity=np.array(vel), pad=pad,
                             state=ep.states[t], image=ep.images["top"][t], task=ep.instruction))
    return rows


@pytest.mark.parametrize("image_format", ["png", "raw"])
def test_build_matches_reference_and_caches(tmp_path, image_format):
    episodes = [make_episode(str(i), length=9 + i, seed=i, instruction=f"task {i}") for i in range(3)]
    calls = []

    def factory():
        calls.append(1)
        return iter(episodes)

    K, s = 4, 2
    ds = build_chunk_dataset(factory, K, stride=s, cache_dir=tmp_path, fingerprint_parts=["v1"],
                             image_format=image_format)
    ref = _expected_rows(episodes, K, s)
    assert len(ds) == len(ref) and len(calls) == 1
    tds = ds.with_format("torch")
    for i, r in enumerate(ref):
        row = tds[i]
        assert (int(row["episode_index"]), int(row["frame_index"]), row["task"]) == (r["e"], r["t"], r["task"])
        np.testing.assert_array_equal(row["action"].numpy(), r["action"])
        np.testing.assert_array_equal(row["velocity"].numpy(), r["velocity"])
        assert row["action_is_pad"].tolist() == r["pad"]
        np.testing.assert_array_equal(row["observation.state"].numpy(), r["state"])
        np.testing.assert_array_equal(row["tau"].numpy(), np.float32([-1, -1 / 3, 1 / 3, 1]))
        # PNG is lossless; torch formatting gives channel-first images for both storage formats (uint8 for
        # PNG; datasets' torch formatter promotes raw integer arrays to int64)
        img = row["observation.images.top"]
        assert img.dtype == (torch.uint8 if image_format == "png" else torch.int64)
        np.testing.assert_array_equal(img.permute(1, 2, 0).numpy(), r["image"])
        assert int(row["index"]) == i
    assert dataset_fps(ds) == pytest.approx(10.0)
    meta = chunk_dataset_meta(ds)
    assert (meta["chunk_size"], meta["stride"], meta["source_fps"]) == (K, s, 20.0)
    assert load_summary(ds).to_dict()["samples"] == len(ref)
    check_control_hz(ds, 10.0)
    with pytest.raises(ValueError, match="control_hz=20"):
        check_control_hz(ds, 20)
    # cached: the factory is not called again; a changed option rebuilds
    again = build_chunk_dataset(factory, K, stride=s, cache_dir=tmp_path, fingerprint_parts=["v1"],
                                image_format=image_format)
    assert len(calls) == 1 and len(again) == len(ds)
    assert again.cache_files and again.cache_files[0]["filename"].endswith("data.arrow")
    build_chunk_dataset(factory, K, stride=1, cache_dir=tmp_path, fingerprint_parts=["v1"],
                        image_format=image_format)
    assert len(calls) == 2


def _record_batch_rows(ds) -> list[int]:
    import pyarrow as pa

    with pa.memory_map(ds.cache_files[0]["filename"]) as source:
        return [b.num_rows for b in pa.ipc.open_stream(source)]


def test_cache_record_batches_are_full_and_rows_keep_their_order(tmp_path, monkeypatch):
    # each record batch costs resident memory in every process that opens the cache, so batches are filled to
    # writer_batch_size rows across episode boundaries (not cut per episode), or cut once they hold
    # WRITER_BATCH_BYTES of data
    from niaf_train.data import chunk_builder

    episodes = [make_episode(str(i), length=9 + i, seed=i, instruction=f"task {i}") for i in range(5)]
    K, s = 4, 1
    ref = _expected_rows(episodes, K, s)
    total = sum(len(ep) for ep in episodes)  # stride 1: one sample per frame
    assert len(ref) == total == 55
    ds = build_chunk_dataset(lambda: iter(episodes), K, stride=s, cache_dir=tmp_path / "a", fingerprint_parts=["v"],
                             writer_batch_size=16)
    assert _record_batch_rows(ds) == [16, 16, 16, 7]
    assert [int(i) for i in ds["frame_index"]] == [r["t"] for r in ref]
    assert [int(i) for i in ds["episode_index"]] == [r["e"] for r in ref]
    # a byte budget below one episode's rows: one batch per episode
    monkeypatch.setattr(chunk_builder, "WRITER_BATCH_BYTES", 1)
    ds = build_chunk_dataset(lambda: iter(episodes), K, stride=s, cache_dir=tmp_path / "b", fingerprint_parts=["v"],
                             writer_batch_size=1000)
    assert _record_batch_rows(ds) == [len(ep) for ep in episodes]
    for bad in (0, -3, 2.5):  # refused by name before anything is read (0 would never fill a batch)
        with pytest.raises(ValueError, match="writer_batch_size"):
            build_chunk_dataset(lambda: iter(episodes), K, cache_dir=tmp_path / "c", fingerprint_parts=["v"],
                                writer_batch_size=bad)
    np.testing.assert_array_equal(np.stack(ds.with_format("numpy")["action"]), np.stack([r["action"] for r in ref]))


def test_file_fingerprint_tracks_size_and_mtime(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"12")
    fp1 = fingerprint(file_fingerprint([tmp_path]))
    f.write_bytes(b"123")
    assert fingerprint(file_fingerprint([tmp_path])) != fp1
    with pytest.raises(FileNotFoundError):
        file_fingerprint([tmp_path / "missing"])


def test_invalid_episode_raises_or_is_skipped_with_reason(tmp_path):
    bad = make_episode("bad", seed=1)
    bad.actions[2, 0] = np.nan
    episodes = [make_episode("a"), bad, make_episode("c", seed=2)]
    with pytest.raises(EpisodeError, match="episode bad: key 'actions'"):
        build_chunk_dataset(lambda: episodes, 3, cache_dir=tmp_path, fingerprint_parts=None)
    ds = build_chunk_dataset(lambda: episodes, 3, cache_dir=tmp_path, fingerprint_parts=["s"], skip_invalid=True)
    summary = load_summary(ds)
    assert summary.episodes == 2 and summary.frames == 24 and summary.samples == 24 == len(ds)
    assert [(s.episode_id, s.key) for s in summary.skipped] == [("bad", "actions")]
    assert "non-finite" in summary.skipped[0].reason
    # the skipped episode keeps its reading-order number: episode_index 0 and 2 remain
    assert sorted(set(ds["episode_index"])) == [0, 2]


def test_layout_mismatch_is_an_error(tmp_path):
    episodes = [make_episode("a"), make_episode("b", velocity=False)]
    with pytest.raises(EpisodeError, match="episode b: key 'velocities'"):
        build_chunk_dataset(lambda: episodes, 3, cache_dir=tmp_path, fingerprint_parts=None)
    episodes = [make_episode("a"), make_episode("b", fps=30.0)]
    with pytest.raises(EpisodeError, match="one dataset, one clock"):
        build_chunk_dataset(lambda: episodes, 3, cache_dir=tmp_path, fingerprint_parts=None)
    with pytest.raises(ValueError, match="no valid episode"):
        build_chunk_dataset(lambda: [], 3, cache_dir=tmp_path, fingerprint_parts=None)


def test_lazy_frames_and_streaming_match_cached(tmp_path):
    eps = [make_episode(str(i), length=6 + i, seed=i, state_dim=None, velocity=False) for i in range(4)]

    def lazy():
        for ep in eps:
            arr = ep.images["top"]
            yield Episode(ep.episode_id, ep.source, ep.instruction, ep.fps, ep.actions,
                          images={"top": LazyFrames(len(arr), arr.shape[1:], arr.__getitem__, "x")})

    ds = build_chunk_dataset(lazy, 3, cache_dir=tmp_path, fingerprint_parts=["lazy"])
    assert "observation.state" not in ds.features and "velocity" not in ds.features
    stream = build_chunk_dataset(lazy, 3, streaming=True, num_shards=3)
    assert stream.features == ds.features and dataset_fps(stream) == 20.0
    # plain rows hold the float32 values (datasets 5 as float32 arrays, 4.x as lists of Python floats) ...
    got = sorted((r["episode_index"], r["frame_index"], np.asarray(r["action"], np.float32).tobytes()) for r in stream)
    ref = sorted((r["episode_index"], r["frame_index"], np.asarray(r["action"], np.float32).tobytes()) for r in ds)
    assert got == ref
    # ... and the numpy view is float32 on every supported datasets version
    row = next(iter(stream.with_format("numpy")))
    assert row["action"].dtype == np.float32 and row["action"].shape == (3, eps[0].actions.shape[1])

    from datasets.distributed import split_dataset_by_node

    parts = [{(r["episode_index"], r["frame_index"]) for r in split_dataset_by_node(stream, rank, 2)} for rank in (0, 1)]
    assert not parts[0] & parts[1] and len(parts[0] | parts[1]) == len(ds)


@pytest.mark.parametrize("image_format", ["png", "raw"])
def test_with_torch_format_matches_reference(tmp_path, image_format):
    eps = [make_episode(str(i), length=7, seed=i) for i in range(2)]
    ds = build_chunk_dataset(lambda: eps, 3, cache_dir=tmp_path, fingerprint_parts=["t"], image_format=image_format)
    view = with_torch_format(ds)
    batch = next(iter(torch.utils.data.DataLoader(view, batch_size=5)))
    ref = _expected_rows(eps, 3, 1)
    img = batch["observation.images.top"]
    assert img.dtype == torch.uint8 and img.shape == (5, 3, 16, 16)
    for i in range(5):
        np.testing.assert_array_equal(img[i].permute(1, 2, 0).numpy(), ref[i]["image"])
        np.testing.assert_array_equal(batch["action"][i].numpy(), ref[i]["action"])
        assert batch["action_is_pad"][i].tolist() == ref[i]["pad"]
    assert batch["action"].dtype == torch.float32 and batch["tau"].dtype == torch.float32
    assert batch["action_is_pad"].dtype == torch.bool and batch["episode_index"].dtype == torch.int64
    assert batch["task"] == [eps[0].instruction] * 5
    single = view[6]  # episode 0 has 7 frames: row 6 is its last frame, chunk fully padded after it
    assert single["action_is_pad"].tolist() == [False, True, True]


def test_torch_dataloader_batches(tmp_path):
    ds = build_chunk_dataset(lambda: [make_episode(str(i), seed=i) for i in range(2)], 5, cache_dir=tmp_path,
                             fingerprint_parts=["dl"]).with_format("torch")
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["action"].shape == (4, 5, 4) and batch["observation.images.top"].shape == (4, 3, 16, 16)
    assert batch["action_is_pad"].dtype == torch.bool


# --------------------------------------------------------------------------------------------------------
# Dense supervision: the source frames between chunk points, and velocities from finite differences
# --------------------------------------------------------------------------------------------------------
def test_dense_points_and_finite_difference_velocities_by_hand():
    from niaf_train.data.chunking import dense_points, finite_difference_velocities

    assert dense_points(8, 4, 1) == 29 and dense_points(8, 4, 2) == 15 and dense_points(8, 4, 4) == 8
    with pytest.raises(ValueError, match="divide"):
        dense_points(8, 4, 3)
    a = np.array([[0.0], [1.0], [4.0], [9.0]], dtype=np.float32)  # a = t² at 10 Hz (t in frames)
    # (a1 - a0)·10, (a2 - a0)·10/2, (a3 - a1)·10/2, (a3 - a2)·10
    np.testing.assert_allclose(finite_difference_velocities(a, 10.0)[:, 0], [10.0, 20.0, 40.0, 50.0])
    np.testing.assert_array_equal(finite_difference_velocities(a[:1], 10.0), [[0.0]])


def test_chunk_episode_dense_columns_against_hand_written_values():
    T, D = 10, 2
    actions = np.arange(T * D, dtype=np.float32).reshape(T, D)  # row t = [2t, 2t+1]
    img = np.zeros((T, 2, 2, 3), np.uint8)
    ep = Episode("e", "mem", "go", 80.0, actions, images={"c": img}).validate()
    # K = 3 chunk points at stride 4 (frames t, t+4, t+8); dense every 2 frames: t, t+2, ..., t+8 (M = 5)
    samples = list(chunk_episode(ep, chunk_size=3, stride=4, dense_every=2, difference_velocities=True))
    assert [s["frame_index"] for s in samples] == [0, 4, 8]
    s0, s1 = samples[0], samples[1]
    np.testing.assert_array_equal(s0["dense_tau"], [-1.0, -0.5, 0.0, 0.5, 1.0])
    np.testing.assert_array_equal(s0["dense_action"][:, 0], [0, 4, 8, 12, 16])
    assert not s0["dense_is_pad"].any()
    # chunk point k is dense point j = k·s/d = 2k: same values, same τ
    np.testing.assert_array_equal(s0["dense_action"][::2], s0["action"])
    np.testing.assert_array_equal(s0["dense_tau"][::2], s0["tau"])
    # sample at 4: frames 4, 6, 8, (10), (12); padding repeats the last real dense frame (8), velocity 0
    np.testing.assert_array_equal(s1["dense_action"][:, 0], [8, 12, 16, 16, 16])
    assert s1["dense_is_pad"].tolist() == [False, False, False, True, True]
    # a_d = 2t at 80 Hz: velocity 160 per second everywhere (the ends too: a straight line)
    np.testing.assert_allclose(s1["dense_velocity"][:, 0], [160, 160, 160, 0, 0])
    np.testing.assert_allclose(s1["velocity"][:, 0], [160, 160, 0])  # chunk points 4, 8, (12)
    # off by default: no dense column, no velocity
    plain = next(iter(chunk_episode(ep, chunk_size=3, stride=4)))
    assert "dense_action" not in plain and "velocity" not in plain


def test_build_chunk_dataset_with_dense_columns(tmp_path):
    ep = make_episode(length=9, action_dim=2, velocity=False, fps=80.0)
    plain = build_chunk_dataset(lambda: [ep], chunk_size=3, stride=2, cache_dir=tmp_path, fingerprint_parts=["a"])
    dense = build_chunk_dataset(lambda: [ep], chunk_size=3, stride=2, cache_dir=tmp_path, fingerprint_parts=["a"],
                                dense_every=1, difference_velocities=True)
    assert "dense_action" not in plain.column_names and "velocity" not in plain.column_names
    assert chunk_dataset_meta(dense)["dense_every"] == 1 and chunk_dataset_meta(dense)["fps"] == 40.0
    row = with_torch_format(dense)[1]  # frame 2: dense frames 2..6
    assert row["dense_action"].shape == (5, 2) and row["dense_tau"].tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0]
    torch.testing.assert_close(row["dense_action"], torch.as_tensor(ep.actions[2:7]))
    torch.testing.assert_close(row["action"], row["dense_action"][::2])
    expected_vel = np.gradient(ep.actions.astype(np.float64), 1 / 80.0, axis=0)[2:7]
    torch.testing.assert_close(row["dense_velocity"], torch.as_tensor(expected_vel, dtype=torch.float32))
    with pytest.raises(ValueError, match="divide"):
        build_chunk_dataset(lambda: [ep], chunk_size=3, stride=2, cache_dir=tmp_path, dense_every=3)


# ------------------------------------------------------------------------------------------------------------
# A changed or truncated file under an unchanged name: the cache is rebuilt (moved from test_hostile_inputs.py)
# ------------------------------------------------------------------------------------------------------------
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



def test_streaming_shards_read_only_their_own_episodes(tmp_path):
    eps = [make_episode(str(i), length=5 + i, seed=i) for i in range(7)]
    read: list[int] = []

    def factory(select=None):  # reads (here: hands out) an episode only where `select` wants it
        for i, ep in enumerate(eps):
            if select is not None and not select(i):
                yield None
                continue
            read.append(i)
            yield ep

    ds = build_chunk_dataset(lambda: eps, 3, cache_dir=tmp_path, fingerprint_parts=["all"])
    stream = build_chunk_dataset(factory, 3, streaming=True, num_shards=3)
    read.clear()  # the probe for the features read episode 0
    got = sorted((r["episode_index"], r["frame_index"], np.asarray(r["action"], np.float32).tobytes()) for r in stream)
    ref = sorted((r["episode_index"], r["frame_index"], np.asarray(r["action"], np.float32).tobytes()) for r in ds)
    assert got == ref and len(got) == sum(5 + i for i in range(7))
    # every episode read once over the three shards (each shard used to read all seven)
    assert sorted(read) == list(range(7))


def test_streaming_shard_checks_layout_against_the_first_episode(tmp_path):
    # shard 1 holds only episode 1, whose layout differs from episode 0's: still an error, as without shards
    episodes = [make_episode("a"), make_episode("b", velocity=False), make_episode("c", seed=2)]
    stream = build_chunk_dataset(lambda: episodes, 3, streaming=True, num_shards=2)
    with pytest.raises(EpisodeError, match="episode b: key 'velocities'"):
        list(stream)
