"""The vote store: VOTES_DIR on disk, written crash-safe and read back checked.

Layout of VOTES_DIR::

    manifest.json                                  run identity (model, prompt, sampling, ...)
    votes-00000-of-00001-<chunk hash>.parquet      complete pairs only, renamed into place
    .lock-00000-of-00001                           the lock of the worker voting shard 0

Every shard file holds all votes of each of its pairs and appears by an atomic rename, so a
crash at any moment loses at most the chunk in flight, and a rerun of the same command skips
the pairs already on disk.
"""

from __future__ import annotations

import hashlib
import logging
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from evoq_data.core.errors import EvoqError
from evoq_data.core.io import create_json_exclusive, write_parquet_atomic
from evoq_data.core.manifests import manifest_path, read_manifest
from evoq_data.generation.spec import engine_args_changes
from evoq_data.pairs.read import read_pairs  # noqa: F401 - (votes' import of the one reader)

log = logging.getLogger(__name__)

SHARD_GLOB = "votes-*.parquet"
MAX_SHARDS = 99_999  # a shard file's name holds its index and count in five digits
# Fields that must match to add votes to an existing VOTES_DIR (and every --engine-arg but the
# openai engine's transport: generation.spec.engine_args_changes).
IDENTITY_FIELDS = (
    "model", "model_revision", "engine", "prompt_id", "prompt_sha256", "temperature", "top_p",
    "max_tokens", "seed", "votes_per_pair", "order", "mode", "stop", "wave", "confidence",
    "num_shards", "pairs_sha256",
)


def shard_name(shard_index: int, num_shards: int) -> str:
    return f"{shard_index:05d}-of-{num_shards:05d}"


def _identity_diff(old: dict, new: dict) -> list[str]:
    """What differs, one ``field: old -> new`` phrase each."""
    diff = [f"{f}: {old.get(f)!r} -> {new.get(f)!r}" for f in IDENTITY_FIELDS
            if old.get(f) != new.get(f)]
    return diff + engine_args_changes(old.get("engine_args"), new.get("engine_args") or {})


def claim_manifest(votes_dir: Path, manifest: dict) -> bool:
    """Make ``manifest`` the manifest of VOTES_DIR, or check it against the one there.

    The claim is atomic and exclusive: the manifest is written to a temp file and linked to
    ``manifest.json`` (a link fails when the name exists), so of two workers started together
    with different settings exactly one claims the folder and the other is refused, naming
    the differing fields. Returns True when this call created the manifest."""
    path = manifest_path(votes_dir)
    if create_json_exclusive(manifest, path):
        return True
    old = read_manifest(path, "vote manifest")
    diff = _identity_diff(old, manifest)
    if diff:
        details = "; ".join(diff)
        raise EvoqError(
            f"{votes_dir} already holds votes made with other settings ({details}); "
            "use a new --out folder or the original settings"
        )
    return False


def release_manifest(votes_dir: Path, remove_folder: bool = False) -> None:
    """Undo a claim when the run wrote no vote (an engine that failed to start); with
    ``remove_folder``, also the folder the run created, when nothing else is in it."""
    if any(votes_dir.glob(SHARD_GLOB)):
        return
    manifest_path(votes_dir).unlink(missing_ok=True)
    if remove_folder:
        for lock in votes_dir.glob(".lock-*"):
            lock.unlink(missing_ok=True)
        try:
            votes_dir.rmdir()
        except OSError:
            pass  # not empty: someone else's files stay


def done_pair_ids(votes_dir: Path) -> set[str]:
    """Pairs that already have a complete shard on disk."""
    done: set[str] = set()
    for shard in sorted(votes_dir.glob(SHARD_GLOB)):
        try:
            ids = pq.read_table(shard, columns=["pair_id"]).column("pair_id").to_pylist()
        except Exception as exc:  # noqa: BLE001 - any reader failure means a broken shard
            raise EvoqError(f"vote shard {shard} is unreadable ({exc}); move it away and "
                            "rerun") from exc
        done.update(ids)
    return done


def write_shard(table: pa.Table, votes_dir: Path, shard_index: int, num_shards: int) -> Path:
    """Write one chunk of complete pairs as a shard file: temp file, fsync, rename."""
    ids = ",".join(sorted(set(table.column("pair_id").to_pylist())))
    tag = hashlib.sha256(ids.encode()).hexdigest()[:16]
    final = votes_dir / f"votes-{shard_name(shard_index, num_shards)}-{tag}.parquet"
    return write_parquet_atomic(table, final)


def attempts_file(votes_dir: Path, shard_index: int, num_shards: int, chunk: int) -> Path:
    """Where a Ray worker counts its attempts at chunk number ``chunk`` of this shard: a
    temp file, removed with the others."""
    return votes_dir / f".votes-{shard_name(shard_index, num_shards)}-chunk{chunk}.attempts.tmp"


def remove_stale_temp_files(votes_dir: Path, shard_index: int, num_shards: int) -> None:
    """Temp files a killed worker of this shard left behind, and the Ray workers' attempt
    counts (called under the shard lock)."""
    for stale in votes_dir.glob(f".votes-{shard_name(shard_index, num_shards)}-*.tmp"):
        stale.unlink(missing_ok=True)


@contextmanager
def shard_lock(votes_dir: Path, shard_index: int, num_shards: int):
    """Hold an exclusive lock on this shard of VOTES_DIR: two workers given the same
    --shard-index would delete each other's temporary files and double votes. (flock works
    on local disks and on NFSv4; on a filesystem without locks it is a no-op.)"""
    import fcntl

    votes_dir.mkdir(parents=True, exist_ok=True)
    path = votes_dir / f".lock-{shard_name(shard_index, num_shards)}"
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
