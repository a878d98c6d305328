"""`evoq-data aggregate` refuses votes it cannot trust: shards made with other settings or
another K, incomplete VOTES_DIRs (unless --allow-incomplete, then said in stats), tampered
vote rows, and shards corrupted in the middle; each in one line naming the file, row or pair.
"""

from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fixtures.cli import assert_user_error as assert_error
from test_aggregate import PAIRS, invoke, run_cli, vote_rows, write_pairs, write_votes

from evoq_data.core.schemas import VOTES_SCHEMA


@pytest.fixture
def votes_dir(tmp_path):
    """test_aggregate's fixture: PAIRS in two shards (rows 0-9 and 10-23), K = 4."""
    rows = vote_rows(PAIRS)
    return write_votes(tmp_path / "votes", [rows[:10], rows[10:]])


def aggregate(votes, out, *extra):
    return invoke(["aggregate", "--votes", str(votes), "--out", str(out), "--quiet", *extra])


def shards_of(votes):
    return sorted(votes.glob("votes-*.parquet"))


# --- issue 13 item 4: every shard against the manifest ------------------------------------

def test_shard_with_another_k_is_named(tmp_path):
    """A shard voted with K=2 in a K=4 folder: its pairs look complete on their own."""
    good = vote_rows(PAIRS[:3])
    other_k = vote_rows([(p, a, b, v[:2]) for p, a, b, v in PAIRS[3:]], k=2)
    votes = write_votes(tmp_path / "votes", [good, other_k])
    bad = shards_of(votes)[1]
    assert_error(aggregate(votes, tmp_path / "o"), f"vote shard {bad} was made with other "
                 "settings", "votes_planned (K) 2 (manifest: 4)", "--allow-mixed")


def test_shard_with_other_model_is_named(tmp_path):
    votes = write_votes(tmp_path / "votes", [vote_rows(PAIRS[:3]),
                                             vote_rows(PAIRS[3:], {"model": "other/model"})])
    assert_error(aggregate(votes, tmp_path / "o"), "2 different runs", "other/model",
                 f"(e.g. vote shard {shards_of(votes)[1]})")


def test_legacy_shard_with_more_votes_than_k_is_named(tmp_path):
    """Shards without votes_planned (written before it existed): a pair with 6 votes in a
    K=4 folder is refused, naming its shard."""
    six = [("p7", "A", "E", [(False, 0, "ok")] * 3 + [(True, 1, "ok")] * 3)]
    votes = write_votes(tmp_path / "votes", [vote_rows(PAIRS, k=None), vote_rows(six, k=None)],
                        legacy=True)
    assert_error(aggregate(votes, tmp_path / "o"), f"pair p7 in vote shard "
                 f"{shards_of(votes)[1]} (6 of 4 votes, vote_index 0..5)",
                 "a vote_index at or beyond the votes planned (K)")


# --- item 5: incomplete VOTES_DIR -----------------------------------------------------------

def test_missing_shard_is_refused_then_allowed_and_reported(votes_dir, tmp_path):
    # shard 0 holds p1, p2 and p3's first two votes; shard 1 the rest of p3, p4, p5, p6
    shard0 = shards_of(votes_dir)[0]
    shards_of(votes_dir)[1].unlink()
    assert_error(aggregate(votes_dir, tmp_path / "o"),
                 f"{votes_dir} is incomplete: 3 of 6 pairs of the pairs file have no vote "
                 f"(e.g. pair p4) and 1 pair(s) lack 2 vote(s) (e.g. pair p3 in vote shard "
                 f"{shard0} (2 of 4 votes, vote_index 0..1)), 14 vote(s) missing in all",
                 "--allow-incomplete")
    out = tmp_path / "o"
    summary = run_cli(votes_dir, out, "--allow-incomplete")
    assert (summary["pairs"], summary["votes"], summary["complete"]) == (3, 10, False)
    prefs = {r["pair_id"]: (r["votes_a"], r["votes_b"], r["total_votes"])
             for r in pq.read_table(out / "preferences.parquet").to_pylist()}
    # p3: votes (False, 0) -> C, (True, 1) -> C: 2-0 of its first two votes
    assert prefs == {"p1": (3, 1, 4), "p2": (2, 1, 4), "p3": (2, 0, 2)}
    stats = json.loads((out / "stats.json").read_text())
    assert stats["completeness"] == {
        "complete": False, "allow_incomplete": True, "checked_against_pairs_file": True,
        "pairs_listed": 6, "pairs_missing": 3, "pairs_incomplete": 1, "votes_missing": 14,
        "pairs_file_sha256": json.loads((votes_dir / "manifest.json").read_text())[
            "pairs_sha256"]}
    md = (out / "stats.md").read_text()
    assert "pairs in the pairs file: 6, without any vote: 3" in md
    assert "**incomplete votes aggregated (--allow-incomplete)**" in md
    assert json.loads((out / "manifest.json").read_text())["allow_incomplete"] is True
    assert shard0.exists()


