"""NIAF models: a vision-language backbone whose learned query tokens modulate a shared SIREN.

Shipped to the Hub as remote code, flat next to ``configuration_niaf.py``, ``siren.py``,
``action_function.py``, ``backbones.py``, ``normalization.py``, ``processing_niaf.py`` and ``hub.py``. Every import of our
own modules is a single-dot relative import (the configuration and units ones have the tolerated try/except
fallback for the installed layout, where both live in the torch-free ``configuration_niaf`` package), so the Hub
loader finds and copies each file.

Data flow of one observation (reference: arXiv 2603.01766 §3):

    images + prompt (+ state) ──backbone, once──▶ Z ∈ R^{Q×d} at the Q learned query tokens
    Z ──ψ heads──▶ γ, β ∈ R^{L×H} ──▶ shared SIREN Φ(τ; γ, β), τ ∈ [-1, 1]

There is no autoregressive loop and no iterative denoising: one backbone pass gives the whole action
function, which can then be queried at any number of time points.

Classes, as transformers lays out a model: [`NiafPreTrainedModel`] (weight initialisation, class attributes);
[`NiafModel`], the base (backbone + queries + state pathway → Z); [`NiafActionPolicyMixin`], the action-policy
API every head shares (losses, ``predict_action_function``, ``generate_actions``, units); and the task model
[`NiafForActionFunction`] = base + ψ heads + SIREN. Comparison heads (niaf-train) are further task models on
the same base.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers import initialization as _init  # init that leaves checkpoint weights alone
from transformers.utils import ModelOutput, logging

try:  # Hub copy: the configuration and units files sit next to this one
    from .configuration_niaf import NiafConfig
    from .normalization import AffineNormalizer, affine_from_stats, check_normalization_stats, relative_offset
except ImportError:  # installed package: both live in the torch-free configuration_niaf package
    from configuration_niaf.configuration_niaf import NiafConfig
    from configuration_niaf.normalization import (
        AffineNormalizer,
        affine_from_stats,
        check_normalization_stats,
        relative_offset,
    )

# transformers 5.5 copies only the *direct* relative imports of a local checkpoint's module file into its module
# cache, so every flat file the model needs is imported here directly (numpy_function also via action_function)
from .action_function import ActionFunction
from .backbones import PATCHES, family_of, model_types_where
from .hub import check_weight_files, save_for_hub
from .keypoints import KeypointConv2d, KeypointLinear, NiafImageKeypoints
from .numpy_function import ActionTrajectory
from .siren import ModulatedSiren, SineLinear, SirenReadout

logger = logging.get_logger(__name__)

PATCH_SEQUENCE_BACKBONES = model_types_where(pixel_layout=PATCHES)
"""Backbones whose ``pixel_values`` are flattened patch sequences described by ``image_grid_thw`` (derived from
``backbones.py``, the one place that describes the families)."""

# Config fields that fix the shapes of the head or the meaning of its outputs: a checkpoint cannot be loaded
# with other values without silently changing what the model predicts.
_CHECKPOINT_BOUND_FIELDS = (
    "action_dim", "siren_layers", "siren_width", "modulation_groups", "use_state", "state_dim",
    "normalization_mode", "normalization_stats", "unnormalized_action_dims", "chunk_size", "control_hz",
    "relative_action_state_indices",
)


# ----------------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------------
@dataclass
class NiafActionFunctionOutput(ModelOutput):
    """Output of [`NiafForActionFunction.forward`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): λ_p·L_pos + λ_v·L_vel + λ_j·L_jerk, returned
            when `actions` is given.
        loss_pos (`torch.FloatTensor` of shape `()`, *optional*): L_pos, mean over valid (sample, step) of
            the squared L2 error (summed over action dimensions), in normalised action units². With dense
            targets (`dense_actions`) every loss term is taken over the dense points instead of the K points.
        loss_vel (`torch.FloatTensor` of shape `()`, *optional*): L_vel, same reduction, velocity in
            normalised units per second (the τ-derivative times 2/T); only when `velocities` is given.
        loss_jerk (`torch.FloatTensor` of shape `()`, *optional*): L_jerk = mean ‖(2/T)³ d³Φ/dτ³‖², the
            jerk regulariser (normalised units per second³); only when `loss_weight_jerk > 0`.
        positions (`torch.FloatTensor` of shape `(B, K, D)`): Φ(τ_k) at the K training points, normalised
            action units, float32.
        velocities (`torch.FloatTensor` of shape `(B, K, D)`, *optional*): (2/T)·dΦ/dτ at the training
            points, normalised units per second; computed when a velocity or jerk loss is.
        gamma (`torch.FloatTensor` of shape `(B, L, H)`): frequency modulation per SIREN layer, float32.
        beta (`torch.FloatTensor` of shape `(B, L, H)`): phase modulation per SIREN layer, float32.
        query_hidden_states (`torch.FloatTensor` of shape `(B, Q, d)`): Z, the backbone's last hidden states
            at the query tokens (backbone dtype).
    """

    loss: torch.FloatTensor | None = None
    loss_pos: torch.FloatTensor | None = None
    loss_vel: torch.FloatTensor | None = None
    loss_jerk: torch.FloatTensor | None = None
    positions: torch.FloatTensor | None = None
    velocities: torch.FloatTensor | None = None
    gamma: torch.FloatTensor | None = None
    beta: torch.FloatTensor | None = None
    query_hidden_states: torch.FloatTensor | None = None


@dataclass
class NiafModelOutput(ModelOutput):
    """Output of [`NiafModel.forward`].

    Args:
        query_hidden_states (`torch.FloatTensor` of shape `(B, Q, d)`): Z, the backbone's last hidden states
            at the Q learned query tokens (backbone dtype): what every head turns into actions.
    """

    query_hidden_states: torch.FloatTensor | None = None


DENSE_KEYS = ("dense_tau", "dense_actions", "dense_velocities", "dense_mask")
"""Batch keys of the dense targets (`NiafForActionFunction.forward`)."""


@dataclass
class DenseTargets:
    """Dense supervision of one batch: ``tau`` [M] on the chunk's τ axis, ``actions`` [B, M, D] normalised,
    ``velocities`` [B, M, D] normalised per second (or None), ``mask`` [B, M] (1 = real point, or None)."""

    tau: torch.Tensor
    actions: torch.Tensor
    velocities: torch.Tensor | None = None
    mask: torch.Tensor | None = None


def _masked_mean(per_element: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Summed over D, averaged over valid (sample, point) pairs (``mask`` [B, N], None = all)."""
    if mask is None:
        weight = torch.ones(per_element.shape[:2], dtype=per_element.dtype, device=per_element.device)
    else:
        weight = mask.to(device=per_element.device, dtype=per_element.dtype)
    return (per_element.sum(-1) * weight).sum() / weight.sum().clamp_min(1.0)


