"""The data-source registry both command lines read: names, aliases and the one-line refusals."""

from __future__ import annotations

import numpy as np
import pytest
from data_factories import random_lerobot_episodes, write_lerobot_v3_fixture
from niaf_train.data.sources import SOURCES, LoadOptions, get_source, load_source, metaworld_demonstrations
from niaf_train.training.arguments import DATA_SOURCES


def test_both_command_lines_read_one_registry():
    from niaf_train.data.cli import FORMATS

    assert DATA_SOURCES == tuple(SOURCES)  # niaf-train's choices
    assert {get_source(f).name for f in FORMATS} <= set(SOURCES)  # niaf-data's formats, old spelling included
    assert get_source("libero-lerobot") is SOURCES["libero_lerobot"]


def test_unknown_source_and_inapplicable_option_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"unknown data source 'rlds'.*calvin"):
        get_source("rlds")
    with pytest.raises(ValueError, match="fps does not apply to data source 'calvin'"):
        load_source("calvin", tmp_path, LoadOptions(chunk_size=4, fps=30.0))
    with pytest.raises(ValueError, match="split does not apply to data source 'lerobot'"):
        load_source("lerobot", tmp_path, LoadOptions(chunk_size=4, split="validation"))
    with pytest.raises(ValueError, match=r"lacks \['camera'"):
        metaworld_demonstrations({"tasks": ["reach-v3"]}, tmp_path)


def test_registry_loads_a_lerobot_dataset_as_the_loader_does(tmp_path):
    from niaf_train.data.lerobot_v3 import load_lerobot

    root = write_lerobot_v3_fixture(tmp_path / "ds", random_lerobot_episodes(n=2, seed=3))
    through_registry = load_source("lerobot", root, LoadOptions(chunk_size=4, cache_dir=tmp_path / "a"))
    direct = load_lerobot(root, 4, 1, cache_dir=tmp_path / "b")
    assert len(through_registry) == len(direct) and through_registry.column_names == direct.column_names
    a = through_registry.select_columns(["action"]).with_format("numpy")["action"]
    b = direct.select_columns(["action"]).with_format("numpy")["action"]
    np.testing.assert_array_equal(np.stack(a), np.stack(b))
    state_only = load_source("lerobot", root, LoadOptions(chunk_size=4, cameras=(), cache_dir=tmp_path / "c"))
    assert not [c for c in state_only.column_names if c.startswith("observation.images.")]
