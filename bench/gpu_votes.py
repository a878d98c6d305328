"""Votes per second of the ``transformers`` engine on one GPU, with a random-weight model of
Qwen2.5-VL-7B-Instruct's published shape in bf16: no weights to download.

    python bench/gpu_votes.py --out gpu_votes.json           # on a CUDA machine
    python bench/gpu_votes.py --shape tiny --pairs 2 --max-tokens 8 --image-size 56x56  # CPU

The model is built from Qwen2.5-VL-7B-Instruct's config (written out below: 28 layers of
3584, 4 KV heads, vocabulary 152,064, the 32-block vision tower) with random weights, so
its cost per token is the real model's; the tokenizer is the tiny test model's (a few
hundred tokens, Qwen's special tokens), so the prompt's text is cut into other tokens than
Qwen's (168 with 1024x768 images: 2,240 in all, 1,036 per image) and its images exactly as
long. A random model almost never writes its end-of-answer token, so every answer runs to
``--max-tokens``: a reasoning-length answer for every vote, and the same length for all (the
engine decodes a batch until its longest answer ends, so real answers of mixed lengths cost
the same steps as their longest).

The engine is evoq's own (:class:`TransformersEngine`, prompt prefixes, per-sample seeds,
batches of ``batch_size`` rows), fed the requests ``evoq-data vote`` makes for one chunk of
``--pairs`` pairs with K = ``--k`` and ``--order balanced``:

* ``fixed``: one call, K/2 samples per pair and shown order;
* ``waves``: what ``--stop decided|confident`` asks when no pair stops (the worst case):
  K/``--wave`` calls, each ``--wave``/2 samples per pair and shown order, the prompts'
  prefixes kept between waves;
* ``logprob``: ``--mode logprob``, one forward pass per pair and shown order (its "votes"
  are these passes, each a probability rather than a vote).

For each: seconds, votes/s, answer tokens/s (votes x max tokens), seconds per decode step,
prompts prefilled, peak GPU memory (allocated; reserved), and two ratios against baselines of
the same run: seconds per vote over ``fixed`` at the same ``batch_size`` (``x_fixed_same_batch``:
what waves cost) and votes/s over ``fixed`` at the default ``batch_size`` 64
(``x_default_batch``). The first setting of a process also pays the warm-up of its shapes
(10-15 s on an H200): put a setting first that no ratio leans on, or read the ratios with
that in mind. Each setting runs once after a warm-up call; the script stops starting
settings once ``--budget`` seconds have passed and writes what it has after each one
(``--out``), so a run cut short keeps its numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from evoq_data.testing.tiny_vlm import TINY_TEXT, TINY_VISION, qwen25_vl_config

# Qwen/Qwen2.5-VL-7B-Instruct's config.json, the fields that set its size and shape.
QWEN25_VL_7B = {
    "text": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                 num_attention_heads=28, num_key_value_heads=4, vocab_size=152064,
                 max_position_embeddings=128000, rms_norm_eps=1e-6, rope_theta=1000000.0,
                 mrope_section=[16, 24, 24], tie_word_embeddings=False),
    "vision": dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16,
                   out_hidden_size=3584, patch_size=14, spatial_merge_size=2,
                   temporal_patch_size=2, in_channels=3, window_size=112,
                   fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2,
                   hidden_act="silu"),
}
# "tiny": the test model's shape (evoq_data.testing.tiny_vlm), the same code path at a size a
# CPU runs in seconds, for checking the script itself.
SHAPES = {"qwen2.5-vl-7b": QWEN25_VL_7B,
          "tiny": {"text": TINY_TEXT, "vision": TINY_VISION}}


def build_model(shape: dict, tokenizer, device: str, dtype):
    """A random-weight Qwen2.5-VL of ``shape`` on ``device``, with the tokenizer's ids."""
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    config = qwen25_vl_config(tokenizer, shape["text"], shape["vision"])
    torch.manual_seed(0)
    with torch.device(device):
        net = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=dtype)
    net.generation_config = GenerationConfig(eos_token_id=config.text_config.eos_token_id,
                                             pad_token_id=config.text_config.pad_token_id)
    return net.eval()


