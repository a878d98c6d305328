"""The work an evolve run does in its own process, each a named function run as its own step
(recorded in state.json with its outputs hashed like a child's), and the readers of what a
step's command or summary depends on (they read, never write).

Work: choosing the references of a round's synthetic pairs, mixing the random and synthetic
pairs into one pairs file, linking the eval images, and removing the incomplete checkpoints
a killed training left. Readers: how many synthetic pairs a distorted folder gives, how
many eval images got a valid score, whether a round's votes gave any pseudo-label, the
metrics of an eval, how many of a round's pairs have a known order in --pool-labels and the
pseudo-label accuracy measured against it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

from evoq_data.core.errors import EvoqError

SYNTHETIC_PAIRS_PER_REFERENCE = 75  # 5 distortion types x C(6, 2) pairs of one reference
METRIC_KEYS = ("n", "srcc", "plcc", "plcc_logistic", "undefined")
ACCURACY_KEYS = ("accuracy", "correct", "decisive", "coverage", "with_truth", "undecided",
                 "no_truth", "truth_ties")


# --- work --------------------------------------------------------------------------------

def choose_references(pairs: Path, out: Path, *, base: Path, synthetic_pairs: int,
                      seed: int) -> dict:
    """Links in ``out`` to a seeded random subset of the images of a pairs file (its
    relative paths are relative to ``base``): enough references for about twice
    ``synthetic_pairs`` pairs (75 pairs a reference)."""
    import numpy as np
    import pyarrow.parquet as pq

    table = pq.read_table(pairs)
    images = {}
    for side in ("a", "b"):
        images.update(zip(table.column(f"image_{side}_id").to_pylist(),
                          table.column(f"image_{side}_path").to_pylist(), strict=True))
    ids = sorted(images)
    want = min(len(ids), max(1, math.ceil(2 * synthetic_pairs / SYNTHETIC_PAIRS_PER_REFERENCE)))
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    for n, i in enumerate(sorted(rng.choice(len(ids), want, replace=False))):
        target = Path(images[ids[i]])
        target = target if target.is_absolute() else (base / target).resolve()
        os.symlink(os.path.relpath(target, out), out / f"{n:05d}-{target.name}")
    return {"references": want, "images": len(ids)}


def mix_pairs(random_: Path, synthetic: Path, out: Path, *, names: tuple[str, str]) -> dict:
    """One pairs file: the random pairs, then the synthetic ones (one VOTES_DIR, so one
    aggregate and one dataset version per round); ``names`` are the two parts' paths as the
    manifest records them."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from evoq_data.core.ids import file_sha256
    from evoq_data.core.manifests import read_manifest
    from evoq_data.core.schemas import PAIRS_SCHEMA
    from evoq_data.pairs.sample import write_pairs

    parts = [pq.read_table(p).select(PAIRS_SCHEMA.names).cast(PAIRS_SCHEMA)
             for p in (random_, synthetic)]
    table = pa.concat_tables(parts)
    ids = table.column("pair_id").to_pylist()
    first: dict[str, int] = {}
    for i, pid in enumerate(ids):
        first.setdefault(pid, i)
    duplicates = len(ids) - len(first)
    if duplicates:
        table = table.take(pa.array(sorted(first.values())))
    assert pc.count_distinct(table.column("pair_id")).as_py() == table.num_rows
    rm = read_manifest(random_, "pairs manifest")
    write_pairs(table, out, {
        "source": rm.get("source"), "seed": rm.get("seed"), "pool": rm.get("pool"),
        "possible_pairs": rm.get("possible_pairs"),
        "mixed": {"random": {"file": names[0], "pairs": parts[0].num_rows,
                             "sha256": file_sha256(random_)},
                  "synthetic": {"file": names[1], "pairs": parts[1].num_rows,
                                "sha256": file_sha256(synthetic)},
                  "duplicates_dropped": duplicates}})
    return {"pairs": table.num_rows, "duplicates_dropped": duplicates}


def link_eval_images(root: Path, sets: dict[str, Path]) -> dict:
    """``root/<name>/<n>-<file>``: a link to every image of each eval labels manifest, so
    one ``evoq-data score`` call scores exactly those images."""
    from .config import eval_images

    counts = {}
    for name, labels in sets.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        images = eval_images(labels)
        for n, image in enumerate(images):
            link = folder / f"{n:05d}-{image.name}"
            target = os.path.relpath(image.resolve(), folder)  # a moved run keeps its links
            if link.is_symlink() and os.readlink(link) == target:
                continue
            link.unlink(missing_ok=True)
            os.symlink(target, link)
        counts[name] = len(images)
    return {"images": counts}


