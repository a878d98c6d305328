"""The voting core: ask an engine for the votes of a chunk of pairs, write them as one
shard, report what was written. The local runner (:mod:`evoq_data.votes.local`) and the Ray
runner (:mod:`evoq_data.votes.ray`) both vote through :meth:`VoteJob.vote`, so their votes
are the same, row for row; this module knows no runner.

Messages between a runner and the stage are typed: a :class:`VoteJob` goes to every worker
(a Ray actor gets it pickled, as is) and every chunk written comes back as a
:class:`ChunkDone`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute below

from evoq_data import __version__
from evoq_data.core.errors import EvoqError
from evoq_data.core.schemas import VOTES_SCHEMA
from evoq_data.generation.engines import Engine, GenRequest
from evoq_data.generation.parse import parse_compare
from evoq_data.generation.prompts import Prompt
from evoq_data.generation.spec import GenerationSpec, open_engine
from evoq_data.votes.plan import VotePlan, VoteSettings, plan_votes
from evoq_data.votes.stop import can_stop, stop_reason
from evoq_data.votes.store import write_shard


def _shown(pair: dict, swapped: bool, what: str = "path") -> tuple[str, str]:
    a, b = pair[f"image_a_{what}"], pair[f"image_b_{what}"]
    return (b, a) if swapped else (a, b)


def _row(pair: dict, vote_index: int, swapped: bool, raw: str, value, status: str,
         seed, stop_reason: str, votes_planned: int, eng: Engine, settings: VoteSettings,
         created_at: datetime, probs: tuple[float, float] | None = None) -> dict:
    prompt, sampling = settings.prompt, settings.sampling
    return {
        "pair_id": pair["pair_id"], "vote_index": vote_index,
        "image_a_id": pair["image_a_id"], "image_b_id": pair["image_b_id"],
        "image_a_path": pair["image_a_path"], "image_b_path": pair["image_b_path"],
        "swapped": swapped, "raw_text": raw, "answer": value,
        "winner_id": _shown(pair, swapped, "id")[value] if value is not None else None,
        "parse_status": status, "model": eng.model, "model_revision": eng.model_revision,
        "engine": eng.name, "prompt_id": prompt.prompt_id, "prompt_sha256": prompt.sha256,
        "temperature": sampling.temperature, "top_p": sampling.top_p,
        "max_tokens": sampling.max_tokens, "seed": seed, "votes_planned": votes_planned,
        "stop_reason": stop_reason, "prob_0": probs[0] if probs else None,
        "prob_1": probs[1] if probs else None, "created_at": created_at,
        "evoq_version": __version__,
    }


def rows_table(rows: list[dict]) -> pa.Table:
    return pa.table({name: [r[name] for r in rows] for name in VOTES_SCHEMA.names},
                    schema=VOTES_SCHEMA)


def _wave_requests(pair: dict, plan: VotePlan, start: int, end: int,
                   prompt: Prompt) -> list[tuple[GenRequest, list[int]]]:
    """The requests for votes [start, end) of one pair: one per shown order, ``n`` = its
    votes in the range, seeded so that sample i is vote ``indices[i]``'s own seed; marked
    ``asked_again`` when the order has votes after ``end`` (another wave may ask it)."""
    out = []
    for swapped in (False, True):
        indices = [v for v in range(start, end) if bool(plan.swapped[v]) == swapped]
        if not indices:
            continue
        req = GenRequest(images=_shown(pair, swapped), prompt=prompt, n=len(indices),
                         seed=plan.seed_of(indices[0]),
                         key=f"{plan.pair_id}:{int(swapped)}:{start}",
                         image_ids=_shown(pair, swapped, "id"),
                         asked_again=bool((plan.swapped[end:] == swapped).any()))
        out.append((req, indices))
    return out


class PairVotes:
    """One pair's votes as they come in, wave by wave: its plan, the answers so far, the
    valid votes for each image and, once its stop rule says so, why it stopped. The chunked
    loop (:func:`vote_chunk`) and the streaming scheduler (:mod:`evoq_data.votes.stream`)
    both vote through it, so they ask the same requests and stop at the same vote."""

    def __init__(self, pair: dict, settings: VoteSettings) -> None:
        self.pair, self.settings = pair, settings
        self.plan = plan_votes(pair["pair_id"], settings.votes_per_pair, settings.seed,
                               settings.order)
        self.wave = settings.votes_per_pair if settings.stop == "fixed" else settings.wave
        self.got: list[tuple] = []  # (raw, value, status) per vote, in vote_index order
        self.tally = [0, 0]  # valid votes for A, for B
        self.reason: str | None = None

    def next_wave(self) -> tuple[int, int]:
        """The votes [start, end) to ask next: ``--wave`` votes, and the next wave's with them
        while no answers to them could stop the pair at ``end`` (:func:`can_stop`, from the
        counts so far), so a request ends only where the stop rule can act. The votes asked
        and the vote a pair stops at are those of waves of exactly ``--wave``; only the
        barriers are fewer."""
        s = self.settings
        start = len(self.got)
        end = min(start + self.wave, s.votes_per_pair)
        while not can_stop(*self.tally, start, end, s.votes_per_pair, s.stop, s.confidence):
            end = min(end + self.wave, s.votes_per_pair)
        return start, end

    def requests(self) -> list[tuple[GenRequest, list[int]]]:
        """The requests of the next wave, with the vote indices each answers."""
        start, end = self.next_wave()
        return _wave_requests(self.pair, self.plan, start, end, self.settings.prompt)

    def take(self, answers: dict[int, str]) -> str | None:
        """Record the answers of the next wave (vote index -> raw text); return the stop
        reason, or None to ask another wave."""
        start, end = self.next_wave()
        for v in range(start, end):
            raw = answers[v]
            value, status = parse_compare(raw, self.settings.prompt.reasoning)
            self.got.append((raw, value, status))
            if value is not None:  # a vote for the image shown at position `value`
                self.tally[int(value != int(self.plan.swapped[v]))] += 1
        s = self.settings
        self.reason = stop_reason(*self.tally, end, s.votes_per_pair, s.stop, s.confidence)
        return self.reason

    def rows(self, eng: Engine, created_at: datetime) -> list[dict]:
        """The vote rows of a stopped pair."""
        plan, k = self.plan, self.settings.votes_per_pair
        return [_row(self.pair, v, bool(plan.swapped[v]), raw, value, status,
                     plan.seed_of(v), self.reason, k, eng, self.settings, created_at)
                for v, (raw, value, status) in enumerate(self.got)]


def check_answers(eng: Engine, req: GenRequest, texts: list[str], pair_id: str) -> None:
    """Refuse an engine that returned other than ``n`` answers for a request."""
    if len(texts) != req.n:
        raise EvoqError(f"engine {eng.name} returned {len(texts)} answers for a request of "
                        f"n={req.n} (pair {pair_id})")


def vote_chunk(eng: Engine, chunk: list[dict], settings: VoteSettings) -> pa.Table:
    """Ask the engine for the votes of ``chunk`` (pairs-file rows) and return them as vote
    rows (VOTES_SCHEMA), all votes each pair used. The local runner and the Ray runner both
    call this, so their votes are the same.

    Sample mode asks votes in waves of ``settings.wave`` (all K at once with ``--stop
    fixed``): per wave one request per pair and shown order, for the pairs still going. A
    pair's votes are the first n of its full-K plan, whatever the chunking or the wave size
    at which it stopped. Logprob mode asks one forward pass per pair and shown order."""
    if settings.mode == "logprob":
        return _logprob_chunk(eng, chunk, settings)
    pairs = [PairVotes(pair, settings) for pair in chunk]
    active = list(pairs)
    while active:
        asked = [(pv, req, idx) for pv in active for req, idx in pv.requests()]
        outputs = eng.generate([req for _, req, _ in asked], settings.sampling)
        if len(outputs) != len(asked):
            raise EvoqError(f"engine {eng.name} answered {len(outputs)} of {len(asked)} "
                            "requests")
        answers: dict[int, dict[int, str]] = {id(pv): {} for pv in active}
        for (pv, req, indices), texts in zip(asked, outputs, strict=True):
            check_answers(eng, req, texts, pv.pair["pair_id"])
            answers[id(pv)].update(zip(indices, texts, strict=True))
        active = [pv for pv in active if pv.take(answers[id(pv)]) is None]
    created_at = datetime.now(UTC)
    return rows_table([row for pv in pairs for row in pv.rows(eng, created_at)])


def format_probs(p0: float, p1: float) -> str:
    """The raw_text of a logprob row: what was measured, nothing more."""
    return f"P(0)={p0:.6f} P(1)={p1:.6f}"


def _logprob_chunk(eng: Engine, chunk: list[dict], settings: VoteSettings) -> pa.Table:
    """Two rows per pair: vote 0 shown unswapped, vote 1 swapped; P("0") and P("1") of the
    first answer token renormalised over the two; ``answer`` the more probable (0 on an
    exact tie)."""
    answer_probs = getattr(eng, "answer_probs", None)
    if answer_probs is None:
        raise EvoqError(f"engine {eng.name!r} gives no token probabilities; --mode logprob "
                        "needs the transformers or vllm engine")
    requests = [GenRequest(images=_shown(pair, swapped), prompt=settings.prompt, n=1, seed=0,
                           key=f"{pair['pair_id']}:{int(swapped)}",
                           image_ids=_shown(pair, swapped, "id"))
                for pair in chunk for swapped in (False, True)]
    probs = answer_probs(requests)
    if len(probs) != len(requests):
        raise EvoqError(f"engine {eng.name} gave {len(probs)} probabilities for "
                        f"{len(requests)} requests")
    created_at = datetime.now(UTC)
    rows = []
    for i, pair in enumerate(chunk):
        for swapped in (False, True):
            p0, p1 = (float(x) for x in probs[2 * i + int(swapped)])
            value = 1 if p1 > p0 else 0
            rows.append(_row(pair, int(swapped), swapped, format_probs(p0, p1), value, "ok",
                             None, "fixed", 2, eng, settings, created_at, (p0, p1)))
    return rows_table(rows)


@dataclass(frozen=True)
class ChunkDone:
    """What a worker reports for each chunk it wrote as a shard file."""

    pairs: int
    votes: int
    invalid: int
    stop_reasons: dict[str, int] = field(default_factory=dict)  # stop_reason -> pairs
    shard: str = ""  # the shard file's name
    started_at: float = 0.0  # when the worker began voting it (epoch seconds)


def chunk_report(table: pa.Table, pairs: int, shard: str = "",
                 started_at: float = 0.0) -> ChunkDone:
    """The counts of one written chunk."""
    invalid = int(pa.compute.sum(pa.compute.is_null(table.column("answer"))).as_py() or 0)
    firsts = pa.compute.equal(table.column("vote_index"), 0)
    reasons: dict[str, int] = {}
    for reason in table.column("stop_reason").filter(firsts).to_pylist():
        reasons[reason] = reasons.get(reason, 0) + 1
    return ChunkDone(pairs, table.num_rows, invalid, reasons, shard, started_at)


@dataclass(frozen=True)
class VoteJob:
    """Everything a worker needs to vote chunks of one run and write them into its shard of
    VOTES_DIR: the engine to open, the settings, the shard. Plain data, so a Ray actor gets
    it pickled as it is."""

    spec: GenerationSpec
    revision: str  # the provenance revision recorded with every vote
    settings: VoteSettings
    votes_dir: Path
    shard_index: int = 0
    num_shards: int = 1

    def open_engine(self) -> Engine:
        return open_engine(self.spec, self.revision)

    def vote(self, eng: Engine, chunk: list[dict]) -> ChunkDone:
        """Vote ``chunk`` and write it as one shard file (temp file, fsync, rename)."""
        started_at = time.time()
        table = vote_chunk(eng, chunk, self.settings)
        path = write_shard(table, self.votes_dir, self.shard_index, self.num_shards)
        return chunk_report(table, len(chunk), path.name, started_at)
