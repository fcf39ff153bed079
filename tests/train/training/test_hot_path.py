"""The training hot path: no host synchronisation in NIAF's forward, CHW images end to end, one backbone pass per
evaluation batch, query times kept on their device."""

from __future__ import annotations

import collections
import contextlib
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
from niaf_tiny_backbones import image_tokens_per_image, make_image_processor, make_tokenizer
from niaf_train.training.collation import Collator
from niaf_train.training.validation import evaluate_model
from test_compile import tiny_training_batch

import modeling_niaf
from modeling_niaf import NiafProcessor

NIAF_DIR = Path(modeling_niaf.__file__).resolve().parent
READS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "numpy", "cpu")


@contextlib.contextmanager
def value_reads():
    """Count reads of tensor values back to Python (host synchronisations on an accelerator), keyed by the file
    that makes them when it is in ``modeling_niaf/``, else "elsewhere" (e.g. inside transformers' backbone)."""
    counts: collections.Counter = collections.Counter()
    originals = {name: getattr(torch.Tensor, name) for name in READS}
    busy = [False]

    def wrap(name):
        original = originals[name]

        def counted(self, *args, **kwargs):
            if not busy[0]:
                busy[0] = True
                try:
                    caller = Path(traceback.extract_stack(limit=2)[0].filename).resolve()
                    counts[caller.name if caller.is_relative_to(NIAF_DIR) else "elsewhere"] += 1
                finally:
                    busy[0] = False
            return original(self, *args, **kwargs)

        return counted

    for name in READS:
        setattr(torch.Tensor, name, wrap(name))
    try:
        yield counts
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


def niaf_reads(counts: collections.Counter) -> int:
    return sum(c for where, c in counts.items() if where != "elsewhere")


def test_training_forward_reads_no_value_back_once_the_batch_was_checked():
    model, batch = tiny_training_batch()
    model(**batch).loss.backward()  # warm-up (lazy initialisation outside the count)
    with value_reads() as checked_in_forward:
        model(**batch).loss.backward()
    # a user calling the model directly: every value check, all read back in one transfer
    assert niaf_reads(checked_in_forward) == 1, checked_in_forward
    with value_reads() as on_cpu:
        model.input_value_checker()(**batch)
    assert niaf_reads(on_cpu) == 1
    model.check_inputs_in_forward = False  # what niaf-train does: the collator ran the checker
    with value_reads() as unchecked:
        model(**batch).loss.backward()
    assert niaf_reads(unchecked) == 0, unchecked


def test_every_value_check_survives_the_single_pass():
    model, batch = tiny_training_batch()
    vocab = model.get_input_embeddings().num_embeddings
    fewer = batch["input_ids"].clone()
    fewer[0, 0] = 5  # one image token fewer in sample 0
    cases = {
        "outside the backbone's vocabulary": {"input_ids": batch["input_ids"].clone().index_fill_(1, torch.tensor([17]), vocab)},
        "every sample needs at least one prompt token": {"attention_mask": torch.zeros_like(batch["attention_mask"])},
        "`pixel_values` contains NaN": {"pixel_values": batch["pixel_values"].clone().fill_(float("inf"))},
        "same number of image tokens": {"input_ids": fewer},
        "`state` contains NaN": {"state": batch["state"].clone().fill_(float("nan"))},
        "`velocities` contains NaN": {"velocities": batch["velocities"].clone().fill_(float("nan"))},
    }
    for message, change in cases.items():
        bad = dict(batch, **change)
        for check in (model, model.check_inputs, model.input_value_checker()):
            with pytest.raises(ValueError, match=message):
                check(**bad)


def tiny_processor(num_cameras: int = 2) -> NiafProcessor:
    proc = NiafProcessor(
        image_processor=make_image_processor("paligemma"), tokenizer=make_tokenizer(),
        prompt_template="what action should the robot take to {instruction} ?", image_token="<image>",
        image_seq_length=image_tokens_per_image("paligemma"), num_cameras=num_cameras, action_dim=3, state_dim=2,
        normalization_mode="MIN_MAX",
    )
    rng = np.random.default_rng(0)
    proc.fit_stats(rng.normal(size=(200, 3)), state=rng.normal(size=(200, 2)))
    return proc