def drop_incomplete_checkpoints(model_dir: Path) -> dict:
    """Remove the ``checkpoint-N`` folders of a training output that were not saved
    completely (the trainer writes trainer_state.json last), so training resumes from the
    last complete one; return the complete and the removed ones."""
    complete, removed = [], []
    for ckpt in sorted(model_dir.glob("checkpoint-*")):
        try:
            json.loads((ckpt / "trainer_state.json").read_text())
            complete.append(ckpt.name)
        except (OSError, json.JSONDecodeError):
            shutil.rmtree(ckpt, ignore_errors=True)
            removed.append(ckpt.name)
    return {"complete": complete, "removed": removed}


# --- readers -----------------------------------------------------------------------------

def available_synthetic_pairs(distorted: Path) -> int:
    from evoq_data.pairs.synthetic import read_distortions, synthetic_pairs

    return synthetic_pairs(read_distortions(distorted)).num_rows


def scorable(summary: Path, sets: dict[str, Path]) -> dict[str, tuple[int, int]]:
    """Per eval set: (images with a valid mean score, images) in a scores summary."""
    import pyarrow.parquet as pq

    from evoq_data.core.ids import file_sha256

    from .config import eval_images

    rows = pq.read_table(summary, columns=["image_id", "score_mean"]).to_pylist()
    valid = {row["image_id"] for row in rows if row["score_mean"] is not None}
    out = {}
    for name, labels in sets.items():
        ids = {file_sha256(f) for f in eval_images(labels)}
        out[name] = (len(ids & valid), len(ids))
    return out


def check_pseudo_labels(stats_file: Path, r: int, *, prefs: str, votes: str) -> None:
    """One line when every vote of round r was invalid: no pair has a pseudo-label, so there
    is nothing to publish or train on."""
    from evoq_data.core.manifests import read_manifest

    stats = read_manifest(stats_file, "aggregate statistics")
    pairs = stats.get("pairs") or {}
    if pairs.get("kept") and pairs.get("without_valid_votes") == pairs.get("kept"):
        votes_ = stats.get("votes") or {}
        statuses = ", ".join(f"{k} {v}" for k, v in
                             sorted((votes_.get("by_parse_status") or {}).items()))
        raise EvoqError(
            f"every one of the {votes_.get('total')} votes of round {r} was invalid "
            f"({statuses}): no pair has a pseudo-label, nothing to publish or train on; "
            f"see {prefs}/stats.md and the raw answers in {votes}")


def read_metrics(metrics_json: Path) -> dict:
    """Per benchmark and their weighted average: n, SRCC, PLCC (raw and logistic)."""
    from evoq_data.core.io import read_json

    doc = read_json(metrics_json, "eval metrics")
    return {"benchmarks": {b["benchmark"]: {k: b.get(k) for k in METRIC_KEYS}
                           for b in doc["benchmarks"]},
            "wavg": {k: doc["wavg"].get(k) for k in METRIC_KEYS}}


def pairs_with_known_order(prefs: Path, labels: Path) -> int:
    """The pairs of a PREFS_DIR whose order --pool-labels knows (both images labelled, not
    a tie): with none, there is no accuracy to measure in that round."""
    import pyarrow.parquet as pq

    from evoq_data.evaluate.accuracy import truth_judge

    judge = truth_judge(str(labels))
    table = pq.read_table(prefs / "preferences.parquet", columns=["image_a_id", "image_b_id"])
    verdicts = (judge(a, b) for a, b in zip(table.column("image_a_id").to_pylist(),
                                            table.column("image_b_id").to_pylist(), strict=True))
    return sum(1 for v in verdicts if v is not None and v[0] != "tie")


def read_label_accuracy(accuracy_json: Path) -> dict:
    """Overall and per agreement bin: the pseudo-label accuracy ``evoq-data eval --prefs``
    wrote (counts and accuracy; ``None`` where no pair was decisive)."""
    from evoq_data.core.io import read_json

    doc = read_json(accuracy_json, "pseudo-label accuracy")
    return {**{k: doc.get(k) for k in ACCURACY_KEYS},
            "by_agreement": {b: {k: v.get(k) for k in ("decisive", "correct", "accuracy")}
                             for b, v in (doc.get("by_agreement") or {}).items()}}
