"""NiafProcessor: prompt and images → model inputs; normalisation with exact inverses; save / load."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from niaf_tiny_backbones import IMAGE_TOKEN, image_tokens_per_image, make_image_processor, make_tokenizer
from test_modeling import make_model

from configuration_niaf.normalization import compute_stats
from modeling_niaf import NiafProcessor

RNG = np.random.default_rng(0)
FRAMES = RNG.normal(size=(500, 3)) * np.array([1.0, 5.0, 0.1]) + np.array([0.0, 2.0, -1.0])


def make_processor(family: str = "florence2", num_cameras: int = 2, mode: str = "QUANTILES", **kw) -> NiafProcessor:
    qwen = family in ("qwen2_5_vl", "qwen3_vl")
    proc = NiafProcessor(
        image_processor=make_image_processor(family),
        tokenizer=make_tokenizer(),
        prompt_template="what action should the robot take to {instruction} ?",
        image_token="<image>",
        image_seq_length=None if qwen else image_tokens_per_image(family),
        image_start_token="<vision_start>" if qwen else None,
        image_end_token="<vision_end>" if qwen else None,
        num_cameras=num_cameras,
        action_dim=3,
        state_dim=2,
        normalization_mode=mode,
        **kw,
    )
    proc.fit_stats(FRAMES, state=FRAMES[:, :2] * 3.0)
    return proc


def images(batch: int, cams: int, side: int = 48) -> list[list[np.ndarray]]:
    return [[RNG.integers(1, 255, size=(side, side, 3), dtype=np.uint8) for _ in range(cams)] for _ in range(batch)]


@pytest.mark.parametrize("family", ["florence2", "qwen2_5_vl"])
def test_processor_output_drives_the_model(family):
    proc = make_processor(family)
    model = make_model(family, num_cameras=2, use_state=True, state_dim=2,
                       normalization_stats=proc.normalization_stats)
    proc.check_model_config(model.config)
    actions = FRAMES[:12].reshape(2, 6, 3)
    batch = proc(
        images=images(2, 2), text=["pick up the red block", "open the drawer"], state=FRAMES[:2, :2],
        actions=actions, velocities=actions * 2.0, action_mask=np.ones((2, 6), bool),
    )
    n_img = image_tokens_per_image(family)
    counts = (batch["input_ids"] == IMAGE_TOKEN).sum(1)
    assert counts.tolist() == [2 * n_img, 2 * n_img]
    # the text follows the image blocks, tokenised from the template
    tok = make_tokenizer()
    text_ids = tok("what action should the robot take to open the drawer ?")["input_ids"]
    row = batch["input_ids"][1][batch["attention_mask"][1].bool()].tolist()
    assert row[-len(text_ids):] == text_ids
    out = model(**batch)
    assert torch.isfinite(out.loss)
    # the processor's actions are the normalised targets: q01 → -1, q99 → +1
    q01, q99 = np.quantile(FRAMES, 0.01, axis=0), np.quantile(FRAMES, 0.99, axis=0)
    expected = 2 * (actions - q01) / (q99 - q01) - 1
    np.testing.assert_allclose(batch["actions"].numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(batch["velocities"].numpy(), 2 * actions * 2 / (q99 - q01), rtol=1e-5, atol=1e-6)
    # generate_actions in physical units equals denormalising the normalised prediction
    traj = model.generate_actions(**{k: v for k, v in batch.items()}, derivatives=1)
    np.testing.assert_allclose(
        traj.position.numpy(), proc.denormalize_actions(out.positions.detach().double().numpy()), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("mode", ["QUANTILES", "MIN_MAX", "MEAN_STD", "IDENTITY"])
def test_normalisation_has_an_exact_inverse(mode):
    proc = make_processor(mode=mode, unnormalized_action_dims=[2])
    x = FRAMES[:50]
    y = proc.normalize_actions(x)
    np.testing.assert_allclose(proc.denormalize_actions(y), x, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(y[:, 2], x[:, 2])  # the excluded dim is untouched
    if mode == "MIN_MAX":
        np.testing.assert_allclose(proc.normalize_actions(FRAMES).min(0)[:2], [-1, -1], atol=1e-12)
        np.testing.assert_allclose(proc.normalize_actions(FRAMES).max(0)[:2], [1, 1], atol=1e-12)
    if mode == "MEAN_STD":
        np.testing.assert_allclose(proc.normalize_actions(FRAMES).mean(0)[:2], [0, 0], atol=1e-12)
    # velocities are only scaled: normalising v and the finite difference of positions agree
    v_norm = proc.normalize_velocities(x[1:] - x[:-1])
    np.testing.assert_allclose(v_norm, y[1:] - y[:-1], rtol=1e-9, atol=1e-12)
    s = FRAMES[:5, :2]
    np.testing.assert_allclose(proc.denormalize_state(proc.normalize_state(s)), s, rtol=0, atol=1e-12)
    t = torch.as_tensor(x)
    torch.testing.assert_close(proc.denormalize_actions(proc.normalize_actions(t)), t, rtol=0, atol=1e-12)


def test_compute_stats_matches_numpy():
    stats = compute_stats(FRAMES)
    np.testing.assert_allclose(stats["q01"], np.quantile(FRAMES, 0.01, axis=0))
    np.testing.assert_allclose(stats["q99"], np.quantile(FRAMES, 0.99, axis=0))
    np.testing.assert_allclose(stats["std"], FRAMES.std(axis=0))
    assert stats["count"] == [500]
    bad = FRAMES.copy()
    bad[7, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        compute_stats(bad)


def test_save_and_load_round_trip(tmp_path):
    proc = make_processor("qwen2_5_vl", num_cameras=1)
    proc.save_pretrained(tmp_path / "proc_rt")
    # saved on its own (no model, no config.json), the processor keeps the one copy of its statistics
    assert json.loads((tmp_path / "proc_rt" / "processor_config.json").read_text())["normalization_stats"]
    loaded = NiafProcessor.from_pretrained(tmp_path / "proc_rt")
    assert loaded.normalization_stats == proc.normalization_stats
    assert loaded.prompt_template == proc.prompt_template and loaded.image_start_token == "<vision_start>"
    obs = images(1, 1)
    a, b = proc(images=obs, text="open the drawer"), loaded(images=obs, text="open the drawer")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    x = FRAMES[:4]
    np.testing.assert_array_equal(loaded.normalize_actions(x), proc.normalize_actions(x))


def test_bad_processor_inputs():
    proc = make_processor(num_cameras=2)
    with pytest.raises(ValueError, match="wrong number of images for sample 0: expected 2"):
        proc(images=images(1, 1), text=["open the drawer"])
    with pytest.raises(ValueError, match="one entry per instruction"):
        proc(images=images(1, 2), text=["open the drawer", "pick up the block"])
    bad = FRAMES[:6].copy().reshape(1, 6, 3)
    bad[0, 3, 1] = np.nan
    with pytest.raises(ValueError, match="`actions` contains NaN"):
        proc(images=images(1, 2), text="open the drawer", actions=bad)
    with pytest.raises(ValueError, match="last dimension 3"):
        proc.normalize_actions(np.zeros((2, 4)))
    # a model with other shapes is refused; statistics are not compared (a checkpoint stores them once)
    model = make_model("florence2", num_cameras=1, normalization_stats={"action": {"q01": [0, 0, 0], "q99": [1, 1, 1]}})
    with pytest.raises(ValueError, match="`num_cameras` is 2 here but 1 in the model config"):
        proc.check_model_config(model.config)
    with pytest.raises(ValueError, match="prompt_template"):
        NiafProcessor(make_image_processor("florence2"), make_tokenizer(), prompt_template="no slot")
    with pytest.raises(ValueError, match="image token"):
        NiafProcessor(make_image_processor("florence2"), make_tokenizer(), image_token="<img>")


# ------------------------------------------------------------------------------------------------------------
# Hostile images and prompt settings: read alike or refused by name (moved from test_hostile_inputs.py)
# ------------------------------------------------------------------------------------------------------------
def _processor(**kw):
    from niaf_tiny_backbones import image_tokens_per_image, make_image_processor, make_tokenizer

    from modeling_niaf import NiafProcessor

    kwargs = dict(
        image_processor=make_image_processor("paligemma"),
        tokenizer=make_tokenizer(),
        image_token="<image>",
        image_seq_length=image_tokens_per_image("paligemma"),
        num_cameras=1,
        action_dim=3,
        normalization_mode="IDENTITY",
    )
    kwargs.update(kw)
    return NiafProcessor(**kwargs)


def test_images_in_common_layouts_are_read_alike_and_the_rest_refused_by_name():
    import torch
    from PIL import Image

    proc = _processor()
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    reference = proc(images=[hwc], text="open the drawer")["pixel_values"]
    assert reference.abs().max() > 0.5  # not a black frame
    as_float = hwc.astype(np.float32) / 255.0
    layouts = {
        "uint8 CHW": np.moveaxis(hwc, -1, 0),
        "float HWC": as_float,
        "float CHW tensor (LeRobot)": torch.from_numpy(np.moveaxis(as_float, -1, 0).copy()),
        "float64 CHW": np.moveaxis(as_float, -1, 0).astype(np.float64),
        "PIL RGB": Image.fromarray(hwc),
    }
    for name, image in layouts.items():
        got = proc(images=[image], text="open the drawer")["pixel_values"]
        torch.testing.assert_close(got, reference, rtol=0, atol=0, msg=name)
    hostile = {
        "empty": (np.zeros((0, 0, 3), np.uint8), r"is empty \(0×0 pixels\)"),
        "grayscale": (np.zeros((32, 32), np.uint8), r"has shape \(32, 32\); expected an RGB frame"),
        "grayscale 1-channel": (
            np.zeros((32, 32, 1), np.uint8),
            r"has shape \(32, 32, 1\); expected an RGB frame",
        ),
        "RGBA": (np.zeros((32, 32, 4), np.uint8), r"has shape \(32, 32, 4\); expected an RGB frame"),
        "PIL L": (Image.fromarray(hwc[..., 0]), "is a PIL image in mode 'L'"),
        "float 0-255": (
            hwc.astype(np.float32),
            r"is a float32 frame with values in \[0, 255\]; float frames must lie in \[0, 1\]",
        ),
        "float NaN": (
            np.full((32, 32, 3), np.nan, np.float32),
            r"is a float32 frame with values in \[nan, nan\]",
        ),
        "int64": (hwc.astype(np.int64), "has dtype int64"),
        "string": ("frame.png", "must be a PIL image, a numpy array or a torch tensor"),
    }
    for _name, (image, message) in hostile.items():
        with pytest.raises(ValueError, match=r"`images\[0\]\[0\]` " + message):
            proc(images=[image], text="open the drawer")


def test_prompt_templates_and_sequence_lengths_that_would_allocate_gigabytes_are_refused():
    from modeling_niaf.processing_niaf import MAX_IMAGE_SEQ_LENGTH

    for template in (
        "{instruction:>999999999}",
        "{instruction!r}",
        "{instruction.__class__}",
        "{0} {instruction}",
        "{instruction} {other}",
        "no slot",
        "{instruction",
    ):
        with pytest.raises(ValueError, match="`prompt_template`"):
            _processor(prompt_template=template)
    _processor(prompt_template="What should the robot do to {instruction}? {{literal braces}}")
    for length in (10**9, 0, True, 2.5):
        with pytest.raises(ValueError, match="`image_seq_length` must be an int in"):
            _processor(image_seq_length=length)
    _processor(image_seq_length=MAX_IMAGE_SEQ_LENGTH)
    with pytest.raises(ValueError, match="`num_cameras` must be <= 16"):
        _processor(num_cameras=10**6)



# ----------------------------------------------------------------------------------------------------------
# The image processor's backend: a reloaded processor preprocesses with the class it was saved with
# ----------------------------------------------------------------------------------------------------------
def torchvision_stand_in(pil_class: type) -> type:
    """A stand-in for transformers' torchvision class of ``pil_class``'s kind, usable without torchvision: it
    says ``backend == "torchvision"``, carries the torchvision class's name, and shifts every pixel by 2/255 (the
    size of the real classes' resizing difference), so pixels show which class made them."""

    def __call__(self, *args, **kwargs):
        out = pil_class.__call__(self, *args, **kwargs)
        out["pixel_values"] = out["pixel_values"] + 2 / 255
        return out

    name = pil_class.__name__.removesuffix("Pil")  # transformers' names: XPil (PIL), X (torchvision)
    return type(name, (pil_class,), {"backend": "torchvision", "__call__": __call__, "__module__": __name__})


