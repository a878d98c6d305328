"""``evoq-data vote``: ask the judge K times per pair, keep every raw answer.

Votes go to the vote store (:mod:`evoq_data.votes.store`), one shard file per chunk of
complete pairs. A vote is a pure function of (seed, pair_id, vote_index, model,
prompt, sampling): the shown order of each vote and the seed of each request derive from
(seed, pair_id) alone, never from the chunking or from what ran before.
"""

from __future__ import annotations

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
from evoq_data.generation.engines import Engine, GenRequest, Sampling
from evoq_data.generation.parse import parse_compare
from evoq_data.generation.prompts import Prompt
from evoq_data.generation.spec import GenerationSpec, check_model, open_engine
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
    """How the votes of every pair of a run are asked for (everything but the engine)."""

    prompt: Prompt
    sampling: Sampling
    votes_per_pair: int = 32
    seed: int = 0
    order: str = "random"


@dataclass(frozen=True)
class VotePlan:
    """Shown order and seeds of one pair's K votes."""

    pair_id: str
    swapped: np.ndarray  # bool[K], per vote_index
    seed_unswapped: int
    seed_swapped: int


def shard_of(pair_id: str, num_shards: int) -> int:
    """Which of ``num_shards`` workers votes on this pair (deterministic, balanced)."""
    return digest_u64("shard", pair_id) % num_shards


