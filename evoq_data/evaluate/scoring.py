"""Scoring one chunk of images and writing its part file: the one call both ``score``
runners (this process, :mod:`evoq_data.evaluate.score_ray`) make, so neither imports the
other's module."""

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
from evoq_data.generation.engines import GenRequest
from evoq_data.generation.parse import parse_score
from evoq_data.generation.spec import GenerationSpec

PARTS_GLOB = "scores-*.parquet"


def write_part(table: pa.Table, parts: Path) -> Path:
    ids = ",".join(sorted(set(table.column("image_id").to_pylist())))
    final = parts / f"scores-{hashlib.sha256(ids.encode()).hexdigest()[:16]}.parquet"
    return write_parquet_atomic(table, final)


def score_chunk(eng, chunk, spec: GenerationSpec, samples: int, seed: int) -> pa.Table:
    prompt, sampling = spec.score_prompt, spec.sampling
    seeds = [request_seed("score", seed, im.image_id, n=samples) for im in chunk]
    requests = [GenRequest(images=(im.path,), prompt=prompt, n=samples, seed=s,
                           image_ids=(im.image_id,),
                           key=im.image_id) for im, s in zip(chunk, seeds, strict=True)]
    outputs = eng.generate(requests, sampling)
    created = datetime.now(UTC)
    cols = {name: [] for name in SCORES_SCHEMA.names}
    for im, base, answers in zip(chunk, seeds, outputs, strict=True):
        if len(answers) != samples:
            raise EvoqError(f"engine {spec.engine} returned {len(answers)} answers "
                            f"for n={samples} (image {im.path})")
        for i, raw in enumerate(answers):
            value, status = parse_score(raw, spec.reasoning)
            row = (im.image_id, im.path, i, raw, value, status, eng.model,
                   eng.model_revision, eng.name, prompt.prompt_id, prompt.sha256,
                   sampling.temperature, sampling.top_p, sampling.max_tokens,
                   base + i, created, __version__)
            for name, v in zip(SCORES_SCHEMA.names, row, strict=True):
                cols[name].append(v)
    return pa.table(cols, schema=SCORES_SCHEMA)
