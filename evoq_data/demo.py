"""``evoq-data demo``: the whole data plane on photos that ship with scikit-image.

photos -> distort -> pairs --synthetic -> vote -> aggregate -> push --local-dir -> eval --prefs

Every step is the real stage function with its real files; nothing is downloaded. The default
judge is PIQE (CPU, no weights) made stochastic with ``random_crop=0.7`` (each vote scores a
seeded random crop keeping 70% of each side, so votes disagree as a sampling VLM's do and
agreement, ties and filters are exercised; ``--engine-arg random_crop=1`` scores whole
images, every vote the same), so a laptop runs the chain in well under a minute; give
``--engine transformers --model DIR`` (or vllm / openai) to let a VLM vote instead. The
pseudo-labels are then scored against the order the distortions are known to have.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from evoq_data.core.errors import EvoqError, require
from evoq_data.generation.spec import GenerationSpec

log = logging.getLogger(__name__)

# scikit-image photos that ship inside its wheel (the others are downloaded on first use).
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "camera", "coins",
          "clock", "moon")
DEMO_REPO_ID = "local/evoq-demo"
DEMO_RANDOM_CROP = 0.7  # the PIQE judge's default in the demo: votes that disagree


def demo_spec(spec: GenerationSpec | None) -> GenerationSpec:
    """The demo's judge: ``spec``, with PIQE's ``random_crop`` defaulting to 0.7."""
    import dataclasses

    spec = spec or GenerationSpec(engine="piqe")
    if spec.engine == "piqe" and "random_crop" not in spec.engine_args:
        spec = dataclasses.replace(spec, engine_args={**spec.engine_args,
                                                      "random_crop": DEMO_RANDOM_CROP})
    return spec


def write_photos(folder: Path, names=PHOTOS, size: int = 256) -> list[Path]:
    """Save scikit-image's bundled photos as RGB PNGs, the longer side resized to ``size``."""
    import numpy as np
    from PIL import Image

    data = require("skimage.data", "piqe")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        arr = np.asarray(getattr(data, name)())
        im = Image.fromarray(arr).convert("RGB")
        scale = size / max(im.size)
        if scale < 1:
            im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                           Image.Resampling.LANCZOS)
        path = folder / f"{name}.png"
        im.save(path)
        paths.append(path)
    return paths


def run_demo(out: str | Path = "evoq-demo", spec: GenerationSpec | None = None, *,
             votes_per_pair: int = 32, num_pairs: int | None = None, size: int = 256,
             photos: int | None = None, seed: int = 0, version: str = "v1",
             quiet: bool = False) -> dict:
    """Run the demo chain under OUT with the judge of ``spec`` (default: PIQE); return where
    everything is and the pseudo-label accuracy."""
    from evoq_data.aggregate.run import run_aggregate
    from evoq_data.evaluate.accuracy import run_label_accuracy
    from evoq_data.images.distort import run_distort
    from evoq_data.pairs.synthetic import run_synthetic_pairs
    from evoq_data.publish.push import run_push
    from evoq_data.votes.run import run_vote

    spec = demo_spec(spec)
    if photos is not None and not 1 <= photos <= len(PHOTOS):
        raise EvoqError(f"--photos must be in [1, {len(PHOTOS)}], got {photos}")
    names = PHOTOS[: photos] if photos else PHOTOS
    out = Path(out).resolve()
    if (out / "votes").exists():
        raise EvoqError(f"{out} already holds a demo run; remove it or give another --out")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    def lap(step: str) -> None:
        timings[step] = round(time.perf_counter() - sum(timings.values()) - t0, 2)
        log.info("demo: %s done in %.1fs", step, timings[step])

    write_photos(out / "photos", names, size)
    lap("photos")
    distorted = run_distort(out / "photos", out / "distorted", seed=seed, quiet=quiet)
    lap("distort")
    pairs = run_synthetic_pairs(out / "distorted", out / "pairs.parquet", num_pairs=num_pairs,
                                seed=seed)
    lap("pairs")
    votes = run_vote(out / "pairs.parquet", spec, out / "votes",
                     votes_per_pair=votes_per_pair, seed=seed, quiet=quiet)
    lap("vote")
    summary = {"out": str(out), "photos": str(out / "photos"), "references": len(names),
               "variants": distorted["variants"], "distorted": str(out / "distorted"),
               "pairs": str(out / "pairs.parquet"), "num_pairs": pairs["num_pairs"],
               "votes": str(out / "votes"), "num_votes": votes["votes"],
               "invalid_votes": votes["invalid_votes"], "engine": spec.engine,
               "model": spec.model or spec.engine}
    if spec.engine == "piqe":
        from evoq_data.generation.engines.piqe import piqe_model_name

        summary["model"] = piqe_model_name(spec.engine_args.get("random_crop"))
    run_aggregate(out / "votes", out / "prefs", quiet=quiet)
    summary["prefs"] = str(out / "prefs")
    lap("aggregate")
    if votes["invalid_votes"] < votes["votes"]:
        run_push(out / "prefs", DEMO_REPO_ID, version, local_dir=out / "dataset", quiet=quiet)
        summary["dataset"] = str(out / "dataset")
        summary["load_with"] = (f"datasets.load_dataset({str(out / 'dataset')!r}, "
                                f"'preferences', split='train')")
    else:  # push refuses a dataset without one valid vote (a random model's answers)
        log.warning("demo: not one valid vote (see %s): no dataset published",
                    out / "prefs" / "stats.md")
        summary["dataset"] = None
    lap("push")
    acc = run_label_accuracy(out / "prefs", str(out / "distorted"), out / "eval")
    lap("eval")
    summary.update(accuracy=acc["accuracy"], coverage=acc["result"]["coverage"],
                   decisive_pairs=acc["result"]["decisive"],
                   accuracy_by_distortion={k: v["accuracy"]
                                           for k, v in acc["result"]["by_group"].items()},
                   eval=str(out / "eval"), accuracy_table=acc["table"],
                   accuracy_plot=acc["plot"], markdown=acc["markdown"])
    summary["timings_s"] = timings
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    return summary
