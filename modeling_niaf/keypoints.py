"""Image keypoints: a direct path from where things are in the camera images to the query tokens.

A small convolutional encoder per camera turns each image into ``K`` heat maps; a spatial soft-argmax reads
each map's expected image position ``(x, y) ∈ [-1, 1]²``. The ``2·K·num_cameras`` coordinates, projected to
the backbone width, are added to every query token, as ``state_to_queries`` adds the state. Coordinates are a
fixed, smooth function of where a feature appears, so a place seen in no demonstration still gets a sensible
code: the inductive bias a vision tower trained from random weights on a few hundred demonstrations lacks.
"""

from __future__ import annotations

import torch
from torch import nn


class SpatialSoftArgmax(nn.Module):
    """Heat maps [N, K, h, w] → expected positions [N, K, 2] (x, then y; -1 = left / top, 1 = right / bottom)."""

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        n, k, h, w = maps.shape
        weights = maps.float().flatten(2).softmax(dim=-1).view(n, k, h, w)
        xs = torch.linspace(-1.0, 1.0, w, device=maps.device)
        ys = torch.linspace(-1.0, 1.0, h, device=maps.device)
        x = (weights.sum(dim=2) * xs).sum(dim=-1)
        y = (weights.sum(dim=3) * ys).sum(dim=-1)
        return torch.stack([x, y], dim=-1).to(maps.dtype)


class KeypointConv2d(nn.Conv2d):
    """A convolution of the keypoint encoder: its own class, so that the model's weight initialisation gives it
    PyTorch's default (transformers' N(0, 0.02) would leave a 4-layer stack with nearly flat heat maps)."""


class KeypointLinear(nn.Linear):
    """The keypoint projection (own class for the same reason as :class:`KeypointConv2d`)."""


class NiafImageKeypoints(nn.Module):
    """``num_cameras`` convolutional keypoint encoders and the projection of their coordinates.

    Args:
        num_cameras: images per observation (one encoder each: the views differ).
        num_keypoints: K, keypoints per camera.
        hidden_size: d, the width of the query tokens the result is added to.
        channels: width of each encoder.

    Input ``pixel_values`` [B, num_cameras, 3, H, W] (as the processor gives them); output [B, d].
    """

    def __init__(self, num_cameras: int, num_keypoints: int, hidden_size: int, channels: int = 32) -> None:
        super().__init__()
        self.encoders = nn.ModuleList(
            nn.Sequential(
                KeypointConv2d(3, channels, 5, stride=2, padding=2), nn.ReLU(),
                KeypointConv2d(channels, channels, 3, padding=1), nn.ReLU(),
                KeypointConv2d(channels, channels, 3, padding=1), nn.ReLU(),
                KeypointConv2d(channels, num_keypoints, 1),
            )
            for _ in range(num_cameras)
        )
        self.soft_argmax = SpatialSoftArgmax()
        self.projection = KeypointLinear(2 * num_keypoints * num_cameras, hidden_size)

    def reset_parameters(self) -> None:
        """PyTorch's default initialisation of every layer."""
        for module in self.modules():
            if isinstance(module, (KeypointConv2d, KeypointLinear)):
                module.reset_parameters()

    def keypoints(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, num_cameras, 3, H, W] → [B, num_cameras, K, 2] image positions in [-1, 1]."""
        dtype = self.projection.weight.dtype
        return torch.stack(
            [self.soft_argmax(encoder(pixel_values[:, cam].to(dtype))) for cam, encoder in enumerate(self.encoders)],
            dim=1,
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.projection(self.keypoints(pixel_values).flatten(1))


__all__ = ["KeypointConv2d", "KeypointLinear", "NiafImageKeypoints", "SpatialSoftArgmax"]
