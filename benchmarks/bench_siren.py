"""Cost of the SIREN head: position only vs. closed-form derivatives vs. autograd; numpy single-query latency.

    python benchmarks/bench_siren.py [--threads 2] [--repeats 20]

Prints, for B = 32 and N ∈ {10, 200, 1000}, the median time of
  * position only (derivatives=0),
  * position + velocity + acceleration + jerk in closed form (derivatives=3, one pass),
  * the same three derivatives by autograd, two ways: nested forward-mode `torch.func.jvp` (the cheapest
    autograd route for a scalar input) and nested reverse-mode `torch.autograd.grad` with create_graph
    (one backward per output dimension and order, what a training loop would write by hand),
and the ratios (best of ``--repeats`` runs, the estimate least disturbed by other load); then the numpy
evaluator's single-query latency (B = 1, one time point), median and p99 in µs, through ``__call__`` and
through the control-loop hot path ``NumpyActionFunction.at``.
Head size: the paper's defaults (L = 3, H = 256, G = 64), D = 7.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.func import jvp

from modeling_niaf import ActionFunction, NiafConfig
from modeling_niaf.siren import ModulatedSiren


def best_time(fn, repeats: int, warmup: int = 3) -> float:
    """Fastest of ``repeats`` runs: other load on the machine only ever adds time, so the minimum is the
    estimate least disturbed by it (medians are printed for the single-query latency below)."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return min(samples)


def time_head(siren, gamma: torch.Tensor, beta: torch.Tensor, n: int, repeats: int) -> tuple[float, float, float, float]:
    """Median seconds for: position only, closed-form 3 derivatives, nested jvp, nested reverse-mode grad."""
    tau = torch.linspace(-1, 1, n)
    ones = torch.ones_like(tau)

    def position():
        with torch.no_grad():
            siren(tau, gamma, beta, derivatives=0)

    def closed():
        with torch.no_grad():
            siren(tau, gamma, beta, derivatives=3)

    def phi(t):
        return siren(t, gamma, beta, derivatives=0)[0]

    def d1(t):
        return jvp(phi, (t,), (ones,))[1]

    def d2(t):
        return jvp(d1, (t,), (ones,))[1]

    def by_jvp():
        with torch.no_grad():
            phi(tau), d1(tau), d2(tau), jvp(d2, (tau,), (ones,))[1]

    def by_grad():
        t = tau.clone().requires_grad_(True)
        out = phi(t)
        for d in range(out.shape[-1]):
            value = out[..., d]
            for _ in range(3):
                (value,) = torch.autograd.grad(value.sum(), t, create_graph=True)

    return (
        best_time(position, repeats),
        best_time(closed, repeats),
        best_time(by_jvp, max(3, repeats // 2)),
        best_time(by_grad, max(3, repeats // 4)),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    config = NiafConfig(siren_layers=3, siren_width=256, modulation_groups=64, action_dim=7)
    siren = ModulatedSiren(config).eval()
    for p in siren.parameters():
        p.requires_grad_(False)
    B = args.batch
    gamma = torch.randn(B, 3, 256) * 0.1
    beta = torch.randn(B, 3, 256) * 0.1

    print(f"SIREN head L=3 H=256 D=7, B={B}, float32, {args.threads} threads, best of {args.repeats}")
    header = f"{'N':>6} {'pos [ms]':>9} {'pos+3 der [ms]':>15} {'jvp [ms]':>9} {'grad [ms]':>10} {'der/pos':>8} {'jvp/closed':>11} {'grad/closed':>12}"
    print(header)
    for n in (10, 200, 1000):
        t_pos, t_closed, t_jvp, t_grad = time_head(siren, gamma, beta, n, args.repeats)
        print(
            f"{n:>6} {t_pos * 1e3:>9.3f} {t_closed * 1e3:>15.3f} {t_jvp * 1e3:>9.3f} {t_grad * 1e3:>10.3f} "
            f"{t_closed / t_pos:>8.2f} {t_jvp / t_closed:>11.1f} {t_grad / t_closed:>12.1f}"
        )

    fn = ActionFunction(siren, gamma[:1], beta[:1], config.chunk_duration, chunk_size=config.chunk_size)
    twin = fn.to_numpy()
    rng = np.random.default_rng(0)
    queries = rng.uniform(0, config.chunk_duration, size=2000)
    for derivatives in (1, 3):
        for label, query in (
            ("__call__ (ActionTrajectory)", lambda q, d=derivatives: twin(times=q, derivatives=d)),
            ("at() hot path", lambda q, d=derivatives: twin.at(q, derivatives=d)),
        ):
            lat = []
            for q in queries:
                start = time.perf_counter()
                query(q)
                lat.append(time.perf_counter() - start)
            lat_us = np.array(lat[100:]) * 1e6
            print(
                f"numpy single query {label}, B=1, derivatives={derivatives}: median {np.median(lat_us):.1f} µs, "
                f"p99 {np.percentile(lat_us, 99):.1f} µs"
            )


if __name__ == "__main__":
    main()
