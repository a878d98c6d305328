"""``evoq-data aggregate``: raw votes -> pseudo-preferences, per-image table and statistics.

This module only orchestrates. Every count is computed by the queries in the top-level
``sql/`` folder, run by DuckDB over the vote shards (:mod:`evoq_data.aggregate.duckdb`;
projection pushdown: never ``raw_text``); the inputs are checked by
:mod:`evoq_data.aggregate.provenance`, the scores fitted by
:mod:`evoq_data.aggregate.bradley_terry`, the reports written by
:mod:`evoq_data.aggregate.report`. Files of PREFS_DIR::

    preferences.parquet   one row per kept pair (PREFERENCE_COLUMNS)
    filtered_out.parquet  pairs removed by --min-agreement / --min-valid-votes (+ reason)
    images.parquet        per-image wins, losses, ties, win rate, Bradley-Terry score
    stats.json, stats.md  totals, parse failures, ties, agreement, position bias,
                          provenance, completeness, votes saved by stopping early
    agreement_hist.png, position_bias.png
    manifest.json         stage "aggregate", the vote run's manifest, options, SQL hashes
"""

from __future__ import annotations

import logging
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from evoq_data.aggregate.bradley_terry import DEFAULT_BT_ALPHA, fit_bradley_terry
from evoq_data.aggregate.duckdb import (
    arrow_table,
    connect,
    copy_parquet,
    execute,
    fetch_dicts,
    float_array,
    materialise,
    render_sql,
    run_sql,
)
from evoq_data.aggregate.provenance import (
    AGGREGATE_COLUMNS,
    check_completeness,
    check_provenance,
    list_shards,
    load_vote_manifest,
    provenance_from_metadata,
    resolve_pairs_file,
    vote_mode,
)
from evoq_data.core.errors import EvoqError
from evoq_data.core.io import (
    make_output_dir,
    read_json,
    write_json_atomic,
    write_parquet_atomic,
    write_text_atomic,
)
from evoq_data.core.manifests import new_manifest, write_manifest
from evoq_data.core.resources import sql_hashes

__all__ = ["AGGREGATE_COLUMNS", "IMAGE_COLUMNS", "LABELS", "PREFERENCE_COLUMNS", "Z95",
           "connect", "run_aggregate"]

log = logging.getLogger(__name__)

Z95 = 1.959963984540054  # standard normal quantile of 0.975: 95% Wilson intervals
LABELS = ("hard", "soft")
AGREEMENT_BINS = 10
EXAMPLES = 3  # bad vote rows named in an error

PREFERENCE_COLUMNS = (
    "pair_id", "image_a_id", "image_a_path", "image_b_id", "image_b_path", "votes_a",
    "votes_b", "invalid_votes", "total_votes", "p_star", "vote_fraction_a", "agreement",
    "wilson_low", "wilson_high", "votes_first_shown",
)
IMAGE_COLUMNS = (
    "image_id", "image_path", "wins", "losses", "ties", "comparisons", "win_rate", "bt_score",
)


def warm_imports() -> None:
    """Import what the later steps need (scipy's optimiser, matplotlib; about 1 s) on the
    worker thread while DuckDB, which releases the GIL, reads the votes."""
    import scipy.optimize  # noqa: F401
    import threadpoolctl  # noqa: F401

    from evoq_data.aggregate.report import import_pyplot

    import_pyplot()


def write_preferences(cur, prefs_dir: Path) -> tuple[Path, Path, list[dict]]:
    """preferences.parquet (kept pairs) and, when a filter removed pairs,
    filtered_out.parquet, both ordered by pair_id, from table pair_outcomes; returns their
    paths and the removed pairs per reason. Closes the cursor ``cur``."""
    try:
        prefs_path = copy_parquet(cur, "list_kept_pairs", prefs_dir / "preferences.parquet")
        removed = fetch_dicts(run_sql(cur, "count_filter_reasons"))
        filtered_path = prefs_dir / "filtered_out.parquet"
        filtered_path.unlink(missing_ok=True)
        if removed:
            copy_parquet(cur, "list_filtered_pairs", filtered_path)
        return prefs_path, filtered_path, removed
    finally:
        cur.close()