def auto_picks(monkeypatch, backend: str, stand_in: type, pil_class: type) -> None:
    """Make ``AutoImageProcessor.from_pretrained`` pick ``backend`` as transformers' automatic choice does:
    ``"torchvision"`` where torchvision is installed (here the stand-in), ``"pil"`` where it is not."""
    from transformers import AutoImageProcessor

    try:
        original = AutoImageProcessor.from_pretrained.__func__
    except ImportError:  # transformers 5.5 without torchvision: AutoImageProcessor is a placeholder that refuses
        pytest.skip("this transformers has no AutoImageProcessor without torchvision, so there is no automatic "
                    "choice to stand in for")

    def from_pretrained(cls, *args, **kwargs):
        loaded = original(cls, *args, **kwargs)
        processor, rest = loaded if isinstance(loaded, tuple) else (loaded, None)
        chosen = stand_in if backend == "torchvision" else pil_class
        if type(processor) is not chosen:
            processor = chosen.from_dict({k: v for k, v in processor.to_dict().items() if k != "image_processor_type"})
        return (processor, rest) if isinstance(loaded, tuple) else processor

    monkeypatch.setattr(AutoImageProcessor, "from_pretrained", classmethod(from_pretrained))


def pixels(proc: NiafProcessor, obs) -> torch.Tensor:
    return proc(images=obs, text=["open the drawer"] * len(obs))["pixel_values"]


