"""backbones.py: one description per backbone family, checked against the model and each family's own processor.

For every tiny backbone of `niaf_tiny_backbones`: the family is found; the model injects the queries as the
family says (sequence length, positions, decoder inputs); the NiafProcessor built from the family description
frames the prompt exactly as the family's own transformers processor does (built in code: a word-level
tokenizer whose ids fit the tiny backbones, and the family's image processor class); a processor built with
`NiafProcessor.from_pretrained_backbone` from a saved tiny backbone feeds the model from
`NiafForActionFunction.from_pretrained_backbone`; LoRA targets and head modules exist in each model.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from niaf_tiny_backbones import BACKBONES, IMAGE_SIDE, IMAGE_TOKEN, image_tokens_per_image
from test_modeling import make_model

from configuration_niaf import NiafConfig
from modeling_niaf import NiafForActionFunction, NiafProcessor
from modeling_niaf.backbones import FAMILIES, HEAD_MODULES, SUPPORTED_MODEL_TYPES, family_of

FAMILY_TYPES = list(BACKBONES)  # florence2, paligemma, qwen2_5_vl, qwen3_vl, smolvlm
QWEN = ("qwen2_5_vl", "qwen3_vl")
INSTRUCTION = "pick up the red block"
TEMPLATE = "what action should the robot take to {instruction} ?"

# Each family's placeholder strings, at the ids the tiny backbone configs use (image 299, start 297, end 296).
IMAGE_STRINGS = {
    "florence2": ("<image>", None, None),
    "paligemma": ("<image>", None, None),
    "qwen2_5_vl": ("<|image_pad|>", "<|vision_start|>", "<|vision_end|>"),
    "qwen3_vl": ("<|image_pad|>", "<|vision_start|>", "<|vision_end|>"),
    "smolvlm": ("<image>", None, None),
}

# Qwen-VL chat templates as published with the checkpoints (Qwen2-VL/2.5-VL adds a default system turn;
# Qwen3-VL does not), reduced to the branches a one-turn image + text conversation takes.
QWEN2_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% for message in messages %}{% if loop.first and message['role'] "
    "!= 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>"
    "{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n{% else %}"
    "{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in content or 'image_url' "
    "in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture "
    "{{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif 'text' in content %}"
    "{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "<|im_start|>assistant\n{% endif %}"
)
QWEN3_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message.role + '\\n' }}{% if message.content is string %}"
    "{{ message.content }}{% else %}{% for content in message.content %}{% if content.type == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif content.type == 'text' %}{{ content.text }}{% endif %}"
    "{% endfor %}{% endif %}{{ '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CHAT_WORDS = ["system", "user", "assistant", "You", "are", "a", "helpful", ".", "User", ":", "Assistant"]
TASK_WORDS = ["pick", "up", "the", "red", "block", "open", "drawer", "what", "action", "should", "robot", "take",
              "to", "?"]


def make_family_tokenizer(family: str):
    """A word-level tokenizer with the family's special tokens; ids < 300 (the tiny backbones' vocabulary).

    ``"\\n"`` is its own token, so that a framing with or without a newline tokenises differently.
    """
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    image, start, end = IMAGE_STRINGS[family]
    specials = ["<|im_start|>", "<|im_end|>", "<end_of_utterance>", "<fake_token_around_image>", "<global-img>"]
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "\n": 4}
    for word in TASK_WORDS + CHAT_WORDS + specials:
        vocab.setdefault(word, len(vocab))
    for i in range(len(vocab), 296):  # contiguous ids: tokens a processor adds get ids >= 300, not reused ones
        vocab[f"<unused{i}>"] = i
    vocab.update({end or "<vision_end>": 296, start or "<vision_start>": 297, "<video>": 298, image: IMAGE_TOKEN})
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.add_tokens([AddedToken("\n", normalized=False)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>",
        additional_special_tokens=[t for t in [image, start, end, *specials] if t], image_token=image,
    )
    tokenizer.padding_side = "right"
    return tokenizer


def make_family_image_processor(family: str):
    """The family's own image processor class, set to the tiny backbone's image size."""
    from transformers import Qwen2VLImageProcessorPil, SiglipImageProcessorPil, SmolVLMImageProcessorPil

    side = IMAGE_SIDE[family]
    if family in QWEN:
        return Qwen2VLImageProcessorPil(patch_size=8, merge_size=2, temporal_patch_size=2, min_pixels=side * side,
                                        max_pixels=side * side)
    if family == "smolvlm":
        try:
            return SmolVLMImageProcessorPil(do_image_splitting=False, size={"longest_edge": side},
                                            max_image_size={"longest_edge": side})
        except ImportError as err:  # transformers 5.5's PIL processor still asks for torchvision; newer ones do not
            pytest.skip(f"SmolVLM's image processor needs torchvision in this transformers version: {err}"[:200])
    processor = SiglipImageProcessorPil(size={"height": side, "width": side})
    processor.image_seq_length = image_tokens_per_image(family)  # as in the Hub's preprocessor_config.json
    return processor


@pytest.fixture
def own_processor(monkeypatch):
    """Build a family's own transformers processor in code.

    This environment has no torchvision (so no video processor class) and no num2words; neither is used for
    images. The class check is relaxed for the video processor only, and SmolVLM gets a stand-in for both.
    """
    from transformers.processing_utils import ProcessorMixin

    check = ProcessorMixin.check_argument_for_proper_class

    def lenient(self, name, argument):
        return None if name == "video_processor" else check(self, name, argument)

    monkeypatch.setattr(ProcessorMixin, "check_argument_for_proper_class", lenient)

    def build(family: str):
        import transformers
        from transformers.models.smolvlm import processing_smolvlm

        tokenizer, images = make_family_tokenizer(family), make_family_image_processor(family)
        if family == "paligemma":
            return transformers.PaliGemmaProcessor(image_processor=images, tokenizer=tokenizer)
        if family == "florence2":
            return transformers.Florence2Processor(image_processor=images, tokenizer=tokenizer)
        if family in QWEN:
            cls = transformers.Qwen2_5_VLProcessor if family == "qwen2_5_vl" else transformers.Qwen3VLProcessor
            template = QWEN2_CHAT_TEMPLATE if family == "qwen2_5_vl" else QWEN3_CHAT_TEMPLATE
            return cls(image_processor=images, tokenizer=tokenizer, video_processor=None, chat_template=template)
        monkeypatch.setattr(processing_smolvlm, "num2words", str, raising=False)
        return transformers.SmolVLMProcessor(
            image_processor=images, tokenizer=tokenizer, video_processor=SimpleNamespace(num_frames=1, fps=1.0),
            image_seq_len=image_tokens_per_image("smolvlm"), chat_template=processing_smolvlm.DEFAULT_CHAT_TEMPLATE,
        )

    return build


def camera_images(batch: int, cams: int, seed: int = 0) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [[rng.integers(1, 255, size=(40, 40, 3), dtype=np.uint8) for _ in range(cams)] for _ in range(batch)]


def own_batch(processor, family: str, obs: list[list[np.ndarray]], prompt: str):
    """What the family's own processor makes of one observation, used as the backbone was pretrained."""
    if family in ("paligemma", "florence2"):  # prompt only: the processor frames it (image tokens, bos, ...)
        images = obs[0] if family == "paligemma" else obs[0][0]
        return processor(images=[images], text=[prompt], return_tensors="pt")
    content = [{"type": "image"} for _ in obs[0]] + [{"type": "text", "text": prompt}]
    text = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    return processor(images=[obs[0]], text=[text], return_tensors="pt")


