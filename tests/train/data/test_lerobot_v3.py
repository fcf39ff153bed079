"""LeRobot v3.0 reader (images, videos, velocities, LIBERO variant, path safety) and writer."""

from __future__ import annotations

import json
import logging
import re

import numpy as np
import pyarrow.parquet as pq
import pytest
from data_factories import make_episode, random_lerobot_episodes, write_lerobot_v3_fixture
from data_factories import tiny_lerobot_dataset as _lerobot_dataset
from niaf_train.data.chunking import dataset_fps, load_summary
from niaf_train.data.episodes import EpisodeError
from niaf_train.data.lerobot_v3 import (
    iter_lerobot_episodes,
    load_lerobot,
    load_libero_lerobot,
    open_lerobot_v3,
    write_lerobot_dataset,
)


@pytest.mark.parametrize("task_column", ["__index_level_0__", "task"])
def test_reader_matches_fixture(tmp_path, task_column):
    src = random_lerobot_episodes(n=3, lengths=[5, 7, 6], seed=3)
    root = write_lerobot_v3_fixture(tmp_path / "ds", src, fps=30, task_column=task_column)
    eps = [ep.validate() for ep in iter_lerobot_episodes(root, velocity="none")]
    assert [ep.index for ep in eps] == [0, 1, 2]
    for ep, e in zip(eps, src, strict=True):
        np.testing.assert_array_equal(ep.actions, e["action"])
        np.testing.assert_array_equal(ep.states, e["state"])
        assert ep.instruction == e["task"] and ep.fps == 30.0 and ep.velocities is None
        assert list(ep.images) == ["top"]
        for t in range(len(ep)):
            np.testing.assert_array_equal(ep.images["top"][t], e["images"]["observation.images.top"][t])


def test_velocity_from_feature_and_from_vel_state_names(tmp_path, caplog):
    src = random_lerobot_episodes(n=2, d=3, s=3, velocity=True, seed=4)
    root = write_lerobot_v3_fixture(tmp_path / "v", src, velocity=True, state_names=["a.pos", "b.pos", "c.pos"])
    # action names in the fixture are a0..a2: no name match, equal widths -> position by position
    eps = list(iter_lerobot_episodes(root, velocity="require"))
    np.testing.assert_array_equal(eps[1].validate().velocities, src[1]["velocity"])

    # velocities hidden in observation.state as '<joint>.vel', matched to actions by motor name
    src2 = random_lerobot_episodes(n=2, d=4, s=4, seed=5)
    root2 = write_lerobot_v3_fixture(tmp_path / "s", src2, state_names=["x.vel", "x.pos", "y.pos", "y.vel"])
    info = json.loads((root2 / "meta/info.json").read_text())
    info["features"]["action"]["names"] = ["y.pos", "x.pos", "y.pos", "x.pos"]
    (root2 / "meta/info.json").write_text(json.dumps(info))
    ep = next(iter_lerobot_episodes(root2, velocity="require")).validate()
    st = src2[0]["state"]
    np.testing.assert_array_equal(ep.velocities, st[:, [3, 0, 3, 0]])

    root3 = write_lerobot_v3_fixture(tmp_path / "none", random_lerobot_episodes(n=1))
    with pytest.raises(ValueError, match="velocities required but not usable: no 'observation.velocity'"):
        next(iter_lerobot_episodes(root3, velocity="require"))
    with caplog.at_level(logging.WARNING):
        assert next(iter_lerobot_episodes(root3)).velocities is None
    assert "velocity loss will be off" in caplog.text


