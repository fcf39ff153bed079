"""Image keypoints (``NiafConfig.image_keypoints``): the spatial soft-argmax, and the path from pixels to Z."""

from __future__ import annotations

import math

import pytest
import torch
from test_modeling import make_config, make_model

from modeling_niaf.keypoints import NiafImageKeypoints, SpatialSoftArgmax


def test_soft_argmax_matches_a_hand_computation():
    maps = torch.full((1, 2, 3, 5), -1e4)
    maps[0, 0, 2, 1] = 0.0  # one sharp peak: row 2 of 3 (y = 1), column 1 of 5 (x = -0.5)
    maps[0, 1] = 0.0  # flat: the centre
    maps[0, 1, 0, 4] = math.log(16.0)  # ... pulled toward the top-right corner by one heavy cell
    out = SpatialSoftArgmax()(maps)
    assert out[0, 0].tolist() == pytest.approx([-0.5, 1.0], abs=1e-6)
    # the second map: 14 cells of weight 1 and one of weight 16 (total 30); x and y by hand
    xs, ys = [-1.0, -0.5, 0.0, 0.5, 1.0], [-1.0, 0.0, 1.0]
    x = (3 * sum(xs) + 15 * xs[4]) / 30  # column 4 holds 2 cells of weight 1 + the heavy one
    y = (5 * sum(ys) + 15 * ys[0]) / 30
    assert out[0, 1].tolist() == pytest.approx([x, y], abs=1e-6)


def test_a_bright_square_moves_its_keypoint_with_it():
    """An encoder whose map is the image's brightness: the keypoint follows the square, in image coordinates."""
    enc = NiafImageKeypoints(num_cameras=1, num_keypoints=1, hidden_size=4)
    with torch.no_grad():
        for layer in enc.encoders[0]:
            if isinstance(layer, torch.nn.Conv2d):
                layer.weight.zero_()
                layer.bias.zero_()
        first, second, third, last = [m for m in enc.encoders[0] if isinstance(m, torch.nn.Conv2d)]
        first.weight[0, :, 2, 2] = 1.0  # channel 0 = brightness at the stride-2 sample
        second.weight[0, 0, 1, 1] = 1.0
        third.weight[0, 0, 1, 1] = 1.0
        last.weight[0, 0] = 50.0  # sharp soft-argmax
    for row, col in ((4, 4), (4, 24), (24, 12)):
        image = torch.full((1, 1, 3, 32, 32), -1.0)
        image[..., row:row + 4, col:col + 4] = 1.0
        x, y = enc.keypoints(image)[0, 0, 0].tolist()
        # the stride-2 map has 16 cells per side at -1 + 2 i / 15; the square covers cells row/2 .. row/2 + 1
        assert x == pytest.approx(-1 + 2 * (col / 2 + 0.5) / 15, abs=1e-3)
        assert y == pytest.approx(-1 + 2 * (row / 2 + 0.5) / 15, abs=1e-3)


@pytest.mark.parametrize("family", ["paligemma", "florence2", "smolvlm"])
def test_the_keypoints_reach_the_query_outputs_and_get_gradients(family):
    from niaf_tiny_backbones import make_inputs

    model = make_model(family, image_keypoints=4, num_cameras=2)
    inputs = make_inputs(family, num_cameras=2)
    z = model.encode_queries(**inputs)
    z.square().sum().backward()
    for name, p in model.image_keypoints.named_parameters():  # both cameras' encoders and the projection
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    with torch.no_grad():  # a zero projection removes the path: what is left is the backbone's Z
        model.image_keypoints.projection.weight.zero_()
        model.image_keypoints.projection.bias.zero_()
        assert (model.encode_queries(**inputs) - z).abs().max() > 1e-4


def test_config_bounds_and_unsupported_layouts_are_named():
    with pytest.raises(ValueError, match="image_keypoints"):
        make_config("paligemma", image_keypoints=-1)
    with pytest.raises(ValueError, match="image_keypoints.*<= 256"):
        make_config("paligemma", image_keypoints=10_000)
    with pytest.raises(ValueError, match="image_keypoint_channels.*>= 1"):
        make_config("paligemma", image_keypoints=2, image_keypoint_channels=0)
    with pytest.raises(ValueError, match="image_keypoint_channels.*<= 1024"):
        make_config("paligemma", image_keypoints=2, image_keypoint_channels=100_000)
    with pytest.raises(ValueError, match="image_keypoints.*flattened patches"):
        make_model("qwen2_5_vl", image_keypoints=2)


def test_the_encoder_width_is_the_configured_one_and_survives_a_save(tmp_path):
    from modeling_niaf import NiafForActionFunction

    model = make_model("paligemma", image_keypoints=3, image_keypoint_channels=8, num_cameras=2)
    for encoder in model.image_keypoints.encoders:
        convs = [m for m in encoder if isinstance(m, torch.nn.Conv2d)]
        assert [c.out_channels for c in convs] == [8, 8, 8, 3]
    model.save_pretrained(tmp_path)
    again = NiafForActionFunction.from_pretrained(tmp_path)
    assert again.config.image_keypoint_channels == 8
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