def check_stopped_soft(label: str, stop: str, votes_dir: Path, allow: bool) -> bool:
    """Soft labels of an adaptive run (``vote --stop decided|confident``) are vote fractions
    over the votes a pair used before it stopped, not over K: refused unless ``allow``
    (``--allow-stopped-soft``), then said on stderr (and in the stats and on the card).
    Returns whether the labels are such soft labels."""
    if label != "soft" or stop == "fixed":
        return False
    why = (f"--label soft on votes of {votes_dir} made with --stop {stop}: a pair that stopped "
           "early has its vote fraction over fewer votes than K, so its soft label is not the "
           "full-K one")
    if not allow:
        raise EvoqError(f"{why}; use --label hard, vote with --stop fixed, or pass "
                        "--allow-stopped-soft to aggregate them anyway (said in stats.json, "
                        "stats.md and on the dataset card)")
    log.warning("%s (aggregated anyway: --allow-stopped-soft)", why)
    return True


def _check_vote_rows(con, logprob: bool, adaptive: bool) -> None:
    """Refuse shards holding vote rows that evoq-data vote cannot have written
    (sql/find_invalid_votes.sql), naming the file and row of the first."""
    bad = fetch_dicts(run_sql(con, "find_invalid_votes", logprob=logprob, adaptive=adaptive,
                              limit=EXAMPLES))
    if bad:
        b = bad[0]
        more = f" ({b['bad_rows'] - 1} more such row(s) in the shards)" if b["bad_rows"] > 1 else ""
        raise EvoqError(f"vote shard {b['file_name']} row {b['file_row_number']} (pair "
                        f"{b['pair_id']}, vote {b['vote_index']}): {b['rule']}{more}; the "
                        "shard was altered after evoq-data vote wrote it: restore it, or move "
                        "it away and rerun evoq-data vote")


