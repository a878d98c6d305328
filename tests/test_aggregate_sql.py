"""Each sql/ file of the aggregation on its own, against duckdb.connect(":memory:"), exact rows."""

from __future__ import annotations

import itertools
import math

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from evoq_data.aggregate import sql_quote
from evoq_data.aggregate.duckdb import connect, execute, render_sql, run_sql
from evoq_data.aggregate.provenance import AGGREGATE_COLUMNS, provenance_from_metadata
from evoq_data.aggregate.run import PREFERENCE_COLUMNS, Z95
from evoq_data.core.resources import read_sql, sql_path
from evoq_data.core.schemas import VOTES_SCHEMA

DUCKDB_TYPES = {pa.string(): "VARCHAR", pa.int32(): "INTEGER", pa.int64(): "BIGINT",
                pa.int8(): "TINYINT", pa.bool_(): "BOOLEAN", pa.float64(): "DOUBLE",
                pa.timestamp("us", tz="UTC"): "TIMESTAMPTZ"}
# the `votes` relation as sql/create_votes_view.sql makes it: every vote column, the shard
# file and the row number in it
VOTES_DDL = ", ".join([f"{f.name} {DUCKDB_TYPES[f.type]}" for f in VOTES_SCHEMA]
                      + ["filename VARCHAR", "file_row_number BIGINT"])
PAIR_VOTES_DDL = ("pair_id VARCHAR, image_a_id VARCHAR, image_a_path VARCHAR, "
                  "image_b_id VARCHAR, image_b_path VARCHAR, votes_a BIGINT, votes_b BIGINT, "
                  "invalid_votes BIGINT, total_votes BIGINT, p_star DOUBLE, "
                  "vote_fraction_a DOUBLE, agreement DOUBLE, wilson_low DOUBLE, "
                  "wilson_high DOUBLE, votes_first_shown BIGINT, outcome TINYINT")
PAIR_PARAMS = {"soft": False, "z": Z95, "logprob": False, "votes_per_pair": 4}


def q(name: str) -> str:
    return read_sql(name).strip().rstrip(";")


@pytest.fixture
def con():
    c = duckdb.connect(":memory:")
    c.execute(read_sql("define_wilson_macros"))
    yield c
    c.close()


def add_votes(con, rows, **extra):
    """rows: (pair_id, vote_index, a, b, swapped, answer, parse_status, model, temperature,
    seed); ``extra``: more columns, the same for every row (e.g. votes_planned=4)."""
    con.execute(f"CREATE TABLE IF NOT EXISTS votes ({VOTES_DDL})")
    names = ", ".join(extra)
    for n, (pair_id, vi, a, b, swapped, answer, status, model, temp, seed) in enumerate(rows):
        shown = (b, a) if swapped else (a, b)
        winner = None if answer not in (0, 1) or swapped is None else shown[answer]
        con.execute(
            "INSERT INTO votes (pair_id, vote_index, image_a_id, image_b_id, image_a_path, "
            "image_b_path, swapped, raw_text, answer, winner_id, parse_status, model, "
            "model_revision, engine, prompt_id, prompt_sha256, temperature, top_p, max_tokens, "
            f"seed, filename, file_row_number{', ' + names if extra else ''}) VALUES "
            "(?, ?, ?, ?, ?, ?, ?, 'text', ?, ?, ?, ?, 'r', 'e', 'cmp', 'sha', ?, 1.0, 64, ?, "
            f"'votes-0.parquet', ?{', ?' * len(extra)})",
            [pair_id, vi, a, b, f"{a}.png", f"{b}.png", swapped, answer, winner, status, model,
             temp, seed, n, *extra.values()])


def add_pair_outcomes(con, rows, table="pair_outcomes"):
    """rows: (pair_id, a, b, votes_a, votes_b, invalid, agreement, first_shown, reason)"""
    con.execute(f"CREATE TABLE {table} ({PAIR_VOTES_DDL}, reason VARCHAR)")
    for pid, a, b, va, vb, inv, agr, first, reason in rows:
        outcome = None if va + vb == 0 else (va > vb) - (va < vb)
        con.execute(f"INSERT INTO {table} (pair_id, image_a_id, image_a_path, image_b_id, "
                    "image_b_path, votes_a, votes_b, invalid_votes, total_votes, agreement, "
                    "votes_first_shown, outcome, reason) VALUES "
                    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [pid, a, f"{a}.png", b, f"{b}.png", va, vb, inv, va + vb + inv, agr, first,
                     outcome, reason])


