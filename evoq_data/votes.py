"""The vote store: ``evoq-data vote`` writes raw votes as Parquet shards, crash-safe.

Layout of VOTES_DIR::

    manifest.json                                  run identity (model, prompt, sampling, ...)
    votes-00000-of-00001-<chunk hash>.parquet      complete pairs only, renamed into place

Every shard holds all K votes of each of its pairs and appears by an atomic rename, so a
crash at any moment loses at most the chunk in flight, and a rerun of the same command skips
the pairs already on disk. A vote is a pure function of (seed, pair_id, vote_index, model,
prompt, sampling): the shown order of each vote and the seed of each request derive from
(seed, pair_id) alone, never from the chunking or from what ran before.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import __version__
from .engines import ENGINES, Engine, GenRequest, Sampling, get_engine
from .errors import EvoqError
from .modeling import check_vlm_checkpoint
from .parse import parse_compare
from .prompts import Prompt, compare_prompt
from .schemas import PAIRS_COLUMNS, SCHEMA_VERSION, VOTES_SCHEMA, check_columns

log = logging.getLogger(__name__)

ORDERS = ("random", "balanced")
SHARD_GLOB = "votes-*.parquet"
# Fields that must match to add votes to an existing VOTES_DIR.
IDENTITY_FIELDS = (
    "model", "model_revision", "engine", "prompt_id", "prompt_sha256", "temperature", "top_p",
    "max_tokens", "seed", "votes_per_pair", "order", "num_shards", "pairs_sha256",
)


@dataclass(frozen=True)
class VotePlan:
    """Shown order and seeds of one pair's K votes."""

    pair_id: str
    swapped: np.ndarray  # bool[K], per vote_index
    seed_unswapped: int
    seed_swapped: int


def _u64(*parts) -> int:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def shard_of(pair_id: str, num_shards: int) -> int:
    """Which of ``num_shards`` workers votes on this pair (deterministic, balanced)."""
    return _u64("shard", pair_id) % num_shards


def plan_votes(pair_id: str, k: int, seed: int, order: str) -> VotePlan:
    """Shown orders and request seeds for one pair: a pure function of its arguments."""
    rng = np.random.default_rng(_u64("order", seed, pair_id))
    if order == "random":
        swapped = rng.random(k) < 0.5
    elif order == "balanced":
        swapped = np.zeros(k, dtype=bool)
        swapped[rng.permutation(k)[: k // 2]] = True
    else:
        raise EvoqError(f"unknown --order {order!r}; choose one of {', '.join(ORDERS)}")
    # Seeds stay below 2**31 - k so that seed + i fits every engine's seed type.
    top = 2**31 - 1 - k
    return VotePlan(pair_id, swapped, _u64("seed", seed, pair_id, 0) % top,
                    _u64("seed", seed, pair_id, 1) % top)


def model_revision_of(model: str | None, revision: str | None = None,
                      engine: str | None = None) -> str:
    """A revision for provenance: the given one, the PIQE implementation's version for the
    weightless ``piqe`` judge, or a hash of a local model folder ("unknown" for a Hub id
    loaded without ``--model-revision``)."""
    if revision:
        return revision
    if engine == "piqe":
        from .engines.piqe import piqe_revision

        return piqe_revision()
    if not model:
        return "unknown"
    path = Path(model)
    if not path.is_dir():
        return "unknown"
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(path)).encode())
        size = p.stat().st_size
        h.update(str(size).encode())
        with open(p, "rb") as fh:
            if size <= 16 * 2**20:
                h.update(fh.read())
            else:  # big weight shards: head and tail are enough to tell versions apart
                h.update(fh.read(2**20))
                fh.seek(-(2**20), os.SEEK_END)
                h.update(fh.read())
    return "sha256:" + h.hexdigest()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(2**20), b""):
            h.update(block)
    return h.hexdigest()


