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

Ray is imported only inside the functions here, so importing this module is free.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from evoq_data.core.errors import EvoqError, require
from evoq_data.generation.engines import Engine
from evoq_data.generation.streams import stderr_silenced
from evoq_data.votes.core import ChunkDone, VoteJob
from evoq_data.votes.store import attempts_file

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 4  # a chunk that killed its worker this many times fails the run
LOCAL_OBJECT_STORE_BYTES = 256 * 2**20  # a started local cluster: chunks of pairs are small
GPU_ENGINES = ("transformers", "vllm")  # engines that use a GPU where there is one


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide ``--runner ray`` votes (None: decided from the cluster).

    address: ``None`` joins the cluster named by RAY_ADDRESS if set, else starts a local
    one; ``"auto"`` or ``host:port`` (or ``ray://host:port``) joins one; ``"local"`` always
    starts a new local cluster."""

    address: str | None = None
    workers: int | None = None
    gpus_per_worker: float | None = None
    cpus_per_worker: float | None = None

    def check(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise EvoqError(f"--workers must be at least 1, got {self.workers}")
        if self.gpus_per_worker is not None and not self.gpus_per_worker >= 0:
            raise EvoqError(f"--gpus-per-worker must be >= 0, got {self.gpus_per_worker}")
        if self.cpus_per_worker is not None and not self.cpus_per_worker >= 0:
            raise EvoqError(f"--cpus-per-worker must be >= 0, got {self.cpus_per_worker}")
        if self.address is not None and not self.address.strip():
            raise EvoqError("--ray-address is empty; give 'auto', 'local' or HOST:PORT")


def runner_options(runner: str, *, address: str | None, workers: int | None,
                   gpus_per_worker: float | None,
                   cpus_per_worker: float | None) -> RayOptions | None:
    """The CLI's runner options as :class:`RayOptions` (None for the local runner, which
    refuses them rather than ignoring them)."""
    given = {"--ray-address": address, "--workers": workers,
             "--gpus-per-worker": gpus_per_worker, "--cpus-per-worker": cpus_per_worker}
    if runner != "ray":
        named = [name for name, value in given.items() if value is not None]
        if named:
            raise EvoqError(f"{', '.join(named)} {'is' if len(named) == 1 else 'are'} for "
                            f"--runner ray (the runner is {runner!r})")
        return None
    options = RayOptions(address=address, workers=workers, gpus_per_worker=gpus_per_worker,
                         cpus_per_worker=cpus_per_worker)
    options.check()
    return options


def require_ray():
    """Import Ray (and Ray Data), or fail in one line naming the extra to install."""
    ray = require("ray", "ray")
    require("ray.data", "ray")
    return ray


def _parallel_gpus(engine: str, engine_args: dict) -> int:
    """GPUs one vLLM engine spans (tensor x pipeline parallel); 1 for the others."""
    if engine != "vllm":
        return 1
    size = 1
    for key in ("tensor_parallel_size", "pipeline_parallel_size"):
        value = engine_args.get(key, 1)
        if not isinstance(value, int) or value < 1:
            raise EvoqError(f"--engine-arg {key} must be a positive integer, got {value!r}")
        size *= value
    return size


@dataclass(frozen=True)
class PoolPlan:
    """The actor pool a run gets on the cluster it joined."""

    workers: int
    gpus_per_worker: float
    cpus_per_worker: float
    cluster_cpus: float
    cluster_gpus: float


def plan_pool(options: RayOptions, engine: str, engine_args: dict,
              resources: dict) -> PoolPlan:
    """Actors and resources per actor, checked against the cluster's ``resources`` (a fixed
    pool larger than the cluster would wait forever: refused instead)."""
    cpus_total = float(resources.get("CPU", 0))
    gpus_total = float(resources.get("GPU", 0))
    span = _parallel_gpus(engine, engine_args)
    gpus = options.gpus_per_worker
    if gpus is None:
        gpus = float(span) if engine in GPU_ENGINES and gpus_total > 0 else 0.0
    if span > 1 and gpus < span:
        raise EvoqError(f"--engine-arg tensor_parallel_size x pipeline_parallel_size = {span} "
                        f"needs --gpus-per-worker {span} (got {gpus:g})")
    cpus = 1.0 if options.cpus_per_worker is None else options.cpus_per_worker
    workers = options.workers
    if workers is None:  # as many as the cluster holds
        fits = [int(gpus_total // gpus)] if gpus > 0 else []
        fits += [int(cpus_total // cpus)] if cpus > 0 else []
        workers = max(1, min(fits)) if fits else 1
    for name, per, total in (("GPU", gpus, gpus_total), ("CPU", cpus, cpus_total)):
        if workers * per > total + 1e-9:
            raise EvoqError(
                f"the Ray cluster has {total:g} {name}(s) but --workers {workers} x "
                f"--{name.lower()}s-per-worker {per:g} needs {workers * per:g}; "
                f"use fewer workers or a bigger cluster")
    return PoolPlan(workers, gpus, cpus, cpus_total, gpus_total)


@contextmanager
def _quiet_ray(quiet: bool):
    """With ``quiet``, no line of Ray's own on stderr while this process runs Ray: its
    Python loggers (the token-authentication notice, the cluster start) below ERROR, and
    what its native core worker writes to stderr dropped (Ray keeps it in its session logs,
    ``/tmp/ray/session_latest/logs``). The run's own error is raised, and printed after."""
    if not quiet:
        yield
        return
    logger = logging.getLogger("ray")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with stderr_silenced():
            yield
    finally:
        logger.setLevel(level)


