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


class ImageSamples:
    """One image's samples, asked wave by wave: the state both schedules drive (the chunked
    loop of :func:`score_chunk`, the streaming one of :mod:`evoq_data.evaluate.score_stream`),
    so both ask the same requests with the same seeds and stop at the same sample.

    Sample i is drawn with seed base + i, the base derived from (seed, image id, K) alone, so
    an image's samples are the first n of its full-K run whatever the chunk, the runner, the
    schedule or the other images' stops."""

    def __init__(self, image, spec: GenerationSpec, rule: ScoreStop, seed: int) -> None:
        self.image, self.spec, self.rule = image, spec, rule
        self.base = request_seed("score", seed, image.image_id, n=rule.samples)
        self.got: list[tuple] = []  # (raw, value, status) per sample

    def request(self) -> GenRequest:
        """The next wave's request. ``asked_again`` when a wave may follow it, so an engine
        that keeps a prompt's prefill between calls (transformers) keeps this one."""
        start = len(self.got)
        end = self.rule.next_end(start)
        return GenRequest(images=(self.image.path,), prompt=self.spec.score_prompt,
                          n=end - start, seed=self.base + start,
                          image_ids=(self.image.image_id,), key=self.image.image_id,
                          asked_again=end < self.rule.samples)

    def take(self, req: GenRequest, answers: list[str]) -> str | None:
        """Add a wave's answers; the stop reason if the image is done, else None."""
        if len(answers) != req.n:
            raise EvoqError(f"engine {self.spec.engine} returned {len(answers)} answers "
                            f"for n={req.n} (image {self.image.path})")
        self.got += [(raw, *parse_score(raw, self.spec.reasoning)) for raw in answers]
        valid = [value for _, value, _ in self.got if value is not None]
        return stop_reason(valid, len(self.got), self.rule)


def samples_table(eng, states: list[ImageSamples]) -> pa.Table:
    """The SCORES_SCHEMA rows of ``states``' samples, in their order."""
    created = datetime.now(UTC)
    cols = {name: [] for name in SCORES_SCHEMA.names}
    for st in states:
        prompt, sampling = st.spec.score_prompt, st.spec.sampling
        for i, (raw, value, status) in enumerate(st.got):
            row = (st.image.image_id, st.image.path, i, raw, value, status, eng.model,
                   eng.model_revision, eng.name, prompt.prompt_id, prompt.sha256,
                   sampling.temperature, sampling.top_p, sampling.max_tokens,
                   st.base + i, created, __version__)
            for name, v in zip(SCORES_SCHEMA.names, row, strict=True):
                cols[name].append(v)
    return pa.table(cols, schema=SCORES_SCHEMA)


def score_chunk(eng, chunk, spec: GenerationSpec, rule: ScoreStop, seed: int) -> pa.Table:
    """Every sample ``rule`` asks of each image of ``chunk``, as SCORES_SCHEMA rows.

    An image's samples are asked in waves of ``rule.wave`` (all K at once with ``--stop
    fixed``), one request per image still going, every image of the chunk in one engine
    call per wave (:class:`ImageSamples`)."""
    states = [ImageSamples(im, spec, rule, seed) for im in chunk]
    active = states
    while active:
        requests = [st.request() for st in active]
        outputs = eng.generate(requests, spec.sampling)
        if len(outputs) != len(requests):
            raise EvoqError(f"engine {spec.engine} answered {len(outputs)} of "
                            f"{len(requests)} requests")
        active = [st for st, req, answers in zip(active, requests, outputs, strict=True)
                  if st.take(req, answers) is None]
    return samples_table(eng, states)
