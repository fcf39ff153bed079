"""The training run: data, model, Accelerate loop, checkpoints, final export.

Flow of :func:`train`, one named step each (:func:`_train` calls them in this order, which fixes what the seeded
random number generators draw):

1. configuration checked (unknown key, bad value, an output folder holding another run → error, nothing
   written); :func:`make_accelerator`: processes, mixed precision, trackers, seeds;
2. :func:`load_run_data`: demonstrations loaded (:mod:`.dataset`; Meta-World ones generated once and cached) as
   a chunk dataset, split by episode into training and held-out evaluation episodes; normalisation statistics
   from the training episodes (of the delta targets with ``model.relative_action_state_indices``);
3. :func:`make_policy`: processor and model, the dataset's action dimension, state dimension and cameras checked
   against them (:mod:`.building`); :func:`prepare_output_dir`: the run folder written once all checks passed;
4. :func:`make_trainable` (activation checkpointing, LoRA or a frozen backbone), :func:`make_optimizer_and_scheduler`
   (AdamW, tri-stage LR), :func:`make_dataloaders` (seeded sampling whose position is part of every checkpoint),
   :func:`resume_progress`;
5. training loop: :func:`update_policy` per micro-batch (gradient accumulation and clipping, mixed precision
   with the SIREN head always in float32), :class:`IntervalMeter` for the periodic log lines, evaluation on
   held-out episodes (:mod:`.validation`, :func:`log_evaluation`), TensorBoard or Trackio logs,
   :func:`save_checkpoint` (atomic: Hub layout + optimizer / scheduler / RNG state, :mod:`.checkpointing`);
6. :func:`write_final`: ``<output_dir>/final``, the trained model in Hub layout with its processor, statistics, a
   model card with the data, configuration and metrics (:mod:`.export`), and ``metrics.json``; optionally pushed
   to the Hub.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from configuration_niaf.normalization import check_relative_action_state_indices

from ..console_logging import count_parameters, format_step_line
from ..data.chunking import cache_size_report, with_torch_format
from ..data.metaworld import CONTRACT_FILE, TRAINING_RECORD, observation_contract
from ..data.stats import stats_from_chunk_dataset, to_normalization_stats
from . import checkpointing as ckpt
from . import run_folder, sharding
from .arguments import ConfigError, FinetuneConfig
from .building import build_processor_and_model, head_parameter
from .collation import Collator, EpochSampler
from .dataset import data_provenance, dataset_layout, load_chunks, split_episodes
from .export import _export_model, card_metadata, push_final, training_card_section
from .lora import apply_lora
from .run_folder import FINAL_DIR, HISTORY_FILE, METRICS_FILE, RUN_CONFIG, check_output_dir
from .validation import evaluate_model

logger = logging.getLogger(__name__)


def tri_stage_lambda(total: int, warmup_ratio: float, decay_ratio: float, final_scale: float, kind: str):
    """LR multiplier per optimiser step: tri-stage (linear warm-up, hold, exponential decay to
    ``final_scale``), cosine, linear (both after warm-up) or constant."""
    warm = int(round(warmup_ratio * total))
    decay = int(round(decay_ratio * total)) if kind == "tri_stage" else total - warm
    hold_end = total - decay

    def scale(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if kind == "constant":
            return 1.0
        if kind == "tri_stage":
            if step < hold_end:
                return 1.0
            frac = (step - hold_end) / max(decay, 1)
            return float(final_scale ** min(frac, 1.0))
        frac = min((step - warm) / max(total - warm, 1), 1.0)
        if kind == "cosine":
            return final_scale + (1 - final_scale) * 0.5 * (1 + math.cos(math.pi * frac))
        return 1.0 - (1 - final_scale) * frac

    return scale


def set_activation_checkpointing(model: Any, enabled: bool) -> None:
    """Turn activation (gradient) checkpointing of a transformers model on or off, non-reentrant, through
    ``activation_checkpointing_enable`` where transformers has it (it deprecates ``gradient_checkpointing_*``)
    and the older name on the floor version that lacks it."""
    if enabled:
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    elif hasattr(model, "activation_checkpointing_disable"):
        model.activation_checkpointing_disable()
    else:
        model.gradient_checkpointing_disable()


def _flat(cfg: FinetuneConfig) -> dict[str, Any]:
    out = {}
    for section, body in cfg.to_dict().items():
        for key, value in body.items():
            out[f"{section}.{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return out


def train(cfg: FinetuneConfig) -> dict[str, Any]:
    """Run a fine-tuning job; returns ``{"metrics": ..., "final_dir": ..., "history": [...]}`` on every process.

    The output folder is checked, then locked for the run (by the launch's rank 0) and checked again, so that
    two runs started on one folder cannot both write it.
    """
    check_output_dir(cfg)
    lock = None
    if int(os.environ.get("RANK", "0")) == 0:
        lock = run_folder.RunLock(Path(cfg.training.output_dir)).acquire()
    try:
        return _train(cfg)
    finally:
        if lock is not None:
            lock.release()


# ----------------------------------------------------------------------------------------------------------
# The steps of a run, in the order _train calls them (the order fixes what the seeded RNG draws)
# ----------------------------------------------------------------------------------------------------------
@dataclass
class RunData:
    """The demonstrations of a run, split by episode and checked against the configuration."""

    dataset: Any
    """The chunk dataset (``datasets.Dataset``) of every episode."""
    layout: dict[str, Any]
    """Action / state dimension, fps, episodes, velocity labels and the cameras in use (:func:`dataset_layout`)."""
    train_rows: np.ndarray
    """Dataset rows of the training episodes."""
    val_rows: np.ndarray
    """Dataset rows of the held-out episodes."""
    train_stats: dict[str, Any]
    """Statistics of the training rows (of the delta targets with relative actions): ``stats_from_chunk_dataset``."""
    stats: dict[str, Any]
    """The model's normalisation statistics: ``action`` and, with ``model.use_state``, ``state``."""
    tasks: list[str]
    """The episodes' task strings, sorted (the tiny backbone's vocabulary)."""
    fingerprint: dict[str, Any]
    """Data digest and sample-stream settings (``run_fingerprint.json``)."""
    last: Path | None
    """The checkpoint to resume from (``training.resume`` and one exists), else None."""


@dataclass
class Progress:
    """Where the run stands; saved in every checkpoint's trainer state."""

    step: int = 0
    """Optimiser steps taken."""
    consumed: int = 0
    """Micro-batches consumed (their position in the seeded sample stream)."""
    history: list[dict[str, Any]] = field(default_factory=list)
    """One row per logging interval and per evaluation (``history.jsonl``)."""


def make_accelerator(cfg: FinetuneConfig) -> Any:
    """The run's ``Accelerator`` (DDP, FSDP on CPU processes, mixed precision, trackers), every RNG seeded."""
    from accelerate import Accelerator  # heavy: accelerate
    from accelerate.utils import (  # heavy: accelerate
        DistributedDataParallelKwargs,
        ProjectConfiguration,
        set_seed,
    )

    t = cfg.training
    out = Path(t.output_dir)
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    report = None if t.report_to == "none" else t.report_to
    # Launched as several processes on a machine without CUDA (torchrun, or `accelerate launch --multi_gpu`):
    # Accelerate needs cpu=True to run DDP with gloo instead of silently training N independent copies.
    multi_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    # Vision-language backbones carry parameters a NIAF forward never uses (e.g. SigLIP's pooling head).
    ddp = DistributedDataParallelKwargs(find_unused_parameters=t.ddp_find_unused_parameters)
    accelerator = Accelerator(
        cpu=multi_cpu, kwargs_handlers=[ddp], mixed_precision=t.mixed_precision, gradient_accumulation_steps=t.gradient_accumulation_steps,
        log_with=report, project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
    )
    # `accelerate launch` with an FSDP config on CPU processes: FSDP2 over gloo (Accelerate alone would run DDP)
    sharding.enable_cpu_fsdp(accelerator, t.mixed_precision)
    set_seed(t.seed)
    return accelerator


def load_run_data(cfg: FinetuneConfig, accelerator: Any) -> RunData:
    """The chunk dataset (built by the main process first), its cameras, labels and relative-action indices
    checked against the configuration, the episode split, the resume checks and the training statistics.

    Raises:
        ConfigError: a data error in one line; a camera, velocity or state index the dataset lacks; a resume
            whose data or sample-stream settings changed.
    """
    t, d, m = cfg.training, cfg.data, cfg.model
    with accelerator.main_process_first():
        try:
            dataset = load_chunks(cfg)
        except (ValueError, OSError, pickle.UnpicklingError) as err:  # named data errors: one line, exit 2
            if isinstance(err, ConfigError):
                raise
            raise ConfigError(f"data: {err}") from None
    layout = dataset_layout(dataset)
    cameras = d.cameras if d.cameras else layout["cameras"]
    if d.cameras:
        cameras = [c if c.startswith("observation.images.") else f"observation.images.{c}" for c in d.cameras]
        missing = [c for c in cameras if c not in layout["cameras"]]
        if missing:
            raise ConfigError(f"data.cameras {missing} not in the dataset (it has {layout['cameras']})")
    if not cameras:
        raise ConfigError("the dataset has no camera feature; NIAF needs at least one image per observation")
    layout["cameras"] = cameras
    cache = cache_size_report(dataset)
    logger.info("chunk cache %s: %.2f MB, %s image bytes per frame per camera (%s)", cache["folder"],
                cache["bytes"] / 1e6, ", ".join(f"{c} {b:.0f}" for c, b in cache["image_bytes_per_frame_per_camera"].items()),
                cache["image_format"])
    if d.velocity == "require" and not layout["velocity"]:
        raise ConfigError("data.velocity=require but the dataset has no velocity labels")
    relative = m.relative_action_state_indices
    if relative is not None:
        try:
            check_relative_action_state_indices(relative, layout["action_dim"], layout["state_dim"],
                                                name="model.relative_action_state_indices")
        except ValueError as err:
            raise ConfigError(str(err)) from None
    train_rows, val_rows = split_episodes(dataset, d.val_fraction, t.seed)
    fingerprint = run_folder.run_fingerprint(cfg, run_folder.data_digest(dataset, train_rows, val_rows),
                                             accelerator.num_processes)
    out = Path(t.output_dir)
    last = ckpt.last_checkpoint(out) if t.resume else None
    if last is not None:
        run_folder.check_resume_fingerprint(out, fingerprint)
        run_folder.check_training_state(last, accelerator.num_processes)
    elif t.resume:
        logger.warning("--resume: %s holds no complete checkpoint; starting the run again from step 0", out)
    train_set = dataset.select(train_rows)
    # with relative actions: statistics (and the mean-action baseline) of the deltas; the cache stays absolute
    train_stats = stats_from_chunk_dataset(train_set, relative_action_state_indices=relative)
    stats = to_normalization_stats(train_stats)
    stats = {k: v for k, v in stats.items() if k in ("action", "state")}
    if not m.use_state:
        stats.pop("state", None)
    tasks = sorted(set(dataset.select_columns(["task"])["task"]))
    return RunData(dataset, layout, train_rows, val_rows, train_stats, stats, tasks, fingerprint, last)


def make_policy(cfg: FinetuneConfig, data: RunData) -> tuple[Any, Any]:
    """The processor and model for the data (:func:`build_processor_and_model`), their refusals as one line."""
    try:
        processor, model = build_processor_and_model(cfg, data.layout, data.stats, data.tasks)
    except ValueError as err:  # NiafConfig / NiafProcessor refusals (a head setting out of bounds, ...)
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"model: {err}") from None
    if model.config.action_dim != data.layout["action_dim"]:
        raise ConfigError(f"the dataset's action dim {data.layout['action_dim']} differs from the model's "
                          f"{model.config.action_dim}")
    return processor, model


