"""Throughput of the CALVIN and LIBERO loaders: first build vs. cached, samples/s into torch tensors with images.

    python benchmarks/bench_data_sim.py [--threads 2] [--chunk-size 10] [--frames 256] [--demos 6]

Writes synthetic data in the release layouts into a temporary folder (CALVIN: copies of the real frame
``../shared/fixtures/calvin/episode_0358482.npz`` when present, else random arrays of the same schema; LIBERO:
one ``*_demo.hdf5`` of 128x128 images, written with h5py), then for each format prints

  * build [s] and build [samples/s]: first ``load_*`` call (read files, validate, chunk, PNG-encode, write Arrow);
  * cached open [ms]: the same call again (fingerprint hit, memory-mapped Arrow);
  * torch [samples/s]: iterating the cached dataset with ``with_format("torch")`` through a
    ``torch.utils.data.DataLoader`` (batch 32, main process), images decoded to uint8 [3, H, W] tensors.

CALVIN rows use ``mode="lang"`` over 64-frame annotated windows (overlapping by half), both cameras
(200x200 + 84x84); LIBERO rows both 128x128 cameras with the 180° flip.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the synthetic-data writers shared with the tests

from data_factories import (  # noqa: E402
    CALVIN_FRAME_KEYS,
    libero_demo_arrays,
    write_calvin_split,
    write_libero_hdf5,
)
from niaf_train.data.calvin import load_calvin  # noqa: E402
from niaf_train.data.libero import load_libero  # noqa: E402

REAL_FRAME = REPO.parent / "shared" / "fixtures"


def calvin_frame() -> tuple[dict[str, np.ndarray], str]:
    path = REAL_FRAME / "calvin" / "episode_0358482.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in CALVIN_FRAME_KEYS}, "real frame copies"
    rng = np.random.default_rng(0)
    shapes = {"actions": (7,), "rel_actions": (7,), "robot_obs": (15,), "scene_obs": (24,)}
    frame = {k: rng.normal(size=s) for k, s in shapes.items()}
    frame["rgb_static"] = rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)
    frame["rgb_gripper"] = rng.integers(0, 256, (84, 84, 3), dtype=np.uint8)
    frame["rgb_tactile"] = rng.integers(0, 256, (160, 120, 6), dtype=np.uint8)
    frame["depth_static"] = rng.random((200, 200), dtype=np.float32)
    frame["depth_gripper"] = rng.random((84, 84), dtype=np.float32)
    frame["depth_tactile"] = rng.random((160, 120, 2), dtype=np.float32)
    return frame, "random frames (shared fixture not found)"


def measure(name: str, load, batch: int = 32) -> None:
    start = time.perf_counter()
    ds = load()
    build = time.perf_counter() - start
    start = time.perf_counter()
    ds = load()
    cached = time.perf_counter() - start
    loader = torch.utils.data.DataLoader(ds.with_format("torch"), batch_size=batch, num_workers=0)
    start = time.perf_counter()
    seen = 0
    dtypes: set[str] = set()
    for rows in loader:
        image_keys = [k for k in rows if k.startswith("observation.images.")]
        assert image_keys and all(rows[k].ndim == 4 and rows[k].shape[1] == 3 for k in image_keys)
        dtypes.update(str(rows[k].dtype).removeprefix("torch.") for k in image_keys)
        seen += rows["action"].shape[0]
    read = time.perf_counter() - start
    assert seen == len(ds)
    print(
        f"{name:<28} {len(ds):>8} {build:>10.2f} {len(ds) / build:>16.1f} {cached * 1e3:>16.1f} "
        f"{len(ds) / read:>16.1f} {','.join(sorted(dtypes)):>12}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chunk-size", type=int, default=10)
    parser.add_argument("--frames", type=int, default=256, help="CALVIN frames (one segment)")
    parser.add_argument("--demos", type=int, default=6, help="LIBERO demos of 100 steps")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import datasets

    datasets.disable_progress_bars()
    logging.getLogger("niaf_train").setLevel(logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="niaf-bench-data-") as tmp:
        tmp = Path(tmp)
        frame, origin = calvin_frame()
        n = args.frames
        windows = [(s, s + 63, f"instruction {i}", "task") for i, s in enumerate(range(0, n - 63, 32))]
        t0 = time.perf_counter()
        write_calvin_split(tmp / "calvin" / "training", frame, segments=[(0, n - 1)], annotations=windows)
        calvin_write = time.perf_counter() - t0
        demos = {f"demo_{i}": libero_demo_arrays(100, seed=i) for i in range(args.demos)}
        t0 = time.perf_counter()
        write_libero_hdf5(tmp / "libero" / "task_demo.hdf5", demos, "put the bowl on the plate")
        libero_write = time.perf_counter() - t0

        print(
            f"CALVIN: {n} frames ({origin}, written in {calvin_write:.1f} s), {len(windows)} lang windows of 64; "
            f"LIBERO: {args.demos} demos x 100 steps 128x128 (written in {libero_write:.1f} s); "
            f"K={args.chunk_size}, {args.threads} threads"
        )
        print(
            f"{'loader':<28} {'samples':>8} {'build [s]':>10} {'build [samples/s]':>16} {'cached open [ms]':>16} "
            f"{'torch [samples/s]':>16} {'image dtype':>12}"
        )
        cache = tmp / "cache"
        measure(
            "calvin lang (2 cams)",
            lambda: load_calvin(tmp / "calvin", chunk_size=args.chunk_size, cache_dir=cache),
        )
        measure(
            "calvin all (2 cams)",
            lambda: load_calvin(tmp / "calvin", chunk_size=args.chunk_size, mode="all", cache_dir=cache),
        )
        measure(
            "calvin lang raw images",
            lambda: load_calvin(
                tmp / "calvin", chunk_size=args.chunk_size, cache_dir=cache, image_format="raw"
            ),
        )
        measure(
            "libero hdf5 (2 cams)",
            lambda: load_libero(tmp / "libero", chunk_size=args.chunk_size, cache_dir=cache),
        )
        measure(
            "libero hdf5 raw images",
            lambda: load_libero(
                tmp / "libero", chunk_size=args.chunk_size, cache_dir=cache, image_format="raw"
            ),
        )


if __name__ == "__main__":
    main()
