"""Time GRPO steps of ``evoq-train grpo`` and the share spent computing rewards.

    python bench/grpo_step.py                          # CPU, the tiny offline model
    python bench/grpo_step.py --model qwen2.5-vl-3b --num-generations 8 \\
        --max-completion-length 256 --image-size 1024x768 --steps 3     # one GPU

``--model tiny`` builds the tiny offline Qwen2.5-VL; ``qwen2.5-vl-3b`` / ``qwen2.5-vl-7b``
build a random-weight model from the published Qwen2.5-VL configuration (no download; the
tiny model's tokenizer and processor stand in, special-token ids remapped). The data is a
PREFS_DIR of random images with alternating p* (1, 0, 0.5). Prints one JSON line: per-step
wall time (TRL's ``step_time``: generation + rewards + forward/backward + optimizer), time in
the reward functions, their ratio, and on CUDA the peak memory allocated.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# Published configurations (Hugging Face config.json of Qwen/Qwen2.5-VL-3B-Instruct and -7B).
QWEN_TEXT = {
    "qwen2.5-vl-3b": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                          num_attention_heads=16, num_key_value_heads=2,
                          tie_word_embeddings=True),
    "qwen2.5-vl-7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                          num_attention_heads=28, num_key_value_heads=4,
                          tie_word_embeddings=False),
}
QWEN_VISION = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16,
                   patch_size=14, spatial_merge_size=2, temporal_patch_size=2, in_channels=3,
                   window_size=112, fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2,
                   hidden_act="silu")


# --shrink: the same code path at toy sizes (a CPU dry run of the GPU benchmark).
SHRUNK_TEXT = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2)
SHRUNK_VISION = dict(depth=2, hidden_size=128, intermediate_size=256, num_heads=2,
                     fullatt_block_indexes=[1])


def build_model(name: str, out: Path, shrink: bool = False) -> Path:
    """A checkpoint folder: the tiny model, or a random Qwen2.5-VL-3B/7B (bf16, on CUDA)."""
    from evoq_data.testing.tiny_vlm import SPECIAL_TOKENS, build_tiny_vlm

    build_tiny_vlm(out)  # tokenizer, processor and chat template for every model
    if name == "tiny":
        return out
    import torch
    from transformers import AutoTokenizer, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tok = AutoTokenizer.from_pretrained(out)
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    mrope = [8, 12, 12] if shrink else [16, 24, 24]  # half the head dim, split t/h/w
    text = dict(QWEN_TEXT[name], **(SHRUNK_TEXT if shrink else {}), vocab_size=151936, max_position_embeddings=128000,
                rms_norm_eps=1e-6, hidden_act="silu",
                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                 "mrope_section": mrope},
                rope_scaling={"type": "mrope", "rope_type": "default",
                              "mrope_section": mrope},
                bos_token_id=None, eos_token_id=ids["<|im_end|>"],
                pad_token_id=ids["<|endoftext|>"])
    config = Qwen2_5_VLConfig(
        text_config=text, vision_config=dict(QWEN_VISION, **(SHRUNK_VISION if shrink else {}),
                           out_hidden_size=text["hidden_size"]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=text["tie_word_embeddings"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
    for f in out.glob("*.safetensors"):
        f.unlink()
    model.generation_config.update(eos_token_id=ids["<|im_end|>"],
                                   pad_token_id=ids["<|endoftext|>"], do_sample=True)
    model.save_pretrained(out)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return out


def make_prefs(root: Path, num_pairs: int, size: tuple[int, int], seed: int = 0) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(2 * num_pairs):
        arr = (rng.random((size[1], size[0], 3)) * 255).astype("uint8")
        path = root / "img" / f"{i}.png"
        Image.fromarray(arr).save(path)
        paths.append(str(path))
    rows = [{"pair_id": f"p{i}", "image_a_id": f"i{2 * i}", "image_a_path": paths[2 * i],
             "image_b_id": f"i{2 * i + 1}", "image_b_path": paths[2 * i + 1],
             "p_star": (1.0, 0.0, 0.5)[i % 3]} for i in range(num_pairs)]
    pq.write_table(pa.Table.from_pylist(rows), root / "preferences.parquet")
    return root


def reward_at_card_scale(repeats: int = 20) -> float:
    """Milliseconds the evoq rewards take for one device's card-sized batch: 4 images
    (2 pairs) x 32 valid answers = 128 completions."""
    from evoq_train.rewards import fidelity_reward, format_reward

    rng = np.random.default_rng(0)
    n, g = 4, 32
    texts = [[{"role": "assistant", "content": f"<think>{'reasoning ' * 40}</think> "
               f"\\boxed{{{rng.uniform(1, 5):.2f}}}"}] for _ in range(n * g)]
    cols = dict(pair_id=[f"p{i // (2 * g)}" for i in range(n * g)],
                image_id=[f"i{i // g}" for i in range(n * g)],
                partner_id=[f"i{(i // g) ^ 1}" for i in range(n * g)],
                p_star_self=[1.0 if (i // g) % 2 == 0 else 0.0 for i in range(n * g)])
    funcs = [fidelity_reward(), format_reward()]
    start = time.perf_counter()
    for _ in range(repeats):
        for f in funcs:
            f(prompts=[None] * (n * g), completions=texts, **cols)
    return (time.perf_counter() - start) / repeats * 1000


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny", choices=["tiny", *QWEN_TEXT])
    ap.add_argument("--num-generations", type=int, default=8)
    ap.add_argument("--samples-per-device", type=int, default=2)
    ap.add_argument("--per-device-train-batch-size", type=int, default=8)
    ap.add_argument("--max-completion-length", type=int, default=64)
    ap.add_argument("--image-size", default="64x48", help="WxH of the random images")
    ap.add_argument("--max-pixels", type=int, default=None)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--shrink", action="store_true",
                    help="toy sizes of the Qwen architecture (CPU dry run of the GPU benchmark)")
    args = ap.parse_args(argv)

    from evoq_train.config import hide_vllm_unless_used

    hide_vllm_unless_used({})
    import torch
    from transformers import TrainerCallback

    from evoq_train.trainer import run_grpo

    cuda = torch.cuda.is_available()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="evoq-bench-"))
    t0 = time.perf_counter()
    model_dir = build_model(args.model, work / "model", shrink=args.shrink)
    build_s = time.perf_counter() - t0
    import evoq_data.generation.modeling as modeling

    try:  # the stock AutoProcessor path (torchvision present) may want a video processor
        modeling.load_processor(str(model_dir))
    except Exception as exc:  # noqa: BLE001 - fall back to evoq's image-only processor
        print(f"stock processor failed ({exc}); using the image-only one", file=sys.stderr)
        modeling.has_torchvision = lambda: False
    w, h = (int(x) for x in args.image_size.split("x"))
    pairs_per_step = args.samples_per_device // 2
    prefs = make_prefs(work / "prefs", pairs_per_step * args.steps, (w, h))

    reward_s: list[float] = []

    def timed(fn):
        def wrapper(*a, **kw):
            start = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                reward_s.append(time.perf_counter() - start)
        wrapper.__name__ = fn.__name__
        return wrapper

    step_ends: list[float] = []
    step_reward: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *_a, **_k):
            self.start, self.rewards_before = time.perf_counter(), sum(reward_s)
            if cuda:
                torch.cuda.reset_peak_memory_stats()

        def on_step_end(self, *_a, **_k):
            step_ends.append(time.perf_counter() - self.start)
            step_reward.append(sum(reward_s) - self.rewards_before)

    settings = dict(
        model=str(model_dir), dataset=str(prefs), output_dir=str(work / "out"),
        num_generations=args.num_generations, samples_per_device=args.samples_per_device,
        per_device_train_batch_size=args.per_device_train_batch_size,
        max_completion_length=args.max_completion_length, max_steps=args.steps,
        learning_rate=3e-7, beta=0.05, use_cpu=not cuda, bf16=cuda,
        gradient_checkpointing=args.gradient_checkpointing, save_strategy="no",
        logging_steps=1, report_to="none", max_pixels=args.max_pixels,
        length_penalty_weight=0.1, recipe="bench")
    peak_gib = None
    run_grpo(settings, quiet=True, callbacks=[StepTimer()], wrap_reward=timed)
    if cuda:
        peak_gib = torch.cuda.max_memory_allocated() / 2**30
    steady = step_ends[1:] or step_ends  # the first step includes warm-up
    result = {
        "model": args.model, "device": torch.cuda.get_device_name() if cuda else "cpu",
        "num_generations": args.num_generations, "samples_per_device": args.samples_per_device,
        "completions_per_step": args.samples_per_device * args.num_generations,
        "max_completion_length": args.max_completion_length, "image_size": args.image_size,
        "model_build_s": round(build_s, 2),
        "step_s": [round(x, 3) for x in step_ends],
        "reward_s": [round(x, 5) for x in step_reward],
        "reward_fraction": round(sum(step_reward[1:] or step_reward) / sum(steady), 6),
        "reward_ms_card_batch_128_valid": round(reward_at_card_scale(), 3),
        "peak_memory_gib_last_step": round(peak_gib, 2) if peak_gib is not None else None,
    }
    print(json.dumps(result), file=sys.stdout, flush=True)
    return result


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
