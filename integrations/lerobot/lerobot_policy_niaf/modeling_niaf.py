"""`NiafPolicy`: a NIAF model (``modeling_niaf.NiafForActionFunction``) behind LeRobot's policy interface.

Data flow inside LeRobot (state and actions are normalised by the pipelines of ``processor_niaf.py``):

* ``forward(batch)``: images + task text → the backbone's image processor and tokenizer (a `NiafProcessor`, used
  for images and text only), normalised ``observation.state`` → ``state``, normalised ``action`` [B, K, D] with
  ``action_is_pad`` → the model's own loss (L_pos, and L_jerk when its weight is > 0).
* ``select_action(batch)``: every ``n_action_steps`` calls the backbone runs once; the resulting action function
  (one per batch element) is submitted to a `modeling_niaf.runtime.ActionStream`, and every call reads the command
  from the function at ``t = step / execute_hz``. Nothing is queued: a call between two backbone passes evaluates
  the function at that call's time.
* ``predict_action_chunk(batch, rate_hz=None)``: the function sampled over its chunk at ``rate_hz`` (default: the
  model's ``control_hz``, i.e. the K training points), [B, N, D].

Outputs are normalised action units; LeRobot's postprocessor turns them into physical units.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lerobot.policies.pretrained import PreTrainedPolicy
from lerobot.utils.constants import ACTION, OBS_STATE
from torch import Tensor

from .configuration_niaf import NiafConfig
from .processor_niaf import niaf_stats_from_lerobot

logger = logging.getLogger(__name__)

NIAF_PROCESSOR_DIR = "niaf_processor"
"""Sub-folder of a ``pretrained_model`` folder holding the backbone's tokenizer and image processor."""


def _task_texts(batch: dict[str, Any], batch_size: int) -> list[str]:
    task = batch.get("task")
    if task is None:
        return [""] * batch_size
    if isinstance(task, str):
        return [task] * batch_size
    texts = [str(t) for t in task]
    if len(texts) != batch_size:
        raise ValueError(f"NiafPolicy: batch['task'] has {len(texts)} entries for a batch of {batch_size}.")
    return texts


def _freeze_vision_positions(model: torch.nn.Module) -> int:
    """Stop training the SigLIP patch-position tables (niaf-train's ``tiny_vision_positions: sincos``; the
    table's values come with the weights). Returns how many tables were frozen."""
    frozen = 0
    for module in model.modules():
        table = getattr(module, "position_embedding", None)
        if type(module).__name__ == "SiglipVisionEmbeddings" and isinstance(table, torch.nn.Embedding):
            table.weight.requires_grad_(False)
            frozen += 1
    return frozen


