"""``evoq-data score`` (K scores per image) and ``evoq-data compare`` (one pair, K votes).

score: every image gets K samples of the paper's score prompt (reasoning suffix on by
default). Each sample is one row of ``scores.parquet`` (SCORES_SCHEMA, raw text kept, invalid
answers with a null score and their parse status). ``<stem>.summary.parquet`` holds one row per
image: the mean of its valid samples (self-consistency), their standard deviation (N-1; null
below two valid samples), and the valid / invalid counts. ``<stem>.manifest.json`` records the
run. The seed of an image's requests derives from (seed, image_id) alone, so a run resumed
from ``<stem>.parts/`` after a crash gives the uninterrupted result (see below). With
``--stop interval`` an image gets the first n of those K samples, n where its rule
(:mod:`evoq_data.evaluate.score_stop`) stops it.

compare: K votes with the compare prompt, half in each shown order (the odd one in the given
order), counted back to the two images.
"""

from __future__ import annotations

import logging
import shutil
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from evoq_data.core.errors import EvoqError
from evoq_data.core.io import create_json_exclusive, write_parquet_atomic
from evoq_data.core.manifests import manifest_path, new_manifest, read_manifest, write_manifest
from evoq_data.core.schemas import SCORES_SCHEMA
from evoq_data.evaluate.score_stop import ScoreStop, replay, score_stop
from evoq_data.evaluate.score_stream import check_score_schedule, stream_scores
from evoq_data.evaluate.scoring import PARTS_GLOB, score_chunk, write_part
from evoq_data.generation.parse import OK
from evoq_data.generation.spec import (
    GenerationSpec,
    check_model,
    engine_args_changes,
    open_engine,
)
from evoq_data.generation.streams import stdout_to_stderr
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
RUNNERS = ("local", "ray")
MAX_SAMPLES = 4096  # K scores per image; the paper's score prompt is asked 8 times




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




# --- resumable runs ----------------------------------------------------------------------
#
# While it runs, ``score`` keeps its samples in ``<stem>.parts/`` beside --out: one Parquet
# file per chunk holding every sample of each of its images, written to a temp file, fsynced
# and renamed into place (the vote store's rule), and ``settings.json``, claimed atomically
# before the engine loads. A rerun of the same command skips the images already there; a
# rerun with other settings is refused. At the end the parts are assembled in pool order into
# the documented files, and the folder is removed.

IDENTITY_FIELDS = ("model", "model_revision", "engine", "prompt_id", "prompt_sha256",
                   "temperature", "top_p", "max_tokens", "reasoning", "seed", "samples",
                   "stop", "wave", "width", "confidence")
# what a settings.json written before --stop existed meant: every sample of every image
OLD_DEFAULTS = {"stop": "fixed", "wave": None, "width": None, "confidence": None}


def parts_dir(out: Path) -> Path:
    return out.with_name(out.stem + ".parts")


def _claim_settings(parts: Path, settings: dict, out: Path) -> None:
    """Make ``settings`` those of ``parts`` (create-exclusive), or check them against the
    ones there, naming every field that differs."""
    path = parts / "settings.json"
    if create_json_exclusive(settings, path):
        return
    old = read_manifest(path, "score settings")
    was = {f: old.get(f, OLD_DEFAULTS.get(f)) for f in IDENTITY_FIELDS}
    diff = [f"{f}: {was[f]!r} -> {settings.get(f)!r}" for f in IDENTITY_FIELDS
            if was[f] != settings.get(f)]
    diff += engine_args_changes(old.get("engine_args"), settings["engine_args"])
    if diff:
        details = "; ".join(diff)
        raise EvoqError(f"{parts} holds the samples of an unfinished score run with other "
                        f"settings ({details}); rerun with those settings to finish it, or "
                        f"remove {parts} (or choose another --out) to start over")


@contextmanager
def _parts_lock(parts: Path, out: Path):
    import fcntl

    with open(parts / ".lock", "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise EvoqError(f"another `evoq-data score` is writing {out}; wait for it or "
                            "choose another --out") from None
        except OSError:
            log.warning("cannot lock %s; make sure no other score run uses --out %s", parts, out)
        yield


def _read_parts(parts: Path) -> dict[str, list[dict]]:
    """image_id -> its sample rows, from every complete part file."""
    rows: dict[str, list[dict]] = {}
    for part in sorted(parts.glob(PARTS_GLOB)):
        try:
            table = pq.read_table(part)
        except Exception as exc:  # noqa: BLE001 - any reader failure means a broken part
            raise EvoqError(f"score part {part} is unreadable ({exc}); remove it and rerun "
                            "(its images are scored again)") from exc
        for row in table.to_pylist():
            rows.setdefault(row["image_id"], []).append(row)
    return rows