def prepare_output_dir(cfg: FinetuneConfig, accelerator: Any, model: Any, data: RunData) -> None:
    """Check the disk, then (main process) replace a previous run if asked and write the run's config and
    fingerprint: nothing is written before every check has passed."""
    t = cfg.training
    out = Path(t.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    run_folder.check_writable(out, 2 * run_folder.checkpoint_bytes(model))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:  # everything is checked: only now may a previous run be replaced
        if t.overwrite_output_dir and not t.resume:
            run_folder.clear_run(out)
        (out / RUN_CONFIG).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n", encoding="utf-8")
        if data.last is None:
            run_folder.write_fingerprint(out, data.fingerprint)
        ckpt.remove_stale_temporaries(out)


def make_trainable(cfg: FinetuneConfig, model: Any, processor: Any, accelerator: Any) -> tuple[Any, Callable[[], Any]]:
    """``model`` as it is trained: activation checkpointing, LoRA on the backbone or a frozen backbone, unused
    parameters frozen under FSDP; logs the parameter counts. Returns it (a PEFT wrapper with LoRA, else ``model``
    itself) and a function that builds a fresh, unsharded model of the same structure (FSDP gathers the weights
    into it)."""
    t, p = cfg.training, cfg.peft
    if t.gradient_checkpointing:
        set_activation_checkpointing(model.backbone, True)
    base_model = model
    if p.method == "lora":
        if accelerator.is_main_process and not p.save_merged:
            base_model.save_pretrained(Path(t.output_dir) / "base_model", processor=processor)
        model = apply_lora(model, p.r, p.lora_alpha, p.lora_dropout, p.target_modules)
    elif p.freeze_backbone:
        for param in model.backbone.parameters():
            param.requires_grad_(False)
    if sharding.is_sharded(accelerator):
        sharding.freeze_unused_parameters(model)
    total_params, trainable_params = count_parameters(model)
    logger.info("model: %s parameters, %s trainable (%.1f%%)", f"{total_params:,}", f"{trainable_params:,}",
                100.0 * trainable_params / max(total_params, 1))

    def rebuild() -> Any:
        """A fresh, unsharded model of the trained structure (FSDP gathers its weights into it)."""
        plain = type(base_model)(base_model.config)
        if p.method == "lora":
            plain = apply_lora(plain, p.r, p.lora_alpha, p.lora_dropout, p.target_modules)
        return plain

    return model, rebuild


def make_optimizer_and_scheduler(cfg: FinetuneConfig, model: Any, num_processes: int) -> tuple[Any, Any]:
    """AdamW over the trainable parameters (backbone at ``learning_rate``, the head at ``head_learning_rate``)
    and the learning-rate schedule (:func:`tri_stage_lambda`) per optimiser step."""
    t = cfg.training
    head_params = [q for n, q in model.named_parameters() if q.requires_grad and head_parameter(n)]
    body_params = [q for n, q in model.named_parameters() if q.requires_grad and not head_parameter(n)]
    groups = [{"params": body_params, "lr": t.learning_rate}, {"params": head_params, "lr": t.head_learning_rate or t.learning_rate}]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], betas=(t.adam_beta1, t.adam_beta2),
                                  eps=t.adam_epsilon, weight_decay=t.weight_decay)
    lr_scale = tri_stage_lambda(t.max_steps, t.warmup_ratio, t.decay_ratio, t.final_lr_scale, t.lr_scheduler)
    # Accelerate steps a prepared scheduler once per process for every optimiser step (it assumes a schedule
    # written for one process's batches); the schedule here counts optimiser steps, so divide that back out, or N
    # processes would run through warm-up and decay N times too fast.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_scale(s // num_processes))
    return optimizer, scheduler