def _first_line(exc: Exception) -> str:
    """The first line of an error, printable characters only (a reader's message can quote
    the corrupt bytes)."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return "".join(ch for ch in line if ch.isprintable()).strip() or type(exc).__name__


def _name_broken_shard(shards: list[Path], exc: Exception, votes_dir: Path) -> EvoqError:
    """After a DuckDB error: the one-line error naming the first shard that cannot be read
    on its own (sql/scan_votes.sql over one shard at a time), else the error itself."""
    import duckdb
    import pyarrow.parquet as pq

    for shard in shards:
        new = "votes_planned" in pq.read_schema(shard).names  # (checked by list_shards)
        con = connect(1, "256MB")
        try:
            execute(con, render_sql("create_votes_view" if new else "create_legacy_votes_view",
                                    paths={"files": [shard]}))
            run_sql(con, "scan_votes").fetchall()
        except duckdb.Error as err:
            return EvoqError(f"vote shard {shard} is corrupt ({_first_line(err)}); move it away and "
                             "rerun evoq-data vote for its pairs")
        finally:
            con.close()
    return EvoqError(f"aggregating {votes_dir} failed: {_first_line(exc)}")


def run_aggregate(votes: str | Path, out: str | Path, *, label: str = "hard",
                  min_agreement: float | None = None, min_valid_votes: int | None = None,
                  allow_mixed: bool = False, allow_incomplete: bool = False,
                  pairs: str | Path | None = None, quiet: bool = False,
                  bt_alpha: float = DEFAULT_BT_ALPHA, threads: int | None = None,
                  memory_limit: str = "1GB", lineage: str | Path | None = None,
                  allow_stopped_soft: bool = False) -> dict:
    """The ``evoq-data aggregate`` stage. Returns a summary with the paths written.

    ``lineage``: a JSON object file (who voted these votes, from ``evoq-train evolve``)
    recorded as the manifest's ``evolve`` entry, which ``push`` shows in the card."""
    import duckdb
    from tqdm.auto import tqdm

    from evoq_data.aggregate.report import build_stats, render_stats_md, write_plots

    if label not in LABELS:
        raise EvoqError(f"unknown --label {label!r}; choose one of {', '.join(LABELS)}")
    if min_agreement is not None and not 0.5 <= min_agreement <= 1:
        raise EvoqError(f"--min-agreement must be in [0.5, 1] (agreement is the majority "
                        f"share), got {min_agreement}")
    if min_valid_votes is not None and min_valid_votes < 0:
        raise EvoqError(f"--min-valid-votes must be >= 0, got {min_valid_votes}")
    if bt_alpha <= 0:
        raise EvoqError(f"--bt-alpha must be positive, got {bt_alpha}")
    evolve = None if lineage is None else read_json(lineage, "--lineage file")
    votes_dir, prefs_dir = Path(votes), Path(out)
    if prefs_dir.resolve() == votes_dir.resolve():
        raise EvoqError("--out must be a different folder from --votes")
    started = time.perf_counter()
    shards = list_shards(votes_dir)
    vote_manifest = load_vote_manifest(votes_dir)
    mode, stop = vote_mode(vote_manifest)
    logprob, adaptive = mode == "logprob", stop != "fixed"
    k = vote_manifest["votes_per_pair"]  # None for imported votes of varying counts
    stopped_soft = check_stopped_soft(label, stop, votes_dir, allow_stopped_soft)
    pairs_file = resolve_pairs_file(vote_manifest, votes_dir, pairs, allow_incomplete)
    make_output_dir(prefs_dir)
    tmp_dir = prefs_dir / ".duckdb_tmp"
    steps = tqdm(total=8, desc="aggregate", unit="step", disable=quiet, dynamic_ncols=True)
    con = connect(threads, memory_limit, tmp_dir)
    pool = ThreadPoolExecutor(max_workers=1)  # warm-up imports, then the fit, then plots
    writer = ThreadPoolExecutor(max_workers=1)  # preferences.parquet, on its own cursor
    pool.submit(warm_imports)
    timings: dict[str, float] = {}
    cpu_times: dict[str, float] = {}
    cpu = [time.process_time()]

    def step(name: str, t0: float) -> float:
        timings[name] = round(time.perf_counter() - t0, 3)
        cpu_times[name] = round(time.process_time() - cpu[0], 3)
        cpu[0] = time.process_time()
        log.info("%s: %.2f s wall, %.2f s CPU", name, timings[name], cpu_times[name])
        steps.update(1)
        return time.perf_counter()

    def locate(pair_id: str) -> str:
        rows = fetch_dicts(run_sql(con, "locate_pair_votes", pair_id=pair_id))
        return ", ".join(f"vote shard {r['file_name']} ({r['votes']} of {r['votes_planned'] or k}"
                         f" votes, vote_index {r['min_vote_index']}..{r['max_vote_index']})"
                         for r in rows) or "no shard"

    try:
        t = time.perf_counter()
        execute(con, render_sql(shards.view, paths={"files": shards.paths}))
        execute(con, render_sql("create_vote_metadata_view", paths={"files": shards.paths}))
        groups = provenance_from_metadata(fetch_dicts(run_sql(con, "check_vote_metadata")))
        if groups is None:  # not one value per column in some footer: count by scanning
            groups = fetch_dicts(run_sql(con, "check_vote_provenance"))
        if not groups or not sum(g["votes"] for g in groups):
            raise EvoqError(f"the vote shards in {votes_dir} hold no votes")
        runs, mixed = check_provenance(groups, vote_manifest, votes_dir, allow_mixed)
        t = step("provenance", t)
        _check_vote_rows(con, logprob, adaptive)
        parse_status = {r["parse_status"]: r["votes"]
                        for r in fetch_dicts(run_sql(con, "count_parse_status"))}
        t = step("vote_rows", t)
        materialise(con, "pair_outcomes", "filter_pairs", {"pair_votes": "count_pair_votes"},
                    soft=label == "soft", z=Z95, logprob=logprob, votes_per_pair=k,
                    min_valid_votes=min_valid_votes, min_agreement=min_agreement)
        problems = fetch_dicts(run_sql(con, "count_incomplete_pairs"))
        coverage = None
        if pairs_file is not None:
            execute(con, render_sql("create_pairs_view", paths={"pairs_file": pairs_file}))
            coverage = fetch_dicts(run_sql(con, "check_pair_coverage"))[0]
        completeness = check_completeness(
            problems, coverage, votes_dir=votes_dir, expected_votes=2 if logprob else k,
            allow_incomplete=allow_incomplete, locate=locate)
        completeness["pairs_file_sha256"] = vote_manifest.get("pairs_sha256")
        stopping = fetch_dicts(run_sql(con, "summarize_stopping", logprob=logprob))
        t = step("pairs", t)
        materialise(con, "image_outcomes", "count_image_outcomes")
        materialise(con, "decisive_outcomes", "list_decisive_outcomes")
        edges = run_sql(con, "read_decisive_outcomes").fetchnumpy()
        n_images = run_sql(con, "count_images").fetchall()[0][0]
        # The fit (one core, numpy) runs beside the DuckDB work below, which releases the GIL.
        bt_future = pool.submit(fit_bradley_terry, np.asarray(edges["winner_index"], np.int64),
                                np.asarray(edges["loser_index"], np.int64), n_images, bt_alpha)
        del edges
        # The preferences are written on a second cursor while this one computes the
        # statistics and the fit runs: three jobs, none of which keeps both cores busy alone.
        prefs_future = writer.submit(write_preferences, con.cursor(), prefs_dir)
        t = step("outcomes", t)
        stats_all = fetch_dicts(run_sql(con, "summarize_pairs", kept_only=False))[0]
        hist = fetch_dicts(run_sql(con, "bin_agreement", bins=AGREEMENT_BINS, kept_only=False))
        bias = fetch_dicts(run_sql(con, "measure_position_bias", z=Z95))[0]
        triads = run_sql(con, "count_intransitive_triads").fetchall()[0][0]
        t = step("statistics", t)
        prefs_path, filtered_path, removed = prefs_future.result()
        # (no pair removed: the kept pairs are all pairs, and one scan serves both)
        stats_kept = (fetch_dicts(run_sql(con, "summarize_pairs", kept_only=True))[0]
                      if removed else stats_all)
        t = step("preferences_wait", t)
        scores, bt_info = bt_future.result()
        stats = build_stats(label=label, stats_all=stats_all, stats_kept=stats_kept, hist=hist,
                            bias=bias, parse_status=parse_status, removed=removed,
                            min_agreement=min_agreement, min_valid_votes=min_valid_votes,
                            n_images=n_images, bt_info=bt_info, triads=triads, groups=runs,
                            mixed=mixed, vote_manifest=vote_manifest,
                            completeness=completeness, stopping=stopping,
                            stopped_soft=stopped_soft)
        plots = pool.submit(write_plots, stats, prefs_dir)  # drawn beside images.parquet
        t = step("bradley_terry_wait", t)
        # (DuckDB's register() would import pandas: the scores join in pyarrow instead)
        images = arrow_table(con, "list_images")
        images = images.append_column("bt_score", float_array(scores))
        images_path = write_parquet_atomic(images, prefs_dir / "images.parquet")
        del images
        plots.result()
        t = step("images", t)
    except duckdb.Error as exc:
        raise _name_broken_shard(shards.paths, exc, votes_dir) from None
    finally:
        writer.shutdown(wait=True)
        pool.shutdown(wait=True)
        steps.close()
        con.close()
        shutil.rmtree(tmp_dir, ignore_errors=True)

    total_votes, invalid = stats["votes"]["total"], stats["votes"]["invalid"]
    write_json_atomic(stats, prefs_dir / "stats.json")
    write_text_atomic(render_stats_md(stats), prefs_dir / "stats.md")
    write_manifest(prefs_dir, new_manifest(
        "aggregate", votes_dir=str(votes_dir.resolve()), votes=vote_manifest,
        pairs_file=None if pairs_file is None else str(pairs_file.resolve()),
        shards=[{"file": s.name, "bytes": s.stat().st_size} for s in shards.paths],
        label=label, allow_mixed=allow_mixed, allow_incomplete=allow_incomplete,
        allow_stopped_soft=allow_stopped_soft,
        bt_alpha=bt_alpha,
        filters={"min_agreement": min_agreement, "min_valid_votes": min_valid_votes},
        sql=sql_hashes(), timings_s=timings, cpu_s=cpu_times,
        **({} if evolve is None else {"evolve": evolve})))
    return {
        "prefs_dir": str(prefs_dir), "preferences": str(prefs_path),
        "filtered_out": str(filtered_path) if removed else None, "images": str(images_path),
        "stats": str(prefs_dir / "stats.json"), "pairs": stats["pairs"]["total"],
        "pairs_kept": stats["pairs"]["kept"], "votes": total_votes, "invalid_votes": invalid,
        "complete": completeness["complete"], "votes_saved": stats["stopping"]["votes_saved"],
        "seconds": round(time.perf_counter() - started, 3),
    }
