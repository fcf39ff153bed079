"""Policies for the comparison: anything that maps (observation, time) to an action function of one chunk.

``Policy = Callable[[dict, float], ActionFunctionLike]``: the observation dict holds ``observation.state``
([4D]: the command in force at the observation, q_d (rad), q̇_d (rad/s), q̈_d (rad/s²), then the goal (rad)),
``observation.velocity`` ([D] measured joint velocities, rad/s) and ``task``; the
returned function's time 0 is the observation time.

* :class:`OracleNiafPolicy` — an **oracle NIAF**, not a trained model: for each observation time it fits the
  modulations γ, β of a fixed (randomly initialised) NIAF SIREN by gradient descent to the reference motion's
  next chunk (L_pos + L_vel + L_jerk), and returns NIAF's own ``ActionFunction`` for them. It reads the future
  of the reference, so it bounds from above what a trained NIAF can do, while its outputs are genuine NIAF
  action functions (same SIREN, same closed-form derivatives, same de-normalisation).
* :class:`TrainedNiafPolicy` — a NIAF fine-tuned on the example's own demonstrations by ``niaf-train`` (``niaf_train.training``)
  (L_pos + L_vel + L_jerk), loaded through ``AutoModel`` / ``AutoProcessor`` with ``trust_remote_code=True``
  exactly as a Hub user would; it sees only the observation (rendered image, [q_d, q̇_d, q̈_d, goal], instruction).
* :class:`SharedChunks` — asks a policy once per observation time and replays that chunk to every later
  caller, so that all execution methods of an episode get the same chunks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

Policy = Callable[[dict, float], Any]

ORACLE_LABEL = (
    "oracle NIAF: gamma/beta of a fixed NIAF SIREN fitted to the reference chunk (not a trained model)"
)
TRAINED_LABEL = "trained NIAF: tiny NIAF fine-tuned on this example's demonstrations (niaf_train.finetune)"
IMAGE_KEY = "observation.images.front"


class OracleNiafPolicy:
    """NIAF action functions fitted to the reference motion (see module docstring).

    Args:
        reference: the episode's :class:`~arm.ReferenceMotion` (1 kHz grid).
        chunk_size: K, points of a chunk at the training rate.
        control_hz: f, the training rate (Hz); the chunk lasts T = (K-1)/f.
        action_center, action_half_range: [D] normalisation of the actions (physical = norm·half + center).
        siren_width, siren_layers, omega_0: the SIREN. ω₀ = 3 suits a 0.45 s chunk of smooth motion: with
            ω₀ = 30 a fixed random prior cannot be bent onto it by γ, β alone.
        steps, lr: Adam iterations and learning rate of the fit.
        polish_steps: L-BFGS iterations after Adam.
        velocity_weight, jerk_weight: λ_v, λ_j of the fit loss (normalised units per second).
        fit_points: points per chunk used by the fit (spanning [0, T]).
        seed: seed of the fixed SIREN.
    """

    def __init__(
        self,
        reference: Any,
        chunk_size: int,
        control_hz: float,
        action_center: np.ndarray,
        action_half_range: np.ndarray,
        *,
        siren_width: int = 32,
        siren_layers: int = 3,
        omega_0: float = 3.0,
        steps: int = 300,
        lr: float = 3e-2,
        velocity_weight: float = 1.0,
        jerk_weight: float = 1e-6,
        fit_points: int = 46,
        polish_steps: int = 100,
        seed: int = 0,
    ) -> None:
        import torch

        from modeling_niaf import NiafConfig
        from modeling_niaf.siren import ModulatedSiren

        self.torch = torch
        self.reference = reference
        self.config = NiafConfig(
            action_dim=reference.position.shape[1],
            chunk_size=chunk_size,
            control_hz=control_hz,
            siren_layers=siren_layers,
            siren_width=siren_width,
            siren_omega0=omega_0,
            modulation_groups=1,
        )
        self.chunk_duration = self.config.chunk_duration
        gen = torch.random.fork_rng()
        with gen:
            torch.manual_seed(seed)
            self.siren = ModulatedSiren(self.config).requires_grad_(False)
        self.center = np.asarray(action_center, dtype=np.float64)
        self.half = np.asarray(action_half_range, dtype=np.float64)
        self.steps, self.lr = steps, lr
        self.velocity_weight, self.jerk_weight = velocity_weight, jerk_weight
        self.fit_points = fit_points
        self.polish_steps = polish_steps
        self._cache: dict[int, Any] = {}
        self.label = ORACLE_LABEL

    def _targets(self, tick: int) -> tuple[np.ndarray, np.ndarray]:
        ref = self.reference
        span = int(round(self.chunk_duration / ref.dt))
        idx = tick + np.round(np.linspace(0, span, self.fit_points)).astype(int)
        if idx[-1] >= len(ref.position):
            raise ValueError(
                f"the reference ends {ref.duration} s, before the chunk observed at {tick * ref.dt} s; generate it "
                "at least one chunk longer than the episode."
            )
        return (ref.position[idx] - self.center) / self.half, ref.velocity[idx] / self.half

    def prepare(self, observation_times: Sequence[float]) -> None:
        """Fit the chunks of all these observation times in one batch (much faster than one by one)."""
        ticks = sorted({self.reference.index(t) for t in observation_times} - set(self._cache))
        if not ticks:
            return
        torch = self.torch
        pos, vel = zip(*(self._targets(i) for i in ticks), strict=True)
        target_p = torch.tensor(np.stack(pos), dtype=torch.float32)
        target_v = torch.tensor(np.stack(vel), dtype=torch.float32)
        shape = (len(ticks), self.config.siren_layers, self.config.siren_width)
        gamma = torch.zeros(shape, requires_grad=True)
        beta = torch.zeros(shape, requires_grad=True)
        tau = torch.linspace(-1.0, 1.0, self.fit_points)
        per_s = 2.0 / self.chunk_duration

        # Adam finds the basin, L-BFGS then polishes the (smooth, least-squares) fit to oracle accuracy.
        def loss_fn():
            p, v, _, j = self.siren(tau, gamma, beta, derivatives=3)
            loss = ((p - target_p) ** 2).mean() + self.velocity_weight * ((v * per_s - target_v) ** 2).mean()
            return loss + self.jerk_weight * ((j * per_s**3) ** 2).mean()

        adam = torch.optim.Adam([gamma, beta], lr=self.lr)
        for _ in range(self.steps):
            adam.zero_grad()
            loss_fn().backward()
            adam.step()
        lbfgs = torch.optim.LBFGS(
            [gamma, beta],
            lr=1.0,
            max_iter=self.polish_steps,
            history_size=20,
            tolerance_grad=1e-12,
            tolerance_change=1e-15,
            line_search_fn="strong_wolfe",
        )

        def closure():
            lbfgs.zero_grad()
            loss = loss_fn()
            loss.backward()
            return loss

        if self.polish_steps > 0:
            lbfgs.step(closure)
        with torch.no_grad():
            p = self.siren(tau, gamma, beta, derivatives=0)[0]
            rmse = float(((p - target_p) ** 2).mean().sqrt()) * float(np.mean(self.half))
        logger.info("oracle NIAF: fitted %d chunks, position RMSE %.2e rad", len(ticks), rmse)
        from modeling_niaf import ActionFunction

        for b, tick in enumerate(ticks):
            fn = ActionFunction(
                self.siren,
                gamma[b : b + 1].detach(),
                beta[b : b + 1].detach(),
                self.chunk_duration,
                self.center,
                self.half,
                self.config.chunk_size,
            )
            self._cache[tick] = fn.to_numpy()

    def __call__(self, observation: dict, time: float) -> Any:
        tick = self.reference.index(time)
        if tick not in self._cache:
            self.prepare([time])
        return self._cache[tick]


class TrainedNiafPolicy:
    """A fine-tuned NIAF checkpoint (Hub layout with its processor) as a :data:`Policy`.

    Args:
        checkpoint: folder written by ``niaf-train`` (``niaf_train.training``) (``OUTPUT_DIR/final``).
        device: torch device of the model.

    The observation must hold ``observation.images.front`` ([H, W, 3] uint8), ``observation.state``
    ([q_d, q̇_d, q̈_d, goal]) and ``task``. The returned function is sample 0's, in physical units (rad, rad/s),
    as a numpy evaluator; its time 0 is the observation time.
    """

    def __init__(self, checkpoint: str | Path, device: str = "cpu") -> None:
        import torch
        from transformers import AutoModel, AutoProcessor

        path = Path(checkpoint)
        if not (path / "config.json").is_file():
            raise ValueError(
                f"`checkpoint` must be a NIAF checkpoint folder with a config.json, got {str(path)!r}."
            )
        self.torch = torch
        self.device = torch.device(device)
        self.model = AutoModel.from_pretrained(str(path), trust_remote_code=True).to(self.device).eval()
        self.processor = AutoProcessor.from_pretrained(str(path), trust_remote_code=True)
        self.use_state = bool(self.model.config.use_state)
        self.chunk_duration = float(self.model.config.chunk_duration)
        self.label = TRAINED_LABEL

    def __call__(self, observation: dict, time: float) -> Any:
        if IMAGE_KEY not in observation:
            raise ValueError(
                f"`observation` needs {IMAGE_KEY!r} (a rendered [H, W, 3] image) for the trained NIAF."
            )
        torch = self.torch
        kwargs: dict[str, Any] = {
            "images": [[np.asarray(observation[IMAGE_KEY])]],
            "text": [observation["task"]],
        }
        if self.use_state:
            state = np.asarray(observation["observation.state"], dtype=np.float32)[None]
            kwargs["state"] = torch.from_numpy(state)
        inputs = {k: v.to(self.device) for k, v in self.processor(**kwargs).items()}
        # with relative actions (train_config.yaml) the model adds the commanded position of the state back
        return self.model.predict_action_function(**inputs, denormalize=True)[0].to_numpy()


class SharedChunks:
    """Ask ``policy`` once per observation time; later calls at that time get the same chunk back.

    One instance per episode: the first execution method to reach an observation time (in run.py, NIAF through
    the runtime) decides the chunk from its own observation, and every other method executes that chunk. This
    keeps the comparison about execution only (same chunks, different execution), as with the oracle.
    """

    def __init__(self, policy: Policy, dt: float = 1e-3) -> None:
        if dt <= 0:
            raise ValueError(f"`dt` must be > 0, got {dt}.")
        self.policy, self.dt = policy, dt
        self.label = getattr(policy, "label", type(policy).__name__)
        self._chunks: dict[int, Any] = {}

    def __call__(self, observation: dict, time: float) -> Any:
        key = int(round(time / self.dt))
        if key not in self._chunks:
            self._chunks[key] = self.policy(observation, time)
        return self._chunks[key]