def make_dataloaders(cfg: FinetuneConfig, processor: Any, data: RunData, check: Any,
                     num_processes: int) -> tuple[Any, EpochSampler, Any]:
    """The training loader (seeded :class:`EpochSampler`, augmentation, dense targets where the head uses them)
    and the held-out loader (at most ``data.max_val_samples`` evenly spaced chunks; None without held-out
    episodes). ``check`` is the model's input value checker, run by the collators on CPU tensors."""
    t, d, m = cfg.training, cfg.data, cfg.model
    layout, cameras, train_rows, val_rows = data.layout, data.layout["cameras"], data.train_rows, data.val_rows
    use_velocity = layout["velocity"] and m.loss_weight_velocity > 0
    use_dense = "dense_action" in data.dataset.column_names
    if use_dense and m.action_head in ("waypoints", "flow"):
        logger.info("data.dense_every: the %s head outputs the K chunk points only; it is trained on those, not on "
                    "the dense points", m.action_head)
    collate = Collator(processor, cameras, m.use_state, use_velocity, check=check,
                       use_dense=use_dense and m.action_head in ("niaf", "bspline"), image_shift=t.image_shift,
                       seed=t.seed)
    torch_view = with_torch_format(data.dataset)
    sampler = EpochSampler(train_rows, t.seed)
    train_loader = torch.utils.data.DataLoader(
        torch_view, batch_size=t.per_device_batch_size, sampler=sampler, collate_fn=collate,
        drop_last=len(train_rows) >= t.per_device_batch_size * num_processes, num_workers=d.num_workers,
    )
    val_loader = None
    if len(val_rows):
        pick = val_rows[np.linspace(0, len(val_rows) - 1, min(d.max_val_samples, len(val_rows))).round().astype(int)]
        val_collate = Collator(processor, cameras, m.use_state, layout["velocity"], check=check)
        val_loader = torch.utils.data.DataLoader(torch.utils.data.Subset(torch_view, np.unique(pick).tolist()),
                                                 batch_size=32, collate_fn=val_collate)
    return train_loader, sampler, val_loader