def test_load_lerobot_chunks_and_caches(tmp_path):
    src = random_lerobot_episodes(n=3, lengths=[4, 6, 5], velocity=True, seed=6)
    root = write_lerobot_v3_fixture(tmp_path / "ds", src, fps=15, velocity=True, episodes_per_data_file=2)
    ds = load_lerobot(root, chunk_size=3, cache_dir=tmp_path / "cache")
    assert len(ds) == 15 and dataset_fps(ds) == 15.0
    row = ds.with_format("numpy")[4 + 4]  # episode 1, frame 4 of 6: frames 4, 5, pad
    assert (row["episode_index"], row["frame_index"]) == (1, 4)
    np.testing.assert_array_equal(row["action"], src[1]["action"][[4, 5, 5]])
    np.testing.assert_array_equal(row["velocity"], np.concatenate([src[1]["velocity"][[4, 5]], np.zeros((1, 6))]))
    assert row["action_is_pad"].tolist() == [False, False, True]
    assert row["task"] == src[1]["task"]
    ds2 = load_lerobot(root, chunk_size=3, cache_dir=tmp_path / "cache")
    assert ds2.cache_files == ds.cache_files
    # touching a data file changes the fingerprint
    f = root / "data/chunk-000/file-001.parquet"
    f.write_bytes(f.read_bytes())
    import os

    os.utime(f, ns=(1, 1))
    ds3 = load_lerobot(root, chunk_size=3, cache_dir=tmp_path / "cache")
    assert ds3.cache_files != ds.cache_files


def test_bad_values_are_named_or_skipped(tmp_path):
    src = random_lerobot_episodes(n=3, seed=7)
    src[1]["action"][2, 4] = np.nan
    root = write_lerobot_v3_fixture(tmp_path / "bad", src)
    with pytest.raises(EpisodeError, match=r"file-000\.parquet: episode 1: key 'actions': 1 non-finite"):
        load_lerobot(root, chunk_size=2, cache_dir=tmp_path / "c")
    ds = load_lerobot(root, chunk_size=2, cache_dir=tmp_path / "c", skip_invalid=True)
    summary = load_summary(ds)
    assert summary.episodes == 2 and [s.episode_id for s in summary.skipped] == ["1"]
    assert sorted(set(ds["episode_index"])) == [0, 2]


def test_missing_rows_are_reported_per_episode(tmp_path):
    root = write_lerobot_v3_fixture(tmp_path / "x", random_lerobot_episodes(n=2, seed=8))
    table = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    table[1]["length"] += 3
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(table), root / "meta/episodes/chunk-000/file-000.parquet")
    eps = list(iter_lerobot_episodes(root))
    eps[0].validate()
    with pytest.raises(EpisodeError, match="episode 1: key 'episode_index': 8 rows but meta/episodes says length 11"):
        eps[1].validate()


def test_template_paths_must_stay_inside_root(tmp_path):
    root = write_lerobot_v3_fixture(tmp_path / "ds", random_lerobot_episodes(n=1))
    info = json.loads((root / "meta/info.json").read_text())
    info["data_path"] = "../../outside/file-{file_index:03d}.parquet"
    (root / "meta/info.json").write_text(json.dumps(info))
    ep = next(iter_lerobot_episodes(root))
    with pytest.raises(EpisodeError, match="outside the dataset root"):
        ep.validate()


def _write_video(path, frames, fps):
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=int(fps))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _video_dataset(tmp_path, write_video=True):
    """Two episodes sharing one MP4 (second starts at from_timestamp = 5 / fps), solid frames per step."""
    fps = 10
    src = random_lerobot_episodes(n=2, lengths=[5, 4], image_keys=(), seed=9)
    root = write_lerobot_v3_fixture(tmp_path / "vid", src, fps=fps, image_keys=())
    levels = np.array([20, 60, 100, 140, 180, 220, 40, 80, 120], np.uint8)  # one grey level per frame
    frames = np.repeat(levels[:, None, None, None], 16 * 16 * 3, axis=1).reshape(9, 16, 16, 3)
    if write_video:
        _write_video(root / "videos/observation.images.cam/chunk-000/file-000.mp4", frames, fps)
    rows = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    for r, start in zip(rows, (0.0, 0.5), strict=True):
        r.update({"videos/observation.images.cam/chunk_index": 0, "videos/observation.images.cam/file_index": 0,
                  "videos/observation.images.cam/from_timestamp": start,
                  "videos/observation.images.cam/to_timestamp": start + r["length"] / fps})
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(rows), root / "meta/episodes/chunk-000/file-000.parquet")
    info = json.loads((root / "meta/info.json").read_text())
    info["video_path"] = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    info["features"]["observation.images.cam"] = {
        "dtype": "video", "shape": [16, 16, 3], "names": ["height", "width", "channels"],
        "info": {"video.fps": fps, "video.codec": "mpeg4", "video.height": 16, "video.width": 16}}
    (root / "meta/info.json").write_text(json.dumps(info))
    return root, src, levels


