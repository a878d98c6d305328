"""Write a tiny random-weight Qwen2.5-VL checkpoint, with no network.

    python -m evoq_data.testing.tiny_vlm OUT_DIR
    python -m evoq_data.testing.tiny_vlm OUT_DIR --warmup-steps 200   # + format warm-up
    python -m evoq_data.testing.tiny_vlm OUT_DIR --warmup-steps 200 --warmup-min-valid 0.8
    python -m evoq_data.testing.tiny_vlm OUT_DIR --judge brightness [--judge-skill weak]

The checkpoint has the standard ``save_pretrained`` layout (config, safetensors weights, a
byte-level BPE tokenizer trained on the spot with Qwen's special tokens, the Qwen2-VL chat
template and a small-image ``Qwen2VLImageProcessor`` config), so every engine loads it like
any Qwen2.5-VL checkpoint. About 0.4 M parameters: for tests and the demo only.

A random model never writes ``\\boxed{<number>}``; ``--warmup-steps N`` then trains it on the
answer format only (uniform random answers to the score and compare prompts, no quality
information; :mod:`evoq_data.testing.warmup`), so that GRPO's fidelity reward has something to
work with; ``--warmup-min-valid F`` goes on 100 steps at a time until that share of sampled
answers parses for both prompts (some seeds need more than 200 steps). ``--judge brightness``
then teaches the compare prompt with a known skill (a brightness judge whose accuracy falls
with the brightness gap; :mod:`evoq_data.testing.judge`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>",
    "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>",
    "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]

# The Qwen2-VL chat template (images and videos as content parts).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = [
    "You are performing an image quality assessment task. Compare the two images and decide "
    "which one has better perceptual quality. Answer strictly with the index of the better "
    "image: 0 if the first image is better, or 1 if the second image is better.",
    "You are doing the image quality assessment task. What is your overall rating on the "
    "quality of this picture? The rating should be a float between 1 and 5.",
    "<think> The first image is sharper and has less noise. </think> \\boxed{0} \\boxed{1}",
    "0 1 2 3 4 5 6 7 8 9 . 1.25 3.50 4.75 boxed{} think answer system user assistant",
]


def train_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        unk_token=None, additional_special_tokens=SPECIAL_TOKENS[1:],
        model_max_length=4096,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


# The tiny model's shape: the text model's fields (with its rope's theta and 3D sections)
# and the vision tower's; the vocabulary is the tokenizer's.
TINY_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                 max_position_embeddings=4096, rope_theta=10000.0, mrope_section=[4, 6, 6],
                 tie_word_embeddings=True)
TINY_VISION = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                   out_hidden_size=64, patch_size=14, spatial_merge_size=2,
                   temporal_patch_size=2, in_channels=3, window_size=56,
                   fullatt_block_indexes=[1], tokens_per_second=2)


def qwen25_vl_config(tokenizer, text: dict, vision: dict):
    """A Qwen2.5-VL config of the given shape (``text`` as :data:`TINY_TEXT`), its special
    token ids those of ``tokenizer`` and, unless ``text`` names one, its vocabulary too."""
    from transformers import Qwen2_5_VLConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text = dict(text)
    mrope, theta = text.pop("mrope_section"), text.pop("rope_theta")
    text.setdefault("vocab_size", len(tokenizer))
    text.update(rope_scaling={"type": "mrope", "rope_type": "default", "mrope_section": mrope},
                rope_parameters={"rope_type": "default", "rope_theta": theta,
                                 "mrope_section": mrope},
                bos_token_id=None, eos_token_id=ids["<|im_end|>"],
                pad_token_id=ids["<|endoftext|>"])
    return Qwen2_5_VLConfig(
        text_config=text, vision_config=dict(vision),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=text["tie_word_embeddings"],
    )


def build_tiny_vlm(out_dir: str | Path, seed: int = 0) -> Path:
    """Write the tiny checkpoint to ``out_dir`` and return the path."""
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    from evoq_data.generation.modeling import build_processor

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(vocab_size=400)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    config = qwen25_vl_config(tokenizer, TINY_TEXT, TINY_VISION)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).to(torch.float32)
    model.generation_config = GenerationConfig(
        eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"], do_sample=True,
        temperature=1.0, top_p=1.0,
    )
    model.save_pretrained(out)
    processor = build_processor(
        tokenizer=tokenizer, min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16,
    )
    processor.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> None:
    from evoq_data.testing.judge import (
        ANSWER_STEPS,
        JUDGE_WARMUP_STEPS,
        SCORE_SKILLS,
        SEE_STEPS,
        SKILLS,
        TASKS,
    )

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warmup-steps", type=int, default=None,
                        help="format-only warm-up steps after building (default 0, or "
                             f"{JUDGE_WARMUP_STEPS} with --judge; 200 take ~25 s on 2 CPU "
                             "cores); see evoq_data.testing.warmup")
    parser.add_argument("--warmup-lr", type=float, default=3e-3)
    parser.add_argument("--warmup-min-valid", type=float, default=0.0,
                        help="continue the warm-up 100 steps at a time until this share of "
                             "sampled answers parses for both prompts (0: no check; "
                             "bench/evolve_learns.py uses 0.8)")
    parser.add_argument("--judge", choices=TASKS, default=None,
                        help="then teach the compare prompt on this task with a known skill "
                             "(see evoq_data.testing.judge)")
    parser.add_argument("--judge-skill", choices=tuple(SKILLS), default="good",
                        help="the judge's label noise: good (measured: 0.87 of votes right "
                             "without reasoning, 0.56 for close pairs to 1.0 for far ones) or "
                             "weak (0.58); see docs/train.md")
    parser.add_argument("--judge-scores", choices=SCORE_SKILLS, default="none",
                        help="also keep the score prompt: format (random scores) or weak "
                             "(noisy brightness scores); none (default) lets the compare "
                             "training overwrite it")
    parser.add_argument("--judge-see-steps", type=int, default=SEE_STEPS,
                        help="judge phase 1: no-reasoning prompt, noise-free labels")
    parser.add_argument("--judge-steps", type=int, default=ANSWER_STEPS,
                        help="judge phase 2: both prompts, the skill's label noise")
    parser.add_argument("--judge-lr", type=float, default=3e-3)
    args = parser.parse_args(argv)
    warmup_steps = args.warmup_steps
    if warmup_steps is None:
        warmup_steps = JUDGE_WARMUP_STEPS if args.judge else 0
    if warmup_steps <= 0 and not args.judge:
        print(build_tiny_vlm(args.out_dir, seed=args.seed))
        return
    import shutil
    import tempfile

    out = Path(args.out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".tiny-build-", dir=out.parent))
    try:
        model = build_tiny_vlm(scratch / "raw", seed=args.seed)
        if warmup_steps > 0:
            from evoq_data.testing.warmup import warmup

            warm = out if not args.judge else scratch / "warm"
            warmup(model, warm, steps=warmup_steps, lr=args.warmup_lr, seed=args.seed,
                   min_valid=args.warmup_min_valid)
            model = warm
        if args.judge:
            from evoq_data.testing.judge import train_judge

            train_judge(model, out, task=args.judge, skill=args.judge_skill,
                        scores=args.judge_scores,
                        see_steps=args.judge_see_steps, steps=args.judge_steps,
                        lr=args.judge_lr, seed=args.seed)
            if warmup_steps > 0:  # keep the record of the warm-up it started from
                shutil.copy(model / "evoq_warmup.json", out / "evoq_warmup.json")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(out)


if __name__ == "__main__":
    from evoq_data.core.errors import main_or_exit

    main_or_exit(main)
