"""``evoq-data vote``: ask the judge K times per pair, keep every raw answer.

The stage: check the settings (:mod:`evoq_data.votes.plan`), claim VOTES_DIR
(:mod:`evoq_data.votes.store`), find the pairs still to vote, and hand their chunks to a
runner: :class:`~evoq_data.votes.local.LocalRunner` (this process) or
:class:`~evoq_data.votes.ray.RayRunner` (a pool of Ray actors). Both vote each chunk through
the same core (:mod:`evoq_data.votes.core`) and report it as a
:class:`~evoq_data.votes.core.ChunkDone`; neither knows the other.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path

from evoq_data.core.errors import EvoqError
from evoq_data.core.ids import file_sha256
from evoq_data.core.manifests import new_manifest
from evoq_data.generation.ray_session import RayOptions
from evoq_data.generation.spec import GenerationSpec, check_model, open_engine
from evoq_data.generation.streams import stdout_to_stderr
from evoq_data.votes.core import ChunkDone, VoteJob
from evoq_data.votes.local import LocalRunner
from evoq_data.votes.plan import (
    VoteSettings,
    check_sharding,
    chunks_of,
    shard_of,
    vote_settings,
)
from evoq_data.votes.ray import RayRunner
from evoq_data.votes.store import (
    claim_manifest,
    done_pair_ids,
    read_pairs,
    release_manifest,
    remove_stale_temp_files,
    shard_lock,
)
from evoq_data.votes.stream import StreamRunner, check_schedule

RUNNERS = {"local": LocalRunner, "ray": RayRunner}


def vote_manifest(spec: GenerationSpec, settings: VoteSettings, *, pairs: str | Path,
                  num_shards: int, runner: str) -> dict:
    """The manifest of a VOTES_DIR voted with ``spec`` and ``settings``."""
    prompt, sampling = settings.prompt, spec.sampling
    provenance = spec.provenance()
    manifest = new_manifest(
        "vote", model=provenance["model"], model_revision=provenance["model_revision"],
        engine=spec.engine, prompt_id=prompt.prompt_id, prompt_sha256=prompt.sha256,
        prompt_template=prompt.template, temperature=sampling.temperature,
        top_p=sampling.top_p, max_tokens=sampling.max_tokens, seed=settings.seed,
        votes_per_pair=settings.votes_per_pair, order=settings.order, **settings.identity(),
        reasoning=spec.reasoning, engine_args=provenance["engine_args"],
        num_shards=num_shards, pairs_file=str(Path(pairs).resolve()),
        pairs_sha256=file_sha256(pairs), runner=runner)
    if spec.engine == "piqe":  # the stochastic judge is another judge: named as such
        from evoq_data.generation.engines.piqe import piqe_model_name

        manifest["model"] = piqe_model_name(spec.engine_args.get("random_crop"))
    return manifest


class _Tally:
    """The summary's counts, chunk by chunk, and its times: ``load_seconds`` from the
    runner's start to the first chunk a worker began voting (engine start and model load;
    with Ray also the cluster's and the actors' start), ``close_seconds`` from the last chunk
    written to the runner's end (the engine's shutdown; with Ray the actors' end),
    ``vote_seconds`` the rest: what the settings cost, start and shutdown apart."""

    def __init__(self, summary: dict, votes_per_pair: int) -> None:
        self.summary, self.k = summary, votes_per_pair
        self.started = time.time()
        self.first_chunk: float | None = None
        self.last_chunk: float | None = None

    def add(self, done: ChunkDone) -> None:
        if self.first_chunk is None or done.started_at < self.first_chunk:
            self.first_chunk = done.started_at
        self.last_chunk = time.time()
        s = self.summary
        s["pairs_voted"] += done.pairs
        s["votes"] += done.votes
        s["votes_planned"] += done.pairs * self.k
        for reason, n in done.stop_reasons.items():
            s["stop_reasons"][reason] = s["stop_reasons"].get(reason, 0) + n
        s["invalid_votes"] += done.invalid
        s["shards_written"] += 1

    def rate(self) -> float:
        """Votes per second since the first chunk began (the engine's load apart)."""
        since = self.started if self.first_chunk is None else self.first_chunk
        return self.summary["votes"] / max(time.time() - since, 1e-9)

    def times(self) -> dict:
        ended = time.time()
        seconds = ended - self.started
        load = seconds if self.first_chunk is None else self.first_chunk - self.started
        load = min(max(load, 0.0), seconds)
        close = 0.0 if self.last_chunk is None else min(max(ended - self.last_chunk, 0.0),
                                                        seconds - load)
        return {"load_seconds": round(load, 3), "vote_seconds": round(seconds - load - close, 3),
                "close_seconds": round(close, 3), "seconds": round(seconds, 3)}


def run_vote(pairs: str | Path, spec: GenerationSpec, out: str | Path, *,
             votes_per_pair: int | None = None, seed: int = 0, order: str = "random",
             num_shards: int = 1, shard_index: int = 0, chunk_pairs: int = 64,
             stop: str = "fixed", wave: int = 8, confidence: float | None = None,
             mode: str = "sample", quiet: bool = False, runner: str = "local",
             ray_options: RayOptions | None = None, schedule: str = "chunked") -> dict:
    """The ``evoq-data vote`` stage. Returns a summary (paths and counts).

    ``votes_per_pair``: K (default 32); in logprob mode 2 rows per pair, whatever K.
    ``runner``: ``local`` votes in this process; ``ray`` votes on a pool of Ray actors
    (:mod:`evoq_data.votes.ray`, settings in ``ray_options``). Both write the same votes into
    the same store; everything but the voting loop is shared. What the engines' libraries
    print goes to stderr while the stage runs (stdout is for the command's summary:
    :func:`~evoq_data.generation.streams.stdout_to_stderr`).

    ``schedule``: ``chunked`` asks each chunk's pairs wave by wave (every pair of a chunk
    waits for the wave's slowest answer); ``streaming`` keeps requests of all pairs in
    flight and asks a pair's next wave as soon as its last one is in
    (:mod:`evoq_data.votes.stream`; local runner, vllm engine). Same rows either way, so the
    schedule is not part of the manifest and a run may resume under the other."""
    from tqdm.auto import tqdm

    if runner not in RUNNERS:
        raise EvoqError(f"unknown --runner {runner!r}; choose one of {', '.join(RUNNERS)}")
    voter = RUNNERS[runner](ray_options, quiet=quiet)  # checked before anything is written
    check_schedule(schedule, spec.engine, runner, mode)
    if schedule == "streaming":
        voter = StreamRunner(ray_options, quiet=quiet)
    check_sharding(num_shards, shard_index, chunk_pairs)
    settings, spec = vote_settings(spec, votes_per_pair=votes_per_pair, seed=seed,
                                   order=order, stop=stop, wave=wave, confidence=confidence,
                                   mode=mode)
    rows = read_pairs(pairs)
    votes_dir = Path(out)
    if votes_dir.exists() and not votes_dir.is_dir():
        raise EvoqError(f"--out {votes_dir} is a file; VOTES_DIR must be a folder")
    check_model(spec)
    new_folder = not votes_dir.exists()
    manifest = vote_manifest(spec, settings, pairs=pairs, num_shards=num_shards, runner=runner)
    with ExitStack() as stack:  # closes the engine and releases the shard lock on any exit
        stack.enter_context(stdout_to_stderr())
        eng = None
        if spec.engine == "openai" and not spec.model:
            # the served model's id is known only once connected: record it, not "openai"
            eng = open_engine(spec, manifest["model_revision"])
            stack.callback(eng.close)
            manifest["model"] = eng.model
        # The manifest is claimed first (atomically, exclusively): a second worker with other
        # settings is refused before it loads an engine or writes a vote.
        claimed = claim_manifest(votes_dir, manifest)
        mine = [r for r in rows if shard_of(r["pair_id"], num_shards) == shard_index]

        def pairs_to_do() -> list[dict]:
            done = done_pair_ids(votes_dir)
            return [r for r in mine if r["pair_id"] not in done]

        todo = pairs_to_do()  # a first look, so a finished shard never loads the engine
        summary = {"votes_dir": str(votes_dir), "pairs_in_shard": len(mine),
                   "pairs_already_done": len(mine) - len(todo), "pairs_voted": 0, "votes": 0,
                   "votes_planned": 0, "invalid_votes": 0, "stop_reasons": {},
                   "shards_written": 0}
        if not todo:
            return {**summary, "load_seconds": 0.0, "vote_seconds": 0.0, "close_seconds": 0.0,
                    "seconds": 0.0}
        stack.enter_context(shard_lock(votes_dir, shard_index, num_shards))
        remove_stale_temp_files(votes_dir, shard_index, num_shards)
        # on exit, in this order: the runner stops (Ray's actors end), the temp files of
        # workers killed mid-chunk are removed, the shard lock is released
        stack.callback(remove_stale_temp_files, votes_dir, shard_index, num_shards)
        todo = pairs_to_do()  # again, under the lock
        summary["pairs_already_done"] = len(mine) - len(todo)
        tally = _Tally(summary, settings.votes_per_pair)
        job = VoteJob(spec, manifest["model_revision"], settings, votes_dir.resolve(),
                      shard_index, num_shards)
        done_chunks = voter.vote(job, chunks_of(todo, chunk_pairs), engine=eng)
        stack.callback(done_chunks.close)
        bar = stack.enter_context(tqdm(total=len(mine), initial=len(mine) - len(todo),
                                       desc="pairs", unit="pair", disable=quiet,
                                       dynamic_ncols=True))
        try:
            for done in done_chunks:
                tally.add(done)
                bar.update(done.pairs)
                bar.set_postfix(votes_s=f"{tally.rate():.1f}", invalid=summary["invalid_votes"])
        except BaseException:
            done_chunks.close()  # the runner stops first: no worker writes after this
            if claimed:  # a run that wrote no vote (an engine that failed to start) leaves
                release_manifest(votes_dir, remove_folder=new_folder)  # no trace
            raise
        return {**summary, **tally.times()}
