"""Each sql/ file of the aggregation on its own, against duckdb.connect(":memory:"), exact rows."""

from __future__ import annotations

import itertools
import math

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from evoq_data.aggregate.run import AGGREGATE_COLUMNS, Z95, sql_quote
from evoq_data.core.resources import read_sql, sql_path
from evoq_data.core.schemas import VOTES_SCHEMA

VOTES_DDL = ", ".join(f"{f.name} {t}" for f, t in zip(
    VOTES_SCHEMA, ["VARCHAR", "INTEGER", "VARCHAR", "VARCHAR", "VARCHAR", "VARCHAR", "BOOLEAN",
                   "VARCHAR", "TINYINT", "VARCHAR", "VARCHAR", "VARCHAR", "VARCHAR", "VARCHAR",
                   "VARCHAR", "VARCHAR", "DOUBLE", "DOUBLE", "INTEGER", "BIGINT",
                   "TIMESTAMPTZ", "VARCHAR"], strict=True))
PAIR_VOTES_DDL = ("pair_id VARCHAR, image_a_id VARCHAR, image_a_path VARCHAR, "
                  "image_b_id VARCHAR, image_b_path VARCHAR, votes_a BIGINT, votes_b BIGINT, "
                  "invalid_votes BIGINT, total_votes BIGINT, p_star DOUBLE, "
                  "vote_fraction_a DOUBLE, agreement DOUBLE, wilson_low DOUBLE, "
                  "wilson_high DOUBLE, votes_first_shown BIGINT")


def q(name: str) -> str:
    return read_sql(name).strip().rstrip(";")


@pytest.fixture
def con():
    c = duckdb.connect(":memory:")
    c.execute(read_sql("define_wilson_macros"))
    yield c
    c.close()


def add_votes(con, rows):
    """rows: (pair_id, vote_index, a, b, swapped, answer, parse_status, model, temperature, seed)"""
    con.execute(f"CREATE TABLE votes ({VOTES_DDL})")
    for pair_id, vi, a, b, swapped, answer, status, model, temp, seed in rows:
        con.execute(
            "INSERT INTO votes (pair_id, vote_index, image_a_id, image_b_id, image_a_path, "
            "image_b_path, swapped, raw_text, answer, parse_status, model, model_revision, "
            "engine, prompt_id, prompt_sha256, temperature, top_p, max_tokens, seed) VALUES "
            "(?, ?, ?, ?, ?, ?, ?, 'text', ?, ?, ?, 'r', 'e', 'cmp', 'sha', ?, 1.0, 64, ?)",
            [pair_id, vi, a, b, f"{a}.png", f"{b}.png", swapped, answer, status, model, temp,
             seed])


def add_pair_outcomes(con, rows, table="pair_outcomes"):
    """rows: (pair_id, a, b, votes_a, votes_b, invalid, agreement, first_shown, reason)"""
    con.execute(f"CREATE TABLE {table} ({PAIR_VOTES_DDL}, reason VARCHAR)")
    for pid, a, b, va, vb, inv, agr, first, reason in rows:
        con.execute(f"INSERT INTO {table} (pair_id, image_a_id, image_a_path, image_b_id, "
                    "image_b_path, votes_a, votes_b, invalid_votes, total_votes, agreement, "
                    "votes_first_shown, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [pid, a, f"{a}.png", b, f"{b}.png", va, vb, inv, va + vb + inv, agr, first,
                     reason])


def test_every_sql_file_has_a_header_naming_it_and_its_parameters():
    import re

    from evoq_data.core.resources import sql_hashes

    for name in sql_hashes():
        text = read_sql(name)
        assert text.startswith(f"-- name: {name.removesuffix('.sql')}\n"), name
        header = "\n".join(line for line in text.splitlines() if line.startswith("--"))
        assert "Parameters:" in header, name
        for param in set(re.findall(r"\$([a-z_]+)", text)):
            assert f"${param}" in header, (name, param)


def test_wilson_macros(con):
    lo, hi, none = con.execute("SELECT wilson_low(3, 4, $z), wilson_high(3, 4, $z), "
                               "wilson_low(0, 0, $z)", {"z": Z95}).fetchall()[0]
    assert (round(lo, 4), round(hi, 4), none) == (0.3006, 0.9544, None)
    lo, hi = con.execute("SELECT wilson_low(0, 10, $z), wilson_high(10, 10, $z)",
                         {"z": Z95}).fetchall()[0]
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(1.0)


def test_check_vote_provenance(con):
    add_votes(con, [("p", 0, "a", "b", False, 0, "ok", "m1", 1.0, 5),
                    ("p", 1, "a", "b", False, 1, "ok", "m1", 1.0, 9),
                    ("q", 0, "a", "c", True, None, "empty", "m2", 0.5, 3)])
    rows = con.execute(q("check_vote_provenance")).fetchall()
    assert rows == [("m1", "r", "e", "cmp", "sha", 1.0, 1.0, 64, 2, 5, 9),
                    ("m2", "r", "e", "cmp", "sha", 0.5, 1.0, 64, 1, 3, 3)]


