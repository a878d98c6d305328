"""What one vote request costs vLLM's front end before the engine runs it, three ways.

    python bench/vllm_front_end.py --model JUDGE --pairs pairs.parquet [--pairs-used 32]
    python bench/vllm_front_end.py --large-images 768   # photo-sized JPEGs, a tiny model

A ``--stop`` run asks each pair in waves: one vLLM request per wave and shown order, each
rendered by the front end (chat template, tokenizer, multimodal processor, image loading)
before the engine sees it. This bench times only that part, on the real vllm engine, for the
requests a ``--stop decided`` run would ask (every pair in both shown orders, ``--waves``
waves of ``--wave`` answers), in the same process and taking turns:

* **chat (baseline)**: what the vllm engine did first: per request, the images read, checked
  and decoded again and the conversation handed to ``LLM.enqueue_chat``, which renders the
  chat template and hashes the images' pixels;
* **prompts**: the engine's ``_prompt`` per request, handed to ``LLM.enqueue``: the chat's
  token ids made once per prompt, each image decoded once per pair, its id passed as the
  multimodal UUID; vLLM's renderer still renders every request (how the engine sent
  requests until December 2026);
* **evoq**: the engine's own ``_add``: the same prompts, rendered by vLLM's renderer once per
  pair and shown order and the rendered input kept for the pair's later waves
  (:class:`~evoq_data.generation.engines.vllm_inputs.KeptInputs`; every wave but the last is asked
  with ``asked_again``, as a ``--stop`` run asks it).

Before every pass the engine's multimodal cache, the decoded images and the kept inputs are
emptied, so each pass starts cold as a round does; the requests are aborted after being
added (no engine step runs). Prints the milliseconds per request of each way, the ratios, and
what the differences come to for a paper round's requests.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def wave_requests(pairs: list[dict], waves: int, wave: int) -> list:
    """The requests of a decided run in which no pair stops: per wave, each pair in both
    shown orders, ``wave // 2`` answers each."""
    from evoq_data.generation.engines import GenRequest
    from evoq_data.generation.prompts import compare_prompt

    prompt = compare_prompt(True)
    out = []
    for w in range(waves):
        for i, p in enumerate(pairs):
            a, b = (p["image_a_path"], p["image_a_id"]), (p["image_b_path"], p["image_b_id"])
            for k, (x, y) in enumerate(((a, b), (b, a))):
                out.append(GenRequest((x[0], y[0]), prompt, n=wave // 2,
                                      seed=1000 * i + 100 * w + 10 * k, image_ids=(x[1], y[1]),
                                      asked_again=w < waves - 1))
    return out


def one_pass(engine, requests, way: str) -> float:
    """Seconds to add ``requests`` to the engine ``way``, from cold caches; then abort them."""
    from vllm import SamplingParams

    from evoq_data.generation.engines import DecodedImages
    from evoq_data.generation.engines.vllm import chat_conversations
    from evoq_data.generation.engines.vllm_inputs import KeptInputs

    engine.llm.reset_mm_cache()
    engine._images, engine._inputs = DecodedImages(), KeptInputs()
    params = [SamplingParams(n=r.n, seed=r.seed, max_tokens=32) for r in requests]
    t0 = time.perf_counter()
    if way == "chat":
        ids = engine.llm.enqueue_chat(chat_conversations(requests), params, use_tqdm=False)
    elif way == "prompts":
        ids = engine.llm.enqueue([engine._prompt(r) for r in requests], params,
                                 use_tqdm=False)
    else:
        ids = engine._add(requests, params)
    seconds = time.perf_counter() - t0
    # LLM.enqueue gives vLLM's internal ids, the engine its own (vLLM's external ones)
    engine.llm.llm_engine.abort_request([str(i) for i in ids], internal=way != "evoq")
    if engine.llm.llm_engine.has_unfinished_requests():
        raise SystemExit("requests left in the engine after the abort")
    return seconds


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a Qwen2.5-VL folder (default: a fresh tiny one; "
                        "the front end's work does not depend on the weights)")
    parser.add_argument("--pairs", help="an evoq pairs.parquet")
    parser.add_argument("--large-images", type=int, metavar="SIZE",
                        help="instead of --pairs: 64 seeded SIZE x SIZE JPEG textures "
                             "(evoq_data.testing.warmup.random_image) paired by evoq-data pairs")
    parser.add_argument("--pairs-used", type=int, default=32)
    parser.add_argument("--waves", type=int, default=4, help="waves per pair (K / wave)")
    parser.add_argument("--wave", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=5, help="passes of each way")
    parser.add_argument("--round-requests", type=int, default=143_000,
                        help="requests of a paper round under decided (docs)")
    args = parser.parse_args(argv)

    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory(prefix="evoq-front-end-") as tmp:
        pairs_file = args.pairs or large_pairs(Path(tmp), args.large_images, args.pairs_used)
        pairs = pq.read_table(pairs_file).to_pylist()[:args.pairs_used]
        if not args.model:
            from evoq_data.testing.tiny_vlm import build_tiny_vlm

            args.model = str(build_tiny_vlm(Path(tmp) / "tiny-vlm"))
        run(args, pairs)