def niaf_from_own(own, family: str, cams: int, **kwargs) -> NiafProcessor:
    return NiafProcessor.from_backbone_parts(
        BACKBONES[family](), own.image_processor, copy.deepcopy(own.tokenizer), chat_template=own.chat_template,
        base_processor=own, prompt_template=TEMPLATE, num_cameras=cams, action_dim=3, normalization_mode="IDENTITY",
        **kwargs,
    )


# --------------------------------------------------------------------------------------------------------
# Lookup
# --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILY_TYPES)
def test_each_tiny_backbone_has_its_family(family):
    config = BACKBONES[family]()
    found = family_of(config)
    assert family in found.model_types and family_of(family) is found
    assert make_model(family).backbone_family is found
    assert set(SUPPORTED_MODEL_TYPES) >= {"florence2", "paligemma", "qwen2_vl", "qwen2_5_vl", "qwen3_vl",
                                          "smolvlm", "idefics3"}
    assert sum(family in f.model_types for f in FAMILIES) == 1


def test_unsupported_model_type_is_one_line():
    with pytest.raises(ValueError) as err:
        family_of({"model_type": "llava"})
    message = str(err.value)
    assert "\n" not in message and "'llava'" in message and "paligemma" in message
    with pytest.raises(ValueError, match="'llava' is not supported"):
        NiafForActionFunction(NiafConfig(backbone_config={"model_type": "llava"}, action_dim=3))
    with pytest.raises(ValueError, match="'llava' is not supported"):
        NiafProcessor.from_backbone_parts({"model_type": "llava"}, None, None)


