"""What ``evoq-data score --stop interval`` saves: samples, wall time and rank agreement with
known quality, against all K samples per image.

    python bench/score_cost.py                  # 9 photos x 3 distortions x 5 levels, K = 32
    python bench/score_cost.py --photos 3 --no-tiny

Two parts:

1. **Stochastic judge.** The demo's scikit-image photos, each with ``blur``, ``noise`` and
   ``jpeg`` at 5 levels (``evoq-data distort``; the distortions PIQE, which reads grey
   levels, can see), scored by PIQE with ``random_crop=0.7`` through ``score_chunk`` itself
   (the call both runners make), K = 32: ``fixed`` and ``interval`` at a few widths. One warm
   engine (PIQE's per-image block scores computed before timing), so the wall time (the least
   of ``--repeats`` runs, in both parts) is that of the judge calls and the stopping loop.
   Known quality: within each (photo, distortion) the
   reference and its 5 levels are in a known order; SRCC of the mean score against that
   order, averaged over the groups, and the largest change of an image's mean against the
   full-K mean.
2. **Engine path (tiny VLM, transformers).** A few images with the random tiny Qwen2.5-VL,
   K = 8, fixed against interval with waves of 2: its answers are gibberish, hence invalid,
   so no image can stop and the table shows what the waves cost when nothing stops (each
   wave is one more ``generate`` call).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def run_settings(eng, images, spec, rules, seed: int, chunk: int,
                 repeats: int = 1) -> list[dict]:
    """Score ``images`` under each rule; the wall time is the least of ``repeats`` runs (the
    rows are the same each time)."""
    from evoq_data.evaluate.scoring import score_chunk

    results = []
    for name, rule in rules:
        seconds = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            tables = [score_chunk(eng, images[i : i + chunk], spec, rule, seed)
                      for i in range(0, len(images), chunk)]
            seconds = min(seconds, time.perf_counter() - start)
        rows = [r for t in tables for r in t.to_pylist()]
        scores: dict[str, list[float]] = {}
        for r in rows:
            scores.setdefault(r["image_id"], [])
            if r["score"] is not None:
                scores[r["image_id"]].append(r["score"])
        means = {k: statistics.fmean(v) if v else None for k, v in scores.items()}
        results.append({"name": name, "samples": len(rows), "seconds": seconds,
                        "means": means, "planned": rule.samples * len(images)})
    return results


def group_srcc(means: dict[str, float], manifest: list[dict]) -> float:
    """Mean over (reference, distortion) groups of SRCC(mean score, -level)."""
    from scipy.stats import spearmanr

    groups: dict[tuple, list[dict]] = {}
    refs = {r["reference_id"]: r for r in manifest if r["distortion"] == "reference"}
    for r in manifest:
        if r["distortion"] != "reference":
            groups.setdefault((r["reference_id"], r["distortion"]), []).append(r)
    values = []
    for (ref, _), rows in groups.items():
        members = [refs[ref], *rows]
        values.append(spearmanr([means[m["image_id"]] for m in members],
                                [-m["level"] for m in members]).statistic)
    return statistics.fmean(values)


def table(results, manifest) -> str:
    full = results[0]
    lines = ["| setting | samples (per image) | share of K | wall s | share of wall | "
             "mean SRCC vs known order | largest change of an image's mean |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    n_images = len(full["means"])
    for res in results:
        change = max(abs(res["means"][k] - full["means"][k]) for k in full["means"])
        lines.append(f"| {res['name']} | {res['samples']:,} ({res['samples'] / n_images:.1f}) | "
                     f"{res['samples'] / res['planned']:.1%} | {res['seconds']:.2f} | "
                     f"{res['seconds'] / full['seconds']:.1%} | "
                     f"{group_srcc(res['means'], manifest):.4f} | {change:.3f} |")
    return "\n".join(lines)


def piqe_part(root: Path, args) -> str:
    import numpy as np
    import pyarrow.parquet as pq

    from evoq_data.demo import PHOTOS, write_photos
    from evoq_data.evaluate.score_stop import score_stop
    from evoq_data.generation.engines import get_engine
    from evoq_data.generation.spec import GenerationSpec
    from evoq_data.images.distort import MANIFEST_NAME, run_distort
    from evoq_data.images.pool import images_of

    write_photos(root / "photos", PHOTOS[: args.photos], 256)
    run_distort(root / "photos", root / "distorted", distortions=["blur", "noise", "jpeg"],
                seed=args.seed, quiet=True)
    manifest = pq.read_table(root / "distorted" / MANIFEST_NAME).to_pylist()
    images = images_of(root / "distorted", quiet=True)
    spec = GenerationSpec.from_options(engine="piqe",
                                       engine_arg=[f"random_crop={args.random_crop}"])
    eng = get_engine("piqe", None, random_crop=args.random_crop)
    for im in images:  # warm: block scores of every image, outside the timing
        eng.crop_piqe(im.path, np.random.default_rng(0))
    from evoq_data.evaluate.score_stop import interval_width

    interval_width([1.0, 2.0], 0.95)  # scipy's import, outside the timing
    rules = [("fixed (paper)", score_stop(args.k))]
    rules += [(f"interval W={w:g}", score_stop(args.k, "interval", wave=args.wave, width=w))
              for w in args.widths]
    results = run_settings(eng, images, spec, rules, args.seed, 64, args.repeats)
    head = (f"{len(images)} images ({args.photos} photos x 3 distortions x 5 levels + "
            f"references), PIQE random_crop={args.random_crop}, K = {args.k}, wave "
            f"{args.wave}, C = 0.95, wall time the least of {args.repeats} runs")
    return head + "\n\n" + table(results, manifest)


def tiny_part(root: Path, args) -> str:
    from evoq_data.demo import PHOTOS, write_photos
    from evoq_data.evaluate.score_stop import score_stop
    from evoq_data.generation.engines import get_engine
    from evoq_data.generation.spec import GenerationSpec
    from evoq_data.images.pool import images_of
    from evoq_data.testing.tiny_vlm import build_tiny_vlm

    model = str(build_tiny_vlm(root / "model"))
    write_photos(root / "tiny-photos", PHOTOS[: args.tiny_images], 128)
    images = images_of(root / "tiny-photos", quiet=True)
    spec = GenerationSpec.from_options(engine="transformers", model=model,
                                       max_tokens=args.tiny_max_tokens)
    eng = get_engine("transformers", model)
    rules = [("fixed (paper)", score_stop(8)),
             ("interval W=0.5, wave 2", score_stop(8, "interval", wave=2, width=0.5))]
    run_settings(eng, images[:1], spec, rules[:1], args.seed, 64)  # warm-up
    results = run_settings(eng, images, spec, rules, args.seed, 64, args.repeats)
    eng.close()
    lines = ["| setting | samples | wall s | share of wall |", "|---|---:|---:|---:|"]
    for res in results:
        lines.append(f"| {res['name']} | {res['samples']} | {res['seconds']:.2f} | "
                     f"{res['seconds'] / results[0]['seconds']:.1%} |")
    return (f"{len(images)} images, random tiny Qwen2.5-VL, K = 8, "
            f"{args.tiny_max_tokens} new tokens, wall time the least of {args.repeats} runs"
            "\n\n" + "\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=9)
    parser.add_argument("-k", type=int, default=32)
    parser.add_argument("--wave", type=int, default=4)
    parser.add_argument("--widths", type=float, nargs="+", default=[0.2, 0.1, 0.05])
    parser.add_argument("--random-crop", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="runs per setting (the least "
                        "wall time counts)")
    parser.add_argument("--tiny-images", type=int, default=3)
    parser.add_argument("--tiny-max-tokens", type=int, default=16)
    parser.add_argument("--no-tiny", action="store_true", help="skip part 2")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="evoq-score-cost-") as tmp:
        root = Path(tmp)
        print("## 1. stochastic judge\n\n" + piqe_part(root, args))
        if not args.no_tiny:
            print("\n## 2. engine path (tiny VLM)\n\n" + tiny_part(root, args))


if __name__ == "__main__":
    main()
