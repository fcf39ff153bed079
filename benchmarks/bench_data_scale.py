"""Data loading at scale: a synthetic LeRobot v3 dataset of ~10^6 frames, its chunk cache and its read speed.

Generates a LeRobot v3.0 folder (PNG frames inside the data parquet, the way ``write_lerobot_dataset`` stores
images; nothing is downloaded) into ``OUT/lerobot``, then measures, each phase in a fresh Python process so that
its peak memory is its own:

* ``generate``: writing the dataset. By default directly with pyarrow, in the layout ``write_lerobot_dataset``
  writes (one row group per episode, data files of ~100 MB, the same features and names), from a bank of 512
  pre-encoded PNG frames, so that generating 10^6 frames takes minutes; ``--writer`` uses
  ``write_lerobot_dataset`` itself (PNG-encodes every frame and computes stats.json: about 10x slower);
* ``build``: the first ``load_lerobot`` call, i.e. the chunk-cache build (validation, chunking, PNG re-encoding,
  Arrow writing) into ``OUT/cache``;
* ``cached``: the second ``load_lerobot`` call (fingerprint hit, memory-mapped Arrow);
* ``map/W``: samples/s of the cached dataset through ``with_torch_format`` and a shuffled ``DataLoader``
  (batch 32) with W = 0 and W = ``--workers`` worker processes, images decoded to uint8 [3, H, W] tensors;
* ``stream/W``: the same for ``load_lerobot(..., streaming=True).with_format("torch")`` (no cache; the
  episodes are read, chunked and encoded on the fly, split over the workers by shard).

Memory: the parent samples the phase's whole process tree (the phase process and its DataLoader workers) every
200 ms from ``/proc/PID/smaps_rollup`` and reports the peak of the summed proportional set size (``pss``: pages
shared by several processes, such as the workers' copy-on-write pages of their parent, split between them, so
each page counts once; it includes the touched pages of the memory-mapped Arrow cache and of the parquet files,
file-backed and reclaimable, which grow with what was read) and the peak of the summed anonymous PSS (``anon``:
the heap, what would grow if something held all frames in memory). ``maxrss`` is the kernel's high-water mark
of the phase process and its children (``wait4``; the largest single process, shared pages counted in full).
``cpu_s`` is the phase's user + system CPU time (its DataLoader workers included): on a shared machine it
varies less than the wall-clock ``seconds``. Read rates exclude the first batch (worker start-up);
``first_batch_s`` gives it.

Why 32 px and one camera: the image size of the tiny model; the run stays within ~25 minutes on a shared 2-core
machine at 10^6 frames (each frame is PNG-encoded twice: by the writer and by the cache build), and the per-frame
work (decode, re-encode, Arrow rows) that could fail to scale is the same as at 224 px, only cheaper.

    python benchmarks/bench_data_scale.py OUT --frames 1000000      # the 10^6-frame run
    python benchmarks/bench_data_scale.py OUT --frames 100000       # 10^5, to compare the peak memory
    python benchmarks/bench_data_scale.py OUT --reduced             # a few thousand frames in-process (CI)

``OUT`` must not exist or be empty; the script never deletes anything in it. It prints a table and writes JSON
(``--out``, default ``OUT/bench_data_scale.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

PHASES = ("generate", "build", "cached", "map", "stream")
FPS = 20.0
ACTION_DIM, STATE_DIM = 7, 8


# ------------------------------------------------------------------------------------------------------------
# Memory of a process tree, from /proc (Linux)
# ------------------------------------------------------------------------------------------------------------
def _memory_kib(pid: int) -> tuple[int, int]:
    """(Pss, Pss_Anon) of a process in KiB from ``/proc/PID/smaps_rollup`` (VmRSS, RssAnon from ``status`` on
    kernels without it); (0, 0) when the process is gone. PSS splits pages shared between processes (DataLoader
    workers share their parent's pages copy-on-write), so the sum over a process tree counts each page once."""
    values = {}
    try:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    key, _, rest = line.partition(":")
                    if key in ("Pss", "Pss_Anon"):
                        values[key] = int(rest.split()[0])
            return values.get("Pss", 0), values.get("Pss_Anon", 0)
        except FileNotFoundError:
            if not os.path.exists(f"/proc/{pid}"):
                raise
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "RssAnon"):
                    values[key] = int(rest.split()[0])
        return values.get("VmRSS", 0), values.get("RssAnon", 0)
    except (FileNotFoundError, ProcessLookupError, PermissionError, ValueError):
        return 0, 0


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (children listed by every thread of each process)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return out


