"""Data-loading throughput: samples per second into torch tensors, first build vs cached.

Builds small synthetic datasets in a temporary folder (nothing is downloaded) and, per loader, measures

* ``build_s``: the first ``load_*`` call (validation, chunking, PNG encoding, Arrow writing);
* ``cached_load_s``: the second call (fingerprint hit, memory-mapped Arrow);
* ``samples_per_s``: iterating the cached dataset through ``niaf_train.data.chunking.with_torch_format`` and a
  ``torch.utils.data.DataLoader`` (batch 32), images decoded to uint8 [3, H, W] tensors;
* ``samples_per_s_with_format_torch``: the same with datasets' ``with_format("torch")`` (first 256 samples).

Set ``--torch-threads 1`` (default) on a shared CPU: see ``with_torch_format``'s throughput note.

Usage::

    python benchmarks/bench_data.py [--episodes 20] [--length 100] [--image-size 128] [--workers 0]

Rows: ``episodes`` (build_chunk_dataset from in-memory episodes) and ``lerobot`` (a LeRobot v3 folder written
by write_lerobot_dataset, read by load_lerobot). The CALVIN/LIBERO loaders can be added as rows the same
way once synthetic writers for them are shared.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from niaf_train.data.chunking import build_chunk_dataset, with_torch_format
from niaf_train.data.episodes import Episode
from niaf_train.data.lerobot_v3 import load_lerobot, write_lerobot_dataset


def synthetic_episodes(n: int, length: int, size: int, seed: int = 0) -> list[Episode]:
    """Smooth images (compress like camera frames, unlike noise) and random-walk actions."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    out = []
    for i in range(n):
        frames = np.empty((length, size, size, 3), np.uint8)
        for t in range(length):
            for c in range(3):
                frames[t, :, :, c] = (127 + 100 * np.sin(xx / (7 + c) + t * 0.1 + i) * np.cos(yy / 11)).astype(np.uint8)
        out.append(Episode(
            episode_id=str(i), source="bench", instruction=f"task {i % 5}", fps=30.0,
            actions=np.cumsum(rng.normal(size=(length, 7)), 0).astype(np.float32),
            states=rng.normal(size=(length, 8)).astype(np.float32),
            velocities=rng.normal(size=(length, 7)).astype(np.float32),
            images={"image": frames, "wrist": frames[:, ::-1].copy()},
        ))
    return out


def throughput(ds, batch_size: int, workers: int, limit: int | None = None) -> float:
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=workers)
    n = 0
    start = time.perf_counter()
    for batch in loader:
        n += batch["action"].shape[0]
        assert batch["observation.images.image"].dtype == torch.uint8
        if limit is not None and n >= limit:
            break
    return n / (time.perf_counter() - start)


def bench(name: str, loader_fn, batch_size: int, workers: int) -> dict:
    t0 = time.perf_counter()
    ds = loader_fn()
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    ds = loader_fn()
    cached = time.perf_counter() - t0
    rate = throughput(with_torch_format(ds), batch_size, workers)
    # datasets' own torch formatter, on a subset
    plain = throughput(ds.with_format("torch"), batch_size, workers, limit=256)
    return {"loader": name, "samples": len(ds), "build_s": round(build, 2), "cached_load_s": round(cached, 3),
            "samples_per_s": round(rate, 1), "samples_per_s_with_format_torch": round(plain, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--length", type=int, default=100)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--chunk-size", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--torch-threads", type=int, default=1,
                   help="intra-op threads of the main process (default 1: with a busy shared CPU, torch.stack "
                        "of small tensors on 2 OpenMP threads was measured 700x slower than on 1)")
    args = p.parse_args()
    torch.set_num_threads(args.torch_threads)
    eps = synthetic_episodes(args.episodes, args.length, args.image_size)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows.append(bench("episodes", lambda: build_chunk_dataset(
            lambda: eps, args.chunk_size, cache_dir=tmp / "cache", fingerprint_parts=["bench"]),
            args.batch_size, args.workers))
        t0 = time.perf_counter()
        write_lerobot_dataset(tmp / "lerobot", eps, fps=30, robot_type="bench")
        write_s = time.perf_counter() - t0
        row = bench("lerobot", lambda: load_lerobot(tmp / "lerobot", args.chunk_size, cache_dir=tmp / "cache"),
                    args.batch_size, args.workers)
        row["write_lerobot_s"] = round(write_s, 2)
        rows.append(row)
    print(json.dumps({"torch_threads": args.torch_threads, "cpu_count": os.cpu_count(),
                      "load_average": os.getloadavg()[0], "image_size": args.image_size, "cameras": 2, "chunk_size": args.chunk_size,
                      "workers": args.workers, "batch_size": args.batch_size, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