def _samples_of(rows: list[dict], rule: ScoreStop, path: str,
                parts: Path) -> tuple[list[dict], str]:
    """An image's sample rows from the parts, in order, and its stop reason, checked:
    samples 0..n-1, n where its stop rule stops (K with ``--stop fixed``), else one line
    naming the folder."""
    rows = sorted(rows, key=lambda r: r["sample_index"])
    n = len(rows)
    if [r["sample_index"] for r in rows] == list(range(n)):
        used, reason = replay([r["score"] for r in rows], rule)
        if reason is not None and used == n:
            return rows, reason
    expected = rule.samples if rule.stop == "fixed" else \
        f"samples 0..n-1 ending where its --stop rule stops (at most {rule.samples})"
    raise EvoqError(f"{parts} holds {n} sample(s) of {path}, expected {expected}; remove "
                    f"{parts} and rerun")


def run_score(images: str | Path, spec: GenerationSpec, out: str | Path, *,
              samples: int = 8, seed: int = 0, chunk_images: int = 32,
              image_column: str = "image", split: str = "train", quiet: bool = False,
              runner: str = "local", ray_options=None, stop: str = "fixed",
              wave: int | None = None, width: float | None = None,
              confidence: float | None = None, schedule: str = "chunked") -> dict:
    """The ``evoq-data score`` stage. Returns a summary with the paths written.

    ``runner``: ``local`` scores in this process; ``ray`` on a pool of Ray actors
    (:mod:`evoq_data.evaluate.score_ray`, settings in ``ray_options``, a
    :class:`~evoq_data.generation.ray_session.RayOptions`), the same samples into the same parts.

    ``stop``: ``fixed`` (all ``samples`` per image, the paper) or ``interval`` (waves of
    ``wave`` samples until the t interval of the mean is narrower than ``width`` at
    ``confidence``; :mod:`evoq_data.evaluate.score_stop`).

    ``schedule``: ``chunked`` (a chunk's images ask each wave together) or ``streaming``
    (every image asks its next wave as soon as its last one is in, all images in flight;
    local runner, vllm and openai engines; :mod:`evoq_data.evaluate.score_stream`). Same
    rows either way.

    What the engine's libraries print goes to stderr while it runs (stdout is for the
    summary, :func:`~evoq_data.generation.streams.stdout_to_stderr`)."""
    if samples < 1:
        raise EvoqError(f"--samples must be at least 1, got {samples}")
    if samples > MAX_SAMPLES:
        raise EvoqError(f"--samples must be at most {MAX_SAMPLES}, got {samples}")
    rule = score_stop(samples, stop, wave=wave, width=width, confidence=confidence)
    if runner not in RUNNERS:
        raise EvoqError(f"unknown --runner {runner!r}; choose one of {', '.join(RUNNERS)}")
    if runner == "ray":
        from evoq_data.generation.ray_session import require_ray

        require_ray()  # or one line naming the extra, before anything is written
    elif ray_options is not None:
        raise EvoqError("Ray settings are for --runner ray, not --runner local")
    check_score_schedule(schedule, spec.engine, runner)
    with stdout_to_stderr():
        return _run_score(images, spec, out, rule=rule, seed=seed,
                          chunk_images=chunk_images, image_column=image_column, split=split,
                          quiet=quiet, runner=runner, ray_options=ray_options,
                          schedule=schedule)


def _scored_chunks(spec: GenerationSpec, revision: str, chunks: list[list], parts: Path,
                   rule: ScoreStop, seed: int, runner: str, ray_options, quiet: bool,
                   stack: ExitStack, schedule: str = "chunked"):
    """Score and write ``chunks``; yield (images, when its scoring began) per chunk. No
    chunk: no engine started."""
    if not chunks:
        return
    if runner == "ray":
        from evoq_data.evaluate.score_ray import score_on_ray

        yield from score_on_ray(spec, revision, chunks, parts, rule, seed, ray_options,
                                quiet)
        return
    eng = open_engine(spec, revision)
    stack.callback(eng.close)
    if schedule == "streaming":  # every image on its own clock, parts of len(chunks[0])
        started = time.time()
        todo = [im for chunk in chunks for im in chunk]
        for table in stream_scores(eng, todo, spec, rule, seed, len(chunks[0])):
            write_part(table, parts)
            yield len(set(table.column("image_id").to_pylist())), started
        return
    for chunk in chunks:
        started = time.time()
        write_part(score_chunk(eng, chunk, spec, rule, seed), parts)
        yield len(chunk), started


