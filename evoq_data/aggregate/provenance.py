"""What ``evoq-data aggregate`` checks before it trusts the votes of a VOTES_DIR.

* every shard is readable Parquet with the vote columns (:func:`list_shards`);
* every shard was made with the settings of VOTES_DIR/manifest.json: model, revision,
  engine, prompt, sampling and K (:func:`check_provenance`, from the Parquet footers when
  they prove it, else by scanning);
* the pairs file the votes were made from is there and unchanged (:func:`resolve_pairs_file`);
* every pair of it has all its votes, or the user accepted less (:func:`check_completeness`).

Each refusal is one line naming the shard, row, pair or option.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from evoq_data.core.errors import EvoqError
from evoq_data.core.ids import file_sha256
from evoq_data.core.manifests import manifest_path, read_manifest
from evoq_data.core.schemas import VOTES_SCHEMA
from evoq_data.pairs.read import read_pairs_table

log = logging.getLogger(__name__)

SHARD_GLOB = "votes-*.parquet"  # the vote store's shard names (evoq_data.votes.store)

# The vote columns the aggregation reads (raw_text never; winner_id only to check it).
AGGREGATE_COLUMNS = (
    "pair_id", "vote_index", "image_a_id", "image_a_path", "image_b_id", "image_b_path",
    "swapped", "answer", "winner_id", "parse_status", "model", "model_revision", "engine",
    "prompt_id", "prompt_sha256", "temperature", "top_p", "max_tokens", "seed",
)
# Columns added with adaptive stopping and logprob voting: a shard has all or none of them
# (a shard written before they existed reads them as NULL: K from the manifest, 'fixed').
STOPPING_COLUMNS = ("votes_planned", "stop_reason", "prob_0", "prob_1")
PROVENANCE_FIELDS = (
    "model", "model_revision", "engine", "prompt_id", "prompt_sha256", "temperature",
    "top_p", "max_tokens",
)
MODES = ("sample", "logprob")
STOPS = ("fixed", "decided", "confident")


def _type_kind(t: pa.DataType) -> str:
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_dictionary(t):
        return _type_kind(t.value_type)
    return str(t)


@dataclass(frozen=True)
class VoteShards:
    """The shard files of a VOTES_DIR and whether any has the stopping columns."""

    paths: list[Path]
    with_stopping_columns: int  # shards that have votes_planned, stop_reason, prob_0, prob_1

    @property
    def view(self) -> str:
        """The sql/ file that makes the `votes` view over these shards: all with the
        stopping columns, none (written before they existed), or a mix."""
        if self.with_stopping_columns == len(self.paths):
            return "create_votes_view"
        return "create_legacy_votes_view" if not self.with_stopping_columns else \
            "create_mixed_votes_view"


def list_shards(votes_dir: str | Path) -> VoteShards:
    """Vote shards of VOTES_DIR, each checked for a readable footer and the needed columns."""
    votes_dir = Path(votes_dir)
    if not votes_dir.is_dir():
        raise EvoqError(f"votes folder not found: {votes_dir}")
    shards = sorted(votes_dir.glob(SHARD_GLOB))
    if not shards:
        raise EvoqError(f"no vote shards ({SHARD_GLOB}) in {votes_dir}; run evoq-data vote first")
    with_stopping = 0
    for shard in shards:
        try:
            schema = pq.read_schema(shard)
        except Exception as exc:  # noqa: BLE001 - any reader failure means a broken shard
            raise EvoqError(f"vote shard {shard} is not a readable Parquet file ({exc})") from exc
        missing = [c for c in AGGREGATE_COLUMNS if c not in schema.names]
        if missing:
            raise EvoqError(f"vote shard {shard} lacks column(s) {', '.join(missing)}; "
                            "it does not have the vote schema")
        present = [c for c in STOPPING_COLUMNS if c in schema.names]
        if present and len(present) < len(STOPPING_COLUMNS):
            absent = [c for c in STOPPING_COLUMNS if c not in present]
            raise EvoqError(f"vote shard {shard} has column(s) {', '.join(present)} but not "
                            f"{', '.join(absent)}; it does not have the vote schema")
        with_stopping += bool(present)
        for name in (*AGGREGATE_COLUMNS, *present):
            got, want = schema.field(name).type, VOTES_SCHEMA.field(name).type
            if _type_kind(got) != _type_kind(want):
                raise EvoqError(f"vote shard {shard} has column {name} of type {got}, "
                                f"expected {want}")
    return VoteShards(shards, with_stopping)


def load_vote_manifest(votes_dir: str | Path) -> dict:
    """VOTES_DIR/manifest.json, checked for what the aggregation needs (K, mode, stop)."""
    path = manifest_path(votes_dir)
    if not path.is_file():
        raise EvoqError(f"no {path.name} in {votes_dir}; the folder was not made by "
                        "evoq-data vote")
    manifest = read_manifest(path, "vote manifest")
    k = manifest.get("votes_per_pair")
    if k is None and manifest.get("engine") == "import":
        pass  # imported votes: pairs may have different counts, each row's votes_planned says
    elif not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise EvoqError(f"{path} has votes_per_pair {k!r}; it must be the number of votes "
                        "asked per pair (K, at least 1)")
    if manifest.get("mode", "sample") not in MODES:
        raise EvoqError(f"{path} has mode {manifest.get('mode')!r}; expected one of "
                        f"{', '.join(MODES)}")
    if manifest.get("stop", "fixed") not in STOPS:
        raise EvoqError(f"{path} has stop {manifest.get('stop')!r}; expected one of "
                        f"{', '.join(STOPS)}")
    return manifest


def vote_mode(manifest: dict) -> tuple[str, str]:
    """(mode, stop) of a vote run: 'sample' or 'logprob'; 'fixed', 'decided' or 'confident'
    (runs made before these existed: 'sample', 'fixed')."""
    return manifest.get("mode") or "sample", manifest.get("stop") or "fixed"


def provenance_from_metadata(columns: list[dict]) -> list[dict] | None:
    """Each shard's one provenance read from its Parquet footer statistics
    (sql/check_vote_metadata.sql), or None when the footers of some shard cannot prove it
    has only one. One dict per shard: ``file_name``, PROVENANCE_FIELDS, ``votes_planned``
    (None for a shard without that column), ``votes``, ``seed_min``, ``seed_max``."""
    by_file: dict[str, dict[str, dict]] = {}
    for c in columns:
        by_file.setdefault(c["file_name"], {})[c["column_name"]] = c
    casts = {"temperature": float, "top_p": float, "max_tokens": int}
    groups = []
    for file_name, by_name in sorted(by_file.items()):
        if not all(by_name.get(f, {}).get("single_value") for f in PROVENANCE_FIELDS):
            return None
        seed = by_name.get("seed")
        if not seed or not seed["has_stats"]:
            return None
        planned = by_name.get("votes_planned")
        if planned is not None and not planned["single_value"]:
            return None
        group = {f: casts.get(f, str)(by_name[f]["value"]) for f in PROVENANCE_FIELDS}
        groups.append({"file_name": file_name, **group,
                       "votes_planned": None if planned is None else int(planned["value"]),
                       "votes": int(by_name["model"]["votes"]),
                       "seed_min": seed["min_number"], "seed_max": seed["max_number"]})
    return groups


def _describe(g: dict) -> str:
    return ", ".join(f"{k}={g.get(k)!r}" for k in PROVENANCE_FIELDS)


def merge_runs(file_groups: list[dict]) -> list[dict]:
    """The distinct provenances over all shards (stats.json's ``runs``): PROVENANCE_FIELDS,
    votes and seed range, most votes first."""
    runs: dict[tuple, dict] = {}
    for g in file_groups:
        key = tuple(g[f] for f in PROVENANCE_FIELDS)
        run = runs.setdefault(key, {**{f: g[f] for f in PROVENANCE_FIELDS}, "votes": 0,
                                    "seed_min": None, "seed_max": None})
        run["votes"] += int(g["votes"])
        for k, pick in (("seed_min", min), ("seed_max", max)):
            if g[k] is not None:
                run[k] = g[k] if run[k] is None else pick(run[k], g[k])
    return sorted(runs.values(), key=lambda r: (-r["votes"], *map(str, r.values())))


def check_provenance(file_groups: list[dict], manifest: dict, votes_dir: Path,
                     allow_mixed: bool) -> tuple[list[dict], bool]:
    """Refuse votes from more than one model / prompt / sampling setting, and any shard
    made with other settings or another K than VOTES_DIR/manifest.json (naming the shard),
    unless ``allow_mixed``. Returns the distinct runs and whether the votes are mixed."""
    runs = merge_runs(file_groups)
    mode, _ = vote_mode(manifest)
    reason = ""
    if len(runs) > 1:
        # name a shard that differs from the manifest (else from the largest run)
        other = next((g for g in file_groups
                      if any(f in manifest and g[f] != manifest[f] for f in PROVENANCE_FIELDS)),
                     None) or next(g for g in file_groups
                                   if any(g[f] != runs[0][f] for f in PROVENANCE_FIELDS))
        reason = (f"votes in {votes_dir} come from {len(runs)} different runs: "
                  + "; ".join(f"[{_describe(r)}: {r['votes']} votes]" for r in runs[:3])
                  + f" (e.g. vote shard {other['file_name']})")
    else:
        for g in file_groups:
            diff = [(k, g[k], manifest[k]) for k in PROVENANCE_FIELDS
                    if k in manifest and manifest[k] != g[k]]
            if (mode != "logprob" and g.get("votes_planned") is not None
                    and manifest["votes_per_pair"] is not None
                    and g["votes_planned"] != manifest["votes_per_pair"]):
                diff.append(("votes_planned (K)", g["votes_planned"],
                             manifest["votes_per_pair"]))
            if diff:
                reason = (f"vote shard {g['file_name']} was made with other settings than "
                          f"{manifest_path(votes_dir)}: "
                          + ", ".join(f"{k} {got!r} (manifest: {want!r})"
                                      for k, got, want in diff))
                break
    if reason and not allow_mixed:
        raise EvoqError(f"{reason}; pass --allow-mixed to aggregate them together anyway")
    if reason:
        log.warning("%s (aggregated anyway: --allow-mixed)", reason)
    return runs, bool(reason)


def resolve_pairs_file(manifest: dict, votes_dir: Path, pairs: str | Path | None,
                       allow_incomplete: bool) -> Path | None:
    """The pairs file the votes were made from: ``--pairs`` or the manifest's pairs_file,
    checked against the manifest's pairs_sha256. None (with --allow-incomplete only) when
    there is none to check against."""
    manifest_file = manifest_path(votes_dir)
    if pairs is not None:
        path = Path(pairs)
        if not path.is_file():
            raise EvoqError(f"--pairs {path}: file not found")
    else:
        named = manifest.get("pairs_file")
        path = Path(named) if named else None
        if path is None or not path.is_file():
            where = (f"the pairs file {path} named in {manifest_file} is not there"
                     if path else f"{manifest_file} names no pairs file")
            if allow_incomplete:
                log.warning("%s: the votes are not checked against the pairs they were made "
                            "for (--allow-incomplete)", where)
                return None
            raise EvoqError(f"{where}; pass --pairs PATH (the pairs file the votes were "
                            "made from) to check that every pair has its votes, or "
                            "--allow-incomplete to aggregate without that check")
    want = manifest.get("pairs_sha256")
    if want:
        got = file_sha256(path)
        if got != want:
            raise EvoqError(f"pairs file {path} has sha256 {got[:16]}..., but the votes in "
                            f"{votes_dir} were made from a pairs file with sha256 "
                            f"{want[:16]}... ({manifest_file}); pass --pairs with that file")
    read_pairs_table(path, ("pair_id", "image_a_id", "image_b_id"))  # the one pairs check
    return path


def check_completeness(problems: list[dict], coverage: dict | None, *, votes_dir: Path,
                       expected_votes: int | None, allow_incomplete: bool, locate) -> dict:
    """Refuse votes that are corrupt (a pair's votes duplicated, inconsistent, beyond K,
    without vote 0; pairs the pairs file does not list or lists with other images) and,
    unless ``allow_incomplete``, votes that are incomplete (pairs of the pairs file without
    votes, pairs missing votes). ``problems``: rows of sql/count_incomplete_pairs.sql;
    ``coverage``: the row of sql/check_pair_coverage.sql (None without a pairs file);
    ``locate(pair_id)``: the shard files holding that pair's votes, for the message.
    Returns stats.json's ``completeness``."""
    corrupt = {
        "inconsistent": "its vote rows disagree on votes_planned or stop_reason",
        "duplicated": "a vote_index appears more than once (a shard copied twice?)",
        "no_first_vote": "it has no vote_index 0",
        "too_many": "it has a vote_index at or beyond the votes planned (K)",
    }
    by_problem = {p["problem"]: p for p in problems}
    for problem, why in corrupt.items():
        if problem in by_problem:
            p = by_problem[problem]
            raise EvoqError(f"pair {p['example_pair_id']} in {locate(p['example_pair_id'])}: "
                            f"{why}; {p['pairs']} pair(s) of {votes_dir} have this problem. "
                            "Move the damaged or foreign shard away and rerun evoq-data vote")
    if coverage and coverage["pairs_unlisted"]:
        pid = coverage["example_unlisted"]
        raise EvoqError(f"{coverage['pairs_unlisted']} voted pair(s) are not in the pairs file "
                        f"the votes were made from, e.g. pair {pid} in {locate(pid)}; a shard "
                        "of another run?")
    if coverage and coverage["pairs_changed"]:
        pid = coverage["example_changed"]
        raise EvoqError(f"{coverage['pairs_changed']} voted pair(s) name other images than the "
                        f"pairs file, e.g. pair {pid} in {locate(pid)}")
    missing = by_problem.get("missing", {"pairs": 0, "missing_votes": 0})
    pairs_missing = coverage["pairs_missing"] if coverage else None
    # (imported votes have no one K: a missing pair's votes are then not counted)
    votes_missing = int(missing["missing_votes"]) + (pairs_missing or 0) * (expected_votes or 0)
    complete = not pairs_missing and not missing["pairs"]
    if not complete:
        parts = []
        if pairs_missing:
            parts.append(f"{pairs_missing} of {coverage['pairs_listed']} pairs of the pairs "
                         f"file have no vote (e.g. pair {coverage['example_missing']})")
        if missing["pairs"]:
            pid = missing["example_pair_id"]
            parts.append(f"{missing['pairs']} pair(s) lack {missing['missing_votes']} vote(s) "
                         f"(e.g. pair {pid} in {locate(pid)})")
        what = (f"{votes_dir} is incomplete: " + " and ".join(parts)
                + f", {votes_missing} vote(s) missing in all")
        if not allow_incomplete:
            raise EvoqError(f"{what}; finish the run (rerun evoq-data vote with the same "
                            "settings) or pass --allow-incomplete to aggregate what is there")
        log.warning("%s (aggregated anyway: --allow-incomplete)", what)
    return {
        "complete": complete if coverage else (False if not complete else None),
        "allow_incomplete": allow_incomplete,
        "checked_against_pairs_file": coverage is not None,
        "pairs_listed": coverage["pairs_listed"] if coverage else None,
        "pairs_missing": pairs_missing,
        "pairs_incomplete": int(missing["pairs"]),
        "votes_missing": votes_missing,
    }
