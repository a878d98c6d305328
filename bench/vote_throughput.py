"""Votes per second of the ``transformers`` and ``vllm`` engines, and the prompt tokens each
actually computes per pair against the naive K x (prompt tokens).

    python bench/vote_throughput.py                      # 16 pairs, K = 32, 16 new tokens
    python bench/vote_throughput.py --pairs 32 -k 32 --max-tokens 32 --no-reasoning

Builds the tiny offline Qwen2.5-VL and a pool of 224 x 224 images in a temp folder, samples
pairs with ``evoq-data pairs``' own sampler and sends both engines exactly the requests
``evoq-data vote`` sends (one per pair and shown order, ``n`` = the votes in that order, seeds
from ``plan_votes``) in one ``generate`` call each, after one warm-up request on other images.
Engine start-up is not timed.

Prompt tokens computed: vLLM's own counters (``vllm:prompt_tokens_by_source``, local compute
vs prefix-cache hits). The transformers engine runs each prompt's first L - 1 tokens once and
its last token once per sample (``engines/hf_prefix.py``), so it computes L - 1 + n per
request by construction; the table says so rather than measuring it. The tiny model is random, so answers are gibberish of max-tokens
length: these are throughput figures of the engines, not of a real model.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def make_pool(folder: Path, n: int, size: int = 224, seed: int = 0) -> None:
    """``n`` distinct smooth-plus-noise RGB images (PNG)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        base = np.stack([np.sin(xx * (i + 1) * 3), np.cos(yy * (i + 2) * 2), xx * yy], -1)
        arr = (base * 0.5 + 0.5) * 200 + rng.normal(0, 10 + 3 * i, (size, size, 3))
        Image.fromarray(arr.clip(0, 255).astype("uint8")).save(folder / f"img{i:03d}.png")


def build_requests(pairs_path: Path, k: int, seed: int, reasoning: bool):
    """The requests ``evoq-data vote`` sends for these pairs (same plan, seeds and order)."""
    import pyarrow.parquet as pq

    from evoq_data.generation.engines import GenRequest
    from evoq_data.generation.prompts import compare_prompt
    from evoq_data.votes.plan import plan_votes

    prompt = compare_prompt(reasoning)
    requests = []
    for pair in pq.read_table(pairs_path).to_pylist():
        plan = plan_votes(pair["pair_id"], k, seed, "random")
        for swapped, base in ((False, plan.seed_unswapped), (True, plan.seed_swapped)):
            n = int((plan.swapped == swapped).sum())
            if n:
                shown = ((pair["image_b_path"], pair["image_a_path"]) if swapped
                         else (pair["image_a_path"], pair["image_b_path"]))
                requests.append(GenRequest(images=shown, prompt=prompt, n=n, seed=base))
    return requests


def timed_generate(engine, requests, sampling) -> tuple[float, int]:
    start = time.perf_counter()
    answers = engine.generate(requests, sampling)
    seconds = time.perf_counter() - start
    assert [len(a) for a in answers] == [r.n for r in requests]
    return seconds, sum(len(a) for a in answers)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("-k", "--votes-per-pair", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--reasoning", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from evoq_data.generation.engines import GenRequest, Sampling, get_engine
    from evoq_data.pairs.sample import run_pairs
    from evoq_data.testing.tiny_vlm import build_tiny_vlm

    k, sampling = args.votes_per_pair, Sampling(max_tokens=args.max_tokens)
    with tempfile.TemporaryDirectory(prefix="evoq-bench-") as tmp:
        root = Path(tmp)
        model = str(build_tiny_vlm(root / "model"))
        n_images = max(8, int((2 * args.pairs) ** 0.5) + 4)
        make_pool(root / "pool", n_images)
        make_pool(root / "warmup", 2, seed=99)
        run_pairs(str(root / "pool"), args.pairs, args.seed, root / "pairs.parquet", quiet=True)
        requests = build_requests(root / "pairs.parquet", k, args.seed, args.reasoning)
        warm_images = tuple(str(p) for p in sorted((root / "warmup").glob("*.png")))
        warmup = GenRequest(warm_images, requests[0].prompt, n=2, seed=1)
        votes = args.pairs * k

        hf = get_engine("transformers", model)
        prompt_lens = [hf.prompt_tokens(r) for r in requests]
        hf.generate([warmup], sampling)
        hf_s, hf_votes = timed_generate(hf, requests, sampling)
        hf.close()
        naive = sum(r.n * length for r, length in zip(requests, prompt_lens, strict=True))
        hf_computed = sum(length - 1 + r.n
                          for r, length in zip(requests, prompt_lens, strict=True))

        vl = get_engine("vllm", model, disable_log_stats=False, kv_cache_memory_bytes=2**28)
        vl.generate([warmup], sampling)
        before = vl.prefill_stats()
        vl_s, vl_votes = timed_generate(vl, requests, sampling)
        after = vl.prefill_stats()
        block = vl.settings.get("block_size", "default")
        vl.close()
        seen = after["prompt_tokens"] - before["prompt_tokens"]
        computed = after["computed"] - before["computed"]
        cached = after["cached"] - before["cached"]

    assert hf_votes == vl_votes == votes
    mean_prompt = sum(prompt_lens) / len(prompt_lens)
    rows = [
        ("pairs x K", f"{args.pairs} x {k} = {votes} votes", ""),
        ("prompt tokens per request (mean)", f"{mean_prompt:.1f}", "images + text, chat template"),
        ("transformers votes/s", f"{hf_votes / hf_s:.1f}", f"{hf_s:.2f} s"),
        ("vllm votes/s", f"{vl_votes / vl_s:.1f}", f"{vl_s:.2f} s"),
        ("vllm / transformers votes/s", f"{(vl_votes / vl_s) / (hf_votes / hf_s):.2f}x", ""),
        ("naive prompt tokens per pair (K x prompt)", f"{naive / args.pairs:.1f}", ""),
        ("transformers computed per pair", f"{hf_computed / args.pairs:.1f}",
         "prompt prefix once per request, its last token once per sample"),
        ("vllm prompt tokens seen per pair", f"{seen / args.pairs:.1f}",
         "n children x prompt, as vLLM counts them"),
        ("vllm computed per pair", f"{computed / args.pairs:.1f}",
         f"prefix cache hits {cached}, block size {block}"),
        ("naive / vllm computed", f"{naive / max(computed, 1):.2f}x", ""),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"device: CPU, {os.cpu_count()} cores; tiny Qwen2.5-VL; max_tokens {args.max_tokens}; "
          f"reasoning {args.reasoning}", file=sys.stdout)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>24}  {note}")


if __name__ == "__main__":
    main()