def _check_manifest(votes_dir: Path, manifest: dict) -> bool:
    """Refuse a VOTES_DIR made with other settings; True when it already has a manifest."""
    path = votes_dir / "manifest.json"
    if not path.exists():
        return False
    try:
        old = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EvoqError(f"{path} is not readable JSON ({exc}); remove it or use a new --out") from exc
    diff = [f for f in IDENTITY_FIELDS if old.get(f) != manifest.get(f)]
    if diff:
        details = "; ".join(f"{f}: {old.get(f)!r} -> {manifest.get(f)!r}" for f in diff)
        raise EvoqError(
            f"{votes_dir} already holds votes made with other settings ({details}); "
            "use a new --out folder or the original settings"
        )
    return True


def _write_manifest(votes_dir: Path, manifest: dict) -> None:
    votes_dir.mkdir(parents=True, exist_ok=True)
    tmp = votes_dir / f".manifest.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, votes_dir / "manifest.json")


def done_pair_ids(votes_dir: Path) -> set[str]:
    """Pairs that already have a complete shard on disk."""
    done: set[str] = set()
    for shard in sorted(votes_dir.glob(SHARD_GLOB)):
        try:
            ids = pq.read_table(shard, columns=["pair_id"]).column("pair_id").to_pylist()
        except Exception as exc:  # noqa: BLE001
            raise EvoqError(f"vote shard {shard} is unreadable ({exc}); move it away and rerun") from exc
        done.update(ids)
    return done


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


def _write_shard(table: pa.Table, votes_dir: Path, shard_index: int, num_shards: int) -> Path:
    ids = ",".join(sorted(set(table.column("pair_id").to_pylist())))
    tag = hashlib.sha256(ids.encode()).hexdigest()[:16]
    final = votes_dir / f"votes-{shard_index:05d}-of-{num_shards:05d}-{tag}.parquet"
    tmp = votes_dir / f".{final.name}.{os.getpid()}.tmp"
    pq.write_table(table, tmp, compression="zstd")
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    return final


def _vote_chunk(eng: Engine, chunk: list[dict], k: int, seed: int, order: str, prompt: Prompt,
                sampling: Sampling) -> pa.Table:
    """Ask the engine for every vote of ``chunk``: one request per pair and shown order."""
    plans = [plan_votes(r["pair_id"], k, seed, order) for r in chunk]
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


@contextmanager
def _shard_lock(votes_dir: Path, shard_index: int, num_shards: int):
    """Hold an exclusive lock on this shard of VOTES_DIR: two workers given the same
    --shard-index would delete each other's temporary files and double votes. (flock works
    on local disks and on NFSv4; on a filesystem without locks it is a no-op.)"""
    import fcntl

    votes_dir.mkdir(parents=True, exist_ok=True)
    path = votes_dir / f".lock-{shard_index:05d}-of-{num_shards:05d}"
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise EvoqError(
                f"another worker is already voting shard {shard_index} of {num_shards} into "
                f"{votes_dir}; give each worker its own --shard-index"
            ) from None
        except OSError:  # no lock support on this filesystem: go on unguarded
            log.warning("cannot lock %s; make sure no other worker uses shard %d", path,
                        shard_index)
        yield


def read_pairs(pairs_path: str | Path) -> list[dict]:
    path = Path(pairs_path)
    if not path.exists():
        raise EvoqError(f"pairs file not found: {path}")
    check_columns(path, PAIRS_COLUMNS, "pairs")
    rows = pq.read_table(path, columns=list(PAIRS_COLUMNS)).to_pylist()
    if not rows:
        raise EvoqError(f"pairs file {path} has no rows")
    seen: set[str] = set()
    dup = next((r["pair_id"] for r in rows if r["pair_id"] in seen or seen.add(r["pair_id"])),
               None)
    if dup is not None:
        raise EvoqError(f"pairs file {path} lists pair {dup} more than once; every pair_id "
                        "must be unique (its K votes would be written twice)")
    return rows


