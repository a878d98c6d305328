"""How many votes does a pseudo-label need? The paper's K ablation, its label half, on CPU.

The weak brightness judge (`python -m evoq_data.testing.tiny_vlm DIR --judge brightness
--judge-skill weak`: per-vote accuracy about 0.6) votes K = 32 times on random pairs of the
brightness task's unlabelled training pool, through `evoq-data pairs` and `evoq-data vote
--order balanced`. The first k votes of a balanced K = 32 run are a balanced run of k votes
(each consecutive two are shown once each way), so one run gives every k in --ks: per k, the
pseudo-label accuracy (decisive pairs whose majority names the brighter image), the coverage
(decisive / all pairs) and the share of ties, over --groups disjoint groups of pairs (the
spread between groups is the seed-to-seed spread of a round of that many pairs).

    python bench/k_ablation.py --pairs 768 --groups 3 --out runs/k-ablation

The student's side of the ablation (GRPO on each k's labels, held-out SRCC) is
bench/evolve_learns.py with -k; docs/evolve.md says what was run.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evoq_data.testing.learning import _bin, _run, make_brightness_task


def majority(votes: list[int]) -> int | None:
    """1 if most valid votes name image a, 0 if most name b, None for a tie or no vote."""
    a = sum(votes)
    b = len(votes) - a
    return None if a == b else int(a > b)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=768)
    p.add_argument("--groups", type=int, default=3)
    p.add_argument("-k", type=int, default=32, help="votes per pair in the one run")
    p.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    p.add_argument("--judge", type=Path, default=None, help="a judge folder (default: build "
                   "the weak brightness judge)")
    p.add_argument("--judge-skill", default="weak", choices=["good", "weak"])
    p.add_argument("--reasoning", action="store_true", help="the reasoning prompt (the weak "
                   "judge writes few valid answers with it)")
    p.add_argument("--max-tokens", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--judge-seed", type=int, default=0, help="the judge's build seed (the one "
                   "measured in docs/train.md; builds with other seeds can come out at chance)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="evoq-k-ablation-"))
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    task = make_brightness_task(out / "task", n_train=256, n_heldout=2, n_pairs=1,
                                seed=args.seed)
    judge = args.judge or out / f"judge-{args.judge_skill}"
    if not judge.is_dir():
        _run([sys.executable, "-m", "evoq_data.testing.tiny_vlm", str(judge), "--judge",
              "brightness", "--judge-skill", args.judge_skill, "--seed",
              str(args.judge_seed)],
             Path(f"{judge}.log"), args.threads)
    pairs = out / "pairs.parquet"
    _run([_bin("evoq-data"), "pairs", "--images", task["root"] + "/images/train",
          "--num-pairs", str(args.pairs), "--seed", str(args.seed), "--out", str(pairs),
          "--quiet"], None, args.threads)
    votes_dir = out / "votes"
    t1 = time.time()
    _run([_bin("evoq-data"), "vote", "--pairs", str(pairs), "--model", str(judge), "--engine",
          "transformers", "--votes-per-pair", str(args.k), "--order", "balanced", "--max-tokens",
          str(args.max_tokens), "--seed", str(args.seed),
          "--reasoning" if args.reasoning else "--no-reasoning", "--out", str(votes_dir),
          "--quiet"], Path(f"{votes_dir}.log"), args.threads)
    vote_s = time.time() - t1

    import pyarrow.parquet as pq

    with open(task["train_labels"], newline="") as fh:
        f = {Path(r["image"]).name: float(r["mos"]) for r in csv.DictReader(fh)}
    rows = [r for shard in sorted(votes_dir.glob("votes-*.parquet"))
            for r in pq.read_table(shard).to_pylist()]
    by_pair: dict[str, list[dict]] = {}
    for r in rows:
        by_pair.setdefault(r["pair_id"], []).append(r)
    pair_ids = sorted(by_pair)
    valid = sum(r["winner_id"] is not None for r in rows) / len(rows)
    right_votes = [(r["winner_id"] == r["image_a_id"])
                   == (f[Path(r["image_a_path"]).name] > f[Path(r["image_b_path"]).name])
                   for r in rows if r["winner_id"] is not None]
    lines = ["| k | pseudo-label accuracy (mean, min-max over groups) | coverage | ties |",
             "|---:|---|---:|---:|"]
    for k in args.ks:
        accs, covs, ties = [], [], []
        for g in range(args.groups):
            group = pair_ids[g :: args.groups]
            decisive = right = tie = 0
            for pid in group:
                votes = sorted(by_pair[pid], key=lambda r: r["vote_index"])[:k]
                a_first = f[Path(votes[0]["image_a_path"]).name] > \
                    f[Path(votes[0]["image_b_path"]).name]
                m = majority([int(v["winner_id"] == v["image_a_id"]) for v in votes
                              if v["winner_id"] is not None])
                if m is None:
                    tie += 1
                    continue
                decisive += 1
                right += (m == 1) == a_first
            accs.append(right / decisive if decisive else float("nan"))
            covs.append(decisive / len(group))
            ties.append(tie / len(group))
        lines.append(f"| {k} | {statistics.fmean(accs):.3f} ({min(accs):.3f}-{max(accs):.3f}) "
                     f"| {statistics.fmean(covs):.3f} | {statistics.fmean(ties):.3f} |")
    md = "\n".join(lines)
    summary = (f"{len(pair_ids)} pairs in {args.groups} groups, judge {args.judge_skill}, "
               f"reasoning {args.reasoning}, K = {args.k} votes a pair, valid {valid:.3f}, "
               f"per-vote accuracy {sum(right_votes) / len(right_votes):.3f}; vote "
               f"{vote_s:.0f} s, total {time.time() - t0:.0f} s")
    (out / "results.md").write_text(f"{md}\n\n{summary}\n")
    print(f"{md}\n\n{summary}")


if __name__ == "__main__":
    main()
