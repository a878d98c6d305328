"""``evoq-data aggregate``: raw votes -> pseudo-preferences, per-image table and statistics.

Every count is computed by the queries in the top-level ``sql/`` folder, run by DuckDB over the
vote shards (projection pushdown: only the columns named in ``AGGREGATE_COLUMNS`` are read,
never ``raw_text``). Python checks the inputs, runs the queries in order, fits the
Bradley-Terry scores and writes the files of PREFS_DIR::

    preferences.parquet   one row per kept pair (PREFERENCE_COLUMNS)
    filtered_out.parquet  pairs removed by --min-agreement / --min-valid-votes (+ reason)
    images.parquet        per-image wins, losses, ties, win rate, Bradley-Terry score
    stats.json, stats.md  totals, parse failures, ties, agreement, position bias, provenance
    agreement_hist.png, position_bias.png
    manifest.json         stage "aggregate", the vote run's manifest, options, SQL hashes
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from evoq_data import __version__
from evoq_data.core.errors import EvoqError
from evoq_data.core.io import make_output_dir, write_parquet_atomic
from evoq_data.core.resources import read_sql, sql_hashes
from evoq_data.core.schemas import VOTES_SCHEMA

log = logging.getLogger(__name__)

Z95 = 1.959963984540054  # standard normal quantile of 0.975: 95% Wilson intervals
LABELS = ("hard", "soft")
SHARD_GLOB = "votes-*.parquet"  # the vote store's shard names (evoq_data.votes.run)
AGREEMENT_BINS = 10
DEFAULT_BT_ALPHA = 0.1

# The only vote columns the aggregation reads.
AGGREGATE_COLUMNS = (
    "pair_id", "vote_index", "image_a_id", "image_a_path", "image_b_id", "image_b_path",
    "swapped", "answer", "parse_status", "model", "model_revision", "engine", "prompt_id",
    "prompt_sha256", "temperature", "top_p", "max_tokens", "seed",
)
PREFERENCE_COLUMNS = (
    "pair_id", "image_a_id", "image_a_path", "image_b_id", "image_b_path", "votes_a",
    "votes_b", "invalid_votes", "total_votes", "p_star", "vote_fraction_a", "agreement",
    "wilson_low", "wilson_high", "votes_first_shown",
)
IMAGE_COLUMNS = (
    "image_id", "image_path", "wins", "losses", "ties", "comparisons", "win_rate", "bt_score",
)
PROVENANCE_FIELDS = (
    "model", "model_revision", "engine", "prompt_id", "prompt_sha256", "temperature",
    "top_p", "max_tokens",
)


def sql_quote(value: str | Path) -> str:
    """The one place a value is formatted into SQL: a single-quoted string literal (paths
    in table functions and COPY targets, which DuckDB cannot bind as parameters)."""
    return "'" + str(value).replace("'", "''") + "'"


def _type_kind(t: pa.DataType) -> str:
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_floating(t):
        return "float"
    return str(t)


def list_shards(votes_dir: str | Path) -> list[Path]:
    """Vote shards of VOTES_DIR, each checked for a readable footer and the needed columns."""
    votes_dir = Path(votes_dir)
    if not votes_dir.is_dir():
        raise EvoqError(f"votes folder not found: {votes_dir}")
    shards = sorted(votes_dir.glob(SHARD_GLOB))
    if not shards:
        raise EvoqError(f"no vote shards ({SHARD_GLOB}) in {votes_dir}; run evoq-data vote first")
    expected = {name: VOTES_SCHEMA.field(name).type for name in AGGREGATE_COLUMNS}
    for shard in shards:
        try:
            schema = pq.read_schema(shard)
        except Exception as exc:  # noqa: BLE001 - any reader failure means a broken shard
            raise EvoqError(f"vote shard {shard} is not a readable Parquet file ({exc})") from exc
        missing = [c for c in AGGREGATE_COLUMNS if c not in schema.names]
        if missing:
            raise EvoqError(f"vote shard {shard} lacks column(s) {', '.join(missing)}; "
                            "it does not have the vote schema")
        for name, want in expected.items():
            got = schema.field(name).type
            if _type_kind(got) != _type_kind(want):
                raise EvoqError(f"vote shard {shard} has column {name} of type {got}, "
                                f"expected {want}")
    return shards


def load_vote_manifest(votes_dir: str | Path) -> dict:
    path = Path(votes_dir) / "manifest.json"
    if not path.is_file():
        raise EvoqError(f"no manifest.json in {votes_dir}; the folder was not made by "
                        "evoq-data vote")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EvoqError(f"{path} is not readable JSON ({exc})") from exc


def connect(threads: int | None = None, memory_limit: str = "1GB",
            temp_directory: str | Path | None = None):
    """A DuckDB connection set up for streaming aggregation within a memory budget."""
    import duckdb

    if threads is not None and threads < 1:
        raise EvoqError(f"--threads must be at least 1, got {threads}")
    con = duckdb.connect(":memory:")
    con.execute(f"SET threads = {int(threads or os.cpu_count() or 1)}")
    try:
        con.execute("SET memory_limit = $m", {"m": memory_limit})
    except duckdb.Error as exc:
        con.close()
        raise EvoqError(f"--memory-limit {memory_limit!r} is not a size such as 1GB or "
                        f"512MB ({str(exc).splitlines()[0]})") from None
    con.execute("SET preserve_insertion_order = false")
    con.execute("SET enable_progress_bar = false")  # it would write to stdout
    con.execute("SET enable_external_file_cache = false")  # votes are read once: no cache
    if temp_directory is not None:
        con.execute(f"SET temp_directory = {sql_quote(temp_directory)}")
    con.execute(read_sql("define_wilson_macros"))
    return con


def run_sql(con, name: str, **params):
    """Run ``sql/<name>.sql`` with its parameters bound; returns the DuckDB result."""
    return con.execute(read_sql(name).strip().rstrip(";"), params)


def materialise(con, table: str, name: str, inputs: dict[str, str] | None = None,
                **params) -> None:
    """Store the result of ``sql/<name>.sql`` as table ``table`` of the in-memory database
    (not a TEMP table: those are private to one connection, and the preferences are written
    on a second cursor). ``inputs`` maps a relation the query reads to another sql/ file
    computing it, composed as a CTE, so an intermediate result is never stored."""
    sql = read_sql(name).strip().rstrip(";")
    if inputs:
        ctes = ",\n".join(f"{rel} AS (\n{read_sql(src).strip().rstrip(';')}\n)"
                          for rel, src in inputs.items())
        sql = f"WITH {ctes}\n{sql}"
    con.execute(f"CREATE OR REPLACE TABLE {table} AS\n{sql}", params)


def float_array(values: np.ndarray) -> pa.Array:
    """A float64 Arrow array of ``values`` with NaN as null. Built from the buffers:
    ``pa.array`` on a numpy array imports pandas (about 1 s of start-up)."""
    values = np.ascontiguousarray(values, dtype=np.float64)
    valid = np.packbits(~np.isnan(values), bitorder="little")
    return pa.Array.from_buffers(pa.float64(), len(values),
                                 [pa.py_buffer(valid), pa.py_buffer(values)])


def fetch_dicts(result) -> list[dict]:
    cols = [d[0] for d in result.description]
    return [dict(zip(cols, row, strict=True)) for row in result.fetchall()]


def copy_parquet(con, select: str, path: Path) -> Path:
    """Write a query's rows to ``path`` (zstd Parquet, level 1: half the CPU of the default
    level for a few percent more bytes) through a temp file and a rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    con.execute(f"COPY ({select}) TO {sql_quote(tmp)} "
                "(FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1)")
    os.replace(tmp, path)
    return path


