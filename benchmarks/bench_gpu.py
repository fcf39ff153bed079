"""Real-size benchmark of NIAF on a published backbone architecture (random weights, nothing downloaded).

Measures, on the chosen device:

* training: step time, samples/s and peak memory of forward + backward + AdamW, bf16 autocast, optionally LoRA
  (``--lora``) and gradient checkpointing (``--checkpointing``), at each ``--batches`` size;
* inference at batch 1: ``generate_actions`` (backbone once + ψ heads + SIREN at 50 points, 3 derivatives)
  against one bare backbone pass (the backbone's own forward on the same prompt, no query tokens) and against
  transformers' ``PI0ForConditionalGeneration.sample_actions`` (10 flow-matching steps) on the same PaliGemma
  backbone. Targets: NIAF ≤ 0.3× π0 and ≤ 1.05× one backbone pass;
* ``--memory-table``: the analytical training-memory estimate (see :func:`estimate_memory`) for every published
  backbone, and, where it measured, the estimate next to the measurement.

It prints a table and writes JSON (``--out``, default ``bench_gpu.json``).

    python benchmarks/bench_gpu.py                                   # GPU: PaliGemma-3B-224, LoRA, B = 1 2 4 8
    python benchmarks/bench_gpu.py --backbone smolvlm-256m --device cpu --lora --checkpointing --batches 1 2 4
    python benchmarks/bench_gpu.py --reduced                         # CPU, tiny backbone: what CI runs

Peak memory: ``torch.cuda.max_memory_allocated`` on a GPU (weights included); on a CPU the process's peak
resident memory (VmHWM) during the warm-up and timed steps minus the resident memory right after the model was
built, i.e. gradients + optimizer state + activations on top of the weights (the allocator keeps freed memory, so
a baseline taken between steps would hide the working set). Inference uses the PaliGemma backbone for
the π0 comparison, since transformers' PI0 is built on PaliGemma; with another ``--backbone`` the π0 column is
left out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

ACTION_DIM, CHUNK, STATE_DIM, TEXT_TOKENS = 7, 50, 8, 20


# ------------------------------------------------------------------------------------------------------------
# Models and inputs
# ------------------------------------------------------------------------------------------------------------
def backbone_config(name: str) -> Any:
    if name == "tiny":
        from niaf_train.tiny import tiny_backbone_config
        from transformers import AutoConfig

        values = tiny_backbone_config(64, num_layers=2, image_size=56, patch_size=14, vocab_size=512)
        values = dict(values)
        return AutoConfig.for_model(values.pop("model_type"), **values)
    from modeling_niaf.published_backbones import published_backbone_config

    return published_backbone_config(name)


def image_side(name: str) -> int:
    if name == "tiny":
        return 56
    from modeling_niaf.published_backbones import published_backbone

    return published_backbone(name).image_size


def build_niaf(name: str, groups: int, device: str, use_state: bool = True) -> Any:
    from configuration_niaf import NiafConfig
    from modeling_niaf import NiafForActionFunction

    config = NiafConfig(backbone_config=backbone_config(name), action_dim=ACTION_DIM, chunk_size=CHUNK,
                        control_hz=50.0, use_state=use_state, state_dim=STATE_DIM, modulation_groups=groups)
    with torch.device(device):
        return NiafForActionFunction(config)


def make_inputs(model: Any, name: str, batch: int, device: str) -> dict[str, torch.Tensor]:
    """Raw model inputs for one camera at the backbone's pretraining resolution, a 20-token instruction."""
    bb = model.config.backbone_config
    family = model.backbone_family
    side = image_side(name)
    text = torch.randint(10, 400, (batch, TEXT_TOKENS))
    out: dict[str, torch.Tensor] = {}
    if family.pixel_layout == "patches":
        vision = bb.vision_config
        patch, merge, temporal = vision.patch_size, vision.spatial_merge_size, vision.temporal_patch_size
        grid = side // patch
        n_img = grid * grid // (merge * merge)
        image = [bb.vision_start_token_id] + [bb.image_token_id] * n_img + [bb.vision_end_token_id]
        out["pixel_values"] = torch.randn(batch * grid * grid, 3 * temporal * patch * patch)
        out["image_grid_thw"] = torch.tensor([[1, grid, grid]] * batch)
    else:
        if family.name == "florence2":
            stride = 1
            for s in bb.vision_config.patch_stride:
                stride *= s
            n_img = (side // stride) ** 2 + 1
        else:
            n_img = family.image_seq_length(bb)
        token = getattr(bb, "image_token_id", None)
        token = getattr(bb, "image_token_index", None) if token is None else token
        image = [token] * n_img
        out["pixel_values"] = torch.randn(batch, 1, 3, side, side)
    ids = torch.cat([torch.tensor([image] * batch), text], dim=1)
    out.update(input_ids=ids, attention_mask=torch.ones_like(ids))
    if model.config.use_state:
        out["state"] = torch.randn(batch, STATE_DIM)
    return {k: v.to(device) for k, v in out.items()}


# ------------------------------------------------------------------------------------------------------------
# Memory measurement
# ------------------------------------------------------------------------------------------------------------
def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class PeakMemory:
    """Peak memory of a block: CUDA allocator peak, or on CPU (Linux) the resident-set peak above the start."""

    def __init__(self, device: str, baseline: int | None = None) -> None:
        self.cuda = device.startswith("cuda")
        self.bytes = 0
        self.baseline = baseline  # CPU: the resident memory to count from (e.g. right after the model was built)

    def __enter__(self) -> PeakMemory:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        else:
            try:  # "5" resets VmHWM to the current RSS (Linux >= 4.0)
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                pass
            self.start = _rss_kib("VmRSS") * 1024 if self.baseline is None else self.baseline
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self.bytes = torch.cuda.max_memory_allocated() - self.start
            self.total = torch.cuda.max_memory_allocated()
        else:
            self.bytes = _rss_kib("VmHWM") * 1024 - self.start
            self.total = _rss_kib("VmHWM") * 1024


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Any, repeats: int, device: str) -> float:
    fn()  # warm-up
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


