"""The comparison heads: query outputs Z [B, Q, d] → a chunk, each in its own representation.

All three share one conditioning trunk, so that they differ only in what they output:

    Z [B, Q, d] ──per-token linear d → r──▶ [B, Q·r] ──MLP (hidden h, GELU)──▶ condition c [B, h]

* [`WaypointHead`] (OpenVLA-OFT-style parallel decoding): c → K·D waypoints in one pass; L1 or L2 loss.
* [`BSplineHead`] (BEAST-CT-style): c → M·D continuous control points of a clamped cubic B-spline.
* [`FlowHead`] (π0-style flow matching): a small action network v(x_t, t, c) over the K·D chunk; trained with
  the rectified-flow velocity target, sampled with a fixed number of Euler steps from seeded noise.

Convention of the flow (stated because π0 writes it the other way round): x_t = (1 - t)·x₀ + t·a with
x₀ ~ N(0, I) the noise at t = 0 and a the normalised action chunk at t = 1; the network regresses the
velocity u = a - x₀; sampling integrates dx/dt = v(x, t) from t = 0 to 1 with ``steps`` Euler steps. Training
times follow π0's Beta(1.5, 1) emphasis on the noisy end: t = 1 - (0.999·s + 0.001), s ~ Beta(1.5, 1)
(π0's s is the noise level). Every head runs in float32, also under autocast.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

try:  # transformers >= 5: init functions that leave weights loaded from a checkpoint untouched
    from transformers import initialization as _init
except ImportError:  # transformers 4.x
    from torch.nn import init as _init

TIME_EMBEDDING_DIM = 64
TOKEN_DIM = 16
"""r: width each query token is projected to before the tokens are concatenated."""


def _reset_linear(layer: nn.Linear, zero: bool = False) -> None:
    """PyTorch's default nn.Linear init (or zeros), through the checkpoint-safe init functions."""
    if zero:
        _init.zeros_(layer.weight)
    else:
        _init.kaiming_uniform_(layer.weight, a=math.sqrt(5))
    if layer.bias is not None:
        if zero:
            _init.zeros_(layer.bias)
        else:
            bound = 1.0 / math.sqrt(layer.in_features) if layer.in_features > 0 else 0.0
            _init.uniform_(layer.bias, -bound, bound)


class QueryCondition(nn.Module):
    """Z [B, Q, d] → c [B, h]: per-token linear d → r, concatenation, Linear(Q·r → h), GELU."""

    def __init__(self, num_queries: int, hidden_size: int, width: int, token_dim: int = TOKEN_DIM) -> None:
        super().__init__()
        self.token = nn.Linear(hidden_size, token_dim)
        self.mix = nn.Linear(num_queries * token_dim, width)
        self.act = nn.GELU()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.act(self.mix(self.token(z).flatten(1)))


class BaselineHead(nn.Module):
    """Base of the comparison heads (matched by the model's ``_init_weights``)."""

    kind = "base"

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                _reset_linear(module)
            elif isinstance(module, nn.LayerNorm):
                _init.ones_(module.weight)
                _init.zeros_(module.bias)

    def _float(self, z: torch.Tensor) -> torch.Tensor:
        return z.to(next(self.parameters()).dtype)


class WaypointHead(BaselineHead):
    """OFT-style parallel decoding: Z → K waypoints [B, K, D] (normalised units) in one pass."""

    kind = "waypoints"

    def __init__(self, num_queries: int, hidden_size: int, chunk_size: int, action_dim: int, width: int) -> None:
        super().__init__()
        self.chunk_size, self.action_dim = chunk_size, action_dim
        self.condition = QueryCondition(num_queries, hidden_size, width)
        self.hidden = nn.Linear(width, width)
        self.out = nn.Linear(width, chunk_size * action_dim)
        self.reset_parameters()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=z.device.type, enabled=False):
            h = torch.nn.functional.gelu(self.hidden(self.condition(self._float(z))))
            return self.out(h).reshape(z.shape[0], self.chunk_size, self.action_dim)


class BSplineHead(BaselineHead):
    """BEAST-CT-style: Z → M continuous control points [B, M, D] (normalised units) of a clamped cubic B-spline."""

    kind = "bspline"

    def __init__(self, num_queries: int, hidden_size: int, num_control_points: int, action_dim: int, width: int) -> None:
        super().__init__()
        self.num_control_points, self.action_dim = num_control_points, action_dim
        self.condition = QueryCondition(num_queries, hidden_size, width)
        self.hidden = nn.Linear(width, width)
        self.out = nn.Linear(width, num_control_points * action_dim)
        self.reset_parameters()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=z.device.type, enabled=False):
            h = torch.nn.functional.gelu(self.hidden(self.condition(self._float(z))))
            return self.out(h).reshape(z.shape[0], self.num_control_points, self.action_dim)