class TreeMemory:
    """Samples the summed PSS / anonymous PSS of a process tree in a thread (:func:`_memory_kib`); peaks in bytes."""

    def __init__(self, pid: int, period_s: float = 0.2) -> None:
        self.pid, self.period_s = pid, period_s
        self.peak_pss = self.peak_anon = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        pss = anon = 0
        for p in _tree(self.pid):
            r, a = _memory_kib(p)
            pss, anon = pss + r, anon + a
        self.peak_pss = max(self.peak_pss, pss * 1024)
        self.peak_anon = max(self.peak_anon, anon * 1024)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.period_s)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


# ------------------------------------------------------------------------------------------------------------
# Synthetic episodes
# ------------------------------------------------------------------------------------------------------------
def episode_lengths(frames: int, mean_length: int, seed: int = 0) -> list[int]:
    """Lengths in [mean/2, 3·mean/2] (the last one cut, and >= 2) summing to exactly ``frames``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    lengths: list[int] = []
    total = 0
    while total < frames:
        n = int(rng.integers(max(2, mean_length // 2), mean_length * 3 // 2 + 1))
        n = min(n, frames - total)
        if n < 2:  # a one-frame remainder joins the previous episode
            lengths[-1] += n
        else:
            lengths.append(n)
        total += n
    return lengths


def frame_bank(image_size: int) -> Any:
    """uint8 [8, 64, H, W, 3]: 8 scenes x 64 phases of smooth moving patterns (they compress like camera frames,
    unlike noise); frame t of an episode of scene v is ``bank[v, t % 64]``."""
    import numpy as np

    yy, xx = np.mgrid[0:image_size, 0:image_size] / max(image_size / 32, 1)
    bank = np.empty((8, 64, image_size, image_size, 3), np.uint8)
    for v in range(8):
        for t in range(64):
            for c in range(3):
                bank[v, t, :, :, c] = 127 + 100 * np.sin(xx / (5 + c + v) + t * 0.1 + v) * np.cos(yy / (7 + v) - t * 0.05)
    return bank


def synthetic_episodes(frames: int, mean_length: int, image_size: int, cameras: int, seed: int = 0) -> Callable[[], Iterator[Any]]:
    """A factory of episodes (made one at a time) totalling ``frames`` frames: smooth moving images that
    compress like camera frames, random-walk actions, states and velocities, 10 task texts."""
    import numpy as np
    from niaf_train.data.episodes import Episode

    lengths = episode_lengths(frames, mean_length, seed)
    bank = frame_bank(image_size)

    def make() -> Iterator[Episode]:
        rng = np.random.default_rng(seed)
        for i, n in enumerate(lengths):
            t = (np.arange(n) + i) % 64
            actions = np.cumsum(rng.normal(scale=0.05, size=(n, ACTION_DIM)), 0).astype(np.float32)
            yield Episode(
                episode_id=str(i), source="bench_data_scale", instruction=f"task {i % 10}", fps=FPS,
                actions=actions, states=rng.normal(size=(n, STATE_DIM)).astype(np.float32),
                velocities=np.gradient(actions, 1 / FPS, axis=0).astype(np.float32),
                images={f"cam{c}": bank[(i + c) % 8][t] for c in range(cameras)},
            )

    make.episodes = len(lengths)  # type: ignore[attr-defined]
    return make


# ------------------------------------------------------------------------------------------------------------
# Phases (each returns a dict of measurements)
# ------------------------------------------------------------------------------------------------------------
def write_synthetic_lerobot(root: Path, frames: int, mean_length: int, image_size: int, cameras: int,
                            seed: int = 0, data_files_size_in_mb: float = 100.0) -> int:
    """Write a LeRobot v3.0 folder of ``frames`` frames with pyarrow, laid out like ``write_lerobot_dataset``'s
    output (features, names, one row group per episode, a new data file every ~``data_files_size_in_mb``), the
    images taken from a bank of 8 scenes x 64 phases of PNG bytes encoded once. No stats.json (no loader reads
    it). Returns the number of episodes."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from niaf_train.data.chunking import encode_png

    lengths = episode_lengths(frames, mean_length, seed)
    bank = [[encode_png(frame) for frame in scene] for scene in frame_bank(image_size)]
    cams = [f"observation.images.cam{c}" for c in range(cameras)]
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema(
        [("action", pa.list_(pa.float32(), ACTION_DIM)), ("observation.state", pa.list_(pa.float32(), STATE_DIM)),
         ("observation.velocity", pa.list_(pa.float32(), ACTION_DIM))]
        + [(k, image_type) for k in cams]
        + [("timestamp", pa.float32()), ("frame_index", pa.int64()), ("episode_index", pa.int64()),
           ("index", pa.int64()), ("task_index", pa.int64())]
    )
    rng = np.random.default_rng(seed)
    writer = None
    file_index = file_bytes = start = 0
    rows = []
    for e, n in enumerate(lengths):
        if writer is None:
            path = root / f"data/chunk-000/file-{file_index:03d}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            writer = pq.ParquetWriter(path, schema)
        actions = np.cumsum(rng.normal(scale=0.05, size=(n, ACTION_DIM)), 0).astype(np.float32)
        velocity = np.gradient(actions, 1 / FPS, axis=0).astype(np.float32)
        state = rng.normal(size=(n, STATE_DIM)).astype(np.float32)
        cols = {
            "action": pa.FixedSizeListArray.from_arrays(pa.array(actions.ravel()), ACTION_DIM),
            "observation.state": pa.FixedSizeListArray.from_arrays(pa.array(state.ravel()), STATE_DIM),
            "observation.velocity": pa.FixedSizeListArray.from_arrays(pa.array(velocity.ravel()), ACTION_DIM),
        }
        names = pa.array([f"frame-{t:06d}.png" for t in range(n)], pa.string())
        for c, key in enumerate(cams):
            scene = bank[(e + c) % 8]
            pngs = [scene[(t + e) % 64] for t in range(n)]
            file_bytes += sum(len(b) for b in pngs)
            cols[key] = pa.StructArray.from_arrays([pa.array(pngs, pa.binary()), names], names=["bytes", "path"])
        cols["timestamp"] = pa.array((np.arange(n) / FPS).astype(np.float32))
        cols["frame_index"] = pa.array(np.arange(n, dtype=np.int64))
        cols["episode_index"] = pa.array(np.full(n, e, np.int64))
        cols["index"] = pa.array(np.arange(start, start + n, dtype=np.int64))
        cols["task_index"] = pa.array(np.full(n, e % 10, np.int64))
        writer.write_table(pa.Table.from_pydict(cols, schema=schema))
        file_bytes += 4 * n * (2 * ACTION_DIM + STATE_DIM + 6)
        rows.append({"episode_index": e, "tasks": [f"task {e % 10}"], "length": n, "data/chunk_index": 0,
                     "data/file_index": file_index, "dataset_from_index": start, "dataset_to_index": start + n,
                     "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
        start += n
        if file_bytes >= data_files_size_in_mb * 1e6:
            writer.close()
            writer, file_bytes, file_index = None, 0, file_index + 1
    if writer is not None:
        writer.close()
    (root / "meta/episodes/chunk-000").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), root / "meta/episodes/chunk-000/file-000.parquet")
    pq.write_table(pa.table({"task_index": list(range(10)), "task": [f"task {i}" for i in range(10)]}),
                   root / "meta/tasks.parquet")
    features: dict[str, Any] = {
        "action": {"dtype": "float32", "shape": [ACTION_DIM], "names": [f"a{i}" for i in range(ACTION_DIM)]},
        "observation.state": {"dtype": "float32", "shape": [STATE_DIM], "names": [f"s{i}" for i in range(STATE_DIM)]},
        "observation.velocity": {"dtype": "float32", "shape": [ACTION_DIM],
                                 "names": [f"a{i}.vel" for i in range(ACTION_DIM)]},
        **{k: {"dtype": "image", "shape": [image_size, image_size, 3], "names": ["height", "width", "channels"]}
           for k in cams},
        **{k: {"dtype": dt, "shape": [1], "names": None} for k, dt in (
            ("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"), ("index", "int64"),
            ("task_index", "int64"))},
    }
    info = {"codebase_version": "v3.0", "robot_type": "bench", "total_episodes": len(lengths), "total_frames": frames,
            "total_tasks": 10, "chunks_size": 1000, "data_files_size_in_mb": data_files_size_in_mb,
            "video_files_size_in_mb": 200, "fps": int(FPS), "splits": {"train": f"0:{len(lengths)}"},
            "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet", "video_path": None,
            "features": features}
    (root / "meta/info.json").write_text(json.dumps(info, indent=4))
    return len(lengths)


