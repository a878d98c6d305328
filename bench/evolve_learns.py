"""Does the loop teach, end to end? `evoq-train evolve` on the brightness task, on CPU.

Round 1 is voted by the tiny brightness judge (`python -m evoq_data.testing.tiny_vlm DIR
--judge brightness`, evoq_data.testing.judge) as the bootstrap judge; GRPO then trains the
format-warmed tiny model on round 1's majorities; round 2 is voted by the model of round 1,
and so on. Everything runs through `evoq-train evolve` itself (`--bootstrap-engine
transformers --bootstrap-model JUDGE`, `--eval heldout=labels_heldout.csv`). Printed per
round, from the run folder:

* who voted, votes, the share of valid answers;
* vote agreement: mean over pairs of the majority's share of the valid votes;
* pseudo-label accuracy: the share of decisive pairs (p* 0 or 1) whose p* names the brighter
  image, and the coverage (decisive pairs / pairs);
* held-out SRCC / PLCC of the round's model (round 0: the warmed-up base model), by
  `evoq-data score` + `evoq-data eval` as evolve runs them.

    python bench/evolve_learns.py                                   # 2 rounds, small
    python bench/evolve_learns.py --pairs 256 -k 8 --max-steps 300 --out runs/evolve-learns

`--shuffled-control` then repeats the last round's training on the same pairs with a random
half of their labels turned around (`shuffle_labels`: no order left in them), with the very
commands evolve ran (read from RUN/state.json), and scores and evaluates that model as evolve
does: a round's gain that the shuffled labels also give is the extra steps, not the labels.

The defaults are small enough for a 2-core machine (see docs/train.md for what was measured
and how long it took); the table goes to OUT/results.md. CPU only; one torch thread per
process (--threads).
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

from evoq_data.testing.learning import (
    LEARN_SETTINGS,
    _bin,
    _env,
    _run,
    build_warm_model,
    make_brightness_task,
    shuffle_labels,
)


def _f(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def brightness_of(labels_csv: str) -> dict[str, float]:
    """Image file name -> its brightness factor f (names are unique in the task)."""
    with open(labels_csv, newline="") as fh:
        return {Path(r["image"]).name: float(r["mos"]) for r in csv.DictReader(fh)}


def round_votes(run: Path, r: int, f: dict[str, float]) -> dict:
    """Vote and pseudo-label numbers of round ``r`` (from its VOTES_DIR and PREFS_DIR).

    ``vote_accuracy``: the share of valid votes naming the brighter image (the voter's compare
    accuracy). ``pseudo_label_accuracy`` / ``coverage``: over every voted pair, the majority
    of its valid votes against the true order, and the share of pairs with a majority (before
    any ``--min-agreement`` filter); ``kept`` / ``kept_accuracy``: the pairs the published
    dataset holds and how many of its decisive labels are right."""
    import pyarrow.parquet as pq

    votes = []
    for shard in sorted((run / f"round-{r}" / "votes").glob("votes-*.parquet")):
        votes += pq.read_table(shard).to_pylist()
    prefs = pq.read_table(run / f"round-{r}" / "prefs" / "preferences.parquet").to_pylist()
    by_pair: dict[str, list[int]] = {}
    valid_votes = right_votes = 0
    for v in votes:
        tally = by_pair.setdefault(v["pair_id"], [0, 0])  # votes for a's side, for b's side
        if v["winner_id"] is None:
            continue
        a_wins = v["winner_id"] == v["image_a_id"]
        tally[0 if a_wins else 1] += 1
        truth_a = f[Path(v["image_a_path"]).name] > f[Path(v["image_b_path"]).name]
        valid_votes += 1
        right_votes += a_wins == truth_a
    truth = {v["pair_id"]: f[Path(v["image_a_path"]).name] > f[Path(v["image_b_path"]).name]
             for v in votes}
    shares, decisive, right = [], 0, 0
    for pair, (a, b) in by_pair.items():
        if a + b:
            shares.append(max(a, b) / (a + b))
        if a != b:
            decisive += 1
            right += (a > b) == truth[pair]
    kept = [p for p in prefs if p["p_star"] in (0.0, 1.0)]
    kept_right = sum((f[Path(p["image_a_path"]).name] > f[Path(p["image_b_path"]).name])
                     == (p["p_star"] == 1.0) for p in kept)
    return {"judge": votes[0]["model"] if votes else None, "votes": len(votes),
            "valid": valid_votes / len(votes) if votes else math.nan,
            "vote_accuracy": right_votes / valid_votes if valid_votes else math.nan,
            "agreement": sum(shares) / len(shares) if shares else math.nan,
            "pseudo_label_accuracy": right / decisive if decisive else math.nan,
            "coverage": decisive / len(by_pair) if by_pair else math.nan,
            "kept": len(prefs),
            "kept_accuracy": kept_right / len(kept) if kept else math.nan}


def read_wavg(path: Path) -> dict:
    """SRCC and PLCC of an eval's metrics.json; nan where there is none (no file, or not
    defined, e.g. every image got the same mean score: a collapsed model)."""
    if not path.is_file():
        return {"srcc": math.nan, "plcc": math.nan}
    wavg = json.loads(path.read_text())["wavg"]
    return {k: math.nan if wavg[k] is None else float(wavg[k]) for k in ("srcc", "plcc")}


def round_eval(run: Path, r: int) -> dict:
    return read_wavg(run / f"round-{r}" / "eval" / "metrics.json")


def _with(cmd: list[str], **values: str) -> list[str]:
    """``cmd`` with the value after each ``--flag`` (given as flag_name=...) replaced."""
    cmd = list(cmd)
    for flag, value in values.items():
        i = cmd.index("--" + flag.replace("_", "-"))
        cmd[i + 1] = value
    return cmd


def shuffled_control(run: Path, r: int, out: Path, seed: int, threads: int,
                     labels: str) -> dict:
    """Round ``r``'s GRPO, score and eval, by evolve's own commands, on its pairs with a
    random half of the labels turned around; the model and its metrics go to ``out``.
    (Where evolve skipped the round's eval, its model scoring fewer than 3 images, the
    control is evaluated against ``labels``, the bench's --eval set, all the same.)"""
    import subprocess

    steps = json.loads((run / "state.json").read_text())["steps"]
    turned = shuffle_labels(run / f"round-{r}" / "prefs", out / "prefs", seed=seed)
    scores = out / "eval" / "scores.parquet"
    evaluate = steps[f"round-{r}/eval"]["command"] or [
        sys.executable, "-m", "evoq_data.cli", "eval", "--scores", "-", "--labels",
        f"heldout={labels}", "--out", "-"]
    commands = {
        "grpo": _with(steps[f"round-{r}/grpo"]["command"], dataset=str(out / "prefs"),
                      output_dir=str(out / "model")),
        "score": _with(steps[f"round-{r}/score"]["command"], model=str(out / "model"),
                       out=str(scores)),
        "eval": _with(evaluate, scores=str(scores), out=str(out / "eval")),
    }
    result = {"round": r, "turned": turned, "pairs": pq_rows(out / "prefs"),
              "srcc": math.nan, "plcc": math.nan, "note": None}
    for name, cmd in commands.items():  # relative paths in them are the run folder's
        with open(out / f"{name}.log", "w") as log:
            done = subprocess.run(cmd, cwd=run, env=_env(threads), stdout=log,
                                  stderr=subprocess.STDOUT)
        if done.returncode and name == "eval":  # e.g. fewer than 3 images with a score
            lines = (out / "eval.log").read_text().strip().splitlines()
            result["note"] = lines[-1] if lines else f"eval failed ({done.returncode})"
            return result
        if done.returncode:
            raise SystemExit(f"control {name} failed ({done.returncode}): see {out / log.name}")
    result.update(read_wavg(out / "eval" / "metrics.json"))
    return result


def pq_rows(prefs: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(prefs / "preferences.parquet").metadata.num_rows


def table(rows: list[dict]) -> str:
    head = ["round", "voted by", "votes", "valid", "vote accuracy", "agreement",
            "pseudo-label accuracy", "coverage", "pairs kept", "kept accuracy",
            "held-out SRCC", "held-out PLCC"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for row in rows:
        cells = [str(row["round"]), row.get("judge") or "-",
                 str(row.get("votes", "-")), _f(row.get("valid")),
                 _f(row.get("vote_accuracy")), _f(row.get("agreement")),
                 _f(row.get("pseudo_label_accuracy")), _f(row.get("coverage")),
                 str(row.get("kept", "-")), _f(row.get("kept_accuracy")),
                 _f(row["srcc"]), _f(row["plcc"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--pairs", type=int, default=128, help="pairs per round")
    p.add_argument("-k", type=int, default=8, help="votes per pair")
    p.add_argument("--max-steps", type=int, default=150, help="GRPO steps per round")
    p.add_argument("--n-train", type=int, default=128)
    p.add_argument("--n-heldout", type=int, default=48)
    p.add_argument("--judge-skill", default="good", choices=["good", "weak"])
    p.add_argument("--judge-scores", default="none", choices=["none", "format", "weak"],
                   help="the judge also keeps the score prompt (tiny_vlm --judge-scores)")
    p.add_argument("--self", dest="pure_self", action="store_true",
                   help="pure self-evolution: no bootstrap judge; the judge itself "
                        "(--judge-skill, --judge-scores) is the base model and votes round 1")
    p.add_argument("--no-reasoning", action="store_true", help="votes without reasoning")
    p.add_argument("--order", default="balanced", choices=["balanced", "random"],
                   help="shown order of the votes (balanced needs an even -k; -k 1 takes "
                        "random)")
    p.add_argument("--init-from", default="previous", choices=["previous", "base"],
                   help="what round r >= 2 trains from (evolve's --init-from)")
    p.add_argument("--train-arg", action="append", default=[],
                   help="KEY=VALUE added to every round's GRPO settings (repeatable)")
    p.add_argument("--warmup-steps", type=int, default=200)
    p.add_argument("--warmup-min-valid", type=float, default=0.8,
                   help="the base's warm-up goes on until this share of its sampled answers "
                        "parses for both prompts (0: exactly --warmup-steps; seeds 0 and 2 "
                        "pass at 200 steps, seed 1 needs 400)")
    p.add_argument("--score-samples", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=32,
                   help="per vote and score answer (the judge's reasoning needs ~22)")
    p.add_argument("--min-agreement", type=float, default=None,
                   help="passed to each round's aggregate (drops ties below it)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--judge-seed", type=int, default=0,
                   help="the judge's build seed, apart from --seed: the judge is the measuring "
                        "instrument (docs/train.md measured seed 0's; builds with other seeds "
                        "can come out at chance), --seed varies the task, the base and GRPO")
    p.add_argument("--shuffled-control", action="store_true",
                   help="after evolve, train the last round again on its pairs with a random "
                        "half of the labels turned around (seeded by --seed), by evolve's own "
                        "commands, and report that model's held-out SRCC")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None, help="work folder (default: a temp dir)")
    args = p.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="evoq-evolve-learns-"))
    out.mkdir(parents=True, exist_ok=True)
    if args.shuffled_control and (out / "control").exists():
        raise SystemExit(f"{out / 'control'} exists: remove it to run the control again")
    t0 = time.time()
    task = make_brightness_task(out / "task", n_train=args.n_train, n_heldout=args.n_heldout,
                                n_pairs=1, seed=args.seed)
    base = out / "base"
    judge = out / (f"judge-{args.judge_skill}" + ("" if args.judge_scores == "none"
                                                   else f"-scores-{args.judge_scores}")
                   + ("" if args.judge_seed == 0 else f"-seed-{args.judge_seed}"))
    if not base.is_dir() and not args.pure_self:
        build_warm_model(base, seed=args.seed, warmup_steps=args.warmup_steps,
                         min_valid=args.warmup_min_valid, threads=args.threads)
    if not judge.is_dir():
        _run([sys.executable, "-m", "evoq_data.testing.tiny_vlm", str(judge), "--judge",
              "brightness", "--judge-skill", args.judge_skill, "--judge-scores",
              args.judge_scores, "--seed", str(args.judge_seed)],
             Path(f"{judge}.log"), args.threads)
    print(f"base and judge ready ({time.time() - t0:.0f} s)", flush=True)
    settings = {**LEARN_SETTINGS, "max_steps": args.max_steps, "seed": args.seed}
    run = out / "run"
    start = judge if args.pure_self else base
    bootstrap = [] if args.pure_self else ["--bootstrap-engine", "transformers",
                                           "--bootstrap-model", str(judge)]
    cmd = [_bin("evoq-train"), "evolve", "--pool", task["root"] + "/images/train",
           "--model", str(start), "--rounds", str(args.rounds), "--run-dir", str(run),
           "--engine", "transformers", *bootstrap, "--pairs-per-round", str(args.pairs),
           "-k", str(args.k), "--max-tokens", str(args.max_tokens),
           f"--vote-arg=--order={args.order}", "--train-config", "cpu-smoke",
           "--eval", f"heldout={task['heldout_labels']}",
           "--score-samples", str(args.score_samples), "--seed", str(args.seed),
           "--init-from", args.init_from, "--quiet"]
    for k, v in settings.items():
        cmd += ["--train-arg", f"{k}={v}"]
    cmd += [f"--train-arg={kv}" for kv in args.train_arg]
    if args.no_reasoning:
        cmd += ["--vote-arg=--no-reasoning"]
    if args.min_agreement is not None:
        cmd += [f"--aggregate-arg=--min-agreement={args.min_agreement}"]
    t1 = time.time()
    _run(cmd, out / "evolve.log", args.threads)
    evolve_s = time.time() - t1
    f = brightness_of(task["train_labels"])
    rows = [{"round": 0, **round_eval(run, 0)}]
    for r in range(1, args.rounds + 1):
        rows.append({"round": r, **round_votes(run, r, f), **round_eval(run, r)})
    md = table(rows)
    control = None
    if args.shuffled_control:
        t2 = time.time()
        control = shuffled_control(run, args.rounds, out / "control", args.seed, args.threads,
                                   task["heldout_labels"])
        control["seconds"] = round(time.time() - t2)
        md += (f"\n\nControl: round {args.rounds}'s training again on its {control['pairs']} "
               f"pairs with {control['turned']} labels turned around (no order left): "
               f"held-out SRCC {_f(control['srcc'])}, PLCC {_f(control['plcc'])} against "
               f"{_f(rows[-1]['srcc'])} on the round's own labels ({control['seconds']} s)"
               + (f"; {control['note']}" if control["note"] else "") + ".")
    who = ("pure self-evolution from the judge" if args.pure_self
           else f"round 1 voted by the {args.judge_skill} judge")
    summary = (f"{args.rounds} rounds, {args.pairs} pairs x K = {args.k} a round, "
               f"{args.max_steps} GRPO steps a round (round 2 on from the {args.init_from} "
               f"model), {who} (scores: {args.judge_scores}), "
               f"reasoning votes: {not args.no_reasoning}, order {args.order}, min agreement: "
               f"{args.min_agreement}, extra train args: {args.train_arg or '-'}, seed "
               f"{args.seed}, judge seed {args.judge_seed}; evolve {evolve_s:.0f} s, total {time.time() - t0:.0f} s; run "
               f"folder {run}")
    (out / "results.json").write_text(json.dumps({"args": {k: str(v) for k, v in
                                                           vars(args).items()},
                                                  "rounds": rows, "control": control},
                                                 indent=2))
    (out / "results.md").write_text(f"{md}\n\n{summary}\n")
    print(f"\n{md}\n\n{summary}")


if __name__ == "__main__":
    main()