def resume_progress(accelerator: Any, last: Path | None) -> Progress:
    """The optimiser, scheduler and RNG state and the :class:`Progress` of checkpoint ``last``; a fresh start
    without one.

    Raises:
        ConfigError: the checkpoint's training state cannot be loaded.
    """
    if last is None:
        return Progress()
    try:
        accelerator.load_state(str(last / "training_state"))
    except Exception as err:  # torch / safetensors raise many types for a damaged state
        raise ConfigError(f"--resume: {last / 'training_state'} could not be loaded ({type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''})") from None
    state = ckpt.read_trainer_state(last)
    logger.info("resumed from %s at step %d", last, int(state["step"]))
    return Progress(int(state["step"]), int(state["micro_batches"]), list(state["history"]))


def update_policy(accelerator: Any, model: Any, batch: dict[str, Any], optimizer: Any, scheduler: Any,
                  max_grad_norm: float) -> tuple[Any, Any]:
    """One micro-batch: forward, backward and, on the micro-batch that ends an accumulation, gradient
    clipping; the optimiser and scheduler step (Accelerate skips them between). Returns the model output and the
    global gradient norm before clipping (None when no optimiser step was due, or where Accelerate gives none)."""
    norm = None
    with accelerator.accumulate(model):
        output = model(**batch)
        accelerator.backward(output.loss)
        if accelerator.sync_gradients:  # max_norm inf: only measured, not clipped
            norm = accelerator.clip_grad_norm_(model.parameters(), max_grad_norm or math.inf)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return output, norm


