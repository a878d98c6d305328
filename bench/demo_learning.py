"""Does the tiny model learn the demo's distortions? The demo's dataset, continued into GRPO.

1. `evoq-data demo` on the first N bundled photos (PIQE on random crops votes; the dataset is
   written to OUT/demo/prefs and OUT/demo/dataset);
2. `evoq-data distort` of the remaining photos: the held-out distortions, with labels
   `mos = -level` (the reference is best);
3. the warmed-up tiny model (`python -m evoq_data.testing.tiny_vlm DIR --warmup-steps 200`)
   scores the held-out images (`evoq-data score` + `evoq-data eval`): SRCC before;
4. `evoq-train grpo --config cpu-smoke` on the demo's PREFS_DIR with the learning regime of
   docs/train.md (evoq_data.testing.learning.LEARN_SETTINGS, --max-steps to shorten);
5. the trained model scores the held-out images again: SRCC after.

    python bench/demo_learning.py --out runs/demo-learning            # 300 steps
    python bench/demo_learning.py --out runs/demo-learning --max-steps 100

Prints a Markdown table (SRCC/PLCC before and after, the reward curve, and the time of each
step). CPU only, one torch thread per process.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evoq_data.demo import PHOTOS, write_photos  # noqa: E402
from evoq_data.testing.learning import (  # noqa: E402
    _bin,
    _env,
    build_warm_model,
    curve,
    format_curve,
    score_and_eval,
    train,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/demo-learning"))
    ap.add_argument("--train-photos", type=int, default=6, help="photos voted by the demo")
    ap.add_argument("--max-steps", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    times = {}

    t = time.time()
    subprocess.run([_bin("evoq-data"), "demo", "--out", str(out / "demo"), "--photos",
                    str(args.train_photos), "--seed", str(args.seed), "--quiet"],
                   env=_env(1), check=True, capture_output=True)
    times["demo (vote, aggregate, push)"] = time.time() - t

    t = time.time()
    held = PHOTOS[args.train_photos:]
    write_photos(out / "heldout-photos", held, 256)
    subprocess.run([_bin("evoq-data"), "distort", "--images", str(out / "heldout-photos"),
                    "--out", str(out / "heldout"), "--quiet"], env=_env(1), check=True,
                   capture_output=True)
    import pyarrow.parquet as pq

    rows = pq.read_table(out / "heldout" / "distortions.parquet").to_pylist()
    with open(out / "heldout-labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "mos"])
        for r in rows:
            w.writerow([r["path"], -r["level"]])
    times["held-out distortions"] = time.time() - t

    times["warm-up (200 steps)"] = build_warm_model(out / "warm", seed=args.seed)
    before = score_and_eval(out / "warm", out / "heldout", out / "heldout-labels.csv",
                            out / "before", seed=args.seed)
    times["score + eval before"] = before["seconds"]
    run = train(out / "warm", out / "demo" / "prefs", out / "trained",
                {"max_steps": args.max_steps, "seed": args.seed})
    times[f"GRPO ({args.max_steps} steps)"] = run["seconds"]
    after = score_and_eval(out / "trained", out / "heldout", out / "heldout-labels.csv",
                           out / "after", seed=args.seed)
    times["score + eval after"] = after["seconds"]

    lines = [f"Held-out: the distortions of {', '.join(held)} ({before['n']} images, "
             "labels = -level).", "",
             "| model | SRCC | PLCC | parse rate | spread of mean scores |", "|---|---:|---:|---:|---:|"]
    for name, r in (("warmed-up", before), ("after GRPO", after)):
        lines.append(f"| {name} | {r['srcc']:.3f} | {r['plcc']:.3f} | {r['parse_rate']:.3f} | "
                     f"{r['score_std']:.3f} |")
    lines += ["", format_curve(curve(run["steps"], blocks=6)), "",
              "| step | seconds |", "|---|---:|"]
    lines += [f"| {k} | {v:.0f} |" for k, v in times.items()]
    text = "\n".join(lines)
    print(text)
    (out / "results.md").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps({"before": before, "after": after,
                                                  "seconds": times}, indent=2) + "\n")


if __name__ == "__main__":
    main()
