"""Render docs/niaf_overview.png, the README's figure: the NIAF pipeline and one action function with its
analytic velocity compared with finite differences of waypoints.

    python docs/make_figure.py
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

from modeling_niaf import ActionFunction, NiafConfig  # noqa: E402
from modeling_niaf.siren import ModulatedSiren  # noqa: E402


def box(ax, xy, w, h, text, color):
    ax.add_patch(FancyBboxPatch(xy, w, h, boxstyle="round,pad=0.02", fc=color, ec="0.25", lw=1.2))
    ax.text(xy[0] + w / 2, xy[1] + h / 2, text, ha="center", va="center", fontsize=9)


def arrow(ax, a, b):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=12, lw=1.2, color="0.25"))


def main() -> None:
    fig = plt.figure(figsize=(12, 4.2))
    ax = fig.add_axes([0.0, 0.0, 0.6, 1.0])
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 5)
    ax.axis("off")
    box(ax, (0.1, 3.3), 2.0, 1.2, "camera images\n+ instruction\n(+ robot state)", "#dbe9f6")
    box(ax, (2.8, 2.2), 2.2, 2.3, "vision-language\nbackbone\n(one pass)\n\n+ Q learned\nquery tokens", "#fde3c8")
    box(ax, (5.7, 3.4), 1.9, 1.1, "ψ heads\nγ (frequency)\nβ (phase)", "#e2f0d9")
    box(ax, (5.7, 1.3), 1.9, 1.5, "shared SIREN\n(motion prior)\nsin(ω₀((1+γ)⊙Wh+b+β))", "#ead7f1")
    box(ax, (8.2, 2.0), 1.7, 1.5, "A(τ), τ∈[-1,1]\nand exact\nA′, A″, A‴", "#f8d7da")
    box(ax, (0.1, 0.4), 4.9, 1.2, "controller at any rate (e.g. 1 kHz):\nu = Kp(A(t) − q) + Kd(Ȧ(t) − q̇)", "#f2f2f2")
    arrow(ax, (2.1, 3.9), (2.8, 3.6))
    arrow(ax, (5.0, 3.9), (5.7, 3.95))
    arrow(ax, (6.65, 3.4), (6.65, 2.8))
    arrow(ax, (7.6, 2.05), (8.2, 2.6))
    arrow(ax, (9.05, 2.0), (5.0, 1.0))
    ax.text(6.8, 3.05, "γ, β per layer", fontsize=8, color="0.3")
    ax.text(2.0, 4.75, "NIAF: a policy that outputs a function of time", fontsize=11, weight="bold")

    # A small field fitted as the real-robot recipe trains it: position + velocity + a small jerk penalty
    # (position alone leaves an ω₀ = 30 SIREN free to wiggle between the supervised points).
    torch.manual_seed(4)
    config = NiafConfig(siren_layers=3, siren_width=64, modulation_groups=8, action_dim=1, chunk_size=10, control_hz=10.0)
    siren = ModulatedSiren(config).double()
    gamma = torch.zeros(1, 3, 64, dtype=torch.float64, requires_grad=True)
    beta = torch.zeros(1, 3, 64, dtype=torch.float64, requires_grad=True)
    tau = torch.linspace(-1, 1, 200, dtype=torch.float64, requires_grad=True)
    s_ = (tau + 1) / 2
    target = 0.3 * (10 * s_**3 - 15 * s_**4 + 6 * s_**5) + 0.02 * torch.sin(3 * torch.pi * s_)
    (target_vel,) = torch.autograd.grad(target.sum(), tau)
    tau, target = tau.detach(), target.detach().unsqueeze(-1)
    opt = torch.optim.Adam([gamma, beta, *siren.parameters()], lr=5e-4)
    for _ in range(2000):
        opt.zero_grad()
        pos, vel, _, jerk = (o[0] for o in siren(tau, gamma, beta, derivatives=3))
        # per-τ derivatives of an ω₀ = 30 SIREN start out huge: weight them down or Adam diverges
        loss = (pos - target).pow(2).mean() + 1e-2 * (vel[:, 0] - target_vel).pow(2).mean() + 1e-12 * jerk.pow(2).mean()
        loss.backward()
        opt.step()
    fn = ActionFunction(siren, gamma, beta, config.chunk_duration, chunk_size=config.chunk_size)
    fine = fn(num_points=400, derivatives=1).to_numpy()
    way = fn(num_points=config.chunk_size, derivatives=0).to_numpy()
    t_w, p_w = way.time, way.position[0, :, 0]
    v_fd = np.diff(p_w) / np.diff(t_w)

    a1 = fig.add_axes([0.67, 0.58, 0.31, 0.36])
    a1.plot(fine.time, fine.position[0, :, 0], color="C3", label="A(t), queried at 400 points")
    a1.plot(t_w, p_w, "o", color="k", ms=4, label="K = 10 training points")
    a1.set_ylabel("position")
    a1.legend(fontsize=7, loc="best")
    a1.set_xticklabels([])
    a2 = fig.add_axes([0.67, 0.13, 0.31, 0.36])
    a2.plot(fine.time, fine.velocity[0, :, 0], color="C3", label="analytic velocity (2/T)·dA/dτ")
    a2.step(t_w[:-1], v_fd, where="post", color="0.4", ls="--", label="finite differences of waypoints")
    a2.set_xlabel("time in chunk [s]")
    a2.set_ylabel("velocity [1/s]")
    a2.legend(fontsize=7, loc="best")
    out = Path(__file__).with_name("niaf_overview.png")
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