def test_wilson_macros(con):
    lo, hi, none = con.execute("SELECT wilson_low(3, 4, $z), wilson_high(3, 4, $z), "
                               "wilson_low(0, 0, $z)", {"z": Z95}).fetchall()[0]
    assert (round(lo, 4), round(hi, 4), none) == (0.3006, 0.9544, None)
    lo, hi = con.execute("SELECT wilson_low(0, 10, $z), wilson_high(10, 10, $z)",
                         {"z": Z95}).fetchall()[0]
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(1.0)


def test_count_parse_status(con):
    add_votes(con, [("p", i, "a", "b", False, None if s != "ok" else 0, s, "m", 1.0, 0)
                    for i, s in enumerate(["ok", "ok", "no_box", "ok", "empty", "no_box"])])
    assert con.execute(q("count_parse_status")).fetchall() == [
        ("ok", 3), ("no_box", 2), ("empty", 1)]


def test_sql_quote_survives_quotes_in_paths(tmp_path):
    odd = tmp_path / "it's here"
    odd.mkdir()
    path = odd / "votes-0.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), path)
    assert duckdb.connect().execute(
        f"SELECT sum(x) FROM read_parquet([{sql_quote(path)}])").fetchall() == [(3,)]


def test_filter_pairs(con):
    con.execute(f"CREATE TABLE pair_votes ({PAIR_VOTES_DDL}, min_vote_index INTEGER, "
                "max_vote_index INTEGER)")
    for pid, va, vb, agr in [("a", 9, 1, 0.9), ("b", 6, 4, 0.6), ("c", 2, 1, 2 / 3),
                             ("d", 0, 0, None)]:
        con.execute("INSERT INTO pair_votes (pair_id, votes_a, votes_b, agreement) "
                    "VALUES (?, ?, ?, ?)", [pid, va, vb, agr])
    sql = q("filter_pairs") + " ORDER BY pair_id"

    def reasons(**params):
        return [(r[0], r[-1]) for r in con.execute(sql, params).fetchall()]

    assert reasons(min_valid_votes=None, min_agreement=None) == [
        ("a", None), ("b", None), ("c", None), ("d", None)]
    assert reasons(min_valid_votes=None, min_agreement=0.9) == [
        ("a", None), ("b", "min_agreement"), ("c", "min_agreement"), ("d", "min_agreement")]
    assert reasons(min_valid_votes=10, min_agreement=0.6) == [
        ("a", None), ("b", None), ("c", "min_valid_votes"),
        ("d", "min_valid_votes,min_agreement")]
    cols = [d[0] for d in con.execute(sql, {"min_valid_votes": None,
                                            "min_agreement": None}).description]
    assert cols[:5] == ["pair_id", "image_a_id", "image_a_path", "image_b_id", "image_b_path"]
    assert "max_vote_index" in cols and cols[-1] == "reason"


OUTCOMES = [  # pair, a, b, votes_a, votes_b, invalid, agreement, first_shown, reason
    ("p1", "A", "B", 3, 1, 0, 0.75, 3, None),
    ("p2", "B", "C", 2, 2, 1, 0.5, 1, None),
    ("p3", "C", "A", 0, 0, 4, None, 0, None),
    ("p4", "A", "C", 1, 4, 0, 0.8, 2, "min_agreement"),
]


def test_summarize_pairs(con):
    add_pair_outcomes(con, OUTCOMES)
    row = con.execute(q("summarize_pairs"), {"kept_only": False}).fetchall()[0]
    assert row[:7] == (4, 1, 1, 2, 18, 13, 5)
    agr = sorted([0.75, 0.5, 0.8])
    assert row[7] == pytest.approx(sum(agr) / 3)
    assert row[10] == pytest.approx(0.75)  # median
    assert row[8] == pytest.approx(np.quantile(agr, 0.1))
    kept = con.execute(q("summarize_pairs"), {"kept_only": True}).fetchall()[0]
    assert kept[:7] == (3, 1, 1, 1, 13, 8, 5)


