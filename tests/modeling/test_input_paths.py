"""The vision and the language path reach the action function, for every backbone family.

For each tiny random-weight backbone of `niaf_tiny_backbones`, two synthetic datasets are built in code:

* image only: a square of one of three colours (each shade jittered) at a random place on a grey image, the
  same instruction for every sample; the target chunk is a ramp from 0 to the goal of the square's colour;
* instruction only: one of three instructions (two of them differ by one word), a random-noise image; the
  target chunk is a ramp to the goal of the instruction.

A short Adam run on the model's own ``forward`` loss must bring the held-out error (new images: new square
places and shades, new noise) far below the best blind predictor, computed here independently: a model that
cannot see the informative input can do no better than the mean training target (for squared error). This
holds with the whole model trained and with the backbone frozen under LoRA (only the adapters on the
language model's attention, the queries, ψ heads and SIREN train): the information has to travel from the
pixels / the instruction tokens through the backbone into the query tokens.

The image is coded by colour, not by the square's place (the square lands anywhere): a place-coded target
(a ramp toward the square's position, or toward its quadrant) was learnt, with the 0.02 init below, within 400 steps by PaliGemma and
SmolVLM only, not by the tiny Qwen-VL models nor Florence-2. The cause is not established: for Qwen-VL the
prompt's hidden states equal a plain transformers forward, and a left-half/right-half image task is learnt
with a last-step loss but not with the whole-chunk loss; that is an open question of issue 19, not checked here.
With ``image_keypoints`` (a convolutional spatial soft-argmax path beside the vision tower, for the families whose
images are tensors) a place-coded target is learnt in 300 steps by Florence-2, PaliGemma and SmolVLM alike
(held-out error about 1 % of the blind error, measured): the last test below.
Where the image tokens go is checked exactly in test_backbones.py.

The tiny language models are initialised with std LANGUAGE_INIT_STD = 0.1 (`backbone_config` below), not
transformers' default 0.02. That default is sized for widths of ~1000 (a weight matrix's gain 0.02·√d ≈ 0.6-0.9);
at width 32 the gain is 0.11, so an attention sublayer (two such matrices) adds ~1 % to a token's residual and
the query tokens hardly read the prompt at init. Measured at init, swapping "red" for "blue" moved the query
outputs Z by 1e-2 (PaliGemma), 5e-2 (SmolVLM) and 2e-4 (Florence-2, whose queries reach the prompt only through
the decoder's cross-attention, spread over 65 image and 5 text tokens) of their norm; training has to grow that
path first. With 0.02 the whole PaliGemma and SmolVLM models settled on merging "red" and "blue" (still after
600 steps), Florence-2's whole model reached 0.69x the blind error and under LoRA learnt nothing (1.00x). With 0.1
(about PyTorch's own nn.Linear init at fan-in 32; a trained backbone's token mixing is not ~1 % either) the same
swap moves Z by 0.24-0.44 of its norm (5e-3 for Florence-2) and every case learns at seed 0. No NIAF defect was found
on the way: in the decoder-only families the queries follow the whole prompt and see all of it (the mask is
checked in test_backbones.py), Florence-2's decoder queries cross-attend to the whole encoded prompt, and the
tokenizer gives "red" and "blue" distinct ids. A higher whole-model learning rate separates "red" and "blue" for
PaliGemma and SmolVLM with the 0.02 init too (1e-3, 2e-3), but makes the instruction-only set of Qwen2.5-VL and
Florence-2 collapse (1.00x and 0.99x at 2e-3), so the learning rates stay. The vision towers keep their defaults.

Held-out MSE / blind MSE after STEPS steps (seed 0, 1 thread, measured; the bound is MAX_RATIO = 0.2):

    instruction-only   florence2  paligemma  qwen2_5_vl  qwen3_vl  smolvlm
    init 0.02, full      0.69       0.17*       -           -        0.074*
    init 0.02, LoRA      1.00       0.001       -           -        -        (- : passed, <= 0.01)
    init 0.1,  full      0.007      0.005       0.004       0.004    0.041
    init 0.1,  LoRA      0.001      0.003       0.006       0.003    0.008
    image-only, init 0.1: 0.002-0.018 (full), 0.002-0.007 (LoRA), every family (2 threads)
    (* "red" and "blue" merged: the blue class's mean end point 0.56 / 0.31 from its goal, bound 0.25)

With other seeds (model init and data; measured) PaliGemma's and Florence-2's whole models learn too (seeds 1, 2:
0.010x, 0.013x; seed 1: 0.014x); Florence-2's closest margin is at seed 0, where the "blue" prompt ends 0.29 from its goal against
the swap check's 0.3. SmolVLM's whole model (swap 1.07 and 0.42 from the goal) and Florence-2 under LoRA (0.42x,
0.57x) still merge "red" and "blue" at those seeds: both are marked xfail, not strict (they pass at seed 0).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from niaf_tiny_backbones import BACKBONES, IMAGE_SIDE, IMAGE_TOKEN, image_tokens_per_image, make_tokenizer

from configuration_niaf import NiafConfig
from modeling_niaf import NiafForActionFunction

# 20 short training runs: ~3-15 s each on an idle core, far more on a loaded CI machine
pytestmark = pytest.mark.slow

FAMILY_TYPES = list(BACKBONES)  # florence2, paligemma, qwen2_5_vl, qwen3_vl, smolvlm
QWEN = ("qwen2_5_vl", "qwen3_vl")
CHUNK, DIM = 8, 2
RAMP = torch.linspace(0.0, 1.0, CHUNK)  # every target chunk goes from 0 to its goal along τ
GOALS = torch.tensor([[0.8, -0.6], [-0.7, -0.5], [0.0, 0.9]])  # one per colour / per instruction
PALETTE = np.array([[220, 40, 40], [40, 200, 40], [40, 40, 220]])
INSTRUCTION = "pick up the red block"
INSTRUCTIONS = ["pick up the red block", "pick up the blue block", "open the drawer"]
N_TRAIN, N_HELD_OUT, BATCH, STEPS = 96, 48, 8, 300
# Measured held-out MSE / blind MSE after STEPS steps: see the table in the module docstring. Learning nothing is ≈ 1.
MAX_RATIO = 0.2
FULL_LR, LORA_LR = 5e-4, 1e-3
# std of the tiny language models' weights and token embeddings (transformers' default initializer_range is 0.02,
# sized for widths of ~1000; at width 32 it leaves every attention / MLP sublayer a gain of ~1 %: see the docstring)
LANGUAGE_INIT_STD = 0.1


# --------------------------------------------------------------------------------------------------------
# Synthetic data (raw model inputs, as the family's processor would frame them)
# --------------------------------------------------------------------------------------------------------
def pixel_inputs(family: str, images: np.ndarray) -> dict[str, torch.Tensor]:
    """uint8 images [N, side, side, 3] → the family's ``pixel_values`` (+ ``image_grid_thw`` for Qwen-VL)."""
    if family in QWEN:  # the processor's patch order is what the vision tower and the M-RoPE grid expect
        from niaf_tiny_backbones import make_image_processor

        out = make_image_processor(family)(images=list(images), return_tensors="pt")
        return {"pixel_values": out["pixel_values"], "image_grid_thw": out["image_grid_thw"]}
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # SigLIP-style [-1, 1]
    return {"pixel_values": pixels.unsqueeze(1)}  # [N, cameras=1, 3, H, W]


