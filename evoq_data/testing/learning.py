"""A synthetic task a tiny model can learn on a CPU, and the helpers to watch it learn.

"Quality = brightness": seeded random colour textures darkened by a factor f in [0.1, 1];
f is the true quality. :func:`make_brightness_task` writes

* ``images/train/*.png`` and ``images/heldout/*.png``;
* ``labels_train.csv`` and ``labels_heldout.csv`` (``image`` path relative to the CSV, ``mos``
  = f), readable by ``evoq-data eval --labels``;
* ``prefs/preferences.parquet``: an evoq PREFS_DIR of random training pairs, p* = 1 when image
  a is brighter (hard labels, as Eq. 1 gives);
* ``prefs_flipped/preferences.parquet``: the same pairs with p* -> 1 - p* (the control that
  must make the model learn the opposite order).

:func:`shuffle_labels` copies a round's PREFS_DIR with a random half of its pairs turned
around (the shuffled-label control of ``bench/evolve_learns.py --shuffled-control``).

:func:`parse_train_log` reads the per-step metric lines that ``evoq-train grpo`` prints, and
:func:`curve` sums them up by block of steps. Used by ``bench/learning_curve.py`` and
``tests/test_learning.py``.
"""

from __future__ import annotations

import ast
import csv
import math
import random
from pathlib import Path

from evoq_data.testing.warmup import random_image


