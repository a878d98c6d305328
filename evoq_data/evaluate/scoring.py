"""Scoring one chunk of images and writing its part file: the one call both ``score``
runners (this process, :mod:`evoq_data.evaluate.score_ray`) make, so neither imports the
other's module and both stop each image at the same sample
(:mod:`evoq_data.evaluate.score_stop`)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from evoq_data import __version__
from evoq_data.core.errors import EvoqError
from evoq_data.core.ids import request_seed
from evoq_data.core.io import write_parquet_atomic
from evoq_data.core.schemas import SCORES_SCHEMA
from evoq_data.evaluate.score_stop import ScoreStop, stop_reason
from evoq_data.generation.engines import GenRequest
from evoq_data.generation.parse import parse_score
from evoq_data.generation.spec import GenerationSpec

PARTS_GLOB = "scores-*.parquet"


def write_part(table: pa.Table, parts: Path) -> Path:
    ids = ",".join(sorted(set(table.column("image_id").to_pylist())))
    final = parts / f"scores-{hashlib.sha256(ids.encode()).hexdigest()[:16]}.parquet"
    return write_parquet_atomic(table, final)


def score_chunk(eng, chunk, spec: GenerationSpec, rule: ScoreStop, seed: int) -> pa.Table:
    """Every sample ``rule`` asks of each image of ``chunk``, as SCORES_SCHEMA rows.

    An image's samples are asked in waves of ``rule.wave`` (all K at once with ``--stop
    fixed``), one request per image still going; sample i is drawn with seed base + i, the
    base derived from (seed, image id, K) alone, so an image's samples are the first n of
    its full-K run whatever the chunk, the runner or the other images' stops."""
    prompt, sampling, k = spec.score_prompt, spec.sampling, rule.samples
    seeds = [request_seed("score", seed, im.image_id, n=k) for im in chunk]
    got: list[list[tuple]] = [[] for _ in chunk]  # (raw, value, status) per sample
    active = list(range(len(chunk)))
    while active:
        start = len(got[active[0]])  # every image still going has asked the same waves
        end = min(start + rule.wave, k)
        # asked_again: a wave with waves left may ask the image again, so an engine that
        # keeps a prompt's prefill between calls (transformers) keeps this one
        requests = [GenRequest(images=(chunk[i].path,), prompt=prompt, n=end - start,
                               seed=seeds[i] + start, image_ids=(chunk[i].image_id,),
                               key=chunk[i].image_id, asked_again=end < k) for i in active]
        outputs = eng.generate(requests, sampling)
        if len(outputs) != len(requests):
            raise EvoqError(f"engine {spec.engine} answered {len(outputs)} of "
                            f"{len(requests)} requests")
        going = []
        for i, req, answers in zip(active, requests, outputs, strict=True):
            if len(answers) != req.n:
                raise EvoqError(f"engine {spec.engine} returned {len(answers)} answers "
                                f"for n={req.n} (image {chunk[i].path})")
            got[i] += [(raw, *parse_score(raw, spec.reasoning)) for raw in answers]
            valid = [value for _, value, _ in got[i] if value is not None]
            if stop_reason(valid, end, rule) is None:
                going.append(i)
        active = going
    created = datetime.now(UTC)
    cols = {name: [] for name in SCORES_SCHEMA.names}
    for im, base, answers in zip(chunk, seeds, got, strict=True):
        for i, (raw, value, status) in enumerate(answers):
            row = (im.image_id, im.path, i, raw, value, status, eng.model,
                   eng.model_revision, eng.name, prompt.prompt_id, prompt.sha256,
                   sampling.temperature, sampling.top_p, sampling.max_tokens,
                   base + i, created, __version__)
            for name, v in zip(SCORES_SCHEMA.names, row, strict=True):
                cols[name].append(v)
    return pa.table(cols, schema=SCORES_SCHEMA)
