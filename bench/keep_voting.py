"""Does `evoq-train grpo --compare_weight W` keep the voting skill? The tiny model on the
brightness task, trained with and without the compare rows.

Per arm, from one format-warmed tiny model (evoq_data.testing.learning.build_warm_model):

* ``warm``: no training (the starting point);
* ``off``: `evoq-train grpo` with LEARN_SETTINGS on the task's oracle preferences (p* = 1
  when image a is brighter), the paper's setting;
* ``on``: the same with ``--compare_weight W`` (the pairs' compare prompts trained beside
  the score prompts, agreement reward).

Each trained model is then measured on held-out images it never saw:

* score: `evoq-data score` (transformers, K samples) + `evoq-data eval` (SRCC, PLCC);
* compare: `evoq-data vote` (transformers, K votes a pair, --order balanced) on random
  held-out pairs; valid = share of parseable votes, accuracy = share of valid votes naming
  the brighter image, majority = share of decisive pairs whose majority names it.

    python bench/keep_voting.py --out runs/keepvote                  # warm, off, on
    python bench/keep_voting.py --out runs/keepvote --arms on       # one arm, same folder

OUT/<arm>/result.json keeps each arm; OUT/results.md the table of every arm measured so
far. CPU only, one torch thread per process (--threads).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from judge_skill import brightness_of, read_votes  # noqa: E402

from evoq_data.testing.learning import (  # noqa: E402
    _bin,
    _run,
    build_warm_model,
    make_brightness_task,
    score_and_eval,
    train,
)

ARMS = ("warm", "off", "on")


def vote_skill(model: Path, pairs: Path, labels: str, out: Path, args) -> dict:
    """`evoq-data vote` on the held-out pairs; valid rate and accuracy against brightness."""
    t0 = time.time()
    _run([_bin("evoq-data"), "vote", "--pairs", str(pairs), "--model", str(model),
          "--engine", "transformers", "--votes-per-pair", str(args.k), "--order", "balanced",
          "--max-tokens", str(args.max_tokens), "--seed", str(args.seed), "--out", str(out),
          "--quiet"], Path(f"{out}.log"), args.threads)
    f = brightness_of(labels)
    votes = read_votes(out)
    right = wrong = invalid = zeros = 0
    per_pair: dict[str, list[int]] = {}
    for v in votes:
        fa = f[str(Path(v["image_a_path"]).resolve())]
        fb = f[str(Path(v["image_b_path"]).resolve())]
        better = v["image_a_id"] if fa > fb else v["image_b_id"]
        tally = per_pair.setdefault(v["pair_id"], [0, 0])
        if v["winner_id"] is None:
            invalid += 1
            continue
        ok = v["winner_id"] == better
        right += ok
        wrong += not ok
        tally[0 if ok else 1] += 1
        zeros += v["answer"] == 0
    valid = right + wrong
    decisive = [t for t in per_pair.values() if t[0] != t[1]]
    return {"votes": len(votes), "valid": valid / len(votes) if votes else math.nan,
            "accuracy": right / valid if valid else math.nan,
            "majority": (sum(t[0] > t[1] for t in decisive) / len(decisive)
                         if decisive else math.nan),
            "decisive_pairs": len(decisive), "answer0": zeros / valid if valid else math.nan,
            "seconds": round(time.time() - t0, 1)}


def last_block(steps: list[dict], key: str, frac: float = 0.1) -> float:
    vals = [s[key] for s in steps[-max(1, int(len(steps) * frac)):] if key in s]
    vals = [v for v in vals if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else math.nan


def run_arm(arm: str, out: Path, warm: Path, task: dict, pairs: Path, args) -> dict:
    folder = out / arm
    folder.mkdir(parents=True, exist_ok=True)
    result: dict = {"arm": arm}
    model = warm
    if arm != "warm":
        settings = {"max_steps": args.max_steps}
        if arm == "on":
            settings["compare_weight"] = args.compare_weight
        trained = train(warm, task["prefs"], folder / "model", settings, threads=args.threads)
        model = folder / "model"
        steps = trained["steps"]
        result["train"] = {
            "seconds": trained["seconds"], "steps": len(steps), "settings": settings,
            **{f"last_{k.replace('/', '_')}": last_block(steps, k) for k in (
                "rewards/evoq_fidelity/mean", "rewards/evoq_agreement/mean", "compare_accuracy",
                "compare_valid_rate", "parse_failure_rate")}}
        print(f"[{arm}] trained {len(steps)} steps in {trained['seconds']} s", flush=True)
    result["score"] = score_and_eval(model, task["heldout_images"], task["heldout_labels"],
                                     folder / "score", samples=args.score_samples,
                                     seed=args.seed, threads=args.threads)
    print(f"[{arm}] held-out SRCC {result['score']['srcc']:.3f}", flush=True)
    result["compare"] = vote_skill(model, pairs, task["heldout_labels"], folder / "votes", args)
    print(f"[{arm}] compare valid {result['compare']['valid']:.3f}, accuracy "
          f"{result['compare']['accuracy']:.3f}", flush=True)
    (folder / "result.json").write_text(json.dumps(result, indent=2))
    return result


def _f(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def table(results: list[dict]) -> str:
    head = ["arm", "steps", "train s", "held-out SRCC", "PLCC", "score parse", "compare valid",
            "per-vote accuracy", "majority accuracy", "answer 0 share",
            "last fidelity", "last agreement"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for r in results:
        t, s, c = r.get("train", {}), r["score"], r["compare"]
        lines.append("| " + " | ".join([
            r["arm"], str(t.get("steps", 0)), str(t.get("seconds", "-")), _f(s["srcc"]),
            _f(s["plcc"]), _f(s["parse_rate"]), _f(c["valid"]), _f(c["accuracy"]),
            _f(c["majority"]), _f(c["answer0"]),
            _f(t.get("last_rewards_evoq_fidelity_mean")),
            _f(t.get("last_rewards_evoq_agreement_mean"))]) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="work folder (reused across arms)")
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    p.add_argument("--max-steps", type=int, default=300)
    p.add_argument("--compare-weight", type=float, default=1.0)
    p.add_argument("--pairs", type=int, default=64, help="held-out compare pairs")
    p.add_argument("-k", type=int, default=4, help="votes per held-out pair (even)")
    p.add_argument("--score-samples", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=16, help="per vote (LEARN_SETTINGS' length)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    warm = out / "warm-model"
    if not (warm / "config.json").is_file():
        print(f"warm model built in {build_warm_model(warm, seed=args.seed, threads=args.threads)}"
              " s", flush=True)
    if not (out / "task" / "prefs" / "preferences.parquet").is_file():
        make_brightness_task(out / "task", seed=args.seed)
    root = out / "task"  # make_brightness_task's layout
    task = {"prefs": str(root / "prefs"), "heldout_images": str(root / "images" / "heldout"),
            "heldout_labels": str(root / "labels_heldout.csv")}
    pairs = out / "heldout_pairs.parquet"
    if not pairs.is_file():
        _run([_bin("evoq-data"), "pairs", "--images", task["heldout_images"], "--num-pairs",
              str(args.pairs), "--seed", str(args.seed), "--out", str(pairs), "--quiet"], None,
             args.threads)
    for arm in args.arms:
        run_arm(arm, out, warm, task, pairs, args)
    results = [json.loads((out / a / "result.json").read_text()) for a in ARMS
               if (out / a / "result.json").is_file()]
    md = table(results)
    (out / "results.md").write_text(md + "\n")
    print(f"\n{md}\nwork folder: {out}")


if __name__ == "__main__":
    main()