def test_bin_agreement(con):
    add_pair_outcomes(con, OUTCOMES + [("p5", "D", "E", 5, 0, 0, 1.0, 5, None),
                                       ("p6", "D", "F", 11, 9, 0, 0.55, 5, None),
                                       ("p7", "E", "F", 7, 3, 0, 7 / 10, 5, None)])
    rows = con.execute(q("bin_agreement"), {"bins": 5, "kept_only": False}).fetchall()
    assert [(r[0], round(r[1], 2), round(r[2], 2), r[3]) for r in rows] == [
        (0, 0.5, 0.6, 2), (1, 0.6, 0.7, 0), (2, 0.7, 0.8, 2), (3, 0.8, 0.9, 1),
        (4, 0.9, 1.0, 1)]
    kept = con.execute(q("bin_agreement"), {"bins": 5, "kept_only": True}).fetchall()
    assert [r[3] for r in kept] == [2, 0, 2, 0, 1]


def test_measure_position_bias(con):
    add_pair_outcomes(con, OUTCOMES)
    row = con.execute(q("measure_position_bias"), {"z": Z95}).fetchall()[0]
    lo, hi = con.execute("SELECT wilson_low(6, 13, $z), wilson_high(6, 13, $z)",
                         {"z": Z95}).fetchall()[0]
    assert row == (6, 13, pytest.approx(6 / 13), lo, hi)


def test_count_filter_reasons(con):
    add_pair_outcomes(con, OUTCOMES + [("p5", "D", "E", 1, 0, 0, 1.0, 1, "min_valid_votes"),
                                       ("p6", "D", "F", 1, 1, 0, 0.5, 1, "min_agreement")])
    assert con.execute(q("count_filter_reasons")).fetchall() == [
        ("min_agreement", 2, 7), ("min_valid_votes", 1, 1)]


def test_count_image_outcomes_and_list_decisive_outcomes(con):
    add_pair_outcomes(con, OUTCOMES)
    con.execute(f"CREATE TABLE image_outcomes AS {q('count_image_outcomes')}")
    rows = con.execute("SELECT * FROM image_outcomes ORDER BY image_index").fetchall()
    # kept: A>B (p1), B=C tie (p2), C-A no valid vote (p3); p4 filtered out
    assert rows == [(0, "A", "A.png", 1, 0, 0, 1, 1.0), (1, "B", "B.png", 0, 1, 1, 2, 0.25),
                    (2, "C", "C.png", 0, 0, 1, 1, 0.5)]
    assert con.execute(q("list_decisive_outcomes")).fetchall() == [(0, 1)]


def test_count_intransitive_triads_against_brute_force(con):
    rng = np.random.default_rng(1)
    n = 9
    edges = []
    for x, y in itertools.combinations(range(n), 2):
        if rng.random() < 0.7:
            edges.append((x, y) if rng.random() < 0.5 else (y, x))
    edges.append(edges[0])  # a repeated outcome counts once
    con.execute("CREATE TABLE decisive_outcomes (winner_index BIGINT, loser_index BIGINT)")
    con.executemany("INSERT INTO decisive_outcomes VALUES (?, ?)", edges)
    beats = set(edges)
    expected = sum(1 for x, y, z in itertools.permutations(range(n), 3)
                   if (x, y) in beats and (y, z) in beats and (z, x) in beats) // 3
    assert expected > 0
    assert con.execute(q("count_intransitive_triads")).fetchall() == [(expected,)]


def test_sql_files_live_in_top_level_sql_folder():
    assert sql_path("count_pair_votes").parent.name == "sql"
    assert math.isclose(Z95, 1.959963984540054)