def test_video_frames_are_decoded_at_episode_offsets(tmp_path):
    root, src, levels = _video_dataset(tmp_path)
    eps = [ep.validate() for ep in iter_lerobot_episodes(root)]
    got = [[float(ep.images["cam"][t].mean()) for t in range(len(ep))] for ep in eps]
    np.testing.assert_allclose(got[0], levels[:5], atol=3)  # lossy codec: grey levels within 3
    np.testing.assert_allclose(got[1], levels[5:], atol=3)
    # random access backwards seeks again
    np.testing.assert_allclose(float(eps[1].images["cam"][0].mean()), levels[5], atol=3)


def test_missing_videos_message_and_state_only_mode(tmp_path):
    root, src, _ = _video_dataset(tmp_path, write_video=False)
    with pytest.raises(FileNotFoundError, match="videos are absent.*state_only=True"):
        next(iter_lerobot_episodes(root))
    ds = load_lerobot(root, chunk_size=2, state_only=True, cache_dir=tmp_path / "c")
    assert not any(k.startswith("observation.images") for k in ds.features) and len(ds) == 9
    np.testing.assert_array_equal(ds.with_format("numpy")[5]["observation.state"], src[1]["state"][0])


def test_libero_lerobot_fps_override_and_camera_names(tmp_path, caplog):
    src = random_lerobot_episodes(n=2, d=7, s=8, hw=(8, 8), seed=10,
                                  image_keys=("observation.images.image", "observation.images.wrist_image"))
    root = write_lerobot_v3_fixture(tmp_path / "libero", src, fps=10,
                                    image_keys=("observation.images.image", "observation.images.wrist_image"))
    with caplog.at_level(logging.WARNING):
        ds = load_libero_lerobot(root, chunk_size=4, stride=2, cache_dir=tmp_path / "c")
    assert "info.json says fps 10" in caplog.text and "20 Hz" in caplog.text
    assert dataset_fps(ds) == 10.0  # 20 Hz true rate / stride 2
    assert {"observation.images.image", "observation.images.image2"} <= set(ds.features)
    row = ds.with_format("numpy")[0]
    np.testing.assert_array_equal(row["action"], src[0]["action"][[0, 2, 4, 6]])
    bad = write_lerobot_v3_fixture(tmp_path / "notlibero", random_lerobot_episodes(n=1, d=6, s=8), fps=10)
    with pytest.raises(ValueError, match="'action' has 6 dims; LeRobot-format LIBERO has 7"):
        load_libero_lerobot(bad, chunk_size=4, cache_dir=tmp_path / "c")