def large_pairs(root: Path, size: int | None, n: int) -> Path:
    """``n`` pairs of 64 seeded ``size``-pixel JPEGs, drawn by evoq's own pairs command."""
    import numpy as np

    from evoq_data.pairs.sample import run_pairs
    from evoq_data.testing.warmup import random_image

    if not size:
        raise SystemExit("give --pairs FILE or --large-images SIZE")
    rng = np.random.default_rng(5)
    (root / "pool").mkdir()
    for i in range(64):
        random_image(rng, size=size).save(root / "pool" / f"img{i:03d}.jpg", quality=90)
    run_pairs(str(root / "pool"), n, 0, root / "pairs.parquet", quiet=True)
    return root / "pairs.parquet"


def run(args, pairs: list[dict]) -> None:
    from evoq_data.generation.engines import get_engine

    requests = wave_requests(pairs, args.waves, args.wave)
    engine = get_engine("vllm", args.model, kv_cache_memory_bytes=2**28)
    ways = ("chat", "prompts", "evoq")
    times: dict[str, list[float]] = {way: [] for way in ways}
    for way in ways:  # warm the code paths once, untimed
        one_pass(engine, requests, way)
    for r in range(args.repeat):
        for way in ways[r % 3:] + ways[:r % 3]:  # each way first in turn
            times[way].append(one_pass(engine, requests, way))
    engine.close()
    n = len(requests)
    ms = {way: 1000 * statistics.median(t) / n for way, t in times.items()}
    print(f"### vLLM front end: {n} requests ({len(pairs)} pairs x 2 shown orders x "
          f"{args.waves} waves of {args.wave // 2} answers), median of {args.repeat} passes each\n")
    print("| way | ms per request (median) | min | max | ratio to chat | ratio to prompts |")
    print("|---|---:|---:|---:|---:|---:|")
    for way, label in (("chat", "chat (first: LLM.enqueue_chat)"),
                       ("prompts", "prompts (_prompt + LLM.enqueue)"),
                       ("evoq", "evoq (_add: rendered once per pair and order)")):
        t = [1000 * s / n for s in times[way]]
        print(f"| {label} | {ms[way]:.2f} | {min(t):.2f} | {max(t):.2f} | "
              f"{ms[way] / ms['chat']:.2f} | {ms[way] / ms['prompts']:.2f} |")
    for way in ("prompts", "evoq"):
        saved = (ms["chat"] - ms[way]) * args.round_requests / 1000 / 60
        print(f"\nAt {args.round_requests:,} requests (a paper round under decided), {way} "
              f"saves {saved:.1f} minutes of front-end work against chat.")


if __name__ == "__main__":
    main()
