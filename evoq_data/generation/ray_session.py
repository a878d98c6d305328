"""Running engines on a Ray cluster: what the two Ray runners share (``evoq-data vote
--runner ray``, :mod:`evoq_data.votes.ray`; ``evoq-data score --runner ray``,
:mod:`evoq_data.evaluate.score_ray`).

* :class:`RayOptions` and :func:`runner_options`: the runner options of both commands,
  checked alike;
* :func:`ray_session`: join or start the cluster (quietly with ``--quiet``), stop a cluster
  it started;
* :func:`plan_pool`: the fixed pool of actors, one engine each, checked against the
  cluster's CPUs and GPUs;
* :func:`map_chunks` and :func:`whole_chunks`: chunks of rows sent to the pool through Ray
  Data, one block per chunk, and split back into whole chunks in an actor;
* :func:`evoq_error_in`: the one-line message of an EvoqError an actor raised, found in
  what Ray wraps it in.

No stage is known here: each runner brings its own actor class. Ray is imported only inside
the functions, so importing this module is free.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from evoq_data.core.errors import EvoqError, require
from evoq_data.generation.streams import stderr_silenced

LOCAL_OBJECT_STORE_BYTES = 256 * 2**20  # a started local cluster: chunks of rows are small
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


def evoq_error_in(exc: BaseException) -> str | None:
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


def last_line(exc: BaseException) -> str:
    """The last non-empty line of what Ray says about ``exc`` (colour codes removed)."""
    lines = [line.strip() for line in _ANSI.sub("", str(exc)).splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def map_chunks(ray, chunks: list[list[dict]], worker: type, plan: PoolPlan, workers: int,
               **constructor_kwargs) -> Iterator[dict]:
    """Send ``chunks`` (lists of rows) to a fixed pool of ``workers`` actors of class
    ``worker`` (made with ``constructor_kwargs``, each with ``plan``'s CPUs and GPUs); yield
    the batches (numpy) the actors return, as they complete.

    Each chunk is one Ray Data block (:func:`ray.data.from_arrow`) carrying its number in a
    ``_chunk`` column, so an actor gets whole chunks (:func:`whole_chunks`). Ray Data's own
    progress bars and log lines are off: the driver shows its own bar."""
    import pyarrow as pa
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    tables = [pa.Table.from_pylist(chunk).append_column(
        "_chunk", pa.array([i] * len(chunk), pa.int64())) for i, chunk in enumerate(chunks)]
    mapped = ray.data.from_arrow(tables).map_batches(
        worker, batch_size=None, batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=plan.cpus_per_worker, num_gpus=plan.gpus_per_worker,
        fn_constructor_kwargs=constructor_kwargs)
    yield from mapped.iter_batches(batch_size=None, batch_format="numpy")


def whole_chunks(batch) -> Iterator[tuple[int, list[dict]]]:
    """(chunk number, its rows) for each chunk of a batch :func:`map_chunks` sent, in
    order."""
    chunk_ids = batch.column("_chunk").to_pylist()
    rows = batch.drop_columns(["_chunk"]).to_pylist()
    for chunk in dict.fromkeys(chunk_ids):
        yield chunk, [r for r, c in zip(rows, chunk_ids, strict=True) if c == chunk]