class NiafPolicy(PreTrainedPolicy):
    """NIAF as a LeRobot policy (``--policy.type=niaf``); see the module docstring."""

    config_class = NiafConfig
    name = "niaf"

    def __init__(
        self,
        config: NiafConfig,
        dataset_stats: dict[str, dict[str, Any]] | None = None,
        dataset_meta: Any = None,
        niaf_model: Any = None,
        niaf_processor: Any = None,
        niaf_processor_path: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(config)
        config.validate_features()
        self.config = config
        model, processor = self._build(config, dataset_stats, dataset_meta, niaf_model, niaf_processor,
                                       niaf_processor_path)
        self.model = model
        self.niaf_processor = processor
        # the config now names the exact model (saved with the policy, read back by the processor factory)
        config.niaf_config = model.config.to_dict()
        config.chunk_size = int(model.config.chunk_size)
        self._check_features()
        if self.config.n_action_steps / self.execute_hz > model.config.chunk_duration:
            logger.warning(
                "NiafPolicy: n_action_steps=%d at %.4g Hz spans %.4g s, longer than the action function's chunk "
                "(%.4g s); the stream stops the command past the chunk's end.",
                self.config.n_action_steps, self.execute_hz, self.config.n_action_steps / self.execute_hz,
                model.config.chunk_duration,
            )
        self.reset()

    # ------------------------------------------------------------------------------------------------------
    # Construction
    # ------------------------------------------------------------------------------------------------------
    @staticmethod
    def _build(config, dataset_stats, dataset_meta, niaf_model, niaf_processor, niaf_processor_path):
        from modeling_niaf import NiafConfig as NiafModelConfig
        from modeling_niaf import NiafForActionFunction, NiafProcessor

        if niaf_model is not None:  # handed over in code (conversion of a NIAF checkpoint)
            if niaf_processor is None:
                raise ValueError("NiafPolicy: `niaf_model` needs its `niaf_processor`.")
            return niaf_model, niaf_processor
        if config.niaf_config is not None:  # a saved pretrained_model folder: the exact model, weights loaded later
            if niaf_processor is None and niaf_processor_path is None:
                raise ValueError(
                    "NiafPolicy: config.niaf_config is set but no tokenizer/image processor was given; load a saved "
                    f"policy with NiafPolicy.from_pretrained(folder) (it reads {NIAF_PROCESSOR_DIR}/)."
                )
            model = NiafForActionFunction(NiafModelConfig.from_dict(dict(config.niaf_config)))
            if config.recipe.model.backbone == "tiny" and config.recipe.model.tiny_vision_positions == "sincos":
                _freeze_vision_positions(model)  # the fixed table is in the weights; not trained, as in niaf-train
            processor = niaf_processor or NiafProcessor.from_pretrained(str(niaf_processor_path))
            return model, processor
        if config.niaf_pretrained_path is not None:  # start from a NIAF checkpoint (niaf-train output or Hub)
            model = NiafForActionFunction.from_pretrained(config.niaf_pretrained_path)
            processor = NiafProcessor.from_pretrained(config.niaf_pretrained_path)
            if dataset_stats is not None:  # fine-tuning on a dataset: its statistics, as the pipelines use them
                stats = niaf_stats_from_lerobot(dataset_stats, model.config.normalization_mode,
                                                model.config.action_dim, model.config.state_dim)
                model.config.normalization_stats = stats
                processor.set_stats(stats)
            return model, processor
        return NiafPolicy._fresh_from_recipe(config, dataset_stats, dataset_meta)

    @staticmethod
    def _fresh_from_recipe(config: NiafConfig, dataset_stats, dataset_meta):
        """A fresh model and processor built by niaf-train's own code (``build_processor_and_model``) from the
        recipe's ``model`` section, with what the dataset decides (dims, fps, cameras, statistics, the task words
        of the tiny vocabulary) given as niaf-train gives them."""
        from niaf_train.training.building import build_processor_and_model

        action_dim = int(config.action_feature.shape[0])
        state = config.robot_state_feature
        state_dim = int(state.shape[0]) if state is not None else None
        fps = getattr(dataset_meta, "fps", None)
        if fps is None:
            raise ValueError(
                "NiafPolicy: a fresh model takes its control rate from the training dataset's fps; build it with "
                "dataset metadata (lerobot-train does), or load a trained one (--policy.path)."
            )
        tasks: list[str] = []
        if dataset_meta is not None and getattr(dataset_meta, "tasks", None) is not None:
            tasks = [str(t) for t in dataset_meta.tasks.index]
        recipe = config.recipe
        if recipe.training.image_shift:
            logger.warning("NiafPolicy: the recipe's training.image_shift=%d is niaf-train's augmentation; "
                           "lerobot-train does not apply it.", recipe.training.image_shift)
        stats = niaf_stats_from_lerobot(dataset_stats, recipe.model.normalization_mode, action_dim,
                                        state_dim if recipe.model.use_state else None)
        layout = {"action_dim": action_dim, "state_dim": state_dim, "fps": float(fps),
                  "cameras": list(config.image_features)}
        # the processor records its image processor's class (PIL here), so the saved policy reloads that one
        processor, model = build_processor_and_model(recipe, layout, stats, tasks)
        return model, processor

    def _check_features(self) -> None:
        cfg, niaf = self.config, self.model.config
        if int(cfg.action_feature.shape[0]) != niaf.action_dim:
            raise ValueError(f"NiafPolicy: action feature has {cfg.action_feature.shape[0]} dims, the model {niaf.action_dim}.")
        if len(cfg.image_features) != niaf.num_cameras:
            raise ValueError(
                f"NiafPolicy: {len(cfg.image_features)} image features {list(cfg.image_features)} but the model reads "
                f"{niaf.num_cameras} camera(s); pass --rename_map or --policy.input_features to choose them."
            )
        if niaf.use_state:
            state = cfg.robot_state_feature
            if state is None or int(state.shape[0]) != niaf.state_dim:
                raise ValueError(
                    f"NiafPolicy: the model reads a {niaf.state_dim}-d {OBS_STATE!r}; the features give "
                    f"{None if state is None else tuple(state.shape)}."
                )

    @property
    def execute_hz(self) -> float:
        return float(self.config.execute_hz or self.model.config.control_hz)

    # ------------------------------------------------------------------------------------------------------
    # Saving and (strict) loading
    # ------------------------------------------------------------------------------------------------------
    def _save_pretrained(self, save_directory: Path, state_dict: dict[str, Tensor] | None = None) -> None:
        super()._save_pretrained(save_directory, state_dict=state_dict)
        self.niaf_processor.set_stats(self.model.config.normalization_stats)  # one set of numbers in the folder
        self.niaf_processor.save_pretrained(str(Path(save_directory) / NIAF_PROCESSOR_DIR))

    @classmethod
    def from_pretrained(cls, pretrained_name_or_path: str | Path, *, strict: bool = True, **kwargs: Any):
        """`PreTrainedPolicy.from_pretrained`, always strict: a missing, unexpected or differently shaped weight
        raises instead of being left at its random initialisation (LeRobot's default is ``strict=False``)."""
        if not strict:
            raise ValueError("NiafPolicy loads strictly; strict=False is not supported.")
        folder = Path(str(pretrained_name_or_path))
        if not folder.is_dir():
            from huggingface_hub import snapshot_download

            hub = {k: kwargs[k] for k in ("revision", "cache_dir", "token", "local_files_only", "force_download")
                   if kwargs.get(k) is not None}
            folder = Path(snapshot_download(str(pretrained_name_or_path), allow_patterns=[f"{NIAF_PROCESSOR_DIR}/*"],
                                            **hub))
        kwargs.setdefault("niaf_processor_path", folder / NIAF_PROCESSOR_DIR)
        return super().from_pretrained(pretrained_name_or_path, strict=True, **kwargs)

    # ------------------------------------------------------------------------------------------------------
    # LeRobot interface
    # ------------------------------------------------------------------------------------------------------
    def get_optim_params(self) -> list:
        """The trainable parameters; with the recipe's ``training.head_learning_rate``, two groups as niaf-train
        makes them (backbone at the optimiser's lr, NIAF's head at ``head_learning_rate``)."""
        head_lr = self.config.recipe.training.head_learning_rate
        if head_lr is None:
            return [p for p in self.parameters() if p.requires_grad]
        from niaf_train.training.building import head_parameter

        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        body = [p for n, p in named if not head_parameter(n)]
        head = [p for n, p in named if head_parameter(n)]
        return [g for g in ({"params": body}, {"params": head, "lr": float(head_lr)}) if g["params"]]

    def reset(self) -> None:
        """Forget the running action functions (called at every episode start)."""
        self._streams: list[Any] | None = None
        self._step = 0

    def model_inputs(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Backbone inputs from a (normalised) LeRobot batch: images [B, 3, H, W] in [0, 1] per camera and the task
        text through the NIAF processor; ``observation.state`` as the (already normalised) ``state``."""
        keys = list(self.config.image_features)
        missing = [k for k in keys if k not in batch]
        if missing:
            raise KeyError(f"NiafPolicy: the batch lacks image feature(s) {missing}; it has {sorted(batch)}.")
        batch_size = int(batch[keys[0]].shape[0])
        images = [[batch[k][b] for k in keys] for b in range(batch_size)]
        encoded = self.niaf_processor(images=images, text=_task_texts(batch, batch_size))
        device = next(self.model.parameters()).device
        inputs = {k: v.to(device) for k, v in encoded.items()}
        if self.model.config.use_state:
            inputs["state"] = batch[OBS_STATE].to(device=device, dtype=torch.float32)
        return inputs

    def forward(self, batch: dict[str, Any]) -> tuple[Tensor, dict]:
        actions = batch[ACTION].to(torch.float32)
        pad = batch.get(f"{ACTION}_is_pad")
        mask = None if pad is None else ~pad.bool()
        out = self.model(**self.model_inputs(batch), actions=actions, action_mask=mask)
        info = {"loss_pos": float(out.loss_pos.detach())}
        if out.loss_jerk is not None:
            info["loss_jerk"] = float(out.loss_jerk.detach())
        return out.loss, info

    @torch.no_grad()
    def action_function(self, batch: dict[str, Any]):
        """The batch's action functions (`modeling_niaf.ActionFunction`, normalised action units, time 0 = the
        observation), queryable at any times without running the backbone again."""
        self.eval()
        return self.model.predict_action_function(**self.model_inputs(batch), denormalize=False)

    @torch.no_grad()
    def predict_action_chunk(self, batch: dict[str, Any], rate_hz: float | None = None, **kwargs: Any) -> Tensor:
        """Waypoints of the action function over its chunk, [B, N, D] (normalised units), at ``rate_hz``
        (N = floor(T · rate_hz) + 1 points at t = n / rate_hz); default: the model's ``control_hz``, i.e. the K
        points it was trained on."""
        if rate_hz is not None and not rate_hz > 0:
            raise ValueError(f"predict_action_chunk: rate_hz must be positive, got {rate_hz}.")
        fn = self.action_function(batch)
        if rate_hz is None:  # the K training points (τ_k exactly as in training)
            return fn(derivatives=0, denormalize=False).position
        duration = self.model.config.chunk_duration
        n = int(np.floor(duration * rate_hz + 1e-9)) + 1
        times = np.minimum(np.arange(n, dtype=np.float64) / float(rate_hz), duration)  # rounding at the end
        return fn(times=times, derivatives=0, denormalize=False).position

    @torch.no_grad()
    def select_action(self, batch: dict[str, Any], **kwargs: Any) -> Tensor:
        """One command per batch element at this call's time, read from the running action function."""
        from modeling_niaf.runtime import ActionStream

        t = self._step / self.execute_hz
        if self._step % self.config.n_action_steps == 0:
            fn = self.action_function(batch)
            if self._streams is None or len(self._streams) != len(fn):
                dim = self.model.config.action_dim
                self._streams = [
                    ActionStream(np.zeros(dim), t, blend_duration=self.config.blend_duration, switch=self.config.switch)
                    for _ in range(len(fn))
                ]
            for b, stream in enumerate(self._streams):
                stream.submit(fn[b], observation_time=t, now=t)  # a refusal is logged by the stream; it keeps going
        if self._streams is None:
            raise RuntimeError("NiafPolicy.select_action: no action function yet (call reset() at episode start).")
        command = np.stack([stream.command(t).position for stream in self._streams])
        self._step += 1
        device = next(self.model.parameters()).device
        return torch.as_tensor(command, dtype=torch.float32, device=device)


__all__ = ["NIAF_PROCESSOR_DIR", "NiafPolicy"]
