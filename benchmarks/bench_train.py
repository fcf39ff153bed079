"""Training-step cost of NIAF: step time and peak memory, split into backbone vs head + loss.

    python benchmarks/bench_train.py [--sizes tiny medium] [--repeats 5] [--threads 2]
    python benchmarks/bench_train.py --end-to-end [--config train/configs/default.yaml] [--steps 60] [--compile]

``--end-to-end`` times the training step the way ``niaf-train`` runs it, on the real chunk dataset of a
training config (the embedded default: Meta-World demonstrations, generated once and cached): the same
processor, model, optimiser, seeded sampler and DataLoader with the run's :class:`Collator` (a real chunk
batch → processor → model inputs), then forward + losses + backward + gradient clipping + AdamW step + the
loop's loss bookkeeping. It reports the medians of the data time (DataLoader + collator + processor), the
compute time and the whole step, after a few warm-up steps (``--compile``: ``torch.compile`` of the model,
``--backend``). Accelerate's wrapping is left out (one process, CPU or one GPU). The mode works on older
checkouts too (it feature-detects the collator's ``check``), so a commit can be timed against its parent.

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


def end_to_end(config_path: str, steps: int, warmup: int, threads: int, compile_model: bool, backend: str) -> dict:
    """Median data / compute / step seconds of ``niaf-train``'s training step on the config's real chunk data."""
    import inspect
    import math

    import numpy as np
    import torch
    from niaf_train.data.chunking import with_torch_format
    from niaf_train.data.stats import stats_from_chunk_dataset, to_normalization_stats
    from niaf_train.training import loop
    from niaf_train.training.arguments import load_config
    from niaf_train.training.building import build_processor_and_model, head_parameter
    from niaf_train.training.collation import Collator, EpochSampler
    from niaf_train.training.dataset import dataset_layout, load_chunks, split_episodes

    torch.set_num_threads(threads)
    cfg = load_config(config_path, [])
    t, d, m = cfg.training, cfg.data, cfg.model
    torch.manual_seed(t.seed)
    dataset = load_chunks(cfg)
    layout = dataset_layout(dataset)
    if d.cameras:
        layout["cameras"] = [c if c.startswith("observation.images.") else f"observation.images.{c}" for c in d.cameras]
    train_rows, _ = split_episodes(dataset, d.val_fraction, t.seed)
    train_stats = stats_from_chunk_dataset(dataset.select(train_rows), relative_action_state_indices=m.relative_action_state_indices)
    stats = {k: v for k, v in to_normalization_stats(train_stats).items() if k in ("action", "state")}
    if not m.use_state:
        stats.pop("state", None)
    tasks = sorted(set(dataset.select_columns(["task"])["task"]))
    processor, model = build_processor_and_model(cfg, layout, stats, tasks)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device).train()
    use_velocity = layout["velocity"] and m.loss_weight_velocity > 0
    collate_kwargs = {}
    if "check" in inspect.signature(Collator).parameters:  # this checkout validates on the CPU side (as niaf-train)
        collate_kwargs["check"] = model.input_value_checker()
        model.check_inputs_in_forward = False
    collate = Collator(processor, layout["cameras"], m.use_state, use_velocity, **collate_kwargs)
    loader = torch.utils.data.DataLoader(
        with_torch_format(dataset), batch_size=t.per_device_batch_size, sampler=EpochSampler(train_rows, t.seed),
        collate_fn=collate, drop_last=True, num_workers=d.num_workers,
    )
    groups = [{"params": [q for n, q in model.named_parameters() if q.requires_grad and not head_parameter(n)], "lr": t.learning_rate},
              {"params": [q for n, q in model.named_parameters() if q.requires_grad and head_parameter(n)],
               "lr": t.head_learning_rate or t.learning_rate}]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], betas=(t.adam_beta1, t.adam_beta2),
                                  eps=t.adam_epsilon, weight_decay=t.weight_decay)
    forward = torch.compile(model, backend=backend) if compile_model else model
    detached = getattr(loop, "_detached", None) or (lambda v: float(v.detach()) if isinstance(v, torch.Tensor) else float(v))
    running: dict = {}

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    data_s, compute_s = [], []
    iterator = iter(loader)
    for _ in range(warmup + steps):
        start = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            batch = next(iterator)
        batch.pop("sample_index")
        batch = {k: v.to(device) for k, v in batch.items()}
        got = time.perf_counter()
        output = forward(**batch)
        output.loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), t.max_grad_norm or math.inf)
        running["grad_norm"] = running.get("grad_norm", 0.0) + detached(norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        for name in ("loss", "loss_pos", "loss_vel", "loss_jerk"):
            value = getattr(output, name)
            if value is not None:
                running[name] = running.get(name, 0.0) + detached(value)
        sync()
        done = time.perf_counter()
        data_s.append(got - start)
        compute_s.append(done - got)
    data_s, compute_s = data_s[warmup:], compute_s[warmup:]
    step_s = [a + b for a, b in zip(data_s, compute_s, strict=True)]
    return {"config": config_path, "batch": t.per_device_batch_size, "device": device, "threads": threads,
            "compile": backend if compile_model else None, "steps": steps,
            "data_ms": 1e3 * statistics.median(data_s), "compute_ms": 1e3 * statistics.median(compute_s),
            "step_ms": 1e3 * statistics.median(step_s), "steps_per_s": 1.0 / statistics.median(step_s),
            "finite_loss": bool(np.isfinite(float(output.loss.detach())))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["tiny", "medium"], choices=sorted(SIZES))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--end-to-end", action="store_true", help="time niaf-train's step on a config's real data")
    parser.add_argument("--config", default="train/configs/default.yaml", help="training config (--end-to-end)")
    parser.add_argument("--steps", type=int, default=60, help="timed steps (--end-to-end)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed first steps (--end-to-end)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (--end-to-end)")
    parser.add_argument("--backend", default="inductor", help="torch.compile backend (--end-to-end --compile)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.end_to_end:
        r = end_to_end(args.config, args.steps, args.warmup, args.threads, args.compile, args.backend)
        print(f"niaf-train step, {r['config']}, batch {r['batch']}, {r['device']}, {r['threads']} threads, "
              f"compile: {r['compile'] or 'no'}, median of {r['steps']} steps after {args.warmup} warm-up")
        print(f"data {r['data_ms']:.1f} ms | compute {r['compute_ms']:.1f} ms | step {r['step_ms']:.1f} ms "
              f"({r['steps_per_s']:.2f} steps/s) | loss finite: {r['finite_loss']}")
        print(json.dumps(r))
        return
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