def phase_generate(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(args.root) / "lerobot"
    start = time.perf_counter()
    if args.writer:
        from niaf_train.data.lerobot_v3 import write_lerobot_dataset

        factory = synthetic_episodes(args.frames, args.episode_length, args.image_size, args.cameras)
        write_lerobot_dataset(root, factory(), fps=FPS, robot_type="bench", total_episodes=factory.episodes)
        episodes = factory.episodes
    else:
        episodes = write_synthetic_lerobot(root, args.frames, args.episode_length, args.image_size, args.cameras)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "frames_per_s": args.frames / seconds, "episodes": episodes,
            "disk_bytes": folder_bytes(root)}


def _load(args: argparse.Namespace, streaming: bool = False) -> Any:
    from niaf_train.data.lerobot_v3 import load_lerobot

    return load_lerobot(Path(args.root) / "lerobot", args.chunk_size, cache_dir=Path(args.root) / "cache",
                        streaming=streaming)


def phase_build(args: argparse.Namespace) -> dict[str, Any]:
    start = time.perf_counter()
    ds = _load(args)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "samples": len(ds), "samples_per_s": len(ds) / seconds,
            "disk_bytes": folder_bytes(Path(args.root) / "cache")}


def phase_cached(args: argparse.Namespace) -> dict[str, Any]:
    start = time.perf_counter()
    ds = _load(args)
    return {"seconds": time.perf_counter() - start, "samples": len(ds)}


