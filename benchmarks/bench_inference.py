"""Inference latency: NIAF's generate_actions vs transformers' PI0 sample_actions (10 flow-matching steps).

Both use the same PaliGemma backbone config (small or medium), random weights, 1 camera, CPU.

    python benchmarks/bench_inference.py [--sizes small medium] [--batches 1 8] [--groups 64 8] [--repeats 5]

Prints per setting: NIAF total, NIAF backbone (one pass), NIAF head (ψ + SIREN at 50 points with 3
derivatives), π0 latency, and the ratios. Targets: NIAF ≤ 0.3× π0 at batch 1; head ≤ 5% of NIAF's total.
Timings are medians after one warm-up call; on a shared machine they are noisy. NIAF's backbone pass carries
the prompt plus Q = 3·(G+1) query tokens, so ``--groups`` shows how the query count sets its latency.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

SIZES = {
    "small": dict(hidden=256, layers=4, heads=4, vision_hidden=128, vision_layers=2, image=112),
    "medium": dict(hidden=512, layers=8, heads=8, vision_hidden=256, vision_layers=4, image=224),
}
CHUNK, ACTION_DIM, STATE_DIM, PATCH, VOCAB, IMAGE_TOKEN = 50, 7, 8, 14, 1000, 999


def paligemma_config(size: dict) -> dict:
    from niaf_train.tiny import tiny_backbone_config

    return tiny_backbone_config(size["hidden"], size["layers"], size["image"], PATCH, vocab_size=VOCAB,
                                num_heads=size["heads"], mlp_ratio=4, vision_hidden_size=size["vision_hidden"],
                                vision_layers=size["vision_layers"], vision_heads=4)


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def build_niaf(size: dict, groups: int = 64):
    from modeling_niaf import NiafConfig, NiafForActionFunction

    config = NiafConfig(backbone_config=paligemma_config(size), action_dim=ACTION_DIM, chunk_size=CHUNK,
                        control_hz=50.0, use_state=True, state_dim=STATE_DIM,
                        modulation_groups=groups)  # L=3, H=256; G=64 is the paper's default (Q = 195)
    return NiafForActionFunction(config).eval()


def build_pi0(size: dict):
    from transformers import PI0Config, PI0ForConditionalGeneration

    vlm = paligemma_config(size)
    text = vlm["text_config"]
    dit = {"model_type": "gemma", "vocab_size": VOCAB, "hidden_size": text["hidden_size"] // 2,
           "intermediate_size": 2 * text["hidden_size"], "num_hidden_layers": text["num_hidden_layers"],
           "num_attention_heads": text["num_attention_heads"], "num_key_value_heads": 1, "head_dim": text["head_dim"]}
    config = PI0Config(vlm_config=vlm, dit_config=dit, chunk_size=CHUNK, max_state_dim=STATE_DIM,
                       max_action_dim=ACTION_DIM, num_inference_steps=10)
    return PI0ForConditionalGeneration(config).eval()


def inputs(size: dict, batch: int) -> dict:
    n_img = (size["image"] // PATCH) ** 2
    ids = torch.cat([torch.full((batch, n_img), IMAGE_TOKEN), torch.randint(3, 900, (batch, 12))], dim=1)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
            "pixel_values": torch.randn(batch, 1, 3, size["image"], size["image"]),
            "state": torch.randn(batch, STATE_DIM)}


@torch.no_grad()
def run(size_name: str, batch: int, repeats: int, groups: int = 64) -> dict:
    size = SIZES[size_name]
    torch.manual_seed(0)
    niaf, pi0 = build_niaf(size, groups), build_pi0(size)
    x = inputs(size, batch)
    total = timed(lambda: niaf.generate_actions(**x, denormalize=False, derivatives=3), repeats)
    backbone = timed(lambda: niaf.encode_queries(**x), repeats)
    z = niaf.encode_queries(**x)
    tau = niaf.training_tau()

    def head():
        gamma, beta = niaf.modulation_heads(z)
        niaf.siren(tau, gamma, beta, derivatives=3)

    head_ms = timed(head, repeats)
    pi0_ms = timed(lambda: pi0.sample_actions(
        state=x["state"], input_ids=x["input_ids"], pixel_values=x["pixel_values"], attention_mask=x["attention_mask"],
        pixel_attention_mask=torch.ones(batch, 1, dtype=torch.bool), num_steps=10), repeats)
    return {"size": size_name, "batch": batch, "niaf_ms": total, "backbone_ms": backbone, "head_ms": head_ms,
            "pi0_ms": pi0_ms, "queries": niaf.config.num_queries, "prompt": x["input_ids"].shape[1]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["small", "medium"], choices=list(SIZES))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--groups", nargs="+", type=int, default=[64],
                        help="G, frequency tokens per SIREN layer (Q = 3·(G+1) query tokens); 64 is the paper's")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"{'size':7} {'B':>2} {'G':>3} {'prompt+Q':>9} {'NIAF ms':>9} {'backbone':>9} {'head':>7} {'head %':>7} "
          f"{'pi0 ms':>9} {'NIAF/pi0':>9}")
    for size in args.sizes:
        for batch in args.batches:
            for groups in args.groups:
                r = run(size, batch, args.repeats, groups)
                print(f"{r['size']:7} {r['batch']:>2} {groups:>3} {r['prompt']:>4}+{r['queries']:<4} {r['niaf_ms']:9.1f} "
                      f"{r['backbone_ms']:9.1f} {r['head_ms']:7.2f} {100 * r['head_ms'] / r['niaf_ms']:6.1f}% "
                      f"{r['pi0_ms']:9.1f} {r['niaf_ms'] / r['pi0_ms']:9.2f}")


if __name__ == "__main__":
    main()