def test_pair_missing_its_last_votes(tmp_path):
    rows = vote_rows(PAIRS)
    rows = [r for r in rows if not (r["pair_id"] == "p6" and r["vote_index"] >= 2)]
    votes = write_votes(tmp_path / "votes", [rows])
    assert_error(aggregate(votes, tmp_path / "o"), "is incomplete: 1 pair(s) lack 2 vote(s) "
                 f"(e.g. pair p6 in vote shard {shards_of(votes)[0]} (2 of 4 votes, "
                 "vote_index 0..1)), 2 vote(s) missing in all")
    summary = run_cli(votes, tmp_path / "o", "--allow-incomplete")
    assert (summary["pairs"], summary["votes"]) == (6, 22)
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert (stats["completeness"]["pairs_missing"], stats["completeness"]["pairs_incomplete"],
            stats["completeness"]["votes_missing"]) == (0, 1, 2)
    assert stats["stopping"]["votes_saved"] == 0  # missing votes are not saved votes


def test_complete_folder_says_so(votes_dir, tmp_path):
    run_cli(votes_dir, tmp_path / "o")
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    c = stats["completeness"]
    assert (c["complete"], c["pairs_listed"], c["pairs_missing"], c["votes_missing"]) == (
        True, 6, 0, 0)
    assert "every pair has all its votes" in (tmp_path / "o" / "stats.md").read_text()


def test_moved_pairs_file_and_pairs_option(votes_dir, tmp_path):
    manifest = json.loads((votes_dir / "manifest.json").read_text())
    moved = tmp_path / "elsewhere.parquet"
    shutil.move(manifest["pairs_file"], moved)
    assert_error(aggregate(votes_dir, tmp_path / "o"),
                 f"the pairs file {manifest['pairs_file']} named in {votes_dir / 'manifest.json'}"
                 " is not there", "pass --pairs PATH")
    summary = run_cli(votes_dir, tmp_path / "o", "--pairs", str(moved))
    assert summary["complete"] is True
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["pairs_file"] == str(moved)
    other = write_pairs(tmp_path / "other.parquet", [p[:3] for p in PAIRS[:5]])
    assert_error(aggregate(votes_dir, tmp_path / "o", "--pairs", str(other)),
                 f"pairs file {other} has sha256", "pass --pairs with that file")
    # without any pairs file, --allow-incomplete aggregates and says it was not checked
    run_cli(votes_dir, tmp_path / "o2", "--allow-incomplete")
    stats = json.loads((tmp_path / "o2" / "stats.json").read_text())
    assert stats["completeness"]["checked_against_pairs_file"] is False
    assert stats["completeness"]["complete"] is None
    assert "**not checked against the pairs file**" in (tmp_path / "o2" / "stats.md").read_text()


def test_voted_pair_not_in_pairs_file_is_refused(tmp_path):
    votes = write_votes(tmp_path / "votes", [vote_rows(PAIRS)],
                        pairs=[p[:3] for p in PAIRS[:5]])
    assert_error(aggregate(votes, tmp_path / "o", "--allow-incomplete"),
                 "1 voted pair(s) are not in the pairs file", f"pair p6 in vote shard "
                 f"{shards_of(votes)[0]}")
    changed = [p[:3] for p in PAIRS[:5]] + [("p6", "E", "X")]
    votes = write_votes(tmp_path / "votes2", [vote_rows(PAIRS)], pairs=changed)
    assert_error(aggregate(votes, tmp_path / "o"), "1 voted pair(s) name other images than "
                 "the pairs file, e.g. pair p6")


