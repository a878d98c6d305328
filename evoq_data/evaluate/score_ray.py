"""``evoq-data score --runner ray``: the same samples, scored by a pool of Ray actors.

The Ray runner of ``vote`` over score's chunks, through the same session and pool
(:mod:`evoq_data.generation.ray_session`): the driver (the
``evoq-data score`` process) claims ``<stem>.parts/``, finds the images still to score and
assembles the files at the end, as for the local runner; the chunks of ``--chunk-images``
images go to Ray Data, one block per chunk, mapped over a fixed pool of ``--workers`` actors
(:class:`ScoreWorker`). Each actor opens one engine and, per chunk, calls the local runner's
own :func:`~evoq_data.evaluate.scoring.score_chunk` and writes the part file itself (temp file,
fsync, rename, named after the chunk's image ids), so the samples, and with ``--stop
interval`` where each image stops, are the local runner's, row for row but ``created_at``, and a retried chunk rewrites the same file. The cluster, the
pool's size and the errors actors raise are handled as for ``vote`` (same options, same
messages).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from evoq_data.core.errors import EvoqError
from evoq_data.evaluate.score_stop import ScoreStop
from evoq_data.generation.ray_session import (
    RayOptions,
    evoq_error_in,
    map_chunks,
    plan_pool,
    ray_session,
    whole_chunks,
)
from evoq_data.generation.spec import GenerationSpec, open_engine

log = logging.getLogger(__name__)


class ScoreWorker:
    """One Ray actor: one engine, opened once; scores and writes whole chunks."""

    def __init__(self, spec: GenerationSpec, revision: str, parts: str, rule: ScoreStop,
                 seed: int, cwd: str) -> None:
        if cwd and os.path.isdir(cwd):
            os.chdir(cwd)  # a relative --model means what it means to the driver
        self.spec, self.parts, self.rule, self.seed = spec, Path(parts), rule, seed
        self.engine = open_engine(spec, revision)

    def __call__(self, batch) -> dict:
        import numpy as np

        from evoq_data.evaluate.scoring import score_chunk, write_part
        from evoq_data.images.pool import PoolImage

        counts, starts = [], []
        for _, rows in whole_chunks(batch):
            images = [PoolImage(**r) for r in rows]
            starts.append(time.time())
            table = score_chunk(self.engine, images, self.spec, self.rule, self.seed)
            write_part(table, self.parts)
            counts.append(len(images))
        return {"images": np.array(counts), "started_at": np.array(starts)}

    def __del__(self) -> None:
        from evoq_data.generation.engines import close_quietly

        close_quietly(getattr(self, "engine", None))


def score_on_ray(spec: GenerationSpec, revision: str, chunks: list[list], parts: Path,
                 rule: ScoreStop, seed: int, options: RayOptions | None,
                 quiet: bool) -> Iterator[tuple[int, float]]:
    """Score ``chunks`` (lists of PoolImage) on the cluster, writing their part files into
    ``parts``; yield (images, when its actor began it) per chunk, as they complete."""
    import dataclasses

    options = options or RayOptions()
    options.check()
    with ray_session(options, quiet=quiet) as ray:
        plan = plan_pool(options, spec.engine, spec.engine_args, ray.cluster_resources())
        workers = min(plan.workers, len(chunks))
        rows = [[dataclasses.asdict(im) for im in chunk] for chunk in chunks]
        try:
            for batch in map_chunks(ray, rows, ScoreWorker, plan, workers, spec=spec,
                                    revision=revision, parts=str(parts.resolve()),
                                    rule=rule, seed=seed, cwd=os.getcwd()):
                for n, started in zip(batch["images"], batch["started_at"], strict=True):
                    yield int(n), float(started)
        except Exception as exc:
            user = evoq_error_in(exc)
            if user is not None:
                raise EvoqError(user) from exc
            raise EvoqError(f"the Ray score failed ({type(exc).__name__}); the chunks "
                            "written are kept: rerun the same command to resume") from exc
