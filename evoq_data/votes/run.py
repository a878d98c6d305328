"""``evoq-data vote``: ask the judge K times per pair, keep every raw answer.

Votes go to the vote store (:mod:`evoq_data.votes.store`), one shard file per chunk of
complete pairs. A vote is a pure function of (seed, pair_id, vote_index, model,
prompt, sampling): the shown order of each vote and the seed of each request derive from
(seed, pair_id) alone, never from the chunking or from what ran before.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute below

from evoq_data import __version__
from evoq_data.core.errors import EvoqError
from evoq_data.core.ids import digest_u64, file_sha256, request_seed
from evoq_data.core.manifests import new_manifest
from evoq_data.core.schemas import VOTES_SCHEMA
from evoq_data.generation.engines import Engine, GenRequest, Sampling, engine_class
from evoq_data.generation.parse import parse_compare
from evoq_data.generation.prompts import Prompt
from evoq_data.generation.spec import GenerationSpec, check_model, open_engine
from evoq_data.votes.stop import MODES, STOPS, stop_reason
from evoq_data.votes.store import (
    claim_manifest,
    done_pair_ids,
    read_pairs,
    release_manifest,
    remove_stale_temp_files,
    shard_lock,
    write_shard,
)

if TYPE_CHECKING:
    from evoq_data.votes.ray_runner import RayOptions

log = logging.getLogger(__name__)

ORDERS = ("random", "balanced")


@dataclass(frozen=True)
class VoteSettings:
    """How the votes of every pair of a run are asked for (everything but the engine).

    ``stop``: ``fixed`` (all K, the paper), ``decided`` or ``confident`` (see
    :mod:`evoq_data.votes.stop`), asked ``wave`` votes at a time; ``mode``: ``sample`` (K
    sampled answers) or ``logprob`` (one forward pass per shown order, 2 rows per pair).
    Checked on construction, so every runner refuses the same bad combinations."""

    prompt: Prompt
    sampling: Sampling
    votes_per_pair: int = 32
    seed: int = 0
    order: str = "random"
    stop: str = "fixed"
    wave: int = 8
    confidence: float | None = None
    mode: str = "sample"

    def __post_init__(self) -> None:
        k = self.votes_per_pair
        if self.mode not in MODES:
            raise EvoqError(f"unknown --mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.stop not in STOPS:
            raise EvoqError(f"unknown --stop {self.stop!r}; choose one of {', '.join(STOPS)}")
        if self.order not in ORDERS:
            raise EvoqError(f"unknown --order {self.order!r}; choose one of {', '.join(ORDERS)}")
        if k < 1:
            raise EvoqError(f"--votes-per-pair must be at least 1, got {k}")
        if self.mode == "logprob":
            if self.prompt.reasoning:
                raise EvoqError("--mode logprob reads the first answer token; it needs "
                                "--no-reasoning")
            if self.stop != "fixed":
                raise EvoqError(f"--stop {self.stop} is for --mode sample; --mode logprob "
                                "asks one forward pass per pair and shown order")
            if k != 2:
                raise EvoqError(f"--mode logprob writes 2 rows per pair (one per shown "
                                f"order); drop --votes-per-pair (got {k})")
            if self.sampling.temperature != 1 or self.sampling.top_p != 1:
                raise EvoqError("--mode logprob reads the model's own distribution; it takes "
                                "--temperature 1 and --top-p 1 (got "
                                f"{self.sampling.temperature}, {self.sampling.top_p})")
        if self.order == "balanced" and k % 2:
            raise EvoqError(f"--order balanced needs an even --votes-per-pair, got {k}")
        if self.stop == "confident":
            if self.confidence is None:
                raise EvoqError("--stop confident needs --confidence C (e.g. 0.99)")
            if not 0.5 < self.confidence < 1:
                raise EvoqError(f"--confidence must be in (0.5, 1), got {self.confidence}")
        elif self.confidence is not None:
            raise EvoqError(f"--confidence is for --stop confident, not --stop {self.stop}")
        if self.stop != "fixed":
            if self.order != "balanced":
                raise EvoqError(f"--stop {self.stop} needs --order balanced (every wave "
                                "shows each order equally often)")
            if self.wave < 2 or self.wave % 2:
                raise EvoqError(f"--wave must be an even number >= 2 with --stop {self.stop}, "
                                f"got {self.wave}")

    def identity(self) -> dict:
        """The manifest fields of these settings (wave and confidence only where they act,
        so a fixed run resumed with another --wave is not refused for nothing)."""
        return {"mode": self.mode, "stop": self.stop,
                "wave": self.wave if self.stop != "fixed" else None,
                "confidence": self.confidence}


@dataclass(frozen=True)
class VotePlan:
    """Shown order and seeds of one pair's K votes."""

    pair_id: str
    swapped: np.ndarray  # bool[K], per vote_index
    seed_unswapped: int
    seed_swapped: int

    def seed_of(self, vote_index: int) -> int:
        """The seed of vote ``vote_index``: its order's request seed + its rank in that
        order (sample j of a shown order is drawn with seed base + j)."""
        swapped = self.swapped[vote_index]
        rank = int((self.swapped[:vote_index] == swapped).sum())
        return (self.seed_swapped if swapped else self.seed_unswapped) + rank


