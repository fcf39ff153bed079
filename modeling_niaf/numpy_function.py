"""A predicted action chunk as plain numpy: the evaluator a control process runs, and its file form.

Nothing here imports torch, transformers or ``configuration_niaf``: a control process imports this module (and
[`modeling_niaf.runtime`]) without paying for the training stack. [`NumpyActionFunction`] is what
``ActionFunction.to_numpy()`` returns on the model side; [`NumpyActionFunction.to_dict`] /
[`NumpyActionFunction.from_dict`] (plain JSON-able lists) and [`NumpyActionFunction.save`] /
[`NumpyActionFunction.load`] (``.json`` or ``.npz``, never pickle) carry it from the policy process to the
controller::

    fn = model.predict_action_function(**inputs)[0].to_numpy()   # policy process (torch)
    fn.save("plan.npz")
    fn = NumpyActionFunction.load("plan.npz")                     # control process (numpy only)
    position, velocity = fn.at(t, derivatives=1)

Units as in [`ActionFunction`]: ``time`` is seconds from the chunk start (τ = -1 ↔ t = 0, τ = +1 ↔ t = T);
de-normalised positions are in the dataset's physical action units (plus the optional per-sample
``position_offset`` of relative actions), derivatives per second^k, scaled by the normalisation's half-range
only.
"""

from __future__ import annotations

import json
import math
import os
import stat
import tempfile
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

TAU_TOLERANCE = 1e-6
"""Slack on τ ∈ [-1, 1] so that times computed in floating point at the chunk ends are accepted."""

MAX_DERIVATIVE_ORDER = 3
"""Highest τ-derivative the evaluator returns (its recursion is written out to the jerk); equals
``siren.MAX_DERIVATIVE_ORDER`` of the torch SIREN (checked by the tests)."""

FORMAT_NAME = "niaf-numpy-action-function"
FORMAT_VERSION = 1
"""`NumpyActionFunction.to_dict` layout version; `from_dict` reads exactly this version."""

LIMITS = {"omega_0": 1000.0, "chunk_size": 10_000}
"""Upper bounds `from_dict` accepts: the same as ``configuration_niaf.HEAD_LIMITS`` for ``siren_omega0`` and
``chunk_size`` (checked by the tests; that module needs transformers, so they are repeated here)."""

CHUNK_DURATION_RANGE = (1e-4, 1e4)
"""Accepted chunk durations T in seconds: outside it the per-second derivatives ((2/T)³ for the jerk) lose
all precision or overflow."""

MAX_FILE_BYTES = 1 << 30
"""`NumpyActionFunction.load` refuses an ``.npz`` whose arrays would take more memory than this (1 GiB)."""

MAX_MEMORY_BYTES = 1 << 30
"""What a function may hold (its float64 inputs and the evaluator's own arrays) and what one call may allocate
for its intermediate arrays: a larger function or query is refused before it is allocated."""

_DERIVATIVE_NAMES = ("position", "velocity", "acceleration", "jerk")
_ARRAY_KEYS = ("action_center", "action_half_range", "position_offset", "readout_weight", "readout_bias",
               "gamma", "beta")
_SCALAR_KEYS = ("format", "format_version", "dtype", "omega_0", "chunk_duration", "chunk_size")
_DICT_KEYS = frozenset(_SCALAR_KEYS + _ARRAY_KEYS + ("weights", "biases"))


@dataclass
class ActionTrajectory:
    """Positions and derivatives of action functions at N time points.

    Attributes (torch tensors, or numpy arrays when produced by [`NumpyActionFunction`]):
        tau: [N] or [B, N], normalised chunk time.
        time: same shape as ``tau``, seconds from the chunk start.
        position: [B, N, D].
        velocity: [B, N, D] per second, or None when fewer derivatives were asked for.
        acceleration: [B, N, D] per second², or None.
        jerk: [B, N, D] per second³, or None.
        denormalized: whether the values are in physical units (True) or normalised action units (False).
    """

    tau: Any
    time: Any
    position: Any
    velocity: Any = None
    acceleration: Any = None
    jerk: Any = None
    denormalized: bool = True

    def to_numpy(self) -> ActionTrajectory:
        """A copy with every tensor moved to CPU numpy (float64 stays float64, float32 stays float32)."""
        def conv(v):
            return v.detach().cpu().numpy() if _is_tensor(v) else v

        return ActionTrajectory(**{f.name: conv(getattr(self, f.name)) for f in fields(self)})