def chunk_rows(batch: int, side: tuple[int, int], seed: int = 0) -> list[dict]:
    """Rows as `with_torch_format` yields them: uint8 [3, H, W] images, float32 targets, bool padding."""
    g = torch.Generator().manual_seed(seed)
    return [
        {
            "observation.images.static": torch.randint(0, 256, (3, *side), dtype=torch.uint8, generator=g),
            "observation.images.wrist": torch.randint(0, 256, (3, *side), dtype=torch.uint8, generator=g),
            "task": ["open the drawer", "push the red block to the goal"][i % 2],
            "action": torch.randn(6, 3, generator=g), "velocity": torch.randn(6, 3, generator=g),
            "action_is_pad": torch.arange(6) >= 6 - i % 3, "observation.state": torch.randn(2, generator=g),
            "index": torch.tensor(100 + i),
        }
        for i in range(batch)
    ]


@pytest.mark.parametrize("side", [(32, 32), (48, 40)])
def test_collator_hands_chw_tensors_over_and_pixel_values_are_those_of_the_hwc_path(side, monkeypatch):
    proc = tiny_processor()
    cameras = ["observation.images.static", "observation.images.wrist"]
    rows = chunk_rows(5, side)
    seen = []
    original = proc.image_processor.__class__.__call__
    monkeypatch.setattr(proc.image_processor.__class__, "__call__",
                        lambda self, images, **kw: seen.extend(images) or original(self, images, **kw))
    batch = Collator(proc, cameras, use_state=True, use_velocity=True)(rows)
    assert all(isinstance(im, torch.Tensor) and im.shape == (3, *side) for im in seen)  # no HWC round trip
    # the path before: HWC numpy frames (also what users pass)
    hwc = [[row[c].permute(1, 2, 0).contiguous().numpy() for c in cameras] for row in rows]
    reference = proc(images=hwc, text=[r["task"] for r in rows], state=torch.stack([r["observation.state"] for r in rows]),
                     actions=torch.stack([r["action"] for r in rows]))
    assert batch["pixel_values"].dtype == reference["pixel_values"].dtype
    assert torch.equal(batch["pixel_values"], reference["pixel_values"])
    assert torch.equal(batch["input_ids"], reference["input_ids"])
    # a mixed batch (a PIL-like HWC array next to CHW tensors) takes the HWC path for every frame, same numbers
    mixed = [[hwc[0][0], rows[0][cameras[1]]], *[[row[c] for c in cameras] for row in rows[1:]]]
    again = proc(images=mixed, text=[r["task"] for r in rows])
    assert torch.equal(again["pixel_values"], reference["pixel_values"])


def test_evaluate_model_runs_the_backbone_once_per_batch_with_the_two_pass_metrics():
    from test_modeling import make_model

    proc = tiny_processor(num_cameras=2)
    model = make_model("paligemma", num_cameras=2, use_state=True, state_dim=2, normalization_mode="MIN_MAX",
                       normalization_stats=proc.normalization_stats)
    collate = Collator(proc, ["observation.images.static", "observation.images.wrist"], use_state=True,
                       use_velocity=True, check=model.input_value_checker())
    loader = [collate(chunk_rows(4, (32, 32), seed=s)) for s in range(3)]
    passes = []
    hook = model.backbone.register_forward_hook(lambda *args: passes.append(1))
    metrics = evaluate_model(model, proc, loader, np.zeros(3), num_points=11)
    hook.remove()
    assert len(passes) == len(loader)
    # the previous implementation: a second backbone pass with denormalize=False
    errors = []
    with torch.no_grad():
        for batch in loader:
            inputs = {k: v for k, v in batch.items() if k != "sample_index"}
            norm = model.predict_action_function(**inputs, denormalize=False)(derivatives=0).position
            errors.append(((norm.float() - batch["actions"].float()) ** 2).mean(-1)[batch["action_mask"]].numpy())
    assert metrics["position_mse_normalized"] == pytest.approx(float(np.concatenate(errors).mean()), rel=1e-6)