# ------------------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------------------
def bench_training(name: str, batches: list[int], device: str, lora: bool, checkpointing: bool, groups: int,
                   steps: int, lora_r: int = 16) -> list[dict[str, Any]]:
    from niaf_train.training.loop import set_activation_checkpointing

    torch.manual_seed(0)
    model = build_niaf(name, groups, device, use_state=False)
    if checkpointing:
        set_activation_checkpointing(model.backbone, True)
    if lora:
        from niaf_train.training.lora import apply_lora

        model = apply_lora(model, lora_r, 2 * lora_r, 0.0, None)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    dtype = torch.bfloat16
    n_total = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in params)
    rows = []
    built = _rss_kib("VmRSS") * 1024
    for batch in batches:
        base = model.get_base_model() if lora else model
        x = make_inputs(base, name, batch, device)
        x["actions"] = torch.rand(batch, CHUNK, ACTION_DIM, device=device) * 2 - 1

        def step(x: dict[str, torch.Tensor] = x) -> None:
            with torch.autocast(device_type=device.split(":")[0], dtype=dtype):
                out = model(**x)
            out.loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        with PeakMemory(device, None if device.startswith("cuda") else built) as peak:
            step()  # warm-up, creates the optimizer state
            ms = timed(step, steps, device) if steps > 1 else None
        rows.append({"backbone": name, "device": device, "batch": batch, "lora": lora, "checkpointing": checkpointing,
                     "parameters": n_total, "trainable": n_train, "step_ms": ms,
                     "samples_per_s": (1e3 * batch / ms) if ms else None,
                     "peak_step_bytes": peak.bytes, "peak_total_bytes": peak.total,
                     "prompt_tokens": x["input_ids"].shape[1], "queries": base.config.num_queries})
    return rows


