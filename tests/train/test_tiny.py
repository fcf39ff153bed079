"""The tiny backbone built in code: its fixed 2-D sine-cosine patch positions."""

from __future__ import annotations

import math

import pytest
import torch
from niaf_train.tiny import sincos_2d_positions, tiny_backbone_config, use_fixed_vision_positions


def test_sincos_table_matches_a_hand_computation():
    grid, dim = 4, 8  # two frequencies: 1 and 1/4 radians per patch
    table = sincos_2d_positions(grid, dim).double()
    assert table.shape == (16, 8)
    for r in range(grid):
        for c in range(grid):
            expected = [math.sin(c), math.sin(c / 4), math.cos(c), math.cos(c / 4),
                        math.sin(r), math.sin(r / 4), math.cos(r), math.cos(r / 4)]
            assert table[r * grid + c].tolist() == pytest.approx(expected, abs=1e-6)


def test_patch_coordinates_are_linear_in_the_table():
    """What the fixed table is for: a linear readout recovers a patch's row and column exactly."""
    grid = 8
    table = sincos_2d_positions(grid, 64).double()
    features = torch.cat([table, torch.ones(grid * grid, 1, dtype=torch.float64)], dim=1)
    readout = torch.linalg.pinv(features)
    idx = torch.arange(grid * grid, dtype=torch.float64)
    for coordinate in (idx % grid, idx // grid):
        assert torch.allclose(features @ (readout @ coordinate), coordinate, atol=1e-8)


def test_dim_must_be_a_multiple_of_four():
    with pytest.raises(ValueError, match="dim 6 must be a positive multiple of 4"):
        sincos_2d_positions(4, 6)
    with pytest.raises(ValueError, match="dim 0 must be a positive multiple of 4"):
        sincos_2d_positions(4, 0)
    with pytest.raises(ValueError, match="grid 0 must be >= 1"):
        sincos_2d_positions(0, 8)


def test_fixed_positions_replace_the_learned_table_and_are_not_trained():
    from configuration_niaf import NiafConfig
    from modeling_niaf import NiafForActionFunction

    config = NiafConfig(backbone_config=tiny_backbone_config(32, 2, 32, 8), action_dim=4, chunk_size=4,
                        siren_layers=2, siren_width=16, modulation_groups=4)
    model = NiafForActionFunction(config)
    assert use_fixed_vision_positions(model) == 1
    tables = [m.position_embedding for m in model.modules() if type(m).__name__ == "SiglipVisionEmbeddings"]
    assert len(tables) == 1
    assert torch.equal(tables[0].weight, sincos_2d_positions(4, 32))
    assert not tables[0].weight.requires_grad
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(n.endswith("position_embedding.weight") for n in trainable)
    assert any("patch_embedding" in n for n in trainable)