def test_every_sql_file_has_a_header_naming_it_and_its_parameters():
    import re

    from evoq_data.core.resources import sql_hashes

    for name in sql_hashes():
        text = read_sql(name)
        assert text.startswith(f"-- name: {name.removesuffix('.sql')}\n"), name
        header = "\n".join(line for line in text.splitlines() if line.startswith("--"))
        code = "\n".join(line for line in text.splitlines() if not line.startswith("--"))
        assert "Parameters:" in header, name
        for param in set(re.findall(r"\$([a-z_]+)", code)):
            assert f"${param}" in header, (name, param)
        placeholders = set(re.findall(r"\{([a-z_]+)\}", code))
        assert all(f"{{{p}}}" in header for p in placeholders), name
        assert ("Template:" in header) == bool(placeholders), name


def test_render_sql_quotes_paths_and_checks_placeholders(tmp_path):
    sql = render_sql("create_votes_view", paths={"files": ["/a/it's.parquet", tmp_path]})
    assert f"read_parquet(['/a/it''s.parquet', '{tmp_path}'], filename" in sql
    assert "--" not in sql  # the header (which names the placeholder too) is left out
    with pytest.raises(ValueError, match="takes"):
        render_sql("create_votes_view")
    with pytest.raises(ValueError, match="identifier"):
        render_sql("create_table", identifiers={"table": "x; DROP"}, queries={"query": "1"})


def test_configure_connection(tmp_path):
    c = connect(2, "300MB", tmp_path / "spill")
    try:
        got = c.execute("SELECT current_setting('threads'), current_setting('memory_limit'), "
                        "current_setting('temp_directory'), "
                        "current_setting('preserve_insertion_order')").fetchall()[0]
        assert got[0] == 2 and got[1].startswith("286") and got[2] == str(tmp_path / "spill")
        assert got[3] is False
    finally:
        c.close()


def test_check_vote_provenance(con):
    add_votes(con, [("p", 0, "a", "b", False, 0, "ok", "m1", 1.0, 5),
                    ("p", 1, "a", "b", False, 1, "ok", "m1", 1.0, 9),
                    ("q", 0, "a", "c", True, None, "empty", "m2", 0.5, 3)], votes_planned=2)
    rows = con.execute(q("check_vote_provenance")).fetchall()
    assert rows == [("votes-0.parquet", "m1", "r", "e", "cmp", "sha", 1.0, 1.0, 64, 2, 2, 5, 9),
                    ("votes-0.parquet", "m2", "r", "e", "cmp", "sha", 0.5, 1.0, 64, 2, 1, 3, 3)]


def test_count_pair_votes(con):
    add_votes(con, [
        # p: a shown first (a, a), b shown first and answer 1 -> a; b shown first, 0 -> b
        ("p", 0, "a", "b", False, 0, "ok", "m", 1.0, 0),
        ("p", 1, "a", "b", False, 0, "ok", "m", 1.0, 0),
        ("p", 2, "a", "b", True, 1, "ok", "m", 1.0, 0),
        ("p", 3, "a", "b", True, 0, "ok", "m", 1.0, 0),
        ("p", 4, "a", "b", True, None, "no_box", "m", 1.0, 0),
        # t: a tie, 1-1
        ("t", 0, "c", "d", False, 1, "ok", "m", 1.0, 0),
        ("t", 1, "c", "d", True, 1, "ok", "m", 1.0, 0),
        # n: nothing valid
        ("n", 0, "e", "f", False, None, "empty", "m", 1.0, 0),
    ])  # votes_planned and stop_reason NULL: K = $votes_per_pair, 'fixed'
    sql = q("count_pair_votes") + " ORDER BY pair_id"
    hard = con.execute(sql, {**PAIR_PARAMS, "votes_per_pair": 5}).fetchall()
    lo, hi = con.execute("SELECT wilson_low(3, 4, $z), wilson_high(3, 4, $z)",
                         {"z": Z95}).fetchall()[0]
    lo_t, hi_t = con.execute("SELECT wilson_low(1, 2, $z), wilson_high(1, 2, $z)",
                             {"z": Z95}).fetchall()[0]
    # ... outcome, min/max vote_index, votes_planned, stop_reason, problem, missing_votes
    assert hard == [
        ("n", "e", "e.png", "f", "f.png", 0, 0, 1, 1, None, None, None, None, None, 0, None,
         0, 0, 5, "fixed", "missing", 4),
        ("p", "a", "a.png", "b", "b.png", 3, 1, 1, 5, 1.0, 0.75, 0.75, lo, hi, 3, 1,
         0, 4, 5, "fixed", None, None),
        ("t", "c", "c.png", "d", "d.png", 1, 1, 0, 2, 0.5, 0.5, 0.5, lo_t, hi_t, 0, 0,
         0, 1, 5, "fixed", "missing", 3),
    ]
    soft = con.execute(sql, {**PAIR_PARAMS, "soft": True}).fetchall()
    assert [r[9] for r in soft] == [None, 0.75, 0.5]
    cols = [d[0] for d in con.execute(sql, PAIR_PARAMS).description]
    assert tuple(cols[:len(PREFERENCE_COLUMNS)]) == PREFERENCE_COLUMNS