# ------------------------------------------------------------------------------------------------------------
# Inference
# ------------------------------------------------------------------------------------------------------------
def build_pi0(name: str, device: str) -> Any:
    from transformers import PI0Config, PI0ForConditionalGeneration

    vlm = backbone_config(name).to_dict()
    text = vlm["text_config"]
    # the action expert: half the VLM's width, a quarter of its MLP width (π0's Gemma-300M expert on Gemma-2B:
    # width 1024, MLP 4096), same layers / KV heads / head_dim (reference/backbones.md)
    dit = {"model_type": "gemma", "vocab_size": text["vocab_size"], "hidden_size": text["hidden_size"] // 2,
           "intermediate_size": text["intermediate_size"] // 4, "num_hidden_layers": text["num_hidden_layers"],
           "num_attention_heads": text["num_attention_heads"], "num_key_value_heads": text["num_key_value_heads"],
           "head_dim": text["head_dim"]}
    config = PI0Config(vlm_config=vlm, dit_config=dit, chunk_size=CHUNK, max_state_dim=STATE_DIM,
                       max_action_dim=ACTION_DIM, num_inference_steps=10)
    with torch.device(device):
        return PI0ForConditionalGeneration(config).eval()


@torch.no_grad()
def bench_inference(name: str, device: str, groups: int, repeats: int, dtype: torch.dtype) -> dict[str, Any]:
    torch.manual_seed(0)
    model = build_niaf(name, groups, device).eval()
    model.backbone.to(dtype)
    x = make_inputs(model, name, 1, device)
    x = {k: v.to(dtype) if v.is_floating_point() and k == "pixel_values" else v for k, v in x.items()}
    niaf_ms = timed(lambda: model.generate_actions(**x, denormalize=False, derivatives=3), repeats, device)
    bare = {k: v for k, v in x.items() if k != "state"}
    family = model.backbone_family
    if family.pixel_layout == "per_camera" and not family.multi_image_native:
        bare["pixel_values"] = bare["pixel_values"].flatten(0, 1)  # one camera: [B, 3, H, W]
    if family.encoder_decoder:  # the backbone's own encoder-decoder pass, one decoder token
        bare["decoder_input_ids"] = torch.zeros(1, 1, dtype=torch.long, device=device)
    backbone_ms = timed(lambda: model.backbone(**bare), repeats, device)
    row: dict[str, Any] = {"backbone": name, "device": device, "batch": 1, "dtype": str(dtype).replace("torch.", ""),
                           "niaf_ms": niaf_ms, "backbone_ms": backbone_ms, "queries": model.config.num_queries,
                           "prompt_tokens": x["input_ids"].shape[1], "pi0_ms": None}
    if backbone_config(name).model_type == "paligemma":
        pi0 = build_pi0(name, device).to(dtype)
        row["pi0_ms"] = timed(lambda: pi0.sample_actions(
            state=x["state"].to(dtype), input_ids=x["input_ids"], pixel_values=x["pixel_values"],
            attention_mask=x["attention_mask"], pixel_attention_mask=torch.ones(1, 1, dtype=torch.bool, device=device),
            num_steps=10), repeats, device)
    row["niaf_over_backbone"] = niaf_ms / backbone_ms
    row["niaf_over_pi0"] = niaf_ms / row["pi0_ms"] if row["pi0_ms"] else None
    return row