def _read(dataset: Any, args: argparse.Namespace, workers: int, shuffle: bool) -> dict[str, Any]:
    import torch

    generator = torch.Generator().manual_seed(0) if shuffle else None
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, num_workers=workers,
                                         shuffle=shuffle, generator=generator)
    start = time.perf_counter()
    first = None
    n = n_first = 0
    for batch in loader:
        images = [v for k, v in batch.items() if k.startswith("observation.images.")]
        assert images and all(v.dtype == torch.uint8 and v.shape[1] == 3 for v in images)
        n += batch["action"].shape[0]
        if first is None:
            first, n_first = time.perf_counter(), n
        if n >= args.read_samples:
            break
    end = time.perf_counter()
    return {"samples": n, "first_batch_s": first - start,
            "samples_per_s": (n - n_first) / (end - first) if end > first else float("nan"),
            "seconds": end - start}


def phase_map(args: argparse.Namespace) -> dict[str, Any]:
    from niaf_train.data.chunking import with_torch_format

    return _read(with_torch_format(_load(args)), args, args.phase_workers, shuffle=True)


def phase_stream(args: argparse.Namespace) -> dict[str, Any]:
    return _read(_load(args, streaming=True).with_format("torch"), args, args.phase_workers, shuffle=False)


PHASE_FUNCTIONS = {"generate": phase_generate, "build": phase_build, "cached": phase_cached,
                   "map": phase_map, "stream": phase_stream}


def run_phase_here(args: argparse.Namespace) -> dict[str, Any]:
    """Run ``args.phase`` in this process (the child side of a measured phase)."""
    import torch

    torch.set_num_threads(1)
    return PHASE_FUNCTIONS[args.phase](args)


# ------------------------------------------------------------------------------------------------------------
# Orchestration
# ------------------------------------------------------------------------------------------------------------
PASS_THROUGH = ("frames", "image_size", "cameras", "episode_length", "chunk_size", "batch_size", "read_samples")


def _cpu_s(usage: Any) -> float:
    return float(usage.ru_utime + usage.ru_stime)


