"""Does `evoq-train grpo` teach? A learning curve on CPU, from a fresh tiny model.

For each seed: build the tiny random Qwen2.5-VL and warm it up on the answer format only
(`python -m evoq_data.testing.tiny_vlm DIR --warmup-steps N`: uniform random answers, no
quality information), write the "quality = brightness" task (evoq_data.testing.learning), then

1. score the held-out images with the warmed-up model (`evoq-data score` + `evoq-data eval`);
2. train with GRPO on the brightness pseudo-preferences (`evoq-train grpo --config cpu-smoke`
   plus the settings below) and print the curve by block of steps: fidelity reward, format
   reward, parse rate, mean score, per-group score spread, TRL's zero-std fraction, KL, entropy;
3. score the held-out images again: SRCC/PLCC before and after;
4. controls: the same run with p* flipped (SRCC must go below zero) and with beta 0 (the
   answers collapse to one value; see docs/train.md, "The constant-answer optimum").

    python bench/learning_curve.py                       # seed 0, main run + both controls
    python bench/learning_curve.py --seeds 0 1 2 3 4 --out runs/learning
    python bench/learning_curve.py --seeds 0 1 2 --controls --set max_steps=150 \\
        --set lr_scheduler_type=constant --warmup-steps 100

A seed "learned" when held-out SRCC after training is at least --margin above the
warmed-up model's and the last block's fidelity reward is above the first block's. Results go
to OUT/results.json and OUT/results.md (the table in docs/train.md comes from there).
CPU only; one torch thread per process by default (--threads), which on a shared 2-core
machine was 10-20x faster than two.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evoq_data.testing.learning import (
    LEARN_SETTINGS,
    build_warm_model,
    curve,
    format_curve,
    make_brightness_task,
    score_and_eval,
    train,
)


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _fmt(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def one_seed(seed: int, root: Path, args, settings: dict) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    res: dict = {"seed": seed}
    task = make_brightness_task(root / "task", n_train=args.n_train, n_heldout=args.n_heldout,
                                n_pairs=args.n_pairs, seed=seed)
    warm = root / "warm"
    res["warmup_seconds"] = build_warm_model(warm, seed=seed, warmup_steps=args.warmup_steps,
                                             warmup_lr=args.warmup_lr, threads=args.threads)
    print(f"[seed {seed}] warm-up {args.warmup_steps} steps: {res['warmup_seconds']} s", flush=True)
    ev = dict(samples=args.samples, threads=args.threads)
    res["before"] = score_and_eval(warm, task["heldout_images"], task["heldout_labels"],
                                   root / "eval-warm", **ev)
    print(f"[seed {seed}] warmed-up model: held-out SRCC {res['before']['srcc']:.3f}, "
          f"parse rate {res['before']['parse_rate']:.3f}", flush=True)
    runs = [("main", task["prefs"], {})]
    if seed in args.seeds[:args.control_seeds]:
        if "flipped" in args.controls:
            runs.append(("flipped", task["prefs_flipped"], {}))
        if "beta0" in args.controls:
            runs.append(("beta0", task["prefs"], {"beta": 0}))
    for name, prefs, extra in runs:
        run_settings = {**settings, "seed": seed, **extra}
        t = train(warm, prefs, root / f"run-{name}", run_settings, threads=args.threads)
        rows = curve(t["steps"], blocks=args.blocks)
        try:
            after = score_and_eval(root / f"run-{name}", task["heldout_images"],
                                   task["heldout_labels"], root / f"eval-{name}", **ev)
        except RuntimeError as exc:  # e.g. fewer than 3 images with a valid score: no SRCC
            nan = float("nan")
            after = {"srcc": nan, "plcc": nan, "n": 0, "parse_rate": nan, "score_std": nan,
                     "error": str(exc).splitlines()[-1]}
        first, last = rows[0], rows[-1]
        res[name] = {"train_seconds": t["seconds"], "after": after, "curve": rows,
                     "fidelity_first": first["fidelity"], "fidelity_last": last["fidelity"],
                     "constant_frac_last": last["group_score_constant"],
                     "settings": run_settings}
        print(f"\n[seed {seed}] {name}: {len(t['steps'])} steps in {t['seconds']} s "
              f"(p* {'flipped' if name == 'flipped' else 'as voted'}, beta "
              f"{run_settings['beta']})\n{format_curve(rows)}", flush=True)
        print(f"[seed {seed}] {name}: held-out SRCC {res['before']['srcc']:.3f} -> "
              f"{after['srcc']:.3f}, PLCC {res['before']['plcc']:.3f} -> {after['plcc']:.3f}, "
              f"spread of per-image mean scores {res['before']['score_std']:.3f} -> "
              f"{after['score_std']:.3f}", flush=True)
    main = res["main"]
    res["learned"] = bool(not math.isnan(main["after"]["srcc"])
                          and main["after"]["srcc"] >= res["before"]["srcc"] + args.margin
                          and main["fidelity_last"] > main["fidelity_first"])
    if "flipped" in res:
        res["flipped_below_zero"] = bool(res["flipped"]["after"]["srcc"] < 0)  # NaN: False
    return res


def table(results: list[dict]) -> str:
    head = ["seed", "SRCC warm", "SRCC after", "PLCC after", "fidelity first -> last block",
            "train s", "learned", "flipped SRCC", "beta-0 SRCC",
            "beta-0 constant groups (last block)"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for r in results:
        m = r["main"]
        cells = [str(r["seed"]), _fmt(r["before"]["srcc"]), _fmt(m["after"]["srcc"]),
                 _fmt(m["after"]["plcc"]),
                 f"{_fmt(m['fidelity_first'])} -> {_fmt(m['fidelity_last'])}",
                 f"{m['train_seconds']:.0f}", "yes" if r["learned"] else "**no**"]
        cells += [_fmt(r["flipped"]["after"]["srcc"]) if "flipped" in r else "",
                  _fmt(r["beta0"]["after"]["srcc"]) if "beta0" in r else "",
                  _fmt(r["beta0"]["constant_frac_last"]) if "beta0" in r else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--out", type=Path, default=None, help="work folder (default: a temp dir)")
    p.add_argument("--warmup-steps", type=int, default=200)
    p.add_argument("--warmup-lr", type=float, default=3e-3)
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="a training setting over the chosen regime "
                        f"({', '.join(f'{k}={v}' for k, v in LEARN_SETTINGS.items())})")
    p.add_argument("--n-train", type=int, default=256)
    p.add_argument("--n-heldout", type=int, default=64)
    p.add_argument("--n-pairs", type=int, default=1024)
    p.add_argument("--samples", type=int, default=8, help="score samples per held-out image")
    p.add_argument("--blocks", type=int, default=10)
    p.add_argument("--margin", type=float, default=0.3,
                   help="SRCC gain over the warmed-up model that counts as learning")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--controls", nargs="*", default=["flipped", "beta0"],
                   choices=["flipped", "beta0"],
                   help="control runs (default both; give none to skip them)")
    p.add_argument("--control-seeds", type=int, default=None,
                   help="run the controls for the first N seeds only (default: all)")
    args = p.parse_args(argv)
    if args.control_seeds is None:
        args.control_seeds = len(args.seeds)
    settings = dict(LEARN_SETTINGS)
    for item in args.set:
        k, _, v = item.partition("=")
        settings[k] = _value(v)
    out = args.out or Path(tempfile.mkdtemp(prefix="evoq-learning-"))
    print(f"settings: {settings}; warm-up {args.warmup_steps} steps; work folder {out}",
          flush=True)
    t0 = time.time()
    results = []
    for seed in args.seeds:
        results.append(one_seed(seed, out / f"seed{seed}", args, settings))
        (out / "results.json").write_text(json.dumps(
            {"settings": settings, "warmup_steps": args.warmup_steps, "margin": args.margin,
             "results": results}, indent=2, default=str))
    md = table(results)
    n_ok = sum(r["learned"] for r in results)
    gains = [r["main"]["after"]["srcc"] - r["before"]["srcc"] for r in results
             if not math.isnan(r["main"]["after"]["srcc"])] or [float("nan")]
    summary = (f"learned in {n_ok}/{len(results)} seeds (SRCC gain >= {args.margin} and last "
               f"block's fidelity above the first's); SRCC gain mean {statistics.mean(gains):.3f}"
               f", min {min(gains):.3f}; total {time.time() - t0:.0f} s")
    flips = [r["flipped_below_zero"] for r in results if "flipped_below_zero" in r]
    if flips:
        summary += f"; flipped control below 0 in {sum(flips)}/{len(flips)}"
    (out / "results.md").write_text(f"settings: {settings}, warm-up {args.warmup_steps} steps\n\n"
                                    f"{md}\n\n{summary}\n")
    print(f"\n{md}\n\n{summary}")


if __name__ == "__main__":
    main()