def time_embedding(t: torch.Tensor, dim: int = TIME_EMBEDDING_DIM) -> torch.Tensor:
    """Sinusoidal embedding of flow times t [B] in [0, 1]: [B, dim] (periods from 1 to 1/1000 of [0, 1])."""
    half = dim // 2
    freqs = torch.exp(torch.linspace(0.0, math.log(1000.0), half, device=t.device, dtype=t.dtype))
    angles = 2 * math.pi * t[:, None] * freqs[None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


def euler_sample(velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x0: torch.Tensor,
                 steps: int) -> torch.Tensor:
    """Integrate dx/dt = velocity(x, t) from t = 0 (x = x0) to t = 1 with ``steps`` explicit Euler steps.

    ``velocity(x [B, ...], t [B])`` is evaluated at t_i = i / steps, i = 0 … steps-1. Exact for a velocity that
    depends on t only through piecewise constants on the grid (e.g. the straight path's constant a - x₀).
    """
    if steps < 1:
        raise ValueError(f"flow sampling needs >= 1 Euler step, got {steps}")
    x = x0
    dt = 1.0 / steps
    for i in range(steps):
        t = torch.full((x.shape[0],), i * dt, dtype=x.dtype, device=x.device)
        x = x + dt * velocity(x, t)
    return x


class FlowHead(BaselineHead):
    """π0-style flow matching over the K×D chunk, conditioned on the query outputs (see the module docstring).

    The action network is an MLP on [x_t (K·D), time embedding, condition c]: 3 layers of width h with SiLU.
    """

    kind = "flow"

    def __init__(self, num_queries: int, hidden_size: int, chunk_size: int, action_dim: int, width: int,
                 steps: int = 10) -> None:
        super().__init__()
        self.chunk_size, self.action_dim, self.steps = chunk_size, action_dim, int(steps)
        self.condition = QueryCondition(num_queries, hidden_size, width)
        size = chunk_size * action_dim
        self.net = nn.Sequential(
            nn.Linear(size + TIME_EMBEDDING_DIM + width, width), nn.SiLU(),
            nn.Linear(width, width), nn.SiLU(),
            nn.Linear(width, width), nn.SiLU(),
            nn.Linear(width, size),
        )
        self.reset_parameters()

    def velocity(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """v(x_t, t | c): x [B, K, D], t [B], c [B, h] → [B, K, D]."""
        features = torch.cat([x.flatten(1), time_embedding(t), c], dim=-1)
        return self.net(features).reshape(x.shape)

    def loss_terms(self, z: torch.Tensor, actions: torch.Tensor,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(predicted velocity, target a - x₀), both [B, K, D], at a random time per sample."""
        with torch.autocast(device_type=z.device.type, enabled=False):
            c = self.condition(self._float(z))
            a = actions.to(c.dtype)
            x0 = torch.randn(a.shape, generator=generator, dtype=a.dtype, device=a.device)
            s = torch.distributions.Beta(torch.tensor(1.5, device=a.device), torch.tensor(1.0, device=a.device))
            t = 1.0 - (0.999 * s.sample((a.shape[0],)).to(a.dtype) + 0.001)
            xt = (1.0 - t)[:, None, None] * x0 + t[:, None, None] * a
            return self.velocity(xt, t, c), a - x0

    def sample(self, z: torch.Tensor, generator: torch.Generator | None = None, steps: int | None = None) -> torch.Tensor:
        """[B, K, D] normalised chunk: ``steps`` (default ``self.steps``) Euler steps from noise drawn with ``generator``."""
        with torch.autocast(device_type=z.device.type, enabled=False):
            c = self.condition(self._float(z))
            x0 = torch.randn((z.shape[0], self.chunk_size, self.action_dim), generator=generator, dtype=c.dtype,
                             device=torch.device("cpu") if generator is not None else c.device).to(c.device)
            return euler_sample(lambda x, t: self.velocity(x, t, c), x0, steps or self.steps)


__all__ = ["BSplineHead", "BaselineHead", "FlowHead", "QueryCondition", "WaypointHead", "euler_sample",
           "time_embedding"]
