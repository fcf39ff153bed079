"""Batches for training: the seeded epoch sampler and the collator that calls the processor."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch


class EpochSampler(torch.utils.data.Sampler[int]):
    """A fixed-seed permutation of ``indices`` per epoch (identical on every process; Accelerate shards it).

    ``epoch`` is set by the training loop before each pass; the order depends only on (seed, epoch), so a
    resumed run sees the same samples in the same order as an uninterrupted one.
    """

    def __init__(self, indices: np.ndarray, seed: int) -> None:
        self.indices = np.asarray(indices, dtype=np.int64)
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        return iter(self.indices[rng.permutation(len(self.indices))].tolist())


class Collator:
    """Rows of a chunk dataset (torch view) → model inputs via the :class:`NiafProcessor`.

    Physical actions/velocities/state are normalised by the processor; ``action_mask`` = not ``action_is_pad``.
    With ``use_dense`` the rows' dense columns (``dense_action``, ``dense_velocity``, ``dense_is_pad``,
    ``dense_tau``; :mod:`niaf_train.data.chunking`) become ``dense_actions``, ``dense_velocities`` (with
    ``use_velocity``), ``dense_mask`` and ``dense_tau`` [M] (one grid for the batch), normalised like the chunk.
    With relative actions the processor (its ``relative_action_state_indices``) turns the absolute chunks into
    deltas from the row's ``observation.state``; velocities are unchanged. ``check`` (e.g. the model's
    ``input_value_checker()``) runs on every batch the processor returns, before it reaches the device, so the
    model's forward can skip its own value checks (``check_inputs_in_forward = False``).
    """

    def __init__(
        self, processor: Any, cameras: list[str], use_state: bool, use_velocity: bool,
        check: Callable[..., None] | None = None, use_dense: bool = False, image_shift: int = 0, seed: int = 0,
    ) -> None:
        if image_shift < 0:
            raise ValueError(f"Collator: image_shift must be >= 0 pixels, got {image_shift}")
        self.image_shift, self.seed = int(image_shift), int(seed)
        self._calls = 0  # batches collated so far: a new draw of shifts for every batch
        self.processor = processor
        self.check = check
        self.cameras = cameras
        self.use_state = use_state
        self.use_velocity = use_velocity
        self.use_dense = use_dense
        if getattr(processor, "relative_action_state_indices", None) is not None and not use_state:
            raise ValueError("Collator: the processor makes relative actions, which need `use_state=True` (deltas "
                             "from the state).")

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        images = [[row[c] for c in self.cameras] for row in rows]  # uint8 [3, H, W]: the processor takes them as they are
        if self.image_shift:
            images = self._shifted(images, rows)
        kwargs: dict[str, Any] = {
            "images": images,
            "text": [row["task"] for row in rows],
            "actions": torch.stack([row["action"] for row in rows]),
            "action_mask": ~torch.stack([row["action_is_pad"] for row in rows]),
        }
        if self.use_state:
            kwargs["state"] = torch.stack([row["observation.state"] for row in rows])
        if self.use_velocity:
            kwargs["velocities"] = torch.stack([row["velocity"] for row in rows])
        batch = dict(self.processor(**kwargs))
        if self.use_dense:
            batch.update(self._dense(rows))
        if self.check is not None:  # the model's value checks, here on CPU tensors: no device synchronisation
            self.check(**batch)
        batch["sample_index"] = torch.tensor([int(row["index"]) for row in rows])
        return batch

    def _shifted(self, images: list[list[torch.Tensor]], rows: list[dict[str, Any]]) -> list[list[torch.Tensor]]:
        """Random-shift augmentation: each image padded by ``image_shift`` pixels (edges repeated) and cropped
        back to its size at a random offset, per image. The offsets depend on the seed, the samples' indices
        and how often this collator has been called, so a run is reproducible (a resumed run draws new ones)."""
        self._calls += 1
        rng = np.random.default_rng([self.seed, self._calls, *(int(row["index"]) for row in rows)])
        n = self.image_shift
        out = []
        for per_sample in images:
            shifted = []
            for image in per_sample:
                image = torch.as_tensor(image)
                h, w = image.shape[-2:]
                padded = torch.nn.functional.pad(image[None].float(), (n, n, n, n), mode="replicate")[0]
                dy, dx = rng.integers(0, 2 * n + 1, size=2)
                shifted.append(padded[:, dy:dy + h, dx:dx + w].to(image.dtype))
            out.append(shifted)
        return out

    def _dense(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        tau = rows[0]["dense_tau"]
        if any(not torch.equal(row["dense_tau"], tau) for row in rows[1:]):
            raise ValueError("Collator: rows with different dense τ grids in one batch (one chunk dataset, one grid)")
        actions = torch.stack([row["dense_action"] for row in rows]).to(torch.float64)
        if getattr(self.processor, "relative_action_state_indices", None) is not None:
            state = torch.stack([row["observation.state"] for row in rows]).to(torch.float64)
            actions = self.processor.relative_actions(actions.numpy(), state.numpy())
        out = {
            "dense_tau": torch.as_tensor(tau, dtype=torch.float32),
            "dense_actions": torch.as_tensor(np.asarray(self.processor.normalize_actions(np.asarray(actions))),
                                             dtype=torch.float32),
            "dense_mask": ~torch.stack([row["dense_is_pad"] for row in rows]),
        }
        if self.use_velocity and "dense_velocity" in rows[0]:
            velocities = torch.stack([row["dense_velocity"] for row in rows]).to(torch.float64).numpy()
            out["dense_velocities"] = torch.as_tensor(np.asarray(self.processor.normalize_velocities(velocities)),
                                                      dtype=torch.float32)
        return out
