"""How good is the tiny brightness judge? Per-vote accuracy by brightness gap, through
`evoq-data vote`.

For each skill: build the judge (`python -m evoq_data.testing.tiny_vlm DIR --judge brightness
--judge-skill S`, timed), write the brightness task's held-out images
(evoq_data.testing.learning), sample held-out pairs with `evoq-data pairs`, and vote K times
per pair with `evoq-data vote --order balanced` (K/2 votes in each shown order), with and
without the reasoning suffix. A vote is correct when it names the brighter image. Printed per
brightness-gap bin: pairs, votes, valid answers, per-vote accuracy among valid votes, the
accuracy the judge's noise model predicts (evoq_data.testing.judge.expected_accuracy,
averaged over the bin's pairs), the majority's accuracy over decisive pairs, and the share of valid answers
that say "0" (position bias: 0.5 when none).

    python bench/judge_skill.py                                # good and weak, 256 pairs, K 8
    python bench/judge_skill.py --skills weak --pairs 128 -k 4 --out runs/judge

The table in docs/train.md ("A judge with known skill") comes from here; OUT/results.json
and OUT/results.md keep it. CPU only, one torch thread per process (--threads).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evoq_data.testing.judge import SKILLS, expected_accuracy
from evoq_data.testing.learning import _bin, _run, make_brightness_task

GAP_EDGES = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.9)


def build_judge(out: Path, skill: str, args) -> float:
    t0 = time.time()
    cmd = [sys.executable, "-m", "evoq_data.testing.tiny_vlm", str(out), "--judge", "brightness",
           "--judge-skill", skill, "--seed", str(args.seed)]
    for flag, value in (("--judge-see-steps", args.judge_see_steps),
                        ("--judge-steps", args.judge_steps)):
        if value is not None:
            cmd += [flag, str(value)]
    _run(cmd, Path(f"{out}.log"), args.threads)
    return round(time.time() - t0, 1)


def vote(model: Path, pairs: Path, out: Path, reasoning: bool, args) -> float:
    t0 = time.time()
    _run([_bin("evoq-data"), "vote", "--pairs", str(pairs), "--model", str(model),
          "--engine", args.engine, "--votes-per-pair", str(args.k), "--order", "balanced",
          "--max-tokens", str(args.max_tokens), "--seed", str(args.seed),
          "--reasoning" if reasoning else "--no-reasoning", "--out", str(out), "--quiet"],
         Path(f"{out}.log"), args.threads)
    return round(time.time() - t0, 1)


def read_votes(votes_dir: Path) -> list[dict]:
    import pyarrow.parquet as pq

    rows = []
    for shard in sorted(votes_dir.glob("votes-*.parquet")):
        rows += pq.read_table(shard).to_pylist()
    return rows


def brightness_of(labels_csv: str) -> dict[str, float]:
    """Absolute image path -> its brightness factor f."""
    root = Path(labels_csv).parent
    with open(labels_csv, newline="") as fh:
        return {str((root / r["image"]).resolve()): float(r["mos"]) for r in csv.DictReader(fh)}


def by_gap(votes: list[dict], f: dict[str, float], skill) -> list[dict]:
    """Per gap bin (and a final 'all' row): the numbers the table prints."""
    pairs: dict[str, dict] = {}
    for v in votes:
        fa, fb = f[str(Path(v["image_a_path"]).resolve())], f[str(Path(v["image_b_path"]).resolve())]
        p = pairs.setdefault(v["pair_id"], {"gap": abs(fa - fb), "right": 0, "wrong": 0,
                                            "invalid": 0, "zeros": 0,
                                            "better": v["image_a_id"] if fa > fb
                                            else v["image_b_id"]})
        if v["winner_id"] is None:
            p["invalid"] += 1
            continue
        p["right" if v["winner_id"] == p["better"] else "wrong"] += 1
        p["zeros"] += v["answer"] == 0
    bins = list(zip(GAP_EDGES[:-1], GAP_EDGES[1:], strict=True)) + [(0.0, math.inf)]
    rows = []
    for lo, hi in bins:
        ps = [p for p in pairs.values() if lo <= p["gap"] < hi]
        right, wrong = sum(p["right"] for p in ps), sum(p["wrong"] for p in ps)
        valid, invalid = right + wrong, sum(p["invalid"] for p in ps)
        decisive = [p for p in ps if p["right"] != p["wrong"]]
        rows.append({
            "bin": "all" if hi == math.inf else f"{lo:.2f}-{hi:.2f}", "pairs": len(ps),
            "votes": valid + invalid, "valid": valid / (valid + invalid) if ps else math.nan,
            "accuracy": right / valid if valid else math.nan,
            "model": (sum(expected_accuracy(p["gap"], skill) for p in ps) / len(ps)
                      if ps else math.nan),
            "majority": (sum(p["right"] > p["wrong"] for p in decisive) / len(decisive)
                         if decisive else math.nan),
            "answer0": sum(p["zeros"] for p in ps) / valid if valid else math.nan,
        })
    return rows


def _f(x: float) -> str:
    return "-" if isinstance(x, float) and math.isnan(x) else f"{x:.3f}"


def table(results: list[dict]) -> str:
    head = ["judge", "prompt", "gap", "pairs", "votes", "valid", "per-vote accuracy",
            "noise model", "majority accuracy", "answer 0 share"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for r in results:
        for row in r["bins"]:
            if not row["pairs"]:
                continue
            cells = [r["skill"], r["prompt"], row["bin"], str(row["pairs"]), str(row["votes"]),
                     _f(row["valid"]), _f(row["accuracy"]), _f(row["model"]),
                     _f(row["majority"]), _f(row["answer0"])]
            if row["bin"] == "all":
                cells = [f"**{c}**" for c in cells]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--skills", nargs="+", default=list(SKILLS), choices=list(SKILLS))
    p.add_argument("--pairs", type=int, default=256, help="held-out pairs (of 64 images)")
    p.add_argument("-k", type=int, default=8, help="votes per pair (even: --order balanced)")
    p.add_argument("--prompts", nargs="+", default=["reasoning", "direct"],
                   choices=["reasoning", "direct"])
    p.add_argument("--engine", default="transformers")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--judge-see-steps", type=int, default=None,
                   help="judge phase 1 steps (default: the module's)")
    p.add_argument("--judge-steps", type=int, default=None,
                   help="judge phase 2 steps (default: the module's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None, help="work folder (default: a temp dir)")
    args = p.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="evoq-judge-"))
    task = make_brightness_task(out / "task", n_train=2, n_heldout=64, n_pairs=1, seed=args.seed)
    pairs = out / "heldout_pairs.parquet"
    _run([_bin("evoq-data"), "pairs", "--images", task["heldout_images"], "--num-pairs",
          str(args.pairs), "--seed", str(args.seed), "--out", str(pairs), "--quiet"], None,
         args.threads)
    f = brightness_of(task["heldout_labels"])
    results = []
    for skill in args.skills:
        model = out / f"judge-{skill}"
        seconds = build_judge(model, skill, args)
        print(f"[{skill}] built in {seconds} s: {model}", flush=True)
        for prompt in args.prompts:
            votes_dir = out / f"votes-{skill}-{prompt}"
            vote_s = vote(model, pairs, votes_dir, prompt == "reasoning", args)
            bins = by_gap(read_votes(votes_dir), f, SKILLS[skill])
            results.append({"skill": skill, "prompt": prompt, "build_seconds": seconds,
                            "vote_seconds": vote_s, "bins": bins})
            print(f"[{skill}/{prompt}] {args.k} votes x {args.pairs} pairs in {vote_s} s: "
                  f"accuracy {_f(bins[-1]['accuracy'])}, valid {_f(bins[-1]['valid'])}",
                  flush=True)
            (out / "results.json").write_text(json.dumps(
                {"args": {k: str(v) for k, v in vars(args).items()}, "results": results},
                indent=2))
    md = table(results)
    builds = ", ".join(f"{r['skill']} {r['build_seconds']:.0f} s" for r in results
                       if r["prompt"] == args.prompts[0])
    summary = (f"{args.pairs} held-out pairs, K = {args.k} (--order balanced), engine "
               f"{args.engine}; build time (warm-up + judge training): {builds}")
    (out / "results.md").write_text(f"{md}\n\n{summary}\n")
    print(f"\n{md}\n\n{summary}\nwork folder: {out}")


if __name__ == "__main__":
    main()