def test_count_pair_votes_completeness(con):
    """problem per pair: complete, stopped early, gap, duplicate, no vote 0, beyond K,
    rows disagreeing on stop_reason."""
    con.execute(f"CREATE TABLE votes ({VOTES_DDL})")

    def pair(pid, indexes, reason, planned=4):
        for i in indexes:
            con.execute("INSERT INTO votes (pair_id, vote_index, image_a_id, image_b_id, "
                        "swapped, answer, parse_status, votes_planned, stop_reason) VALUES "
                        "(?, ?, 'a', 'b', false, 0, 'ok', ?, ?)",
                        [pid, i, planned, reason(i) if callable(reason) else reason])

    pair("complete", range(4), "fixed")
    pair("decided", range(3), "decided")
    pair("confident", range(1), "confident")
    pair("gap", [0, 1, 3], "decided")
    pair("short", range(3), "exhausted")
    pair("dup", [0, 1, 1, 2], "fixed")
    pair("late", [1, 2, 3], "fixed")
    pair("beyond", [0, 1, 2, 3, 4], "fixed")
    pair("mixed", range(4), lambda i: "fixed" if i else "exhausted")
    pair("k8", range(8), "fixed", planned=8)
    rows = con.execute("SELECT pair_id, problem, missing_votes FROM (" + q("count_pair_votes")
                       + ") ORDER BY pair_id", PAIR_PARAMS).fetchall()
    assert rows == [("beyond", "too_many", None), ("complete", None, None),
                    ("confident", None, None), ("decided", None, None),
                    ("dup", "duplicated", None), ("gap", "missing", 1),
                    ("k8", None, None), ("late", "no_first_vote", None),
                    ("mixed", "inconsistent", None), ("short", "missing", 1)]


def test_count_pair_votes_logprob(con):
    con.execute(f"CREATE TABLE votes ({VOTES_DDL})")
    for pid, rows in {"x": [(0, False, 0, 0.8, 0.2), (1, True, 1, 0.3, 0.7)],
                      "y": [(0, False, 0, 0.6, 0.4), (1, True, 0, 0.8, 0.2)],
                      "half": [(0, False, 0, 0.5, 0.5), (1, True, 0, 0.5, 0.5)],
                      "one": [(0, False, 0, 0.9, 0.1)]}.items():
        for vi, swapped, answer, p0, p1 in rows:
            con.execute("INSERT INTO votes (pair_id, vote_index, image_a_id, image_b_id, "
                        "swapped, answer, parse_status, votes_planned, stop_reason, prob_0, "
                        "prob_1) VALUES (?, ?, 'a', 'b', ?, ?, 'ok', 2, 'fixed', ?, ?)",
                        [pid, vi, swapped, answer, p0, p1])
    sql = ("SELECT pair_id, votes_a, votes_b, p_star, vote_fraction_a, agreement, wilson_low, "
           "outcome, problem FROM (" + q("count_pair_votes") + ") ORDER BY pair_id")
    params = {**PAIR_PARAMS, "logprob": True, "votes_per_pair": 2}
    got = con.execute(sql, params).fetchall()
    assert [(r[0], r[1], r[2], r[3], r[6], r[7], r[8]) for r in got] == [
        ("half", 1, 1, 0.5, None, 0, None), ("one", 1, 0, None, None, None, "missing"),
        ("x", 2, 0, 1.0, None, 1, None), ("y", 1, 1, 0.0, None, -1, None)]
    by = {r[0]: r for r in got}
    assert by["x"][4] == pytest.approx((0.8 + 0.7) / 2) and by["x"][5] == by["x"][4]
    assert by["y"][4] == pytest.approx((0.6 + 0.2) / 2) and by["y"][5] == pytest.approx(0.6)
    soft = {r[0]: r[3] for r in con.execute(sql, {**params, "soft": True}).fetchall()}
    assert soft["y"] == pytest.approx(0.4) and soft["half"] == 0.5