def dense_supervised_losses(
    cfg: Any,
    chunk: list[torch.Tensor],
    actions: torch.Tensor,
    velocities: torch.Tensor | None,
    action_mask: torch.Tensor | None,
    dense_values: list[torch.Tensor] | None = None,
    dense: DenseTargets | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(loss, L_pos, L_vel, L_jerk) of a function head, shared by NIAF and the B-spline comparison head.

    ``chunk`` / ``dense_values``: [position, velocity per s, acceleration per s², jerk per s³] (as many as were
    computed) at the K chunk points / the M dense points, each [B, N, D]. Without ``dense`` every term is taken
    over the K points (masked by ``action_mask``); with it, L_pos and L_jerk over the dense points (masked by
    ``dense.mask``), L_vel over the dense points when ``dense.velocities`` is given, else over the K points
    with ``velocities``. L_vel is computed when velocity targets exist, L_jerk when λ_j > 0.
    """
    if dense is None:
        values, mask, pos_target, vel_target = chunk, action_mask, actions, velocities
        vel_values, vel_mask = chunk, action_mask
    else:
        values, mask, pos_target = dense_values, dense.mask, dense.actions
        vel_target = dense.velocities if dense.velocities is not None else velocities
        vel_values, vel_mask = (dense_values, dense.mask) if dense.velocities is not None else (chunk, action_mask)
    loss_pos = _masked_mean((values[0] - pos_target.to(values[0].dtype)).pow(2), mask)
    loss = cfg.loss_weight_position * loss_pos
    loss_vel = loss_jerk = None
    if vel_target is not None:
        loss_vel = _masked_mean((vel_values[1] - vel_target.to(values[0].dtype)).pow(2), vel_mask)
        loss = loss + cfg.loss_weight_velocity * loss_vel
    if cfg.loss_weight_jerk > 0:
        loss_jerk = _masked_mean(values[3].pow(2), mask)
        loss = loss + cfg.loss_weight_jerk * loss_jerk
    return loss, loss_pos, loss_vel, loss_jerk


# ----------------------------------------------------------------------------------------------------------
# Parameter-owning building blocks (each is matched in `_init_weights`, see NiafPreTrainedModel)
# ----------------------------------------------------------------------------------------------------------
class NiafQueryEmbeddings(nn.Module):
    """The Q learned query embeddings E_qry ∈ R^{Q×d}, initialised from N(0, query_init_std²)."""

    def __init__(self, num_queries: int, hidden_size: int, init_std: float) -> None:
        super().__init__()
        self.init_std = float(init_std)
        self.weight = nn.Parameter(torch.empty(num_queries, hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _init.normal_(self.weight, mean=0.0, std=self.init_std)

    def forward(self, batch_size: int) -> torch.Tensor:
        """Returns [B, Q, d]."""
        return self.weight.unsqueeze(0).expand(batch_size, -1, -1)


class NiafModulationHeads(nn.Module):
    """ψ heads: query outputs Z → row-wise FiLM modulations γ, β of every SIREN layer.

    The Q = L·(G+1) query outputs are cut into L blocks of G+1 tokens. In block ℓ, frequency token g goes
    through its own linear head d → H/G; the G outputs are concatenated into γ⁽ˡ⁾ ∈ R^H. The last (bias)
    token goes through a linear head d → H and gives β⁽ˡ⁾. All heads are zero-initialised, so a fresh model
    starts exactly at the shared motion prior (γ = β = 0); their gradients are not zero, so they learn.

    Parameters are stored stacked ([L, G, d, H/G] and [L, d, H]) so that all heads run as two einsums.
    """

    def __init__(self, num_layers: int, num_groups: int, width: int, hidden_size: int) -> None:
        super().__init__()
        self.num_layers = num_layers
        self.num_groups = num_groups
        self.width = width
        rows = width // num_groups
        self.gamma_weight = nn.Parameter(torch.empty(num_layers, num_groups, hidden_size, rows))
        self.gamma_bias = nn.Parameter(torch.empty(num_layers, num_groups, rows))
        self.beta_weight = nn.Parameter(torch.empty(num_layers, hidden_size, width))
        self.beta_bias = nn.Parameter(torch.empty(num_layers, width))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for p in (self.gamma_weight, self.gamma_bias, self.beta_weight, self.beta_bias):
            _init.zeros_(p)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: z [B, Q, d] (any float dtype; computed in the heads' dtype). Returns γ, β, each [B, L, H]."""
        batch = z.shape[0]
        # γ, β feed phases of ~ω₀ rad: keep them in the heads' (fp32) precision, also under bf16 autocast.
        with torch.autocast(device_type=z.device.type, enabled=False):
            z = z.to(self.gamma_weight.dtype).reshape(batch, self.num_layers, self.num_groups + 1, -1)
            gamma = torch.einsum("blgd,lgdr->blgr", z[:, :, : self.num_groups], self.gamma_weight) + self.gamma_bias
            beta = torch.einsum("bld,ldh->blh", z[:, :, self.num_groups], self.beta_weight) + self.beta_bias
        return gamma.reshape(batch, self.num_layers, self.width), beta


# ----------------------------------------------------------------------------------------------------------
# Pre-trained model base
# ----------------------------------------------------------------------------------------------------------
class NiafPreTrainedModel(PreTrainedModel):
    """Weight initialisation and class attributes shared by NIAF models."""

    config_class = NiafConfig
    base_model_prefix = "backbone"  # the attribute holding the vision-language model
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True
    _no_split_modules: list[str] = []  # a policy instance takes its backbone's (set in __init__)
    # The SIREN, its derivative recursion and the ψ heads never run in half precision: a bf16 phase of ~30 rad
    # carries ~0.1 rad of error.
    # `_keep_in_fp32_modules` covers fp16 loading, `_strict` also bf16 (transformers >= 4.54).
    _keep_in_fp32_modules = ["siren", "modulation_heads"]
    _keep_in_fp32_modules_strict = ["siren", "modulation_heads"]
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:
        # Our parameter-owning layers first: transformers' default would redraw them from N(0, 0.02).
        if isinstance(module, (SineLinear, SirenReadout, NiafQueryEmbeddings, NiafModulationHeads, KeypointConv2d,
                               KeypointLinear)):
            module.reset_parameters()
            return
        super()._init_weights(module)


class NiafSirenHead(NiafPreTrainedModel):
    """Only the shared SIREN prior: evaluate it with externally given γ, β.

    Useful for tests, benchmarks and for exporting the motion prior; the full policy is
    [`NiafForActionFunction`].
    """

    def __init__(self, config: NiafConfig) -> None:
        super().__init__(config)
        self.siren = ModulatedSiren(config)
        self.post_init()

    def forward(
        self, tau: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, derivatives: int = 0
    ) -> list[torch.Tensor]:
        """See [`ModulatedSiren.forward`]: tau [N] or [B, N], γ/β [B, L, H] → k+1 tensors [B, N, D]."""
        return self.siren(tau, gamma, beta, derivatives=derivatives)


# ----------------------------------------------------------------------------------------------------------
# Helpers for query injection
# ----------------------------------------------------------------------------------------------------------
def _left_align(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move right padding to the left, so that the queries appended at the end follow every prompt directly.

    input_ids, attention_mask: [B, L]. Each row is rolled right by its number of trailing padding tokens.
    The roll is computed unconditionally (a no-op gather for left-padded rows): testing first whether any
    row has trailing padding would read a value back from the device on every batch.
    """
    length = attention_mask.shape[1]
    positions = torch.arange(length, device=attention_mask.device)
    last_valid = torch.where(attention_mask.bool(), positions, -1).amax(dim=1)  # [B]
    trailing = (length - 1 - last_valid).clamp_min(0)
    index = (positions.unsqueeze(0) - trailing.unsqueeze(1)) % length
    return input_ids.gather(1, index), attention_mask.gather(1, index)


def _query_attention_mask(attention_mask: torch.Tensor, num_open: int, dtype: torch.dtype) -> torch.Tensor:
    """4-D additive float mask [B, 1, S, S] for a decoder-only backbone.

    Causal over the whole sequence, plus the last ``num_open`` tokens (the queries) see each other in both
    directions, minus padding columns. The prompt never sees the queries. A boolean 4-D mask would be
    misread by some attention backends, so the mask is float (0 = attend, dtype min = blocked).
    """
    seq = attention_mask.shape[1]
    device = attention_mask.device
    idx = torch.arange(seq, device=device)
    allowed = idx.unsqueeze(1) >= idx.unsqueeze(0)  # [S, S] causal
    start = seq - num_open
    allowed[start:, start:] = True
    allowed = allowed.unsqueeze(0) & attention_mask.bool().unsqueeze(1)  # [B, S, S]
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask.unsqueeze(1)


def _check_finite_weights(model: nn.Module, source: Any) -> None:
    """Refuse a loaded checkpoint whose parameters or buffers hold NaN or inf, naming the first such key."""
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.device.type == "meta":  # offloaded with device_map: checked where it is materialised
            continue
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(
                f"{type(model).__name__}.from_pretrained({str(source)!r}): weight `{name}` holds NaN or inf; the "
                "checkpoint is corrupt and every action it predicted would be wrong."
            )


def _non_finite_message(name: str) -> str:
    return f"`{name}` contains NaN or inf; clean the data (padded steps should repeat the last action)."


def check_input_values(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    pixel_values: torch.Tensor | None = None,
    image_grid_thw: torch.Tensor | None = None,
    state: torch.Tensor | None = None,
    actions: torch.Tensor | None = None,
    velocities: torch.Tensor | None = None,
    *,
    vocab_size: int,
    image_token_id: int | None,
    num_cameras: int,
    dense_actions: torch.Tensor | None = None,
    dense_velocities: torch.Tensor | None = None,
    **ignored: Any,
) -> None:
    """The checks of a batch that must read tensor values: token ids inside the vocabulary, at least one prompt
    token per row, the patch count of ``image_grid_thw``, image-token counts per row, and finiteness of
    ``pixel_values``, ``state``, ``actions`` and ``velocities``. Raises the ValueError `forward` would raise.

    All values come back to the host in one transfer, so a batch costs one host synchronisation; on CPU
    tensors (a collator, before the batch is moved to the accelerator) none. Shapes are checked by `forward`
    (no value is read for them). Other keys of a batch (``action_mask``, ``sample_index``) are ignored. Get one
    bound to a model with [`NiafForActionFunction.input_value_checker`].
    """
    device = input_ids.device
    scalars: list[torch.Tensor] = []  # 0-d int64 tensors, read back together with the per-row counts below

    def add(value: torch.Tensor) -> int:
        scalars.append(value.to(device=device, dtype=torch.int64).reshape(()))
        return len(scalars) - 1

    has_ids = input_ids.numel() > 0
    i_min = add(input_ids.min()) if has_ids else None
    i_max = add(input_ids.max()) if has_ids else None
    i_rows = add(attention_mask.bool().any(dim=1).all()) if attention_mask is not None else None
    i_patches = add(image_grid_thw.prod(dim=-1).sum()) if image_grid_thw is not None else None
    finite = {
        name: add(torch.isfinite(t).all())
        for name, t in (("pixel_values", pixel_values), ("state", state), ("actions", actions), ("velocities", velocities),
                        ("dense_actions", dense_actions), ("dense_velocities", dense_velocities))
        if t is not None
    }
    counts = (input_ids == image_token_id).sum(dim=1).to(torch.int64) if image_token_id is not None else None
    packed = torch.stack(scalars) if scalars else input_ids.new_zeros(0, dtype=torch.int64)
    if counts is not None:
        packed = torch.cat([packed, counts])
    values = packed.tolist()  # the one host synchronisation
    for name in ("actions", "velocities", "dense_actions", "dense_velocities"):  # targets first, as `forward`
        if name in finite and not values[finite[name]]:
            raise ValueError(_non_finite_message(name))
    if has_ids and (values[i_min] < 0 or values[i_max] >= vocab_size):
        raise ValueError(
            f"`input_ids` holds token ids in [{values[i_min]}, {values[i_max]}], outside the "
            f"backbone's vocabulary [0, {vocab_size}); tokenise with the processor saved with the checkpoint."
        )
    if i_rows is not None and not values[i_rows]:
        raise ValueError("`attention_mask`: every sample needs at least one prompt token.")
    if i_patches is not None and pixel_values is not None and (
        pixel_values.ndim != 2 or pixel_values.shape[0] != values[i_patches]
    ):
        raise ValueError(
            f"`pixel_values` must be [{values[i_patches]}, C·t·p·p] flattened patches matching `image_grid_thw`, "
            f"got {tuple(pixel_values.shape)}."
        )
    if "pixel_values" in finite and not values[finite["pixel_values"]]:
        raise ValueError(_non_finite_message("pixel_values"))
    if counts is not None:
        per_row = values[len(scalars):]
        if not per_row or any(c != per_row[0] for c in per_row) or per_row[0] == 0 or per_row[0] % num_cameras != 0:
            raise ValueError(
                f"`input_ids` must hold the same number of image tokens (id {image_token_id}) in every sample, a "
                f"multiple of num_cameras={num_cameras} and > 0; got per-sample counts {per_row}."
            )
    if "state" in finite and not values[finite["state"]]:
        raise ValueError(_non_finite_message("state"))


def _is_compiling() -> bool:
    check = getattr(torch.compiler, "is_compiling", None)  # torch >= 2.3
    return bool(check()) if check is not None else False


# ----------------------------------------------------------------------------------------------------------
# The base model: observation → query features Z
# ----------------------------------------------------------------------------------------------------------
class NiafModel(NiafPreTrainedModel):
    r"""NIAF's base model: backbone + Q learned query tokens + state pathway (+ optional image keypoints);
    returns Z ∈ R^{B×Q×d}.

    Every task model of NIAF is this base plus a head that turns Z into actions: [`NiafForActionFunction`]
    adds the ψ heads and the shared SIREN; niaf-train's comparison heads add theirs. The head classes inherit
    from this one instead of holding it as a ``model`` attribute, so that every parameter keeps the name it
    has in the checkpoints (``backbone.*``, ``query_embeddings.weight``, ``state_projection.*``); a head
    class adds its modules in [`_build_head`], which runs before the weights are initialised.

    ``NiafModel.from_pretrained`` loads the shared part of any NIAF checkpoint (of any head; the head's
    weights are left out).

    The backbone is built from ``config.backbone_config`` with random weights; use
    [`NiafModel.from_pretrained_backbone`] (on any head class) to start from a pretrained vision-language
    model, or `from_pretrained` to load a NIAF checkpoint.

    Inputs (as produced by [`NiafProcessor`]):

    * ``input_ids`` [B, L] and ``attention_mask`` [B, L]: the prompt with the backbone's image placeholder
      tokens (``num_cameras`` images' worth per sample). Either padding side is accepted.
    * ``pixel_values``: [B, num_cameras, 3, H, W] for Florence-2, PaliGemma, SmolVLM/Idefics3
      ([B, 3, H, W] is accepted when ``num_cameras == 1``); for Qwen-VL families the processor's flattened
      patches [Σ t·h·w, C·t·p·p] together with ``image_grid_thw`` [B·num_cameras, 3].
    * ``state`` [B, state_dim] (normalised), required iff ``config.use_state``.
    """

    # The weights of any head, when the base alone loads a head's checkpoint (a head class resets this: its
    # own loading stays strict).
    _keys_to_ignore_on_load_unexpected = [r"^(modulation_heads|siren|action_head)\."]

    def __init__(self, config: NiafConfig) -> None:
        super().__init__(config)
        self.family = config.backbone_config.model_type
        # query injection, pixel layout, positions: see backbones.py (raises for an unsupported model type)
        self.backbone_family = family_of(config.backbone_config)
        self.backbone = AutoModel.from_config(config.backbone_config)
        # device_map="auto" must not split a decoder layer of the backbone across devices
        self._no_split_modules = list(getattr(self.backbone, "_no_split_modules", None) or [])
        hidden = config.hidden_size
        self.query_embeddings = NiafQueryEmbeddings(config.num_queries, hidden, config.query_init_std)
        self.state_projection = nn.Linear(config.state_dim, hidden) if config.use_state else None
        self.image_keypoints = None
        if config.image_keypoints:
            if self.family in PATCH_SEQUENCE_BACKBONES:
                raise ValueError(
                    f"NiafConfig: `image_keypoints` needs images as [B, num_cameras, 3, H, W]; backbone "
                    f"`{self.family}` takes flattened patches"
                )
            self.image_keypoints = NiafImageKeypoints(
                config.num_cameras, config.image_keypoints, hidden,
                channels=config.image_keypoint_channels)
        self._build_head(config)
        self.post_init()

    def _build_head(self, config: NiafConfig) -> None:
        """Add the modules that turn Z into actions (none in the base). Called by `__init__` after the
        backbone, queries and state projection are built and before `post_init` initialises every weight, so
        a head class's weights are drawn in one pass, in module order."""

    # ------------------------------------------------------------------------------------------------------
    # Construction helpers
    # ------------------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained_backbone(
        cls,
        backbone_name_or_path: str,
        backbone_kwargs: dict[str, Any] | None = None,
        **config_kwargs: Any,
    ) -> NiafModel:
        """A model of this class whose backbone starts from pretrained weights; queries and head are fresh.

        Args:
            backbone_name_or_path: Hub id (e.g. ``"google/paligemma-3b-pt-224"``) or local folder of a
                transformers-native vision-language model.
            backbone_kwargs: passed to ``AutoModel.from_pretrained`` (``revision``, ``cache_dir``,
                ``local_files_only``, ``dtype``, ...).
            **config_kwargs: [`NiafConfig`] fields (``action_dim``, ``chunk_size``, ``control_hz``, ...).

        The matching processor (image tokens, prompt framing of this backbone) is
        ``NiafProcessor.from_pretrained_backbone(backbone_name_or_path, ...)``.
        """
        backbone_kwargs = dict(backbone_kwargs or {})
        backbone = AutoModel.from_pretrained(backbone_name_or_path, **backbone_kwargs)
        config = NiafConfig(backbone_config=backbone.config, **config_kwargs)
        model = cls(config)
        missing, unexpected = model.backbone.load_state_dict(backbone.state_dict(), strict=False)
        if missing or unexpected:
            raise ValueError(
                f"from_pretrained_backbone: weights of {backbone_name_or_path!r} do not fit the backbone built from "
                f"its config (missing {missing[:5]}, unexpected {unexpected[:5]})."
            )
        model.backbone.to(next(backbone.parameters()).dtype)
        return model

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *model_args: Any, **kwargs: Any) -> Any:
        """`PreTrainedModel.from_pretrained`, refusing overrides that contradict the checkpoint's head.

        Overriding ``action_dim``, the SIREN shape, ``chunk_size``/``control_hz`` or the normalisation
        (mode or statistics) of a NIAF checkpoint raises a ValueError, since the loaded head would predict
        something else than it was trained for. A checkpoint whose weights do not match the model's parameter
        names (a missing, unexpected or differently shaped backbone or head weight, typically a checkpoint
        saved with another transformers major version) raises a ValueError naming the keys, instead of
        leaving those weights randomly initialised. Pass ``ignore_mismatched_sizes=True`` to re-initialise
        deliberately (e.g. fine-tuning a head for another robot); missing weights are then initialised with
        a warning.
        """
        reinitialize = bool(kwargs.get("ignore_mismatched_sizes", False))
        if pretrained_model_name_or_path is not None:
            check_weight_files(pretrained_model_name_or_path)  # a truncated file: one line naming it
        if pretrained_model_name_or_path is not None and not reinitialize:
            cls._check_checkpoint_overrides(pretrained_model_name_or_path, kwargs)
        want_info = bool(kwargs.pop("output_loading_info", False))
        try:
            loaded = super().from_pretrained(pretrained_model_name_or_path, *model_args, output_loading_info=True,
                                             **kwargs)
        except Exception as err:  # safetensors' own errors (a Hub checkpoint damaged in the cache) name no file
            if "safetensor" not in type(err).__name__.lower():
                raise
            raise ValueError(f"{cls.__name__}.from_pretrained({str(pretrained_model_name_or_path)!r}): its "
                             f"model.safetensors is damaged ({type(err).__name__}: {str(err).splitlines()[0]}); "
                             "expected a complete safetensors file (download it again)") from None
        model, info = loaded
        cls._check_loaded_head(pretrained_model_name_or_path, model.config)
        _check_finite_weights(model, pretrained_model_name_or_path)
        if not reinitialize:
            _refuse_partial_load(cls.__name__, pretrained_model_name_or_path, model.config, info)
        return (model, info) if want_info else model

    @classmethod
    def _check_loaded_head(cls, path: Any, config: Any) -> None:
        """Refuse a checkpoint whose head (``config.action_head``) this class cannot hold; the base holds the
        shared part of any head's checkpoint."""

    @classmethod
    def _check_checkpoint_overrides(cls, path: Any, kwargs: dict[str, Any]) -> None:
        overrides = {k: kwargs[k] for k in _CHECKPOINT_BOUND_FIELDS if k in kwargs}
        given = kwargs.get("config")
        if not overrides and not isinstance(given, NiafConfig):
            return
        hub_keys = ("cache_dir", "revision", "local_files_only", "token", "subfolder", "force_download")
        saved = NiafConfig.from_pretrained(path, **{k: kwargs[k] for k in hub_keys if k in kwargs})
        wanted = dict(overrides)
        if isinstance(given, NiafConfig):
            wanted.update({k: getattr(given, k) for k in _CHECKPOINT_BOUND_FIELDS if k not in wanted})
        for name, value in wanted.items():
            stored = getattr(saved, name)
            if name == "normalization_stats":  # compared as NiafConfig stores them (plain floats, no count)
                dims = {"action": saved.action_dim, "state": saved.state_dim}
                value = check_normalization_stats(value, saved.normalization_mode, dims, "from_pretrained")
            if value != stored:
                raise ValueError(
                    f"{cls.__name__}.from_pretrained({str(path)!r}): `{name}` is {_short(value)} but the "
                    f"checkpoint was trained with {_short(stored)}. Load without overriding it, or pass "
                    "ignore_mismatched_sizes=True to re-initialise the head on purpose."
                )

    def get_input_embeddings(self) -> nn.Module:
        return self.backbone.get_input_embeddings()

    # ------------------------------------------------------------------------------------------------------
    # Input validation
    # ------------------------------------------------------------------------------------------------------
    check_inputs_in_forward: bool = True
    """Whether `forward`, `encode_queries` and `predict_action_function` check the values of their inputs
    (token ids, padding, image-token counts, finiteness; see `check_input_values`). Reading values back costs
    one host synchronisation per call. A training loop whose collator already ran `input_value_checker()` on
    the CPU side sets it to False; shapes are always checked. Under `torch.compile` the value checks are
    skipped (they would break the graph): check the batch before, with `check_inputs`."""

    def input_value_checker(self) -> Any:
        """A picklable callable ``check(**batch)`` running [`check_input_values`] with this model's vocabulary,
        image token and number of cameras: for a collator (also in data-loader worker processes), so that the
        value checks run once per batch on the CPU side, before the batch is moved to the accelerator."""
        return functools.partial(
            check_input_values,
            vocab_size=self.get_input_embeddings().num_embeddings,
            image_token_id=getattr(self.config.backbone_config, "image_token_id", None),
            num_cameras=self.config.num_cameras,
        )

    def check_inputs(self, **batch: Any) -> None:
        """The checks `forward` makes on a batch's observation (shapes and values), without running the model;
        the values of targets in the batch (``actions``, ``velocities``, dense targets) are checked too, their
        shapes by a task model's `check_inputs`.

        Raises the ValueError `forward` would raise. Call it on the CPU side (e.g. on the processor's output)
        before a compiled forward, or with ``check_inputs_in_forward = False``.
        """
        inputs = {k: batch.get(k) for k in ("input_ids", "attention_mask", "pixel_values", "image_grid_thw", "state")}
        input_ids, _, _ = self._validate_inputs(**inputs)
        targets = {k: batch.get(k) for k in ("actions", "velocities", "dense_actions", "dense_velocities")}
        self.input_value_checker()(**dict(inputs, input_ids=input_ids, **targets))

    def _checks_values(self) -> bool:
        return self.check_inputs_in_forward and not _is_compiling()

    def _validate_inputs(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        pixel_values: torch.Tensor | None,
        image_grid_thw: torch.Tensor | None,
        state: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cfg = self.config
        cams = cfg.num_cameras
        if (
            input_ids is None
            or not isinstance(input_ids, torch.Tensor)
            or input_ids.ndim != 2
            or input_ids.dtype.is_floating_point
            or input_ids.dtype.is_complex
            or input_ids.dtype == torch.bool
        ):
            raise ValueError(f"`input_ids` must be a LongTensor [B, L] (the tokenised prompt), got {_describe(input_ids)}.")
        batch = input_ids.shape[0]
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"`attention_mask` must have the shape of `input_ids` {tuple(input_ids.shape)}, got {tuple(attention_mask.shape)}."
            )
        if pixel_values is None:
            raise ValueError(
                f"`pixel_values` is required: NIAF reads {cams} image(s) per observation "
                f"(backbone `{self.family}`)."
            )
        if self.family in PATCH_SEQUENCE_BACKBONES:
            if image_grid_thw is None:
                raise ValueError(f"`image_grid_thw` [B·num_cameras, 3] is required with backbone `{self.family}`.")
            if image_grid_thw.ndim != 2 or image_grid_thw.shape != (batch * cams, 3):
                raise ValueError(
                    f"wrong number of images: `image_grid_thw` must be [{batch * cams}, 3] (batch {batch} × "
                    f"num_cameras {cams}), got {tuple(image_grid_thw.shape)}."
                )
            if pixel_values.ndim != 2:  # the patch count is a value: `check_input_values` compares it
                raise ValueError(
                    f"`pixel_values` must be [Σ t·h·w, C·t·p·p] flattened patches matching `image_grid_thw`, "
                    f"got {tuple(pixel_values.shape)}."
                )
        else:
            if pixel_values.ndim == 4 and cams == 1:
                pixel_values = pixel_values.unsqueeze(1)
            if pixel_values.ndim != 5 or pixel_values.shape[0] != batch or pixel_values.shape[1] != cams:
                raise ValueError(
                    f"wrong number of images: `pixel_values` must be [B={batch}, num_cameras={cams}, 3, H, W], "
                    f"got {tuple(pixel_values.shape)}."
                )
        if cfg.use_state:
            if state is None:
                raise ValueError(f"`state` [B, {cfg.state_dim}] is required: the model was configured with use_state=True.")
            if state.ndim != 2 or state.shape != (batch, cfg.state_dim):
                raise ValueError(f"`state` must be [B={batch}, state_dim={cfg.state_dim}], got {tuple(state.shape)}.")
        elif state is not None:
            raise ValueError("`state` was given but the model was configured with use_state=False.")
        return input_ids, attention_mask, pixel_values

    # ------------------------------------------------------------------------------------------------------
    # Backbone pass
    # ------------------------------------------------------------------------------------------------------
    def _extra_tokens(self, batch: int, state: torch.Tensor | None, dtype: torch.dtype,
                      pixel_values: torch.Tensor | None = None) -> torch.Tensor:
        """[B, S+Q, d]: the optional state token followed by the queries, at the scale of text embeddings
        (with ``config.state_to_queries`` the projected state is added to each query as well, and with
        ``config.image_keypoints`` the projected keypoints of ``pixel_values``)."""
        queries = self.query_embeddings(batch)
        # Gemma-style embeddings multiply token vectors by √d inside `embed_tokens`; match that scale.
        scale = getattr(self.backbone.get_input_embeddings(), "embed_scale", None)
        if isinstance(scale, torch.Tensor):
            queries = queries * scale.detach().to(dtype=queries.dtype, device=queries.device)
        elif scale is not None:
            queries = queries * float(scale)
        tokens = [queries]
        if self.state_projection is not None:
            proj_dtype = self.state_projection.weight.dtype
            state_token = self.state_projection(state.to(proj_dtype)).unsqueeze(1).to(queries.dtype)
            if self.config.state_to_queries:
                # every query also carries the state itself: a direct path from state to its modulations
                tokens[0] = queries + state_token
            tokens.insert(0, state_token)
        if self.image_keypoints is not None:
            # where things are in each camera image, added to every query (a path around the vision tower)
            keypoint_token = self.image_keypoints(pixel_values).unsqueeze(1).to(tokens[-1].dtype)
            tokens[-1] = tokens[-1] + keypoint_token
        return torch.cat(tokens, dim=1).to(dtype)

    def encode_queries(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
        state: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One backbone pass; returns Z [B, Q, d], the last hidden states at the Q query tokens."""
        return self._validated_encode(input_ids, attention_mask, pixel_values, image_grid_thw, state)

    def _validated_encode(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        pixel_values: torch.Tensor | None,
        image_grid_thw: torch.Tensor | None,
        state: torch.Tensor | None,
        actions: torch.Tensor | None = None,
        velocities: torch.Tensor | None = None,
        dense_actions: torch.Tensor | None = None,
        dense_velocities: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Shape checks, the value checks of inputs and targets together (one host synchronisation), then
        `_encode_checked`."""
        input_ids, attention_mask, pixel_values = self._validate_inputs(
            input_ids, attention_mask, pixel_values, image_grid_thw, state
        )
        if self._checks_values():
            self.input_value_checker()(
                input_ids, attention_mask, pixel_values, image_grid_thw, state, actions, velocities,
                dense_actions=dense_actions, dense_velocities=dense_velocities,
            )
        return self._encode_checked(input_ids, attention_mask, pixel_values, image_grid_thw, state)

    def _encode_checked(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor,
        image_grid_thw: torch.Tensor | None,
        state: torch.Tensor | None,
    ) -> torch.Tensor:
        """`encode_queries` after validation."""
        if self.backbone_family.encoder_decoder:
            return self._encode_encoder_decoder(input_ids, attention_mask, pixel_values, state)
        return self._encode_decoder_only(input_ids, attention_mask, pixel_values, image_grid_thw, state)

    def _encode_encoder_decoder(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pixel_values: torch.Tensor, state: torch.Tensor | None
    ) -> torch.Tensor:
        # Florence-2's own forward insists on a decoder start token, so run its halves: the encoder reads the
        # image features merged into the prompt, the decoder reads [state] + queries with no causal mask.
        bb = self.backbone
        embeds = bb.get_input_embeddings()(input_ids)
        batch, cams = pixel_values.shape[:2]
        features = bb.get_image_features(pixel_values.flatten(0, 1).to(embeds.dtype)).pooler_output  # [B·C, T, d]
        features = features.reshape(batch, -1, features.shape[-1]).to(embeds.dtype)
        image_mask = bb.get_placeholder_mask(input_ids, inputs_embeds=embeds, image_features=features)
        embeds = embeds.masked_scatter(image_mask, features)
        encoder = bb.language_model.get_encoder()
        encoded = encoder(inputs_embeds=embeds, attention_mask=attention_mask).last_hidden_state
        decoder_inputs = self._extra_tokens(batch, state, embeds.dtype, pixel_values)
        n = decoder_inputs.shape[1]
        # An explicit all-zero additive 4-D mask: every decoder token sees every other, whatever the attention
        # backend (`is_causal=False` alone is honoured by SDPA only when transformers drops the mask).
        open_mask = torch.zeros(batch, 1, n, n, dtype=decoder_inputs.dtype, device=decoder_inputs.device)
        decoded = bb.language_model.get_decoder()(
            inputs_embeds=decoder_inputs,
            attention_mask=open_mask,
            encoder_hidden_states=encoded,
            encoder_attention_mask=attention_mask,
            is_causal=False,
            use_cache=False,
        ).last_hidden_state
        return decoded[:, -self.config.num_queries :]

    def _encode_decoder_only(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor,
        image_grid_thw: torch.Tensor | None,
        state: torch.Tensor | None,
    ) -> torch.Tensor:
        bb = self.backbone
        input_ids, attention_mask = _left_align(input_ids, attention_mask)
        batch = input_ids.shape[0]
        embeds = bb.get_input_embeddings()(input_ids)
        extra = self._extra_tokens(batch, state, embeds.dtype, pixel_values)
        n_extra = extra.shape[1]
        inputs_embeds = torch.cat([embeds, extra], dim=1)
        full_mask = torch.cat([attention_mask, attention_mask.new_ones(batch, n_extra)], dim=1)
        # Queries see the prompt and each other; the prompt never sees them (state token: causal like the prompt).
        mask_4d = _query_attention_mask(full_mask, self.config.num_queries, inputs_embeds.dtype)
        kwargs: dict[str, Any] = {}
        if self.backbone_family.mrope:
            pad_id = 0 if getattr(self.config.backbone_config, "image_token_id", None) != 0 else 1
            full_ids = torch.cat([input_ids, input_ids.new_full((batch, n_extra), pad_id)], dim=1)
            image_token = self.config.backbone_config.image_token_id
            mm_types = (full_ids == image_token).int()
            position_ids, _ = bb.get_rope_index(
                full_ids, mm_token_type_ids=mm_types, image_grid_thw=image_grid_thw, attention_mask=full_mask
            )
            kwargs["position_ids"] = position_ids
            kwargs["image_grid_thw"] = image_grid_thw
            pixels = pixel_values
        else:
            kwargs["position_ids"] = (full_mask.long().cumsum(-1) - 1).clamp_min(0)
            pixels = pixel_values if self.backbone_family.multi_image_native else pixel_values.flatten(0, 1)
        if _accepts(bb.forward, "token_type_ids"):
            # PaliGemma-family forwards (transformers 5.4-5.8) refuse to train without it. All zeros ("prefix")
            # changes nothing here: the attention pattern is the 4-D mask above.
            kwargs["token_type_ids"] = torch.zeros_like(full_mask, dtype=torch.long)
        vision_dtype = next(bb.parameters()).dtype
        outputs = bb(
            inputs_embeds=inputs_embeds,
            attention_mask=mask_4d,
            pixel_values=pixels.to(vision_dtype),
            use_cache=False,
            **kwargs,
        )
        return outputs.last_hidden_state[:, -self.config.num_queries :]

    # ------------------------------------------------------------------------------------------------------
    # Forward: the query features
    # ------------------------------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        image_grid_thw: torch.LongTensor | None = None,
        state: torch.FloatTensor | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> NiafModelOutput:
        r"""One backbone pass; returns Z, the last hidden states at the Q query tokens.

        Args:
            input_ids, attention_mask, pixel_values, image_grid_thw, state: see the class docstring; checked
                exactly as [`NiafForActionFunction.forward`] checks them.
            return_dict (`bool`, *optional*): ``False`` returns ``(query_hidden_states,)`` instead of the
                [`NiafModelOutput`].

        Returns:
            [`NiafModelOutput`] with ``query_hidden_states`` [B, Q, d] in the backbone's dtype.
        """
        if kwargs:
            raise ValueError(f"{type(self).__name__}.forward got unexpected arguments {sorted(kwargs)} (targets go "
                             "to a task model such as NiafForActionFunction).")
        z = self.encode_queries(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values,
                                image_grid_thw=image_grid_thw, state=state)
        out = NiafModelOutput(query_hidden_states=z)
        return out if return_dict is not False else out.to_tuple()


# ----------------------------------------------------------------------------------------------------------
# The action-policy API shared by every head
# ----------------------------------------------------------------------------------------------------------
class NiafActionPolicyMixin:
    """What every task model on [`NiafModel`] offers: ``forward`` with normalised targets and losses,
    ``check_inputs`` with the targets, ``predict_action_function``, ``generate_actions`` and the units of the
    actions (``action_affine``, ``state_affine``, ``relative_action_offset``).

    A head class lists this mixin before [`NiafModel`] and defines two methods: ``_chunk_and_losses(z,
    actions, velocities, action_mask, dense)`` → [`NiafActionFunctionOutput`] (the chunk at the K training
    points and, with ``actions``, the losses) and ``_action_function(z, center, half, offset)`` → an object
    with [`ActionFunction`]'s call signature.
    """

    config: NiafConfig

    # ------------------------------------------------------------------------------------------------------
    # Forward with losses
    # ------------------------------------------------------------------------------------------------------
    def training_tau(self, device: torch.device | None = None) -> torch.Tensor:
        """[K] float32: τ_k = -1 + 2k/(K-1), the training grid (both chunk ends included)."""
        return torch.linspace(-1.0, 1.0, self.config.chunk_size, device=device, dtype=torch.float32)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        image_grid_thw: torch.LongTensor | None = None,
        state: torch.FloatTensor | None = None,
        actions: torch.FloatTensor | None = None,
        velocities: torch.FloatTensor | None = None,
        action_mask: torch.Tensor | None = None,
        dense_tau: torch.Tensor | None = None,
        dense_actions: torch.FloatTensor | None = None,
        dense_velocities: torch.FloatTensor | None = None,
        dense_mask: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> NiafActionFunctionOutput:
        r"""One backbone pass, the action function at the K training points and (optionally) the losses.

        Args:
            input_ids, attention_mask, pixel_values, image_grid_thw, state: see the class docstring.
            actions (`torch.FloatTensor` [B, K, D], *optional*): target actions at τ_k, **normalised** (the
                processor's `normalize_actions`). K must equal ``config.chunk_size``, D ``config.action_dim``.
                With ``config.relative_action_state_indices`` these are the normalised deltas
                a_i(t_k) - state_s(t_obs) (made from physical units before normalising, e.g. by a
                [`NiafProcessor`] with the same ``relative_action_state_indices`` called with absolute ``actions``
                and ``state``); nothing here adds or removes the state.
            velocities (`torch.FloatTensor` [B, K, D], *optional*): target velocities at τ_k, normalised
                units **per second** (`normalize_velocities`); enables L_vel.
            action_mask (`torch.Tensor` [B, K], *optional*): 1/True for real steps, 0/False for steps padded
                past the episode end; padded steps are left out of every loss term.
            dense_tau (`torch.Tensor` [M], *optional*): dense supervision points on the chunk's τ axis, in
                [-1, 1] (the source frames between chunk points, `niaf_train.data.chunking`); with
                `dense_actions` [B, M, D] (normalised like `actions`), optional `dense_velocities` [B, M, D]
                (normalised units per second) and `dense_mask` [B, M] (1 = real point). When given, L_pos, L_vel
                and L_jerk are taken over the M dense points instead of the K chunk points (L_vel over the
                chunk points when only `velocities` are given); `positions` stay the K points.

            return_dict (`bool`, *optional*): ``False`` returns ``output.to_tuple()`` (the non-None fields in
                order) instead of the [`NiafActionFunctionOutput`].

        Returns:
            [`NiafActionFunctionOutput`], or a tuple with ``return_dict=False``.
        """
        if kwargs:
            raise ValueError(f"{type(self).__name__}.forward got unexpected arguments {sorted(kwargs)}.")
        dense = {"dense_tau": dense_tau, "dense_actions": dense_actions, "dense_velocities": dense_velocities,
                 "dense_mask": dense_mask}
        if actions is not None:
            self._validate_targets(actions, velocities, action_mask)
            self._validate_dense(actions, **dense)
        elif velocities is not None or action_mask is not None or any(v is not None for v in dense.values()):
            raise ValueError("`velocities`, `action_mask` and the dense targets need `actions`.")
        z = self._validated_encode(input_ids, attention_mask, pixel_values, image_grid_thw, state, actions, velocities,
                                   dense_actions, dense_velocities)
        targets = DenseTargets(dense_tau, dense_actions, dense_velocities, dense_mask) if dense_actions is not None else None
        out = self._chunk_and_losses(z, actions, velocities, action_mask, targets)
        return out if return_dict is not False else out.to_tuple()

    @staticmethod
    def masked_step_mean(per_element: torch.Tensor, action_mask: torch.Tensor | None) -> torch.Tensor:
        """A loss term from per-element values [B, K, D]: summed over D, averaged over the valid chunk steps
        (``action_mask`` [B, K], 1 = real step; None = all steps)."""
        return _masked_mean(per_element, action_mask)

    def _validate_dense(
        self,
        actions: torch.Tensor,
        dense_tau: torch.Tensor | None = None,
        dense_actions: torch.Tensor | None = None,
        dense_velocities: torch.Tensor | None = None,
        dense_mask: torch.Tensor | None = None,
    ) -> None:
        """Shapes of the dense targets (see `forward`): all or nothing around `dense_tau` and `dense_actions`."""
        if dense_actions is None:
            if any(t is not None for t in (dense_tau, dense_velocities, dense_mask)):
                raise ValueError("`dense_tau`, `dense_velocities` and `dense_mask` need `dense_actions`.")
            return
        if not isinstance(dense_tau, torch.Tensor) or dense_tau.ndim != 1 or not dense_tau.dtype.is_floating_point:
            raise ValueError(f"`dense_tau` must be a float tensor [M] of τ in [-1, 1], got {_describe(dense_tau)}.")
        expected = f"[B={actions.shape[0]}, M={dense_tau.shape[0]}, action_dim={self.config.action_dim}]"
        for name, t in (("dense_actions", dense_actions), ("dense_velocities", dense_velocities)):
            if t is not None and (not isinstance(t, torch.Tensor)
                                  or tuple(t.shape) != (actions.shape[0], dense_tau.shape[0], self.config.action_dim)):
                raise ValueError(f"`{name}` must be {expected}, got {_describe(t)}.")
        if dense_mask is not None and tuple(dense_mask.shape) != tuple(dense_actions.shape[:2]):
            raise ValueError(f"`dense_mask` must be [B, M] = {tuple(dense_actions.shape[:2])}, got {_describe(dense_mask)}.")

    def _validate_targets(
        self, actions: torch.Tensor, velocities: torch.Tensor | None, action_mask: torch.Tensor | None
    ) -> None:
        cfg = self.config
        expected = f"[B, chunk_size={cfg.chunk_size}, action_dim={cfg.action_dim}]"
        for name, t in (("actions", actions), ("velocities", velocities)):
            if t is None:
                continue
            if not isinstance(t, torch.Tensor) or t.ndim != 3 or tuple(t.shape[1:]) != (cfg.chunk_size, cfg.action_dim):
                raise ValueError(f"`{name}` must be {expected}, got {_describe(t)}.")
            if t.shape[0] != actions.shape[0]:
                raise ValueError(f"`{name}` has batch {t.shape[0]}, `actions` has {actions.shape[0]}.")
        if action_mask is not None and tuple(action_mask.shape) != tuple(actions.shape[:2]):
            raise ValueError(f"`action_mask` must be [B, K] = {tuple(actions.shape[:2])}, got {tuple(action_mask.shape)}.")

    def check_inputs(self, **batch: Any) -> None:
        """Every check `forward` makes on a batch (shapes and values, targets included), without running the model.

        Raises the ValueError `forward` would raise. Call it on the CPU side (e.g. on the processor's output)
        before a compiled forward, or with ``check_inputs_in_forward = False``.
        """
        actions, velocities, action_mask = (batch.get(k) for k in ("actions", "velocities", "action_mask"))
        dense = {k: batch.get(k) for k in DENSE_KEYS}
        if actions is not None:
            self._validate_targets(actions, velocities, action_mask)
            self._validate_dense(actions, **dense)
        elif velocities is not None or action_mask is not None or any(v is not None for v in dense.values()):
            raise ValueError("`velocities`, `action_mask` and the dense targets need `actions`.")
        super().check_inputs(**batch)

    # ------------------------------------------------------------------------------------------------------
    # Inference
    # ------------------------------------------------------------------------------------------------------
    def action_affine(self) -> tuple[Any, Any]:
        """(center, half_range) [D] float64 of the action normalisation (physical = norm·half + center).

        From ``config.normalization_stats``, the checkpoint's one copy of the statistics, through
        ``normalization.affine_from_stats``, the same transform the processor normalises with.
        """
        cfg = self.config
        stats = (cfg.normalization_stats or {}).get("action")
        if cfg.normalization_mode != "IDENTITY" and stats is None:
            raise ValueError(
                f"denormalize=True needs action statistics for normalization_mode={cfg.normalization_mode}, but "
                "config.normalization_stats has none; pass denormalize=False or set the statistics "
                "(NiafProcessor.fit_stats / config.normalization_stats)."
            )
        return affine_from_stats(
            stats, cfg.normalization_mode, cfg.action_dim, cfg.unnormalized_action_dims, feature="action"
        )

    def state_affine(self) -> tuple[Any, Any]:
        """(center, half_range) [state_dim] float64 of the state normalisation (physical = norm·half + center).

        Same mode as the actions, from ``config.normalization_stats["state"]``.
        """
        cfg = self.config
        if cfg.state_dim is None:
            raise ValueError("state_affine: the model has no robot state (config.state_dim is None).")
        stats = (cfg.normalization_stats or {}).get("state")
        if cfg.normalization_mode != "IDENTITY" and stats is None:
            raise ValueError(
                f"de-normalising the state needs state statistics for normalization_mode={cfg.normalization_mode}, "
                "but config.normalization_stats has none (relative_action_state_indices adds the physical state "
                "back to the actions); set config.normalization_stats['state'] or pass denormalize=False."
            )
        return affine_from_stats(stats, cfg.normalization_mode, cfg.state_dim, feature="state")

    def relative_action_offset(self, state: torch.Tensor) -> Any:
        """[B, D] float64 physical units added back to relative actions: for each action dim i with a state
        index s in ``config.relative_action_state_indices``, the de-normalised ``state[:, s]``; 0 for absolute
        dims. ``state`` is the normalised [B, state_dim] model input.

        Both steps are ``normalization.py``'s: de-normalise the state, then `relative_offset` (the inverse of the
        `to_relative` the processor built the training targets with)."""
        indices = self.config.relative_action_state_indices
        if indices is None:
            raise ValueError("relative_action_offset: config.relative_action_state_indices is None (absolute actions).")
        physical = AffineNormalizer(*self.state_affine(), feature="state").denormalize(
            state.detach().to("cpu", torch.float64).numpy()
        )  # [B, S]
        return relative_offset(physical, indices, name="config.relative_action_state_indices")

    @torch.no_grad()
    def predict_action_function(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        image_grid_thw: torch.LongTensor | None = None,
        state: torch.FloatTensor | None = None,
        denormalize: bool = True,
        **kwargs: Any,
    ) -> ActionFunction:
        """Run the backbone once and return the batch's action functions, queryable later at any times.

        The returned [`ActionFunction`] holds γ, β [B, L, H] and shares this model's SIREN; calling it never
        re-runs the backbone. With ``denormalize=True`` it returns physical units (the checkpoint's action
        statistics); otherwise normalised units. With ``config.relative_action_state_indices`` the model
        predicts deltas from the state: ``denormalize=True`` adds the de-normalised ``state`` back to the
        position of the relative dims (``position_offset``, [B, D]; derivatives are unchanged), so positions
        are absolute; ``denormalize=False`` returns the normalised delta.
        """
        for key in ("actions", "velocities", "action_mask"):
            kwargs.pop(key, None)  # a training batch can be passed as is
        if kwargs:
            raise ValueError(f"predict_action_function got unexpected arguments {sorted(kwargs)}.")
        z = self.encode_queries(
            input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values,
            image_grid_thw=image_grid_thw, state=state,
        )
        center, half = self.action_affine() if denormalize else (None, None)
        offset = None
        if denormalize and self.config.relative_action_state_indices is not None:
            offset = self.relative_action_offset(state)  # `state` was checked by `encode_queries`
        return self._action_function(z, center, half, offset)

    @torch.no_grad()
    def generate_actions(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        image_grid_thw: torch.LongTensor | None = None,
        state: torch.FloatTensor | None = None,
        tau: torch.Tensor | Any | None = None,
        num_points: int | None = None,
        times: torch.Tensor | Any | None = None,
        derivatives: int = 3,
        denormalize: bool = True,
        extrapolate: bool = False,
        **kwargs: Any,
    ) -> ActionTrajectory:
        """One backbone pass, then positions and analytic derivatives at the requested time points.

        Give at most one of ``tau`` ([N] or [B, N] in [-1, 1]), ``times`` (seconds from the chunk start, in
        [0, T]) or ``num_points`` (N evenly spaced points, both ends included, e.g. 200 for a chunk trained
        on 50: no retraining needed); with none, the K training points. Returns an [`ActionTrajectory`]:
        position [B, N, D] and velocity / acceleration / jerk per second, per second², per second³
        (physical units when ``denormalize``; with relative actions the position is then absolute, the state
        added back, see `predict_action_function`).
        """
        function = self.predict_action_function(
            input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values,
            image_grid_thw=image_grid_thw, state=state, denormalize=denormalize, **kwargs,
        )
        return function(
            tau=tau, times=times, num_points=num_points, derivatives=derivatives, denormalize=denormalize,
            extrapolate=extrapolate,
        )


# ----------------------------------------------------------------------------------------------------------
# The policy
# ----------------------------------------------------------------------------------------------------------
class NiafForActionFunction(NiafActionPolicyMixin, NiafModel):
    r"""NIAF policy: [`NiafModel`] (backbone + Q learned queries + state pathway) + ψ heads + shared modulated SIREN.

    Inputs: see [`NiafModel`]; targets and outputs: see `forward`.
    """

    _keys_to_ignore_on_load_unexpected = None  # strict: every weight of the checkpoint is NIAF's

    def _build_head(self, config: NiafConfig) -> None:
        self.modulation_heads = NiafModulationHeads(
            config.siren_layers, config.modulation_groups, config.siren_width, config.hidden_size
        )
        self.siren = ModulatedSiren(config)

    @classmethod
    def _check_loaded_head(cls, path: Any, config: Any) -> None:
        """A comparison-head checkpoint (``config.action_head``) is refused, naming the loader its config.json
        gives (``loader``, written by the code that saved it) or else the class that saved it."""
        head = getattr(config, "action_head", "niaf")
        if head == "niaf":
            return
        loader = getattr(config, "loader", None)
        if not loader:
            saved_by = ", ".join(getattr(config, "architectures", None) or []) or "unknown"
            loader = f"the class that saved it (config.json `architectures`: {saved_by})"
        raise ValueError(
            f"{cls.__name__}.from_pretrained({str(path)!r}): the checkpoint holds a {head!r} comparison head, not "
            f"NIAF's modulated SIREN; load it with {loader}."
        )

    def modulations(self, **inputs: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Backbone pass + ψ heads: returns γ [B, L, H], β [B, L, H] (float32) and Z [B, Q, d]."""
        z = self.encode_queries(**inputs)
        gamma, beta = self.modulation_heads(z)
        return gamma, beta, z

    def _chunk_and_losses(
        self,
        z: torch.Tensor,
        actions: torch.Tensor | None,
        velocities: torch.Tensor | None,
        action_mask: torch.Tensor | None,
        dense: DenseTargets | None = None,
    ) -> NiafActionFunctionOutput:
        """ψ heads + SIREN at the K training points (and the dense points), and the losses when ``actions`` are
        given: over the dense points when ``dense`` is given, else over the K points."""
        cfg = self.config
        gamma, beta = self.modulation_heads(z)
        want_vel = actions is not None and (velocities is not None or (dense is not None and dense.velocities is not None))
        want_jerk = actions is not None and cfg.loss_weight_jerk > 0
        order = 3 if want_jerk else (1 if want_vel else 0)
        k = cfg.chunk_size
        tau = self.training_tau(gamma.device)
        if dense is not None:  # one SIREN pass over both grids
            tau = torch.cat([tau, dense.tau.to(device=tau.device, dtype=tau.dtype)])
        # τ is our own grid (or a checked one) and γ, β come from checked inputs: no finiteness check (a host
        # synchronisation each)
        values = self.siren(tau, gamma, beta, derivatives=order, check_finite=False)
        per_second = cfg.tau_to_seconds
        positions = values[0][:, :k]
        pred_vel = values[1][:, :k] * per_second if order >= 1 else None
        out = NiafActionFunctionOutput(
            positions=positions, velocities=pred_vel, gamma=gamma, beta=beta, query_hidden_states=z
        )
        if actions is None:
            return out
        derivatives = [v * per_second**i for i, v in enumerate(values)]
        loss, loss_pos, loss_vel, loss_jerk = dense_supervised_losses(
            cfg, [d[:, :k] for d in derivatives], actions, velocities, action_mask,
            None if dense is None else [d[:, k:] for d in derivatives], dense,
        )
        out.loss, out.loss_pos, out.loss_vel, out.loss_jerk = loss, loss_pos, loss_vel, loss_jerk
        return out

    def _action_function(self, z: torch.Tensor, center: Any, half: Any, offset: Any) -> ActionFunction:
        """The batch's action functions from the query outputs Z (ψ heads → γ, β; the shared SIREN)."""
        gamma, beta = self.modulation_heads(z)
        return ActionFunction(
            self.siren, gamma, beta, self.config.chunk_duration, center, half, chunk_size=self.config.chunk_size,
            position_offset=offset,
        )

    # ------------------------------------------------------------------------------------------------------
    # Hub export
    # ------------------------------------------------------------------------------------------------------
    def save_pretrained(self, save_directory: Any, *args: Any, processor: Any = None, **kwargs: Any) -> None:
        """Save a complete Hub model repo: weights, config with ``auto_map``, remote code, card (+ processor).

        Same arguments as `PreTrainedModel.save_pretrained` (``push_to_hub`` and ``push_to_hub``'s own
        upload go through here too), plus ``processor``: a [`NiafProcessor`] to save alongside. The layout is
        described in ``hub.py``.
        """
        save_for_hub(self, save_directory, processor=processor, base_save=super().save_pretrained, **kwargs)


def _accepts(function: Any, name: str) -> bool:
    """Whether ``function`` has a parameter called ``name`` (not only ``**kwargs``)."""
    return name in inspect.signature(function).parameters


def _refuse_partial_load(owner: str, path: Any, config: Any, info: dict[str, Any]) -> None:
    """ValueError naming the weights that `from_pretrained` could not match (see `from_pretrained`)."""
    problems = []
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        keys = sorted(str(k[0] if isinstance(k, tuple) else k) for k in info.get(kind) or ())
        if keys:
            shown = ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
            problems.append(f"{len(keys)} {kind.replace('_keys', '')} ({shown})")
    if not problems:
        return
    import transformers

    saved_with = getattr(config, "transformers_version", None) or "an unknown version"
    raise ValueError(
        f"{owner}.from_pretrained({str(path)!r}): the checkpoint's weights do not match the model: "
        f"{'; '.join(problems)}. The checkpoint was saved with transformers {saved_with}, this is "
        f"{transformers.__version__}; backbone parameter names change between transformers versions, so install "
        "the version it was saved with (or a compatible one), or pass ignore_mismatched_sizes=True to "
        "re-initialise these weights on purpose."
    )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return f"{type(value).__name__}"


__all__ = [
    "DenseTargets",
    "check_input_values",
    "dense_supervised_losses",
    "NiafActionFunctionOutput",
    "NiafActionPolicyMixin",
    "NiafForActionFunction",
    "NiafModel",
    "NiafModelOutput",
    "NiafModulationHeads",
    "NiafPreTrainedModel",
    "NiafQueryEmbeddings",
    "NiafSirenHead",
]
