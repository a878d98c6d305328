"""``evoq-data score`` (K scores per image) and ``evoq-data compare`` (one pair, K votes).

score: every image gets K samples of the paper's score prompt (reasoning suffix on by
default). Each sample is one row of ``scores.parquet`` (SCORES_SCHEMA, raw text kept, invalid
answers with a null score and their parse status). ``<stem>.summary.parquet`` holds one row per
image: the mean of its valid samples (self-consistency), their standard deviation (N-1; null
below two valid samples), and the valid / invalid counts. ``<stem>.manifest.json`` records the
run. The seed of an image's requests derives from (seed, image_id) alone.

compare: K votes with the compare prompt, half in each shown order (the odd one in the given
order), counted back to the two images.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from evoq_data import __version__
from evoq_data.core.errors import EvoqError
from evoq_data.core.ids import request_seed
from evoq_data.core.io import write_parquet_atomic
from evoq_data.core.manifests import manifest_path, new_manifest, write_manifest
from evoq_data.core.schemas import SCORES_SCHEMA
from evoq_data.generation.engines import GenRequest
from evoq_data.generation.parse import OK, parse_score
from evoq_data.generation.spec import GenerationSpec, open_engine
from evoq_data.images.pool import images_of

log = logging.getLogger(__name__)

SUMMARY_SCHEMA = pa.schema([
    ("image_id", pa.string()),
    ("image_path", pa.string()),
    ("score_mean", pa.float64()),   # mean of the valid samples; null when none is valid
    ("score_std", pa.float64()),    # sample std (N-1) of the valid samples; null below 2
    ("valid_samples", pa.int64()),
    ("invalid_samples", pa.int64()),
    ("total_samples", pa.int64()),
])
SUMMARY_COLUMNS = tuple(SUMMARY_SCHEMA.names)




def summary_path(out: Path) -> Path:
    return out.with_name(out.stem + ".summary.parquet")








def summarize(scores: pa.Table) -> pa.Table:
    """Per-image summary of a per-sample scores table (SUMMARY_SCHEMA)."""
    by_image: dict[str, dict] = {}
    for image_id, path, score in zip(scores.column("image_id").to_pylist(),
                                     scores.column("image_path").to_pylist(),
                                     scores.column("score").to_pylist(), strict=True):
        entry = by_image.setdefault(image_id, {"path": path, "valid": [], "invalid": 0})
        if score is None:
            entry["invalid"] += 1
        else:
            entry["valid"].append(score)
    cols = {name: [] for name in SUMMARY_COLUMNS}
    for image_id, e in by_image.items():
        valid = np.asarray(e["valid"], dtype=np.float64)
        values = (image_id, e["path"], float(valid.mean()) if valid.size else None,
                  float(valid.std(ddof=1)) if valid.size >= 2 else None, int(valid.size),
                  e["invalid"], int(valid.size) + e["invalid"])
        for name, value in zip(SUMMARY_COLUMNS, values, strict=True):
            cols[name].append(value)
    return pa.table(cols, schema=SUMMARY_SCHEMA)




def run_score(images: str | Path, spec: GenerationSpec, out: str | Path, *,
              samples: int = 8, seed: int = 0, chunk_images: int = 32,
              image_column: str = "image", split: str = "train", quiet: bool = False) -> dict:
    """The ``evoq-data score`` stage. Returns a summary with the paths written."""
    from tqdm.auto import tqdm

    if samples < 1:
        raise EvoqError(f"--samples must be at least 1, got {samples}")
    if chunk_images < 1:
        raise EvoqError(f"--chunk-images must be at least 1, got {chunk_images}")
    out = Path(out)
    pool = images_of(images, image_column=image_column, split=split,
                     cache_dir=out.parent / f"{out.stem}-images", quiet=quiet)
    prompt = spec.score_prompt
    sampling = spec.sampling
    eng = open_engine(spec)
    cols = {name: [] for name in SCORES_SCHEMA.names}
    started = time.perf_counter()
    invalid = 0
    bar = tqdm(total=len(pool), desc="images", unit="img", disable=quiet, dynamic_ncols=True)
    try:
        for start in range(0, len(pool), chunk_images):
            chunk = pool[start : start + chunk_images]
            seeds = [request_seed("score", seed, im.image_id, n=samples) for im in chunk]
            requests = [GenRequest(images=(im.path,), prompt=prompt, n=samples, seed=s,
                                   key=im.image_id, image_ids=(im.image_id,))
                        for im, s in zip(chunk, seeds, strict=True)]
            outputs = eng.generate(requests, sampling)
            created = datetime.now(UTC)
            for im, base, answers in zip(chunk, seeds, outputs, strict=True):
                if len(answers) != samples:
                    raise EvoqError(f"engine {spec.engine} returned {len(answers)} answers "
                                    f"for n={samples} (image {im.path})")
                for i, raw in enumerate(answers):
                    value, status = parse_score(raw, spec.reasoning)
                    invalid += status != OK
                    row = (im.image_id, im.path, i, raw, value, status, eng.model,
                           eng.model_revision, eng.name, prompt.prompt_id, prompt.sha256,
                           sampling.temperature, sampling.top_p, sampling.max_tokens,
                           base + i, created, __version__)
                    for name, v in zip(SCORES_SCHEMA.names, row, strict=True):
                        cols[name].append(v)
            bar.update(len(chunk))
            bar.set_postfix(invalid=invalid)
    finally:
        bar.close()
        eng.close()
    table = pa.table(cols, schema=SCORES_SCHEMA)
    write_parquet_atomic(table, out)
    summary = summarize(table)
    write_parquet_atomic(summary, summary_path(out))
    manifest = new_manifest(
        "score", source=str(images), model=eng.model, model_revision=eng.model_revision,
        engine=eng.name, prompt_id=prompt.prompt_id, prompt_sha256=prompt.sha256,
        prompt_template=prompt.template, temperature=sampling.temperature,
        top_p=sampling.top_p, max_tokens=sampling.max_tokens, seed=seed, samples=samples,
        reasoning=spec.reasoning, images=len(pool), invalid_samples=invalid)
    write_manifest(out, manifest)
    unscored = sum(1 for v in summary.column("score_mean").to_pylist() if v is None)
    return {"out": str(out), "summary": str(summary_path(out)),
            "manifest": str(manifest_path(out)), "images": len(pool),
            "samples": table.num_rows, "invalid_samples": invalid,
            "images_without_valid_score": unscored,
            "seconds": round(time.perf_counter() - started, 3)}