def make_images(folder: Path, count: int, size: tuple[int, int]) -> list[tuple[str, str]]:
    """``count`` distinct JPEG photos-to-be (smooth noise), as (path, image id)."""
    import numpy as np
    from PIL import Image

    from evoq_data.core.ids import image_id

    rng = np.random.default_rng(0)
    width, height = size
    out = []
    for i in range(count):
        small = rng.integers(0, 256, (max(height // 16, 1), max(width // 16, 1), 3), np.uint8)
        im = Image.fromarray(small).resize((width, height), Image.BICUBIC)
        path = folder / f"img{i:03d}.jpg"
        im.save(path, quality=90)
        out.append((str(path), image_id(path.read_bytes())))
    return out


def requests_for(images, prompt, *, n: int, seed: int, asked_again: bool):
    """One request per pair and shown order, as the vote runner asks them."""
    from evoq_data.generation.engines import GenRequest

    reqs = []
    for p in range(len(images) // 2):
        (a, ida), (b, idb) = images[2 * p], images[2 * p + 1]
        for order, (paths, ids) in enumerate((((a, b), (ida, idb)), ((b, a), (idb, ida)))):
            reqs.append(GenRequest(images=paths, prompt=prompt, n=n,
                                   seed=seed + 1000 * (2 * p + order), image_ids=ids,
                                   asked_again=asked_again))
    return reqs


def prompt_costs(engine, reqs, torch) -> dict:
    """Seconds per prompt of the processor (CPU: decode, resize, patches, tokens) and of the
    whole prefix (processor, vision tower and prefill of the prompt's tokens)."""
    from evoq_data.generation.engines.hf_prefix import compute_prefix

    start = time.perf_counter()
    for req in reqs:
        engine._inputs(req)
    processor = (time.perf_counter() - start) / len(reqs)
    start = time.perf_counter()
    for req in reqs:
        compute_prefix(engine, req)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    prefix = (time.perf_counter() - start) / len(reqs)
    return dict(processor_s_per_prompt=round(processor, 3), prefix_s_per_prompt=round(prefix, 3))


def run_setting(engine, name: str, images, prompt, args, sampling, torch) -> dict:
    """Time one setting; its votes, seconds, rates and peak memory."""
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    computed = engine.prefixes.computed
    pairs, k, calls = len(images) // 2, args.k, 0
    start = time.perf_counter()
    if name == "logprob":
        engine.answer_probs(requests_for(images, prompt, n=1, seed=0, asked_again=False))
        votes, rows, tokens = 2 * pairs, 0, 0
    else:
        waves = 1 if name == "fixed" else k // args.wave
        per_order = k // 2 // waves
        for w in range(waves):
            reqs = requests_for(images, prompt, n=per_order, seed=w * per_order,
                                asked_again=w < waves - 1)
            answers = engine.generate(reqs, sampling)
            assert [len(a) for a in answers] == [per_order] * len(reqs)
        rows = pairs * k
        votes, tokens = rows, rows * args.max_tokens
        calls = waves * -(-2 * pairs * per_order // args.batch_size)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    result = dict(setting=name, batch_size=args.batch_size, pairs=pairs, k=k,
                  max_tokens=args.max_tokens, votes=votes, seconds=round(seconds, 2),
                  votes_per_s=round(votes / seconds, 2),
                  answer_tokens_per_s=round(tokens / seconds, 1),
                  generate_calls=calls,
                  s_per_step=round(seconds / (calls * args.max_tokens), 4) if calls else None,
                  prompts_prefilled=engine.prefixes.computed - computed)
    if cuda:
        result.update(peak_allocated_gib=round(torch.cuda.max_memory_allocated() / 2**30, 1),
                      peak_reserved_gib=round(torch.cuda.max_memory_reserved() / 2**30, 1))
    return result


def add_ratios(results: list[dict], default_batch: int = 64) -> None:
    """The baselines of the same run: each setting's seconds per vote over those of
    ``fixed`` at the same ``batch_size`` (what the stop modes' waves cost) and its votes/s over
    ``fixed`` at the engine's default ``batch_size`` (what a larger batch buys); the first
    such setting run is the baseline, and a missing baseline leaves the column empty."""
    def first(pred):
        return next((r for r in results if pred(r) and "seconds" in r), None)

    for r in results:
        if "seconds" not in r or r["setting"] == "logprob":
            continue
        same = first(lambda b, r=r: b["setting"] == "fixed" and b["batch_size"] == r["batch_size"])
        if same is not None:
            r["x_fixed_same_batch"] = round((r["seconds"] / r["votes"])
                                            / (same["seconds"] / same["votes"]), 2)
        default = first(lambda b: b["setting"] == "fixed" and b["batch_size"] == default_batch)
        if default is not None:
            r["x_default_batch"] = round(r["votes_per_s"] / default["votes_per_s"], 2)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="qwen2.5-vl-7b")
    ap.add_argument("--pairs", type=int, default=16, help="pairs in the chunk (default 16)")
    ap.add_argument("-k", "--k", type=int, default=32)
    ap.add_argument("--wave", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=256,
                    help="answer length (a random model writes to it; default 256)")
    ap.add_argument("--image-size", default="1024x768",
                    help="WxH of the images (default KonIQ's 1024x768)")
    ap.add_argument("--settings", default="fixed:128,waves:128,logprob:128,fixed:256,waves:256",
                    help="setting:batch_size, in the order run")
    ap.add_argument("--budget", type=float, default=300,
                    help="start no setting after this many seconds (default 300)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()

    import torch
    import transformers

    from evoq_data.generation.engines import Sampling
    from evoq_data.generation.engines.hf import TransformersEngine
    from evoq_data.generation.modeling import build_processor
    from evoq_data.generation.prompts import compare_prompt
    from evoq_data.testing.tiny_vlm import train_tokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    info = dict(torch=torch.__version__, transformers=transformers.__version__, device=device,
                gpu=torch.cuda.get_device_name() if device == "cuda" else None,
                shape=args.shape, dtype=str(dtype).removeprefix("torch."),
                date=time.strftime("%Y-%m-%d"))
    print(json.dumps(info), flush=True)
    shape = SHAPES[args.shape]
    tokenizer = train_tokenizer(vocab_size=400)
    processor = build_processor(tokenizer, min_pixels=56 * 56, max_pixels=28 * 28 * 16384)
    net = build_model(shape, tokenizer, device, dtype)
    info["parameters_b"] = round(sum(p.numel() for p in net.parameters()) / 1e9, 2)
    info["model_build_s"] = round(time.perf_counter() - t0, 1)
    if device == "cuda":
        info["weights_gib"] = round(torch.cuda.memory_allocated() / 2**30, 1)
    engine = TransformersEngine.from_loaded(net, processor, model=f"random {args.shape}")
    prompt = compare_prompt(reasoning=True)
    sampling = Sampling(temperature=1.0, top_p=1.0, max_tokens=args.max_tokens)
    width, height = (int(v) for v in args.image_size.lower().split("x"))
    results: list[dict] = []

    def save() -> None:
        if args.out:
            Path(args.out).write_text(json.dumps({"info": info, "results": results}, indent=1))

    with tempfile.TemporaryDirectory() as tmp:
        images = make_images(Path(tmp), 2 * args.pairs, (width, height))
        info["prompt_tokens"] = engine.prompt_tokens(
            requests_for(images[:2], prompt, n=1, seed=0, asked_again=False)[0])
        warm = Sampling(temperature=1.0, top_p=1.0, max_tokens=4)
        engine.generate(requests_for(images[:2], prompt, n=2, seed=0, asked_again=False), warm)
        info["warm_s"] = round(time.perf_counter() - t0, 1)
        info.update(prompt_costs(engine, requests_for(images[:8], prompt, n=1, seed=0,
                                                      asked_again=False), torch))
        print(json.dumps(info), flush=True)
        save()
        for item in args.settings.split(","):
            name, batch = item.split(":")
            if time.perf_counter() - t0 > args.budget:
                print(f"skipped {item}: past --budget {args.budget:.0f} s", flush=True)
                continue
            args.batch_size = engine.batch_size = int(batch)
            try:
                results.append(run_setting(engine, name, images, prompt, args, sampling, torch))
            except Exception as exc:  # noqa: BLE001 - one setting's failure (memory, say)
                # is a result too; the next setting still runs
                results.append(dict(setting=name, batch_size=args.batch_size,
                                    error=f"{type(exc).__name__}: {exc}"[:300]))
                engine.prefixes.clear()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            print(json.dumps(results[-1]), flush=True)
            save()
    add_ratios(results)
    cols = ["setting", "batch_size", "votes", "seconds", "votes_per_s", "answer_tokens_per_s",
            "s_per_step", "x_fixed_same_batch", "x_default_batch", "prompts_prefilled",
            "peak_allocated_gib", "peak_reserved_gib", "error"]
    print("| " + " | ".join(cols) + " |")
    print("|" + " --- |" * len(cols))
    for r in results:
        print("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    print(f"total {time.perf_counter() - t0:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
