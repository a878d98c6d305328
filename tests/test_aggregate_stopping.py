"""`evoq-data aggregate` on votes of adaptive runs (--stop decided / confident), logprob runs
(--mode logprob) and shards written before those columns existed: hand-built shards, exact
rows and statistics."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from fixtures.cli import assert_user_error as assert_error
from test_aggregate import EXPECTED, PAIRS, invoke, run_cli, vote_rows, write_votes

from evoq_data.aggregate.run import PREFERENCE_COLUMNS


def prefs(out) -> dict:
    return {r["pair_id"]: r for r in pq.read_table(out / "preferences.parquet").to_pylist()}


def stop_rows(pairs) -> list[dict]:
    """pairs: (pair_id, a, b, stop_reason, votes) with K = 4."""
    rows = []
    for pair_id, a, b, reason, votes in pairs:
        rows += vote_rows([(pair_id, a, b, votes)], stop_reason=reason)
    return rows


ADAPTIVE = [
    ("d1", "A", "B", "decided", [(False, 0, "ok"), (True, 1, "ok"), (False, 0, "ok")]),
    ("d2", "B", "C", "exhausted", [(False, 0, "ok"), (True, 0, "ok"), (True, 1, "ok"),
                                   (False, 1, "ok")]),
    ("d3", "C", "D", "decided", [(False, 1, "ok"), (True, 0, "ok"), (False, 1, "ok")]),
    ("d4", "A", "D", "exhausted", [(False, 0, "ok"), (True, 1, "ok"), (True, None, "no_box"),
                                   (False, 0, "ok")]),
]


def test_decided_stop_pairs_are_complete_and_votes_saved_are_reported(tmp_path):
    votes = write_votes(tmp_path / "votes", [stop_rows(ADAPTIVE)], {"stop": "decided"})
    out = tmp_path / "o"
    summary = run_cli(votes, out)
    assert (summary["complete"], summary["votes_saved"], summary["votes"]) == (True, 2, 14)
    got = {pid: (r["votes_a"], r["votes_b"], r["invalid_votes"], r["total_votes"], r["p_star"])
           for pid, r in prefs(out).items()}
    assert got == {"d1": (3, 0, 0, 3, 1.0), "d2": (2, 2, 0, 4, 0.5), "d3": (0, 3, 0, 3, 0.0),
                   "d4": (3, 0, 1, 4, 1.0)}
    stats = json.loads((out / "stats.json").read_text())
    assert stats["stopping"] == {
        "mode": "sample", "stop": "decided", "votes_per_pair": 4, "votes_planned": 16,
        "votes_used": 14, "votes_saved": 2, "saved_fraction": 2 / 16,
        "pairs_by_stop_reason": {"decided": 2, "exhausted": 2},
        "soft_labels_from_stopped_votes": False}
    assert stats["completeness"]["complete"] is True
    md = (out / "stats.md").read_text()
    assert "Mode sample, stop decided, K = 4: 14 votes used of 16 planned, 2 saved (12.5%)." in md
    assert "| decided | 2 |" in md and "| exhausted | 2 |" in md


def test_stopped_pair_with_a_gap_and_short_fixed_pair_are_incomplete(tmp_path):
    gap = [dict(r) for r in stop_rows(ADAPTIVE)]
    gap = [r for r in gap if not (r["pair_id"] == "d1" and r["vote_index"] == 1)]
    votes = write_votes(tmp_path / "votes", [gap], {"stop": "decided"})
    assert_error(invoke(["aggregate", "--votes", str(votes), "--out", str(tmp_path / "o")]),
                 "1 pair(s) lack 1 vote(s) (e.g. pair d1", "vote_index 0..2")
    # the same three votes under stop_reason 'exhausted' (all K were to be asked): 1 missing
    short = stop_rows([("d1", "A", "B", "exhausted", ADAPTIVE[0][4])] + ADAPTIVE[1:])
    votes = write_votes(tmp_path / "votes2", [short], {"stop": "decided"})
    assert_error(invoke(["aggregate", "--votes", str(votes), "--out", str(tmp_path / "o")]),
                 "1 pair(s) lack 1 vote(s) (e.g. pair d1")


def test_stop_reasons_must_fit_the_run(tmp_path):
    rows = stop_rows(ADAPTIVE)
    votes = write_votes(tmp_path / "votes", [rows])  # manifest: stop fixed (absent)
    assert_error(invoke(["aggregate", "--votes", str(votes), "--out", str(tmp_path / "o")]),
                 "row 0 (pair d1, vote 0): stop_reason decided in a run that asked all K")
    rows = vote_rows(PAIRS)  # stop_reason 'fixed' in an adaptive run
    votes = write_votes(tmp_path / "votes2", [rows], {"stop": "confident"})
    assert_error(invoke(["aggregate", "--votes", str(votes), "--out", str(tmp_path / "o")]),
                 "stop_reason fixed in an adaptive run")
    rows = stop_rows(ADAPTIVE)
    rows[4]["stop_reason"] = "decided"  # d2's second row: its pair says 'exhausted'
    votes = write_votes(tmp_path / "votes3", [rows], {"stop": "decided"})
    assert_error(invoke(["aggregate", "--votes", str(votes), "--out", str(tmp_path / "o")]),
                 "pair d2 in vote shard", "its vote rows disagree on votes_planned or "
                 "stop_reason")


# --- --mode logprob ---------------------------------------------------------------------

def logprob_rows(pairs) -> list[dict]:
    """pairs: (pair_id, a, b, (p0 unswapped, p1 unswapped), (p0 swapped, p1 swapped))."""
    rows = []
    for pair_id, a, b, first, second in pairs:
        votes = []
        for swapped, (p0, p1) in ((False, first), (True, second)):
            votes.append((swapped, 0 if p0 >= p1 else 1, "ok"))
        these = vote_rows([(pair_id, a, b, votes)], k=2)
        for row, (p0, p1) in zip(these, (first, second), strict=True):
            row.update(prob_0=p0, prob_1=p1)
        rows += these
    return rows


LOGPROB = [
    # A shown first: P(A) = 0.8; B shown first: P(second = A) = 0.7 -> P(a better) = 0.75
    ("l1", "A", "B", (0.8, 0.2), (0.3, 0.7)),
    # B first: 0.6 for B; C first: 0.8 for C -> P(B better) = (0.6 + 0.2) / 2 = 0.4
    ("l2", "B", "C", (0.6, 0.4), (0.8, 0.2)),
    # exactly even: a tie
    ("l3", "C", "A", (0.5, 0.5), (0.5, 0.5)),
]
LOGPROB_MANIFEST = {"mode": "logprob", "votes_per_pair": 2}


@pytest.mark.parametrize("label", ["hard", "soft"])
def test_logprob_votes_give_probability_labels(tmp_path, label):
    votes = write_votes(tmp_path / "votes", [logprob_rows(LOGPROB)], LOGPROB_MANIFEST)
    out = tmp_path / "o"
    summary = run_cli(votes, out, "--label", label)
    assert summary["complete"] is True and summary["votes"] == 6
    rows = prefs(out)
    assert list(rows) == ["l1", "l2", "l3"]
    p_a = {"l1": 0.75, "l2": 0.4, "l3": 0.5}
    hard = {"l1": 1.0, "l2": 0.0, "l3": 0.5}
    # the more probable answer of each shown order, counted as votes: l2 is 1-1 by counts
    counts = {"l1": (2, 0, 1), "l2": (1, 1, 2), "l3": (1, 1, 2)}
    for pid, r in rows.items():
        assert r["vote_fraction_a"] == pytest.approx(p_a[pid])
        assert r["p_star"] == (hard[pid] if label == "hard" else pytest.approx(p_a[pid]))
        assert r["agreement"] == pytest.approx(max(p_a[pid], 1 - p_a[pid]))
        assert r["wilson_low"] is None and r["wilson_high"] is None
        assert (r["votes_a"], r["votes_b"], r["votes_first_shown"]) == counts[pid]
        assert (r["invalid_votes"], r["total_votes"]) == (0, 2)
    assert tuple(pq.read_table(out / "preferences.parquet").column_names) == PREFERENCE_COLUMNS
    images = {r["image_id"]: (r["wins"], r["losses"], r["ties"])
              for r in pq.read_table(out / "images.parquet").to_pylist()}
    assert images == {"A": (1, 0, 1), "B": (0, 2, 0), "C": (1, 0, 1)}  # by P, not by counts
    stats = json.loads((out / "stats.json").read_text())
    assert (stats["mode"], stats["pairs"]["ties"], stats["pairs"]["decisive"]) == (
        "logprob", 1, 2)
    assert stats["stopping"]["mode"] == "logprob"
    assert (stats["stopping"]["votes_used"], stats["stopping"]["votes_saved"]) == (6, 0)
    assert "from the judge's probabilities" in (out / "stats.md").read_text()


@pytest.mark.parametrize("change, rule", [
    ({"answer": 1, "winner_id": "B"}, "answer 1 is not the more probable index"),
    ({"prob_1": 0.5}, "probabilities 0.8, 0.5 are not in [0, 1] summing to 1"),
    ({"swapped": True, "answer": 0, "winner_id": "B"},
     "vote_index 0 shown swapped=true (logprob runs show vote 0 unswapped"),
    ({"prob_0": None, "prob_1": None}, "an answer without both probabilities"),
])
def test_tampered_logprob_rows_are_refused(tmp_path, change, rule):
    rows = logprob_rows(LOGPROB)
    rows[0].update(change)
    votes = write_votes(tmp_path / "votes", [rows], LOGPROB_MANIFEST)
    assert_error(invoke(["aggregate", "--votes", str(votes), "--out", str(tmp_path / "o")]),
                 f"row 0 (pair l1, vote 0): {rule}")


def test_logprob_pair_missing_an_order_is_incomplete(tmp_path):
    rows = logprob_rows(LOGPROB)[:-1]
    votes = write_votes(tmp_path / "votes", [rows], LOGPROB_MANIFEST)
    assert_error(invoke(["aggregate", "--votes", str(votes), "--out", str(tmp_path / "o")]),
                 "1 pair(s) lack 1 vote(s) (e.g. pair l3")
    run_cli(votes, tmp_path / "o", "--allow-incomplete")
    l3 = prefs(tmp_path / "o")["l3"]
    assert l3["p_star"] is None and l3["vote_fraction_a"] is None  # one order is not P


# --- shards written before the stopping columns existed -----------------------------------

def test_legacy_shards_aggregate_as_fixed_with_k_from_the_manifest(tmp_path):
    rows = vote_rows(PAIRS, k=None)
    votes = write_votes(tmp_path / "votes", [rows[:10], rows[10:]], legacy=True)
    assert "votes_planned" not in pq.read_schema(sorted(votes.glob("votes-*"))[0]).names
    out = tmp_path / "o"
    run_cli(votes, out)
    got = {pid: (r["votes_a"], r["votes_b"], r["invalid_votes"], r["total_votes"],
                 r["p_star"], r["votes_first_shown"]) for pid, r in prefs(out).items()}
    assert got == EXPECTED
    stats = json.loads((out / "stats.json").read_text())
    assert stats["stopping"] == {
        "mode": "sample", "stop": "fixed", "votes_per_pair": 4, "votes_planned": 24,
        "votes_used": 24, "votes_saved": 0, "saved_fraction": 0.0,
        "pairs_by_stop_reason": {"fixed": 6}, "soft_labels_from_stopped_votes": False}
    # a resumed run: old shards beside new ones
    mixed = write_votes(tmp_path / "mixed", [vote_rows(PAIRS[:3], k=None)], legacy=True)
    new = vote_rows(PAIRS[3:])
    import pyarrow as pa

    from evoq_data.core.schemas import VOTES_SCHEMA

    pq.write_table(pa.Table.from_pylist(new, schema=VOTES_SCHEMA),
                   mixed / "votes-00000-of-00001-new.parquet")
    write_votes(tmp_path / "mixed", [], pairs=[p[:3] for p in PAIRS])  # the whole pairs file
    run_cli(mixed, tmp_path / "o2")
    got2 = {pid: (r["votes_a"], r["votes_b"], r["invalid_votes"], r["total_votes"],
                  r["p_star"], r["votes_first_shown"]) for pid, r in prefs(tmp_path / "o2").items()}
    assert got2 == EXPECTED


# --- soft labels of an adaptive run -----------------------------------------------------------

@pytest.mark.parametrize("stop", ["decided", "confident"])
def test_soft_labels_of_stopped_votes_are_refused_unless_asked(tmp_path, stop, caplog):
    votes = write_votes(tmp_path / "votes", [stop_rows(ADAPTIVE)], {"stop": stop})
    out = tmp_path / "o"
    assert_error(invoke(["aggregate", "--votes", str(votes), "--out", str(out), "--label",
                         "soft"]), f"made with --stop {stop}", "--allow-stopped-soft")
    assert not (out / "preferences.parquet").exists()
    result = invoke(["aggregate", "--votes", str(votes), "--out", str(out), "--quiet",
                     "--label", "soft", "--allow-stopped-soft"])
    assert result.exit_code == 0, result.output
    warned = [r for r in caplog.records if r.levelname == "WARNING"
              and "aggregated anyway: --allow-stopped-soft" in r.getMessage()]
    assert len(warned) == 1 and f"--stop {stop}" in warned[0].getMessage()
    # the labels are the fractions over the votes used (d1: 3 of 3, d2: 2 of 4, d4: 3 of 3)
    assert {pid: r["p_star"] for pid, r in prefs(out).items()} == \
        {"d1": 1.0, "d2": 0.5, "d3": 0.0, "d4": 1.0}
    stats = json.loads((out / "stats.json").read_text())
    assert stats["stopping"]["soft_labels_from_stopped_votes"] is True
    assert "**Soft labels from stopped votes**" in (out / "stats.md").read_text()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["allow_stopped_soft"] is True
    dataset = tmp_path / "dataset"
    result = invoke(["push", "--prefs", str(out), "--repo-id", "me/d", "--version", "v1",
                     "--local-dir", str(dataset), "--no-embed-images", "-q"])
    assert result.exit_code == 0, result.output
    card = (dataset / "README.md").read_text()
    assert card.count("**Soft labels from stopped votes.**") == 1
    assert f"(`--stop {stop}`)" in card


def test_hard_labels_and_fixed_runs_say_nothing_of_stopped_soft(tmp_path):
    votes = write_votes(tmp_path / "votes", [stop_rows(ADAPTIVE)], {"stop": "decided"})
    run_cli(votes, tmp_path / "hard")
    stats = json.loads((tmp_path / "hard" / "stats.json").read_text())
    assert stats["stopping"]["soft_labels_from_stopped_votes"] is False
    assert "stopped votes" not in (tmp_path / "hard" / "stats.md").read_text()