def test_count_parse_status(con):
    add_votes(con, [("p", i, "a", "b", False, None if s != "ok" else 0, s, "m", 1.0, 0)
                    for i, s in enumerate(["ok", "ok", "no_box", "ok", "empty", "no_box"])])
    assert con.execute(q("count_parse_status")).fetchall() == [
        ("ok", 3), ("no_box", 2), ("empty", 1)]


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
    ])
    sql = q("count_pair_votes") + " ORDER BY pair_id"
    hard = con.execute(sql, {"soft": False, "z": Z95}).fetchall()
    lo, hi = con.execute("SELECT wilson_low(3, 4, $z), wilson_high(3, 4, $z)",
                         {"z": Z95}).fetchall()[0]
    lo_t, hi_t = con.execute("SELECT wilson_low(1, 2, $z), wilson_high(1, 2, $z)",
                             {"z": Z95}).fetchall()[0]
    assert hard == [
        ("n", "e", "e.png", "f", "f.png", 0, 0, 1, 1, None, None, None, None, None, 0, 0, 0),
        ("p", "a", "a.png", "b", "b.png", 3, 1, 1, 5, 1.0, 0.75, 0.75, lo, hi, 3, 0, 4),
        ("t", "c", "c.png", "d", "d.png", 1, 1, 0, 2, 0.5, 0.5, 0.5, lo_t, hi_t, 0, 0, 1),
    ]
    soft = con.execute(sql, {"soft": True, "z": Z95}).fetchall()
    assert [r[9] for r in soft] == [None, 0.75, 0.5]


def test_count_pair_votes_reads_no_raw_text(tmp_path):
    """Projection pushdown: the plan over a Parquet shard never reads raw_text."""
    path = tmp_path / "votes-0.parquet"
    pq.write_table(pa.Table.from_pylist([], schema=VOTES_SCHEMA), path)
    c = duckdb.connect(":memory:")
    c.execute(read_sql("define_wilson_macros"))
    c.execute(f"CREATE VIEW votes AS SELECT {', '.join(AGGREGATE_COLUMNS)} "
              f"FROM read_parquet([{sql_quote(path)}])")
    for name, params in [("count_pair_votes", {"soft": False, "z": Z95}),
                         ("check_vote_provenance", {}), ("count_parse_status", {})]:
        plan = "\n".join(r[1] for r in c.execute("EXPLAIN " + q(name), params).fetchall())
        assert "raw_text" not in plan and "winner_id" not in plan, name
        assert "READ_PARQUET" in plan.upper() or "PARQUET_SCAN" in plan.upper()
    assert "raw_text" not in AGGREGATE_COLUMNS


def test_sql_quote_survives_quotes_in_paths(tmp_path):
    odd = tmp_path / "it's here"
    odd.mkdir()
    path = odd / "votes-0.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), path)
    assert duckdb.connect().execute(
        f"SELECT sum(x) FROM read_parquet([{sql_quote(path)}])").fetchall() == [(3,)]


def test_find_incomplete_pairs(con):
    con.execute("CREATE TABLE pair_outcomes (pair_id VARCHAR, total_votes BIGINT, "
                "min_vote_index INTEGER, max_vote_index INTEGER)")
    con.execute("INSERT INTO pair_outcomes VALUES ('ok', 4, 0, 3), ('dup', 8, 0, 3), "
                "('gap', 3, 0, 3), ('late', 2, 1, 2)")
    assert con.execute(q("find_incomplete_pairs"), {"limit": 10}).fetchall() == [
        ("dup", 8, 0, 3), ("gap", 3, 0, 3), ("late", 2, 1, 2)]
    assert len(con.execute(q("find_incomplete_pairs"), {"limit": 1}).fetchall()) == 1


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


def test_check_vote_metadata(con, tmp_path):
    from evoq_data.aggregate.run import provenance_from_metadata

    rows = []
    for i, model in enumerate(["m1", "m1", "m2"]):
        table = pa.table({"model": [model] * 3, "model_revision": ["r"] * 3,
                          "engine": ["e"] * 3, "prompt_id": ["c"] * 3,
                          "prompt_sha256": ["s"] * 3, "temperature": [0.7] * 3,
                          "top_p": [1.0] * 3, "max_tokens": pa.array([64] * 3, pa.int32()),
                          "seed": [10 * i, 10 * i + 1, 10 * i + 2]})
        path = tmp_path / f"votes-{i}.parquet"
        pq.write_table(table, path)
        rows.append(path)
    con.execute("CREATE VIEW vote_metadata AS SELECT * FROM parquet_metadata("
                f"[{sql_quote(rows[0])}, {sql_quote(rows[1])}])")
    got = {r[0]: r[1:] for r in con.execute(q("check_vote_metadata")).fetchall()}
    assert got["model"] == (True, "m1", None, None, True, 6)
    assert got["temperature"][:2] == (True, "0.7")
    assert got["seed"] == (False, "0", 0, 12, True, 6)
    cols = [d[0] for d in con.execute(q("check_vote_metadata")).description]
    groups = provenance_from_metadata([dict(zip(cols, r, strict=True)) for r in
                                       con.execute(q("check_vote_metadata")).fetchall()])
    assert groups == [{"model": "m1", "model_revision": "r", "engine": "e", "prompt_id": "c",
                       "prompt_sha256": "s", "temperature": 0.7, "top_p": 1.0,
                       "max_tokens": 64, "votes": 6, "seed_min": 0, "seed_max": 12}]
    # a second model in another shard: the footers cannot vouch for one provenance
    con.execute("CREATE OR REPLACE VIEW vote_metadata AS SELECT * FROM parquet_metadata("
                f"[{', '.join(sql_quote(r) for r in rows)}])")
    got = {r[0]: r[1] for r in con.execute(q("check_vote_metadata")).fetchall()}
    assert got["model"] is False and got["engine"] is True
    assert provenance_from_metadata([dict(zip(cols, r, strict=True)) for r in
                                     con.execute(q("check_vote_metadata")).fetchall()]) is None