@pytest.mark.parametrize("family", ["paligemma", "qwen2_5_vl"])
@pytest.mark.parametrize("trained_with", ["pil", "torchvision"])
@pytest.mark.parametrize("auto_choice", ["pil", "torchvision"])
def test_a_reloaded_processor_preprocesses_with_the_class_it_was_saved_with(tmp_path, monkeypatch, family,
                                                                             trained_with, auto_choice):
    """Whatever transformers would pick on reload (torchvision where it is installed), the processor comes back
    with the image processor class it was saved with and gives bit-identical pixel values."""
    import transformers

    pil_class = type(make_image_processor(family))
    stand_in = torchvision_stand_in(pil_class)
    monkeypatch.setattr(transformers, stand_in.__name__, stand_in)  # the torchvision class, as transformers names it
    proc = make_processor(family, num_cameras=1, image_backend=trained_with)  # built as niaf-train builds it
    assert type(proc.image_processor) is (stand_in if trained_with == "torchvision" else pil_class)
    assert proc.image_backend == trained_with
    proc.save_pretrained(tmp_path / "proc")
    assert json.loads((tmp_path / "proc" / "processor_config.json").read_text())["image_backend"] == trained_with
    auto_picks(monkeypatch, auto_choice, stand_in, pil_class)
    loaded = NiafProcessor.from_pretrained(tmp_path / "proc")
    assert type(loaded.image_processor) is type(proc.image_processor)
    assert loaded.image_backend == trained_with
    obs = images(2, 1)
    torch.testing.assert_close(pixels(loaded, obs), pixels(proc, obs), rtol=0, atol=0)
    # the other class gives other pixels: a reload with transformers' choice would fail the comparison above
    flat = [o[0] for o in obs]
    settings = {k: v for k, v in proc.image_processor.to_dict().items() if k != "image_processor_type"}
    assert not torch.equal(stand_in.from_dict(settings)(flat, return_tensors="pt")["pixel_values"],
                           pil_class.from_dict(settings)(flat, return_tensors="pt")["pixel_values"])