def shard_of(pair_id: str, num_shards: int) -> int:
    """Which of ``num_shards`` workers votes on this pair (deterministic, balanced)."""
    return digest_u64("shard", pair_id) % num_shards


def plan_votes(pair_id: str, k: int, seed: int, order: str) -> VotePlan:
    """Shown orders and request seeds for one pair: a pure function of its arguments.

    ``balanced``: each consecutive pair of votes (0-1, 2-3, ...) is shown once each way, a
    fair coin choosing which comes first, so K/2 votes go each way and so does every wave of
    an even size."""
    rng = np.random.default_rng(digest_u64("order", seed, pair_id))
    if order == "random":
        swapped = rng.random(k) < 0.5
    elif order == "balanced":
        if k % 2:
            raise EvoqError(f"--order balanced needs an even --votes-per-pair, got {k}")
        first = rng.random(k // 2) < 0.5
        swapped = np.empty(k, dtype=bool)
        swapped[0::2], swapped[1::2] = first, ~first
    else:
        raise EvoqError(f"unknown --order {order!r}; choose one of {', '.join(ORDERS)}")
    return VotePlan(pair_id, swapped, request_seed("seed", seed, pair_id, 0, n=k),
                    request_seed("seed", seed, pair_id, 1, n=k))


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


def _table(rows: list[dict]) -> pa.Table:
    return pa.table({name: [r[name] for r in rows] for name in VOTES_SCHEMA.names},
                    schema=VOTES_SCHEMA)


def _wave_requests(pair: dict, plan: VotePlan, start: int, end: int,
                   prompt: Prompt) -> list[tuple[GenRequest, list[int]]]:
    """The requests for votes [start, end) of one pair: one per shown order, ``n`` = its
    votes in the range, seeded so that sample i is vote ``indices[i]``'s own seed."""
    out = []
    for swapped in (False, True):
        indices = [v for v in range(start, end) if bool(plan.swapped[v]) == swapped]
        if not indices:
            continue
        req = GenRequest(images=_shown(pair, swapped), prompt=prompt, n=len(indices),
                         seed=plan.seed_of(indices[0]),
                         key=f"{plan.pair_id}:{int(swapped)}:{start}",
                         image_ids=_shown(pair, swapped, "id"))
        out.append((req, indices))
    return out


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
    k = settings.votes_per_pair
    prompt = settings.prompt
    wave = k if settings.stop == "fixed" else settings.wave
    plans = {r["pair_id"]: plan_votes(r["pair_id"], k, settings.seed, settings.order)
             for r in chunk}
    got: dict[str, list] = {r["pair_id"]: [] for r in chunk}  # (raw, value, status) per vote
    tally = {r["pair_id"]: [0, 0] for r in chunk}  # valid votes for A, for B
    reasons: dict[str, str] = {}
    active = list(chunk)
    for start in range(0, k, wave):
        end = min(start + wave, k)
        asked = [(pair, req, idx) for pair in active
                 for req, idx in _wave_requests(pair, plans[pair["pair_id"]], start, end,
                                                prompt)]
        outputs = eng.generate([req for _, req, _ in asked], settings.sampling)
        if len(outputs) != len(asked):
            raise EvoqError(f"engine {eng.name} answered {len(outputs)} of {len(asked)} "
                            "requests")
        answers: dict[tuple[str, int], str] = {}
        for (pair, req, indices), texts in zip(asked, outputs, strict=True):
            if len(texts) != req.n:
                raise EvoqError(f"engine {eng.name} returned {len(texts)} answers for a "
                                f"request of n={req.n} (pair {pair['pair_id']})")
            answers.update({(pair["pair_id"], v): t for v, t in zip(indices, texts,
                                                                     strict=True)})
        still = []
        for pair in active:
            pid = pair["pair_id"]
            plan = plans[pid]
            for v in range(start, end):
                raw = answers[(pid, v)]
                value, status = parse_compare(raw, prompt.reasoning)
                got[pid].append((raw, value, status))
                if value is not None:  # a vote for the image shown at position `value`
                    tally[pid][int(value != int(plan.swapped[v]))] += 1
            reason = stop_reason(*tally[pid], end, k, settings.stop, settings.confidence)
            if reason is None:
                still.append(pair)
            else:
                reasons[pid] = reason
        active = still
        if not active:
            break
    created_at = datetime.now(UTC)
    rows = []
    for pair in chunk:
        pid = pair["pair_id"]
        plan = plans[pid]
        for v, (raw, value, status) in enumerate(got[pid]):
            rows.append(_row(pair, v, bool(plan.swapped[v]), raw, value, status,
                             plan.seed_of(v), reasons[pid], k, eng, settings, created_at))
    return _table(rows)


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
    return _table(rows)


RUNNERS = ("local", "ray")


@dataclass(frozen=True)
class ChunkDone:
    """What a runner reports for each chunk it wrote as a shard file."""

    pairs: int
    votes: int
    invalid: int
    stop_reasons: dict  # stop_reason -> pairs


def chunk_report(table: pa.Table, pairs: int) -> ChunkDone:
    """The counts of one written chunk (both runners report through this)."""
    invalid = int(pa.compute.sum(pa.compute.is_null(table.column("answer"))).as_py() or 0)
    firsts = pa.compute.equal(table.column("vote_index"), 0)
    reasons: dict[str, int] = {}
    for reason in table.column("stop_reason").filter(firsts).to_pylist():
        reasons[reason] = reasons.get(reason, 0) + 1
    return ChunkDone(pairs, table.num_rows, invalid, reasons)


def _vote_here(eng: Engine, chunks: list[list[dict]], settings: VoteSettings, votes_dir: Path,
               shard_index: int, num_shards: int):
    """The local runner: vote and write the chunks one by one, in this process."""
    for chunk in chunks:
        table = vote_chunk(eng, chunk, settings)
        write_shard(table, votes_dir, shard_index, num_shards)
        yield chunk_report(table, len(chunk))


def run_vote(pairs: str | Path, spec: GenerationSpec, out: str | Path, *,
             votes_per_pair: int | None = None, seed: int = 0, order: str = "random",
             num_shards: int = 1, shard_index: int = 0, chunk_pairs: int = 64,
             stop: str = "fixed", wave: int = 8, confidence: float | None = None,
             mode: str = "sample", quiet: bool = False, runner: str = "local",
             ray_options: RayOptions | None = None) -> dict:
    """The ``evoq-data vote`` stage. Returns a summary (paths and counts).

    ``votes_per_pair``: K (default 32); in logprob mode 2 rows per pair, whatever K.
    ``runner``: ``local`` votes in this process; ``ray`` votes on a pool of Ray actors
    (:mod:`evoq_data.votes.ray_runner`, settings in ``ray_options``). Both write the same
    votes into the same store; everything but the voting loop is shared."""
    from tqdm.auto import tqdm

    if runner not in RUNNERS:
        raise EvoqError(f"unknown --runner {runner!r}; choose one of {', '.join(RUNNERS)}")
    if runner == "ray":  # checked before anything is written: no Ray, no trace
        from evoq_data.votes.ray_runner import RayOptions, require_ray

        require_ray()
        ray_options = ray_options or RayOptions()
        ray_options.check()
    elif ray_options is not None:
        raise EvoqError("Ray settings are for --runner ray, not --runner local")
    if votes_per_pair is None:
        votes_per_pair = 2 if mode == "logprob" else 32
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise EvoqError(f"--shard-index must be in [0, {num_shards}), got {shard_index}")
    if chunk_pairs < 1:
        raise EvoqError(f"--chunk-pairs must be at least 1, got {chunk_pairs}")
    prompt = spec.compare_prompt
    settings = VoteSettings(prompt=prompt, sampling=spec.sampling,
                            votes_per_pair=votes_per_pair, seed=seed, order=order, stop=stop,
                            wave=wave, confidence=confidence, mode=mode)
    if mode == "logprob" and not hasattr(engine_class(spec.engine), "answer_probs"):
        raise EvoqError(f"--mode logprob needs the transformers or vllm engine; engine "
                        f"{spec.engine!r} gives no token probabilities")
    if mode == "logprob" and spec.engine == "vllm":
        # vLLM returns the logprobs of the two allowed tokens renormalised only in this mode
        given = spec.engine_args.get("logprobs_mode", "processed_logprobs")
        if given != "processed_logprobs":
            raise EvoqError(f"--mode logprob on vllm needs logprobs_mode=processed_logprobs, "
                            f"got --engine-arg logprobs_mode={given}")
        spec = dataclasses.replace(spec, engine_args={**spec.engine_args,
                                                      "logprobs_mode": "processed_logprobs"})
    rows = read_pairs(pairs)
    votes_dir = Path(out)
    if votes_dir.exists() and not votes_dir.is_dir():
        raise EvoqError(f"--out {votes_dir} is a file; VOTES_DIR must be a folder")
    check_model(spec)
    new_folder = not votes_dir.exists()
    provenance = spec.provenance()
    manifest = new_manifest(
        "vote", model=provenance["model"], model_revision=provenance["model_revision"],
        engine=spec.engine, prompt_id=prompt.prompt_id, prompt_sha256=prompt.sha256,
        prompt_template=prompt.template, temperature=spec.sampling.temperature,
        top_p=spec.sampling.top_p, max_tokens=spec.sampling.max_tokens, seed=seed,
        votes_per_pair=votes_per_pair, order=order, **settings.identity(),
        reasoning=spec.reasoning,
        num_shards=num_shards, pairs_file=str(Path(pairs).resolve()),
        pairs_sha256=file_sha256(pairs), runner=runner)
    if spec.engine == "piqe":  # the stochastic judge is another judge: named as such
        from evoq_data.generation.engines.piqe import piqe_model_name

        manifest["model"] = piqe_model_name(spec.engine_args.get("random_crop"))
    with ExitStack() as stack:  # closes the engine and releases the shard lock on any exit
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
            return summary
        if eng is None and runner == "local":
            try:
                eng = open_engine(spec, manifest["model_revision"])
            except BaseException:
                if claimed:  # a failed start leaves no trace
                    release_manifest(votes_dir, remove_folder=new_folder)
                raise
            stack.callback(eng.close)
        stack.enter_context(shard_lock(votes_dir, shard_index, num_shards))
        remove_stale_temp_files(votes_dir, shard_index, num_shards)
        todo = pairs_to_do()  # again, under the lock
        summary["pairs_already_done"] = len(mine) - len(todo)
        chunks = [todo[start : start + chunk_pairs] for start in range(0, len(todo), chunk_pairs)]
        if runner == "ray":
            from evoq_data.votes.ray_runner import vote_on_ray

            on_ray = vote_on_ray(chunks, spec, settings, revision=manifest["model_revision"],
                                 votes_dir=votes_dir, shard_index=shard_index,
                                 num_shards=num_shards, options=ray_options, quiet=quiet)
            # on exit, in this order: Ray stops (its actors end), the temp files of actors
            # killed mid-chunk are removed, the shard lock is released
            stack.callback(remove_stale_temp_files, votes_dir, shard_index, num_shards)
            stack.callback(on_ray.close)
            done_chunks = (ChunkDone(d["pairs"], d["votes"], d["invalid"], d["stop_reasons"])
                           for d in on_ray)
        else:
            done_chunks = _vote_here(eng, chunks, settings, votes_dir, shard_index, num_shards)
        bar = stack.enter_context(tqdm(total=len(mine), initial=len(mine) - len(todo),
                                       desc="pairs", unit="pair", disable=quiet,
                                       dynamic_ncols=True))
        started = time.perf_counter()
        try:
            for done in done_chunks:
                summary["pairs_voted"] += done.pairs
                summary["votes"] += done.votes
                summary["votes_planned"] += done.pairs * votes_per_pair
                for reason, n in done.stop_reasons.items():
                    summary["stop_reasons"][reason] = summary["stop_reasons"].get(reason, 0) + n
                summary["invalid_votes"] += done.invalid
                summary["shards_written"] += 1
                bar.update(done.pairs)
                bar.set_postfix(
                    votes_s=f"{summary['votes'] / (time.perf_counter() - started):.1f}",
                    invalid=summary["invalid_votes"])
        except BaseException:
            if runner == "ray":
                on_ray.close()  # Ray stops first: no actor writes after this
                if claimed:  # Ray or its actors failed to start: no trace (kept if any
                    release_manifest(votes_dir, remove_folder=new_folder)  # shard exists)
            raise
        summary["seconds"] = round(time.perf_counter() - started, 3)
        return summary
