"""Action chunking, pure numpy: τ grids, chunk and dense indices with padding, finite-difference velocities, and
the samples of one episode (:func:`chunk_episode`). The rules are in :mod:`niaf_train.data.chunking`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from .episodes import Episode


def tau_grid(chunk_size: int) -> np.ndarray:
    """τ_k = -1 + 2k/(K-1) for k = 0..K-1, float32 [K]."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 2:
        raise ValueError(f"chunk_size must be an int >= 2, got {chunk_size!r}")
    k = np.arange(chunk_size, dtype=np.float64)
    return (-1.0 + 2.0 * k / (chunk_size - 1)).astype(np.float32)


def chunk_indices(length: int, start: int, chunk_size: int, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Source-frame indices of one chunk and its padding mask.

    Args:
        length: T, the episode length in frames.
        start: t, the observed frame (0 <= t < T).
        chunk_size: K.
        stride: s, frames between consecutive chunk points.

    Returns:
        ``(indices, is_pad)``: int64 [K] frame indices, padded points pointing at the last real point of the
        chunk, and bool [K] True where t + k·s >= T.
    """
    if not 0 <= start < length:
        raise ValueError(f"start frame {start} outside the episode [0, {length})")
    raw = start + stride * np.arange(chunk_size, dtype=np.int64)
    is_pad = raw >= length
    last_real = start + stride * ((length - 1 - start) // stride)
    return np.where(is_pad, last_real, raw), is_pad


def dense_points(chunk_size: int, stride: int, dense_every: int) -> int:
    """M = (K-1)·s/d + 1, the dense points of a chunk of K points at stride s kept every d source frames.

    Raises ValueError unless d >= 1 divides s (then every chunk point is a dense point)."""
    tau_grid(chunk_size)
    stride = _check_positive_int("stride", stride)
    dense_every = _check_positive_int("dense_every", dense_every)
    if stride % dense_every:
        raise ValueError(f"dense_every={dense_every} must divide the chunk stride {stride} (so that every chunk "
                         "point is a dense point)")
    return (chunk_size - 1) * stride // dense_every + 1


def finite_difference_velocities(actions: np.ndarray, fps: float) -> np.ndarray:
    """Velocities [T, D] per second of actions [T, D] sampled at ``fps`` Hz: central differences
    (a[t+1] - a[t-1])·fps/2 inside, one-sided (a[1] - a[0])·fps and (a[T-1] - a[T-2])·fps at the ends; zeros for a
    one-frame episode. float32."""
    a = np.asarray(actions, dtype=np.float64)
    if len(a) < 2:
        return np.zeros_like(a, dtype=np.float32)
    return np.gradient(a, 1.0 / float(fps), axis=0).astype(np.float32)


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


def chunk_episode(
    episode: Episode,
    chunk_size: int,
    stride: int = 1,
    sample_every: int | None = None,
    dense_every: int | None = None,
    difference_velocities: bool = False,
) -> Iterator[dict[str, Any]]:
    """Cut one (validated) episode into samples.

    Yields dicts with numpy values: ``"images"`` (camera → uint8 [H, W, 3]), ``"observation.state"``
    (float32 [S], if any), ``"action"`` float32 [K, D], ``"velocity"`` float32 [K, D] (if any),
    ``"action_is_pad"`` bool [K], ``"tau"`` float32 [K], ``"frame_index"`` int, ``"timestamp"`` float
    (seconds), ``"task"`` str; with ``dense_every`` also ``"dense_action"`` [M, D], ``"dense_velocity"``
    [M, D] (if any), ``"dense_is_pad"`` [M] and ``"dense_tau"`` [M]. With ``difference_velocities`` an episode
    without velocities gets :func:`finite_difference_velocities`. See the module docstring for the padding,
    stride and dense rules.
    """
    stride = _check_positive_int("stride", stride)
    every = stride if sample_every is None else _check_positive_int("sample_every", sample_every)
    tau = tau_grid(chunk_size)
    length = len(episode)
    velocities = episode.velocities
    if velocities is None and difference_velocities:
        velocities = finite_difference_velocities(episode.actions, episode.fps)
    if dense_every is not None:
        m = dense_points(chunk_size, stride, dense_every)
        dense_tau = tau_grid(m)
    for t in range(0, length, every):
        idx, is_pad = chunk_indices(length, t, chunk_size, stride)
        sample: dict[str, Any] = {
            "images": {cam: np.asarray(frames[t]) for cam, frames in episode.images.items()},
            "task": episode.instruction,
            "action": np.ascontiguousarray(episode.actions[idx], dtype=np.float32),
            "action_is_pad": is_pad.copy(),
            "tau": tau,
            "frame_index": t,
            "timestamp": t / float(episode.fps),
        }
        if episode.states is not None:
            sample["observation.state"] = np.asarray(episode.states[t], dtype=np.float32)
        if velocities is not None:
            vel = np.array(velocities[idx], dtype=np.float32)
            vel[is_pad] = 0.0
            sample["velocity"] = vel
        if dense_every is not None:
            didx, dpad = chunk_indices(length, t, m, dense_every)
            sample["dense_action"] = np.ascontiguousarray(episode.actions[didx], dtype=np.float32)
            sample["dense_is_pad"] = dpad.copy()
            sample["dense_tau"] = dense_tau
            if velocities is not None:
                dvel = np.array(velocities[didx], dtype=np.float32)
                dvel[dpad] = 0.0
                sample["dense_velocity"] = dvel
        yield sample