def test_count_pair_votes_reads_no_raw_text(tmp_path):
    """Projection pushdown: the plans over a Parquet shard never read raw_text; only the
    row check reads winner_id."""
    path = tmp_path / "votes-0.parquet"
    pq.write_table(pa.Table.from_pylist([], schema=VOTES_SCHEMA), path)
    c = connect(1)
    execute(c, render_sql("create_votes_view", paths={"files": [path]}))
    for name, params in [("count_pair_votes", PAIR_PARAMS), ("check_vote_provenance", {}),
                         ("count_parse_status", {}),
                         ("find_invalid_votes", {"logprob": False, "adaptive": False,
                                                 "limit": 3})]:
        plan = "\n".join(r[1] for r in c.execute("EXPLAIN " + q(name), params).fetchall())
        assert "raw_text" not in plan, name
        assert ("winner_id" in plan) == (name == "find_invalid_votes"), name
        assert "READ_PARQUET" in plan.upper() or "PARQUET_SCAN" in plan.upper()
    assert "raw_text" not in AGGREGATE_COLUMNS


def test_count_incomplete_pairs(con):
    con.execute("CREATE TABLE pair_outcomes (pair_id VARCHAR, problem VARCHAR, "
                "missing_votes BIGINT)")
    con.execute("INSERT INTO pair_outcomes VALUES ('ok', NULL, NULL), ('d', 'duplicated', NULL),"
                " ('d', 'duplicated', NULL), ('c', 'duplicated', NULL), ('m2', 'missing', 2), "
                "('m1', 'missing', 3)")
    assert con.execute(q("count_incomplete_pairs")).fetchall() == [
        ("duplicated", 2, 0, "c"), ("missing", 2, 5, "m1")]


def test_locate_pair_votes(con):
    add_votes(con, [("p", 0, "a", "b", False, 0, "ok", "m", 1.0, 0),
                    ("p", 1, "a", "b", False, 0, "ok", "m", 1.0, 0),
                    ("q", 0, "a", "b", False, 0, "ok", "m", 1.0, 0)], votes_planned=4)
    con.execute("UPDATE votes SET filename = 'votes-1.parquet' WHERE vote_index = 1")
    assert con.execute(q("locate_pair_votes"), {"pair_id": "p"}).fetchall() == [
        ("votes-0.parquet", 1, 0, 0, 4), ("votes-1.parquet", 1, 1, 1, 4)]


def test_find_invalid_votes(con):
    rows = [("p", i, "a", "b", False, 0, "ok", "m", 1.0, 0) for i in range(9)]
    add_votes(con, rows, votes_planned=4, stop_reason="fixed")
    updates = {  # file_row_number -> change
        1: "winner_id = 'z'", 2: "answer = 3", 3: "swapped = NULL",
        4: "answer = NULL, winner_id = NULL", 5: "parse_status = 'no_box'",
        6: "winner_id = 'b'", 7: "stop_reason = 'sideways'", 8: "prob_0 = 0.5, prob_1 = 0.5"}
    for n, change in updates.items():
        con.execute(f"UPDATE votes SET {change} WHERE file_row_number = {n}")
    params = {"logprob": False, "adaptive": False, "limit": 20}
    got = con.execute(q("find_invalid_votes"), params).fetchall()
    assert [(r[1], r[4], r[5]) for r in got] == [
        (1, "winner_id z names neither image of the pair", 8),
        (2, "answer 3 is not 0 or 1", 8),
        (3, "swapped is null", 8),
        (4, "parse_status ok without an answer", 8),
        (5, "answer 0 with parse_status no_box", 8),
        (6, "winner_id b is not the image answer 0 chose (swapped false)", 8),
        (7, "unknown stop_reason sideways", 8),
        (8, "probabilities in a run that sampled votes", 8)]
    assert got[0][:4] == ("votes-0.parquet", 1, "p", 1)
    assert len(con.execute(q("find_invalid_votes"), {**params, "limit": 2}).fetchall()) == 2
    # legacy rows (no stopping columns) and clean rows break no rule
    con.execute("DELETE FROM votes WHERE file_row_number > 0")
    con.execute("UPDATE votes SET votes_planned = NULL, stop_reason = NULL")
    assert con.execute(q("find_invalid_votes"), params).fetchall() == []
    assert con.execute(q("find_invalid_votes"), {**params, "adaptive": True}).fetchall() == []