class IntervalMeter:
    """Sums of the losses and gradient norms over a logging interval (on the device, read back once per
    interval), with the interval's samples, data-wait time and wall time."""

    def __init__(self, start: float) -> None:
        self.running: dict[str, Any] = {}
        self.micro_batches = 0
        self.start, self.data_seconds, self.samples = start, 0.0, 0

    def add_batch(self, waited: float, samples: int) -> None:
        """A batch that took ``waited`` seconds to arrive and holds ``samples`` samples over all processes."""
        self.data_seconds += waited
        self.samples += samples

    def add_step(self, output: Any, norm: Any) -> None:
        """The losses of one micro-batch and, where one was taken, the optimiser step's gradient norm."""
        if norm is not None:
            self.running["grad_norm"] = self.running.get("grad_norm", 0.0) + _detached(norm)
        for name in ("loss", "loss_pos", "loss_vel", "loss_jerk"):
            value = getattr(output, name)
            if value is not None:  # summed on the device, read back once per logging interval
                self.running[name] = self.running.get(name, 0.0) + _detached(value)
        self.micro_batches += 1

    def flush(self, accelerator: Any, scheduler: Any, accumulation: int) -> dict[str, float]:
        """The interval's ``train/*`` values, averaged over the processes; starts the next interval."""
        n_running = self.micro_batches
        logs = {f"train/{k}": accelerator.reduce(torch.as_tensor(v / n_running, device=accelerator.device),
                                                 "mean").item() for k, v in self.running.items()}
        logs["train/lr"] = scheduler.get_last_lr()[0]
        now = time.perf_counter()
        steps_in_interval = max(1, n_running // accumulation)
        # grad_norm was summed once per optimiser step, the losses once per micro-batch
        if "train/grad_norm" in logs:
            logs["train/grad_norm"] *= n_running / steps_in_interval
        logs["train/samples_per_second"] = self.samples / max(now - self.start, 1e-9)
        logs["train/data_seconds_per_step"] = self.data_seconds / steps_in_interval
        logs["train/data_fraction"] = self.data_seconds / max(now - self.start, 1e-9)
        self.running, self.micro_batches = {}, 0
        self.start, self.data_seconds, self.samples = now, 0.0, 0
        return logs


def log_evaluation(accelerator: Any, progress: Progress, metrics: dict[str, float], label: str, report: bool) -> None:
    """Held-out ``metrics`` into the history, the log (``<label> eval: ...``) and the trackers."""
    progress.history.append({"step": progress.step, **{f"eval/{k}": v for k, v in metrics.items()}})
    logger.info("%s eval: %s", label, _fmt(metrics))
    if report:
        accelerator.log({f"eval/{k}": v for k, v in metrics.items()}, step=progress.step)


def save_checkpoint(cfg: FinetuneConfig, accelerator: Any, model: Any, rebuild: Callable[[], Any], processor: Any,
                    progress: Progress) -> None:
    """An atomic checkpoint at ``progress.step``: the training state of every process, the model (gathered
    under FSDP) in Hub layout and the trainer state, then the oldest beyond ``save_total_limit`` removed."""
    t, p = cfg.training, cfg.peft
    out, main, at_step = Path(t.output_dir), accelerator.is_main_process, progress.step
    tmp = ckpt.temporary_dir(out, at_step)
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(tmp / "training_state"))
        unwrapped = sharding.full_model(accelerator, model, rebuild)  # under FSDP: gathered, every process
        if main:
            export = _export_model(unwrapped, p.method == "lora")
            export.save_pretrained(tmp / "model", processor=processor)
    except RuntimeError as err:  # torch.save reports a full disk as a RuntimeError from inline_container.cc
        raise ckpt.write_error(tmp, err) from None
    if main:
        trainer_state = {"step": at_step, "micro_batches": progress.consumed, "history": progress.history}
        ckpt.commit(out, at_step, trainer_state, t.save_total_limit)
    accelerator.wait_for_everyone()