def make_brightness_task(root: str | Path, *, n_train: int = 256, n_heldout: int = 64,
                         n_pairs: int = 1024, size: int = 64, seed: int = 0) -> dict:
    """Write the brightness task under ``root``; return its paths."""
    import numpy as np
    import pandas as pd

    root = Path(root)
    rng = np.random.default_rng(seed + 1000)  # not the warm-up's image stream
    pick = random.Random(seed)
    rows: dict[str, list[tuple[str, float]]] = {}
    for split, n in (("train", n_train), ("heldout", n_heldout)):
        folder = root / "images" / split
        folder.mkdir(parents=True, exist_ok=True)
        rows[split] = []
        for i in range(n):
            f = float(rng.uniform(0.1, 1.0))
            path = folder / f"{split}_{i:04d}.png"
            random_image(rng, size, brightness=f).save(path)
            rows[split].append((str(path.resolve()), f))
        with open(root / f"labels_{split}.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["image", "mos"])
            w.writerows((str(Path(p).relative_to(root.resolve())), f) for p, f in rows[split])
    pairs = []
    for k in range(n_pairs):
        (a, fa), (b, fb) = pick.sample(rows["train"], 2)
        pairs.append(dict(pair_id=f"p{k:05d}", image_a_id=Path(a).stem, image_b_id=Path(b).stem,
                          p_star=1.0 if fa > fb else 0.0, image_a_path=a, image_b_path=b))
    table = pd.DataFrame(pairs)
    for name, frame in (("prefs", table), ("prefs_flipped", table.assign(p_star=1 - table.p_star))):
        (root / name).mkdir(exist_ok=True)
        frame.to_parquet(root / name / "preferences.parquet", index=False)
    return {"root": str(root), "prefs": str(root / "prefs"),
            "prefs_flipped": str(root / "prefs_flipped"),
            "heldout_images": str(root / "images" / "heldout"),
            "heldout_labels": str(root / "labels_heldout.csv"),
            "train_labels": str(root / "labels_train.csv")}


def shuffle_labels(src: str | Path, dst: str | Path, *, seed: int = 0) -> int:
    """A copy of PREFS_DIR ``src`` at ``dst`` whose labels carry no order: each pair is
    turned around with probability 1/2 (``votes_a`` <-> ``votes_b``, ``p_star`` and
    ``vote_fraction_a`` -> 1 - x, where present), everything else kept: pairs, agreement and
    its Wilson interval (both of the majority's share), images, manifest. Returns how many
    pairs were turned. ``dst`` must not exist yet."""
    import shutil

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    src, dst = Path(src), Path(dst)
    if dst.exists():
        raise FileExistsError(f"{dst} exists")
    shutil.copytree(src, dst)
    table = pq.read_table(dst / "preferences.parquet")
    cols = table.to_pydict()
    turn = np.random.default_rng(seed).random(table.num_rows) < 0.5
    for i in np.flatnonzero(turn):
        if "votes_a" in cols:
            cols["votes_a"][i], cols["votes_b"][i] = cols["votes_b"][i], cols["votes_a"][i]
        for name in ("p_star", "vote_fraction_a"):
            if name in cols and cols[name][i] is not None:
                cols[name][i] = 1.0 - cols[name][i]
    pq.write_table(pa.table(cols, schema=table.schema), dst / "preferences.parquet")
    return int(turn.sum())


def parse_train_log(text: str) -> list[dict]:
    """The per-step metric dicts in ``evoq-train grpo``'s output (one ``{'loss': ...}`` a line)."""
    steps = []
    for line in text.splitlines():
        line = line.strip()
        if not (line.startswith("{") and "'loss'" in line and "'reward'" in line):
            continue
        try:
            raw = ast.literal_eval(line)
        except (ValueError, SyntaxError):
            continue
        row = {}
        for k, v in raw.items():
            try:
                row[k] = float(v)
            except (TypeError, ValueError):
                pass
        steps.append(row)
    return steps


def _mean(values) -> float:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return sum(vals) / len(vals) if vals else float("nan")


CURVE_COLUMNS = (
    ("fidelity", "rewards/evoq_fidelity/mean"),
    ("format", "rewards/evoq_format/mean"),
    ("parse_rate", None),  # 1 - parse_failure_rate
    ("score_mean", "score_mean"),
    ("group_score_std", "score_group_std"),
    ("group_score_constant", "score_group_constant_frac"),
    ("zero_std_frac", "frac_reward_zero_std"),
    ("kl", "kl"),
    ("entropy", "entropy"),
)


def curve(steps: list[dict], blocks: int = 10) -> list[dict]:
    """Means of the logged metrics by block of consecutive steps (``blocks`` blocks)."""
    if not steps:
        return []
    size = max(1, math.ceil(len(steps) / blocks))
    out = []
    for start in range(0, len(steps), size):
        chunk = steps[start:start + size]
        row = {"first_step": start + 1, "last_step": start + len(chunk)}
        for name, key in CURVE_COLUMNS:
            if name == "parse_rate":
                row[name] = 1.0 - _mean(s.get("parse_failure_rate", float("nan")) for s in chunk)
            else:
                row[name] = _mean(s.get(key, float("nan")) for s in chunk)
        out.append(row)
    return out


def format_curve(rows: list[dict]) -> str:
    """The curve as a markdown table."""
    names = [n for n, _ in CURVE_COLUMNS]
    lines = ["| steps | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for r in rows:
        cells = [f"{r[n]:.3f}" if not math.isnan(r[n]) else "-" for n in names]
        lines.append(f"| {r['first_step']}-{r['last_step']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- running the project's command lines, as a user would -------------------------------

#: The regime that learned in every run so far (docs/train.md, "Does training teach?"), on
#: top of the cpu-smoke recipe, with the length penalty off so only fidelity and format count;
#: the learning rate decays linearly to 0 (EvoqGRPOConfig's default schedule).
LEARN_SETTINGS = {
    "num_generations": 8, "samples_per_device": 8, "per_device_train_batch_size": 32,
    "max_completion_length": 16, "length_penalty_weight": 0, "beta": 0.1,
    "learning_rate": 3e-3, "max_steps": 300,
}


def _env(threads: int | None = 1) -> dict:
    import os

    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    if threads:
        # One torch thread: on a shared 2-core machine two spinning threads per process
        # made generation 10-20x slower.
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def _bin(name: str) -> str:
    import shutil
    import sys

    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else (shutil.which(name) or name)


def _run(cmd: list[str], log: Path | None, threads: int | None) -> str:
    import subprocess

    proc = subprocess.run(cmd, env=_env(threads), capture_output=True, text=True)
    text = proc.stdout + proc.stderr
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(text)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed ({proc.returncode}):\n{text[-3000:]}")
    return text


def train(model: str | Path, prefs: str | Path, out: str | Path, settings: dict | None = None,
          *, threads: int | None = 1) -> dict:
    """``evoq-train grpo --config cpu-smoke`` with ``settings`` (defaults LEARN_SETTINGS);
    returns {"steps": per-step metrics, "seconds": wall time, "log": log path}."""
    import time

    settings = {**LEARN_SETTINGS, **(settings or {})}
    cmd = [_bin("evoq-train"), "grpo", "--config", "cpu-smoke", "--model", str(model),
           "--dataset", str(prefs), "--output-dir", str(out), "--quiet"]
    for k, v in settings.items():
        cmd += [f"--{k}", str(v)]
    t0 = time.time()
    log = Path(f"{out}.log")
    text = _run(cmd, log, threads)
    return {"steps": parse_train_log(text), "seconds": round(time.time() - t0, 1),
            "log": str(log)}


def score_and_eval(model: str | Path, images: str | Path, labels: str | Path, out: str | Path,
                   *, samples: int = 8, seed: int = 0, threads: int | None = 1) -> dict:
    """``evoq-data score`` (transformers engine, K samples) then ``evoq-data eval``; returns
    {"srcc", "plcc", "n", "parse_rate", "score_std", "seconds"} on the held-out images."""
    import time

    import pandas as pd

    from evoq_data.core.io import read_json

    out = Path(out)
    t0 = time.time()
    _run([_bin("evoq-data"), "score", "--images", str(images), "--model", str(model),
          "--engine", "transformers", "--samples", str(samples), "--max-tokens", "16",
          "--seed", str(seed), "--out", str(out / "scores.parquet"), "--quiet"],
         out / "score.log", threads)
    _run([_bin("evoq-data"), "eval", "--scores", str(out / "scores.parquet"),
          "--labels", f"heldout={labels}", "--out", str(out / "eval")], out / "eval.log", threads)
    wavg = read_json(out / "eval" / "metrics.json", "eval metrics")["wavg"]
    rows = pd.read_parquet(out / "scores.parquet")
    summary = pd.read_parquet(out / "scores.summary.parquet")
    return {"srcc": float(wavg["srcc"]), "plcc": float(wavg["plcc"]), "n": int(wavg["n"]),
            "parse_rate": float(rows["score"].notna().mean()),
            # spread of the per-image mean scores: ~0 when the answers collapsed to one value
            "score_std": float(summary["score_mean"].std()),
            "seconds": round(time.time() - t0, 1)}


def build_warm_model(out: str | Path, *, seed: int = 0, warmup_steps: int = 200,
                     warmup_lr: float = 3e-3, min_valid: float = 0.0,
                     threads: int | None = 1) -> float:
    """``python -m evoq_data.testing.tiny_vlm OUT --warmup-steps N [--warmup-min-valid F]``;
    returns seconds."""
    import sys
    import time

    t0 = time.time()
    _run([sys.executable, "-m", "evoq_data.testing.tiny_vlm", str(out), "--seed", str(seed),
          "--warmup-steps", str(warmup_steps), "--warmup-lr", str(warmup_lr),
          *(["--warmup-min-valid", str(min_valid)] if min_valid > 0 else [])],
         Path(f"{out}.log"), threads)
    return round(time.time() - t0, 1)
