"""The tiny offline checkpoint and the one Qwen2.5-VL loading helper."""

from __future__ import annotations

import json

from evoq_data.generation.modeling import has_torchvision, load_model, load_processor
from evoq_data.testing.tiny_vlm import main as tiny_main


def test_tiny_vlm_command_writes_a_standard_checkpoint(tmp_path, capsys):
    out = tmp_path / "tiny"
    tiny_main([str(out)])
    # the path is the last line (DeepSpeed, when installed, may log to stdout on import)
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(out)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "preprocessor_config.json", "chat_template.jinja", "generation_config.json"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "qwen2_5_vl" and "vision_config" in config
    pre = json.loads((out / "preprocessor_config.json").read_text())
    assert pre["processor_class"] == "Qwen2_5_VLProcessor"

    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(out).model_type == "qwen2_5_vl"
    net = load_model(str(out), device="cpu")
    assert 100_000 < sum(p.numel() for p in net.parameters()) < 2_000_000


def test_processor_expands_each_image_into_its_patch_tokens(tiny_vlm):
    from PIL import Image

    from evoq_data.generation.prompts import chat_messages, compare_prompt

    assert not has_torchvision()  # this CI machine runs the no-torchvision path
    proc = load_processor(str(tiny_vlm))
    images = [Image.new("RGB", (56, 56), "red"), Image.new("RGB", (112, 56), "blue")]
    text = proc.apply_chat_template(chat_messages(compare_prompt(True), images),
                                    tokenize=False, add_generation_prompt=True)
    assert text.count("<|vision_start|><|image_pad|><|vision_end|>") == 2
    assert text.endswith("<|im_start|>assistant\n")
    assert compare_prompt(True).text in text
    batch = proc(text=[text], images=images, return_tensors="pt")
    grid = batch["image_grid_thw"].tolist()
    pad = proc.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    # one <|image_pad|> per merged 2x2 patch group of every image
    expected = sum(t * h * w // 4 for t, h, w in grid)
    assert int((batch["input_ids"] == pad).sum()) == expected