def test_writer_round_trip_and_spec(tmp_path):
    eps = [make_episode(str(i), length=6 + i, action_dim=3, state_dim=2, cameras=("front", "wrist"), fps=80.0,
                        seed=i, instruction=["reach", "push"][i % 2]) for i in range(3)]
    root = write_lerobot_dataset(tmp_path / "out", eps, fps=80, robot_type="sawyer",
                                 action_names=["x", "y", "g"], data_files_size_in_mb=0.001)
    # spec, read with plain pyarrow/json
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 80 and info["total_frames"] == 21
    assert info["features"]["observation.images.front"]["dtype"] == "image"
    assert info["features"]["observation.velocity"]["names"] == ["x.vel", "y.vel", "g.vel"]
    tasks = pq.read_table(root / "meta/tasks.parquet").to_pandas()
    assert tasks.index.name == "task" and tasks["task_index"].to_dict() == {"reach": 0, "push": 1}
    emeta = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [(r["dataset_from_index"], r["dataset_to_index"], r["data/file_index"]) for r in emeta] == [
        (0, 6, 0), (6, 13, 1), (13, 21, 2)]  # a tiny size limit: one file per episode
    np.testing.assert_allclose(emeta[2]["stats/action/mean"], eps[2].actions.mean(0), rtol=1e-6)
    stats = json.loads((root / "meta/stats.json").read_text())
    all_actions = np.concatenate([e.actions for e in eps]).astype(np.float64)
    np.testing.assert_allclose(stats["action"]["q01"], np.quantile(all_actions, 0.01, axis=0), rtol=1e-12)
    assert np.asarray(stats["observation.images.wrist"]["mean"]).shape == (3, 1, 1)
    # the data parquet loads with HF datasets (v4 feature metadata), images decoded
    import datasets

    hf = datasets.Dataset.from_parquet(str(root / "data/chunk-000/file-001.parquet"))
    assert isinstance(hf.features["observation.images.front"], datasets.Image)
    np.testing.assert_array_equal(np.asarray(hf[2]["observation.images.front"]), eps[1].images["front"][2])
    np.testing.assert_allclose(hf["timestamp"], np.arange(7) / 80.0, rtol=1e-6)
    # the package's reader gives the episodes back
    back = [ep.validate() for ep in iter_lerobot_episodes(root, velocity="require")]
    for a, b in zip(back, eps, strict=True):
        np.testing.assert_array_equal(a.actions, b.actions)
        np.testing.assert_array_equal(a.velocities, b.velocities)
        np.testing.assert_array_equal(a.images["wrist"][len(b) - 1], b.images["wrist"][-1])
        assert a.instruction == b.instruction and a.fps == 80.0
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        write_lerobot_dataset(root, eps, fps=80)


def test_writer_rejects_mixed_layouts_and_cleans_up(tmp_path):
    eps = [make_episode("0"), make_episode("1", velocity=False)]
    with pytest.raises(EpisodeError, match="episode 1: key 'layout'"):
        write_lerobot_dataset(tmp_path / "w", eps, fps=20)
    assert not (tmp_path / "w").exists()  # nothing half-written is left
    (tmp_path / "empty").mkdir()
    with pytest.raises(EpisodeError, match="dataset is written at fps=30"):
        write_lerobot_dataset(tmp_path / "empty", [make_episode("0")], fps=30)
    assert (tmp_path / "empty").is_dir() and not any((tmp_path / "empty").iterdir())


def test_v2_dataset_gets_a_conversion_hint(tmp_path):
    root = write_lerobot_v3_fixture(tmp_path / "old", random_lerobot_episodes(n=1))
    info = json.loads((root / "meta/info.json").read_text())
    info["codebase_version"] = "v2.1"
    (root / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="v2.1.*convert_dataset_v21_to_v30"):
        open_lerobot_v3(root)


# ------------------------------------------------------------------------------------------------------------
# Data that is accepted but wrong: refused, naming the file (moved from test_hostile_inputs.py)
# ------------------------------------------------------------------------------------------------------------
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



def test_select_reads_only_the_selected_positions(tmp_path):
    src = random_lerobot_episodes(n=5, lengths=[5, 7, 6, 4, 8], seed=5)
    root = write_lerobot_v3_fixture(tmp_path / "ds", src, episodes_per_data_file=3)
    out = list(iter_lerobot_episodes(root, velocity="none", select=lambda p: p % 2 == 1))
    assert [None if ep is None else ep.index for ep in out] == [None, 1, None, 3, None]
    # positions count the episodes this call yields: with episodes=[1, 2, 4], position 1 is episode 2
    picked = list(iter_lerobot_episodes(root, velocity="none", episodes=[1, 2, 4], select=lambda p: p == 1))
    assert [None if ep is None else ep.index for ep in picked] == [None, 2, None]
    for ep in [e for e in out + picked if e is not None]:
        ref = src[ep.index]
        np.testing.assert_array_equal(ep.validate().actions, ref["action"])
        np.testing.assert_array_equal(ep.states, ref["state"])
        for t in range(len(ep)):
            np.testing.assert_array_equal(ep.images["top"][t], ref["images"]["observation.images.top"][t])