def _run_score(images, spec: GenerationSpec, out, *, rule: ScoreStop, seed: int,
               chunk_images: int, image_column: str, split: str, quiet: bool, runner: str,
               ray_options, schedule: str = "chunked") -> dict:
    from tqdm.auto import tqdm

    if chunk_images < 1:
        raise EvoqError(f"--chunk-images must be at least 1, got {chunk_images}")
    out = Path(out)
    if out.is_dir():
        raise EvoqError(f"--out {out} is a folder; give a .parquet file name")
    pool = images_of(images, image_column=image_column, split=split,
                     cache_dir=out.parent / f"{out.stem}-images", quiet=quiet)
    if not pool:
        raise EvoqError(f"no usable image in {images}")
    check_model(spec)
    prompt, sampling = spec.score_prompt, spec.sampling
    provenance = spec.provenance()
    settings = {"model": provenance["model"], "model_revision": provenance["model_revision"],
                "engine": spec.engine, "prompt_id": prompt.prompt_id,
                "prompt_sha256": prompt.sha256, "temperature": sampling.temperature,
                "top_p": sampling.top_p, "max_tokens": sampling.max_tokens,
                "reasoning": spec.reasoning, "seed": seed, "samples": rule.samples,
                **rule.identity(), "engine_args": provenance["engine_args"]}
    parts = parts_dir(out)
    started = time.perf_counter()
    _claim_settings(parts, settings, out)
    with ExitStack() as stack:
        stack.enter_context(_parts_lock(parts, out))
        for stale in parts.glob(".scores-*.tmp"):
            stale.unlink(missing_ok=True)
        done = _read_parts(parts)
        unique = list({im.image_id: im for im in pool}.values())
        todo = [im for im in unique if im.image_id not in done]
        already = len(unique) - len(todo)
        load_seconds = 0.0
        bar = stack.enter_context(tqdm(total=len(unique), initial=already, desc="images",
                                       unit="img", disable=quiet, dynamic_ncols=True))
        chunks = [todo[start : start + chunk_images] for start in range(0, len(todo),
                                                                        chunk_images)]
        loading, first, last = time.time(), None, None
        for n, began in _scored_chunks(spec, settings["model_revision"], chunks, parts,
                                       rule, seed, runner, ray_options, quiet, stack,
                                       schedule):
            first = began if first is None else min(first, began)
            last = time.time()
            bar.update(n)
        if first is not None:  # engine start (with Ray also the cluster's) to the first chunk
            load_seconds = max(0.0, first - loading)
        done = _read_parts(parts)
    # the last chunk to the engine's shutdown (the stack closes it; with Ray the actors' end)
    close_seconds = 0.0 if last is None else max(0.0, time.time() - last)
    # assemble, in pool order, each image's samples under the path it has now
    cols = {name: [] for name in SCORES_SCHEMA.names}
    model = model_revision = engine_name = None
    reasons: dict[str, int] = {}
    for im in pool:
        rows, reason = _samples_of(done.get(im.image_id, []), rule, im.path, parts)
        reasons[reason] = reasons.get(reason, 0) + 1
        for r in rows:
            r["image_path"] = im.path
            for name in SCORES_SCHEMA.names:
                cols[name].append(r[name])
        model, model_revision, engine_name = rows[0]["model"], rows[0]["model_revision"], \
            rows[0]["engine"]
    table = pa.table(cols, schema=SCORES_SCHEMA)
    invalid = sum(1 for v in table.column("parse_status").to_pylist() if v != OK)
    write_parquet_atomic(table, out)
    summary = summarize(table)
    write_parquet_atomic(summary, summary_path(out))
    manifest = new_manifest(
        "score", source=str(images), model=model, model_revision=model_revision,
        engine=engine_name, prompt_id=prompt.prompt_id, prompt_sha256=prompt.sha256,
        prompt_template=prompt.template, temperature=sampling.temperature,
        top_p=sampling.top_p, max_tokens=sampling.max_tokens, seed=seed, samples=rule.samples,
        **rule.identity(), reasoning=spec.reasoning, engine_args=settings["engine_args"],
        images=len(pool), samples_used=table.num_rows, invalid_samples=invalid)
    write_manifest(out, manifest)
    shutil.rmtree(parts, ignore_errors=True)
    unscored = sum(1 for v in summary.column("score_mean").to_pylist() if v is None)
    seconds = time.perf_counter() - started
    return {"out": str(out), "summary": str(summary_path(out)),
            "manifest": str(manifest_path(out)), "images": len(pool),
            "images_already_scored": already, "samples": table.num_rows,
            "samples_planned": rule.samples * len(pool),
            "samples_share": round(table.num_rows / (rule.samples * len(pool)), 4),
            "stop_reasons": dict(sorted(reasons.items())),
            "invalid_samples": invalid, "images_without_valid_score": unscored,
            "load_seconds": round(load_seconds, 3),
            "score_seconds": round(seconds - load_seconds - close_seconds, 3),
            "close_seconds": round(close_seconds, 3), "seconds": round(seconds, 3)}