# --------------------------------------------------------------------------------------------------------
# Injection: what the family says is what the model does
# --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILY_TYPES)
def test_injection_matches_the_family(family, own_processor):
    fam = family_of(family)
    niaf = niaf_from_own(own_processor(family), family, cams=2)
    batch = niaf(images=camera_images(2, 2), text=[INSTRUCTION, "open the drawer"])
    if fam.pixel_layout == "patches":
        assert batch["pixel_values"].ndim == 2 and batch["image_grid_thw"].shape == (4, 3)
    else:
        assert batch["pixel_values"].shape[:2] == (2, 2) and "image_grid_thw" not in batch
    model = make_model(family, num_cameras=2)
    q = model.config.num_queries
    length = batch["input_ids"].shape[1]
    seen = {}
    bb = model.backbone
    target = bb.language_model.get_decoder() if fam.encoder_decoder else bb

    def pre_hook(_module, _args, kwargs):
        seen["embeds"] = kwargs["inputs_embeds"]
        seen["positions"] = kwargs.get("position_ids")

    def hook(_module, _args, output):
        seen["hidden"] = output.last_hidden_state

    handles = [target.register_forward_pre_hook(pre_hook, with_kwargs=True), target.register_forward_hook(hook)]
    try:
        with torch.no_grad():
            z = model.encode_queries(**batch)
    finally:
        for handle in handles:
            handle.remove()
    assert z.shape == (2, q, model.config.hidden_size)
    torch.testing.assert_close(z, seen["hidden"][:, -q:], rtol=0, atol=0)
    if fam.encoder_decoder:  # the decoder reads the queries only; the encoder read image + prompt
        assert seen["embeds"].shape[1] == q
        return
    assert seen["embeds"].shape[1] == length + q  # queries appended after the whole prompt
    positions = seen["positions"]
    if fam.mrope:  # 3-D rotary positions from get_rope_index; the queries continue after the prompt as text
        assert positions.ndim == 3 and positions.shape[0] == 3
        last = positions[:, :, length - 1]
        expected = last.unsqueeze(-1) + 1 + torch.arange(q)
        torch.testing.assert_close(positions[:, :, length:], expected, rtol=0, atol=0)
    else:
        assert positions.ndim == 2
        valid = batch["attention_mask"].sum(1, keepdim=True)  # padding does not count (it is moved left)
        torch.testing.assert_close(positions[:, length:], valid + torch.arange(q), rtol=0, atol=0)


# --------------------------------------------------------------------------------------------------------
# Prompt framing: identical to the family's own processor
# --------------------------------------------------------------------------------------------------------
FRAMING_CASES = [(f, c) for f in FAMILY_TYPES for c in ((1,) if f == "florence2" else (1, 2))]


