"""Which Meta-World variations a checkpoint was trained on, and which ones an evaluation may use.

The held-out guarantee of ``niaf-eval`` rests on what the checkpoint says about its training data. A
checkpoint carries that in two places, both written by ``niaf-train``:

* ``training_data.json``: the ``"metaworld"`` record of the dataset's ``meta/info.json`` (benchmark seeds,
  tasks, cameras, image size, stride, the variations per task and seed);
* the model card (``README.md``), whose ``### Configuration`` block holds the run's ``data`` settings: for a
  generated Meta-World dataset the first benchmark seed and the episodes per task, hence every seed the
  generator could have drawn from (``seed + i // 50``).

Every record present is parsed strictly (:func:`check_training_record`: JSON types, ranges, seeds of the
variations among the recorded seeds) and every pair must agree (:func:`agreeing_records`); a disagreement is an
error, since a hand-edited or stale record is exactly what would let a training variation be reported as
held out. The seeds an evaluation must avoid are the union of every record's seeds. ``--train-data DATASET``
adds the dataset's own record to the ones checked.

Held-out variations: an MT1 benchmark has 50 variations. Episode i of a task runs variation ``i % 50`` of the
``i // 50``-th held-out seed (:func:`held_out_seeds`): more than 50 episodes draw new variations from the next
seed not used in training instead of repeating (and replaying) the same ones.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import stat
from pathlib import Path
from typing import Any

from ..data.metaworld import (
    STATE_KINDS,
    TRAINING_RECORD,
    VARIATIONS_PER_BENCHMARK,
    camera_crops,
    check_camera_view,
    check_instructions,
    read_provenance,
)

logger = logging.getLogger(__name__)

CARD_FILE = "README.md"
DEFAULT_EVAL_SEED = 1000
"""First benchmark seed tried for held-out variations (the next free one if training used it)."""
MAX_BENCHMARK_SEED = 2**32 - 1
"""Meta-World seeds numpy's legacy generator with the benchmark seed: 0 .. 2³² - 1."""
MAX_RECORD_BYTES = 16 << 20
"""A training record or model card larger than this is refused before it is read."""


class ProvenanceError(ValueError):
    """A training record that is malformed or disagrees with another record of the same checkpoint."""


# ------------------------------------------------------------------------------------------------------------
# One record, strictly typed
# ------------------------------------------------------------------------------------------------------------
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _seed(value: Any, where: str) -> int:
    if not _is_int(value) or not 0 <= value <= MAX_BENCHMARK_SEED:
        raise ProvenanceError(f"{where} must be a benchmark seed (an integer in 0..{MAX_BENCHMARK_SEED}), "
                              f"got {value!r}")
    return value