def test_check_pair_coverage(con):
    con.execute("CREATE TABLE pairs (pair_id VARCHAR, image_a_id VARCHAR, image_b_id VARCHAR)")
    con.execute("INSERT INTO pairs VALUES ('p1', 'a', 'b'), ('p2', 'a', 'c'), ('p3', 'b', 'c'),"
                " ('p4', 'c', 'd')")
    con.execute("CREATE TABLE pair_outcomes (pair_id VARCHAR, image_a_id VARCHAR, "
                "image_b_id VARCHAR)")
    con.execute("INSERT INTO pair_outcomes VALUES ('p1', 'a', 'b'), ('p3', 'b', 'x'), "
                "('p9', 'a', 'd')")
    assert con.execute(q("check_pair_coverage")).fetchall() == [
        (4, 2, "p2", 1, "p9", 1, "p3")]


def test_summarize_stopping(con):
    con.execute("CREATE TABLE pair_outcomes (stop_reason VARCHAR, votes_planned INTEGER, "
                "total_votes BIGINT, problem VARCHAR)")
    con.execute("INSERT INTO pair_outcomes VALUES ('decided', 32, 17, NULL), "
                "('decided', 32, 20, NULL), ('confident', 32, 8, NULL), "
                "('exhausted', 32, 32, NULL), ('fixed', 32, 30, 'missing'), "
                "('decided', 32, 5, 'missing')")
    assert con.execute(q("summarize_stopping"), {"logprob": False}).fetchall() == [
        ("confident", 1, 32, 8, 24), ("decided", 3, 96, 42, 27), ("exhausted", 1, 32, 32, 0),
        ("fixed", 1, 32, 30, 0)]
    con.execute("DELETE FROM pair_outcomes")
    con.execute("INSERT INTO pair_outcomes VALUES ('fixed', 32, 2, NULL), "
                "('fixed', 32, 1, 'missing')")
    assert con.execute(q("summarize_stopping"), {"logprob": True}).fetchall() == [
        ("fixed", 2, 64, 3, 30)]


