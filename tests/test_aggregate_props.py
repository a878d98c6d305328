"""Property tests of the pair aggregation (sql/count_pair_votes.sql) with hypothesis.

- relabelling every vote's shown order consistently (swapped flipped, answer 0 <-> 1) leaves
  the votes for each image, and so p*, unchanged, and mirrors votes_first_shown;
- swapping which image is called a and b turns p* into 1 - p*;
- votes_a + votes_b + invalid_votes = total_votes always, and the counts match a plain
  Python count of the same votes.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evoq_data.aggregate.run import Z95
from evoq_data.core.resources import read_sql

# one vote: (swapped, answer) with answer 0, 1 or None (invalid)
VOTE = st.tuples(st.booleans(), st.sampled_from([0, 1, None]))
PAIRS = st.lists(st.lists(VOTE, min_size=1, max_size=12), min_size=1, max_size=8)


def aggregate(pairs, soft=False, swap_ab=False) -> dict:
    rows = {"pair_id": [], "vote_index": [], "image_a_id": [], "image_a_path": [],
            "image_b_id": [], "image_b_path": [], "swapped": [], "answer": [],
            "votes_planned": [], "stop_reason": [], "prob_0": [], "prob_1": []}
    for p, votes in enumerate(pairs):
        a, b = (f"b{p}", f"a{p}") if swap_ab else (f"a{p}", f"b{p}")
        for i, (swapped, answer) in enumerate(votes):
            rows["pair_id"].append(f"p{p}")
            rows["vote_index"].append(i)
            rows["image_a_id"].append(a)
            rows["image_b_id"].append(b)
            rows["image_a_path"].append(a)
            rows["image_b_path"].append(b)
            rows["swapped"].append(swapped != swap_ab)  # same shown images, other labels
            rows["answer"].append(answer)
            for name in ("votes_planned", "stop_reason", "prob_0", "prob_1"):
                rows[name].append(None)
    votes = pa.table(rows, schema=pa.schema([
        ("pair_id", pa.string()), ("vote_index", pa.int32()), ("image_a_id", pa.string()),
        ("image_a_path", pa.string()), ("image_b_id", pa.string()),
        ("image_b_path", pa.string()), ("swapped", pa.bool_()), ("answer", pa.int8()),
        ("votes_planned", pa.int32()), ("stop_reason", pa.string()), ("prob_0", pa.float64()),
        ("prob_1", pa.float64())]))
    con = _connection()
    con.register("votes", votes)
    res = con.execute(read_sql("count_pair_votes"), {"soft": soft, "z": Z95, "logprob": False,
                                                     "votes_per_pair": 12})
    cols = [d[0] for d in res.description]
    out = {r[0]: dict(zip(cols, r, strict=True)) for r in res.fetchall()}
    con.unregister("votes")
    return out


_CON: list = []


def _connection():
    """One in-memory connection for all examples (opening one costs more than the query)."""
    if not _CON:
        con = duckdb.connect(":memory:")
        con.execute("SET threads = 1")
        con.execute(read_sql("define_wilson_macros"))
        _CON.append(con)
    return _CON[0]


def relabel(pairs):
    return [[(not s, None if a is None else 1 - a) for s, a in votes] for votes in pairs]


SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(PAIRS, st.booleans())
def test_relabelling_shown_order_keeps_p_star(pairs, soft):
    before, after = aggregate(pairs, soft), aggregate(relabel(pairs), soft)
    for pid, r in before.items():
        s = after[pid]
        assert (s["votes_a"], s["votes_b"], s["p_star"], s["agreement"]) == (
            r["votes_a"], r["votes_b"], r["p_star"], r["agreement"])
        valid = r["votes_a"] + r["votes_b"]
        assert s["votes_first_shown"] == valid - r["votes_first_shown"]


@SETTINGS
@given(PAIRS)
def test_swapping_image_labels_mirrors_p_star(pairs):
    before, after = aggregate(pairs), aggregate(pairs, swap_ab=True)
    for pid, r in before.items():
        s = after[pid]
        assert (s["votes_a"], s["votes_b"]) == (r["votes_b"], r["votes_a"])
        assert s["p_star"] == (None if r["p_star"] is None else 1 - r["p_star"])


@SETTINGS
@given(PAIRS, st.booleans())
def test_counts_add_up_and_match_a_plain_count(pairs, soft):
    out = aggregate(pairs, soft)
    assert len(out) == len(pairs)
    for p, votes in enumerate(pairs):
        r = out[f"p{p}"]
        # a vote is for image a when it chose a shown first and a was first, or vice versa
        for_a = sum(1 for s, a in votes if a is not None and (a == 0) != s)
        for_b = sum(1 for s, a in votes if a is not None and (a == 0) == s)
        invalid = sum(1 for _, a in votes if a is None)
        assert (r["votes_a"], r["votes_b"], r["invalid_votes"], r["total_votes"]) == (
            for_a, for_b, invalid, len(votes))
        assert r["votes_a"] + r["votes_b"] + r["invalid_votes"] == r["total_votes"]
        assert r["votes_first_shown"] == sum(1 for _, a in votes if a == 0)
        valid = for_a + for_b
        if valid == 0:
            assert r["p_star"] is None and r["agreement"] is None
            continue
        if soft:
            assert r["p_star"] == pytest.approx(for_a / valid)
        else:
            assert r["p_star"] == (1.0 if for_a > for_b else 0.0 if for_a < for_b else 0.5)
        assert 0.5 <= r["agreement"] <= 1
        assert r["wilson_low"] <= r["agreement"] <= r["wilson_high"]