def write_final(cfg: FinetuneConfig, unwrapped: Any, processor: Any, data: RunData, progress: Progress,
                metrics: dict[str, float]) -> None:
    """``<output_dir>/final`` (main process): the model in Hub layout (LoRA merged, or an adapter folder next to
    it), its card with the training section, ``metrics.json``, the Meta-World provenance and observation
    contract; then ``history.jsonl`` and, if asked, the upload to the Hub."""
    t, p = cfg.training, cfg.peft
    out = Path(t.output_dir)
    export = _export_model(unwrapped, p.method == "lora" and p.save_merged)
    tmp = out / (ckpt.TMP_PREFIX + FINAL_DIR)
    shutil.rmtree(tmp, ignore_errors=True)
    datasets_meta = [cfg.data.source] if cfg.data.source != "metaworld" else ["metaworld (scripted experts)"]
    export.save_pretrained(tmp, processor=processor, repo_id=t.hub_model_id, **card_metadata(cfg, metrics))
    if p.method == "lora" and not p.save_merged:
        unwrapped.save_pretrained(tmp / "adapter")
    (tmp / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    provenance, contract = data_provenance(cfg), None
    if provenance is not None:
        (tmp / TRAINING_RECORD).write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
        contract = observation_contract(provenance, export.config.chunk_size)
        (tmp / CONTRACT_FILE).write_text(json.dumps(contract, indent=2) + "\n", encoding="utf-8")
    with open(tmp / "README.md", "a", encoding="utf-8") as card:
        card.write(training_card_section(cfg, data.layout, len(data.train_rows), len(data.val_rows), metrics,
                                         progress.step, datasets_meta, contract))
    ckpt.atomic_replace_dir(tmp, out / FINAL_DIR)
    with open(out / HISTORY_FILE, "w", encoding="utf-8") as f:
        for row in progress.history:
            f.write(json.dumps(row) + "\n")
    if t.push_to_hub:
        push_final(out / FINAL_DIR, t.hub_model_id, t.hub_private)


# ----------------------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------------------
def _train(cfg: FinetuneConfig) -> dict[str, Any]:
    from tqdm.auto import tqdm  # lazy: tqdm.auto probes for notebook support

    t, m = cfg.training, cfg.model
    check_output_dir(cfg)
    out = Path(t.output_dir)
    accelerator = make_accelerator(cfg)
    main = accelerator.is_main_process
    report = t.report_to != "none"

    # ---- data and model ---------------------------------------------------------------------------------
    data = load_run_data(cfg, accelerator)
    processor, base_model = make_policy(cfg, data)
    logger.info("data: %d training chunks, %d held-out chunks, %d episodes, D=%d, %s, %.3g Hz, velocity labels: %s",
                len(data.train_rows), len(data.val_rows), data.layout["episodes"], data.layout["action_dim"],
                data.layout["cameras"], data.layout["fps"], data.layout["velocity"])
    prepare_output_dir(cfg, accelerator, base_model, data)
    model, rebuild = make_trainable(cfg, base_model, processor, accelerator)
    optimizer, scheduler = make_optimizer_and_scheduler(cfg, model, accelerator.num_processes)
    # The model's input value checks run in the collator on CPU tensors, once per batch; the forward then reads
    # nothing back from the device (shapes are still checked there).
    check = base_model.input_value_checker()
    base_model.check_inputs_in_forward = False
    train_loader, sampler, val_loader = make_dataloaders(cfg, processor, data, check, accelerator.num_processes)
    baseline = np.asarray(data.train_stats["action"]["mean"], dtype=np.float64)
    model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)
    batches_per_epoch = len(train_loader)
    if batches_per_epoch == 0:
        raise ConfigError(f"{len(data.train_rows)} training chunks make no batch of {t.per_device_batch_size}")

    # ---- resume -----------------------------------------------------------------------------------------
    progress = resume_progress(accelerator, data.last)
    if report:
        accelerator.init_trackers("niaf", config=_flat(cfg))
    sample_log = open(out / f"samples_rank{accelerator.process_index}.txt", "a") if t.record_sample_ids else None  # noqa: SIM115

    # ---- loop -------------------------------------------------------------------------------------------
    model.train()
    bar = tqdm(total=t.max_steps, initial=progress.step, desc="niaf-train", unit="step", disable=not main)
    start = time.perf_counter()
    meter = IntervalMeter(start)  # throughput and time spent waiting for batches, per logging interval
    while progress.step < t.max_steps:
        epoch, offset = divmod(progress.consumed, batches_per_epoch)
        sampler.epoch = epoch
        loader = accelerator.skip_first_batches(train_loader, offset) if offset else train_loader
        for batch, waited in _timed(loader):
            sample_ids = batch.pop("sample_index")
            meter.add_batch(waited, len(sample_ids) * accelerator.num_processes)
            if sample_log is not None:
                sample_log.write(" ".join(str(int(i)) for i in sample_ids) + "\n")
            output, norm = update_policy(accelerator, model, batch, optimizer, scheduler, t.max_grad_norm)
            progress.consumed += 1
            meter.add_step(output, norm)
            if not accelerator.sync_gradients:
                continue
            progress.step += 1
            step = progress.step
            bar.update(1)
            if step % t.logging_steps == 0 or step == t.max_steps:
                logs = meter.flush(accelerator, scheduler, t.gradient_accumulation_steps)
                progress.history.append({"step": step, **logs})
                bar.set_postfix(loss=f"{logs['train/loss']:.4f}")
                logger.info(format_step_line(step, t.max_steps, logs))
                if report:
                    accelerator.log(logs, step=step)
            if val_loader is not None and t.eval_steps and step % t.eval_steps == 0 and step < t.max_steps:
                evaluated = sharding.full_model(accelerator, model, rebuild)
                if main:
                    metrics = evaluate_model(evaluated, processor, val_loader, baseline, _num_points(t, m))
                    log_evaluation(accelerator, progress, metrics, f"step {step}", report)
                accelerator.wait_for_everyone()
            if t.save_steps and step % t.save_steps == 0 and step < t.max_steps:
                save_checkpoint(cfg, accelerator, model, rebuild, processor, progress)
            if step >= t.max_steps:
                break
    bar.close()
    if sample_log is not None:
        sample_log.close()
    if sample_log is not None and not sharding.is_sharded(accelerator):  # per-rank weights: the DDP test's check
        from safetensors.torch import save_file  # heavy: torch

        weights = {k: v.detach().float().cpu().contiguous() for k, v in accelerator.unwrap_model(model).state_dict().items()}
        save_file(weights, str(out / f"weights_rank{accelerator.process_index}.safetensors"))
    train_seconds = time.perf_counter() - start

    # ---- final ------------------------------------------------------------------------------------------
    save_checkpoint(cfg, accelerator, model, rebuild, processor, progress)
    result: dict[str, Any] = {"final_dir": str(out / FINAL_DIR), "history": progress.history,
                              "train_seconds": train_seconds}
    metrics: dict[str, float] = {}
    unwrapped = sharding.full_model(accelerator, model, rebuild)  # under FSDP: gathered, every process
    if main:
        if val_loader is not None:
            metrics = evaluate_model(unwrapped, processor, val_loader, baseline, _num_points(t, m))
            log_evaluation(accelerator, progress, metrics, "final", report)
        write_final(cfg, unwrapped, processor, data, progress, metrics)
    accelerator.wait_for_everyone()
    if report:
        accelerator.end_training()
    base_model.check_inputs_in_forward = True  # the model leaves the loop checking its inputs again
    result["metrics"] = metrics
    result["process_index"] = accelerator.process_index
    result["baseline"] = baseline.tolist()
    return result


def _detached(value: Any) -> Any:
    """A loss or gradient norm to sum over a logging interval: a detached tensor stays on its device (no host
    synchronisation per step), anything else becomes a float."""
    return value.detach() if isinstance(value, torch.Tensor) else float(value)


def _timed(loader: Any) -> Iterator[tuple[Any, float]]:
    """Yield (batch, seconds spent waiting for it) from ``loader``."""
    iterator = iter(loader)
    while True:
        started = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            return
        yield batch, time.perf_counter() - started


def _num_points(t: Any, m: Any) -> int:
    return t.eval_num_points or 4 * (m.chunk_size - 1) + 1


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