def measure(args: argparse.Namespace, phase: str, workers: int = 0) -> dict[str, Any]:
    """One phase with its time and memory: in a fresh process (default), or in this one (``--in-process``)."""
    label = phase if phase in ("generate", "build", "cached") else f"{phase}/{workers}"
    if args.in_process:
        sub = argparse.Namespace(**{**vars(args), "phase": phase, "phase_workers": workers})
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        cpu0 = _cpu_s(resource.getrusage(resource.RUSAGE_SELF)) + _cpu_s(resource.getrusage(resource.RUSAGE_CHILDREN))
        with TreeMemory(os.getpid()) as mem:
            result = run_phase_here(sub)
        cpu = _cpu_s(resource.getrusage(resource.RUSAGE_SELF)) + _cpu_s(resource.getrusage(resource.RUSAGE_CHILDREN)) - cpu0
        maxrss = max(before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                     resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) * 1024
    else:
        cmd = [sys.executable, os.path.abspath(__file__), args.root, "--phase", phase, "--phase-workers", str(workers)]
        for key in PASS_THROUGH:
            cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
        cmd += ["--writer"] if args.writer else []
        env = dict(os.environ, TQDM_DISABLE="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, text=True)
        with TreeMemory(proc.pid) as mem:
            out = proc.stdout.read()
            _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise SystemExit(f"bench_data_scale: phase {label} failed (exit {proc.returncode}); see its output above")
        result = json.loads(out.strip().splitlines()[-1])
        maxrss = usage.ru_maxrss * 1024
        cpu = _cpu_s(usage)
    row = {"phase": label, **result, "cpu_s": cpu, "peak_pss_bytes": mem.peak_pss, "peak_anon_bytes": mem.peak_anon,
           "maxrss_bytes": maxrss}
    print(f"  {label}: done in {result['seconds']:.1f} s", file=sys.stderr, flush=True)
    return row


def _mib(b: float | None) -> str:
    return "" if b is None else f"{b / 2**20:,.0f}"


def table(rows: list[dict[str, Any]]) -> str:
    head = f"{'phase':<10} {'seconds':>9} {'CPU s':>7} {'samples/s':>10} {'disk MiB':>9} {'peak PSS MiB':>13} {'peak anon MiB':>14} {'maxrss MiB':>11}"
    lines = [head, "-" * len(head)]
    for r in rows:
        rate = r.get("samples_per_s", r.get("frames_per_s"))
        lines.append(
            f"{r['phase']:<10} {r['seconds']:>9.1f} {r['cpu_s']:>7.1f} {'' if rate is None else f'{rate:,.0f}':>10} "
            f"{_mib(r.get('disk_bytes')):>9} {_mib(r['peak_pss_bytes']):>13} {_mib(r['peak_anon_bytes']):>14} "
            f"{_mib(r['maxrss_bytes']):>11}"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", help="output folder (must not exist or be empty; nothing in it is ever deleted)")
    p.add_argument("--frames", type=int, default=1_000_000)
    p.add_argument("--image-size", type=int, default=32, help="square frames, px")
    p.add_argument("--cameras", type=int, default=1)
    p.add_argument("--episode-length", type=int, default=200, help="mean frames per episode (lengths vary ±50 %%)")
    p.add_argument("--chunk-size", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--read-samples", type=int, default=20_000, help="samples read per map/stream measurement")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the second map/stream row")
    p.add_argument("--writer", action="store_true",
                   help="generate with write_lerobot_dataset (encodes every frame; ~10x slower) instead of pyarrow")
    p.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES))
    p.add_argument("--in-process", action="store_true", help="run the phases in this process (no per-phase memory)")
    p.add_argument("--reduced", action="store_true",
                   help="CI mode: 2,000 frames, 16 px, 128 samples read, in-process")
    p.add_argument("--out", default=None, help="JSON path (default OUT/bench_data_scale.json)")
    p.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    p.add_argument("--phase-workers", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.reduced:
        args.frames, args.image_size, args.episode_length, args.read_samples = 2000, 16, 100, 128
        args.in_process = True
    for name in ("frames", "image_size", "cameras", "episode_length", "batch_size", "read_samples"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.frames < 2 or args.chunk_size < 2 or args.workers < 0:
        p.error("--frames and --chunk-size must be >= 2 and --workers >= 0")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    root = Path(args.root)
    if args.phase is not None:  # the child side of one measured phase
        print(json.dumps(run_phase_here(args)))
        return {}
    if "generate" in args.phases:
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise SystemExit(f"bench_data_scale: {root} exists and is not an empty folder; name a new one (nothing is "
                             "deleted)")
    elif not (root / "lerobot" / "meta" / "info.json").is_file():
        raise SystemExit(f"bench_data_scale: {root / 'lerobot'} holds no generated dataset; include the generate phase")
    root.mkdir(parents=True, exist_ok=True)
    args.root = str(root.resolve())
    rows = []
    for phase in args.phases:
        for workers in (0, args.workers) if phase in ("map", "stream") and args.workers else (0,):
            rows.append(measure(args, phase, workers))
    result = {
        "config": {k: getattr(args, k) for k in (*PASS_THROUGH, "workers", "in_process", "writer")},
        "machine": {"cpu_count": os.cpu_count(), "load_average_1min": os.getloadavg()[0],
                    "python": platform.python_version(), "platform": platform.platform()},
        "rows": rows,
    }
    print(table(rows))
    out = Path(args.out) if args.out else root / "bench_data_scale.json"
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
