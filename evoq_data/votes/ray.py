"""``evoq-data vote --runner ray``: the same votes, voted by a pool of Ray actors.

The driver (the ``evoq-data vote`` process) does everything it does for the local runner
before and after voting (:func:`evoq_data.votes.run.run_vote`): it checks the settings,
claims the manifest, holds the shard lock and finds the pairs still to vote. The
:class:`RayRunner` then hands the chunks of ``--chunk-pairs`` pairs to Ray Data, one block
per chunk (:func:`ray.data.from_arrow`), and maps them over a fixed pool of ``--workers``
actors (:class:`VoteWorker`). Each actor gets the run's
:class:`~evoq_data.votes.core.VoteJob`, opens one evoq engine from it when it starts and, per
chunk, calls the same :meth:`~evoq_data.votes.core.VoteJob.vote` as the local runner, so the
votes are the same, row for row (all but ``created_at``).

**The actor writes the shard file** (:func:`~evoq_data.votes.store.write_shard`: temp file,
fsync, rename, named after the chunk's pair ids) and returns only its
:class:`~evoq_data.votes.core.ChunkDone` (Ray carries it pickled, as itself). The
actors must read the pairs' image files anyway, so VOTES_DIR on the same shared filesystem
costs nothing more, and the votes never travel through the object store or queue up in the
driver. Faults:

* an actor killed mid-chunk leaves at most a temp file: Ray restarts it and runs the chunk
  again (Ray Data's actor fault tolerance). Ray Data retries without end; a chunk that
  kills its worker every time (out of memory, a broken image that crashes the backend)
  would loop, so each actor counts the attempts at a chunk in a file beside the shards and
  fails the run, naming the chunk's pairs, once the chunk has killed :data:`MAX_ATTEMPTS`
  workers;
* an actor killed after the rename but before its answer reached the driver: the retry
  writes the same votes under the same file name (the name is a hash of the chunk's pair
  ids), so nothing is doubled;
* the driver killed: Ray ends its actors with it; rerunning the same command skips the pairs
  on disk, as the local runner does, and the temp files left behind are removed under the
  shard lock.

The cluster session, the pool's plan and the Ray Data plumbing are those every Ray runner
shares (:mod:`evoq_data.generation.ray_session`). Ray is imported only inside the functions
here, so importing this module is free.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

from evoq_data.core.errors import EvoqError
from evoq_data.generation.engines import Engine
from evoq_data.generation.ray_session import (
    RayOptions,
    evoq_error_in,
    last_line,
    map_chunks,
    plan_pool,
    ray_session,
    require_ray,
    whole_chunks,
)
from evoq_data.votes.core import ChunkDone, VoteJob
from evoq_data.votes.store import attempts_file

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 4  # a chunk that killed its worker this many times fails the run


class VoteWorker:
    """One Ray actor: one engine, opened once; votes and writes whole chunks."""

    def __init__(self, job: VoteJob, cwd: str) -> None:
        if cwd and os.path.isdir(cwd):
            os.chdir(cwd)  # a relative --model means what it means to the driver
        self.job = job
        self.engine = job.open_engine()

    def _attempt(self, chunk: int, pairs: list[dict]) -> None:
        """Count an attempt at ``chunk`` in a temp file of this shard (removed with the
        other temp files when the run ends or starts); refuse one attempt too many."""
        job = self.job
        path = attempts_file(job.votes_dir, job.shard_index, job.num_shards, chunk)
        try:
            attempts = int(path.read_text() or 0) + 1
        except (FileNotFoundError, ValueError):
            attempts = 1
        if attempts > MAX_ATTEMPTS:
            raise EvoqError(
                f"the Ray worker voting the chunk of pairs {pairs[0]['pair_id']} .. "
                f"{pairs[-1]['pair_id']} died {MAX_ATTEMPTS} times (out of memory? see the "
                "Ray logs); the chunks written are kept: fix the cause and rerun to resume")
        path.write_text(str(attempts))

    def vote_chunk(self, chunk: int, pairs: list[dict]) -> ChunkDone:
        """Vote chunk number ``chunk`` and write its shard file."""
        return self.job.vote(self.engine, pairs)

    def __call__(self, batch) -> dict:
        import numpy as np

        done = []
        for chunk, pairs in whole_chunks(batch):
            self._attempt(chunk, pairs)
            done.append(self.vote_chunk(chunk, pairs))
        out = np.empty(len(done), dtype=object)  # ChunkDone objects, pickled by Ray as is
        out[:] = done
        return {"done": out}

    def __del__(self) -> None:
        from evoq_data.generation.engines import close_quietly

        close_quietly(getattr(self, "engine", None))


class RayRunner:
    """Votes on a pool of Ray actors (settings: :class:`RayOptions`). Ray is imported (or
    its absence reported in one line) when the runner is made, before anything is
    written."""

    name = "ray"

    def __init__(self, options: RayOptions | None = None, *, quiet: bool = False) -> None:
        require_ray()
        self.options = options or RayOptions()
        self.options.check()
        self.quiet = quiet

    def vote(self, job: VoteJob, chunks: list[list[dict]],
             engine: Engine | None = None) -> Iterator[ChunkDone]:
        """Vote ``chunks`` on the cluster; yield one :class:`ChunkDone` per chunk written,
        as the chunks complete. ``engine`` (one the driver opened) is not used: each actor
        opens its own.

        Ray is joined or started at the first ``next()`` and stopped (a cluster started
        here) or left when the generator finishes or is closed."""
        with ray_session(self.options, quiet=self.quiet) as ray:
            yield from _vote_on_cluster(ray, job, chunks, self.options)


def _vote_on_cluster(ray, job: VoteJob, chunks: list[list[dict]],
                     options: RayOptions) -> Iterator[ChunkDone]:
    spec = job.spec
    plan = plan_pool(options, spec.engine, spec.engine_args, ray.cluster_resources())
    workers = min(plan.workers, len(chunks))  # an actor without a chunk would only load
    log.info("voting %d chunks on %d Ray worker(s), %g GPU and %g CPU each", len(chunks),
             workers, plan.gpus_per_worker, plan.cpus_per_worker)
    try:
        for batch in map_chunks(ray, chunks, VoteWorker, plan, workers, job=job,
                                cwd=os.getcwd()):
            yield from batch["done"]
    except Exception as exc:
        user = evoq_error_in(exc)
        if user is not None:
            raise EvoqError(user) from exc
        raise EvoqError(f"the Ray vote failed ({type(exc).__name__}: {last_line(exc)}); the "
                        "chunks written are kept: rerun the same command to resume") from exc