@contextmanager
def ray_session(options: RayOptions, quiet: bool = False):
    """Connect to (or start) the Ray cluster of ``options``; yield the ``ray`` module.

    A cluster this call started is stopped on exit, and a cluster it joined is left. When
    this process is already connected to Ray (a notebook, the test-suite), that connection is
    used as it is and left open. ``quiet``: no line of Ray's own on stderr (the workers' logs
    are not forwarded, and see :func:`_quiet_ray`)."""
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    address = options.address
    if address is None:
        address = os.environ.get("RAY_ADDRESS") or "local"
    kwargs: dict = {"log_to_driver": not quiet, "configure_logging": False}
    if address == "local":
        # a light single-node cluster: no dashboard, a small object store (chunks of pairs
        # and one-row summaries are all that travel), no usage report
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        kwargs.update(num_cpus=os.cpu_count() or 1, include_dashboard=False,
                      object_store_memory=LOCAL_OBJECT_STORE_BYTES)
    with _quiet_ray(quiet):
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise EvoqError(
                f"cannot start or join the Ray cluster at --ray-address {address} "
                f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from exc
        try:
            yield ray
        finally:
            ray.shutdown()


def _evoq_error_in(exc: BaseException) -> str | None:
    """The message of the EvoqError an actor raised, found in the exceptions Ray wraps it in
    (as a cause where Ray keeps it, else in the remote traceback Ray carries as text: Ray
    Data wraps user errors in a UserCodeException whose own cause does not cross processes).
    """
    seen: set[int] = set()
    stack: list = [exc]
    texts = []
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        cause = getattr(e, "cause", None)
        if isinstance(cause, EvoqError):
            return str(cause)
        if isinstance(e, EvoqError) and cause is None:
            return str(e)
        texts.append(str(e))
        stack += [cause, e.__cause__, e.__context__]
    for text in texts:
        found = re.findall(r"EvoqError: (.+)", _ANSI.sub("", text))
        if found:
            return found[-1].strip()
    return None


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


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

        chunk_ids = batch.column("_chunk").to_pylist()
        rows = batch.drop_columns(["_chunk"]).to_pylist()
        done = []
        for chunk in dict.fromkeys(chunk_ids):  # whole chunks, in order
            pairs = [r for r, c in zip(rows, chunk_ids, strict=True) if c == chunk]
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
    import pyarrow as pa
    import ray.data

    spec = job.spec
    plan = plan_pool(options, spec.engine, spec.engine_args, ray.cluster_resources())
    workers = min(plan.workers, len(chunks))  # an actor without a chunk would only load
    log.info("voting %d chunks on %d Ray worker(s), %g GPU and %g CPU each", len(chunks),
             workers, plan.gpus_per_worker, plan.cpus_per_worker)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the driver shows its own bar of pairs
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # no chatter beside the bar
    tables = [pa.Table.from_pylist(chunk).append_column(
        "_chunk", pa.array([i] * len(chunk), pa.int64())) for i, chunk in enumerate(chunks)]
    ds = ray.data.from_arrow(tables)  # one block per chunk
    voted = ds.map_batches(
        VoteWorker, batch_size=None, batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=plan.cpus_per_worker, num_gpus=plan.gpus_per_worker,
        fn_constructor_kwargs=dict(job=job, cwd=os.getcwd()))
    try:
        for batch in voted.iter_batches(batch_size=None, batch_format="numpy"):
            yield from batch["done"]
    except Exception as exc:
        user = _evoq_error_in(exc)
        if user is not None:
            raise EvoqError(user) from exc
        lines = [line.strip() for line in _ANSI.sub("", str(exc)).splitlines() if line.strip()]
        raise EvoqError(f"the Ray vote failed ({type(exc).__name__}: "
                        f"{lines[-1] if lines else 'no message'}); the chunks written are "
                        "kept: rerun the same command to resume") from exc