def _str_list(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ProvenanceError(f"{where} must be a list of non-empty strings, got {value!r}")
    return value


def check_training_record(record: Any, source: str) -> dict[str, Any]:
    """``record`` (a ``"metaworld"`` provenance record) after checking every key it has; returns it unchanged.

    Required: ``benchmark_seeds`` (a non-empty list of seeds; an older record's single ``benchmark_seed`` is
    accepted). Checked when present: ``tasks``, ``cameras`` (lists of strings), ``image_size``, ``stride``
    (positive ints), ``state`` (a Meta-World state kind), ``crop`` (boxes inside the image), ``camera_view`` (a
    camera view that fits the cameras, crop and image size), ``instructions`` (an instruction set with a sentence
    for every recorded task), ``action_noise`` (a
    finite number >= 0) and ``variations`` (task → seed as a string →
    variations 0..49; every seed and task among the recorded ones). Keys this version does not know are kept.

    Raises:
        ProvenanceError: one line naming ``source``, the key and what was expected.
    """
    if not isinstance(record, dict):
        raise ProvenanceError(f"{source}: expected a JSON object (the dataset's 'metaworld' record), "
                              f"got {type(record).__name__}")
    if "benchmark_seeds" in record:
        seeds = record["benchmark_seeds"]
        if not isinstance(seeds, list) or not seeds:
            raise ProvenanceError(f"{source}: 'benchmark_seeds' must be a non-empty list of integers, got {seeds!r}")
        for s in seeds:
            _seed(s, f"{source}: 'benchmark_seeds' entry")
        if "benchmark_seed" in record and _seed(record["benchmark_seed"], f"{source}: 'benchmark_seed'") not in seeds:
            raise ProvenanceError(f"{source}: 'benchmark_seed' {record['benchmark_seed']} is not among "
                                  f"'benchmark_seeds' {seeds}")
    elif "benchmark_seed" in record:
        _seed(record["benchmark_seed"], f"{source}: 'benchmark_seed'")
    else:
        raise ProvenanceError(f"{source}: no 'benchmark_seeds'; the record cannot say which variations were trained on")
    seeds = set(record_seeds(record))
    tasks = _str_list(record["tasks"], f"{source}: 'tasks'") if "tasks" in record else None
    if "cameras" in record:
        _str_list(record["cameras"], f"{source}: 'cameras'")
    for key in ("image_size", "stride"):
        if key in record and (not _is_int(record[key]) or record[key] < 1):
            raise ProvenanceError(f"{source}: {key!r} must be a positive integer, got {record[key]!r}")
    if "state" in record and record["state"] not in STATE_KINDS:
        raise ProvenanceError(f"{source}: 'state' must be one of {sorted(STATE_KINDS)}, got {record['state']!r}")
    if "camera_view" in record:
        try:
            check_camera_view(record["camera_view"], record.get("cameras") or ["corner2"], record.get("crop"),
                              record.get("image_size"))
        except (TypeError, ValueError) as err:
            raise ProvenanceError(f"{source}: 'camera_view': {err}") from None
    if "instructions" in record:
        try:
            check_instructions(record["instructions"], record.get("tasks") or [])
        except (TypeError, ValueError) as err:
            raise ProvenanceError(f"{source}: 'instructions': {err}") from None
    if record.get("crop") is not None:
        try:
            camera_crops(record["crop"], record.get("cameras") or ["corner2"])
        except (TypeError, ValueError) as err:
            raise ProvenanceError(f"{source}: 'crop': {err}") from None
    if "action_noise" in record:
        noise = record["action_noise"]
        if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not (math.isfinite(noise) and noise >= 0):
            raise ProvenanceError(f"{source}: 'action_noise' must be a finite number >= 0, got {noise!r}")
    if "variations" in record:
        variations = record["variations"]
        if not isinstance(variations, dict):
            raise ProvenanceError(f"{source}: 'variations' must be an object task -> seed -> list, got {variations!r}")
        for task, per_seed in variations.items():
            if tasks is not None and task not in tasks:
                raise ProvenanceError(f"{source}: 'variations' names task {task!r}, which is not in 'tasks' {tasks}")
            if not isinstance(per_seed, dict):
                raise ProvenanceError(f"{source}: 'variations'[{task!r}] must be an object seed -> list, "
                                      f"got {per_seed!r}")
            for key, values in per_seed.items():
                if not re.fullmatch(r"0|[1-9][0-9]*", key) or int(key) not in seeds:
                    raise ProvenanceError(f"{source}: 'variations'[{task!r}] has seed {key!r}, which is not among "
                                          f"'benchmark_seeds' {sorted(seeds)}")
                if not isinstance(values, list) or not all(
                        _is_int(v) and 0 <= v < VARIATIONS_PER_BENCHMARK for v in values):
                    raise ProvenanceError(f"{source}: 'variations'[{task!r}][{key!r}] must be a list of variations "
                                          f"0..{VARIATIONS_PER_BENCHMARK - 1}, got {values!r}")
    return record


def record_seeds(record: dict[str, Any] | None) -> list[int]:
    """The benchmark seeds of a checked record (sorted, without repeats)."""
    if record is None:
        return []
    if "benchmark_seeds" in record:
        return sorted(set(record["benchmark_seeds"]))
    return [record["benchmark_seed"]]


# ------------------------------------------------------------------------------------------------------------
# Every record a checkpoint carries
# ------------------------------------------------------------------------------------------------------------
def _read_text(path: Path, what: str) -> str:
    """A record file's text; a FIFO, device, oversized or undecodable file is an error naming it."""
    try:
        info = path.stat()
    except OSError as err:
        raise ProvenanceError(f"{what} {path}: cannot be read ({err.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise ProvenanceError(f"{what} {path}: not a regular file")
    if info.st_size > MAX_RECORD_BYTES:
        raise ProvenanceError(f"{what} {path}: {info.st_size} bytes, more than a record can be "
                              f"({MAX_RECORD_BYTES})")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ProvenanceError(f"{what} {path}: cannot be read as UTF-8 text ({err})") from None


def _checkpoint_file(checkpoint: str | os.PathLike[str], name: str) -> Path | None:
    """``name`` in a local checkpoint folder, or in a Hub checkpoint through the Hub cache; None when absent."""
    local = Path(checkpoint)
    if local.is_dir():
        path = local / name
        return path if os.path.lexists(path) else None
    try:
        from huggingface_hub import hf_hub_download  # heavy: huggingface_hub

        return Path(hf_hub_download(str(checkpoint), name))
    except Exception:  # noqa: BLE001 - not on the Hub, or offline without it: the record is absent
        return None


def read_record_file(path: Path, source: str) -> dict[str, Any]:
    """A ``training_data.json``: JSON text holding one checked record."""
    text = _read_text(path, source)
    try:
        record = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise ProvenanceError(f"{source} {path}: not valid JSON ({err})") from None
    return check_training_record(record, f"{source} {path}")


def card_record(path: Path) -> dict[str, Any] | None:
    """What a model card's ``### Configuration`` block says about generated Meta-World data, as a record whose
    ``benchmark_seeds`` are every seed the generator could draw from; None for other data (or no block)."""
    text = _read_text(path, "model card")
    match = re.search(r"^### Configuration\s*\n\s*```json\s*\n(.*?)\n```", text, re.M | re.S)
    if match is None:
        return None
    try:
        config = json.loads(match.group(1))
        data = config["data"]
    except (ValueError, RecursionError, KeyError, TypeError) as err:
        raise ProvenanceError(f"model card {path}: the Configuration block is not the JSON niaf-train writes "
                              f"({type(err).__name__}: {err})") from None
    if not isinstance(data, dict) or data.get("source") != "metaworld" or data.get("path"):
        return None  # other data, or a dataset folder the card cannot describe: training_data.json says
    where = f"model card {path}: data"
    seed, episodes = data.get("metaworld_seed"), data.get("metaworld_episodes_per_task")
    _seed(seed, f"{where}.metaworld_seed")
    if not _is_int(episodes) or episodes < 1:
        raise ProvenanceError(f"{where}.metaworld_episodes_per_task must be a positive integer, got {episodes!r}")
    last = seed + (episodes - 1) // VARIATIONS_PER_BENCHMARK
    record = {"benchmark_seeds": list(range(seed, min(last, MAX_BENCHMARK_SEED) + 1)),
              "tasks": data.get("metaworld_tasks"), "image_size": data.get("metaworld_image_size"),
              "stride": data.get("metaworld_stride"), "action_noise": data.get("metaworld_action_noise"),
              "state": data.get("metaworld_state")}
    if "metaworld_state" in data:  # a card written since the crop existed (its null means: no crop)
        record["crop"] = data.get("metaworld_crop")
    record["camera_view"] = data.get("metaworld_camera_view")  # absent before camera views existed: niaf
    record["instructions"] = data.get("metaworld_instructions")  # absent before instruction sets existed: niaf
    camera = data.get("metaworld_camera")
    record["cameras"] = [camera] if isinstance(camera, str) else camera
    return check_training_record({k: v for k, v in record.items() if v is not None or k == "crop"}, where)


def checkpoint_records(checkpoint: str | os.PathLike[str] | None) -> dict[str, dict[str, Any]]:
    """Every training record ``checkpoint`` carries, checked: name (file) → record."""
    if checkpoint is None:
        return {}
    records: dict[str, dict[str, Any]] = {}
    path = _checkpoint_file(checkpoint, TRAINING_RECORD)
    if path is not None:
        records[f"{TRAINING_RECORD} ({path})"] = read_record_file(path, "--checkpoint")
    card = _checkpoint_file(checkpoint, CARD_FILE)
    if card is not None:
        from_card = card_record(card)
        if from_card is not None:
            records[f"the model card ({card})"] = {**from_card, "_seeds_are_bounds": True}
    return records


_COMPARED = ("tasks", "cameras", "image_size", "stride", "action_noise", "state", "crop", "camera_view",
             "instructions")


def agreeing_records(records: dict[str, dict[str, Any]]) -> None:
    """Refuse records that disagree: on the tasks, cameras, image size, stride, action noise, state, crop, or seeds (a
    card's seeds are the generator's possible seeds, so a record's seeds must lie among them)."""
    names = list(records)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            ra, rb = records[a], records[b]
            for key in _COMPARED:
                if key in ra and key in rb:
                    va, vb = ra[key], rb[key]
                    same = sorted(va) == sorted(vb) if key == "tasks" else va == vb
                    if not same:
                        raise ProvenanceError(f"the training records disagree on {key!r}: {va!r} in {a}, "
                                              f"{vb!r} in {b}")
            sa, sb = set(record_seeds(ra)), set(record_seeds(rb))
            bound_a, bound_b = ra.get("_seeds_are_bounds", False), rb.get("_seeds_are_bounds", False)
            ok = (sa == sb if bound_a == bound_b else (sb <= sa if bound_a else sa <= sb))
            if not ok:
                raise ProvenanceError(f"the training records disagree on the benchmark seeds: {sorted(sa)} in {a}, "
                                      f"{sorted(sb)} in {b}")


def training_records(checkpoint: str | os.PathLike[str] | None = None,
                     train_data: str | os.PathLike[str] | None = None) -> dict[str, dict[str, Any]]:
    """Every record of the training data: the checkpoint's (:func:`checkpoint_records`) and, with
    ``train_data``, the dataset's ``meta/info.json``; checked one by one and against each other."""
    records = checkpoint_records(checkpoint)
    if train_data is not None:
        info = Path(train_data) / "meta" / "info.json"
        if not info.is_file():
            raise ProvenanceError(f"--train-data {train_data}: not a LeRobot dataset (no meta/info.json)")
        try:
            record = read_provenance(train_data)
        except ValueError as err:
            raise ProvenanceError(f"--train-data {err}") from None
        if record is None:
            raise ProvenanceError(f"--train-data {train_data}: meta/info.json has no 'metaworld' record of its "
                                  "variations")
        records[f"--train-data {info}"] = check_training_record(record, f"--train-data {info}: 'metaworld'")
    agreeing_records(records)
    return records


def merged_record(records: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """One record for the settings' defaults: the most detailed one (a file before the card), with the union
    of every record's seeds as ``benchmark_seeds``; None when there is none."""
    if not records:
        return None
    ordered = sorted(records.values(), key=lambda r: r.get("_seeds_are_bounds", False))
    merged = {k: v for k, v in ordered[0].items() if k != "_seeds_are_bounds"}
    merged.pop("benchmark_seed", None)
    merged["benchmark_seeds"] = sorted({s for r in records.values() for s in record_seeds(r)})
    return merged


# ------------------------------------------------------------------------------------------------------------
# Held-out seeds
# ------------------------------------------------------------------------------------------------------------
def seeds_needed(episodes: int) -> int:
    """Benchmark seeds that ``episodes`` distinct variations per task take (50 per seed)."""
    return -(-int(episodes) // VARIATIONS_PER_BENCHMARK)


def resolve_seed(requested: int | None, record: dict[str, Any] | None) -> int:
    """The first benchmark seed of the held-out variations: ``requested`` unless training used it (error), or
    the first seed >= :data:`DEFAULT_EVAL_SEED` that training did not use."""
    return held_out_seeds(requested, record, 1)[0]


def held_out_seeds(requested: int | None, record: dict[str, Any] | None, count: int) -> list[int]:
    """``count`` benchmark seeds none of which training used: ``requested`` (or the first free seed >=
    :data:`DEFAULT_EVAL_SEED`), then the next free seeds above it.

    Raises:
        ProvenanceError: ``requested`` was used in training, or the seeds would pass :data:`MAX_BENCHMARK_SEED`.
    """
    used = set(record_seeds(record))
    if requested is not None:
        _seed(requested, "--seed")
        if requested in used:
            raise ProvenanceError(
                f"--seed {requested}: the training demonstrations include variations of benchmark seed {requested}; "
                "choose another seed so that evaluation variations are held out"
            )
    seeds: list[int] = []
    seed = DEFAULT_EVAL_SEED if requested is None else requested
    while len(seeds) < count:
        if seed > MAX_BENCHMARK_SEED:
            raise ProvenanceError(f"--seed {requested}: {count} held-out benchmark seeds from it would pass the "
                                  f"largest seed {MAX_BENCHMARK_SEED}; choose a smaller one")
        if seed not in used:
            seeds.append(seed)
        seed += 1
    return seeds


__all__ = [
    "CARD_FILE",
    "DEFAULT_EVAL_SEED",
    "MAX_BENCHMARK_SEED",
    "ProvenanceError",
    "TRAINING_RECORD",
    "agreeing_records",
    "card_record",
    "check_training_record",
    "checkpoint_records",
    "held_out_seeds",
    "merged_record",
    "record_seeds",
    "resolve_seed",
    "seeds_needed",
    "training_records",
]