@pytest.mark.parametrize(("family", "cams"), FRAMING_CASES)
def test_prompt_framing_equals_the_family_processor(family, cams, own_processor):
    own = own_processor(family)
    niaf = niaf_from_own(own, family, cams)
    obs = camera_images(1, cams, seed=cams)
    mine = niaf(images=obs, text=INSTRUCTION)
    theirs = own_batch(own, family, obs, TEMPLATE.format(instruction=INSTRUCTION))
    assert mine["input_ids"].tolist() == theirs["input_ids"].tolist(), (
        niaf.tokenizer.convert_ids_to_tokens(mine["input_ids"][0]),
        own.tokenizer.convert_ids_to_tokens(theirs["input_ids"][0]),
    )
    pixels = theirs["pixel_values"]
    if family in QWEN:
        torch.testing.assert_close(mine["image_grid_thw"], theirs["image_grid_thw"], rtol=0, atol=0)
    else:
        pixels = pixels.reshape(mine["pixel_values"].shape)
    torch.testing.assert_close(mine["pixel_values"], pixels, rtol=0, atol=0)
    # what each family looks like, spelled out (the tokenizer keeps "\n" as a token)
    tokens = niaf.tokenizer.convert_ids_to_tokens(mine["input_ids"][0])
    image = IMAGE_STRINGS[family][0]
    n = image_tokens_per_image(family)
    text = TEMPLATE.format(instruction=INSTRUCTION).split()
    if family == "paligemma":
        assert tokens == [image] * (n * cams) + ["<s>"] + text + ["\n"]
    elif family == "florence2":
        assert tokens == [image] * n + ["<s>"] + text + ["</s>"]
    elif family in QWEN:
        system = ["<|im_start|>", "system", "\n", "You", "are", "a", "helpful", "assistant", ".", "<|im_end|>", "\n"]
        turn = (system if family == "qwen2_5_vl" else []) + ["<|im_start|>", "user", "\n"]
        images = ["<|vision_start|>"] + [image] * n + ["<|vision_end|>"]
        assert tokens == turn + images * cams + text + ["<|im_end|>", "\n", "<|im_start|>", "assistant", "\n"]
    else:
        images = ["<fake_token_around_image>", "<global-img>"] + [image] * n + ["<fake_token_around_image>"]
        assert tokens == ["<|im_start|>", "User", ":"] + images * cams + text + ["<end_of_utterance>", "\n",
                                                                                  "Assistant", ":"]


def test_prompt_frame_survives_save_and_load(tmp_path, own_processor):
    niaf = niaf_from_own(own_processor("qwen2_5_vl"), "qwen2_5_vl", cams=1)
    assert niaf.prompt_frame.count("{images}") == 1 and niaf.prompt_frame.endswith("<|im_start|>assistant\n")
    niaf.save_pretrained(tmp_path / "proc")
    loaded = NiafProcessor.from_pretrained(tmp_path / "proc")
    assert loaded.prompt_frame == niaf.prompt_frame
    obs = camera_images(1, 1)
    assert loaded(images=obs, text=INSTRUCTION)["input_ids"].tolist() == niaf(images=obs, text=INSTRUCTION)["input_ids"].tolist()


def test_processor_saved_without_a_frame_keeps_its_prompts(tmp_path, own_processor):
    import json

    niaf = niaf_from_own(own_processor("paligemma"), "paligemma", cams=1)
    niaf.save_pretrained(tmp_path / "proc")
    path = tmp_path / "proc" / "processor_config.json"
    saved = json.loads(path.read_text())
    del saved["prompt_frame"]  # as written before prompt_frame existed
    path.write_text(json.dumps(saved))
    old = NiafProcessor.from_pretrained(tmp_path / "proc")
    assert old.prompt_frame is None
    ids = old(images=camera_images(1, 1), text=INSTRUCTION)["input_ids"][0].tolist()
    text = old.tokenizer(TEMPLATE.format(instruction=INSTRUCTION), add_special_tokens=False)["input_ids"]
    assert ids == [IMAGE_TOKEN] * image_tokens_per_image("paligemma") + text  # image blocks, then the prompt


def test_chat_family_without_template_says_how_to_frame(own_processor):
    own = own_processor("qwen2_5_vl")
    with pytest.raises(ValueError, match="no chat template.*prompt_frame="):
        NiafProcessor.from_backbone_parts(BACKBONES["qwen2_5_vl"](), own.image_processor, own.tokenizer)
    plain = NiafProcessor.from_backbone_parts(BACKBONES["qwen2_5_vl"](), own.image_processor, own.tokenizer,
                                              prompt_frame="{images}{prompt}")
    assert plain.prompt_frame == "{images}{prompt}"
    with pytest.raises(ValueError, match="prompt_frame"):
        NiafProcessor.from_backbone_parts(BACKBONES["paligemma"](), own.image_processor, own.tokenizer,
                                          prompt_frame="{prompt} only")