def test_query_times_given_as_tensors_stay_tensors_and_give_the_numpy_numbers():
    model, batch = tiny_training_batch()
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values", "state")}
    model.config.normalization_mode = "IDENTITY"
    fn = model.predict_action_function(**inputs)
    tau = torch.linspace(-1.0, 1.0, 13)
    with value_reads() as reads:
        out = fn(tau=tau, derivatives=2)
    assert reads["action_function.py"] == 1  # finiteness and range, together; no numpy copy of τ
    ref = fn(tau=tau.numpy(), derivatives=2)
    for key in ("position", "velocity", "acceleration"):
        torch.testing.assert_close(getattr(out, key), getattr(ref, key), rtol=0, atol=0)
    times = torch.tensor([[0.0, 0.1, 0.35]] * 3)
    # times → τ in the tensor's float32 (as before this path kept tensors) vs float64 for numpy input: last bit
    torch.testing.assert_close(fn(times=times).position, fn(times=times.numpy()).position, rtol=0, atol=1e-6)
    for bad, message in (
        (dict(tau=torch.tensor([0.0, float("nan")])), "`tau` contains NaN or inf"),
        (dict(tau=torch.tensor([0.0, 1.5])), r"`tau` leaves the chunk \(τ ∈ \[-1, 1\]\): range \[0, 1.5\]"),
        (dict(times=torch.tensor([0.0, 0.7])), r"`times` leaves the chunk \(t ∈ \[0, 0.35\] s\): range \[-1, 3\]"),
        (dict(tau=torch.zeros(2, 3, 4)), r"`tau` must have shape \[N\] or \[B, N\] with N >= 1, got \(2, 3, 4\)"),
        (dict(tau=torch.zeros(3), num_points=4), "Give at most one"),
    ):
        for as_numpy in (False, True):
            args = {k: (v.numpy() if as_numpy and isinstance(v, torch.Tensor) else v) for k, v in bad.items()}
            with pytest.raises(ValueError, match=message):
                fn(**args)


def test_collator_normalises_the_dense_targets_like_the_chunk_and_the_model_trains_on_them():
    from test_modeling import make_model

    proc = tiny_processor(num_cameras=2)
    cameras = ["observation.images.static", "observation.images.wrist"]
    rows = chunk_rows(3, (32, 32))
    g = torch.Generator().manual_seed(5)
    m = 11  # K = 6 at stride 2, every source frame
    for i, row in enumerate(rows):
        row["dense_action"], row["dense_velocity"] = torch.randn(m, 3, generator=g), torch.randn(m, 3, generator=g)
        row["dense_is_pad"] = torch.arange(m) >= m - 2 * (i % 2)
        row["dense_tau"] = torch.linspace(-1, 1, m)
    model = make_model("paligemma", num_cameras=2, use_state=True, state_dim=2, normalization_mode="MIN_MAX",
                       normalization_stats=proc.normalization_stats, loss_weight_velocity=0.5)
    batch = Collator(proc, cameras, use_state=True, use_velocity=True, check=model.input_value_checker(),
                     use_dense=True)(rows)
    # by hand: MIN_MAX maps [min, max] to [-1, 1]; a velocity only scales
    stats = proc.normalization_stats["action"]
    lo, hi = np.asarray(stats["min"]), np.asarray(stats["max"])
    dense = torch.stack([r["dense_action"] for r in rows]).double().numpy()
    np.testing.assert_allclose(batch["dense_actions"].numpy(), 2 * (dense - lo) / (hi - lo) - 1, rtol=1e-5, atol=1e-6)
    vel = torch.stack([r["dense_velocity"] for r in rows]).double().numpy()
    np.testing.assert_allclose(batch["dense_velocities"].numpy(), 2 * vel / (hi - lo), rtol=1e-5, atol=1e-6)
    assert batch["dense_mask"][1].tolist() == [True] * 9 + [False] * 2 and batch["dense_tau"].shape == (m,)
    out = model(**{k: v for k, v in batch.items() if k != "sample_index"})
    assert out.loss_vel is not None and torch.isfinite(out.loss)
    rows[2]["dense_tau"] = torch.linspace(-1, 0, m)
    with pytest.raises(ValueError, match="dense τ grids"):
        Collator(proc, cameras, use_state=True, use_velocity=True, use_dense=True)(rows)
