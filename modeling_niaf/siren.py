"""The shared, modulated SIREN of NIAF and its closed-form τ-derivatives.

This is the only file that knows ω₀. Notation (reference: arXiv 2603.01766, §3; derivative recursion
checked against nested autograd in the tests):

    h⁽⁰⁾ = τ
    u⁽ˡ⁾ = ω₀ ((1 + γ⁽ˡ⁾) ⊙ (W⁽ˡ⁾ h⁽ˡ⁻¹⁾) + b⁽ˡ⁾ + β⁽ˡ⁾)      row-wise (FiLM) modulation, ℓ = 1..L
    h⁽ˡ⁾ = sin(u⁽ˡ⁾)
    Φ(τ) = W_out h⁽ᴸ⁾ + b_out

Because γ and β do not depend on τ, the τ-derivatives of the pre-activation are the same matrix product
applied to the derivatives of the previous layer, without the bias:

    u'  = ω₀ (1+γ) ⊙ (W h'),   u'' = ω₀ (1+γ) ⊙ (W h''),   u''' = ω₀ (1+γ) ⊙ (W h''')
    h'   =  cos u ⊙ u'
    h''  = -sin u ⊙ u'² + cos u ⊙ u''
    h''' = -cos u ⊙ u'³ - 3 sin u ⊙ u' ⊙ u'' + cos u ⊙ u'''

All orders are stacked on one axis, so each layer costs one matrix product for every order at once. The
shared W is applied to the whole batch; per-sample weight matrices are never built.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import initialization as _init  # init that leaves checkpoint weights alone

MAX_DERIVATIVE_ORDER = 3

_BLOCK_ELEMENTS = 1 << 19
"""Elements of the [k+1, B, n, H] buffer per block of time points without autograd (2 MiB in float32)."""


class SineLinear(nn.Linear):
    """``nn.Linear`` that owns its SIREN initialisation (Sitzmann et al. 2020).

    The layer stays a plain linear map; ω₀ and the sine are applied by [`ModulatedSiren`] after the
    modulation. It carries ``omega_0`` and ``is_first`` so that `_init_weights` of a `PreTrainedModel` can
    redo the SIREN init (transformers' default would redraw it from N(0, 0.02)).

    * first layer: W ~ U(-1/in, 1/in)
    * hidden layers: W ~ U(-√(6/in)/ω₀, √(6/in)/ω₀)
    * bias: U(-1/√in, 1/√in) (``nn.Linear``'s default, as in the reference SIREN code)
    """

    def __init__(self, in_features: int, out_features: int, omega_0: float, is_first: bool) -> None:
        self.omega_0 = float(omega_0)
        self.is_first = bool(is_first)
        super().__init__(in_features, out_features, bias=True)

    @property
    def weight_bound(self) -> float:
        if self.is_first:
            return 1.0 / self.in_features
        return math.sqrt(6.0 / self.in_features) / self.omega_0

    def reset_parameters(self) -> None:
        if not hasattr(self, "omega_0"):  # called by nn.Linear.__init__ before our attributes exist
            return
        bound = self.weight_bound
        _init.uniform_(self.weight, -bound, bound)
        bias_bound = 1.0 / math.sqrt(self.in_features)
        _init.uniform_(self.bias, -bias_bound, bias_bound)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, omega_0={self.omega_0}, is_first={self.is_first}"


class SirenReadout(nn.Linear):
    """Unmodulated linear read-out H → D with a small init: W ~ U(±√(6/H)/ω₀), b = 0."""

    def __init__(self, in_features: int, out_features: int, omega_0: float) -> None:
        self.omega_0 = float(omega_0)
        super().__init__(in_features, out_features, bias=True)

    def reset_parameters(self) -> None:
        if not hasattr(self, "omega_0"):
            return
        bound = math.sqrt(6.0 / self.in_features) / self.omega_0
        _init.uniform_(self.weight, -bound, bound)
        _init.zeros_(self.bias)


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 if anything is float64, else float32: the SIREN never computes in half precision."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


class ModulatedSiren(nn.Module):
    """The shared SIREN prior, modulated per sample by γ (frequency) and β (phase).

    Args:
        config: a `NiafConfig` (reads ``siren_layers``, ``siren_width``, ``siren_omega0``, ``action_dim``).

    The module's weights are the task-agnostic "motion prior"; all sample-specific information enters
    through γ, β of shape [B, L, H].
    """

    def __init__(self, config) -> None:
        super().__init__()
        self.num_layers = int(config.siren_layers)
        self.width = int(config.siren_width)
        self.omega_0 = float(config.siren_omega0)
        self.out_dim = int(config.action_dim)
        self.layers = nn.ModuleList(
            SineLinear(1 if i == 0 else self.width, self.width, self.omega_0, is_first=i == 0)
            for i in range(self.num_layers)
        )
        self.readout = SirenReadout(self.width, self.out_dim, self.omega_0)

    # ------------------------------------------------------------------------------------------------
    def _validate(
        self, tau: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, derivatives: int, check_finite: bool = True
    ) -> None:
        if isinstance(derivatives, bool) or not isinstance(derivatives, int) or not 0 <= derivatives <= MAX_DERIVATIVE_ORDER:
            raise ValueError(f"`derivatives` must be an int in 0..{MAX_DERIVATIVE_ORDER}, got {derivatives!r}.")
        expected = f"[B, {self.num_layers}, {self.width}] (B, siren_layers, siren_width)"
        for name, t in (("gamma", gamma), ("beta", beta)):
            if not isinstance(t, torch.Tensor):
                raise ValueError(f"`{name}` must be a torch.Tensor of shape {expected}, got {type(t).__name__}.")
            if t.ndim != 3 or tuple(t.shape[1:]) != (self.num_layers, self.width):
                raise ValueError(f"`{name}` must have shape {expected}, got {tuple(t.shape)}.")
            if not t.is_floating_point():
                raise ValueError(f"`{name}` must be a floating-point tensor, got {t.dtype}.")
        if gamma.shape != beta.shape:
            raise ValueError(f"`gamma` {tuple(gamma.shape)} and `beta` {tuple(beta.shape)} must have the same shape.")
        if not isinstance(tau, torch.Tensor):
            raise ValueError(f"`tau` must be a torch.Tensor of shape [N] or [B, N], got {type(tau).__name__}.")
        if not tau.is_floating_point():
            raise ValueError(f"`tau` must be a floating-point tensor, got {tau.dtype}.")
        batch = gamma.shape[0]
        if tau.ndim == 2:
            if tau.shape[0] != batch:
                raise ValueError(f"`tau` of shape [B, N] must have B={batch} (the batch of gamma), got {tuple(tau.shape)}.")
        elif tau.ndim != 1:
            raise ValueError(f"`tau` must have shape [N] (shared) or [B, N] (per sample), got {tuple(tau.shape)}.")
        if tau.shape[-1] == 0:
            raise ValueError("`tau` must hold at least one time point.")
        if not check_finite:
            return
        for name, t in (("tau", tau), ("gamma", gamma), ("beta", beta)):
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"`{name}` contains NaN or inf.")

    def forward(
        self, tau: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, derivatives: int = 0, check_finite: bool = True
    ) -> list[torch.Tensor]:
        """Evaluate Φ and its first ``derivatives`` τ-derivatives.

        Args:
            tau: [N] time points shared by the batch, or [B, N] per sample; normalised chunk time, usually
                in [-1, 1] (this module does not restrict the range).
            gamma: [B, L, H] frequency modulation; row r of layer ℓ's output is scaled by (1 + γ[:, ℓ, r]).
            beta: [B, L, H] phase modulation, added to layer ℓ's bias.
            derivatives: k in 0..3.
            check_finite: refuse non-finite tau, gamma or beta (a ValueError). Each check reads a value back
                from the device; a caller whose inputs are finite by construction (the model's training
                forward: its own τ grid and modulations) passes False.

        Returns:
            ``[Φ, dΦ/dτ, …, dᵏΦ/dτᵏ]``, k+1 tensors of shape [B, N, D] in the SIREN's output units
            (normalised actions, per unit τ). float32, or float64 when any input or weight is float64.
            Differentiable with respect to tau, gamma, beta and the weights.
        """
        self._validate(tau, gamma, beta, derivatives, check_finite)
        device_type = gamma.device.type
        with torch.autocast(device_type=device_type, enabled=False):
            needs_graph = torch.compiler.is_compiling() or (
                torch.is_grad_enabled()
                and (
                    tau.requires_grad
                    or gamma.requires_grad
                    or beta.requires_grad
                    or any(p.requires_grad for p in self.parameters())
                )
            )
            if needs_graph:
                return self._forward(tau, gamma, beta, derivatives)
            try:
                return self._forward_blocked(tau, gamma, beta, derivatives)
            except (RuntimeError, NotImplementedError):
                # torch.func transforms (jvp, vmap) cannot run the in-place / out= kernels; the graph path
                # computes the same numbers (a genuine error is raised again there)
                return self._forward(tau, gamma, beta, derivatives)

    def _forward_blocked(self, tau: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, k: int) -> list[torch.Tensor]:
        """`_forward_inplace` over blocks of time points whose [k+1, B, n, H] buffer stays cache-sized.

        Every time point is independent, so splitting along N changes no number; it keeps large queries
        (hundreds of points for a whole batch) from streaming their buffers through main memory.
        """
        batch, n = gamma.shape[0], tau.shape[-1]
        block = max(1, _BLOCK_ELEMENTS // ((k + 1) * batch * self.width))
        if n <= block:
            return self._forward_inplace(tau, gamma, beta, k)
        parts = [
            self._forward_inplace(tau[..., start : start + block], gamma, beta, k) for start in range(0, n, block)
        ]
        return [torch.cat([p[order] for p in parts], dim=1) for order in range(k + 1)]

    def _prepare(
        self, tau: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor
    ) -> tuple[torch.dtype, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The compute dtype, τ as [B, N], ω₀(1+γ) (applied to W h of every order) and ω₀β, both [B, L, H]."""
        dtype = _compute_dtype(tau, gamma, beta, self.readout.weight)
        tau = tau.to(dtype)
        if tau.ndim == 1:
            tau = tau.unsqueeze(0).expand(gamma.shape[0], -1)
        return dtype, tau, self.omega_0 * (1.0 + gamma.to(dtype)), self.omega_0 * beta.to(dtype)

    def _forward(self, tau: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, k: int) -> list[torch.Tensor]:
        dtype, tau, scale, shift = self._prepare(tau, gamma, beta)
        batch, n = tau.shape
        omega = self.omega_0

        # Layer 1 has a scalar input, so W h is an outer product: W h⁽⁰⁾ = τ w, W h⁽⁰⁾' = w, higher orders 0.
        first = self.layers[0]
        w0 = first.weight.to(dtype)[:, 0]  # [H]
        s0 = scale[:, 0].unsqueeze(1)  # [B, 1, H]
        u = s0 * (tau.unsqueeze(-1) * w0) + (omega * first.bias.to(dtype) + shift[:, 0]).unsqueeze(1)  # [B, N, H]
        sin_u = torch.sin(u)
        hs = [sin_u]  # h, h', h'', h''' of the current layer
        if k >= 1:
            du = (s0 * w0).expand(batch, n, -1)  # u' is constant in τ
            cos_u = torch.cos(u)
            hs.append(cos_u * du)
            if k >= 2:
                du2 = du * du
                hs.append(-sin_u * du2)
                if k >= 3:
                    hs.append(-cos_u * du2 * du)

        for index in range(1, self.num_layers):
            layer = self.layers[index]
            stacked = torch.stack(hs, dim=0)  # [k+1, B, N, H]
            wh = torch.matmul(stacked, layer.weight.to(dtype).t())  # one product for every order
            sc = scale[:, index].unsqueeze(1)  # [B, 1, H]
            us = wh * sc  # u, u', u'', u''' without the bias
            u = us[0] + (omega * layer.bias.to(dtype) + shift[:, index]).unsqueeze(1)
            sin_u = torch.sin(u)
            hs = [sin_u]
            if k >= 1:
                cos_u = torch.cos(u)
                du = us[1]
                hs.append(cos_u * du)
                if k >= 2:
                    du2 = du * du
                    d2u = us[2]
                    hs.append(cos_u * d2u - sin_u * du2)
                    if k >= 3:
                        hs.append(cos_u * (us[3] - du2 * du) - 3.0 * sin_u * du * d2u)

        stacked = torch.stack(hs, dim=0)  # [k+1, B, N, H]
        out = torch.matmul(stacked, self.readout.weight.to(dtype).t())  # [k+1, B, N, D]
        return [out[0] + self.readout.bias.to(dtype)] + [out[i] for i in range(1, k + 1)]

    def _forward_inplace(self, tau: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, k: int) -> list[torch.Tensor]:
        """The same numbers as `_forward`, without autograd.

        Every order of a layer is updated in place inside one [k+1, B, N, H] buffer, so large-N queries are
        not dominated by allocating temporaries. Used whenever no gradient is needed (inference, control).
        """
        dtype, tau, scale, shift = self._prepare(tau, gamma, beta)
        batch, n = tau.shape
        omega = self.omega_0

        first = self.layers[0]
        du = (scale[:, 0] * first.weight.to(dtype)[:, 0]).unsqueeze(1)  # [B, 1, H]: layer 1's u', constant in τ
        ys = torch.empty((k + 1, batch, n, self.width), dtype=dtype, device=gamma.device)
        torch.mul(tau.unsqueeze(-1), du, out=ys[0])
        ys[0].add_((omega * first.bias.to(dtype) + shift[:, 0]).unsqueeze(1))
        cos_u = torch.cos(ys[0]) if k >= 1 else None
        ys[0].sin_()  # h = sin u
        if k >= 1:
            torch.mul(cos_u, du, out=ys[1])
        if k >= 2:
            torch.mul(ys[0], -(du * du), out=ys[2])
        if k >= 3:
            torch.mul(cos_u, -(du * du * du), out=ys[3])

        for index in range(1, self.num_layers):
            layer = self.layers[index]
            ys = torch.matmul(ys, layer.weight.to(dtype).t())  # W h of every order, one product
            ys.mul_(scale[:, index].unsqueeze(1))  # now u and its derivatives, bias still missing on order 0
            ys[0].add_((omega * layer.bias.to(dtype) + shift[:, index]).unsqueeze(1))
            if k == 0:
                ys[0].sin_()
                continue
            cos_u = torch.cos(ys[0])
            ys[0].sin_()
            sin_u, du = ys[0], ys[1]
            du2 = du * du if k >= 2 else None
            if k >= 3:  # third order: cos u (u3 - u1^3) - 3 sin u u1 u2
                ys[3].addcmul_(du2, du, value=-1.0).mul_(cos_u)
                ys[3].addcmul_(sin_u * du, ys[2], value=-3.0)
            if k >= 2:  # second order: cos u u2 - sin u u1^2
                ys[2].mul_(cos_u).addcmul_(sin_u, du2, value=-1.0)
            du.mul_(cos_u)  # first order: cos u u1

        out = torch.matmul(ys, self.readout.weight.to(dtype).t())
        out[0].add_(self.readout.bias.to(dtype))
        return list(out.unbind(0))

    def extra_repr(self) -> str:
        return f"layers={self.num_layers}, width={self.width}, omega_0={self.omega_0}, out_dim={self.out_dim}"


__all__ = ["SineLinear", "SirenReadout", "ModulatedSiren", "MAX_DERIVATIVE_ORDER"]