def check_provenance(groups: list[dict], manifest: dict, votes_dir: Path,
                     allow_mixed: bool) -> bool:
    """Refuse votes from more than one model / prompt / sampling setting (or ones that
    disagree with manifest.json) unless ``allow_mixed``. Returns whether they are mixed."""
    def describe(g: dict) -> str:
        return ", ".join(f"{k}={g.get(k)!r}" for k in PROVENANCE_FIELDS)

    mixed = len(groups) > 1
    reason = ""
    if mixed:
        reason = (f"votes in {votes_dir} come from {len(groups)} different runs: "
                  + "; ".join(f"[{describe(g)}: {g['votes']} votes]" for g in groups[:3]))
    elif groups:
        diff = [k for k in PROVENANCE_FIELDS if k in manifest and manifest[k] != groups[0][k]]
        if diff:
            mixed = True
            reason = (f"votes in {votes_dir} disagree with its manifest.json on "
                      + ", ".join(f"{k} ({groups[0][k]!r} vs {manifest[k]!r})" for k in diff))
    if mixed and not allow_mixed:
        raise EvoqError(f"{reason}; pass --allow-mixed to aggregate them together anyway")
    if mixed:
        log.warning("%s (aggregated anyway: --allow-mixed)", reason)
    return mixed


def provenance_from_metadata(columns: list[dict]) -> list[dict] | None:
    """The one provenance of the votes read from Parquet footer statistics
    (sql/check_vote_metadata.sql), or None when the footers cannot prove there is only one."""
    by_name = {c["column_name"]: c for c in columns}
    if not all(by_name.get(f, {}).get("single_value") for f in PROVENANCE_FIELDS):
        return None
    seed = by_name.get("seed")
    if not seed or not seed["has_stats"]:
        return None
    casts = {"temperature": float, "top_p": float, "max_tokens": int}
    group = {f: casts.get(f, str)(by_name[f]["value"]) for f in PROVENANCE_FIELDS}
    return [{**group, "votes": int(by_name["model"]["votes"]), "seed_min": seed["min_number"],
             "seed_max": seed["max_number"]}]


