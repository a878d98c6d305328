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

import hashlib
import json
import logging
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from . import __version__
from .engines import GenRequest, Sampling, get_engine
from .errors import EvoqError
from .parse import OK, parse_compare, parse_score
from .pool import PoolImage, check_image_bytes, load_pool
from .prompts import compare_prompt, score_prompt
from .schemas import SCHEMA_VERSION, SCORES_SCHEMA, write_parquet_atomic

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


def request_seed(*parts) -> int:
    """A request seed below 2**31 - 2**16 derived from its parts (so seed + i fits int32)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") % (2**31 - 2**16)


def summary_path(out: Path) -> Path:
    return out.with_name(out.stem + ".summary.parquet")


def manifest_path(out: Path) -> Path:
    return out.with_name(out.stem + ".manifest.json")


def _single_image(path: Path) -> PoolImage:
    try:
        data = path.read_bytes()
        w, h = check_image_bytes(data)
    except (OSError, ValueError) as exc:
        raise EvoqError(f"cannot read image {path}: {exc}") from exc
    return PoolImage(hashlib.sha256(data).hexdigest(), str(path.resolve()), w, h)


def images_of(source: str | Path, *, image_column: str = "image", split: str = "train",
              cache_dir: Path | None = None, quiet: bool = False) -> list[PoolImage]:
    """The images to score: one image file, a folder, or a HF dataset."""
    from .pool import scan_folder

    path = Path(source)
    if path.is_file():
        return [_single_image(path)]
    if path.is_dir() and len(files := scan_folder(path)) == 1:  # load_pool wants 2+ (pairs)
        return [_single_image(files[0])]
    pool, report = load_pool(source, image_column=image_column, split=split,
                             cache_dir=cache_dir, quiet=quiet)
    for skip in report.skipped:
        log.warning("skipped %s: %s", skip["path"], skip["reason"])
    return [PoolImage(im.image_id, str(Path(im.path).resolve()), im.width, im.height)
            for im in pool]


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


def _engine(engine: str, model: str | None, model_revision: str | None, options: dict | None):
    from .votes import model_revision_of

    if engine != "piqe" and not model:
        raise EvoqError(f"engine {engine!r} needs --model")
    revision = model_revision_of(model, model_revision, engine)
    return get_engine(engine, model, model_revision=revision, **(options or {}))


def run_score(images: str | Path, model: str | None, engine: str, out: str | Path, *,
              samples: int = 8, seed: int = 0, temperature: float = 1.0, top_p: float = 1.0,
              max_tokens: int = 1024, reasoning: bool = True, chunk_images: int = 32,
              image_column: str = "image", split: str = "train",
              model_revision: str | None = None, engine_options: dict | None = None,
              quiet: bool = False) -> dict:
    """The ``evoq-data score`` stage. Returns a summary with the paths written."""
    from tqdm.auto import tqdm

    if samples < 1:
        raise EvoqError(f"--samples must be at least 1, got {samples}")
    out = Path(out)
    pool = images_of(images, image_column=image_column, split=split,
                     cache_dir=out.parent / f"{out.stem}-images", quiet=quiet)
    prompt = score_prompt(reasoning)
    sampling = Sampling(temperature=temperature, top_p=top_p, max_tokens=max_tokens)
    eng = _engine(engine, model, model_revision, engine_options)
    cols = {name: [] for name in SCORES_SCHEMA.names}
    started = time.perf_counter()
    invalid = 0
    bar = tqdm(total=len(pool), desc="images", unit="img", disable=quiet, dynamic_ncols=True)
    try:
        for start in range(0, len(pool), max(chunk_images, 1)):
            chunk = pool[start : start + max(chunk_images, 1)]
            seeds = [request_seed("score", seed, im.image_id) for im in chunk]
            requests = [GenRequest(images=(im.path,), prompt=prompt, n=samples, seed=s,
                                   key=im.image_id) for im, s in zip(chunk, seeds, strict=True)]
            outputs = eng.generate(requests, sampling)
            created = datetime.now(UTC)
            for im, base, answers in zip(chunk, seeds, outputs, strict=True):
                if len(answers) != samples:
                    raise EvoqError(f"engine {engine} returned {len(answers)} answers for "
                                    f"n={samples} (image {im.path})")
                for i, raw in enumerate(answers):
                    value, status = parse_score(raw, reasoning)
                    invalid += status != OK
                    row = (im.image_id, im.path, i, raw, value, status, eng.model,
                           eng.model_revision, eng.name, prompt.prompt_id, prompt.sha256,
                           temperature, top_p, max_tokens, base + i, created, __version__)
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
    manifest = {
        "stage": "score", "schema_version": SCHEMA_VERSION, "evoq_version": __version__,
        "created_at": datetime.now(UTC).isoformat(), "source": str(images),
        "model": eng.model, "model_revision": eng.model_revision, "engine": eng.name,
        "prompt_id": prompt.prompt_id, "prompt_sha256": prompt.sha256,
        "prompt_template": prompt.template, "temperature": temperature, "top_p": top_p,
        "max_tokens": max_tokens, "seed": seed, "samples": samples, "reasoning": reasoning,
        "images": len(pool), "invalid_samples": invalid,
    }
    manifest_path(out).write_text(json.dumps(manifest, indent=2) + "\n")
    unscored = sum(1 for v in summary.column("score_mean").to_pylist() if v is None)
    return {"out": str(out), "summary": str(summary_path(out)),
            "manifest": str(manifest_path(out)), "images": len(pool),
            "samples": table.num_rows, "invalid_samples": invalid,
            "images_without_valid_score": unscored,
            "seconds": round(time.perf_counter() - started, 3)}


def run_compare(image_a: str | Path, image_b: str | Path, model: str | None, engine: str, *,
                votes: int = 8, seed: int = 0, temperature: float = 1.0, top_p: float = 1.0,
                max_tokens: int = 1024, reasoning: bool = True,
                model_revision: str | None = None, engine_options: dict | None = None) -> dict:
    """``evoq-data compare``: K votes on one pair, both shown orders. Returns the tally."""
    if votes < 1:
        raise EvoqError(f"--votes must be at least 1, got {votes}")
    a, b = _single_image(Path(image_a)), _single_image(Path(image_b))
    prompt = compare_prompt(reasoning)
    sampling = Sampling(temperature=temperature, top_p=top_p, max_tokens=max_tokens)
    n_ab, n_ba = votes - votes // 2, votes // 2
    requests = [GenRequest(images=(a.path, b.path), prompt=prompt, n=n_ab,
                           seed=request_seed("compare", seed, a.image_id, b.image_id, 0))]
    if n_ba:
        requests.append(GenRequest(images=(b.path, a.path), prompt=prompt, n=n_ba,
                                   seed=request_seed("compare", seed, a.image_id, b.image_id, 1)))
    eng = _engine(engine, model, model_revision, engine_options)
    try:
        outputs = eng.generate(requests, sampling)
    finally:
        eng.close()
    tally = {"a": 0, "b": 0, "invalid": 0}
    by_order = {"a_first": {"a": 0, "b": 0, "invalid": 0},
                "b_first": {"a": 0, "b": 0, "invalid": 0}}
    statuses: dict[str, int] = {}
    answers = []
    for order, names, raws in zip(("a_first", "b_first"), (("a", "b"), ("b", "a")), outputs,
                                  strict=False):
        for raw in raws:
            value, status = parse_compare(raw, reasoning)
            statuses[status] = statuses.get(status, 0) + 1
            who = "invalid" if value is None else names[value]
            tally[who] += 1
            by_order[order][who] += 1
            answers.append({"order": order, "raw_text": raw, "parse_status": status,
                            "winner": who})
    valid = tally["a"] + tally["b"]
    better = "a" if tally["a"] > tally["b"] else "b" if tally["b"] > tally["a"] else None
    return {
        "image_a": a.path, "image_b": b.path, "better": better,
        "better_path": {"a": a.path, "b": b.path}.get(better),
        "votes_a": tally["a"], "votes_b": tally["b"], "invalid_votes": tally["invalid"],
        "total_votes": votes, "vote_fraction_a": tally["a"] / valid if valid else None,
        "by_order": by_order, "parse_status": statuses, "model": eng.model,
        "engine": eng.name, "prompt_id": prompt.prompt_id, "answers": answers,
    }