# --- item 11: tampered vote rows ----------------------------------------------------------

@pytest.mark.parametrize("change, rule", [
    ({"winner_id": "Z"}, "winner_id Z names neither image of the pair"),
    ({"answer": 2}, "answer 2 is not 0 or 1"),
    ({"swapped": None}, "swapped is null"),
    ({"answer": None}, "parse_status ok without an answer"),
    ({"winner_id": "C"}, "winner_id C is not the image answer 1 chose (swapped true)"),
    ({"parse_status": "no_box"}, "answer 1 with parse_status no_box"),
    ({"stop_reason": "decided"}, "stop_reason decided in a run that asked all K votes"),
    ({"prob_0": 0.3, "prob_1": 0.7}, "probabilities in a run that sampled votes"),
])
def test_tampered_vote_row_is_refused_with_file_and_row(tmp_path, change, rule):
    rows = vote_rows(PAIRS)
    assert (rows[5]["pair_id"], rows[5]["vote_index"], rows[5]["winner_id"]) == ("p2", 1, "B")
    rows[5] = {**rows[5], **change}
    votes = write_votes(tmp_path / "votes", [rows[:10], rows[10:]])
    assert_error(aggregate(votes, tmp_path / "o", "--allow-mixed", "--allow-incomplete"),
                 f"vote shard {shards_of(votes)[0]} row 5 (pair p2, vote 1): {rule}; the shard "
                 "was altered")


def test_several_tampered_rows_are_counted(tmp_path):
    rows = vote_rows(PAIRS)
    for i in (3, 12, 20):
        rows[i] = {**rows[i], "answer": 7}
    votes = write_votes(tmp_path / "votes", [rows[:10], rows[10:]])
    assert_error(aggregate(votes, tmp_path / "o"), f"{shards_of(votes)[0]} row 3 (pair p1, "
                 "vote 3): answer 7 is not 0 or 1 (2 more such row(s) in the shards)")


# --- messages: a shard corrupted in the middle ---------------------------------------------

@pytest.mark.parametrize("legacy", [False, True])
def test_shard_corrupted_in_the_middle_is_named(tmp_path, legacy):
    """The footer is intact (the schema check passes); a data page header is garbage. The
    other shard, intact, is not blamed (also when shards predate the stopping columns)."""
    rows = vote_rows(PAIRS, k=None if legacy else 4)
    votes_dir = write_votes(tmp_path / "votes", [rows[:10], rows[10:]], legacy=legacy)
    shard = shards_of(votes_dir)[1]
    meta = pq.ParquetFile(shard).metadata
    col = meta.schema.to_arrow_schema().get_field_index("answer")
    offset = meta.row_group(0).column(col).data_page_offset
    data = bytearray(shard.read_bytes())
    data[offset:offset + 12] = b"\xff" * 12
    shard.write_bytes(bytes(data))
    pq.read_schema(shard)  # still readable as far as the footer goes
    message = assert_error(aggregate(votes_dir, tmp_path / "o"), f"vote shard {shard} is "
                           "corrupt (", "move it away and rerun evoq-data vote")
    assert "aggregating" not in message and message.isprintable()


def test_shard_with_part_of_the_stopping_columns_is_named(votes_dir, tmp_path):
    bad = votes_dir / "votes-00000-of-00001-part.parquet"
    schema = pa.schema([f for f in VOTES_SCHEMA if f.name not in ("prob_0", "prob_1")])
    pq.write_table(pa.Table.from_pylist(vote_rows(PAIRS[:1]), schema=schema), bad)
    assert_error(aggregate(votes_dir, tmp_path / "o"), f"vote shard {bad} has column(s) "
                 "votes_planned, stop_reason but not prob_0, prob_1")