def warm_imports() -> None:
    """Import what the later steps need (scipy's optimiser, matplotlib; about 1 s) on the
    worker thread while DuckDB, which releases the GIL, reads the votes."""
    import scipy.optimize  # noqa: F401
    import threadpoolctl  # noqa: F401

    from evoq_data.aggregate.report import import_pyplot

    import_pyplot()


def fit_bradley_terry(winners: np.ndarray, losers: np.ndarray, n_items: int,
                      alpha: float = DEFAULT_BT_ALPHA) -> tuple[np.ndarray, dict]:
    """Penalised maximum-likelihood Bradley-Terry scores (log-strengths).

    Minimises ``alpha * sum(theta**2) + sum_k log(1 + exp(-(theta[w_k] - theta[l_k])))``, the
    objective of ``choix.opt_pairwise`` (choix's L2 regularisation), with scipy's L-BFGS and
    vectorised gradients, so memory stays O(items + comparisons) where choix's solvers build
    dense items x items matrices. Items without a comparison get NaN. The optimum sums to zero
    over the compared items (the penalty's gradient balances the likelihood's, which sums to 0).
    """
    from scipy.optimize import minimize
    from threadpoolctl import threadpool_limits

    scores = np.full(n_items, np.nan)
    if len(winners) == 0:
        return scores, {"alpha": alpha, "items": 0, "comparisons": 0, "converged": True,
                        "iterations": 0, "log_likelihood": 0.0}
    if alpha <= 0:
        raise EvoqError(f"--bt-alpha must be positive (an unpenalised fit diverges for any "
                        f"image that never lost), got {alpha}")
    started = time.perf_counter()
    w, lo, m = winners, losers, n_items
    compared = (np.bincount(w, minlength=m) + np.bincount(lo, minlength=m)) > 0

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        d = theta[w] - theta[lo]
        e = np.exp(-np.abs(d))  # one exp serves both the loss and its derivative
        value = alpha * float(np.square(theta).sum()) + float(
            (np.maximum(-d, 0.0) + np.log1p(e)).sum())  # log(1 + exp(-d)), stable
        z = np.where(d >= 0, e, 1.0) / (1.0 + e)  # sigmoid(-d) = -d/dd log(1 + exp(-d))
        grad = 2 * alpha * theta - np.bincount(w, z, m) + np.bincount(lo, z, m)
        return value, grad

    # One BLAS thread: L-BFGS works on single vectors, where threaded BLAS only adds
    # synchronisation (100x slower on a busy 2-core machine).
    with threadpool_limits(1, user_api="blas"):
        res = minimize(objective, np.zeros(m), jac=True, method="L-BFGS-B",
                       options={"maxiter": 10_000, "gtol": 1e-6, "ftol": 1e-11,
                                "maxcor": 5})  # history: 2 x 5 vectors of n_items
    theta = res.x - res.x[compared].mean()  # (items never compared get NaN below)
    scores[compared] = theta[compared]
    loglik = -float(np.logaddexp(0.0, -(theta[w] - theta[lo])).sum())
    return scores, {"alpha": alpha, "items": int(compared.sum()), "comparisons": int(len(w)),
                    "converged": bool(res.success), "iterations": int(res.nit),
                    "log_likelihood": loglik,
                    "seconds": round(time.perf_counter() - started, 3)}