def test_a_processor_saved_before_the_backend_was_recorded_loads_with_the_pil_class(tmp_path, monkeypatch):
    """``processor_config.json`` without ``image_backend`` (saved before it existed, by code that trained with
    the PIL class) reloads with the PIL class even where transformers would pick torchvision; an explicit
    ``image_backend`` argument overrides that."""
    import transformers

    proc = make_processor("paligemma", num_cameras=1)
    proc.save_pretrained(tmp_path / "old")
    config_file = tmp_path / "old" / "processor_config.json"
    saved = json.loads(config_file.read_text())
    del saved["image_backend"]
    config_file.write_text(json.dumps(saved))
    stand_in = torchvision_stand_in(type(proc.image_processor))
    monkeypatch.setattr(transformers, stand_in.__name__, stand_in)
    auto_picks(monkeypatch, "torchvision", stand_in, type(proc.image_processor))
    loaded = NiafProcessor.from_pretrained(tmp_path / "old")
    assert type(loaded.image_processor).__name__ == "SiglipImageProcessorPil" and loaded.image_backend == "pil"
    obs = images(1, 1)
    torch.testing.assert_close(pixels(loaded, obs), pixels(proc, obs), rtol=0, atol=0)
    chosen = NiafProcessor.from_pretrained(tmp_path / "old", image_backend="torchvision")
    assert type(chosen.image_processor) is stand_in and chosen.image_backend == "torchvision"


