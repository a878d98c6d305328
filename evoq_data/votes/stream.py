"""``evoq-data vote --schedule streaming``: every pair of the run votes on its own clock.

The chunked schedule (:func:`~evoq_data.votes.core.vote_chunk`) asks a chunk's pairs one
wave at a time, and every pair of the chunk waits for the slowest answer of the wave; with
reasoning answers of very different lengths the engine idles at the end of every wave of
every chunk. Here requests of all pairs stay in flight: a new pair is let in while the
engine wants more (about twice what it runs at once: it never waits for the next request,
and a paper-size round is not loaded into memory at once); when the last request of a pair's wave
returns, its stop rule (:mod:`evoq_data.votes.stop`) decides at once and its next wave is
queued at once. Finished pairs are written as shard files (:mod:`evoq_data.votes.store`)
``--chunk-pairs`` at a time, so a crash loses the pairs in flight and those waiting to
fill a shard, and a rerun skips the pairs on disk.

Each pair goes through :class:`~evoq_data.votes.core.PairVotes`, as in the chunked loop:
same requests, same seeds, same stop, so the rows are those of a chunked run of the same
seed (only ``created_at`` differs). An engine streams when it has ``submit``, ``poll`` and
``wants_more`` (vllm and openai do; see their modules).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from evoq_data.core.errors import EvoqError
from evoq_data.generation.engines import Engine
from evoq_data.generation.schedule import check_streaming
from evoq_data.votes.core import (
    ChunkDone,
    PairVotes,
    VoteJob,
    check_answers,
    chunk_report,
    rows_table,
)
from evoq_data.votes.store import write_shard


def check_schedule(schedule: str, engine: str, runner: str, mode: str) -> None:
    """Refuse a schedule that does not exist or cannot run with these settings."""
    if check_streaming(schedule, engine, runner, "votes") and mode != "sample":
        raise EvoqError("--schedule streaming is for --mode sample (--mode logprob asks one "
                        "forward pass per pair, no waves)")


class _InFlight:
    """The pair's current wave: the answers in so far and the requests still out."""

    def __init__(self, pv: PairVotes) -> None:
        self.pv, self.answers, self.out = pv, {}, 0


class StreamRunner:
    """Votes in this process, every pair on its own clock (the local runner's streaming
    schedule; same constructor as the runners, so the stage makes it alike)."""

    name = "local"

    def __init__(self, options=None, *, quiet: bool = False) -> None:
        if options is not None:
            raise EvoqError("Ray settings are for --runner ray, not --runner local")

    def vote(self, job: VoteJob, chunks: list[list[dict]],
             engine: Engine | None = None) -> Iterator[ChunkDone]:
        """Vote the pairs of ``chunks`` (in their order) and write them ``len(chunks[0])``
        finished pairs a shard file; yield one :class:`ChunkDone` per file."""
        pairs = [pair for chunk in chunks for pair in chunk]
        if not pairs:
            return
        shard_pairs = len(chunks[0])
        eng = engine if engine is not None else job.open_engine()
        try:
            yield from self._stream(eng, job, pairs, shard_pairs)
        finally:
            if engine is None:
                eng.close()

    def _stream(self, eng: Engine, job: VoteJob, pairs: list[dict],
                shard_pairs: int) -> Iterator[ChunkDone]:
        settings = job.settings
        started_at = time.time()
        order = {pair["pair_id"]: i for i, pair in enumerate(pairs)}
        waiting = list(reversed(pairs))  # popped from the end: pairs-file order
        requests: dict[str, tuple[_InFlight, object, list[int]]] = {}  # id -> (wave, req, idx)
        finished: list[PairVotes] = []

        def ask(pv: PairVotes) -> None:
            wave = _InFlight(pv)
            asked = pv.requests()
            ids = eng.submit([req for req, _ in asked], settings.sampling)
            if len(ids) != len(asked):
                raise EvoqError(f"engine {eng.name} queued {len(ids)} of {len(asked)} "
                                "requests")
            for rid, (req, indices) in zip(ids, asked, strict=True):
                requests[rid] = (wave, req, indices)
                wave.out += 1

        def write(done: list[PairVotes]) -> ChunkDone:
            from datetime import UTC, datetime

            done.sort(key=lambda pv: order[pv.pair["pair_id"]])
            created_at = datetime.now(UTC)
            table = rows_table([row for pv in done for row in pv.rows(eng, created_at)])
            path = write_shard(table, job.votes_dir, job.shard_index, job.num_shards)
            return chunk_report(table, len(done), path.name, started_at)

        while waiting or requests:
            while waiting and (not requests or eng.wants_more()):  # never none in flight
                ask(PairVotes(waiting.pop(), settings))
            for rid, texts in eng.poll():
                if rid not in requests:
                    raise EvoqError(f"engine {eng.name} answered request {rid} it was not "
                                    "asked")
                wave, req, indices = requests.pop(rid)
                check_answers(eng, req, texts, wave.pv.pair["pair_id"])
                wave.answers.update(zip(indices, texts, strict=True))
                wave.out -= 1
                if wave.out == 0:  # the wave is in: the stop rule decides now
                    if wave.pv.take(wave.answers) is None:
                        ask(wave.pv)
                    else:
                        finished.append(wave.pv)
            if len(finished) >= shard_pairs:
                yield write(finished[:shard_pairs])
                finished = finished[shard_pairs:]
        if finished:
            yield write(finished)