# ------------------------------------------------------------------------------------------------------------
# Analytical memory
# ------------------------------------------------------------------------------------------------------------
def estimate_memory(name: str, batch: int, lora: bool, checkpointing: bool = True, lora_r: int = 16,
                    frozen_bytes: int = 2, groups: int = 64) -> dict[str, float]:
    """Training memory (bytes) of NIAF on a published backbone, AdamW, bf16 autocast, one camera.

    * weights: full fine-tuning keeps float32 master weights (4 B) + float32 gradients (4 B) + AdamW moments
      (8 B) = 16 B per parameter; LoRA keeps the frozen backbone at ``frozen_bytes`` (2: stored in bf16,
      ``--model.torch_dtype bfloat16``) and 16 B per trainable parameter (LoRA on the language model's attention
      projections, the NIAF head in full);
    * activations, with gradient checkpointing: the residual stream saved at every language-model layer
      (2 B per value under autocast) plus one layer recomputed in backward (≈ 10·H + 4·I values per token at
      2 B); the vision tower: under LoRA it runs without grad (one layer's working set), under full fine-tuning
      its activations are kept (≈ 14·H_v + 2·I_v values per token per layer, 2 B), since NIAF checkpoints only
      the language model;
    * without checkpointing every language-model layer keeps ≈ 14·H + 3·I values per token.

    Attention is assumed memory-efficient (SDPA / flash: no L² score matrix kept).
    """
    config = backbone_config(name)
    model = build_niaf(name, groups, "meta", use_state=False)
    total = sum(p.numel() for p in model.parameters())
    text = config.text_config
    hidden = getattr(text, "hidden_size", None) or text.d_model
    inter = getattr(text, "intermediate_size", None) or text.encoder_ffn_dim
    layers = getattr(text, "num_hidden_layers", None) or (text.encoder_layers + text.decoder_layers)
    vision = config.vision_config
    x = make_inputs(model, name, 1, "meta")
    tokens = x["input_ids"].shape[1] + model.config.num_queries
    # vision tower: (tokens, width, MLP width, layers) per stage; DaViT (Florence-2) has 4 stages
    if hasattr(vision, "depths"):
        stages, stride = [], 1
        for depth, dim, s in zip(vision.depths, vision.embed_dim, vision.patch_stride, strict=True):
            stride *= s
            stages.append(((image_side(name) // stride) ** 2, dim, int(vision.mlp_ratio * dim), depth))
    else:
        v_hidden = vision.hidden_size
        v_layers = getattr(vision, "num_hidden_layers", None) or vision.depth
        stages = [((image_side(name) // vision.patch_size) ** 2, v_hidden, vision.intermediate_size, v_layers)]
    v_layer = [2 * n * (14 * d + 2 * i) for n, d, i, _ in stages]  # one layer's activations per stage (bytes)
    head = total - sum(p.numel() for p in model.backbone.parameters())
    if lora:
        kv = getattr(text, "num_key_value_heads", None) or getattr(text, "num_attention_heads", 1)
        heads = getattr(text, "num_attention_heads", None) or text.encoder_attention_heads
        kv_dim = hidden * kv // heads
        per_layer = lora_r * ((hidden + hidden) * 2 + (hidden + kv_dim) * 2)  # q, o and k, v
        trainable = layers * per_layer + head
        static = frozen_bytes * (total - head) + 16 * trainable
        vision_act = max(v_layer)  # one layer live, no grad
    else:
        trainable = total
        static = 16 * total
        vision_act = sum(a * st[3] for a, st in zip(v_layer, stages, strict=True))
    if checkpointing:
        text_act = 2 * tokens * (layers * hidden + 10 * hidden + 4 * inter)
    else:
        text_act = 2 * tokens * layers * (14 * hidden + 3 * inter)
    activations = batch * (text_act + vision_act)
    return {"parameters": total, "trainable": trainable, "static_bytes": static, "activation_bytes": activations,
            "total_bytes": static + activations}


GPUS = (("24 GB (L4, RTX 4090)", 24e9), ("40 GB (A100-40GB)", 40e9), ("80 GB (A100/H100)", 80e9),
        ("141 GB (H200)", 141e9))


def smallest_gpu(total_bytes: float) -> str:
    for label, size in GPUS:
        if total_bytes * 1.15 <= size:  # ~15 % for the allocator, CUDA context and fragmentation
            return label
    return "FSDP over several 80 GB GPUs"


# ------------------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------------------
def _gib(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**30:.2f}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="paligemma-3b-224", help="a published backbone name or 'tiny'")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--lora", action="store_true")
    parser.add_argument("--checkpointing", action="store_true")
    parser.add_argument("--groups", type=int, default=64, help="G (Q = 3·(G+1) query tokens)")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per batch size (median)")
    parser.add_argument("--repeats", type=int, default=10, help="timed inference calls (median)")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--skip-inference", action="store_true")
    parser.add_argument("--memory-table", action="store_true", help="print the analytical memory table")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--reduced", action="store_true",
                        help="CI mode: tiny backbone on CPU, batches 1 2, 2 steps, 2 repeats")
    parser.add_argument("--out", default="bench_gpu.json")
    args = parser.parse_args(argv)
    if args.reduced:
        args.backbone, args.device, args.batches, args.steps, args.repeats = "tiny", "cpu", [1, 2], 2, 2
        args.groups, args.lora, args.checkpointing = 8, True, True
    if args.threads:
        torch.set_num_threads(args.threads)
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu",
        "torch": torch.__version__, "threads": torch.get_num_threads(), "args": vars(args),
        "training": [], "inference": None, "memory_table": [],
    }
    if not args.skip_training:
        result["training"] = bench_training(args.backbone, args.batches, args.device, args.lora, args.checkpointing,
                                            args.groups, args.steps)
        print(f"\ntraining ({args.backbone}, {result['device']}, bf16 autocast, LoRA={args.lora}, "
              f"checkpointing={args.checkpointing})")
        print(f"{'B':>3} {'step ms':>9} {'samples/s':>10} {'peak GiB (step)':>16} {'estimate GiB':>13}")
        for row in result["training"]:
            est = None
            if args.backbone != "tiny":
                # the measured run keeps the frozen weights in float32 (4 B): estimate that, minus the weights
                e = estimate_memory(args.backbone, row["batch"], args.lora, args.checkpointing, frozen_bytes=4,
                                    groups=args.groups)
                est = e["total_bytes"] - 4 * row["parameters"] if args.device == "cpu" else e["total_bytes"]
                row["estimate_bytes"] = est
            ms = "-" if row["step_ms"] is None else f"{row['step_ms']:.0f}"
            sps = "-" if row["samples_per_s"] is None else f"{row['samples_per_s']:.2f}"
            print(f"{row['batch']:>3} {ms:>9} {sps:>10} {_gib(row['peak_step_bytes']):>16} {_gib(est):>13}")
    if not args.skip_inference:
        dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
        row = bench_inference(args.backbone, args.device, args.groups, args.repeats, dtype)
        result["inference"] = row
        pi0 = "-" if row["pi0_ms"] is None else f"{row['pi0_ms']:.1f}"
        ratio = "-" if row["niaf_over_pi0"] is None else f"{row['niaf_over_pi0']:.2f}"
        print(f"\ninference, batch 1 ({row['dtype']}, prompt {row['prompt_tokens']} + Q {row['queries']})")
        print(f"{'NIAF ms':>9} {'backbone ms':>12} {'pi0 ms':>9} {'NIAF/backbone':>14} {'NIAF/pi0':>9}   targets 1.05 / 0.3")
        print(f"{row['niaf_ms']:9.1f} {row['backbone_ms']:12.1f} {pi0:>9} {row['niaf_over_backbone']:14.2f} {ratio:>9}")
    if args.memory_table:
        from modeling_niaf.published_backbones import PUBLISHED_BACKBONES

        print("\nanalytical training memory, bf16, AdamW, gradient checkpointing (GiB)")
        print(f"{'backbone':18} {'params':>7} {'full B=8':>9} {'full B=32':>10} {'LoRA B=8':>9} {'LoRA B=32':>10}  GPU (full / LoRA B=8)")
        for name in PUBLISHED_BACKBONES:
            cells = {(lora, b): estimate_memory(name, b, lora)["total_bytes"] for lora in (False, True) for b in (8, 32)}
            n = estimate_memory(name, 1, False)["parameters"]
            result["memory_table"].append({"backbone": name, "parameters": n,
                                           **{f"{'lora' if k[0] else 'full'}_b{k[1]}_bytes": v for k, v in cells.items()}})
            print(f"{name:18} {n / 1e9:6.2f}B {_gib(cells[False, 8]):>9} {_gib(cells[False, 32]):>10} "
                  f"{_gib(cells[True, 8]):>9} {_gib(cells[True, 32]):>10}  {smallest_gpu(cells[False, 8])} / "
                  f"{smallest_gpu(cells[True, 8])}")
    Path(args.out).write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"\nwrote {os.path.abspath(args.out)}")
    return result


if __name__ == "__main__":
    main()