def test_a_backend_that_cannot_be_built_here_warns_and_keeps_the_loaded_class(tmp_path, monkeypatch):
    """A processor saved with the torchvision class, reloaded where transformers can only give the PIL class
    (torchvision not installed: its name resolves to the PIL class), keeps the PIL class and says so."""
    import transformers

    from modeling_niaf import processing_niaf

    pil_class = type(make_image_processor("paligemma"))
    stand_in = torchvision_stand_in(pil_class)
    monkeypatch.setattr(transformers, "SiglipImageProcessor", stand_in)
    proc = make_processor("paligemma", num_cameras=1, image_backend="torchvision")
    assert type(proc.image_processor) is stand_in
    proc.save_pretrained(tmp_path / "tv")
    monkeypatch.setattr(transformers, "SiglipImageProcessor", pil_class)  # transformers' fallback without torchvision
    auto_picks(monkeypatch, "pil", stand_in, pil_class)
    warnings = []
    monkeypatch.setattr(processing_niaf.logger, "warning", lambda msg, *args: warnings.append(msg % args))
    loaded = NiafProcessor.from_pretrained(tmp_path / "tv")
    assert type(loaded.image_processor) is pil_class and loaded.image_backend == "pil"
    assert len(warnings) == 1 and "torchvision backend" in warnings[0] and "2/255" in warnings[0], warnings


def test_image_backend_argument_is_checked():
    with pytest.raises(ValueError, match="`image_backend` must be one of"):
        _processor(image_backend="fast")


def test_with_torchvision_installed_a_saved_processor_reloads_its_own_class(tmp_path):
    """With the real torchvision class (where torchvision is installed): both classes round-trip, pixels
    bit-identical, and the two classes' pixels do differ (what the recorded backend protects against)."""
    pytest.importorskip("torchvision")
    from transformers import SiglipImageProcessor

    obs = images(2, 1)
    results = {}
    for backend in ("pil", "torchvision"):
        proc = make_processor("paligemma", num_cameras=1, image_backend=backend)
        assert proc.image_backend == backend
        if backend == "torchvision":
            assert type(proc.image_processor) is SiglipImageProcessor
        proc.save_pretrained(tmp_path / backend)
        loaded = NiafProcessor.from_pretrained(tmp_path / backend)
        assert type(loaded.image_processor) is type(proc.image_processor)
        results[backend] = pixels(proc, obs)
        torch.testing.assert_close(pixels(loaded, obs), results[backend], rtol=0, atol=0)
    assert not torch.equal(results["pil"], results["torchvision"])