def plan_votes(pair_id: str, k: int, seed: int, order: str) -> VotePlan:
    """Shown orders and request seeds for one pair: a pure function of its arguments."""
    rng = np.random.default_rng(digest_u64("order", seed, pair_id))
    if order == "random":
        swapped = rng.random(k) < 0.5
    elif order == "balanced":
        swapped = np.zeros(k, dtype=bool)
        swapped[rng.permutation(k)[: k // 2]] = True
    else:
        raise EvoqError(f"unknown --order {order!r}; choose one of {', '.join(ORDERS)}")
    return VotePlan(pair_id, swapped, request_seed("seed", seed, pair_id, 0, n=k),
                    request_seed("seed", seed, pair_id, 1, n=k))


def _chunk_rows(chunk: list[dict], plans: list[VotePlan], answers: dict, engine: Engine,
                prompt: Prompt, sampling: Sampling, created_at: datetime) -> pa.Table:
    cols = {name: [] for name in VOTES_SCHEMA.names}
    for pair, plan in zip(chunk, plans, strict=True):
        counters = {False: 0, True: 0}
        for v, swapped in enumerate(plan.swapped.tolist()):
            i = counters[swapped]
            counters[swapped] += 1
            raw = answers[(plan.pair_id, swapped)][i]
            value, status = parse_compare(raw, prompt.reasoning)
            shown = (pair["image_b_id"], pair["image_a_id"]) if swapped else (
                pair["image_a_id"], pair["image_b_id"])
            base_seed = plan.seed_swapped if swapped else plan.seed_unswapped
            row = {
                "pair_id": plan.pair_id, "vote_index": v,
                "image_a_id": pair["image_a_id"], "image_b_id": pair["image_b_id"],
                "image_a_path": pair["image_a_path"], "image_b_path": pair["image_b_path"],
                "swapped": swapped, "raw_text": raw,
                "answer": value, "winner_id": shown[value] if value is not None else None,
                "parse_status": status, "model": engine.model,
                "model_revision": engine.model_revision, "engine": engine.name,
                "prompt_id": prompt.prompt_id, "prompt_sha256": prompt.sha256,
                "temperature": sampling.temperature, "top_p": sampling.top_p,
                "max_tokens": sampling.max_tokens, "seed": base_seed + i,
                "created_at": created_at, "evoq_version": __version__,
            }
            for name, value_ in row.items():
                cols[name].append(value_)
    return pa.table(cols, schema=VOTES_SCHEMA)


def vote_chunk(eng: Engine, chunk: list[dict], settings: VoteSettings) -> pa.Table:
    """Ask the engine for every vote of ``chunk`` (pairs-file rows) and return them as vote
    rows (VOTES_SCHEMA), all votes of each pair: one request per pair and shown order.
    The local runner and the Ray runner both call this, so their votes are the same."""
    prompt, sampling = settings.prompt, settings.sampling
    plans = [plan_votes(r["pair_id"], settings.votes_per_pair, settings.seed, settings.order)
             for r in chunk]
    requests, keys = [], []
    for pair, plan in zip(chunk, plans, strict=True):
        for swapped, base in ((False, plan.seed_unswapped), (True, plan.seed_swapped)):
            n = int((plan.swapped == swapped).sum())
            if n == 0:
                continue
            shown = ((pair["image_b_path"], pair["image_a_path"]) if swapped
                     else (pair["image_a_path"], pair["image_b_path"]))
            requests.append(GenRequest(images=shown, prompt=prompt, n=n, seed=base,
                                       key=f"{plan.pair_id}:{int(swapped)}"))
            keys.append((plan.pair_id, swapped))
    outputs = eng.generate(requests, sampling)
    answers = dict(zip(keys, outputs, strict=True))
    for req, key in zip(requests, keys, strict=True):
        if len(answers[key]) != req.n:
            raise EvoqError(f"engine {eng.name} returned {len(answers[key])} answers "
                            f"for a request of n={req.n} (pair {key[0]})")
    return _chunk_rows(chunk, plans, answers, eng, prompt, sampling, datetime.now(UTC))


RUNNERS = ("local", "ray")


@dataclass(frozen=True)
class ChunkDone:
    """What a runner reports for each chunk it wrote as a shard file."""

    pairs: int
    votes: int
    invalid: int


def _vote_here(eng: Engine, chunks: list[list[dict]], settings: VoteSettings, votes_dir: Path,
               shard_index: int, num_shards: int):
    """The local runner: vote and write the chunks one by one, in this process."""
    for chunk in chunks:
        table = vote_chunk(eng, chunk, settings)
        write_shard(table, votes_dir, shard_index, num_shards)
        invalid = int(pa.compute.sum(pa.compute.is_null(table.column("answer"))).as_py() or 0)
        yield ChunkDone(len(chunk), table.num_rows, invalid)


def run_vote(pairs: str | Path, spec: GenerationSpec, out: str | Path, *,
             votes_per_pair: int = 32, seed: int = 0, order: str = "random",
             num_shards: int = 1, shard_index: int = 0, chunk_pairs: int = 64,
             quiet: bool = False, runner: str = "local",
             ray_options: RayOptions | None = None) -> dict:
    """The ``evoq-data vote`` stage. Returns a summary (paths and counts).

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
    if votes_per_pair < 1:
        raise EvoqError(f"--votes-per-pair must be at least 1, got {votes_per_pair}")
    if order not in ORDERS:
        raise EvoqError(f"unknown --order {order!r}; choose one of {', '.join(ORDERS)}")
    if order == "balanced" and votes_per_pair % 2:
        raise EvoqError(f"--order balanced needs an even --votes-per-pair, got {votes_per_pair}")
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise EvoqError(f"--shard-index must be in [0, {num_shards}), got {shard_index}")
    if chunk_pairs < 1:
        raise EvoqError(f"--chunk-pairs must be at least 1, got {chunk_pairs}")
    rows = read_pairs(pairs)
    prompt = spec.compare_prompt
    settings = VoteSettings(prompt=prompt, sampling=spec.sampling,
                            votes_per_pair=votes_per_pair, seed=seed, order=order)
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
        votes_per_pair=votes_per_pair, order=order, reasoning=spec.reasoning,
        num_shards=num_shards, pairs_file=str(Path(pairs).resolve()),
        pairs_sha256=file_sha256(pairs), runner=runner)
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
                   "invalid_votes": 0, "shards_written": 0}
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
            done_chunks = (ChunkDone(d["pairs"], d["votes"], d["invalid"]) for d in on_ray)
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
