"""Training-step cost of NIAF: step time and peak memory, split into backbone vs head + loss.

    python benchmarks/bench_train.py [--sizes tiny medium] [--repeats 5] [--threads 2]

For each size, on random inputs of the right shapes (PaliGemma-architecture backbone built from a config,
nothing downloaded), it times with the median of ``--repeats`` steps:

* ``step``: forward + losses + backward + AdamW step of the whole model;
* ``backbone``: forward + backward of the backbone alone (from the query outputs Z, with a dummy loss);
* ``head+loss``: forward + backward of the ψ heads, the SIREN at the K training points and the losses, from
  a detached Z (this is everything NIAF adds on top of the backbone);
* ``optimizer``: the AdamW step alone;

for position-only training (simulation recipe) and for position + velocity + jerk (real-robot recipe, three
closed-form derivatives). Each size runs in its own process so that the reported peak memory (peak RSS on
CPU, ``torch.cuda.max_memory_allocated`` on GPU) belongs to that configuration alone.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

SIZES = {
    # the embedded default of `niaf-train` (train/configs/default.yaml)
    "tiny": dict(hidden=64, layers=2, image=32, patch=8, siren_width=64, groups=16, chunk=8, batch=32, text=12),
    # a PaliGemma-shaped model at about a tenth of the real width: 256 image tokens + text + 195 queries
    "medium": dict(hidden=512, layers=6, image=224, patch=14, siren_width=256, groups=64, chunk=10, batch=8, text=24),
}
IMAGE_TOKEN = 511
ACTION_DIM = 7


def backbone_config(size: dict) -> dict:
    from niaf_train.tiny import tiny_backbone_config

    return tiny_backbone_config(size["hidden"], size["layers"], size["image"], size["patch"], vocab_size=512,
                                num_heads=max(1, size["hidden"] // 64), mlp_ratio=4)


def time_recipe(size: dict, inputs: dict, targets: dict, weights: tuple[float, float], repeats: int, device: str):
    """Median seconds of a full step and of its parts for one loss recipe (λ_v, λ_j); also Q and #params."""
    import torch

    from modeling_niaf import NiafConfig, NiafForActionFunction

    w_vel, w_jerk = weights
    K = size["chunk"]
    config = NiafConfig(
        backbone_config=backbone_config(size), action_dim=ACTION_DIM, chunk_size=K, control_hz=20.0,
        siren_width=size["siren_width"], modulation_groups=size["groups"],
        loss_weight_velocity=w_vel, loss_weight_jerk=w_jerk,
    )
    model = NiafForActionFunction(config).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    batch_targets = dict(targets) if w_vel else {"actions": targets["actions"], "action_mask": targets["action_mask"]}
    tau = model.training_tau(device)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    def full_step():
        opt.zero_grad(set_to_none=True)
        model(**inputs, **batch_targets).loss.backward()
        opt.step()
        sync()

    def backbone_only():
        model.zero_grad(set_to_none=True)
        z = model.encode_queries(**inputs)
        z.float().pow(2).mean().backward()
        sync()

    with torch.no_grad():
        z_fixed = model.encode_queries(**inputs).detach()

    def head_and_loss():
        model.zero_grad(set_to_none=True)
        z = z_fixed.clone().requires_grad_(True)
        gamma, beta = model.modulation_heads(z)
        order = 3 if w_jerk else 0
        values = model.siren(tau, gamma, beta, derivatives=order)
        loss = (values[0] - batch_targets["actions"]).pow(2).sum(-1).mean()
        if w_jerk:
            s = config.tau_to_seconds
            loss = loss + w_vel * (values[1] * s - batch_targets["velocities"]).pow(2).sum(-1).mean()
            loss = loss + w_jerk * (values[3] * s**3).pow(2).sum(-1).mean()
        loss.backward()
        sync()

    def optimizer_only():
        opt.step()
        sync()

    timings = {}
    for label, fn in (("step", full_step), ("backbone", backbone_only), ("head+loss", head_and_loss), ("optimizer", optimizer_only)):
        fn()  # warm-up
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - start)
        timings[label] = statistics.median(samples)
    timings["head+loss share"] = timings["head+loss"] / timings["step"]
    params = round(sum(p.numel() for p in model.parameters()) / 1e6, 2)
    return timings, config.num_queries, params


def run_size(name: str, repeats: int, threads: int) -> dict:
    import torch


    torch.set_num_threads(threads)
    torch.manual_seed(0)
    size = SIZES[name]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    n_img = (size["image"] // size["patch"]) ** 2
    batch = size["batch"]
    ids = torch.cat(
        [torch.full((batch, n_img), IMAGE_TOKEN), torch.randint(3, 500, (batch, size["text"]))], dim=1
    ).to(device)
    inputs = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "pixel_values": torch.randn(batch, 1, 3, size["image"], size["image"], device=device),
    }
    K = size["chunk"]
    targets = {
        "actions": torch.randn(batch, K, ACTION_DIM, device=device) * 0.5,
        "velocities": torch.randn(batch, K, ACTION_DIM, device=device),
        "action_mask": torch.ones(batch, K, dtype=torch.bool, device=device),
    }
    results: dict = {"size": name, "batch": batch, "tokens": ids.shape[1], "device": device}
    for recipe, weights in {"pos": (0.0, 0.0), "pos+vel+jerk": (1e-2, 1e-12)}.items():
        results[recipe], results["queries"], results["parameters_M"] = time_recipe(
            size, inputs, targets, weights, repeats, device
        )
    if device == "cuda":
        results["peak_memory_MiB"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    else:
        results["peak_memory_MiB"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["tiny", "medium"], choices=sorted(SIZES))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_size(args.child, args.repeats, args.threads)))
        return

    print(f"NIAF training step, PaliGemma-architecture backbone, median of {args.repeats}, {args.threads} threads")
    print(f"{'size':>7} {'recipe':>13} {'B':>3} {'tokens':>6} {'step [ms]':>10} {'backbone':>9} {'head+loss':>10} "
          f"{'optim':>7} {'head share':>10} {'peak MiB':>9}")
    for name in args.sizes:
        cmd = [sys.executable, __file__, "--child", name, "--repeats", str(args.repeats), "--threads", str(args.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        r = json.loads(out)
        for recipe in ("pos", "pos+vel+jerk"):
            t = r[recipe]
            print(
                f"{name:>7} {recipe:>13} {r['batch']:>3} {r['tokens'] + r['queries']:>6} {t['step'] * 1e3:>10.1f} "
                f"{t['backbone'] * 1e3:>9.1f} {t['head+loss'] * 1e3:>10.2f} {t['optimizer'] * 1e3:>7.1f} "
                f"{t['head+loss share'] * 100:>9.1f}% {r['peak_memory_MiB']:>9.0f}"
            )
    print("tokens = prompt (image + text) + Q query tokens; head+loss = ψ heads + SIREN + losses, forward + backward")


if __name__ == "__main__":
    main()