def _is_tensor(value: Any) -> bool:
    """A torch tensor, recognised without importing torch."""
    return hasattr(value, "detach") and hasattr(value, "cpu")


def _position_offset(offset: Any, batch: int, dim: int) -> np.ndarray:
    """``position_offset`` as an owned float64 [B, D] array (None → zeros; [D] → the same for every sample)."""
    if offset is None:
        return np.zeros((batch, dim), dtype=np.float64)
    if _is_tensor(offset):
        offset = offset.detach().cpu().double().numpy()
    arr = np.asarray(offset, dtype=np.float64)
    if arr.shape == (dim,):
        arr = np.broadcast_to(arr, (batch, dim))
    if arr.shape != (batch, dim):
        raise ValueError(
            f"`position_offset` must have shape [B, D] = [{batch}, {dim}] or [D] = [{dim}] (physical action units, "
            f"one offset per sample and action dimension), got {arr.shape}."
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError("`position_offset` contains NaN or inf.")
    return np.array(arr, dtype=np.float64)  # an owned, contiguous copy

def _resolve_tau_numpy(tau, times, num_points, duration: float, default_points: int, extrapolate: bool) -> np.ndarray:
    given = [name for name, v in (("tau", tau), ("times", times), ("num_points", num_points)) if v is not None]
    if len(given) > 1:
        raise ValueError(f"Give at most one of `tau`, `times`, `num_points`; got {given}.")
    if num_points is not None:
        if isinstance(num_points, bool) or not isinstance(num_points, (int, np.integer)) or num_points < 1:
            raise ValueError(f"`num_points` must be a positive int, got {num_points!r}.")
        return np.linspace(-1.0, 1.0, int(num_points)) if num_points > 1 else np.array([-1.0])
    if times is not None:
        t = np.asarray(times, dtype=np.float64)
        name = "times"
        tau_arr = 2.0 * t / duration - 1.0
    elif tau is not None:
        tau_arr = np.asarray(tau, dtype=np.float64)
        name = "tau"
    else:
        return np.linspace(-1.0, 1.0, default_points)
    if tau_arr.ndim == 0:
        tau_arr = tau_arr.reshape(1)
    if tau_arr.ndim not in (1, 2) or tau_arr.shape[-1] == 0:
        raise ValueError(f"`{name}` must have shape [N] or [B, N] with N >= 1, got {tau_arr.shape}.")
    if not np.all(np.isfinite(tau_arr)):
        raise ValueError(f"`{name}` contains NaN or inf.")
    if not extrapolate and (tau_arr.min() < -1.0 - TAU_TOLERANCE or tau_arr.max() > 1.0 + TAU_TOLERANCE):
        span = f"t ∈ [0, {duration:g}] s" if name == "times" else "τ ∈ [-1, 1]"
        raise ValueError(
            f"`{name}` leaves the chunk ({span}): range [{tau_arr.min():g}, {tau_arr.max():g}] in τ. "
            "The field was only trained inside the chunk; pass `extrapolate=True` to evaluate outside it anyway."
        )
    return tau_arr


class NumpyActionFunction:
    """Torch-free evaluator of a batch of action functions (numpy, float32 or float64).

    The shared weights are kept once and the modulations as per-row scales (FiLM: ``(1+γ) ⊙ (W h)``), so the
    memory is that of the inputs (never B·L·H² per-sample weights) and each query is a handful of small
    matrix-vector products. A function that would hold more than [`MAX_MEMORY_BYTES`], or a call whose
    intermediate arrays would, is refused before anything is allocated. Same call signature and units as
    [`ActionFunction`]; returns an [`ActionTrajectory`] of numpy arrays. ``position_offset`` ([B, D] or [D],
    physical units, None = zeros) is added to de-normalised positions only, as in [`ActionFunction`].

    Args (shapes: B samples, L sine layers, H width, D action dimensions):
        weights, biases: the shared sine layers, [H, 1] then [H, H] (L of them), and [H].
        readout_weight, readout_bias: [D, H], [D].
        omega_0: ω₀ of the sine layers.
        gamma, beta: [B, L, H] per-sample modulations.
        chunk_duration: T in seconds. chunk_size: K, the default number of query points.
        action_center, action_half_range: [D] (physical = normalised·half + center).
        dtype: float32 or float64 arithmetic.

    [`to_dict`] / [`from_dict`] and [`save`] / [`load`] carry exactly these inputs, so a loaded function
    returns bit-identical numbers.
    """

    def __init__(
        self,
        weights: list[np.ndarray],
        biases: list[np.ndarray],
        readout_weight: np.ndarray,
        readout_bias: np.ndarray,
        omega_0: float,
        gamma: np.ndarray,
        beta: np.ndarray,
        chunk_duration: float,
        action_center: np.ndarray,
        action_half_range: np.ndarray,
        chunk_size: int = 10,
        dtype: type | np.dtype = np.float64,
        position_offset: np.ndarray | None = None,
    ) -> None:
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ValueError(f"`dtype` must be float32 or float64, got {self.dtype}.")
        self.chunk_duration = _chunk_duration(chunk_duration, "`chunk_duration`")
        shapes = [np.shape(gamma)] + [np.shape(w) for w in weights] + [np.shape(readout_weight)]
        if len(shapes[0]) != 3 or any(len(x) != 2 for x in shapes[1:]):
            raise ValueError(f"`gamma` must be [B, L, H] and the weights 2-d, got shapes {shapes}.")
        footprint = _footprint(*shapes[0], shapes[-1][0], self.dtype.itemsize)
        if footprint > MAX_MEMORY_BYTES:
            raise ValueError(f"the function would hold {footprint} bytes (B, L, H = {list(shapes[0])}), more than "
                             f"MAX_MEMORY_BYTES = {MAX_MEMORY_BYTES}.")
        # float64 copies of the inputs: everything below is computed from them, and to_dict writes them, so a
        # function rebuilt by from_dict computes exactly the same numbers (float32 inputs are widened exactly)
        self._inputs = {
            "weights": [np.array(w, dtype=np.float64) for w in weights],
            "biases": [np.array(b, dtype=np.float64) for b in biases],
            "readout_weight": np.array(readout_weight, dtype=np.float64),
            "readout_bias": np.array(readout_bias, dtype=np.float64),
            "gamma": np.array(gamma, dtype=np.float64),
            "beta": np.array(beta, dtype=np.float64),
        }
        weights, biases = self._inputs["weights"], self._inputs["biases"]
        gamma, beta = self._inputs["gamma"], self._inputs["beta"]
        readout_weight, readout_bias = self._inputs["readout_weight"], self._inputs["readout_bias"]
        self.omega_0 = float(omega_0)
        self.chunk_size = int(chunk_size)
        # The shared weights once, transposed and contiguous for BLAS ([in, H]); per sample b and layer l the
        # row scale w0 (1 + gamma) and the modulated bias w0 (b + beta), [B, L, H]: the modulated layer is
        # (w0 (1+gamma) * W) h = w0 (1+gamma) * (W h), so no per-sample weight matrix is ever built.
        self._wt = [np.ascontiguousarray(w.T, dtype=self.dtype) for w in weights]
        self._scale = (self.omega_0 * (1.0 + gamma)).astype(self.dtype)
        self._b = (self.omega_0 * (np.stack(biases)[None] + beta)).astype(self.dtype)
        self._wot = np.ascontiguousarray(np.asarray(readout_weight).T, dtype=self.dtype)
        self._bo = np.asarray(readout_bias, dtype=self.dtype)
        self.action_half_range = np.asarray(action_half_range, dtype=np.float64)
        self.batch_size = int(gamma.shape[0])
        self.position_offset = _position_offset(position_offset, self.batch_size, self._wot.shape[1])
        self.action_center = np.asarray(action_center, dtype=np.float64)
        per_second = 2.0 / self.chunk_duration
        # per unit τ → per second (and physical units): row `order` scales that derivative, [4, 1] and [4, D]
        self._scales_normalised = (per_second ** np.arange(MAX_DERIVATIVE_ORDER + 1))[:, None]
        self._scales_physical = self._scales_normalised * self.action_half_range

    def __call__(
        self,
        tau=None,
        times=None,
        num_points: int | None = None,
        derivatives: int = 3,
        denormalize: bool = True,
        extrapolate: bool = False,
    ) -> ActionTrajectory:
        derivatives = _derivative_order(derivatives)
        if isinstance(num_points, (int, np.integer)) and not isinstance(num_points, bool):
            self._check_query_memory(derivatives, int(num_points))  # before linspace allocates the points
        tau_arr = _resolve_tau_numpy(tau, times, num_points, self.chunk_duration, self.chunk_size, extrapolate)
        if tau_arr.ndim == 2 and tau_arr.shape[0] != self.batch_size:
            raise ValueError(f"`tau` of shape [B, N] must have B={self.batch_size}, got {tau_arr.shape}.")
        self._check_query_memory(derivatives, tau_arr.shape[-1])
        if self.batch_size == 1:
            out = self._evaluate_one(0, tau_arr.reshape(-1), derivatives)[:, None]  # [k+1, 1, N, D]
        else:
            tb = np.broadcast_to(tau_arr, (self.batch_size, tau_arr.shape[-1]))  # [B, N]
            out = np.stack([self._evaluate_one(s, tb[s], derivatives) for s in range(self.batch_size)], axis=1)
        scales = self._scales_physical if denormalize else self._scales_normalised
        result: dict[str, Any] = {}
        for order in range(derivatives + 1):
            v = out[order] * scales[order]  # per unit τ → per second (and physical units)
            if denormalize and order == 0:
                v += self.action_center + self.position_offset[:, None, :]
            result[_DERIVATIVE_NAMES[order]] = v
        time = (tau_arr + 1.0) * (self.chunk_duration / 2.0)
        return ActionTrajectory(tau=tau_arr, time=time, denormalized=denormalize, **result)

    def _check_query_memory(self, derivatives: int, points: int) -> None:
        """Refuse a call whose intermediate arrays (about 4 of [k+1, N, H] per sample, and the [k+1, B, N, D]
        result) would exceed MAX_MEMORY_BYTES."""
        width = max(self._wt[0].shape[1], self._wot.shape[1])
        need = 8 * (derivatives + 1) * points * (4 * width + 2 * self.batch_size * self._wot.shape[1])
        if need > MAX_MEMORY_BYTES:
            raise ValueError(f"{points} query points would need about {need} bytes of intermediate arrays, more "
                             f"than MAX_MEMORY_BYTES = {MAX_MEMORY_BYTES}; query fewer points per call.")

    def at(self, time: float, derivatives: int = 1, sample: int = 0) -> np.ndarray:
        """The hot path of a control loop: one sample at one time, physical units, no dataclass.

        Args:
            time: seconds from the chunk start, in [0, T].
            derivatives: 0..3.
            sample: which function of the batch (negative counts from the end, as in Python).

        Returns:
            [derivatives + 1, D]: position (including the sample's ``position_offset``), then velocity
            (per s), acceleration (per s²), jerk (per s³).
        """
        if isinstance(time, bool) or not isinstance(time, (int, float, np.integer, np.floating)):
            raise ValueError(f"`time` must be a real number of seconds, got {time!r}.")
        tau = 2.0 * float(time) / self.chunk_duration - 1.0
        if not -1.0 - TAU_TOLERANCE <= tau <= 1.0 + TAU_TOLERANCE:  # also false for NaN
            raise ValueError(f"`time` {time!r} s is outside the chunk [0, {self.chunk_duration:g}] s.")
        derivatives = _derivative_order(derivatives)
        if isinstance(sample, bool) or not isinstance(sample, (int, np.integer)) \
                or not -self.batch_size <= sample < self.batch_size:
            raise ValueError(f"`sample` must be an int in {-self.batch_size}..{self.batch_size - 1} (Python indexing; "
                             f"the batch holds {self.batch_size} function(s)), got {sample!r}.")
        sample = int(sample) % self.batch_size
        out = self._evaluate_one(sample, np.array([tau], dtype=self.dtype), derivatives)[:, 0, :]
        out = out * self._scales_physical[: derivatives + 1]
        out[0] += self.action_center + self.position_offset[sample]
        return out

    def _evaluate_one(self, s: int, tau: np.ndarray, k: int) -> np.ndarray:
        """Orders 0..k of sample s at the points tau [N]: [k+1, N, D], normalised units per unit tau."""
        wt, scale, bias = self._wt, self._scale[s], self._b[s]
        du = scale[0] * wt[0][0]  # [H]: the first layer's u' (scalar input), constant in tau
        u = np.multiply.outer(tau.astype(self.dtype, copy=False), du) + bias[0]  # [N, H]
        sin_u = np.sin(u)
        hs = np.empty((k + 1,) + u.shape, dtype=self.dtype)
        hs[0] = sin_u
        if k >= 1:
            cos_u = np.cos(u)
            hs[1] = cos_u * du
            if k >= 2:
                du2 = du * du
                hs[2] = -sin_u * du2
                if k >= 3:
                    hs[3] = -cos_u * (du2 * du)
        n, width = u.shape
        for w, g, b in zip(wt[1:], scale[1:], bias[1:], strict=True):
            us = (hs.reshape(-1, width) @ w).reshape(k + 1, n, -1) * g  # one BLAS call for every order, then FiLM
            u = us[0] + b
            sin_u = np.sin(u)
            hs = np.empty_like(us)
            hs[0] = sin_u
            if k >= 1:
                cos_u = np.cos(u)
                du = us[1]
                hs[1] = cos_u * du
                if k >= 2:
                    du2 = du * du
                    hs[2] = cos_u * us[2] - sin_u * du2
                    if k >= 3:
                        hs[3] = cos_u * (us[3] - du2 * du) - 3.0 * sin_u * du * us[2]
        out = (hs.reshape(-1, width) @ self._wot).reshape(k + 1, n, -1)
        out[0] += self._bo
        return out

    # ----------------------------------------------------------------------------------------------------
    # Plain-data and file forms (for a control process that has no torch)
    # ----------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The function as plain JSON-able data: nested lists of floats (float64, exact) and metadata.

        Keys: ``format`` ("niaf-numpy-action-function"), ``format_version`` (1), ``dtype`` ("float32" /
        "float64", the evaluator's arithmetic), ``omega_0``, ``chunk_duration`` (T, s), ``chunk_size`` (K),
        ``action_center`` / ``action_half_range`` [D], ``position_offset`` [B, D] (physical units),
        ``weights`` (L lists: [H, 1], then [H, H]), ``biases`` (L lists of [H]), ``readout_weight`` [D, H],
        ``readout_bias`` [D], ``gamma`` / ``beta`` [B, L, H]. ``json.dumps`` writes every float so that
        ``json.loads`` reads back the same float64.
        """
        p = self._inputs
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "dtype": self.dtype.name,
            "omega_0": self.omega_0,
            "chunk_duration": self.chunk_duration,
            "chunk_size": self.chunk_size,
            "action_center": self.action_center.tolist(),
            "action_half_range": self.action_half_range.tolist(),
            "position_offset": self.position_offset.tolist(),
            "weights": [w.tolist() for w in p["weights"]],
            "biases": [b.tolist() for b in p["biases"]],
            "readout_weight": p["readout_weight"].tolist(),
            "readout_bias": p["readout_bias"].tolist(),
            "gamma": p["gamma"].tolist(),
            "beta": p["beta"].tolist(),
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "NumpyActionFunction.from_dict") -> NumpyActionFunction:
        """Rebuild a function from [`to_dict`]'s data (lists or numpy arrays), checking every key.

        Args:
            data: the mapping; unknown keys, missing keys, other format versions, non-numeric, ragged,
                non-finite or inconsistently shaped arrays are refused.
            source: how error messages name the data (e.g. the file it came from).

        Raises:
            ValueError: one line naming ``source``, the key and what was expected.
        """
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a dict as written by NumpyActionFunction.to_dict, "
                             f"got {type(data).__name__}")
        missing = sorted(_DICT_KEYS - set(data))
        unknown = sorted(str(k) for k in set(data) - _DICT_KEYS)
        if data.get("format") != FORMAT_NAME:
            raise ValueError(f"{source}: key 'format' must be {FORMAT_NAME!r}, got {data.get('format')!r}")
        version = data.get("format_version")
        if isinstance(version, bool) or version != FORMAT_VERSION:
            raise ValueError(f"{source}: key 'format_version' must be {FORMAT_VERSION} (this niaf reads version "
                             f"{FORMAT_VERSION} only), got {version!r}")
        if missing or unknown:
            raise ValueError(f"{source}: missing keys {missing}, unknown keys {unknown}; expected exactly "
                             f"{sorted(_DICT_KEYS)}")
        dtype = data["dtype"]
        if dtype not in ("float32", "float64"):
            raise ValueError(f"{source}: key 'dtype' must be 'float32' or 'float64', got {dtype!r}")
        omega_0 = _positive_number(data, "omega_0", source)
        chunk_duration = _chunk_duration(data["chunk_duration"], f"{source}: key 'chunk_duration'")
        chunk_size = data["chunk_size"]
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) \
                or not 1 <= chunk_size <= LIMITS["chunk_size"]:
            raise ValueError(f"{source}: key 'chunk_size' must be an int (K) in 1..{LIMITS['chunk_size']}, "
                             f"got {chunk_size!r}")
        gamma_shape, d_shapes = _shape(data["gamma"]), [_shape(data[k]) for k in _D_KEYS]
        if len(gamma_shape) == 3 and all(len(x) >= 1 for x in d_shapes):
            footprint = _footprint(*gamma_shape, d_shapes[0][0], np.dtype(dtype).itemsize)
            if footprint > MAX_MEMORY_BYTES:
                raise ValueError(f"{source}: the function would hold {footprint} bytes (B, L, H = "
                                 f"{list(gamma_shape)}), more than MAX_MEMORY_BYTES = {MAX_MEMORY_BYTES}")
        gamma = _array(data, "gamma", source, ("B", "L", "H"))
        b, n_layers, h = gamma.shape
        beta = _array(data, "beta", source, ("B", "L", "H"), (b, n_layers, h))
        for key in ("weights", "biases"):
            if not isinstance(data[key], (list, tuple)) or len(data[key]) != n_layers:
                raise ValueError(f"{source}: key {key!r} must be a list of L = {n_layers} arrays (L from 'gamma' "
                                 f"[B, L, H]), got {type(data[key]).__name__} of length "
                                 f"{len(data[key]) if isinstance(data[key], (list, tuple)) else '-'}")
        weights = [_array(data["weights"], i, source, ("H", "in"), (h, 1 if i == 0 else h), f"weights[{i}]")
                   for i in range(n_layers)]
        biases = [_array(data["biases"], i, source, ("H",), (h,), f"biases[{i}]") for i in range(n_layers)]
        # D, the action dimension, is what most of the keys that carry it agree on: the odd one out is named
        sizes = [x[0] if len(x) >= 1 else None for x in d_shapes]
        d = max((v for v in sizes if v), key=lambda v: (sizes.count(v), v == sizes[1]), default=0)
        readout_weight = _array(data, "readout_weight", source, ("D", "H"), (d, h))
        return cls(
            weights=weights,
            biases=biases,
            readout_weight=readout_weight,
            readout_bias=_array(data, "readout_bias", source, ("D",), (d,)),
            omega_0=omega_0,
            gamma=gamma,
            beta=beta,
            chunk_duration=chunk_duration,
            action_center=_array(data, "action_center", source, ("D",), (d,)),
            action_half_range=_array(data, "action_half_range", source, ("D",), (d,)),
            chunk_size=int(chunk_size),
            dtype=np.dtype(dtype),
            position_offset=_array(data, "position_offset", source, ("B", "D"), (b, d)),
        )

    def save(self, path: str | os.PathLike) -> None:
        """Write the function to ``path``: ``.json`` ([`to_dict`] as JSON text) or ``.npz`` (arrays, no pickle).

        The file is written next to its destination and renamed into place, so a reader never sees half of it.
        """
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".json", ".npz"):
            raise ValueError(f"NumpyActionFunction.save: {path} must end in .json or .npz")
        data = self.to_dict()
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
        try:
            with os.fdopen(fd, "wb") as f:
                if suffix == ".json":
                    f.write(json.dumps(data, allow_nan=False).encode("utf-8"))
                else:
                    meta = {k: data[k] for k in _SCALAR_KEYS}
                    meta["num_layers"] = len(data["weights"])
                    arrays = {k: np.asarray(data[k], dtype=np.float64) for k in _ARRAY_KEYS}
                    for i, (w, bias) in enumerate(zip(self._inputs["weights"], self._inputs["biases"], strict=True)):
                        arrays[f"weights_{i}"], arrays[f"biases_{i}"] = w, bias
                    np.savez(f, metadata=np.array(json.dumps(meta)), **arrays)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike) -> NumpyActionFunction:
        """Read a function written by [`save`] (``.json`` or ``.npz``; ``.npz`` is read with ``allow_pickle=False``).

        Raises:
            FileNotFoundError: no such file.
            ValueError: one line naming the file (and key) for anything else: unreadable or truncated file,
                wrong suffix, pickled/object arrays, arrays larger than [`MAX_FILE_BYTES`], bad content.
        """
        path = Path(path)
        source = f"NumpyActionFunction.load({str(path)!r})"
        suffix = path.suffix.lower()
        if suffix not in (".json", ".npz"):
            raise ValueError(f"{source}: expected a .json or .npz file written by NumpyActionFunction.save")
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            raise FileNotFoundError(f"{source}: no such file") from None
        except OSError as err:
            raise ValueError(f"{source}: cannot be read ({err.strerror})") from None
        if not stat.S_ISREG(mode):  # a FIFO would block the control process forever, a device read endlessly
            kind = "a FIFO" if stat.S_ISFIFO(mode) else "a folder" if stat.S_ISDIR(mode) else "a device or socket"
            raise ValueError(f"{source}: {kind}, not a regular file written by NumpyActionFunction.save")
        if suffix == ".json":
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError, RecursionError) as err:
                raise ValueError(f"{source}: not valid JSON text ({type(err).__name__}: {err})") from None
        else:
            data = _read_npz(path, source)
        return cls.from_dict(data, source=source)


_D_KEYS = ("readout_weight", "action_center", "readout_bias", "action_half_range")
"""Keys whose first axis is the action dimension D."""


def _footprint(batch: int, layers: int, width: int, dim: int, itemsize: int) -> int:
    """Bytes a function of this shape holds: float64 inputs plus the evaluator's arrays in ``itemsize``."""
    shared = layers * width * width + layers * width + dim * width + 3 * dim
    per_sample = 2 * batch * layers * width + batch * dim
    return 8 * (shared + per_sample) + itemsize * (layers * width * width + dim * width + dim + 2 * batch * layers * width)


def _shape(value: Any) -> tuple[int, ...]:
    """The shape of nested lists or an array without copying it; () when ragged (refused later, by name)."""
    try:
        return tuple(np.shape(value))
    except (ValueError, TypeError):
        return ()


def _chunk_duration(value: Any, name: str) -> float:
    low, high = CHUNK_DURATION_RANGE
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not (math.isfinite(float(value)) and low <= float(value) <= high):
        raise ValueError(f"{name} must be a number of seconds in [{low:g}, {high:g}], got {value!r}")
    return float(value)


def _derivative_order(derivatives: Any) -> int:
    if isinstance(derivatives, bool) or not isinstance(derivatives, (int, np.integer)) \
            or not 0 <= derivatives <= MAX_DERIVATIVE_ORDER:
        raise ValueError(f"`derivatives` must be an int in 0..{MAX_DERIVATIVE_ORDER}, got {derivatives!r}.")
    return int(derivatives)


def _positive_number(data: dict, key: str, source: str) -> float:
    value = data[key]
    limit = LIMITS.get(key, math.inf)
    try:
        number = float(value) if not isinstance(value, (bool, str, bytes)) else math.nan
    except (TypeError, ValueError, OverflowError):
        number = math.nan
    if not (math.isfinite(number) and 0 < number <= limit):
        bound = f" and <= {limit:g}" if math.isfinite(limit) else ""
        raise ValueError(f"{source}: key {key!r} must be a finite number > 0{bound}, got {value!r}")
    return number


def _array(data: Any, key: str | int, source: str, dims: tuple[str, ...], shape: tuple[int, ...] | None = None,
           name: str | None = None) -> np.ndarray:
    """``data[key]`` as a finite float64 array with ``len(dims)`` axes (and ``shape`` when given)."""
    name = name or repr(key)
    expected = "[" + ", ".join(dims) + "]" + ("" if shape is None else f" = {list(shape)}")
    try:
        raw = np.asarray(data[key])
    except (ValueError, TypeError):  # ragged nested lists
        raise ValueError(f"{source}: key {name} must be a numeric array {expected}, got ragged nested lists") from None
    if raw.dtype.kind not in "iuf":
        raise ValueError(f"{source}: key {name} must be a numeric array {expected}, got dtype {raw.dtype} "
                         "(strings, booleans, None or mixed values)")
    if raw.ndim != len(dims) or (shape is not None and raw.shape != tuple(shape)) or raw.size == 0:
        raise ValueError(f"{source}: key {name} must have shape {expected}, got {list(raw.shape)}")
    arr = raw.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{source}: key {name} contains NaN or inf")
    return arr


def _read_npz(path: Path, source: str) -> dict[str, Any]:
    """The arrays of a saved ``.npz`` as [`NumpyActionFunction.from_dict`] data; sizes checked before reading."""
    try:
        with zipfile.ZipFile(path) as zf:
            total = 0
            for info in zf.infolist():
                with zf.open(info) as member:  # the .npy header: shape and dtype, before any data is allocated
                    version = np.lib.format.read_magic(member)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read_header(member)
                nbytes = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
                total += nbytes
                if nbytes > info.file_size or total > MAX_FILE_BYTES:
                    raise ValueError(f"member {info.filename} claims {nbytes} bytes (stored: {info.file_size}; "
                                     f"limit for all arrays {MAX_FILE_BYTES})")
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise ValueError(f"{source}: not a readable NumpyActionFunction .npz ({type(err).__name__}: {err})") from None
    if "metadata" not in arrays or arrays["metadata"].dtype.kind != "U" or arrays["metadata"].ndim != 0:
        raise ValueError(f"{source}: missing the 'metadata' entry (a JSON string) written by NumpyActionFunction.save")
    try:
        meta = json.loads(str(arrays.pop("metadata")[()]))
    except (ValueError, RecursionError) as err:
        raise ValueError(f"{source}: entry 'metadata' is not valid JSON ({err})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{source}: entry 'metadata' must be a JSON object, got {type(meta).__name__}")
    n_layers = meta.pop("num_layers", None)
    if isinstance(n_layers, bool) or not isinstance(n_layers, int) or not 0 < n_layers <= 1000:
        raise ValueError(f"{source}: metadata key 'num_layers' must be a positive int, got {n_layers!r}")
    data: dict[str, Any] = dict(meta)
    for key in ("weights", "biases"):
        names = [f"{key}_{i}" for i in range(n_layers)]
        absent = [n for n in names if n not in arrays]
        if absent:
            raise ValueError(f"{source}: missing arrays {absent} (num_layers = {n_layers})")
        data[key] = [arrays.pop(n) for n in names]
    data.update(arrays)  # unknown extra arrays are refused by from_dict
    return data


__all__ = ["ActionTrajectory", "CHUNK_DURATION_RANGE", "FORMAT_VERSION", "MAX_DERIVATIVE_ORDER", "MAX_MEMORY_BYTES",
           "NumpyActionFunction", "TAU_TOLERANCE"]
