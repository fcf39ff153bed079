"""Streaming statistics against numpy references, and the stats.json layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
from data_factories import make_episode
from niaf_train.data.stats import (
    read_stats_json,
    stats_from_episodes,
    to_normalization_stats,
    write_stats_json,
)

from configuration_niaf.normalization import RunningStats, compute_stats


def test_exact_statistics_match_numpy_over_uneven_batches():
    rng = np.random.default_rng(1)
    x = rng.normal(loc=[5.0, -3.0, 1e4], scale=[1.0, 0.1, 2.0], size=(1000, 3))
    splits = np.split(x, [1, 7, 300, 301, 999])
    got = compute_stats(splits)
    np.testing.assert_allclose(got["mean"], x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(got["std"], x.std(0), rtol=1e-9)  # population std, like LeRobot
    np.testing.assert_array_equal(got["min"], x.min(0))
    np.testing.assert_array_equal(got["max"], x.max(0))
    for key, q in (("q01", 0.01), ("q10", 0.1), ("q50", 0.5), ("q90", 0.9), ("q99", 0.99)):
        np.testing.assert_allclose(got[key], np.quantile(x, q, axis=0), rtol=1e-12)
    assert got["count"] == [1000]


def test_reservoir_quantiles_are_close_and_moments_stay_exact():
    rng = np.random.default_rng(2)
    x = rng.uniform(0.0, 1.0, size=(60_000, 2))
    acc = RunningStats(2, exact_limit=5_000, reservoir_size=4_000, seed=0)
    for b in np.array_split(x, 37):
        acc.update(b)
    assert not acc.exact
    got = acc.result()
    np.testing.assert_allclose(got["mean"], x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(got["std"], x.std(0), rtol=1e-9)
    # uniform on [0, 1]: quantile q is q; 4000-sample standard error of q50 ~ 0.008, allow 4 sigma
    for key, q in (("q01", 0.01), ("q50", 0.5), ("q99", 0.99)):
        tol = 4 * np.sqrt(q * (1 - q) / 4_000)
        np.testing.assert_allclose(got[key], np.quantile(x, q, axis=0), atol=tol)
    # deterministic for a given seed
    acc2 = RunningStats(2, exact_limit=5_000, reservoir_size=4_000, seed=0)
    for b in np.array_split(x, 37):
        acc2.update(b)
    assert acc2.result() == got


def test_running_stats_rejects_bad_rows():
    acc = RunningStats(3)
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        acc.update(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="NaN or inf"):
        acc.update(np.array([[0.0, np.nan, 1.0]]))
    with pytest.raises(ValueError, match="no rows"):
        acc.result()


def test_stats_from_episodes_layout_and_values(tmp_path):
    eps = [make_episode(str(i), length=10 + i, seed=i) for i in range(3)]
    stats = stats_from_episodes(eps, image_pixels=64)
    assert set(stats) == {"action", "observation.state", "observation.velocity", "observation.images.top"}
    all_actions = np.concatenate([e.actions for e in eps]).astype(np.float64)
    np.testing.assert_allclose(stats["action"]["q99"], np.quantile(all_actions, 0.99, axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats["action"]["mean"], all_actions.mean(0), rtol=1e-6)
    assert stats["action"]["count"] == [33]
    img = stats["observation.images.top"]
    assert np.asarray(img["mean"]).shape == (3, 1, 1) and img["count"] == [33]
    # 16x16 frames, 64 pixels requested -> every 2nd row and column
    pixels = np.concatenate([e.images["top"][:, ::2, ::2].reshape(-1, 3) for e in eps]) / 255.0
    np.testing.assert_allclose(np.asarray(img["mean"]).reshape(3), pixels.mean(0), rtol=1e-9)

    path = write_stats_json(tmp_path / "meta" / "stats.json", stats)
    with pytest.raises(FileExistsError, match="overwrite"):
        write_stats_json(path, stats)
    write_stats_json(path, stats, overwrite=True)
    back = read_stats_json(path)
    np.testing.assert_array_equal(back["observation.state"]["min"], stats["observation.state"]["min"])
    assert json.loads(path.read_text())["action"]["count"] == [33]
    cfg = to_normalization_stats(back)
    assert set(cfg) == {"action", "state"} and "count" not in cfg["action"]
    assert cfg["action"]["q01"] == pytest.approx(stats["action"]["q01"])


def test_read_stats_json_names_bad_entries(tmp_path):
    p = tmp_path / "stats.json"
    p.write_text(json.dumps({"action": {"min": ["a", "b"]}}))
    with pytest.raises(ValueError, match="feature 'action' key 'min'"):
        read_stats_json(p)