def test_rows_by_episode_matches_a_scan():
    from niaf_train.data.lerobot_reader import _rows_by_episode

    column = np.random.default_rng(0).integers(0, 9, size=200)  # interleaved, unsorted, episode 9 absent
    rows = _rows_by_episode(column)
    for e in range(10):
        np.testing.assert_array_equal(rows(e), np.nonzero(column == e)[0])


def test_streaming_reads_each_row_once_and_matches_the_cache(tmp_path, monkeypatch):
    src = random_lerobot_episodes(n=5, lengths=[5, 7, 6, 4, 8], seed=6)
    root = write_lerobot_v3_fixture(tmp_path / "ds", src, episodes_per_data_file=3)
    ds = load_lerobot(root, 3, cache_dir=tmp_path / "cache", velocity="none")
    stream = load_lerobot(root, 3, velocity="none", streaming=True)
    rows_read = []
    read_table = pq.read_table
    monkeypatch.setattr(pq, "read_table", lambda *a, **k: rows_read.append((t := read_table(*a, **k)).num_rows) or t)
    got = sorted((r["episode_index"], r["frame_index"], np.asarray(r["action"], np.float32).tobytes(),
                  r["observation.images.top"].tobytes()) for r in stream)
    ref = sorted((r["episode_index"], r["frame_index"], np.asarray(r["action"], np.float32).tobytes(),
                  r["observation.images.top"].tobytes()) for r in ds)
    assert got == ref and len(got) == 30
    # the 16 shards each read only their own episodes' rows: 30 frames in all (16 x 30 before)
    assert sum(rows_read) == 30


def test_interleaved_and_shuffled_rows_are_read_by_episode_and_frame(tmp_path):
    src = random_lerobot_episodes(n=3, lengths=[5, 7, 6], seed=7)
    root = write_lerobot_v3_fixture(tmp_path / "ds", src, episodes_per_data_file=3)
    path = root / "data" / "chunk-000" / "file-000.parquet"
    table = pq.read_table(path)
    # rows of the three episodes mixed and out of frame order, in several row groups
    pq.write_table(table.take(np.random.default_rng(0).permutation(table.num_rows)), path, row_group_size=4)
    eps = [ep.validate() for ep in iter_lerobot_episodes(root, velocity="none")]
    assert [ep.index for ep in eps] == [0, 1, 2]
    for ep, e in zip(eps, src, strict=True):
        np.testing.assert_array_equal(ep.actions, e["action"])
        np.testing.assert_array_equal(ep.states, e["state"])
        for t in range(len(ep)):
            np.testing.assert_array_equal(ep.images["top"][t], e["images"]["observation.images.top"][t])


def test_an_episode_keeps_only_its_own_image_bytes(tmp_path):
    src = random_lerobot_episodes(n=3, lengths=[5, 7, 6], seed=8)
    root = write_lerobot_v3_fixture(tmp_path / "ds", src, episodes_per_data_file=3)  # one row group, 3 episodes
    file_bytes = pq.read_table(root / "data" / "chunk-000" / "file-000.parquet")["observation.images.top"]
    whole = sum(b.size for chunk in file_bytes.chunks for b in chunk.buffers() if b is not None)
    for ep in iter_lerobot_episodes(root, velocity="none"):
        cells = ep.images["top"]._fetch.__defaults__[0]  # the Arrow cells the frames are decoded from
        held = sum(b.size for b in cells.buffers() if b is not None)
        own = sum(len(c["bytes"]) + len(c["path"]) for c in cells.to_pylist())
        assert held < whole / 2 and held <= own + 1024  # its own frames' bytes (+ offsets), not the file's