def run_vote(pairs: str | Path, model: str | None, engine: str, out: str | Path, *,
             votes_per_pair: int = 32, seed: int = 0, temperature: float = 1.0,
             top_p: float = 1.0, max_tokens: int = 1024, reasoning: bool = True,
             order: str = "random", num_shards: int = 1, shard_index: int = 0,
             chunk_pairs: int = 64, model_revision: str | None = None,
             engine_options: dict | None = None, quiet: bool = False) -> dict:
    """The ``evoq-data vote`` stage. Returns a summary (paths and counts)."""
    from tqdm.auto import tqdm

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
    if engine not in ENGINES:
        raise EvoqError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine in ("transformers", "vllm"):
        if not model:
            raise EvoqError(f"engine {engine!r} needs --model")
        check_vlm_checkpoint(model)
    if model and Path(model).is_dir():
        model = os.path.normpath(model)  # "ckpt/" and "ckpt" are the same model
    rows = read_pairs(pairs)
    prompt = compare_prompt(reasoning)
    sampling = Sampling(temperature=temperature, top_p=top_p, max_tokens=max_tokens)
    votes_dir = Path(out)
    if votes_dir.exists() and not votes_dir.is_dir():
        raise EvoqError(f"--out {votes_dir} is a file; VOTES_DIR must be a folder")
    revision = model_revision_of(model, model_revision, engine)
    manifest = {
        "stage": "vote", "schema_version": SCHEMA_VERSION, "evoq_version": __version__,
        "model": model or engine, "model_revision": revision, "engine": engine,
        "prompt_id": prompt.prompt_id, "prompt_sha256": prompt.sha256,
        "prompt_template": prompt.template, "temperature": temperature, "top_p": top_p,
        "max_tokens": max_tokens, "seed": seed, "votes_per_pair": votes_per_pair,
        "order": order, "reasoning": reasoning, "num_shards": num_shards,
        "pairs_file": str(Path(pairs).resolve()), "pairs_sha256": _file_sha256(Path(pairs)),
        "created_at": datetime.now(UTC).isoformat(),
    }
    with ExitStack() as stack:  # closes the engine and releases the shard lock on any exit
        eng = None
        if engine == "openai" and not model:
            # the served model's id is known only once connected: record it, not "openai"
            eng = get_engine(engine, model, model_revision=revision, **(engine_options or {}))
            stack.callback(eng.close)
            manifest["model"] = eng.model
        has_manifest = _check_manifest(votes_dir, manifest)
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
        if eng is None:
            eng = get_engine(engine, model, model_revision=revision, **(engine_options or {}))
            stack.callback(eng.close)
        # Nothing is written before the engine is up, so a failed start leaves no trace.
        stack.enter_context(_shard_lock(votes_dir, shard_index, num_shards))
        for stale in votes_dir.glob(f".votes-{shard_index:05d}-of-{num_shards:05d}-*.tmp"):
            stale.unlink(missing_ok=True)  # leftovers of a killed run of this shard
        todo = pairs_to_do()  # again, under the lock
        summary["pairs_already_done"] = len(mine) - len(todo)
        if not has_manifest:
            _write_manifest(votes_dir, manifest)
        bar = stack.enter_context(tqdm(total=len(mine), initial=len(mine) - len(todo),
                                       desc="pairs", unit="pair", disable=quiet,
                                       dynamic_ncols=True))
        started = time.perf_counter()
        for start in range(0, len(todo), chunk_pairs):
            chunk = todo[start : start + chunk_pairs]
            table = _vote_chunk(eng, chunk, votes_per_pair, seed, order, prompt, sampling)
            _write_shard(table, votes_dir, shard_index, num_shards)
            invalid = int(pa.compute.sum(pa.compute.is_null(table.column("answer"))).as_py())
            summary["pairs_voted"] += len(chunk)
            summary["votes"] += table.num_rows
            summary["invalid_votes"] += invalid
            summary["shards_written"] += 1
            bar.update(len(chunk))
            bar.set_postfix(votes_s=f"{summary['votes'] / (time.perf_counter() - started):.1f}",
                            invalid=summary["invalid_votes"])
        summary["seconds"] = round(time.perf_counter() - started, 3)
        return summary