# --------------------------------------------------------------------------------------------------------
# from_pretrained_backbone: processor and model from the same saved backbone
# --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILY_TYPES)
@pytest.mark.parametrize("trained_with", ["pil", "torchvision"])
def test_every_family_reloads_the_image_processor_class_it_was_saved_with(family, trained_with, tmp_path,
                                                                          own_processor, monkeypatch):
    """A NIAF processor of each family's own image processor, saved with the PIL or the torchvision class and
    reloaded where transformers would pick the other one, comes back with its class and its exact pixels."""
    import transformers
    from test_processing import auto_picks, torchvision_stand_in

    own = own_processor(family)
    pil_class = type(own.image_processor)
    stand_in = torchvision_stand_in(pil_class)
    monkeypatch.setattr(transformers, stand_in.__name__, stand_in)
    niaf = niaf_from_own(own, family, cams=2, image_backend=trained_with)  # "torchvision": rebuilt as the stand-in
    assert type(niaf.image_processor) is (stand_in if trained_with == "torchvision" else pil_class)
    niaf.save_pretrained(tmp_path / "niaf")
    auto_picks(monkeypatch, "pil" if trained_with == "torchvision" else "torchvision", stand_in, pil_class)
    loaded = NiafProcessor.from_pretrained(tmp_path / "niaf")
    assert type(loaded.image_processor) is type(niaf.image_processor) and loaded.image_backend == trained_with
    obs = camera_images(2, 2)
    a, b = niaf(images=obs, text=[INSTRUCTION] * 2), loaded(images=obs, text=[INSTRUCTION] * 2)
    assert sorted(a) == sorted(b)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("family", FAMILY_TYPES)
def test_processor_from_pretrained_backbone_feeds_the_model(family, tmp_path, own_processor):
    from transformers import AutoModel
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if family in QWEN or family == "smolvlm":
        # their AutoProcessor loads a video processor (torchvision), SmolVLM's also needs num2words
        pytest.importorskip("torchvision")
        if family == "smolvlm":
            pytest.importorskip("num2words")
    spec = BACKBONES[family]()
    model_type = spec.pop("model_type")
    torch.manual_seed(0)
    AutoModel.from_config(CONFIG_MAPPING[model_type](**spec)).save_pretrained(tmp_path / "backbone")
    own_processor(family).save_pretrained(tmp_path / "backbone")

    head = {"action_dim": 3, "chunk_size": 6, "num_cameras": 2, "siren_layers": 2, "siren_width": 16,
            "modulation_groups": 4, "normalization_mode": "IDENTITY"}
    processor = NiafProcessor.from_pretrained_backbone(
        str(tmp_path / "backbone"), prompt_template=TEMPLATE, num_cameras=2, action_dim=3,
        normalization_mode="IDENTITY",
    )
    model = NiafForActionFunction.from_pretrained_backbone(str(tmp_path / "backbone"), **head).eval()
    processor.check_model_config(model.config)
    actions = np.random.default_rng(0).normal(size=(2, 6, 3))
    batch = processor(images=camera_images(2, 2), text=[INSTRUCTION, "open the drawer"], actions=actions)
    out = model(**batch)
    assert torch.isfinite(out.loss) and out.positions.shape == (2, 6, 3)
    assert (batch["input_ids"] == IMAGE_TOKEN).sum(1).tolist() == [2 * image_tokens_per_image(family)] * 2


# --------------------------------------------------------------------------------------------------------
# LoRA targets and head modules
# --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILY_TYPES)
def test_lora_targets_and_head_modules_exist(family):
    import re

    # every optional module of NIAF's own: the state pathway, and image keypoints where images are tensors
    keypoints = 0 if family in ("qwen2_5_vl", "qwen3_vl") else 2
    model = make_model(family, use_state=True, state_dim=2, image_keypoints=keypoints)
    fam = model.backbone_family
    pattern = re.compile(fam.lora_target_regex())
    names = [name for name, _ in model.named_modules()]
    matched = [name for name in names if pattern.search(name)]
    for target in fam.lora_target_modules:
        assert any(name.endswith("." + target) for name in matched), (family, target)
    # the language model only: not the vision tower, not NIAF's head (SmolVLM calls it text_model)
    assert all(f".{fam.language_model}." in name and "vision" not in name for name in matched)
    assert fam.head_modules == HEAD_MODULES
    own = {name.split(".")[0] for name, _ in model.named_parameters() if not name.startswith("backbone.")}
    assert own == set(fam.head_modules) - ({"image_keypoints"} if not keypoints else set())