def test_views_over_shards_scan_and_copy(tmp_path):
    """create_mixed_votes_view over a new and a legacy shard (NULL stopping columns for the
    latter), create_votes_view and create_legacy_votes_view over one of each, scan_votes,
    create_table, copy_to_parquet."""
    from evoq_data.aggregate.duckdb import copy_parquet

    new = tmp_path / "votes-new.parquet"
    old = tmp_path / "votes-old.parquet"
    row = {"pair_id": "p", "vote_index": 0, "image_a_id": "a", "image_b_id": "b",
           "swapped": False, "answer": 0, "winner_id": "a", "parse_status": "ok"}
    pq.write_table(pa.Table.from_pylist([{**row, "votes_planned": 4, "stop_reason": "fixed"}],
                                        schema=VOTES_SCHEMA), new)
    legacy = pa.schema([f for f in VOTES_SCHEMA if f.name not in (
        "votes_planned", "stop_reason", "prob_0", "prob_1")])
    pq.write_table(pa.Table.from_pylist([{**row, "pair_id": "q"}], schema=legacy), old)
    c = connect(1)
    execute(c, render_sql("create_mixed_votes_view", paths={"files": [new, old]}))
    got = c.execute("SELECT pair_id, votes_planned, stop_reason, filename, file_row_number "
                    "FROM votes ORDER BY pair_id").fetchall()
    assert got == [("p", 4, "fixed", str(new), 0), ("q", None, None, str(old), 0)]
    assert run_sql(c, "scan_votes").fetchall() == [(2, 2 * 8 + 2)]  # 8 non-null per row + 2
    execute(c, render_sql("create_legacy_votes_view", paths={"files": [old]}))
    assert c.execute("SELECT votes_planned, prob_1 FROM votes").fetchall() == [(None, None)]
    execute(c, render_sql("create_votes_view", paths={"files": [new]}))
    assert c.execute("SELECT votes_planned, stop_reason FROM votes").fetchall() == [(4, "fixed")]
    execute(c, render_sql("create_table", identifiers={"table": "pair_outcomes"}, queries={
        "query": "SELECT 'p' AS pair_id, 'a' AS image_a_id, 'a.png' AS image_a_path, "
                 "'b' AS image_b_id, 'b.png' AS image_b_path, 1 AS votes_a, 0 AS votes_b, "
                 "0 AS invalid_votes, 1 AS total_votes, 1.0 AS p_star, "
                 "1.0 AS vote_fraction_a, 1.0 AS agreement, 0.2 AS wilson_low, "
                 "1.0 AS wilson_high, 1 AS votes_first_shown, NULL AS reason"}))
    out = copy_parquet(c, "list_kept_pairs", tmp_path / "it's.parquet")
    assert tuple(pq.read_table(out).column_names) == PREFERENCE_COLUMNS
    assert pq.read_table(out).column("pair_id").to_pylist() == ["p"]
    assert not list(tmp_path.glob(".*.tmp"))


def _metadata_rows(con) -> list[dict]:
    res = con.execute(q("check_vote_metadata"))
    cols = [d[0] for d in res.description]
    return [dict(zip(cols, r, strict=True)) for r in res.fetchall()]


def test_check_vote_metadata(con, tmp_path):
    paths = []
    for i, model in enumerate(["m1", "m1", "m2"]):
        table = pa.table({"model": [model] * 3, "model_revision": ["r"] * 3,
                          "engine": ["e"] * 3, "prompt_id": ["c"] * 3,
                          "prompt_sha256": ["s"] * 3, "temperature": [0.7] * 3,
                          "top_p": [1.0] * 3, "max_tokens": pa.array([64] * 3, pa.int32()),
                          "seed": [10 * i, 10 * i + 1, 10 * i + 2],
                          "votes_planned": pa.array([4] * 3, pa.int32())})
        path = tmp_path / f"votes-{i}.parquet"
        pq.write_table(table, path)
        paths.append(path)
    execute(con, render_sql("create_vote_metadata_view", paths={"files": paths[:2]}))
    rows = _metadata_rows(con)
    got = {(r["file_name"], r["column_name"]): r for r in rows}
    first = str(paths[0])
    assert (got[(first, "model")]["single_value"], got[(first, "model")]["value"],
            got[(first, "model")]["votes"]) == (True, "m1", 3)
    assert got[(first, "temperature")]["value"] == "0.7"
    seed = got[(first, "seed")]
    assert (seed["single_value"], seed["min_number"], seed["max_number"]) == (False, 0, 2)
    assert provenance_from_metadata(rows) == [
        {"file_name": str(p), "model": "m1", "model_revision": "r", "engine": "e",
         "prompt_id": "c", "prompt_sha256": "s", "temperature": 0.7, "top_p": 1.0,
         "max_tokens": 64, "votes_planned": 4, "votes": 3, "seed_min": 10 * i,
         "seed_max": 10 * i + 2} for i, p in enumerate(paths[:2])]
    # each shard of one model: the footers prove one provenance per shard, not the same one
    execute(con, render_sql("create_vote_metadata_view", paths={"files": paths}))
    assert [g["model"] for g in provenance_from_metadata(_metadata_rows(con))] == [
        "m1", "m1", "m2"]
    # a shard with two models: the footers cannot vouch for it
    two = tmp_path / "votes-3.parquet"
    pq.write_table(pa.table({"model": ["m1", "m2"]}), two)
    execute(con, render_sql("create_vote_metadata_view", paths={"files": [*paths, two]}))
    assert provenance_from_metadata(_metadata_rows(con)) is None