def prompt_inputs(family: str, texts: list[str]) -> dict[str, torch.Tensor]:
    """Image placeholder tokens (framed by vision start/end for Qwen-VL) then the instruction; right-padded."""
    tokenizer = make_tokenizer()
    image = [IMAGE_TOKEN] * image_tokens_per_image(family)
    if family in QWEN:
        image = [297, *image, 296]
    rows = [image + tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    length = max(map(len, rows))
    input_ids = torch.zeros(len(rows), length, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row)
        attention_mask[i, : len(row)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def image_only(family: str, n: int, seed: int) -> tuple[dict[str, torch.Tensor], torch.Tensor, np.ndarray]:
    """A square (half the image side) of colour class c at a random place; one instruction. Target: ramp to
    GOALS[c]. Returns (inputs, targets [n, K, D], classes [n])."""
    rng = np.random.default_rng(seed)
    side = IMAGE_SIDE[family]
    square = side // 2
    classes = rng.integers(0, len(GOALS), n)
    images = np.full((n, side, side, 3), 128, np.uint8)
    for i, c in enumerate(classes):
        x, y = rng.integers(0, side - square + 1, size=2)
        images[i, y : y + square, x : x + square] = np.clip(PALETTE[c] + rng.integers(-20, 21, 3), 0, 255)
    inputs = {**prompt_inputs(family, [INSTRUCTION] * n), **pixel_inputs(family, images)}
    return inputs, RAMP[None, :, None] * GOALS[classes][:, None, :], classes


def image_place(family: str, n: int, seed: int) -> tuple[dict[str, torch.Tensor], torch.Tensor, np.ndarray]:
    """One red square (a quarter of the image side) at a random place; one instruction. Target: a ramp to the
    square's centre in image coordinates, scaled to [-0.8, 0.8] (x right, y down). Returns (inputs, targets
    [n, K, D], the square's corner [n, 2])."""
    rng = np.random.default_rng(seed)
    side = IMAGE_SIDE[family]
    square = side // 4
    images = np.full((n, side, side, 3), 128, np.uint8)
    corners = rng.integers(0, side - square + 1, size=(n, 2))
    for i, (x, y) in enumerate(corners):
        images[i, y : y + square, x : x + square] = PALETTE[0]
    centre = (corners + square / 2) / side  # in (0, 1)
    goal = torch.from_numpy(1.6 * centre - 0.8).float()
    inputs = {**prompt_inputs(family, [INSTRUCTION] * n), **pixel_inputs(family, images)}
    return inputs, RAMP[None, :, None] * goal[:, None, :], corners


def instruction_only(family: str, n: int, seed: int) -> tuple[dict[str, torch.Tensor], torch.Tensor, np.ndarray]:
    """Instruction c of INSTRUCTIONS with a uniform-noise image. Target: ramp to GOALS[c]."""
    rng = np.random.default_rng(seed)
    side = IMAGE_SIDE[family]
    classes = rng.integers(0, len(GOALS), n)
    images = rng.integers(0, 256, size=(n, side, side, 3), dtype=np.uint8)
    inputs = {**prompt_inputs(family, [INSTRUCTIONS[c] for c in classes]), **pixel_inputs(family, images)}
    return inputs, RAMP[None, :, None] * GOALS[classes][:, None, :], classes


def rows(family: str, inputs: dict[str, torch.Tensor], index: torch.Tensor) -> dict[str, torch.Tensor]:
    """The samples ``index`` of a batch (Qwen-VL's flattened patches: the same number per sample here)."""
    out = {}
    n = inputs["input_ids"].shape[0]
    for key, value in inputs.items():
        if key == "pixel_values" and family in QWEN:
            value = value.reshape(n, -1, value.shape[-1])[index].flatten(0, 1)
        else:
            value = value[index]
        out[key] = value
    return out


# --------------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------------
def backbone_config(family: str) -> dict:
    """The family's tiny config with its language model initialised at LANGUAGE_INIT_STD (see the module
    docstring): the vision tower and everything else as in niaf_tiny_backbones."""
    config = BACKBONES[family]()
    config["text_config"]["init_std" if family == "florence2" else "initializer_range"] = LANGUAGE_INIT_STD
    return config


def make_policy(family: str, lora: bool, image_keypoints: int = 0):
    torch.manual_seed(0)
    config = NiafConfig(
        backbone_config=backbone_config(family), action_dim=DIM, chunk_size=CHUNK, control_hz=10.0, siren_layers=2,
        siren_width=16, modulation_groups=4, normalization_mode="IDENTITY", image_keypoints=image_keypoints,
    )
    model = NiafForActionFunction(config)
    if lora:  # as niaf-train applies PEFT: family default targets, NIAF head in modules_to_save
        pytest.importorskip("peft")
        from niaf_train.training.lora import apply_lora

        model = apply_lora(model, r=8, lora_alpha=16)
    return model


def train(model, family: str, inputs: dict[str, torch.Tensor], targets: torch.Tensor, lr: float) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(STEPS):
        index = torch.randint(0, targets.shape[0], (BATCH,), generator=generator)
        loss = model(**rows(family, inputs, index), actions=targets[index]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def predict(model, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """[N, K, D] normalised positions at the K training points, through the inference API."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.generate_actions(**inputs, derivatives=0, denormalize=False).position


def mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).pow(2).mean())


def learns(family: str, dataset, lora: bool, image_keypoints: int = 0):
    """Train on one dataset, return (model, held-out prediction, held-out data, blind MSE, held-out MSE)."""
    model = make_policy(family, lora, image_keypoints)
    train_inputs, train_targets, _ = dataset(family, N_TRAIN, seed=1)
    test_inputs, test_targets, test_classes = dataset(family, N_HELD_OUT, seed=2)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "backbone" in n}
    train(model, family, train_inputs, train_targets, LORA_LR if lora else FULL_LR)
    prediction = predict(model, test_inputs)
    # the best predictor blind to the informative input: the mean training target chunk (for squared error)
    blind = mse(train_targets.mean(0, keepdim=True).expand_as(test_targets), test_targets)
    held_out = mse(prediction, test_targets)
    if lora:  # the backbone itself is frozen: only the LoRA adapters in it moved
        after = dict(model.named_parameters())
        frozen = [n for n in before if "lora_" not in n]
        assert frozen and all(torch.equal(before[n], after[n]) for n in frozen)
        adapters = [n for n in before if "lora_B" in n]
        assert adapters and any(not torch.equal(before[n], after[n]) for n in adapters)
    return model, prediction, test_inputs, test_targets, test_classes, blind, held_out


def class_means(prediction: torch.Tensor, classes: np.ndarray) -> torch.Tensor:
    """[C, D]: the mean predicted chunk end of each class."""
    return torch.stack([prediction[torch.from_numpy(classes == c), -1].mean(0) for c in range(len(GOALS))])


# --------------------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------------------
CASES = [pytest.param(f, lora, id=f"{f}-{'lora' if lora else 'full'}") for f in FAMILY_TYPES for lora in (False, True)]
# Not strict: both pass at this module's seeds (table in the module docstring) but not at others (measured).
SEED_DEPENDENT = {
    ("smolvlm", False): "whole SmolVLM: 'red' and 'blue' merged at 2 of 3 seeds (the prompt swap ends 1.07 and 0.42 from "
                        "the goal, bound 0.3), learnt at seed 0",
    ("florence2", True): "Florence-2 under LoRA: the instruction is learnt at seed 0 (0.001x the blind error), not at 2 "
                         "other seeds (0.42x, 0.57x: red and blue merged)",
}
INSTRUCTION_CASES = [pytest.param(f, lora, id=f"{f}-{'lora' if lora else 'full'}",
                                  marks=[pytest.mark.xfail(strict=False, reason=SEED_DEPENDENT[f, lora])]
                                  if (f, lora) in SEED_DEPENDENT else [])
                     for f in FAMILY_TYPES for lora in (False, True)]


@pytest.mark.parametrize(("family", "lora"), CASES)
def test_image_only_target_is_learnt_from_the_pixels(family, lora):
    model, prediction, inputs, targets, classes, blind, held_out = learns(family, image_only, lora)
    print(f"{family} image-only {'lora' if lora else 'full'}: held-out MSE {held_out:.5f}, blind {blind:.5f}")
    assert blind > 0.1  # the three goals are far apart: a blind model is far off
    assert held_out < MAX_RATIO * blind, (held_out, blind)
    # Only the image changes between held-out samples: the chunk ends of each colour sit near that colour's goal.
    torch.testing.assert_close(class_means(prediction, classes), GOALS, rtol=0, atol=0.25)
    # Per sample: the goal nearest to each predicted chunk end is its own colour's (the instruction is the same).
    nearest = torch.cdist(prediction[:, -1].double(), GOALS.double()).argmin(1).numpy()
    assert (nearest == classes).mean() > 0.9


@pytest.mark.parametrize(("family", "lora"), INSTRUCTION_CASES)
def test_instruction_only_target_is_learnt_from_the_tokens(family, lora):
    model, prediction, inputs, targets, classes, blind, held_out = learns(family, instruction_only, lora)
    print(f"{family} instruction-only {'lora' if lora else 'full'}: held-out MSE {held_out:.5f}, blind {blind:.5f}")
    assert blind > 0.1
    assert held_out < MAX_RATIO * blind, (held_out, blind)
    torch.testing.assert_close(class_means(prediction, classes), GOALS, rtol=0, atol=0.25)
    # "red" vs "blue" is one token apart: swapping that token alone moves the prediction to the other goal.
    red = prompt_inputs(family, [INSTRUCTIONS[0]] * 4)
    blue = prompt_inputs(family, [INSTRUCTIONS[1]] * 4)
    image = rows(family, inputs, torch.arange(4))
    ends = [predict(model, {**image, **prompt})[:, -1] for prompt in (red, blue)]
    for end, goal in zip(ends, GOALS[:2], strict=True):
        assert torch.linalg.vector_norm(end - goal, dim=-1).max() < 0.3


@pytest.mark.parametrize("family", ["florence2", "paligemma", "smolvlm"])
def test_a_place_coded_target_is_learnt_through_image_keypoints(family):
    """Where the square is decides the target (see the module docstring: without keypoints, Florence-2 and
    Qwen-VL do not learn this in 300 steps). With ``image_keypoints`` every family with image tensors learns it."""
    model, prediction, inputs, targets, corners, blind, held_out = learns(family, image_place, False, image_keypoints=4)
    print(f"{family} place-coded, keypoints: held-out MSE {held_out:.5f}, blind {blind:.5f}")
    assert blind > 0.02  # a ramp to goals spread over [-0.8, 0.8]²: about 0.037
    assert held_out < MAX_RATIO * blind, (held_out, blind)