def write_preferences(cur, prefs_dir: Path) -> tuple[Path, Path, list[dict]]:
    """preferences.parquet (kept pairs) and, when a filter removed pairs,
    filtered_out.parquet, both ordered by pair_id, from table pair_outcomes; returns their
    paths and the removed pairs per reason. Closes the cursor ``cur``."""
    try:
        cols = ", ".join(PREFERENCE_COLUMNS)
        prefs_path = copy_parquet(
            cur, f"SELECT {cols} FROM pair_outcomes WHERE reason IS NULL ORDER BY pair_id",
            prefs_dir / "preferences.parquet")
        removed = fetch_dicts(run_sql(cur, "count_filter_reasons"))
        filtered_path = prefs_dir / "filtered_out.parquet"
        filtered_path.unlink(missing_ok=True)
        if removed:
            copy_parquet(cur, f"SELECT {cols}, reason FROM pair_outcomes "
                              "WHERE reason IS NOT NULL ORDER BY pair_id", filtered_path)
        return prefs_path, filtered_path, removed
    finally:
        cur.close()


def run_aggregate(votes: str | Path, out: str | Path, *, label: str = "hard",
                  min_agreement: float | None = None, min_valid_votes: int | None = None,
                  allow_mixed: bool = False, quiet: bool = False,
                  bt_alpha: float = DEFAULT_BT_ALPHA, threads: int | None = None,
                  memory_limit: str = "1GB") -> dict:
    """The ``evoq-data aggregate`` stage. Returns a summary with the paths written."""
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
    votes_dir, prefs_dir = Path(votes), Path(out)
    if prefs_dir.resolve() == votes_dir.resolve():
        raise EvoqError("--out must be a different folder from --votes")
    started = time.perf_counter()
    shards = list_shards(votes_dir)
    vote_manifest = load_vote_manifest(votes_dir)
    make_output_dir(prefs_dir)
    tmp_dir = prefs_dir / ".duckdb_tmp"
    steps = tqdm(total=7, desc="aggregate", unit="step", disable=quiet, dynamic_ncols=True)
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

    try:
        t = time.perf_counter()
        files = ", ".join(sql_quote(s) for s in shards)
        columns = ", ".join(AGGREGATE_COLUMNS)
        con.execute(f"CREATE VIEW votes AS SELECT {columns} FROM read_parquet([{files}])")
        con.execute(f"CREATE VIEW vote_metadata AS SELECT * FROM parquet_metadata([{files}])")
        groups = provenance_from_metadata(fetch_dicts(run_sql(con, "check_vote_metadata")))
        if groups is None:  # not one value per column in the footers: count by scanning
            groups = fetch_dicts(run_sql(con, "check_vote_provenance"))
        if not groups or not groups[0]["votes"]:
            raise EvoqError(f"the vote shards in {votes_dir} hold no votes")
        mixed = check_provenance(groups, vote_manifest, votes_dir, allow_mixed)
        parse_status = {r["parse_status"]: r["votes"]
                        for r in fetch_dicts(run_sql(con, "count_parse_status"))}
        t = step("provenance", t)
        materialise(con, "pair_outcomes", "filter_pairs", {"pair_votes": "count_pair_votes"},
                    soft=label == "soft", z=Z95, min_valid_votes=min_valid_votes,
                    min_agreement=min_agreement)
        bad = fetch_dicts(run_sql(con, "find_incomplete_pairs", limit=3))
        if bad:
            b = bad[0]
            raise EvoqError(
                f"pair {b['pair_id']} has {b['total_votes']} votes but vote_index runs "
                f"{b['min_vote_index']}..{b['max_vote_index']}: duplicated or missing vote "
                f"shards in {votes_dir} (a shard copied twice?)")
        t = step("pairs", t)
        materialise(con, "image_outcomes", "count_image_outcomes")
        materialise(con, "decisive_outcomes", "list_decisive_outcomes")
        edges = con.execute("SELECT winner_index, loser_index FROM decisive_outcomes").fetchnumpy()
        n_images = con.execute("SELECT count(*) FROM image_outcomes").fetchall()[0][0]
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
                            n_images=n_images, bt_info=bt_info, triads=triads, groups=groups,
                            mixed=mixed, vote_manifest=vote_manifest)
        plots = pool.submit(write_plots, stats, prefs_dir)  # drawn beside images.parquet
        t = step("bradley_terry_wait", t)
        # (DuckDB's register() would import pandas: the scores join in pyarrow instead)
        images = con.sql("SELECT image_id, image_path, wins, losses, ties, comparisons, "
                         "win_rate FROM image_outcomes ORDER BY image_index").to_arrow_table()
        images = images.append_column("bt_score", float_array(scores))
        images_path = write_parquet_atomic(images, prefs_dir / "images.parquet")
        del images
        plots.result()
        t = step("images", t)
    except duckdb.Error as exc:
        raise EvoqError(f"aggregating {votes_dir} failed: {exc}") from exc
    finally:
        writer.shutdown(wait=True)
        pool.shutdown(wait=True)
        steps.close()
        con.close()
        shutil.rmtree(tmp_dir, ignore_errors=True)

    total_votes, invalid = stats["votes"]["total"], stats["votes"]["invalid"]
    (prefs_dir / "stats.json").write_text(json.dumps(stats, indent=2, default=str) + "\n")
    (prefs_dir / "stats.md").write_text(render_stats_md(stats))
    manifest = {
        "stage": "aggregate", "evoq_version": __version__,
        "created_at": datetime.now(UTC).isoformat(), "votes_dir": str(votes_dir.resolve()),
        "votes": vote_manifest,
        "shards": [{"file": s.name, "bytes": s.stat().st_size} for s in shards],
        "label": label, "allow_mixed": allow_mixed, "bt_alpha": bt_alpha,
        "filters": {"min_agreement": min_agreement, "min_valid_votes": min_valid_votes},
        "sql": sql_hashes(), "timings_s": timings, "cpu_s": cpu_times,
    }
    (prefs_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    return {
        "prefs_dir": str(prefs_dir), "preferences": str(prefs_path),
        "filtered_out": str(filtered_path) if removed else None, "images": str(images_path),
        "stats": str(prefs_dir / "stats.json"), "pairs": stats["pairs"]["total"],
        "pairs_kept": stats["pairs"]["kept"], "votes": total_votes, "invalid_votes": invalid,
        "seconds": round(time.perf_counter() - started, 3),
    }
